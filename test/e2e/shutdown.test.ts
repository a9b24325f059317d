// Graceful shutdown of the daemon as a child process: SIGTERM while a step is in flight lets that step finish and
// checkpoint, exits 0 within the shutdown bound, and a restart completes the work.
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

/** The controller waits up to 30 s for in-flight reconciles; the process must be gone soon after. */
const SHUTDOWN_BOUND_MS = 30_000 + 5_000;

describe.concurrent('SIGTERM (child process)', () => {
  it('during the VM create: the create finishes and is checkpointed, exit 0, a restart completes with the same VM', async () => {
    // A 2 s (simulated 200 s) create task is in flight when SIGTERM arrives.
    await withWorld({ fixture: { taskDurations: { qmcreate: 200_000 } } }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const first = spawnDaemon();
      await first.waitForLog('infra provider started');
      const id = 'term-1';
      omni.controllers.createMachineRequest('term', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(() => [...sim.state.vms.values()].some((vm) => vm.config.get('lock') === 'create'), { what: 'a VM in lock: create' });
      const exit = await first.terminate();
      expect(exit.code).toBe(0);
      expect(exit.signal).toBeNull();
      expect(exit.ms).toBeLessThan(SHUTDOWN_BOUND_MS);
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
      expect(second.logs('running provision step').map((l) => l.step)).toEqual(['syncVM', 'startVM']);
      expect(providerVms(sim)).toEqual(vmid);
      expect(vmsOf(sim, id)).toHaveLength(1);
      expect(sim.vm(vmid[0]!)?.running).toBe(true);
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);

      await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  }, 60_000);

  it('while idle: exit 0 within the bound, after logging that it stopped', async () => {
    await withWorld({}, async (world, spawnDaemon) => {
      const d = spawnDaemon();
      await d.waitForLog('infra provider started');
      await waitUntil(() => world.omni.controllers.connected(), { what: 'first heartbeat' });
      const exit = await d.terminate();
      expect(exit.code).toBe(0);
      expect(exit.ms).toBeLessThan(SHUTDOWN_BOUND_MS);
      expect(d.logs('stopped')).toHaveLength(1);
    });
  }, 60_000);
});
