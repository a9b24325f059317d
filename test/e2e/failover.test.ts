// Two daemon processes with the same provider ID against the in-process Omni and the Proxmox simulator: one holds
// the leader lease and acts, the other stands by. The leader is killed (SIGKILL), frozen (SIGSTOP, later SIGCONT),
// cut off from Omni while it still reaches Proxmox, or stopped with SIGTERM (an upgrade). Invariants:
// - never two acting at once: every Proxmox write and every Omni write (the lease aside) arrives while Omni's lease
//   names its sender (the instance ID is in each call's User-Agent, checked as the call arrives);
// - no request lost: every live request ends PROVISIONED with exactly one VM, the standby resuming in-flight
//   requests from their private state.
// The creates are held in Proxmox (`lock: create`) when the fault hits, so the take-over always has work in flight.
import { fromBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { LeaseSpecSchema } from '../../src/gen/proxmox/specs/lease_pb.js';
import { isWriteCall } from '../../src/sim/proxmox/index.js';
import {
  PRIVATE_NS,
  PROVIDER_ID,
  SMALL_VM,
  privateResource,
  privateStateOf,
  STEP_ANNOTATION,
  providerVms,
  vmsOf,
  waitForStage,
  waitUntil,
  withWorld,
  type DaemonProcess,
  type World,
} from '../helpers/e2e.js';

const LEASE_TYPE = `Lease.${PROVIDER_ID}.infraprovider.sidero.dev`;
/** Short lease for the tests: a take-over within about 6 s of the last renewal. */
const LEASE_ENV = {
  PROVIDER_LEASE_DURATION_SECONDS: '6',
  PROVIDER_LEASE_RENEW_DEADLINE_SECONDS: '4',
  PROVIDER_LEASE_RETRY_PERIOD_SECONDS: '1',
};
const ACQUIRED = 'leader lease acquired: this instance acts';

function leaseHolder(world: World): string {
  const res = world.omni.store.find(PRIVATE_NS, LEASE_TYPE, 'leader');
  return res ? fromBinary(LeaseSpecSchema, res.spec.protoSpec).holderInstance : '';
}

/**
 * Records every Proxmox write and every Omni write (but the lease's own) as it arrives: its sender (the instance ID in
 * its User-Agent) and who Omni's lease named at that moment.
 */
function writeLog(world: World): { writes: Array<{ by: string; holder: string; what: string }>; violations(): string[]; by(instance: string): number; stop(): void } {
  const writes: Array<{ by: string; holder: string; what: string }> = [];
  const sender = (agent: string | undefined) => /instance\/(\S+)/.exec(agent ?? '')?.[1] ?? `(no instance: ${agent ?? 'no user agent'})`;
  const stopPve = world.sim.onArrival((r) => {
    if (!isWriteCall(r)) return;
    writes.push({ by: sender(r.userAgent), holder: leaseHolder(world), what: `Proxmox ${r.method} ${r.path}` });
  });
  const stopOmni = world.omni.onWriteCall((w) => {
    if (w.type === LEASE_TYPE) return;
    writes.push({ by: sender(w.userAgent), holder: leaseHolder(world), what: `Omni ${w.path.slice(w.path.lastIndexOf('/') + 1)} ${w.type}/${w.id}` });
  });
  return {
    writes,
    violations: () => writes.filter((w) => w.by !== w.holder).map((w) => `${w.what} by ${w.by} while the lease named ${w.holder || 'nobody'}`),
    by: (instance) => writes.filter((w) => w.by === instance).length,
    stop: () => {
      stopPve();
      stopOmni();
    },
  };
}

async function instanceOf(d: DaemonProcess): Promise<string> {
  return String((await d.waitForLog('joining the leader election')).instance);
}

/** Starts the leader, then a standby once the leader acts; returns both with their instance IDs. */
async function startPair(spawnDaemon: (env?: Record<string, string | undefined>) => DaemonProcess) {
  const a = spawnDaemon(LEASE_ENV);
  await a.waitForLog('infra provider started');
  const b = spawnDaemon(LEASE_ENV);
  await b.waitForLog('another instance holds the leader lease; standing by');
  return { a, b, idA: await instanceOf(a), idB: await instanceOf(b) };
}

/** Creates `n` requests and waits until each has its VM create sent and held in Proxmox (`lock: create`). */
async function requestsInFlight(world: World, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  for (const id of ids) world.omni.controllers.createMachineRequest(prefix, { talosVersion: 'v1.11.5', providerData: SMALL_VM }, id);
  // A VM in lock: create has no config yet (no name): it is found through the VMID its request recorded.
  const lockOf = (id: string) => {
    const vmid = privateStateOf(world.omni, id)?.createVmid ?? 0;
    return vmid === 0 ? 'no create recorded' : (world.sim.state.vms.get(vmid)?.config.get('lock') ?? 'no lock');
  };
  await waitUntil(world, () => ids.every((id) => lockOf(id) === 'create'), {
    what: () => `every request's VM in lock: create (now ${JSON.stringify(ids.map(lockOf))})`,
  });
  return ids;
}

/** Every request PROVISIONED with exactly one VM of its own; no other VM made by the provider. */
async function expectAllProvisioned(world: World, ids: string[]): Promise<void> {
  for (const id of ids) {
    const status = await waitForStage(world.omni, id, 'PROVISIONED');
    expect(status.error, id).toBe('');
    expect(vmsOf(world.sim, id), id).toHaveLength(1);
  }
  expect(providerVms(world.sim)).toHaveLength(ids.length);
}

/** The step each request's private state names (where a restart resumes). */
function stepCheckpoints(world: World, ids: string[]): Record<string, string | undefined> {
  return Object.fromEntries(ids.map((id) => [id, privateResource(world.omni, id)?.metadata.annotations[STEP_ANNOTATION]]));
}

/** The first provision step `d` ran for each request. */
function firstStepsOf(d: DaemonProcess, ids: string[]): Record<string, string | undefined> {
  const runs = d.logs('running provision step');
  return Object.fromEntries(ids.map((id) => [id, runs.find((l) => l.request === id)?.step as string | undefined]));
}

function failoverSeconds(from: number, acquired: Record<string, unknown>): number {
  return Math.round((Date.parse(String(acquired.time)) - from) / 100) / 10;
}

// One at a time: six daemons at once on a small machine would make the short test leases flap.
describe('two instances: one acts, the other takes over', () => {
  it('leader killed with SIGKILL: the standby takes the lease and finishes the requests in flight', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const log = writeLog(world);
      const { a, b, idA, idB } = await startPair(spawnDaemon);
      const hold = world.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' }, { times: Infinity });
      const ids = await requestsInFlight(world, 'kill', 3);
      expect(log.by(idA)).toBeGreaterThan(0);
      expect(log.by(idB)).toBe(0);

      const checkpoints = stepCheckpoints(world, ids);
      await a.crash();
      const killedAt = Date.now();
      const acquired = await b.waitForLog(ACQUIRED);
      await b.waitForLog('infra provider started');
      world.sim.faults.remove(hold);
      world.sim.releaseStuckTasks({ type: 'qmcreate' });
      await expectAllProvisioned(world, ids);
      expect(log.violations()).toEqual([]);

      // B resumed A's requests from their private state (at the checkpointed step) and created no second VM.
      expect(firstStepsOf(b, ids)).toEqual(checkpoints);
      expect(world.sim.tasks({ type: 'qmcreate' })).toHaveLength(ids.length);
      expect(log.by(idB)).toBeGreaterThan(0);
      expect(log.violations()).toEqual([]);
      console.log(`failover after SIGKILL: ${failoverSeconds(killedAt, acquired)} s (lease 6 s, renew deadline 4 s, retry 1 s)`);
      log.stop();
    });
  }, 150_000);

  it('leader frozen with SIGSTOP: the standby takes over; resumed with SIGCONT the old leader writes nothing and stands by', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const log = writeLog(world);
      const { a, b, idA, idB } = await startPair(spawnDaemon);
      const hold = world.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' }, { times: Infinity });
      const ids = await requestsInFlight(world, 'stop', 2);

      const checkpoints = stepCheckpoints(world, ids);
      a.kill('SIGSTOP');
      const frozenAt = Date.now();
      const acquired = await b.waitForLog(ACQUIRED);
      await b.waitForLog('infra provider started');
      const writesOfABefore = log.by(idA);
      // The frozen leader wakes up inside its in-flight steps (polling the held create tasks), past its deadline.
      a.kill('SIGCONT');
      await a.waitForLog('leader lease lost: this instance stops acting');
      world.sim.faults.remove(hold);
      world.sim.releaseStuckTasks({ type: 'qmcreate' });
      await expectAllProvisioned(world, ids);
      // One more request after the resume: served by B, A stays standby.
      world.omni.controllers.createMachineRequest('stop', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'stop-late');
      await expectAllProvisioned(world, [...ids, 'stop-late']);
      expect(log.violations()).toEqual([]);

      expect(firstStepsOf(b, ids)).toEqual(checkpoints);
      expect(log.violations()).toEqual([]);
      expect(a.exit).toBeUndefined();
      // Unless B itself missed its deadline later (a slow machine) and A took the lease back legitimately, A wrote
      // nothing after it was resumed (the invariant above holds either way).
      if (b.logs('leader lease lost: this instance stops acting').length === 0) {
        expect(log.by(idA)).toBe(writesOfABefore);
        expect(a.logs(ACQUIRED)).toHaveLength(1);
        expect(leaseHolder(world)).toBe(idB);
      }
      console.log(`failover after SIGSTOP: ${failoverSeconds(frozenAt, acquired)} s`);
      log.stop();
    });
  }, 150_000);

  it('leader cut off from Omni: it stops acting at its renew deadline, before the standby takes over, and stays standby when Omni is back', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const log = writeLog(world);
      const { a, b, idA, idB } = await startPair(spawnDaemon);
      const hold = world.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' }, { times: Infinity });
      const ids = await requestsInFlight(world, 'cut', 2);

      world.omni.faults.isolate(`instance/${idA}`);
      const cutAt = Date.now();
      const lost = await a.waitForLog('leader lease lost: this instance stops acting');
      expect(String(lost.reason)).toMatch(/renew deadline/);
      const acquired = await b.waitForLog(ACQUIRED);
      // A gave up before B took over (both timestamps are this machine's clock).
      expect(Date.parse(String(lost.time))).toBeLessThan(Date.parse(String(acquired.time)));
      await b.waitForLog('infra provider started');
      // A still reaches Proxmox while cut off from Omni (its in-flight steps poll the held creates): its fence is all
      // that keeps it from writing.
      world.sim.faults.remove(hold);
      world.sim.releaseStuckTasks({ type: 'qmcreate' });
      await expectAllProvisioned(world, ids);
      const writesOfA = log.by(idA);
      world.omni.faults.rejoin(`instance/${idA}`);
      const back = await a.waitForLog('Omni answers the leader lease calls again');
      expect(back.holder).toMatch(new RegExp(`instance ${idB}`));
      world.omni.controllers.createMachineRequest('cut', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'cut-late');
      await expectAllProvisioned(world, [...ids, 'cut-late']);
      if (b.logs('leader lease lost: this instance stops acting').length === 0) expect(log.by(idA)).toBe(writesOfA);
      expect(log.violations()).toEqual([]);
      expect(log.by(idB)).toBeGreaterThan(0);
      if (b.logs('leader lease lost: this instance stops acting').length === 0) {
        expect(a.logs(ACQUIRED)).toHaveLength(1);
        expect(leaseHolder(world)).toBe(idB);
      }
      console.log(`failover after cutting the leader off from Omni: ${failoverSeconds(cutAt, acquired)} s`);
      log.stop();
    });
  }, 150_000);

  it('leader stopped with SIGTERM (an upgrade): it finishes its steps, releases the lease, and the standby takes over at once', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const log = writeLog(world);
      const { a, b, idB } = await startPair(spawnDaemon);
      const hold = world.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'stuck' }, { times: Infinity });
      const ids = await requestsInFlight(world, 'term', 2);

      a.kill('SIGTERM');
      await a.waitForLog('stopping: no new work; waiting for in-flight steps');
      // The creates end while A is stopping: A's steps finish and checkpoint before it lets the lease go.
      world.sim.faults.remove(hold);
      world.sim.releaseStuckTasks({ type: 'qmcreate' });
      const exit = await a.exited;
      expect(exit.code).toBe(0);
      const released = a.logs('leader lease released')[0];
      expect(released).toBeDefined();
      const acquired = await b.waitForLog(ACQUIRED);
      expect(acquired.reason).toBe('the lease was released');
      await expectAllProvisioned(world, ids);
      expect(log.violations()).toEqual([]);
      expect(log.by(idB)).toBeGreaterThan(0);
      expect(world.sim.tasks({ type: 'qmcreate' })).toHaveLength(ids.length);
      console.log(`hand-over after SIGTERM: ${failoverSeconds(Date.parse(String(released!.time)), acquired)} s from the release to the standby acting`);
      log.stop();
    });
  }, 150_000);
});
