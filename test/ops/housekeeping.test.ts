// Housekeeping against the Proxmox simulator and the in-process Omni (both on 127.0.0.1): VMs with our identity that
// nothing in Omni accounts for are reported once and removed only when the operator opted in, after the grace
// period, and only if they still qualify right then; foreign VMs (named like a request, or tagged like ours with
// another UUID) are never touched; unused Talos and seed ISOs are removed only when opted in, never one a VM or a
// private state names, never a file not of our naming.
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newResource, providerMachineKind } from '../../src/cosi/resources.js';
import { createLogger } from '../../src/log.js';
import { createHousekeepingMetrics, MetricsRegistry } from '../../src/ops/index.js';
import { DEFAULT_HOUSEKEEPING, Housekeeper, ourVmIdentity, readOmniRecords, scanHousekeeping, type HousekeepingSettings, type OmniRecords } from '../../src/ops/housekeeping.js';
import { emptyMachineState, machineSpecFromState } from '../../src/provision/machineState.js';
import { createFixtureVm } from '../../src/sim/proxmox/seed.js';
import { basicData, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';
import { startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';

const SET = 'workers';
const KEPT = 'workers-a1b2c3'; // has a MachineRequest and a private state
const ORPHAN = 'workers-d4e5f6'; // its VM exists, nothing in Omni
const STATE_ONLY = 'workers-g7h8i9'; // a private state without VM (in flight): what it names is protected
const OLD_TALOS = `${'b'.repeat(64)}.iso`;
const RECORDED_TALOS = `${'c'.repeat(64)}.iso`;
const V1_UUID = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

let pve: PveHarness;
let f: OmniFixture;
let lines: Array<Record<string, unknown>>;

beforeEach(async ({ signal }) => {
  pve = await startPveHarness({
    fixture: {
      volumes: [
        { storage: 'local', node: 'pve1', name: 'iso/debian-12.iso', size: 1000 },
        { storage: 'nfs-iso', name: `iso/${OLD_TALOS}`, size: 2000 },
        { storage: 'nfs-iso', name: `iso/${RECORDED_TALOS}`, size: 3000 },
        { storage: 'nfs-iso', name: 'iso/omni-seed-workers-zzzzzz.iso', size: 50 },
        { storage: 'nfs-iso', name: `iso/omni-seed-${STATE_ONLY}.iso`, size: 60 },
        // Looks like ours but is not of our naming: never touched.
        { storage: 'nfs-iso', name: `iso/${'d'.repeat(63)}.iso`, size: 70 },
        // A seed named after a VMID no private state records (the Go provider's, or a VM's long gone): never touched.
        { storage: 'nfs-iso', name: 'iso/user-data-777.iso', size: 80 },
      ],
    },
  });
  f = await startOmniFixture({}, { signal });
  lines = [];
});

afterEach(async () => {
  await pve?.close();
  await f?.close();
});

function logger() {
  return createLogger({
    level: 'info',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    }),
  });
}

async function provision(id: string): Promise<{ vmid: number; uuid: string; node: string }> {
  const state = await runSteps(pve.provisioner, request(id, basicData, SET));
  return { vmid: state.vmid, uuid: state.uuid, node: state.node };
}

async function writeState(id: string, fill: Partial<ReturnType<typeof emptyMachineState>>): Promise<void> {
  const kind = providerMachineKind('proxmox');
  await f.client.state.create(kind, newResource(kind, id, machineSpecFromState({ ...emptyMachineState(), ...fill })), { owner: 'proxmox.ProvisionController' });
}

