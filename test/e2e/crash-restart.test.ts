// Crash safety of the daemon as a child process: SIGKILL right after each step checkpoint (the private state's
// step annotation) and in the middle of the VM create task, then a restart finishes the work without duplicates.
import { describe, expect, it } from 'vitest';
import { smbiosUuidOf } from '../../src/provision/cluster.js';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateResource,
  providerVms,
  SMALL_VM,
  STEP_ANNOTATION,
  STEP_NAMES,
  statusOf,
  vmsOf,
  waitForStage,
  waitUntil,
  watchPrivateState,
  withWorld,
} from '../helpers/e2e.js';

describe.concurrent('SIGKILL and restart (child process)', () => {
  it.for(STEP_NAMES)('killed right after the %s checkpoint: one VM, PROVISIONED, nothing leaked after teardown', { timeout: 150_000 }, async (step, { signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const first = spawnDaemon();
      let killedAt: string | undefined;
      const unwatch = watchPrivateState(omni, (e) => {
        if (killedAt === undefined && e.resource?.metadata.annotations[STEP_ANNOTATION] === step) {
          killedAt = step;
          first.kill('SIGKILL');
        }
      });
      await first.waitForLog('infra provider started');
      const id = `crash-${step.toLowerCase()}`;
      omni.controllers.createMachineRequest('crash', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      const exit = await first.exited;
      unwatch();
      expect(killedAt).toBe(step);
      expect(exit.signal).toBe('SIGKILL');
      expect(first.logs('machine provision finished')).toHaveLength(0);
      expect(privateResource(omni, id)?.metadata.annotations[STEP_ANNOTATION]).toBe(step);

      const second = spawnDaemon();
      const status = await waitForStage(omni, id, 'PROVISIONED');
      expect(status.error).toBe('');
      const vms = vmsOf(sim, id);
      expect(vms).toHaveLength(1);
      expect(providerVms(sim)).toEqual([vms[0]!.vmid]);
      expect(sim.vm(vms[0]!.vmid)?.running).toBe(true);
      expect(status.id).toBe(smbiosUuidOf(sim.vm(vms[0]!.vmid)!.config));
      // The restarted daemon resumed at the checkpointed step (idempotent re-run) instead of starting over.
      const ran = second.logs('running provision step').map((l) => l.step);
      expect(ran[0]).toBe(step);
      expect(ran).toEqual(STEP_NAMES.slice(STEP_NAMES.indexOf(step)));
      // One create task overall, one download of the Talos ISO.
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);
      expect(sim.tasks({ type: 'download' })).toHaveLength(1);

      await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  });

  it('killed while Proxmox is still creating the VM (lock: create): the restart adopts that VM instead of creating another', async ({
    signal,
  }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      // The create task does not end until the test releases it: the VM exists only as `lock: create` for as long
      // as the test needs, however slowly the daemons start (a fixed task duration raced the second daemon's start).
      sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' });
      const first = spawnDaemon();
      await first.waitForLog('infra provider started');
      const id = 'crash-mid-create';
      omni.controllers.createMachineRequest('crash', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => [...sim.state.vms.values()].some((vm) => vm.config.get('lock') === 'create'), {
        what: 'a VM in lock: create',
      });
      await first.crash();
      const pending = providerVms(sim);
      expect(pending).toHaveLength(1);
      expect(sim.state.vms.get(pending[0]!)?.config.get('lock')).toBe('create');
      // The checkpoint is still uploadISO: the create was never recorded in Omni.
      expect(privateResource(omni, id)?.metadata.annotations[STEP_ANNOTATION]).toBe('uploadISO');

      const second = spawnDaemon();
      // While the create runs, the new daemon cannot tell whose VM it is and says so instead of creating another.
      await waitUntil(world, () => /still being created/.test(statusOf(omni, id)?.error ?? ''), {
        what: () => `MRS.error about the pending create (status now ${JSON.stringify(statusOf(omni, id))})`,
      });
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);
      // Proxmox finishes the create: the next look identifies the VM as this request's and adopts it.
      expect(sim.releaseStuckTasks({ type: 'qmcreate' })).toBe(1);
      await waitForStage(omni, id, 'PROVISIONED');
      expect(providerVms(sim)).toEqual(pending);
      expect(vmsOf(sim, id)).toHaveLength(1);
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);
      expect(second.logs('adopting existing VM')).toHaveLength(1);

      await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  }, 150_000);
});
