import { describe, expect, it } from 'vitest';
import { CosiStore, parsePhase, parseVersion, type Resource, type ResourceInput, type StoreEvent } from '../../src/sim/omni/store.js';
import { GrpcCode, OmniError } from '../../src/sim/omni/errors.js';

const NS = 'infra-provider';
const T = 'MachineRequests.omni.sidero.dev';

function fixedClock(): () => Date {
  let t = Date.UTC(2026, 0, 1);
  return () => new Date((t += 1000));
}

function input(id: string, extra: Partial<ResourceInput['metadata']> = {}): ResourceInput {
  return {
    metadata: { namespace: NS, type: T, id, ...extra },
    spec: { protoSpec: new Uint8Array([1, 2, 3]), yamlSpec: 'talos_version: v1.9.0\n' },
  };
}

function caught(fn: () => unknown): OmniError {
  try {
    fn();
  } catch (err) {
    if (err instanceof OmniError) return err;
    throw err;
  }
  throw new Error('expected an OmniError');
}

/** Collects watch batches; `next(n)` resolves once n batches in total have arrived. */
function recorder() {
  const batches: StoreEvent[][] = [];
  let waiter: { n: number; resolve: () => void } | undefined;
  const sink = (events: StoreEvent[]) => {
    batches.push(events);
    if (waiter && batches.length >= waiter.n) waiter.resolve();
  };
  const next = (n: number) =>
    new Promise<StoreEvent[][]>((resolve) => {
      if (batches.length >= n) return resolve(batches);
      waiter = { n, resolve: () => resolve(batches) };
    });
  return { batches, sink, next };
}

const summary = (events: StoreEvent[]) => events.map((e) => `${e.type}:${e.resource?.metadata.id ?? ''}`);