/** The world every test starts from: KEPT accounted for, ORPHAN's VM alone, three foreign VMs, STATE_ONLY in flight. */
async function world(): Promise<{ kept: { vmid: number }; orphan: { vmid: number; uuid: string; node: string }; foreign: number[] }> {
  const kept = await provision(KEPT);
  f.omni.controllers.createMachineRequest(SET, { talosVersion: 'v1.11.5' }, KEPT);
  await writeState(KEPT, { uuid: kept.uuid, vmid: kept.vmid, node: kept.node });
  const orphan = await provision(ORPHAN);
  await writeState(STATE_ONLY, { volumeId: RECORDED_TALOS, isoStorage: 'nfs-iso', seedVolume: `nfs-iso:iso/omni-seed-${STATE_ONLY}.iso` });
  const sim = pve.sim;
  const foreign = [
    // Named like a request of the set, v4 UUID, but without our tag.
    createFixtureVm(sim, { vmid: 900, node: 'pve1', name: 'workers-x1y2z3', smbiosUuid: '0f0e0d0c-0b0a-4908-8706-050403020100' }).vmid,
    // Tagged and named like ours, but its UUID is not of our form (version 1).
    createFixtureVm(sim, { vmid: 901, node: 'pve2', name: 'workers-q1w2e3', tags: [`machine-request.${SET}`], smbiosUuid: V1_UUID }).vmid,
    // Tagged like ours, v4 UUID, but the name is not a request of that set.
    createFixtureVm(sim, { vmid: 902, node: 'pve3', name: 'db-a1b2c3', tags: [`machine-request.${SET}`], smbiosUuid: '1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d' }).vmid,
  ];
  return { kept, orphan, foreign };
}

function housekeeper(
  settings: Partial<HousekeepingSettings>,
  clock: { t: number },
  registry = new MetricsRegistry(),
  extra: Partial<ConstructorParameters<typeof Housekeeper>[0]> = {},
) {
  return new Housekeeper({
    ...extra,
    pve: pve.pve,
    state: f.client.state,
    providerId: 'proxmox',
    settings: { ...DEFAULT_HOUSEKEEPING, ...settings },
    log: logger(),
    deprovision: (ctx) => pve.provisioner.deprovision(ctx),
    metrics: createHousekeepingMetrics(registry),
    now: () => clock.t,
  });
}

const isoNames = (storage: string) => pve.sim.volumes(storage).map((v) => v.name).sort();

describe('the identity test', () => {
  it('takes tag, name and UUID together, and nothing less', () => {
    const config = (uuid: string) => ({ smbios1: `uuid=${uuid}` });
    const v4 = '1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d';
    const tags = 'machine-request.workers';
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags }, config(v4))).toEqual({ setId: 'workers', uuid: v4 });
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags: 'other;MACHINE-REQUEST.WORKERS' }, config(v4))?.setId).toBe('workers');
    expect(ourVmIdentity({ name: 'workers-a1b2c3' }, config(v4))).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags }, config(V1_UUID))).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags }, {})).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c', tags }, config(v4))).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c3d', tags }, config(v4))).toBeUndefined();
    expect(ourVmIdentity({ name: 'other-a1b2c3', tags }, config(v4))).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags, template: true }, config(v4))).toBeUndefined();
    expect(ourVmIdentity({ name: 'workers-a1b2c3', tags }, { ...config(v4), template: 1 } as never)).toBeUndefined();
  });
});

