// Issue 8, "never leak a VM": the daemon as a child process loses track of a VM create in each way a randomized
// fault run found (an applied create answered 503, a 401 while polling the create task, SIGKILL mid-create, a teardown
// while the create step runs), then Omni deletes the request. Every case must end with no VM and no seed ISO of the
// request, and the finalizer released only once nothing of the request can still appear. The create task is held
// (`stuck`) until the daemon's teardown is seen waiting for it, so the VM is still in `lock: create` when the
// teardown starts, as it was in the fault run.
import { describe, expect, it } from 'vitest';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import {
  CONTROLLER,
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  providerVms,
  requestResource,
  seedIsos,
  SMALL_VM,
  vmsOf,
  waitUntil,
  withWorld,
  type DaemonProcess,
  type World,
} from '../helpers/e2e.js';

const TASK_STATUS_ROUTE = '/nodes/{node}/tasks/{upid}/status';

interface AtRelease {
  /** VMs (other than the fixture's) and seed ISOs that existed when the finalizer went away. */
  vms: number[];
  seeds: string[];
  /** VM creates still running then. */
  creating: number;
}

/** Records what still existed in Proxmox at the moment the provider released request `id` (finalizer removed). */
function recordRelease(world: World, id: string): { readonly seen: AtRelease | undefined; stop(): void } {
  let seen: AtRelease | undefined;
  const snapshot = (): AtRelease => ({
    vms: providerVms(world.sim),
    seeds: seedIsos(world.sim),
    creating: world.sim.tasks({ type: 'qmcreate', status: 'running' }).length,
  });
  const handle = world.omni.store.watchKind(NS.infraProvider, TYPES.machineRequest, {}, (events) => {
    for (const e of events) {
      if (seen !== undefined || e.resource?.metadata.id !== id) continue;
      const held = (e.old ?? e.resource).metadata.finalizers.includes(CONTROLLER);
      const released = e.type === 'destroyed' || (e.type === 'updated' && held && !e.resource.metadata.finalizers.includes(CONTROLLER));
      if (released) seen = snapshot();
    }
  });
  return {
    get seen() {
      return seen;
    },
    stop: () => handle.cancel(),
  };
}

/** The VM create task is held until released: the VM stays in `lock: create`. */
function holdCreates(world: World): void {
  world.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' }, { times: Infinity });
}

function vmInCreate(world: World): boolean {
  return [...world.sim.state.vms.values()].some((vm) => vm.config.get('lock') === 'create');
}

/**
 * Omni deletes request `id`. Held creates are released once the provider is seen waiting for them in its teardown
 * (or once it released the request without waiting, which is the leak). Then: nothing of the request is left, and
 * nothing was left when the finalizer was released.
 */
async function deleteAndCheck(world: World, daemon: DaemonProcess, id: string): Promise<void> {
  const release = recordRelease(world, id);
  try {
    const deleting = deleteRequest(world, id).then(
      () => undefined,
      (err: unknown) => err,
    );
    const waitingInTeardown = () => daemon.logs(/still being created; waiting for it before deleting it|whose answer was lost; waiting/).some((l) => l.request === id);
    await waitUntil(world, () => waitingInTeardown() || requestResource(world.omni, id) === undefined, {
      what: () => `the provider to wait for the VM create in its teardown of ${id}, or to release it`,
    });
    world.sim.releaseStuckTasks({ type: 'qmcreate' });
    const err = await deleting;
    if (err !== undefined) throw err;
    await world.sim.settle();
    expect(release.seen, 'what existed when the finalizer was released').toEqual({ vms: [], seeds: [], creating: 0 });
    expect(vmsOf(world.sim, id)).toEqual([]);
    expect(leftovers(world)).toEqual(NOTHING_LEFT);
  } finally {
    release.stop();
  }
}

