// The leader lease against the in-process Omni over real gRPC: the resource type is accepted, version-checked updates
// conflict as in a real Omni, a second instance stands by, takes over when the holder stops renewing (measured on a
// test-driven monotonic clock) or releases, and a holder cut off from Omni stops acting before the standby may take
// the lease. Never two instances may act at once: checked at every status change of either.
import * as grpc from '@grpc/grpc-js';
import { beforeEach, describe, expect, it } from 'vitest';
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import { cloneResource, newResource, providerLeaseKind } from '../../src/cosi/resources.js';
import { decodeServiceAccountKey } from '../../src/cosi/signing.js';
import { CosiError, CosiState } from '../../src/cosi/state.js';
import { LeaseSpecSchema } from '../../src/gen/proxmox/specs/lease_pb.js';
import { create } from '@bufbuild/protobuf';
import { LEASE_ID, LeaderElector, NotLeaderError, leaseOwner, readLease, type LeaseIdentity } from '../../src/omni/lease.js';
import { PveClient } from '../../src/proxmox/client.js';
import { PveSim, ScaledClock, startPveSimServer } from '../../src/sim/proxmox/index.js';
import { providerToken, testFixture } from '../helpers/pveHarness.js';
import { Changes } from '../helpers/wait.js';
import { createLogger } from '../../src/log.js';
import { startOmniFixture, type OmniFixture } from './omni-fixture.js';

const KIND = providerLeaseKind('proxmox');
const TIMING = { durationMs: 10_000, renewDeadlineMs: 6_000, retryPeriodMs: 15 };

/** A monotonic clock the test moves: expiry and deadlines are decided on it, the rounds run on real short timers. */
class FakeMonotonic {
  ms = 1_000;
  readonly now = () => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

interface Instance {
  id: LeaseIdentity;
  client: OmniClient;
  elector: LeaderElector;
  started: number;
  stopped: string[];
}

async function instance(f: OmniFixture, name: string, clock: FakeMonotonic, changes: Changes, overlap: string[]): Promise<Instance> {
  const key = await decodeServiceAccountKey(await f.omni.createProviderKey('proxmox'), { providerId: 'proxmox' });
  const id: LeaseIdentity = { instance: `inst-${name}`, hostname: `host-${name}`, pid: name.charCodeAt(0), version: '9.9.9' };
  const client = connectOmni({ endpoint: f.omni.endpoint, key, providerId: 'proxmox', userAgent: `test-agent instance/${id.instance}` });
  const inst: Instance = { id, client, elector: undefined as unknown as LeaderElector, started: 0, stopped: [] };
  inst.elector = new LeaderElector({
    state: client.state,
    providerId: 'proxmox',
    identity: id,
    timing: TIMING,
    monotonicMs: clock.now,
    onStartedLeading: () => {
      inst.started++;
      changes.notify();
    },
    onStoppedLeading: (reason) => {
      inst.stopped.push(reason);
      changes.notify();
    },
    onStatus: () => changes.notify(),
    ...(process.env.LEASE_DEBUG ? { logger: createLogger({ level: 'debug', destination: process.stderr }).child({ name }) } : {}),
  });
  all.push(inst);
  // The invariant, at every status change: never two instances may act.
  const check = () => {
    const acting = all.filter((i) => i.elector?.canAct());
    if (acting.length > 1) overlap.push(acting.map((i) => i.id.instance).join(' + '));
  };
  changes.trigger(check);
  return inst;
}
const all: Instance[] = [];

/** Resolves once `who` has seen the lease's latest version (its expiry wait counts from there). */
function seen(f: OmniFixture, who: Instance, changes: Changes): Promise<boolean> {
  const version = () => f.omni.store.get('infra-provider:proxmox', KIND.type, LEASE_ID).metadata.version;
  return f.eventually(() => who.elector.status().lease?.resourceVersion === String(version()), 'the standby to see the latest lease version', [changes.trigger]);
}

describe('leader lease', () => {
  beforeEach(() => {
    all.length = 0;
  });

  it('is a resource type of its own that Omni accepts; a stale version conflicts and of two racing writers one wins', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    try {
      const state = f.client.state;
      const spec = create(LeaseSpecSchema, { holderInstance: 'a', holderHostname: 'h', holderPid: 1, leaseDurationSeconds: 15 });
      const stored = await state.create(KIND, newResource(KIND, LEASE_ID, spec), { owner: leaseOwner('proxmox') });
      expect(stored.metadata).toMatchObject({ type: 'Lease.proxmox.infraprovider.sidero.dev', namespace: 'infra-provider:proxmox', version: '1' });
      const two = [cloneResource(KIND, stored), cloneResource(KIND, stored)];
      two[0]!.spec.holderInstance = 'b';
      two[1]!.spec.holderInstance = 'c';
      const results = await Promise.allSettled(two.map((r) => state.update(KIND, r, { owner: leaseOwner('proxmox') })));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason).toBeInstanceOf(CosiError);
      expect((lost.reason as CosiError).code).toBe(grpc.status.FAILED_PRECONDITION);
      expect((lost.reason as CosiError).details).toMatch(/update conflict: expected version "1", actual version "2"/);
      const lease = await readLease(state, 'proxmox');
      expect(['b', 'c']).toContain(lease?.holderInstance);
      expect(lease).toMatchObject({ holderHostname: 'h', holderPid: 1, durationSeconds: 15, resourceVersion: '2' });
      // The private-state kind does not list it (the dangling-state clean-up never sees the lease).
      expect(f.omni.store.list('infra-provider:proxmox', 'Machine.proxmox.infraprovider.sidero.dev')).toEqual([]);
    } finally {
      await f.close();
    }
  });