describe('CosiStore writes', () => {
  it('creates with version 1, the option owner and server timestamps', () => {
    const store = new CosiStore({ now: fixedClock() });
    const created = store.create(input('r1', { owner: 'ignored', version: 7 }), { owner: 'P.ProvisionController' });
    expect(created.metadata.version).toBe(1);
    expect(created.metadata.owner).toBe('P.ProvisionController');
    expect(created.metadata.phase).toBe('running');
    expect(store.get(NS, T, 'r1').spec.yamlSpec).toBe('talos_version: v1.9.0\n');
  });

  it('refuses a duplicate with ALREADY_EXISTS', () => {
    const store = new CosiStore();
    store.create(input('r1'));
    const err = caught(() => store.create(input('r1')));
    expect(err.code).toBe(GrpcCode.ALREADY_EXISTS);
    expect(err.message).toBe(`resource ${T}(${NS}/r1@undefined) already exists`);
  });

  it('answers NOT_FOUND for get, update, destroy and teardown of a missing resource', () => {
    const store = new CosiStore();
    expect(caught(() => store.get(NS, T, 'x')).message).toBe(`resource ${T}(${NS}/x@undefined) doesn't exist`);
    expect(caught(() => store.update(input('x', { version: 1 }))).code).toBe(GrpcCode.NOT_FOUND);
    expect(caught(() => store.destroy(NS, T, 'x')).code).toBe(GrpcCode.NOT_FOUND);
    expect(caught(() => store.teardown(NS, T, 'x')).code).toBe(GrpcCode.NOT_FOUND);
  });

  it('updates only with the stored version and bumps it; stores the whole new metadata', () => {
    const store = new CosiStore({ now: fixedClock() });
    const first = store.create(input('r1', { labels: { a: '1' } }), { owner: 'ctl' });
    const next: Resource = { ...first, metadata: { ...first.metadata, labels: { b: '2' }, finalizers: ['f1'] } };
    const updated = store.update(next, { owner: 'ctl' });
    expect(updated.metadata.version).toBe(2);
    expect(updated.metadata.labels).toEqual({ b: '2' });
    expect(updated.metadata.finalizers).toEqual(['f1']);
    expect(updated.metadata.created.getTime()).toBe(first.metadata.created.getTime());
    expect(updated.metadata.updated.getTime()).toBeGreaterThan(first.metadata.updated.getTime());

    const stale = caught(() => store.update(next, { owner: 'ctl' }));
    expect(stale.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(stale.kind).toBe('versionConflict');
    expect(stale.message).toBe(`resource ${T}(${NS}/r1@2) update conflict: expected version "1", actual version "2"`);
    const undefinedVersion = caught(() => store.update({ ...next, metadata: { ...next.metadata, version: undefined } }, { owner: 'ctl' }));
    expect(undefinedVersion.message).toContain('expected version "undefined", actual version "2"');
  });

  it('checks the owner before the version, and the phase after it', () => {
    const store = new CosiStore();
    const r = store.create(input('r1'), { owner: 'ctl' });
    const owner = caught(() => store.update({ ...r, metadata: { ...r.metadata, version: 99 } }, { owner: 'other' }));
    expect(owner.code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(owner.message).toBe(`resource ${T}(${NS}/r1@1) is owned by "ctl"`);

    store.teardown(NS, T, 'r1', { owner: 'ctl' });
    const cur = store.get(NS, T, 'r1');
    const phase = caught(() => store.update(cur, { owner: 'ctl', expectedPhase: 'running' }));
    expect(phase.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(phase.message).toBe(`resource ${T}(${NS}/r1@2) is not in phase running`);
    expect(store.update(cur, { owner: 'ctl' }).metadata.version).toBe(3);
  });

  it('destroys only with the owner and no finalizers', () => {
    const store = new CosiStore();
    store.create(input('r1', { finalizers: ['omni', 'P.ProvisionController'] }), { owner: 'ctl' });
    expect(caught(() => store.destroy(NS, T, 'r1')).code).toBe(GrpcCode.PERMISSION_DENIED);
    const pending = caught(() => store.destroy(NS, T, 'r1', { owner: 'ctl' }));
    expect(pending.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(pending.message).toBe(`resource ${T}(${NS}/r1@1) has pending finalizers &[omni P.ProvisionController]`);
    store.removeFinalizer(NS, T, 'r1', 'omni');
    store.removeFinalizer(NS, T, 'r1', 'P.ProvisionController');
    store.destroy(NS, T, 'r1', { owner: 'ctl' });
    expect(store.find(NS, T, 'r1')).toBeUndefined();
  });

  it('teardown sets tearingDown once and reports destroy readiness', () => {
    const store = new CosiStore();
    store.create(input('r1', { finalizers: ['f'] }), { owner: 'ctl' });
    expect(caught(() => store.teardown(NS, T, 'r1', { owner: 'x' })).code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(store.teardown(NS, T, 'r1', { owner: 'ctl' })).toBe(false);
    expect(store.teardown(NS, T, 'r1', { owner: 'ctl' })).toBe(false);
    expect(store.get(NS, T, 'r1').metadata.version).toBe(2);
    store.removeFinalizer(NS, T, 'r1', 'f');
    expect(store.teardown(NS, T, 'r1', { owner: 'ctl' })).toBe(true);
  });

  it('teardownAndDestroy waits for finalizers to go', async () => {
    const store = new CosiStore();
    store.create(input('r1', { finalizers: ['f'] }), { owner: 'ctl' });
    const done = store.teardownAndDestroy(NS, T, 'r1', { owner: 'ctl' });
    await new Promise((r) => setImmediate(r));
    expect(store.find(NS, T, 'r1')?.metadata.phase).toBe('tearingDown');
    store.removeFinalizer(NS, T, 'r1', 'f');
    await done;
    expect(store.find(NS, T, 'r1')).toBeUndefined();
  });

  it('parses wire versions and phases like the Go server', () => {
    expect(parseVersion('undefined')).toBeUndefined();
    expect(parseVersion('12')).toBe(12);
    expect(() => parseVersion('')).toThrow('error parsing version');
    expect(caught(() => parseVersion('')).code).toBe(GrpcCode.UNKNOWN);
    expect(parsePhase('tearingDown')).toBe('tearingDown');
    expect(() => parsePhase('')).toThrow('unknown phase: ');
  });
});

describe('CosiStore list', () => {
  it('filters by label queries (terms ANDed, queries ORed) and id regexp, sorted by id', () => {
    const store = new CosiStore();
    store.create(input('b', { labels: { set: 's1', size: '10Gi' } }));
    store.create(input('a', { labels: { set: 's1', req: 'r' } }));
    store.create(input('c', { labels: { set: 's2' } }));
    store.create(input('d'));
    const ids = (rs: Resource[]) => rs.map((r) => r.metadata.id);
    expect(ids(store.list(NS, T))).toEqual(['a', 'b', 'c', 'd']);
    expect(ids(store.list(NS, T, { labelQueries: [{ terms: [{ key: 'set', op: 'equal', values: ['s1'] }] }] }))).toEqual(['a', 'b']);
    expect(
      ids(store.list(NS, T, { labelQueries: [{ terms: [{ key: 'set', op: 'equal', values: ['s1'] }, { key: 'req', op: 'exists' }] }] })),
    ).toEqual(['a']);
    expect(
      ids(
        store.list(NS, T, {
          labelQueries: [{ terms: [{ key: 'req', op: 'exists' }] }, { terms: [{ key: 'set', op: 'equal', values: ['s2'] }] }],
        }),
      ),
    ).toEqual(['a', 'c']);
    expect(ids(store.list(NS, T, { labelQueries: [{ terms: [{ key: 'set', op: 'in', values: ['s2', 'x'] }] }] }))).toEqual(['c']);
    expect(ids(store.list(NS, T, { labelQueries: [{ terms: [{ key: 'set', op: 'exists', invert: true }] }] }))).toEqual(['d']);
    expect(ids(store.list(NS, T, { labelQueries: [{ terms: [{ key: 'size', op: 'ltNumeric', values: ['11000000000'] }] }] }))).toEqual([
      'b',
    ]);
    expect(ids(store.list(NS, T, { idRegexp: '^[bc]$' }))).toEqual(['b', 'c']);
    const bad = caught(() => store.list(NS, T, { idRegexp: '(' }));
    expect(bad.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(bad.message).toMatch(/^failed to compile regexp/);
  });
});

describe('CosiStore watch', () => {
  it('bootstraps sorted contents then a BOOTSTRAPPED tombstone with a bookmark, then live events', async () => {
    const store = new CosiStore();
    store.create(input('b'));
    store.create(input('a'));
    const rec = recorder();
    const handle = store.watchKind(NS, T, { bootstrapContents: true }, rec.sink);
    await rec.next(1);
    expect(summary(rec.batches[0] ?? [])).toEqual(['created:a', 'created:b', 'bootstrapped:']);
    expect(rec.batches[0]?.[2]?.bookmark?.length).toBe(16);
    store.create(input('c'));
    store.mutate(NS, T, 'c', (r) => (r.metadata.labels.x = '1'));
    const batches = await rec.next(2);
    expect(summary(batches[1] ?? [])).toEqual(['created:c', 'updated:c']);
    expect(batches[1]?.[1]?.old?.metadata.version).toBe(1);
    handle.cancel();
    expect(store.watchCount()).toBe(0);
  });

  it('resumes right after a bookmark and rejects foreign bookmarks', async () => {
    const store = new CosiStore();
    const rec = recorder();
    store.watchKind(NS, T, { bootstrapBookmark: true }, rec.sink);
    await rec.next(1);
    expect(summary(rec.batches[0] ?? [])).toEqual(['noop:']);
    store.create(input('a'));
    store.create(input('b'));
    await rec.next(2);
    const bookmarkOfA = rec.batches[1]?.[0]?.bookmark;
    expect(bookmarkOfA).toBeDefined();

    const resumed = recorder();
    store.watchKind(NS, T, { startFromBookmark: bookmarkOfA }, resumed.sink);
    await resumed.next(1);
    expect(summary(resumed.batches[0] ?? [])).toEqual(['created:b']);

    // A bookmark from the very start (the NOOP one) replays everything.
    const fromStart = recorder();
    store.watchKind(NS, T, { startFromBookmark: rec.batches[0]?.[0]?.bookmark }, fromStart.sink);
    await fromStart.next(1);
    expect(summary(fromStart.batches[0] ?? [])).toEqual(['created:a', 'created:b']);

    const other = new CosiStore({ bookmarkCookie: new Uint8Array(8) });
    other.create(input('a'));
    const err = caught(() => other.watchKind(NS, T, { startFromBookmark: bookmarkOfA }, () => {}));
    expect(err.code).toBe(GrpcCode.FAILED_PRECONDITION);
    expect(err.message).toBe('invalid watch bookmark');
    expect(caught(() => store.watchKind(NS, T, { startFromBookmark: new Uint8Array(3) }, () => {})).kind).toBe('invalidBookmark');
    expect(caught(() => store.watchKind(NS, T, { bootstrapContents: true, tailEvents: 1 }, () => {})).code).toBe(GrpcCode.UNKNOWN);
  });

  it('turns updates that cross a label filter into CREATED/DESTROYED and drops the rest', async () => {
    const store = new CosiStore();
    store.create(input('a'));
    const rec = recorder();
    store.watchKind(NS, T, { labelQueries: [{ terms: [{ key: 'mine', op: 'exists' }] }] }, rec.sink);
    store.mutate(NS, T, 'a', (r) => (r.metadata.labels.mine = 'yes'));
    store.mutate(NS, T, 'a', (r) => (r.metadata.annotations.note = 'x'));
    store.mutate(NS, T, 'a', (r) => delete r.metadata.labels.mine);
    store.mutate(NS, T, 'a', (r) => (r.metadata.annotations.note = 'y'));
    await rec.next(1);
    const events = rec.batches[0] ?? [];
    expect(events.map((e) => e.type)).toEqual(['created', 'updated', 'destroyed']);
    expect(events[0]?.old).toBeUndefined();
  });

  it('replays the last N events with tailEvents', async () => {
    const store = new CosiStore();
    for (const id of ['a', 'b', 'c']) store.create(input(id));
    const rec = recorder();
    store.watchKind(NS, T, { tailEvents: 2 }, rec.sink);
    await rec.next(1);
    expect(summary(rec.batches[0] ?? [])).toEqual(['created:b', 'created:c']);
  });

  it('reports a buffer overrun as an ERRORED event and stops', async () => {
    const store = new CosiStore({ historyCapacity: 8, historyGap: 2 });
    const rec = recorder();
    const handle = store.watchKind(NS, T, {}, rec.sink);
    for (let i = 0; i < 10; i++) store.create(input(`r${i}`));
    await rec.next(1);
    expect(rec.batches[0]?.[0]?.type).toBe('errored');
    expect(rec.batches[0]?.[0]?.error).toMatch(/^buffer overrun: namespace "infra-provider"/);
    expect(handle.cancelled).toBe(true);
  });

  it('single-resource watch starts with CREATED or a DESTROYED tombstone and follows only that id', async () => {
    const store = new CosiStore();
    const absent = recorder();
    store.watch(NS, T, 'a', {}, absent.sink);
    await absent.next(1);
    expect(summary(absent.batches[0] ?? [])).toEqual(['destroyed:a']);
    expect(absent.batches[0]?.[0]?.resource?.metadata.version).toBeUndefined();
    store.create(input('b'));
    store.create(input('a'));
    await absent.next(2);
    expect(absent.batches.map(summary)).toEqual([['destroyed:a'], ['created:a']]);

    const present = recorder();
    store.watch(NS, T, 'b', {}, present.sink);
    await present.next(1);
    expect(summary(present.batches[0] ?? [])).toEqual(['created:b']);
    expect(present.batches[0]?.[0]?.bookmark).toBeUndefined();
  });
});