describe.concurrent('never leak a VM (child process)', () => {
  it('create applied by Proxmox but answered 503, then the request is deleted: the VM is waited for and removed', { timeout: 90_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      holdCreates(world);
      sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'lostResponse', mode: 'error', status: 503 });
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const id = 'leak-503';
      omni.controllers.createMachineRequest('leak', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => daemon.logs('provision step failed; retrying').some((l) => l.request === id && /503/.test(String(l.err))), {
        what: 'the 503 answer to the create call',
      });
      expect(vmInCreate(world)).toBe(true);

      await deleteAndCheck(world, daemon, id);
      // One create call, no second VM.
      expect(sim.requests.filter((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')).toHaveLength(1);
    });
  });

  it('create answered, its task poll fails with 401, then the request is deleted: the VM is waited for and removed', { timeout: 90_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      holdCreates(world);
      sim.faults.onRequest({ method: 'GET', route: /\/tasks\/[^/]*qmcreate[^/]*\/status$/ }, { kind: 'httpError', status: 401, reason: 'authentication failure' });
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const id = 'leak-401';
      omni.controllers.createMachineRequest('leak', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => daemon.logs('machine provision failed').some((l) => l.request === id && /syncVM/.test(String(l.err))), {
        what: 'the create step to fail on the 401',
      });
      expect(sim.requests.some((r) => r.route === TASK_STATUS_ROUTE && r.status === 401)).toBe(true);
      expect(vmInCreate(world)).toBe(true);

      await deleteAndCheck(world, daemon, id);
      expect(sim.requests.filter((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')).toHaveLength(1);
    });
  });

  it('daemon SIGKILLed while the VM is being created, then the request is deleted: the restarted daemon removes it', { timeout: 90_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      holdCreates(world);
      const first = spawnDaemon();
      await first.waitForLog('infra provider started');
      const id = 'leak-sigkill';
      omni.controllers.createMachineRequest('leak', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => vmInCreate(world), { what: 'a VM in lock: create' });
      await first.crash();
      expect(providerVms(sim)).toHaveLength(1);

      const second = spawnDaemon();
      await second.waitForLog('infra provider started');
      await deleteAndCheck(world, second, id);
      expect(sim.requests.filter((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')).toHaveLength(1);
    });
  });

  it('teardown arrives while the create step waits for its task: the step is aborted, then the VM is removed', { timeout: 90_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      holdCreates(world);
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const id = 'leak-teardown';
      omni.controllers.createMachineRequest('leak', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      // The create step is waiting for its task: the VM is in lock: create and its task has been polled.
      await waitUntil(world, () => vmInCreate(world) && sim.requests.some((r) => r.route === TASK_STATUS_ROUTE && /qmcreate/.test(r.path)), {
        what: 'the create step waiting for its task',
      });

      await deleteAndCheck(world, daemon, id);
      // The step was aborted by the teardown (it did not run to its own end first).
      expect(daemon.logs('provision step aborted: the machine request is tearing down').filter((l) => l.request === id)).toHaveLength(1);
      expect(daemon.logs('machine provision failed')).toHaveLength(0);
    });
  });

  it('a VM that took the VMID recorded for our create (whose answer was lost) is never touched', { timeout: 90_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      // The create call is answered 503 without being applied: our VMID stays free, and someone else takes it.
      sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'httpError', status: 503, reason: 'Service Unavailable' });
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const id = 'leak-foreign';
      omni.controllers.createMachineRequest('leak', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => daemon.logs('provision step failed; retrying').some((l) => l.request === id && /503/.test(String(l.err))), {
        what: 'the 503 answer to the create call',
      });
      // The refused call was answered before the simulator read its parameters: its VMID is the one /cluster/nextid
      // handed out, the lowest free one (nothing was created since).
      const call = sim.requests.find((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')!;
      const node = /\/nodes\/([^/]+)\/qemu$/.exec(call.path)![1]!;
      let vmid = 100;
      while (sim.vm(vmid)) vmid++;
      const stranger = sim.externalCreateVm({ vmid, node, name: 'someone-else' });
      await sim.settle();
      const strangerConfig = { ...sim.vm(stranger)!.config };

      await deleteRequest(world, id);
      await sim.settle();
      // The stranger is untouched: no stop, shutdown, config change or delete was sent for it.
      expect(sim.vm(stranger)?.config).toEqual(strangerConfig);
      const touching = sim.requests.filter((r) => r.method !== 'GET' && r.path.includes(`/qemu/${stranger}`));
      expect(touching).toEqual([]);
      // It was looked at (the VMID recorded for our create) and recognised as someone else's.
      expect(daemon.logs(/not ours/).some((l) => l.request === id && l.vmid === vmid)).toBe(true);
      expect(providerVms(sim)).toEqual([stranger]);
      expect(seedIsos(sim)).toEqual([]);
      expect({ ...leftovers(world), vms: [] }).toEqual(NOTHING_LEFT);
    });
  });
});
