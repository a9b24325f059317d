// Graceful shutdown of the daemon as a child process: SIGTERM while a step is in flight lets that step finish and
// checkpoint, exits 0 without reaching the shutdown bound, and a restart completes the work.
import { describe, expect, it } from 'vitest';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateResource,
  providerVms,
  SMALL_VM,
  STEP_ANNOTATION,
  vmsOf,
  waitForStage,
  waitUntil,
  withWorld,
} from '../helpers/e2e.js';

/** What the controller logs when its shutdown bound (30 s for in-flight reconciles) ran out. */
const BOUND_REACHED = 'shutdown bound reached; abandoning in-flight reconciles';

describe.concurrent('SIGTERM (child process)', () => {
  it('during the VM create: the create finishes and is checkpointed, exit 0, a restart completes with the same VM', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      // The create task runs until the test releases it, so it is certainly in flight when SIGTERM arrives.
      sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' });
      const first = spawnDaemon();
      await first.waitForLog('infra provider started');
      const id = 'term-1';
      omni.controllers.createMachineRequest('term', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => [...sim.state.vms.values()].some((vm) => vm.config.get('lock') === 'create'), { what: 'a VM in lock: create' });
      const exiting = first.terminate();
      await first.waitForLog('stopping: no new work; waiting for in-flight steps');
      // Proxmox finishes the create while the daemon is shutting down.
      expect(sim.releaseStuckTasks({ type: 'qmcreate' })).toBe(1);
      const exit = await exiting;
      expect(exit.code).toBe(0);
      expect(exit.signal).toBeNull();
      // It drained: the in-flight step ended before the shutdown bound (nothing was abandoned).
      expect(first.logs(BOUND_REACHED)).toHaveLength(0);
      expect(first.logs('stopping: no new work; waiting for in-flight steps')).toHaveLength(1);
      expect(first.logs('stopped')).toHaveLength(1);
      // The in-flight step was allowed to finish and its result was saved; the next one was not started.
      expect(privateResource(omni, id)?.metadata.annotations[STEP_ANNOTATION]).toBe('syncVM');
      expect(first.logs('shutting down; the next start resumes at this step')[0]?.step).toBe('startVM');
      const vmid = providerVms(sim);
      expect(vmid).toHaveLength(1);
      expect(sim.vm(vmid[0]!)?.running).toBe(false);

      const second = spawnDaemon();
      await waitForStage(omni, id, 'PROVISIONED');
      expect(second.logs('running provision step').map((l) => l.step)).toEqual(['syncVM', 'startVM', 'registerHA', 'syncHARules']);
      expect(providerVms(sim)).toEqual(vmid);
      expect(vmsOf(sim, id)).toHaveLength(1);
      expect(sim.vm(vmid[0]!)?.running).toBe(true);
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);

      await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  }, 120_000);

  it('while idle: exit 0 without reaching the bound, after logging that it stopped', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const d = spawnDaemon();
      await d.waitForLog('infra provider started');
      await waitUntil(world, () => world.omni.controllers.connected(), { what: 'first heartbeat' });
      const exit = await d.terminate();
      expect(exit.code).toBe(0);
      expect(d.logs(BOUND_REACHED)).toHaveLength(0);
      expect(d.logs('stopped')).toHaveLength(1);
    });
  }, 120_000);
});
