// vmid_range (the Go provider's PR #81 key) against the simulator over HTTPS: the lowest free VMID of the range,
// skipping foreign guests (also ones the token cannot see), this process's creates in flight and other requests'
// recorded create intents; as race-safe as nextid (one create lock per process, `already exists` retried with the
// next ID, the write-ahead intent recorded before the create call); an exhausted range fails naming vmid_range.
import { afterEach, describe, expect, it } from 'vitest';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { StepFailure } from '../../src/provision/step.js';
import { parseVmidRange } from '../../src/provision/vmidRange.js';
import { basicData, providerToken, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const ranged = (range: string): string => `${basicData}vmid_range: "${range}"\n`;

describe('parseVmidRange', () => {
  it.each([
    ['100-100', { start: 100, end: 100 }],
    ['1000-1099', { start: 1000, end: 1099 }],
    ['102101-102110', { start: 102101, end: 102110 }],
    ['100-999999999', { start: 100, end: 999999999 }],
    ['99-200', 'both ends must be VMIDs Proxmox accepts (100-999999999)'],
    ['100-1000000000', 'both ends must be VMIDs Proxmox accepts (100-999999999)'],
    ['200-100', 'start 200 is above end 100'],
    ['100', 'must be "start-end", e.g. "1000-1099"'],
  ])('%s', (text, want) => {
    expect(parseVmidRange(text)).toEqual(want);
  });
});

/** Runs request `id` until its create call was sent and its answer lost: its intent stays recorded, no VM appears. */
async function lostCreate(harness: PveHarness, id: string, data: string): Promise<MachineState> {
  harness.sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'connReset' });
  const state = emptyMachineState();
  const err = await runSteps(harness.provisioner, request(id, data), state, { maxRetries: 0 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StepFailure);
  expect(state.createVmid).toBeGreaterThan(0);
  expect(harness.sim.vm(state.createVmid)).toBeUndefined();
  return state;
}

describe('vmid_range: the lowest free VMID of the range', () => {
  it('concurrent requests of one class get distinct IDs, skipping a foreign VM, one the token cannot see and another request\'s pending create', async () => {
    h = await startPveHarness();
    const harness = h;
    harness.sim.externalCreateVm({ vmid: 1001, node: 'pve1', name: 'foreign' });
    harness.sim.externalCreateVm({ vmid: 1003, node: 'pve2', name: 'hidden' });
    harness.sim.access.grant('/vms/1003', providerToken.tokenId, { roles: ['NoAccess'] });
    const foreign = structuredClone(harness.sim.vm(1001));
    // Request "pending" recorded a create at 1000 whose answer was lost: no VM there, but it may still appear.
    const pending = await lostCreate(harness, 'pending', ranged('1000-1009'));
    expect(pending.createVmid).toBe(1000);

    const ids = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6'];
    const states = await Promise.all(ids.map((id) => runSteps(harness.provisioner, request(id, ranged('1000-1009'), 'workers'))));
    const vmids = states.map((s) => s.vmid).sort((a, b) => a - b);
    expect(vmids).toEqual([1002, 1004, 1005, 1006, 1007, 1008]);
    // No two picked the same ID: every create call (the lost one and these six) was accepted, none refused.
    const creates = harness.sim.requests.filter((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu');
    expect(creates).toHaveLength(7);
    expect(creates.slice(1).every((r) => r.status === 200)).toBe(true);
    states.forEach((s, i) => expect(harness.sim.vm(s.vmid)?.config.name).toBe(ids[i]));
    // The foreign VMs were never written to.
    expect(harness.sim.vm(1001)).toEqual(foreign);
    expect(writeCalls(harness.sim).filter((r) => /\/qemu\/100[13](\/|$)/.test(r.path))).toEqual([]);
    expect(harness.sim.vm(1000)).toBeUndefined();
  });

  it('an ID taken between the pick and the create (already exists) is skipped: the next one is recorded and used', async () => {
    h = await startPveHarness();
    const harness = h;
    const intents: number[] = [];
    let armed = false;
    const state = await runSteps(harness.provisioner, request('req-race', ranged('2000-2005')), emptyMachineState(), {
      checkpoint: (s) => {
        // Armed after pickNode (whose read-only range check asks nextid too): the next check is syncVM's pick.
        if (!armed) harness.sim.grabVmidAfterNextId();
        armed = true;
        if (intents.at(-1) !== s.createVmid) intents.push(s.createVmid);
      },
    });
    // 2000 was free when checked, taken before the create: recorded, refused, cleared, then 2001.
    expect(intents).toEqual([0, 2000, 0, 2001, 0]);
    expect(state.vmid).toBe(2001);
    expect(h.sim.vm(2000)?.config.name).not.toBe('req-race');
  });

  it('an exhausted range fails in pickNode, before any download or write, naming vmid_range; freed IDs are used again', async () => {
    h = await startPveHarness();
    const harness = h;
    harness.sim.externalCreateVm({ vmid: 3001, node: 'pve1', name: 'foreign' });
    await lostCreate(harness, 'pending', ranged('3000-3001'));
    const writesBefore = writeCalls(harness.sim).length;
    const err = await runSteps(harness.provisioner, request('req-full', ranged('3000-3001'))).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StepFailure);
    expect((err as StepFailure).message).toBe(
      'pickNode: provider data: vmid_range: no free VMID in 3000-3001 (all 2 in use: 3000: create recorded by request pending; 3001: VM foreign); ' +
        'widen the range or remove VMs from it',
    );
    expect((err as StepFailure).permanent).toBe(false);
    expect(writeCalls(harness.sim).length).toBe(writesBefore);
    // Once the foreign VM is gone, the request goes through with its ID.
    harness.sim.externalDeleteVm(3001);
    const state = await runSteps(harness.provisioner, request('req-full', ranged('3000-3001')));
    expect(state.vmid).toBe(3001);
  });
});
