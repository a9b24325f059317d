// Omni misbehaving under a running daemon (child process): an outage and cut watch streams. The daemon must ride
// them out without a restart, resume its heartbeat, lose no event and do no work twice.
import { describe, expect, it } from 'vitest';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  SMALL_VM,
  STEP_ANNOTATION,
  STEP_NAMES,
  statusOf,
  stepRuns,
  vmsOf,
  waitForStage,
  waitUntil,
  watchPrivateState,
  withWorld,
} from '../helpers/e2e.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';

describe.concurrent('Omni faults under a running daemon (child process)', () => {
  it('Omni unavailable mid-provisioning: same process recovers, heartbeat resumes, provisioning completes', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      await waitUntil(world, () => omni.controllers.connected(), { what: 'first heartbeat' });

      // The outage starts at the createSchematic checkpoint and lasts until the daemon has noticed it (not for a
      // fixed time, which the daemon may sleep through on a busy machine).
      let outage = false;
      let linesBefore = 0;
      const unwatch = watchPrivateState(omni, (e) => {
        if (!outage && e.resource?.metadata.annotations[STEP_ANNOTATION] === 'createSchematic') {
          outage = true;
          linesBefore = daemon.lines.length;
          omni.controllers.makeUnavailable();
        }
      });
      const id = 'outage-1';
      omni.controllers.createMachineRequest('outage', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
      await waitUntil(world, () => outage, { what: 'the outage to start' });
      unwatch();
      // During the outage the daemon notices (heartbeat or reconcile failures are logged) but keeps running.
      await waitUntil(world, () => daemon.lines.slice(linesBefore).some((l) => /failed|broken|retrying/.test(l.msg)), {
        what: 'the daemon to log a failure during the outage',
      });
      expect(daemon.exit).toBeUndefined();
      // Every write fails during the outage, so a newer version of the health status is a beat written after it.
      const beatVersion = () => omni.store.find(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, omni.controllers.providerId)?.metadata.version ?? 0;
      const versionBefore = beatVersion();
      omni.controllers.restoreService();

      await waitForStage(omni, id, 'PROVISIONED');
      await waitUntil(world, () => beatVersion() > versionBefore, { what: 'a heartbeat after the outage' });
      expect(omni.controllers.connected()).toBe(true);
      expect(daemon.exit).toBeUndefined();
      expect(daemon.logs('infra provider started')).toHaveLength(1);
      expect(statusOf(omni, id)?.error).toBe('');
      expect(vmsOf(sim, id)).toHaveLength(1);
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(1);

      // Still responsive afterwards: a teardown goes through.
      await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  }, 120_000);

  it('watch streams cut mid-provisioning: events during the gap (a new request, a teardown) are not lost, no step runs twice', async ({
    signal,
  }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const first = 'cut-a';
      const second = 'cut-b';
      let cut = -1;
      const unwatch = watchPrivateState(omni, (e) => {
        if (cut < 0 && e.resource?.metadata.id === first && e.resource.metadata.annotations[STEP_ANNOTATION] === 'createSchematic') {
          cut = omni.controllers.cutWatchStreams();
          // Created while every stream is down: only a resumed watch can deliver it.
          omni.controllers.createMachineRequest('cut', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, second);
        }
      });
      omni.controllers.createMachineRequest('cut', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, first);
      await waitForStage(omni, first, 'PROVISIONED');
      await waitForStage(omni, second, 'PROVISIONED');
      unwatch();
      expect(cut).toBeGreaterThanOrEqual(5);
      expect(daemon.logs(/watch stream broken; reconnecting/).length).toBeGreaterThan(0);

      // A teardown whose events arrive while the streams are cut again.
      expect(omni.controllers.cutWatchStreams()).toBeGreaterThanOrEqual(5);
      await deleteRequest(world, first);
      expect(vmsOf(sim, first)).toHaveLength(0);
      expect(vmsOf(sim, second)).toHaveLength(1);

      // No duplicate work: every step ran exactly once per request, one create per request.
      expect(stepRuns([daemon])).toEqual({ [first]: [...STEP_NAMES], [second]: [...STEP_NAMES] });
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(2);
      expect(sim.tasks({ type: 'qmdestroy' })).toHaveLength(1);
      expect(daemon.logs('deprovisioning machine')).toHaveLength(1);
      expect(daemon.exit).toBeUndefined();

      await deleteRequest(world, second);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  }, 120_000);
});
