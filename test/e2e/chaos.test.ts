// Issue 8, part 4: the seeded chaos run (docs/chaos.md). Per seed: several machine sets, random creates and deletes
// (some aimed at creates in flight, the create task slowed to 10 s simulated), every fault kind of both simulators,
// SIGKILLs (one in the middle of a create) and restarts of the daemon (child process); then the faults stop, the
// daemon settles, and the invariants are checked: every live request PROVISIONED with exactly one VM of its identity,
// nothing left of deleted requests, no duplicates, foreign VMs untouched, nothing held by a finalizer.
//
// CI runs CI_SEEDS; `CHAOS_SEEDS=1-50` (or `3,7,11`) runs others. A failure names its seed, the command replaying it
// and a report directory (plan, timeline as played, request summary, per-request history, daemon logs).
import { setMaxListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { seedIsoFileName } from '../../src/proxmox/nocloud.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { ChaosRun, chaosWorldOptions, parseSeeds, planChaos, replayCommand, type ChaosPlan } from '../helpers/chaos.js';
import { privateStateOf, withWorld } from '../helpers/e2e.js';

const seeds = parseSeeds(process.env.CHAOS_SEEDS);

describe('chaos (child process, seeded)', () => {
  it.for(seeds)('seed %i', { timeout: 180_000 }, async (seed, { signal }) => {
    const plan = planChaos(seed);
    const started = Date.now();
    let run: ChaosRun | undefined;
    let violations: string[] = [];
    // Every wait of the run listens to the test's signal.
    setMaxListeners(0, signal);
    // vitest's timeout is the outer net: say which seed it caught, and what the run was waiting for, before the
    // clean-up runs (vitest reports the timeout and moves on).
    signal.addEventListener('abort', () => {
      const dir = run?.writeReport([`timed out; still waiting for: ${run.pending().join('; ') || 'the fault phase to end'}`]);
      console.error(`chaos seed ${seed} timed out after ${((Date.now() - started) / 1000).toFixed(1)} s; replay: ${replayCommand(seed)}${dir ? `; report: ${dir}` : ''}`);
    });
    try {
      await withWorld(chaosWorldOptions(plan, signal), async (world, spawnDaemon) => {
        run = new ChaosRun(plan, world, spawnDaemon);
        try {
          await run.play();
          await run.converge();
          violations = run.violations();
        } finally {
          run.close();
        }
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      violations = [...violations, `the run failed: ${message}`];
    }
    if (violations.length > 0) {
      const dir = run?.writeReport(violations);
      const text = `chaos seed ${seed} failed after ${((Date.now() - started) / 1000).toFixed(1)} s; replay: ${replayCommand(seed)}${dir ? `; report: ${dir}` : ''}`;
      console.error(`${text}\n${violations.map((v) => `  - ${v}`).join('\n')}`);
      expect.fail(`${text}\n${violations.join('\n')}`);
    }
    if (process.env.CHAOS_REPORT) console.log(`seed ${seed}: ${((Date.now() - started) / 1000).toFixed(1)} s; report: ${run?.writeReport([])}`);
  });
});

describe('chaos invariants', () => {
  it('the end-state check reports each kind of violation (leak, duplicate, foreign VM touched, stuck finalizer)', { timeout: 60_000 }, async ({ signal }) => {
    setMaxListeners(0, signal);
    // No fault: two requests, one deleted right away; then the end state is tampered with, one violation each.
    const base = planChaos(1);
    const [live, gone] = [base.requests[0]!, base.requests[1]!];
    const plan: ChaosPlan = {
      ...base,
      auth: 'token',
      requests: [live, gone],
      actions: [
        { kind: 'create', request: live.id },
        { kind: 'create', request: gone.id },
        { kind: 'delete', pick: 0.99 },
      ],
      timeline: [
        { afterMs: 0, action: 0 },
        { afterMs: 0, action: 1 },
        { afterMs: 0, action: 2 },
      ],
    };
    await withWorld(chaosWorldOptions(plan, signal), async (world, spawnDaemon) => {
      const run = new ChaosRun(plan, world, spawnDaemon);
      try {
        await run.play();
        await run.converge();
        expect(run.violations()).toEqual([]);
      } finally {
        run.close();
      }
      for (const d of run.daemons) await d.crash();
      const { sim, omni } = world;
      const foreign = plan.foreignVms[0]!.vmid;
      sim.state.vms.get(foreign)!.config.set('description', 'touched');
      sim.externalCreateVm({ node: 'pve1', name: gone.id });
      const duplicate = sim.externalCreateVm({ node: 'pve2', name: live.id });
      sim.state.vms.get(duplicate)!.config.set('smbios1', `uuid=${privateStateOf(omni, live.id)!.uuid}`);
      sim.state.addVolume(sim.state.storages.get('nfs-iso')!, 'pve1', { name: `iso/${seedIsoFileName(gone.id)}`, content: 'iso', format: 'iso', size: 1, ctime: 0 });
      const stray = omni.controllers.createMachineRequest('stray', { talosVersion: 'v1.11.5' }, 'stray-1');
      omni.store.addFinalizer(NS.infraProvider, TYPES.machineRequest, stray.metadata.id, 'someone.Else');

      const found = run.violations().join('\n');
      expect(found).toMatch(new RegExp(`foreign VM ${foreign} \\(fixture\\): config changed`));
      expect(found).toMatch(new RegExp(`deleted ${gone.id}: VM \\d+ on pve1 remains`));
      expect(found).toMatch(new RegExp(`${live.id}: 2 VM\\(s\\) with its name and SMBIOS UUID .*, 2 with either`));
      expect(found).toMatch(new RegExp(`deleted ${gone.id}: seed ISO nfs-iso:iso/omni-seed-${gone.id}\\.iso on pve1 remains`));
      expect(found).toMatch(/MachineRequest stray-1 exists but was never created by the run/);
    });
  });
});
