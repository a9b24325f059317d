// Write-ahead intent (issue 8): what the steps record before they write to Proxmox, and how deprovision and a later
// syncVM settle a create or a seed upload whose outcome was never confirmed. Against the simulator over HTTPS; the
// controller's checkpoint is stood in for by a copy of the state taken at each checkpoint (what Omni would hold).
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger, type Logger } from '../../src/log.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { SEED_UPLOAD_UNANSWERED } from '../../src/provision/proxmoxProvisioner.js';
import { basicData, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';
import { Changes, waitFor } from '../helpers/wait.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const CREATE_ROUTE = '/nodes/{node}/qemu';

/** Runs the steps until the first checkpoint for which `stopAt` holds, then aborts them; returns what was persisted. */
async function runUntilCheckpoint(
  harness: PveHarness,
  id: string,
  stopAt: (s: MachineState) => boolean,
  opts: { from?: string; state?: MachineState } = {},
): Promise<{ persisted: MachineState; error: unknown }> {
  const abort = new AbortController();
  let persisted: MachineState | undefined;
  const error = await runSteps(harness.provisioner, request(id, basicData), opts.state ?? emptyMachineState(), {
    maxRetries: 0,
    signal: abort.signal,
    ...(opts.from ? { from: opts.from } : {}),
    checkpoint: (s) => {
      persisted = structuredClone(s);
      if (stopAt(s)) abort.abort(new Error('stopped by the test'));
    },
  }).then(
    () => undefined,
    (err: unknown) => err,
  );
  if (persisted === undefined) throw new Error(`no checkpoint was made (the steps ended with ${String(error)})`);
  return { persisted, error };
}

function ourVms(harness: PveHarness, id: string): number[] {
  return [...harness.sim.state.vms.values()].filter((vm) => vm.config.get('name') === id).map((vm) => vm.vmid);
}

describe('write-ahead intent of the VM create', () => {
  it('records node, VMID and SMBIOS UUID before the create call is sent, then its UPID; the UPID is kept once the VM exists', async () => {
    h = await startPveHarness();
    const harness = h;
    const checkpoints: Array<{ state: MachineState; requestsBefore: number }> = [];
    const state = await runSteps(harness.provisioner, request('req-intent', basicData), emptyMachineState(), {
      checkpoint: (s) => {
        checkpoints.push({ state: structuredClone(s), requestsBefore: harness.sim.requests.length });
      },
    });
    const post = harness.sim.requests.findIndex((r) => r.method === 'POST' && r.route === CREATE_ROUTE);
    expect(post).toBeGreaterThan(0);
    const before = checkpoints.filter((c) => c.requestsBefore <= post).at(-1);
    expect(before?.state).toMatchObject({ createVmid: state.vmid, createNode: state.node, uuid: state.uuid, vmid: 0, vmCreateTask: '' });
    const answered = checkpoints.find((c) => c.requestsBefore > post && c.state.vmCreateTask !== '');
    expect(answered?.state.vmCreateTask).toMatch(new RegExp(`^UPID:${state.node}:.*:qmcreate:${state.vmid}:`));
    // Field 11 is written with field 7 (the Go provider's pair: "the create task of this VMID"); the intent stays.
    expect(answered?.state).toMatchObject({ vmid: state.vmid, createVmid: state.vmid });
    // Confirmed: the intent is settled, fields 7 and 11 still name the create.
    expect(state).toMatchObject({ createVmid: 0, createNode: '', vmCreateTask: answered?.state.vmCreateTask });
    expect(harness.sim.vm(state.vmid)?.config.name).toBe('req-intent');
  });

  it('a teardown waits for our create task (recorded UPID), stops it after the bound, and nothing is left', async () => {
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 2_000 } });
    h.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' });
    const { persisted } = await runUntilCheckpoint(h, 'req-stuck-create', (s) => s.vmCreateTask !== '');
    const vmid = persisted.createVmid;
    expect(persisted.vmid).toBe(vmid);
    expect(h.sim.vm(vmid)?.config.lock).toBe('create');

    await h.provisioner.deprovision({ requestId: 'req-stuck-create', state: persisted, log: silentLogger });
    expect(h.sim.vm(vmid)).toBeUndefined();
    const [task] = h.sim.tasks({ type: 'qmcreate' });
    expect(task?.exitstatus).toBe('received interrupt');
    await h.sim.settle();
    expect(ourVms(h, 'req-stuck-create')).toEqual([]);
  });

  it('a teardown waits for a VM in lock: create whose create answer was lost (no UPID), then deletes it once it is ours', async () => {
    // The create is released on the teardown's second look (below); the bound must not run out first. It runs on the
    // simulator's clock: 60 s simulated was 120 ms of wall time, less than two looks take on a busy machine.
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 24 * 3600_000 } });
    const harness = h;
    harness.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' });
    harness.sim.faults.onRequest({ method: 'POST', route: CREATE_ROUTE }, { kind: 'lostResponse', mode: 'error', status: 503 });
    const { persisted, error } = await runUntilCheckpoint(harness, 'req-lost-503', () => false);
    expect(String(error)).toMatch(/syncVM: the answer to the create call of VM \d+ was lost \(503/);
    expect(persisted.vmCreateTask).toBe('');
    const vmid = persisted.createVmid;
    expect(harness.sim.vm(vmid)?.config.lock).toBe('create');

    // Proxmox finishes the create once the teardown has looked at the VM at least once.
    let looks = 0;
    const unsubscribe = harness.sim.onChange(() => {
      const last = harness.sim.requests.at(-1);
      if (last?.method === 'GET' && last.path.endsWith(`/qemu/${vmid}/config`) && ++looks === 2) harness.sim.releaseStuckTasks({ type: 'qmcreate' });
    });
    try {
      await harness.provisioner.deprovision({ requestId: 'req-lost-503', state: persisted, log: silentLogger });
    } finally {
      unsubscribe();
    }
    expect(looks).toBeGreaterThanOrEqual(2);
    expect(harness.sim.vm(vmid)).toBeUndefined();
    expect(harness.sim.tasks({ type: 'qmcreate' })).toHaveLength(1);
    expect(harness.sim.tasks({ type: 'qmdestroy', vmid })).toHaveLength(1);
  });

  it('a teardown keeps the request while a VM it cannot identify yet sits at the recorded VMID (it throws, to be retried)', async () => {
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 2_000 } });
    h.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' });
    h.sim.faults.onRequest({ method: 'POST', route: CREATE_ROUTE }, { kind: 'lostResponse', mode: 'reset' });
    const { persisted } = await runUntilCheckpoint(h, 'req-unidentified', () => false);
    const vmid = persisted.createVmid;
    await expect(h.provisioner.deprovision({ requestId: 'req-unidentified', state: persisted, log: silentLogger })).rejects.toThrow(
      new RegExp(`VM ${vmid} on node pve\\d is still being created \\(lock: create\\) and cannot be identified yet`),
    );
    expect(h.sim.vm(vmid)?.config.lock).toBe('create');
    // Once Proxmox finished it, the retried teardown identifies it as ours and deletes it.
    h.sim.releaseStuckTasks({ type: 'qmcreate' });
    await h.provisioner.deprovision({ requestId: 'req-unidentified', state: persisted, log: silentLogger });
    expect(h.sim.vm(vmid)).toBeUndefined();
  });

  it('a VM that took the recorded VMID after our create failed is left alone, by a teardown and by the next syncVM', async () => {
    h = await startPveHarness();
    // Answered 503 without being applied: the VMID stays free.
    h.sim.faults.onRequest({ method: 'POST', route: CREATE_ROUTE }, { kind: 'httpError', status: 503, reason: 'Service Unavailable' });
    const { persisted } = await runUntilCheckpoint(h, 'req-foreign', () => false);
    const vmid = persisted.createVmid;
    expect(vmid).toBeGreaterThan(0);
    expect(h.sim.vm(vmid)).toBeUndefined();
    const stranger = h.sim.externalCreateVm({ vmid, node: persisted.createNode, name: 'someone-else' });
    await h.sim.settle();
    const strangerConfig = { ...h.sim.vm(stranger)!.config };
    const untouched = () => {
      expect(h!.sim.vm(stranger)?.config).toEqual(strangerConfig);
      expect(h!.sim.requests.filter((r) => r.method !== 'GET' && r.path.includes(`/qemu/${stranger}`))).toEqual([]);
    };

    await h.provisioner.deprovision({ requestId: 'req-foreign', state: structuredClone(persisted), log: silentLogger });
    untouched();

    // Provisioning goes on instead: the intent is dropped (never adopted), our VM gets another VMID.
    const state = await runSteps(h.provisioner, request('req-foreign', basicData), structuredClone(persisted), { from: 'syncVM' });
    expect(state.vmid).not.toBe(vmid);
    expect(h.sim.vm(state.vmid)?.config.name).toBe('req-foreign');
    untouched();
    await h.provisioner.deprovision({ requestId: 'req-foreign', state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    untouched();
  });

  it('a confirmed VM that is gone is not waited for (only a create whose answer was lost is)', async () => {
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 10 * 60_000 } });
    const state = await runSteps(h.provisioner, request('req-gone-confirmed', basicData));
    h.sim.externalDeleteVm(state.vmid);
    const looksBefore = h.sim.requests.length;
    await h.provisioner.deprovision({ requestId: 'req-gone-confirmed', state, log: silentLogger });
    const looks = h.sim.requests.slice(looksBefore).filter((r) => r.path.endsWith(`/qemu/${state.vmid}/config`));
    expect(looks).toHaveLength(1);
  });

  it('a refused create (VMID taken meanwhile) clears the intent before the next VMID is recorded', async () => {
    h = await startPveHarness();
    h.sim.grabVmidAfterNextId();
    const intents: number[] = [];
    const state = await runSteps(h.provisioner, request('req-refused', basicData), emptyMachineState(), {
      checkpoint: (s) => {
        if (intents.at(-1) !== s.createVmid) intents.push(s.createVmid);
      },
    });
    // Nothing recorded (uploadISO), the first VMID recorded, cleared when Proxmox said it exists, the next one
    // recorded, then settled (the VM confirmed).
    expect(intents).toEqual([0, expect.any(Number), 0, state.vmid, 0]);
    expect(intents[1]).not.toBe(state.vmid);
    expect(h.sim.vm(intents[1]!)?.config.name).not.toBe('req-refused');
  });
});