describe('housekeeping', () => {
  it('a pass due while provisioning work goes on waits for it, at most one interval', async () => {
    await world();
    for (const busy of [true, false]) {
      let looked = 0;
      const hk = housekeeper({ intervalSeconds: 1 }, { t: pve.sim.clock.now() }, new MetricsRegistry(), {
        busy: () => (looked++, busy),
        busyRetryMs: 100,
      });
      const ranAfter = new Promise<number>((resolve) => {
        const runOnce = hk.runOnce.bind(hk);
        hk.runOnce = async () => {
          resolve(looked);
          return runOnce();
        };
      });
      hk.start(0);
      // Busy: looked at 0, 100 ms, …, 1 s of postponement (11 times), then ran anyway; idle: ran at the first look.
      expect(await ranAfter).toBe(busy ? 11 : 1);
      await hk.stop();
    }
  });

  it('reports the orphan once, touches nothing while removal is off, and nothing foreign ever', async () => {
    const { kept, orphan, foreign } = await world();
    const registry = new MetricsRegistry();
    const clock = { t: pve.sim.clock.now() };
    const hk = housekeeper({}, clock, registry);
    const first = await hk.runOnce();
    expect(first.scan.orphanVms.map((v) => v.vmid)).toEqual([orphan.vmid]);
    expect(first.scan.complete).toBe(true);
    clock.t += 10 * 86400_000;
    const second = await hk.runOnce();
    expect(second.removedVms).toEqual([]);
    expect(second.removedIsos).toEqual([]);
    // One line per orphan, not one per pass.
    const orphanLines = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('orphaned VM:'));
    expect(orphanLines).toHaveLength(1);
    expect(orphanLines[0]).toMatchObject({ level: 'warn', vmid: orphan.vmid, vmName: ORPHAN, uuid: orphan.uuid });
    expect(orphanLines[0]!.msg).toMatch(/housekeeping\.removeOrphanVms is off/);
    for (const vmid of [kept.vmid, orphan.vmid, ...foreign, 100, 101]) expect(pve.sim.vm(vmid)).toBeDefined();
    const text = registry.render();
    expect(text).toMatch(/^proxmox_provider_orphan_vms 1$/m);
    expect(text).toMatch(/^proxmox_provider_unused_isos\{kind="talos"\} 1$/m);
    expect(text).toMatch(/^proxmox_provider_unused_isos\{kind="seed"\} 1$/m);
    // Unused: the old Talos ISO and the seed of a request nothing knows; what a VM or a state names is in use.
    const unused = second.scan.isos.filter((i) => i.usedBy.length === 0 && i.recordedBy.length === 0).map((i) => i.volid).sort();
    expect(unused).toEqual([`nfs-iso:iso/${OLD_TALOS}`, 'nfs-iso:iso/omni-seed-workers-zzzzzz.iso']);
  });

  it('with removal on: after the grace period it removes the orphan (and its seed) and the unused ISOs, nothing else', async () => {
    const { kept, orphan, foreign } = await world();
    const before = { nfs: isoNames('nfs-iso') };
    const orphanSeed = pve.sim.vm(orphan.vmid)!.config.ide0!.split(',')[0]!;
    const clock = { t: pve.sim.clock.now() };
    const hk = housekeeper({ removeOrphanVms: true, orphanVmGraceSeconds: 3600, removeUnusedIsos: true, talosIsoMinAgeSeconds: 3600 }, clock);
    const first = await hk.runOnce();
    // First seen now: nothing is removed yet.
    expect(first.removedVms).toEqual([]);
    expect(first.removedIsos).toEqual([]);
    expect(pve.sim.vm(orphan.vmid)).toBeDefined();
    clock.t += 3599_000;
    // Unused ISOs go once they were seen unused in an earlier pass (and are old enough); the VM waits for its grace.
    const second = await hk.runOnce();
    expect(second.removedVms).toEqual([]);
    expect(pve.sim.vm(orphan.vmid)).toBeDefined();
    expect(second.removedIsos.map((i) => i.volid).sort()).toEqual([`nfs-iso:iso/${OLD_TALOS}`, 'nfs-iso:iso/omni-seed-workers-zzzzzz.iso']);
    clock.t += 1_000;
    const pass = await hk.runOnce();
    expect(pass.failures).toEqual([]);
    expect(pass.removedVms.map((v) => v.vmid)).toEqual([orphan.vmid]);
    expect(pve.sim.vm(orphan.vmid)).toBeUndefined();
    expect(pass.removedIsos).toEqual([]);
    const after = isoNames('nfs-iso');
    expect(before.nfs.filter((n) => !after.includes(n)).sort()).toEqual(
      [`iso/${OLD_TALOS}`, 'iso/omni-seed-workers-zzzzzz.iso', `iso/${orphanSeed.replace(/^[^:]+:iso\//, '')}`].sort(),
    );
    // Kept: the VM of the live request, its Talos ISO and seed, the in-flight request's ISOs, the foreign VMs and files.
    for (const vmid of [kept.vmid, ...foreign, 100, 101]) expect(pve.sim.vm(vmid)).toBeDefined();
    expect(after).toEqual(expect.arrayContaining([`iso/${RECORDED_TALOS}`, `iso/omni-seed-${STATE_ONLY}.iso`, `iso/user-data-${kept.vmid}.iso`, `iso/${'d'.repeat(63)}.iso`, 'iso/user-data-777.iso']));
    expect(isoNames('local')).toContain('iso/debian-12.iso');
    // Foreign VMs were never written to.
    const writes = pve.sim.requests.filter((r) => r.method !== 'GET' && /\/qemu\/(900|901|902|100|101)(\/|$)/.test(r.path));
    expect(writes).toEqual([]);
  });

  it('re-checks right before removing: a locked orphan, or one a request now accounts for, stays', async () => {
    const { orphan } = await world();
    const clock = { t: pve.sim.clock.now() };
    const hk = housekeeper({ removeOrphanVms: true, orphanVmGraceSeconds: 60 }, clock);
    await hk.runOnce();
    clock.t += 120_000;
    pve.sim.injectLock(orphan.vmid, 'backup');
    const locked = await hk.runOnce();
    expect(locked.scan.orphanVms[0]).toMatchObject({ vmid: orphan.vmid, lock: 'backup' });
    expect(locked.removedVms).toEqual([]);
    expect(pve.sim.vm(orphan.vmid)).toBeDefined();
    pve.sim.injectLock(orphan.vmid, undefined);
    // A MachineRequest with the VM's name appears (e.g. Omni was restored from a backup): no longer an orphan.
    f.omni.controllers.createMachineRequest(SET, { talosVersion: 'v1.11.5' }, ORPHAN);
    const claimed = await hk.runOnce();
    expect(claimed.scan.orphanVms).toEqual([]);
    expect(pve.sim.vm(orphan.vmid)).toBeDefined();
  });

  it('removes no ISO in a pass whose view of the VMs is incomplete (a node offline)', async () => {
    await world();
    pve.sim.setNodeOnline('pve3', false);
    const clock = { t: pve.sim.clock.now() };
    const hk = housekeeper({ removeUnusedIsos: true, talosIsoMinAgeSeconds: 60 }, clock);
    await hk.runOnce();
    clock.t += 3600_000;
    const pass = await hk.runOnce();
    expect(pass.scan.complete).toBe(false);
    expect(pass.scan.problems.join(' ')).toMatch(/VM 902 on node pve3/);
    // Said once, not at every pass.
    expect(lines.filter((l) => l.msg === 'housekeeping: incomplete view' && /VM 902/.test(String(l.problem)))).toHaveLength(1);
    expect(pass.removedIsos).toEqual([]);
    expect(isoNames('nfs-iso')).toContain(`iso/${OLD_TALOS}`);
  });
});

