// `status` against the in-process Omni and the Proxmox simulator (both on 127.0.0.1): requests with their stage, step,
// node, VMID, age, last error and addresses; the lease holder (or "no lease"); Proxmox nodes and quorum; orphaned VMs
// (our identity only) and ISO usage per storage; JSON with --json; exit 1 when Proxmox or Omni does not answer.
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stateAddresses, status, type StatusReport } from '../../src/cli/status.js';
import { MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { LeaseSpecSchema } from '../../src/gen/proxmox/specs/lease_pb.js';
import { MachineSpecSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import { silentLogger } from '../../src/log.js';
import { encodeSpec, startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';
import { LABELS, NS, TYPES } from '../../src/sim/omni/resources.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { createFixtureVm } from '../../src/sim/proxmox/seed.js';
import { providerToken, testFixture } from '../helpers/pveHarness.js';

const TALOS = `${'a'.repeat(64)}.iso`;
const UNUSED_TALOS = `${'e'.repeat(64)}.iso`;

let omni: InProcessOmni;
let sim: PveSim;
let server: PveSimServer;
let key: string;

beforeAll(async () => {
  omni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger, seed: 3 });
  sim = new PveSim({
    fixture: testFixture({
      volumes: [
        { storage: 'nfs-iso', name: `iso/${TALOS}`, size: 100 * 1024 * 1024 },
        { storage: 'nfs-iso', name: `iso/${UNUSED_TALOS}`, size: 200 * 1024 * 1024 },
        { storage: 'local', node: 'pve2', name: 'iso/omni-seed-workers-aaaaaa.iso', size: 4096 },
      ],
    }),
    clock: new ScaledClock(0.002),
    logger: silentLogger,
  });
  server = await startPveSimServer(sim, { https: true });
  key = await omni.createProviderKey('proxmox');

  // Request 1: provisioned, VM 300 on pve1 with the Talos ISO, a static address recorded in field 110.
  createFixtureVm(sim, {
    vmid: 300,
    node: 'pve1',
    name: 'workers-abc123',
    tags: ['machine-request.workers'],
    smbiosUuid: '11111111-2222-4333-8444-555555555555',
    status: 'running',
    config: { ide2: `nfs-iso:iso/${TALOS},media=cdrom` },
  });
  omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5' }, 'workers-abc123');
  writeStatus('workers-abc123', MachineRequestStatusSpec_Stage.PROVISIONED, '', 'Provision Complete');
  const spec = create(MachineSpecSchema, {
    uuid: '11111111-2222-4333-8444-555555555555',
    node: 'pve1',
    vmid: 300,
    volumeId: TALOS,
    isoStorage: 'nfs-iso',
    nicAddresses: [{ nic: 0, address: '10.20.0.11/24', mac: '0a:00:00:00:00:01' }],
  });
  writeState('workers-abc123', toBinary(MachineSpecSchema, spec), 'startVM');

  // Request 2: failed at syncVM, no VM.
  omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5' }, 'workers-def456');
  writeStatus('workers-def456', MachineRequestStatusSpec_Stage.FAILED, 'syncVM: storage local-lvm is full\n(second line)', 'Running Step: "syncVM" (4/5)');
  writeState('workers-def456', toBinary(MachineSpecSchema, create(MachineSpecSchema, { node: 'pve2', createVmid: 301 })), 'syncVM');

  // An orphan (our identity, nothing in Omni) and a foreign VM named like a request.
  createFixtureVm(sim, { vmid: 310, node: 'pve2', name: 'workers-zzz999', tags: ['machine-request.workers'], smbiosUuid: '99999999-8888-4777-8666-555555555555' });
  createFixtureVm(sim, { vmid: 311, node: 'pve3', name: 'workers-yyy888', smbiosUuid: '99999999-8888-4777-8666-444444444444' });
}, 30_000);

afterAll(async () => {
  await server?.close();
  await omni?.close();
});

function writeStatus(id: string, stage: MachineRequestStatusSpec_Stage, error: string, text: string): void {
  omni.store.create(
    {
      metadata: { namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id, labels: { [LABELS.infraProviderId]: 'proxmox' } },
      spec: encodeSpec(MachineRequestStatusSpecSchema, { stage, error, status: text }),
    },
    { owner: 'proxmox.ProvisionController' },
  );
}

function writeState(id: string, protoSpec: Uint8Array, step: string): void {
  omni.store.create(
    {
      metadata: { namespace: 'infra-provider:proxmox', type: 'Machine.proxmox.infraprovider.sidero.dev', id, annotations: { 'infra.omni.sidero.dev/step': step } },
      spec: { protoSpec, yamlSpec: 'x: 1\n' },
    },
    { owner: 'proxmox.ProvisionController' },
  );
}

function env(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    OMNI_ENDPOINT: omni.endpoint,
    OMNI_SERVICE_ACCOUNT_KEY: key,
    PROXMOX_URL: server.url,
    PROXMOX_TOKEN_ID: providerToken.tokenId,
    PROXMOX_TOKEN_SECRET: providerToken.tokenSecret,
    PROXMOX_FINGERPRINT: server.fingerprint!,
    ...overrides,
  };
}