describe('write-ahead record of the seed upload', () => {
  it('records the seed volume and node before the upload and its UPID after; a teardown lets it finish (bounded) and removes the seed', async () => {
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 2_000 } });
    h.sim.faults.onTask({ type: 'imgcopy' }, { kind: 'stuck' }, { times: Infinity });
    const harness = h;
    let uploadsBeforeRecord = -1;
    let recordedBefore: MachineState | undefined;
    const abort = new AbortController();
    let persisted: MachineState | undefined;
    await runSteps(harness.provisioner, request('req-seed', basicData), emptyMachineState(), {
      maxRetries: 0,
      signal: abort.signal,
      checkpoint: (s) => {
        persisted = structuredClone(s);
        if (s.seedVolume !== '' && uploadsBeforeRecord < 0) {
          recordedBefore = structuredClone(s);
          uploadsBeforeRecord = harness.sim.requests.filter((r) => r.route === '/nodes/{node}/storage/{storage}/upload').length;
        }
        if (s.seedUploadTask.startsWith('UPID:')) abort.abort(new Error('stopped by the test'));
      },
    }).catch(() => undefined);
    expect(uploadsBeforeRecord).toBe(0);
    // Named as go-proxmox names a seed (user-data-<vmid>.iso), so that the Go provider's teardown removes it after a rollback.
    const seedVolume = `nfs-iso:iso/user-data-${persisted!.vmid}.iso`;
    expect(recordedBefore).toMatchObject({ seedVolume, seedUploadTask: SEED_UPLOAD_UNANSWERED });
    expect(persisted).toMatchObject({ seedVolume, seedNode: persisted!.node });
    expect(persisted!.seedUploadTask).toMatch(/^UPID:.*:imgcopy:/);

    await harness.provisioner.deprovision({ requestId: 'req-seed', state: persisted!, log: silentLogger });
    // The upload was stopped before the seed was looked for: it can no longer appear.
    harness.sim.releaseStuckTasks({ type: 'imgcopy' });
    await harness.sim.settle();
    expect(harness.sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain(seedVolume);
    expect(harness.sim.tasks({ type: 'imgcopy' })[0]?.exitstatus).toBe('received interrupt');
    expect(ourVms(harness, 'req-seed')).toEqual([]);
  });

  it('an upload whose answer was lost is waited for (bounded) before the seed is removed: the seed cannot appear after the teardown', async () => {
    // The upload is applied but its answer lost (connection reset), and its task is still copying when the teardown
    // runs: no UPID was recorded, so the teardown cannot wait for that task; it waits out the bound instead.
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 600_000 } });
    const harness = h;
    harness.sim.faults.onTask({ type: 'imgcopy' }, { kind: 'stuck' });
    harness.sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/storage/{storage}/upload' }, { kind: 'lostResponse', mode: 'reset' });
    const { persisted, error } = await runUntilCheckpoint(harness, 'req-seed-lost', () => false);
    expect(String(error)).toMatch(/startVM: .*upload.*may have been executed/);
    const seedVolume = `nfs-iso:iso/user-data-${persisted.vmid}.iso`;
    expect(persisted).toMatchObject({ seedVolume, seedUploadTask: SEED_UPLOAD_UNANSWERED });
    expect(harness.sim.tasks({ type: 'imgcopy', status: 'running' })).toHaveLength(1);

    const waiting = new Changes();
    const said: string[] = [];
    const log = { ...silentLogger, info: (_obj: unknown, msg?: string) => { said.push(msg ?? ''); waiting.notify(); }, child: () => log } as unknown as Logger;
    const teardown = harness.provisioner.deprovision({ requestId: 'req-seed-lost', state: persisted, log });
    await waitFor(() => said.some((m) => /seed upload of this request whose answer was lost/.test(m)), { what: 'the teardown to wait for the upload', on: [waiting.trigger] });
    // The upload ends while the teardown waits: its file appears, and is removed once the bound has passed.
    expect(harness.sim.releaseStuckTasks({ type: 'imgcopy' })).toBe(1);
    await harness.sim.settle();
    expect(harness.sim.volumes('nfs-iso').map((v) => v.volid)).toContain(seedVolume);
    await teardown;
    expect(harness.sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain(seedVolume);
    expect(ourVms(harness, 'req-seed-lost')).toEqual([]);
  });

  it('an upload Proxmox refused clears the record: the teardown does not wait', async () => {
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 600_000_000 } });
    const harness = h;
    harness.sim.faults.onRequest(
      { method: 'POST', route: '/nodes/{node}/storage/{storage}/upload' },
      { kind: 'httpError', status: 403, message: 'Permission check failed (/storage/nfs-iso, Datastore.AllocateTemplate)' },
    );
    const { persisted, error } = await runUntilCheckpoint(harness, 'req-seed-refused', () => false);
    expect(String(error)).toMatch(/startVM: Permission check failed/);
    expect(persisted).toMatchObject({ seedVolume: `nfs-iso:iso/user-data-${persisted.vmid}.iso`, seedUploadTask: '' });
    await harness.provisioner.deprovision({ requestId: 'req-seed-refused', state: persisted, log: silentLogger });
    expect(ourVms(harness, 'req-seed-refused')).toEqual([]);
  });
});