describe('the scan against requests that start or end meanwhile', () => {
  it('reads Omni before and after listing the VMs: a state seen by either read accounts for its VM', async () => {
    const { orphan } = await world();
    await writeState(ORPHAN, { uuid: orphan.uuid, vmid: orphan.vmid, node: orphan.node });
    const withState = await readOmniRecords(f.client.state, 'proxmox');
    const without: OmniRecords = { requestIds: withState.requestIds, states: new Map([...withState.states].filter(([id]) => id !== ORPHAN)) };
    const reads = (first: OmniRecords, second: OmniRecords) => {
      const seq = [first, second];
      return async () => seq.shift()!;
    };
    // Torn down meanwhile (state gone by the second read), started meanwhile (state only in the second read), neither.
    expect((await scanHousekeeping(pve.pve, reads(withState, without))).orphanVms).toEqual([]);
    expect((await scanHousekeeping(pve.pve, reads(without, withState))).orphanVms).toEqual([]);
    expect((await scanHousekeeping(pve.pve, reads(without, without))).orphanVms.map((v) => v.name)).toEqual([ORPHAN]);
  });
});

describe('docs', () => {
  it('operations.md documents every housekeeping metric, setting and log line', async () => {
    const { readFileSync } = await import('node:fs');
    const doc = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');
    const m = createHousekeepingMetrics(new MetricsRegistry());
    for (const metric of Object.values(m)) expect(doc, metric.name).toContain(`\`${metric.name}\``);
    for (const key of Object.keys(DEFAULT_HOUSEKEEPING)) if (key !== 'intervalSeconds') expect(doc, key).toContain(`${key}:`);
    for (const line of ['orphaned VM: …', 'unused seed ISO: …', 'unused Talos ISO: …', 'orphaned VM removed']) expect(doc).toContain(line);
  });
});