async function run(argv: string[], e = env()): Promise<{ code: number; text: string }> {
  let text = '';
  const code = await status(argv, { env: e, stdout: (t) => void (text += t), timeoutMs: 10_000, now: () => Date.now() });
  return { code, text };
}

describe('status', () => {
  it('--json: requests, no lease, Proxmox health, orphans of our identity only, ISO usage per storage', async () => {
    const { code, text } = await run(['--json']);
    expect(code).toBe(0);
    const r = JSON.parse(text) as StatusReport;
    expect(r.omni).toMatchObject({ ok: true, lease: { text: 'no lease (no instance has taken one yet)' } });
    expect(r.housekeeping).toMatchObject({ intervalSeconds: 600, removeOrphanVms: false, removeUnusedIsos: false });
    expect(r.proxmox).toMatchObject({ ok: true, quorate: true, nodes: [{ node: 'pve1', status: 'online' }, { node: 'pve2', status: 'online' }, { node: 'pve3', status: 'online' }] });
    expect(r.requests).toEqual([
      expect.objectContaining({ id: 'workers-abc123', stage: 'PROVISIONED', step: 'startVM', node: 'pve1', vmid: 300, error: '', addresses: ['net0 10.20.0.11/24'] }),
      expect.objectContaining({ id: 'workers-def456', stage: 'FAILED', step: 'syncVM', node: 'pve2', vmid: 301, error: 'syncVM: storage local-lvm is full\n(second line)', addresses: [] }),
    ]);
    expect(r.requests[0]!.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(r.orphanVms).toEqual([expect.objectContaining({ vmid: 310, node: 'pve2', name: 'workers-zzz999', setId: 'workers' })]);
    expect(r.isos!.perStorage).toEqual([
      { storage: 'local', node: 'pve2', talos: { inUse: 0, unused: 0, bytesInUse: 0, bytesUnused: 0 }, seeds: { inUse: 0, unused: 1, bytesInUse: 0, bytesUnused: 4096 } },
      { storage: 'nfs-iso', node: '', talos: { inUse: 1, unused: 1, bytesInUse: 100 * 1024 * 1024, bytesUnused: 200 * 1024 * 1024 }, seeds: { inUse: 0, unused: 0, bytesInUse: 0, bytesUnused: 0 } },
    ]);
    expect(r.isos!.unused.map((i) => i.volid).sort()).toEqual(['local:iso/omni-seed-workers-aaaaaa.iso', `nfs-iso:iso/${UNUSED_TALOS}`]);
    expect(text).not.toContain(key);
    expect(text).not.toContain(providerToken.tokenSecret);
  });

  it('prints tables by default, with the lease holder when a lease resource exists', async () => {
    const lease = create(LeaseSpecSchema, { holderInstance: 'b7f3', holderHostname: 'provider-b', holderPid: 4711, leaseDurationSeconds: 15, renewDeadlineSeconds: 10 });
    omni.store.create(
      { metadata: { namespace: 'infra-provider:proxmox', type: 'Lease.proxmox.infraprovider.sidero.dev', id: 'leader' }, spec: { protoSpec: toBinary(LeaseSpecSchema, lease), yamlSpec: '' } },
      { owner: '' },
    );
    try {
      const { code, text } = await run([]);
      expect(code).toBe(0);
      expect(text).toMatch(/^lease {5}held by provider-b \(pid 4711, instance b7f3\), renewed \d+s ago$/m);
      expect(text).toMatch(/^proxmox .* OK, Proxmox VE \S+, quorate, 3\/3 node\(s\) online: pve1 online, pve2 online, pve3 online$/m);
      expect(text).toMatch(/^REQUEST\s+STAGE\s+STEP\s+NODE\s+VMID\s+AGE\s+ADDRESSES\s+LAST ERROR$/m);
      expect(text).toMatch(/^workers-abc123\s+PROVISIONED\s+startVM\s+pve1\s+300\s+\d+s\s+net0 10\.20\.0\.11\/24\s+-$/m);
      expect(text).toMatch(/^workers-def456\s+FAILED\s+syncVM\s+pve2\s+301\s+\d+s\s+-\s+syncVM: storage local-lvm is full \(second line\)$/m);
      expect(text).toMatch(/^310\s+pve2\s+workers-zzz999\s+99999999-8888-4777-8666-555555555555\s+stopped\s+-$/m);
      expect(text).not.toMatch(/workers-yyy888/);
      expect(text).toMatch(/^housekeeping every 600 s: orphaned VMs only reported, unused ISOs only reported$/m);
      expect(text).toMatch(/^nfs-iso\s+\(shared\)\s+1 in use \(100\.0 MiB\), 1 unused \(200\.0 MiB\)\s+0 in use/m);
    } finally {
      omni.store.destroy('infra-provider:proxmox', 'Lease.proxmox.infraprovider.sidero.dev', 'leader', { owner: '' });
    }
  });

  it('shows a quorum loss and an offline node', async () => {
    sim.setQuorate(false);
    sim.setNodeOnline('pve3', false);
    try {
      const r = JSON.parse((await run(['--json'])).text) as StatusReport;
      expect(r.proxmox.quorate).toBe(false);
      expect(r.proxmox.nodes.find((n) => n.node === 'pve3')?.status).toBe('offline');
      const { text } = await run([], env({ HOUSEKEEPING_REMOVE_ORPHAN_VMS: 'true', HOUSEKEEPING_REMOVE_UNUSED_ISOS: 'true' }));
      expect(text).toMatch(/NOT QUORATE, 2\/3 node\(s\) online/);
      expect(text).toMatch(/^housekeeping every 600 s: orphaned VMs removed after 24h, unused ISOs removed \(Talos ISOs after 7d\)$/m);
    } finally {
      sim.setQuorate(true);
      sim.setNodeOnline('pve3', true);
    }
  });

  it('exits 1 naming the side that did not answer; no orphan is claimed without Omni', async () => {
    const noPve = await run(['--json'], env({ PROXMOX_URL: 'https://127.0.0.1:1' }));
    expect(noPve.code).toBe(1);
    const a = JSON.parse(noPve.text) as StatusReport;
    expect(a.omni.ok).toBe(true);
    expect(a.proxmox.ok).toBe(false);
    expect(a.proxmox.error).toMatch(/ECONNREFUSED|connect/);
    expect(a.orphanVms).toBeNull();

    const noOmni = await run(['--json'], env({ OMNI_ENDPOINT: 'http://127.0.0.1:1' }));
    expect(noOmni.code).toBe(1);
    const b = JSON.parse(noOmni.text) as StatusReport;
    expect(b.omni.ok).toBe(false);
    expect(b.proxmox.ok).toBe(true);
    expect(b.orphanVms).toBeNull();
    expect(b.isos!.complete).toBe(false);
  });

  it('shows the static addresses of field 110 per NIC', () => {
    // The static addresses of field 110, per NIC.
    const spec = create(MachineSpecSchema, { nicAddresses: [{ nic: 0, address: '10.0.0.9/24' }, { nic: 2, address: 'fd00::9/64' }] });
    expect(stateAddresses(spec)).toEqual(['net0 10.0.0.9/24', 'net2 fd00::9/64']);
  });

  it('refuses a missing configuration and --json=x with exit 2 (through the CLI dispatcher)', async () => {
    const { runCli } = await import('../../src/cli/index.js');
    const saved = { ...process.env };
    let err = '';
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => ((err += t), true)) as typeof process.stderr.write;
    try {
      for (const k of Object.keys(process.env)) if (/^(OMNI_|PROXMOX_|PROVIDER_)/.test(k)) delete process.env[k];
      expect(await runCli(['status'])).toBe(2);
      expect(err).toMatch(/status needs the daemon's configuration/);
      expect(await runCli(['status', '--json=1'])).toBe(2);
    } finally {
      process.stderr.write = write;
      process.env = saved;
    }
  });
});
