// Slots per Proxmox write: the limits per node and per storage hold against the simulator (measured on the tasks it
// ran), and a long task does not hold back quick work.
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { storageSlot, TaskSlots } from '../../src/provision/taskSlots.js';
import type { SimTask } from '../../src/sim/proxmox/index.js';
import { basicData, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';
import { simChanges, waitFor } from '../helpers/wait.js';

/** Task types that take a node slot (a graceful shutdown and a download do not). */
const NODE_TASKS = new Set(['qmcreate', 'imgcopy', 'qmstart', 'qmstop', 'qmdestroy', 'imgdel']);

/** The most tasks that ran at the same time (simulated time), from the simulator's own task list. */
function maxOverlap(tasks: SimTask[]): number {
  const edges = tasks.flatMap((t) => [
    { at: t.startedAtMs, d: 1 },
    { at: t.dueAtMs, d: -1 },
  ]);
  // An end and a start at the same instant do not overlap.
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let max = 0;
  for (const e of edges) {
    now += e.d;
    max = Math.max(max, now);
  }
  return max;
}

describe('TaskSlots', () => {
  it('is busy while a slot is held or wanted, and for a quiet time after the last one was given back', async () => {
    const slots = new TaskSlots({ perNode: 1 });
    expect(slots.busy(30_000)).toBe(false);
    const release = await slots.acquire({ node: 'pve1' });
    const waiting = slots.acquire({ node: 'pve1' });
    expect(slots.busy(0)).toBe(true);
    release();
    (await waiting)();
    const now = Date.now();
    expect(slots.busy(30_000, now)).toBe(true);
    expect(slots.busy(30_000, now + 30_001)).toBe(false);
  });

  it('grants up to the limit per key, oldest first, and a full node does not hold back another node', async () => {
    const slots = new TaskSlots({ perNode: 2, perStorage: 1 });
    const order: string[] = [];
    const take = (name: string, claim: Parameters<TaskSlots['acquire']>[0]) =>
      slots.acquire(claim).then((release) => {
        order.push(name);
        return release;
      });
    const a = await take('a', { node: 'pve1' });
    const b = await take('b', { node: 'pve1' });
    const c = take('c', { node: 'pve1' });
    const d = await take('d', { node: 'pve2' });
    expect(order).toEqual(['a', 'b', 'd']);
    expect(slots.waiting()).toBe(1);
    a();
    (await c)();
    expect(order).toEqual(['a', 'b', 'd', 'c']);
    b();
    d();
    expect(slots.peak('node:pve1')).toBe(2);
    expect(slots.inUse('node:pve1')).toBe(0);
  });

  it('takes a claim as a whole: node and storages together', async () => {
    const slots = new TaskSlots({ perNode: 4, perStorage: 1 });
    const ceph = storageSlot('pve1', 'ceph-vm', true);
    expect(ceph).toBe(storageSlot('pve2', 'ceph-vm', true));
    expect(storageSlot('pve1', 'local-lvm', false)).not.toBe(storageSlot('pve2', 'local-lvm', false));
    const first = await slots.acquire({ node: 'pve1', storages: [ceph] });
    let second = false;
    const pending = slots.acquire({ node: 'pve2', storages: [ceph] }).then((r) => {
      second = true;
      return r;
    });
    // A claim on pve2 alone goes ahead of the one waiting for the shared storage.
    (await slots.acquire({ node: 'pve2' }))();
    expect(second).toBe(false);
    expect(slots.inUse('node:pve2')).toBe(0);
    first();
    (await pending)();
    expect(slots.peak(ceph)).toBe(1);
  });

  it('an aborted wait takes nothing, and a double release counts once', async () => {
    const slots = new TaskSlots({ perNode: 1 });
    const held = await slots.acquire({ node: 'pve1' });
    const abort = new AbortController();
    const waiting = slots.acquire({ node: 'pve1' }, abort.signal);
    abort.abort(new Error('teardown'));
    await expect(waiting).rejects.toThrow('teardown');
    expect(slots.waiting()).toBe(0);
    held();
    held();
    expect(slots.inUse('node:pve1')).toBe(0);
    const again = await slots.acquire({ node: 'pve1' });
    expect(slots.inUse('node:pve1')).toBe(1);
    again();
  });

  it('refuses a limit below 1', () => {
    expect(() => new TaskSlots({ perNode: 0 })).toThrow(/perNode/);
  });
});

describe('task slots against the simulator', () => {
  let h: PveHarness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('holds the limits per node and per local storage while provisioning and tearing down in parallel', async () => {
    const slots = new TaskSlots({ perNode: 2, perStorage: 1 });
    h = await startPveHarness({ provisioner: { taskSlots: slots } });
    const data = basicData + 'node: pve1\n';
    const ids = ['s-1', 's-2', 's-3', 's-4', 's-5', 's-6'];
    const states = await Promise.all(ids.map((id) => runSteps(h!.provisioner, request(id, data))));
    expect(new Set(states.map((s) => s.node))).toEqual(new Set(['pve1']));
    const provisionTasks = h.sim.tasks({ node: 'pve1' }).filter((t) => NODE_TASKS.has(t.type));
    // The limits hold in the simulator's own task list. (Whether two tasks overlapped there depends on how fast this
    // machine answers against a clock 500× faster than real time; that the provider used both slots is its own count.)
    expect(maxOverlap(provisionTasks)).toBeLessThanOrEqual(2);
    expect(maxOverlap(h.sim.tasks({ node: 'pve1', type: 'qmcreate' }))).toBe(1);
    expect(slots.peak('node:pve1')).toBe(2);

    await Promise.all(ids.map((id, i) => h!.provisioner.deprovision({ requestId: id, state: states[i]!, log: silentLogger })));
    const destroys = h.sim.tasks({ node: 'pve1', type: 'qmdestroy' });
    expect(destroys).toHaveLength(6);
    expect(maxOverlap(h.sim.tasks({ node: 'pve1' }).filter((t) => NODE_TASKS.has(t.type)))).toBeLessThanOrEqual(2);
    expect(maxOverlap(destroys)).toBeLessThanOrEqual(2);
    expect(slots.inUse('node:pve1')).toBe(0);
  });

  it('counts seed uploads on the node our API URL points at, where PVE runs them, whatever node the VM is on', async () => {
    const slots = new TaskSlots({ perNode: 1, perStorage: 4 });
    h = await startPveHarness({ provisioner: { taskSlots: slots } });
    const entry = h.sim.state.entryNode;
    const others = ['pve1', 'pve2', 'pve3'].filter((n) => n !== entry);
    const ids = ['u-1', 'u-2', 'u-3', 'u-4'];
    await Promise.all(ids.map((id, i) => runSteps(h!.provisioner, request(id, `${basicData}node: ${others[i % 2]}\n`))));
    const uploads = h.sim.tasks({ type: 'imgcopy' });
    expect(uploads).toHaveLength(4);
    expect(new Set(uploads.map((t) => t.node))).toEqual(new Set([entry]));
    // One task at a time on the entry node, uploads for the other nodes included.
    expect(maxOverlap(h.sim.tasks({ node: entry }).filter((t) => NODE_TASKS.has(t.type)))).toBe(1);
    expect(slots.peak(`node:${entry}`)).toBe(1);
  });

  it('counts a shared storage cluster-wide', async () => {
    const slots = new TaskSlots({ perNode: 4, perStorage: 1 });
    h = await startPveHarness({ provisioner: { taskSlots: slots } });
    const data = basicData.replace('name == "local-lvm"', 'name == "ceph-vm"');
    const states = await Promise.all(['c-1', 'c-2', 'c-3', 'c-4', 'c-5'].map((id) => runSteps(h!.provisioner, request(id, data, 'set-c'))));
    expect(new Set(states.map((s) => s.node)).size).toBeGreaterThan(1);
    const creates = h.sim.tasks({ type: 'qmcreate' });
    expect(creates).toHaveLength(5);
    expect(maxOverlap(creates)).toBe(1);
    expect(slots.peak(storageSlot('', 'ceph-vm', true))).toBe(1);
  });

  it('a long ISO download holds no node slot: quick work on that node goes on meanwhile', async () => {
    const slots = new TaskSlots({ perNode: 1, perStorage: 2 });
    // A slower simulated clock: A's wait must not reach the download's deadline (30 simulated minutes) meanwhile.
    h = await startPveHarness({ timeScale: 0.01, provisioner: { taskSlots: slots } });
    // The first download (request A's Talos version) never ends until released.
    h.sim.faults.onTask({ type: 'download' }, { kind: 'stuck' });
    const data = basicData + 'node: pve1\n';
    const a = request('long-a', data);
    const stateA: MachineState = emptyMachineState();
    const runA = runSteps(h.provisioner, a, stateA);
    const sim = h.sim;
    await waitFor(() => sim.tasks({ type: 'download', status: 'running' }).length === 1, {
      what: "request A's download running",
      on: [simChanges(sim)],
    });
    // B (another Talos version: its own download) and C (A's version: joins A's download) start now.
    const b = { ...request('quick-b', data), talosVersion: 'v1.11.6' };
    const stateC = emptyMachineState();
    const runC = runSteps(h.provisioner, request('join-c', data), stateC);
    const stateB = await runSteps(h.provisioner, b);
    expect(h.sim.vm(stateB.vmid)!.running).toBe(true);
    // A's download is still running: B was created, seeded and started on pve1 while A (and C) waited for it.
    expect(h.sim.tasks({ type: 'download', status: 'running' })).toHaveLength(1);
    expect(stateA.vmid).toBe(0);
    expect(stateC.vmid).toBe(0);
    expect(h.sim.releaseStuckTasks({ type: 'download' })).toBe(1);
    const [doneA, doneC] = await Promise.all([runA, runC]);
    expect(h.sim.vm(doneA.vmid)!.running).toBe(true);
    expect(h.sim.vm(doneC.vmid)!.running).toBe(true);
    expect(maxOverlap(h.sim.tasks({ node: 'pve1' }).filter((t) => NODE_TASKS.has(t.type)))).toBe(1);
  });
});