  it('one instance leads, the other stands by; the standby takes over once the lease stays unchanged for its duration', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const a = await instance(f, 'a', clock, changes, overlap);
    const b = await instance(f, 'b', clock, changes, overlap);
    const seenByB = () => seen(f, b, changes);
    try {
      await a.elector.start();
      expect(a.elector.canAct()).toBe(true);
      await b.elector.start();
      expect(b.elector.status().role).toBe('standby');
      const lease = await readLease(f.client.state, 'proxmox');
      expect(lease).toMatchObject({ holderInstance: 'inst-a', holderHostname: 'host-a', holderVersion: '9.9.9', durationSeconds: 10, renewDeadlineSeconds: 6 });
      // The holder renews (the version moves), the standby keeps waiting however long it runs while renewals come.
      const v0 = Number(lease!.resourceVersion);
      await f.eventually(() => Number(f.omni.store.get('infra-provider:proxmox', KIND.type, LEASE_ID).metadata.version) > v0 + 3, 'renewals');
      clock.advance(5_000);
      await f.eventually(() => Number(f.omni.store.get('infra-provider:proxmox', KIND.type, LEASE_ID).metadata.version) > v0 + 6, 'more renewals');
      clock.advance(5_000);
      await f.eventually(() => Number(f.omni.store.get('infra-provider:proxmox', KIND.type, LEASE_ID).metadata.version) > v0 + 9, 'more renewals');
      expect(b.elector.canAct()).toBe(false);
      expect(b.started).toBe(0);

      // The holder's connection is gone (closed): it can renew no more, as if it had died.
      a.client.close();
      await seenByB();
      clock.advance(6_000); // past A's renew deadline: A may no longer act, whatever its timers did
      expect(a.elector.canAct()).toBe(false);
      expect(() => a.elector.assertCanAct('POST /nodes/pve1/qemu')).toThrow(NotLeaderError);
      expect(b.elector.canAct()).toBe(false); // the lease has not been unchanged for 10 s yet, as B measures it
      clock.advance(4_001);
      await f.eventually(() => b.elector.canAct(), 'B to take the lease', [changes.trigger]);
      const taken = await readLease(f.client.state, 'proxmox');
      expect(taken).toMatchObject({ holderInstance: 'inst-b', transitions: 1 });
      expect(overlap).toEqual([]);
    } finally {
      await b.elector.stop();
      await a.elector.stop();
      a.client.close();
      b.client.close();
      await f.close();
    }
  });

  it('a holder cut off from Omni stops acting at its renew deadline, before the standby may take over, and stays standby once back', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const a = await instance(f, 'a', clock, changes, overlap);
    const b = await instance(f, 'b', clock, changes, overlap);
    const seenByB = () => seen(f, b, changes);
    try {
      await a.elector.start();
      await b.elector.start();
      expect(a.elector.canAct()).toBe(true);
      f.omni.faults.isolate('instance/inst-a');
      await f.eventually(() => a.elector.status().omniOk === false, 'A to notice that Omni is gone', [changes.trigger]);
      expect(a.elector.canAct()).toBe(true); // still inside its renew deadline
      await seenByB();
      clock.advance(6_000);
      await f.eventually(() => a.stopped.length === 1, 'A to stop acting', [changes.trigger]);
      expect(a.stopped[0]).toMatch(/renew deadline/);
      expect(b.elector.canAct()).toBe(false);
      clock.advance(4_001);
      await f.eventually(() => b.elector.canAct(), 'B to take the lease', [changes.trigger]);
      f.omni.faults.rejoin('instance/inst-a');
      await f.eventually(() => a.elector.status().omniOk && a.elector.status().lease?.holderInstance === 'inst-b', 'A to see B holding the lease', [changes.trigger]);
      expect(a.elector.canAct()).toBe(false);
      expect(a.started).toBe(1);
      expect(overlap).toEqual([]);
    } finally {
      await b.elector.stop();
      await a.elector.stop();
      a.client.close();
      b.client.close();
      await f.close();
    }
  });

  it('a create that loses to another instance (ALREADY_EXISTS) leaves that one holding the lease', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const b = await instance(f, 'b', clock, changes, overlap);
    const creates = () => f.omni.callCounts()['/cosi.resource.State/Create'] ?? 0;
    try {
      // Another instance has just created the lease; B's first read still lags behind that create (as two instances
      // starting together would see it), so B creates too and loses.
      const other = create(LeaseSpecSchema, { holderInstance: 'inst-other', holderHostname: 'elsewhere', holderPid: 7, leaseDurationSeconds: 10 });
      await f.client.state.create(KIND, newResource(KIND, LEASE_ID, other), { owner: leaseOwner('proxmox') });
      f.omni.faults.serveStaleReads(KIND.type, 1);
      await b.elector.start();
      expect(creates()).toBe(2);
      expect(b.elector.canAct()).toBe(false);
      expect(b.elector.status().omniOk).toBe(true);
      await f.eventually(() => b.elector.status().lease?.holderInstance === 'inst-other', 'B to read the lease it lost', [changes.trigger]);
      expect(b.elector.canAct()).toBe(false);
      expect(overlap).toEqual([]);
    } finally {
      await b.elector.stop();
      b.client.close();
      await f.close();
    }
  });

  it('a holder that stops releases the lease: the standby takes it at once, without waiting for it to expire', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const a = await instance(f, 'a', clock, changes, overlap);
    const b = await instance(f, 'b', clock, changes, overlap);
    try {
      await a.elector.start();
      await b.elector.start();
      await a.elector.stop();
      expect(a.stopped).toEqual(['this instance is stopping']);
      // The clock does not move: only the release lets B in.
      await f.eventually(() => b.elector.canAct(), 'B to take the released lease', [changes.trigger]);
      expect(await readLease(f.client.state, 'proxmox')).toMatchObject({ holderInstance: 'inst-b', transitions: 1 });
      expect(overlap).toEqual([]);
    } finally {
      await b.elector.stop();
      a.client.close();
      b.client.close();
      await f.close();
    }
  });

  it('a lease deleted by hand is not re-created before it would have expired: its holder may not have noticed yet', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const a = await instance(f, 'a', clock, changes, overlap);
    const b = await instance(f, 'b', clock, changes, overlap);
    const seenByB = () => seen(f, b, changes);
    try {
      await a.elector.start();
      await b.elector.start();
      await seenByB();
      a.client.close(); // A cannot renew (nor notice the deletion) any more
      f.omni.store.destroy('infra-provider:proxmox', KIND.type, LEASE_ID, { owner: leaseOwner('proxmox') });
      await f.eventually(() => b.elector.status().omniOk && b.elector.status().lease === undefined, 'B to see the lease gone', [changes.trigger]);
      const creates = f.omni.callCounts()['/cosi.resource.State/Create'] ?? 0;
      clock.advance(9_000);
      // Several rounds later B still waits (A's renew deadline, 6 s, has passed, but B counts from the deletion).
      const reads = f.omni.callCounts()['/cosi.resource.State/Get'] ?? 0;
      await f.eventually(() => (f.omni.callCounts()['/cosi.resource.State/Get'] ?? 0) > reads + 3, 'more rounds of B');
      expect(f.omni.callCounts()['/cosi.resource.State/Create'] ?? 0).toBe(creates);
      expect(b.elector.canAct()).toBe(false);
      clock.advance(1_001);
      await f.eventually(() => b.elector.canAct(), 'B to create the lease anew', [changes.trigger]);
      expect(overlap).toEqual([]);
    } finally {
      await b.elector.stop();
      await a.elector.stop();
      b.client.close();
      await f.close();
    }
  });

  it('a single instance cut off from Omni past its deadline stops acting, and takes its own lease back when Omni answers', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const clock = new FakeMonotonic();
    const changes = new Changes();
    const overlap: string[] = [];
    const a = await instance(f, 'a', clock, changes, overlap);
    try {
      await a.elector.start();
      f.omni.faults.isolate('instance/inst-a');
      await f.eventually(() => a.elector.status().omniOk === false, 'A to notice that Omni is gone', [changes.trigger]);
      clock.advance(6_000);
      await f.eventually(() => a.stopped.length === 1, 'A to stop acting', [changes.trigger]);
      expect(a.elector.canAct()).toBe(false);
      f.omni.faults.rejoin('instance/inst-a');
      // No wait for an expiry: the lease still names A.
      await f.eventually(() => a.elector.canAct(), 'A to take its lease back', [changes.trigger]);
      expect(a.started).toBe(2);
      expect((await readLease(f.client.state, 'proxmox'))?.transitions).toBe(0);
    } finally {
      await a.elector.stop();
      a.client.close();
      await f.close();
    }
  });

  it('the fence refuses Omni writes (not the lease) and Proxmox writes before they are sent', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const sim = new PveSim({ fixture: testFixture(), clock: new ScaledClock(0.01) });
    const server = await startPveSimServer(sim, { https: true });
    let allowed = false;
    const fence = (what: string) => {
      if (!allowed) throw new NotLeaderError(`refusing ${what}: not the holder`);
    };
    const key = await decodeServiceAccountKey(await f.omni.createProviderKey('proxmox'), { providerId: 'proxmox' });
    const client = connectOmni({
      endpoint: f.omni.endpoint,
      key,
      providerId: 'proxmox',
      state: { writeGuard: (op, type) => (type === KIND.type ? undefined : fence(op)) },
    });
    const pve = new PveClient({ url: server.url, auth: providerToken, tls: { fingerprint: server.fingerprint! }, userAgent: 'ua-test instance/x', writeGuard: (m, p) => fence(`${m} ${p}`) });
    try {
      const state: CosiState = client.state;
      const privateKind = { ...KIND, type: 'Machine.proxmox.infraprovider.sidero.dev' };
      const err = await state.create(privateKind, newResource(privateKind, 'r1'), { owner: 'x' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CosiError);
      expect((err as CosiError).code).toBe(grpc.status.ABORTED);
      expect((err as CosiError).message).toMatch(/refusing create Machine\.proxmox.*not the holder/);
      expect(f.omni.store.list('infra-provider:proxmox', privateKind.type)).toEqual([]);
      // The lease itself is always written (that is how an instance becomes the holder).
      await state.create(KIND, newResource(KIND, LEASE_ID), { owner: leaseOwner('proxmox') });

      const before = sim.requests.length;
      await expect(pve.post('/nodes/pve1/qemu/100/config', { description: 'x' })).rejects.toThrow(/refusing POST \/nodes\/pve1\/qemu\/100\/config: not the holder/);
      expect(sim.requests.length).toBe(before);
      await pve.version(); // reads pass, tagged with the user agent
      expect(sim.requests.at(-1)?.userAgent).toBe('ua-test instance/x');
      allowed = true;
      await pve.post('/nodes/pve1/qemu/100/config', { description: 'x' });
      expect(sim.requests.at(-1)).toMatchObject({ method: 'POST', userAgent: 'ua-test instance/x' });
    } finally {
      client.close();
      await pve.close();
      await server.close();
      await f.close();
    }
  });
});
