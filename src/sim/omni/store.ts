// The in-process Omni's COSI state: an in-memory, wire-independent resource store with the semantics, error texts
// and watch behaviour of cosi-project/runtime's in-memory state (versions, owners, phases, finalizers, bookmarks).
import { randomBytes } from 'node:crypto';
import { OmniError } from './errors.js';

export type Phase = 'running' | 'tearingDown';

export interface ResourceMetadata {
  namespace: string;
  type: string;
  id: string;
  /** Stored version (starts at 1, +1 per update); `undefined` for a resource that was never stored. */
  version: number | undefined;
  owner: string;
  phase: Phase;
  created: Date;
  updated: Date;
  finalizers: string[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface ResourceSpec {
  protoSpec: Uint8Array;
  yamlSpec: string;
}

export interface Resource {
  metadata: ResourceMetadata;
  spec: ResourceSpec;
}

/** What a caller hands to create/update: timestamps are optional (the store sets them). */
export interface ResourceInput {
  metadata: Omit<ResourceMetadata, 'created' | 'updated' | 'owner' | 'phase' | 'finalizers' | 'labels' | 'annotations' | 'version'> &
    Partial<Pick<ResourceMetadata, 'created' | 'updated' | 'owner' | 'phase' | 'finalizers' | 'labels' | 'annotations' | 'version'>>;
  spec: ResourceSpec;
}

export type LabelOp = 'exists' | 'equal' | 'notExists' | 'in' | 'lt' | 'lte' | 'ltNumeric' | 'lteNumeric';

export interface LabelTerm {
  key: string;
  op: LabelOp;
  values?: string[];
  invert?: boolean;
}

/** Terms inside a query are ANDed; a list of queries is ORed. */
export interface LabelQuery {
  terms: LabelTerm[];
}

export interface ListOptions {
  labelQueries?: LabelQuery[];
  /** Unanchored regular expression over the resource ID. */
  idRegexp?: string;
}

export type EventType = 'created' | 'updated' | 'destroyed' | 'bootstrapped' | 'errored' | 'noop';

export interface StoreEvent {
  type: EventType;
  /** The resource (a tombstone for bootstrapped/noop events and for an absent single resource). */
  resource?: Resource;
  old?: Resource;
  error?: string;
  bookmark?: Uint8Array;
}

export interface KindWatchOptions extends ListOptions {
  bootstrapContents?: boolean;
  bootstrapBookmark?: boolean;
  tailEvents?: number;
  startFromBookmark?: Uint8Array;
}

export interface ResourceWatchOptions {
  tailEvents?: number;
  startFromBookmark?: Uint8Array;
}

/** Receives events in batches; a kind watch batches what happened between two deliveries. */
export type EventSink = (events: StoreEvent[]) => void;

export interface WatchHandle {
  cancel(): void;
  readonly cancelled: boolean;
}

export interface CosiStoreOptions {
  now?: () => Date;
  /** Number of events kept per (namespace, type) for bookmarks and tail replays (default 1000). */
  historyCapacity?: number;
  /** Bookmarks closer than this to the oldest kept event are refused (default 5). */
  historyGap?: number;
  /** 8 bytes distinguishing this store's bookmarks from another run's (default random). */
  bookmarkCookie?: Uint8Array;
}

export const PHASES: readonly Phase[] = ['running', 'tearingDown'];

/** Parses a wire version: the literal `undefined` or a decimal integer (Go's strconv.ParseInt rules). */
export function parseVersion(text: string): number | undefined {
  if (text === 'undefined') return undefined;
  if (!/^[+-]?\d+$/.test(text)) {
    throw new OmniError('malformed', `error parsing version: strconv.ParseInt: parsing ${JSON.stringify(text)}: invalid syntax`);
  }
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new OmniError('malformed', `error parsing version: strconv.ParseInt: parsing ${JSON.stringify(text)}: value out of range`);
  }
  return value;
}

export function formatVersion(version: number | undefined): string {
  return version === undefined ? 'undefined' : String(version);
}

export function parsePhase(text: string): Phase {
  if (text === 'running' || text === 'tearingDown') return text;
  throw new OmniError('malformed', `unknown phase: ${text}`);
}

/** COSI's reference rendering used inside error texts: `Type(namespace/id@version)`. */
export function describeResource(md: Pick<ResourceMetadata, 'namespace' | 'type' | 'id' | 'version'>): string {
  return `${md.type}(${md.namespace}/${md.id}@${formatVersion(md.version)})`;
}

export function copyResource(res: Resource): Resource {
  const md = res.metadata;
  return {
    metadata: {
      ...md,
      created: new Date(md.created.getTime()),
      updated: new Date(md.updated.getTime()),
      finalizers: [...md.finalizers],
      labels: { ...md.labels },
      annotations: { ...md.annotations },
    },
    spec: { protoSpec: new Uint8Array(res.spec.protoSpec), yamlSpec: res.spec.yamlSpec },
  };
}

export function tombstone(namespace: string, type: string, id: string, at: Date): Resource {
  return {
    metadata: {
      namespace,
      type,
      id,
      version: undefined,
      owner: '',
      phase: 'running',
      created: at,
      updated: at,
      finalizers: [],
      labels: {},
      annotations: {},
    },
    spec: { protoSpec: new Uint8Array(), yamlSpec: '' },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Label and ID queries

const numericMultipliers: Array<[string, bigint]> = [
  ['pi', 1n << 50n],
  ['ti', 1n << 40n],
  ['gi', 1n << 30n],
  ['mi', 1n << 20n],
  ['ki', 1n << 10n],
];
const decimalMultipliers: Record<string, bigint> = { p: 10n ** 15n, t: 10n ** 12n, g: 10n ** 9n, m: 10n ** 6n, k: 10n ** 3n };

/** A label value read as a number with an optional unit suffix (`10Gi`, `3k`), as COSI's numeric comparisons do. */
function labelNumber(text: string): bigint | undefined {
  const value = text.trim();
  const match = /^[0-9-]*/.exec(value);
  const digits = match ? match[0] : '';
  if (digits === '' || !/^[+-]?\d+$/.test(digits)) return undefined;
  const units = value.slice(digits.length).trim().toLowerCase();
  let multiplier: bigint | undefined;
  if (units === '') multiplier = 1n;
  else {
    const two = units.slice(0, 2);
    multiplier = numericMultipliers.find(([prefix]) => prefix === two)?.[1] ?? decimalMultipliers[units.slice(0, 1)];
  }
  if (multiplier === undefined) return undefined;
  return BigInt(digits) * multiplier;
}

function termOutcome(labels: Record<string, string>, term: LabelTerm): boolean | undefined {
  const op = term.op === 'notExists' ? 'exists' : term.op;
  const values = term.values ?? [];
  if (Object.keys(labels).length === 0 && op === 'exists') return false;
  if (!Object.hasOwn(labels, term.key)) {
    return op === 'lt' || op === 'lte' || op === 'ltNumeric' || op === 'lteNumeric' ? undefined : false;
  }
  const value = labels[term.key] ?? '';
  if (op !== 'exists' && values.length === 0) return false;
  const first = values[0] ?? '';
  switch (op) {
    case 'exists':
      return true;
    case 'equal':
      return value === first;
    case 'in':
      return values.includes(value);
    case 'lt':
      return value < first;
    case 'lte':
      return value <= first;
    case 'ltNumeric':
    case 'lteNumeric': {
      const left = labelNumber(value);
      const right = labelNumber(first);
      if (left === undefined || right === undefined) return undefined;
      return op === 'ltNumeric' ? left < right : left <= right;
    }
  }
}

export function termMatches(labels: Record<string, string>, term: LabelTerm): boolean {
  const outcome = termOutcome(labels, term);
  if (outcome === undefined) return false;
  const invert = term.op === 'notExists' ? !term.invert : term.invert === true;
  return invert ? !outcome : outcome;
}

export function labelQueriesMatch(labels: Record<string, string>, queries: readonly LabelQuery[] | undefined): boolean {
  if (!queries || queries.length === 0) return true;
  return queries.some((query) => query.terms.every((term) => termMatches(labels, term)));
}

function compileIdQuery(source: string | undefined): RegExp | undefined {
  if (source === undefined || source === '') return undefined;
  try {
    return new RegExp(source);
  } catch (err) {
    throw new OmniError('invalidArgument', `failed to compile regexp: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Collections

interface Watcher {
  handle: WatchHandle;
  flush(): void;
  scheduled: boolean;
}

class Collection {
  readonly items = new Map<string, Resource>();
  /** Each resource as it was before its latest write (undefined when that write created it). */
  readonly previous = new Map<string, Resource | undefined>();
  readonly stream: Array<StoreEvent | undefined>;
  writePos = 0;
  readonly watchers = new Set<Watcher>();

  constructor(
    readonly namespace: string,
    readonly type: string,
    readonly capacity: number,
  ) {
    this.stream = new Array<StoreEvent | undefined>(capacity);
  }

  eventAt(pos: number): StoreEvent {
    const event = this.stream[pos % this.capacity];
    if (!event) throw new Error(`event log hole at ${pos}`);
    return event;
  }
}

function sortById(list: Resource[]): Resource[] {
  return list.sort((a, b) => (a.metadata.id < b.metadata.id ? -1 : a.metadata.id > b.metadata.id ? 1 : 0));
}

/** An in-memory COSI state. Every method is synchronous except teardownAndDestroy; watch deliveries are async. */
export class CosiStore {
  private readonly collections = new Map<string, Collection>();
  private readonly now: () => Date;
  private readonly capacity: number;
  private readonly gap: number;
  private readonly cookie: Uint8Array;
  private readonly changeListeners = new Set<(event: StoreEvent) => void>();

  constructor(opts: CosiStoreOptions = {}) {
    this.now = opts.now ?? (() => new Date());
    this.capacity = opts.historyCapacity ?? 1000;
    this.gap = opts.historyGap ?? 5;
    if (this.gap >= this.capacity) throw new Error('historyGap must be smaller than historyCapacity');
    this.cookie = opts.bookmarkCookie ? new Uint8Array(opts.bookmarkCookie) : new Uint8Array(randomBytes(8));
    if (this.cookie.length !== 8) throw new Error('bookmarkCookie must be 8 bytes');
  }

  private collection(namespace: string, type: string): Collection {
    const key = `${namespace}\u0000${type}`;
    let c = this.collections.get(key);
    if (!c) {
      c = new Collection(namespace, type, this.capacity);
      this.collections.set(key, c);
    }
    return c;
  }

  // --- bookmarks -------------------------------------------------------------------------------------------------

  private encodeBookmark(pos: number): Uint8Array {
    const out = new Uint8Array(16);
    out.set(this.cookie, 0);
    new DataView(out.buffer).setBigInt64(8, BigInt(pos));
    return out;
  }

  private decodeBookmark(bookmark: Uint8Array): number {
    if (bookmark.length !== 16) throw invalidBookmark();
    for (let i = 0; i < 8; i++) if (bookmark[i] !== this.cookie[i]) throw invalidBookmark();
    const view = new DataView(bookmark.buffer, bookmark.byteOffset, bookmark.byteLength);
    return Number(view.getBigInt64(8));
  }

  private publish(c: Collection, event: StoreEvent): void {
    event.bookmark = this.encodeBookmark(c.writePos);
    c.stream[c.writePos % c.capacity] = event;
    c.writePos++;
    for (const w of c.watchers) scheduleFlush(w);
    for (const listener of [...this.changeListeners]) listener(event);
  }

  /**
   * Calls `listener` synchronously after every write of any kind (the store already shows it), unlike watches,
   * which deliver batches later. For tests that wait for a condition on the store. Returns the unsubscribe function.
   */
  onChange(listener: (event: StoreEvent) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  // --- reads -----------------------------------------------------------------------------------------------------

  get(namespace: string, type: string, id: string): Resource {
    const res = this.collection(namespace, type).items.get(id);
    if (!res) throw notFound({ namespace, type, id, version: undefined });
    return copyResource(res);
  }

  /**
   * A read lagging one write behind (like Omni's cached types right after a write): the resource as it was before
   * its latest create/update/destroy.
   */
  getStale(namespace: string, type: string, id: string): Resource {
    const c = this.collection(namespace, type);
    const res = c.previous.has(id) ? c.previous.get(id) : c.items.get(id);
    if (!res) throw notFound({ namespace, type, id, version: undefined });
    return copyResource(res);
  }

  /** Like get, but answers undefined instead of NOT_FOUND. */
  find(namespace: string, type: string, id: string): Resource | undefined {
    const res = this.collection(namespace, type).items.get(id);
    return res ? copyResource(res) : undefined;
  }

  list(namespace: string, type: string, opts: ListOptions = {}): Resource[] {
    const idQuery = compileIdQuery(opts.idRegexp);
    const out: Resource[] = [];
    for (const res of this.collection(namespace, type).items.values()) {
      if (idQuery && !idQuery.test(res.metadata.id)) continue;
      if (!labelQueriesMatch(res.metadata.labels, opts.labelQueries)) continue;
      out.push(copyResource(res));
    }
    return sortById(out);
  }

  // --- writes ----------------------------------------------------------------------------------------------------

  create(input: ResourceInput, opts: { owner?: string } = {}): Resource {
    const c = this.collection(input.metadata.namespace, input.metadata.type);
    const incoming = normalize(input, this.now());
    if (c.items.has(incoming.metadata.id)) {
      throw new OmniError('alreadyExists', `resource ${describeResource(incoming.metadata)} already exists`);
    }
    const at = this.now();
    const stored = copyResource(incoming);
    stored.metadata.owner = opts.owner ?? '';
    stored.metadata.version = 1;
    stored.metadata.created = at;
    // Like the COSI in-memory state: Create stamps `created` only; `updated` stays what the writer sent (a wire
    // Create without it reads as the Unix epoch).
    stored.metadata.updated = incoming.metadata.updated;
    c.items.set(stored.metadata.id, stored);
    c.previous.set(stored.metadata.id, undefined);
    this.publish(c, { type: 'created', resource: copyResource(stored) });
    return copyResource(stored);
  }

  /**
   * Replaces the stored resource with `input` (its whole metadata: labels, annotations, finalizers, phase, owner
   * field) when `input.metadata.version` equals the stored version and `opts.owner` is the stored owner.
   */
  update(input: ResourceInput, opts: { owner?: string; expectedPhase?: Phase } = {}): Resource {
    const c = this.collection(input.metadata.namespace, input.metadata.type);
    const incoming = normalize(input, this.now());
    const current = c.items.get(incoming.metadata.id);
    if (!current) throw notFound(incoming.metadata);
    const owner = opts.owner ?? '';
    if (current.metadata.owner !== owner) throw ownerConflict(current.metadata);
    if (current.metadata.version !== incoming.metadata.version) {
      throw new OmniError(
        'versionConflict',
        `resource ${describeResource(current.metadata)} update conflict: expected version ${JSON.stringify(formatVersion(incoming.metadata.version))}, actual version ${JSON.stringify(formatVersion(current.metadata.version))}`,
      );
    }
    if (opts.expectedPhase !== undefined && current.metadata.phase !== opts.expectedPhase) {
      throw new OmniError('phaseConflict', `resource ${describeResource(current.metadata)} is not in phase ${opts.expectedPhase}`);
    }
    const stored = copyResource(incoming);
    stored.metadata.version = (current.metadata.version ?? 0) + 1;
    stored.metadata.created = new Date(current.metadata.created.getTime());
    stored.metadata.updated = this.now();
    c.items.set(stored.metadata.id, stored);
    c.previous.set(stored.metadata.id, current);
    this.publish(c, { type: 'updated', resource: copyResource(stored), old: copyResource(current) });
    return copyResource(stored);
  }

  destroy(namespace: string, type: string, id: string, opts: { owner?: string } = {}): void {
    const c = this.collection(namespace, type);
    const current = c.items.get(id);
    if (!current) throw notFound({ namespace, type, id, version: undefined });
    if (current.metadata.owner !== (opts.owner ?? '')) throw ownerConflict(current.metadata);
    if (current.metadata.finalizers.length > 0) {
      throw new OmniError(
        'pendingFinalizers',
        `resource ${describeResource(current.metadata)} has pending finalizers &[${current.metadata.finalizers.join(' ')}]`,
      );
    }
    c.items.delete(id);
    c.previous.set(id, current);
    this.publish(c, { type: 'destroyed', resource: copyResource(current) });
  }

  /** Moves the resource to tearingDown (owner-checked, unless already there); true when no finalizers remain. */
  teardown(namespace: string, type: string, id: string, opts: { owner?: string } = {}): boolean {
    let current = this.get(namespace, type, id);
    if (current.metadata.phase !== 'tearingDown') {
      current.metadata.phase = 'tearingDown';
      current = this.update(current, { owner: opts.owner ?? '' });
    }
    return current.metadata.finalizers.length === 0;
  }

  /** Tears the resource down, waits until its finalizers are gone, then destroys it (unless someone else did). */
  async teardownAndDestroy(
    namespace: string,
    type: string,
    id: string,
    opts: { owner?: string; signal?: AbortSignal } = {},
  ): Promise<void> {
    if (this.teardown(namespace, type, id, opts)) {
      this.destroy(namespace, type, id, opts);
      return;
    }
    const destroyed = await new Promise<boolean>((resolve, reject) => {
      const handle = this.watch(namespace, type, id, {}, (events) => {
        for (const event of events) {
          if (event.type === 'destroyed') {
            handle.cancel();
            resolve(true);
            return;
          }
          if ((event.type === 'created' || event.type === 'updated') && event.resource?.metadata.finalizers.length === 0) {
            handle.cancel();
            resolve(false);
            return;
          }
        }
      });
      opts.signal?.addEventListener('abort', () => {
        handle.cancel();
        reject(new OmniError('cancelled', 'context canceled'));
      });
    });
    if (!destroyed) this.destroy(namespace, type, id, opts);
  }

  // --- convenience for the scripted Omni controllers (internal actor) -------------------------------------------

  /** Get + mutate + Update with the resource's own owner, as COSI's AddFinalizer/RemoveFinalizer do. */
  mutate(namespace: string, type: string, id: string, change: (res: Resource) => void): Resource {
    const current = this.get(namespace, type, id);
    change(current);
    return this.update(current, { owner: this.get(namespace, type, id).metadata.owner });
  }

  addFinalizer(namespace: string, type: string, id: string, finalizer: string): Resource {
    return this.mutate(namespace, type, id, (res) => {
      if (!res.metadata.finalizers.includes(finalizer)) res.metadata.finalizers.push(finalizer);
    });
  }

  removeFinalizer(namespace: string, type: string, id: string, finalizer: string): Resource {
    return this.mutate(namespace, type, id, (res) => {
      res.metadata.finalizers = res.metadata.finalizers.filter((f) => f !== finalizer);
    });
  }

  // --- watches ---------------------------------------------------------------------------------------------------

  /** Watches every resource of a kind. Errors in the options (bad bookmark, bad regexp) are thrown synchronously. */
  watchKind(namespace: string, type: string, opts: KindWatchOptions, sink: EventSink): WatchHandle {
    const c = this.collection(namespace, type);
    const tail = opts.tailEvents ?? 0;
    const idQuery = compileIdQuery(opts.idRegexp);
    const matches = (res: Resource | undefined): boolean =>
      res !== undefined && (!idQuery || idQuery.test(res.metadata.id)) && labelQueriesMatch(res.metadata.labels, opts.labelQueries);

    let pos = c.writePos;
    const initial: StoreEvent[][] = [];
    if (opts.bootstrapContents) {
      if (tail > 0 || opts.startFromBookmark !== undefined) {
        throw new OmniError('malformed', 'cannot use BootstrapContents with TailEvents and StartFromBookmark options');
      }
    }
    if (tail > 0 && opts.startFromBookmark !== undefined) {
      throw new OmniError('malformed', 'cannot use both TailEvents and StartFromBookmark options');
    }
    if (tail > 0) {
      pos = Math.max(0, pos - Math.min(tail, this.capacity - this.gap));
    } else if (opts.startFromBookmark !== undefined) {
      const at = this.decodeBookmark(opts.startFromBookmark);
      if (at < c.writePos - this.capacity + this.gap || at < -1 || at >= c.writePos) throw invalidBookmark();
      pos = at + 1;
    }
    if (opts.bootstrapContents) {
      const contents = sortById([...c.items.values()].filter((r) => matches(r)).map(copyResource));
      initial.push([
        ...contents.map((resource): StoreEvent => ({ type: 'created', resource })),
        { type: 'bootstrapped', resource: tombstone(namespace, type, '', this.now()), bookmark: this.encodeBookmark(pos - 1) },
      ]);
    }
    if (opts.bootstrapBookmark) {
      initial.push([{ type: 'noop', resource: tombstone(namespace, type, '', this.now()), bookmark: this.encodeBookmark(pos - 1) }]);
    }

    const watcher = this.register(c, () => {
      while (initial.length > 0) {
        const batch = initial.shift();
        if (batch) sink(batch);
        if (watcher.handle.cancelled) return;
      }
      if (pos === c.writePos) return;
      if (c.writePos - pos > c.capacity) {
        sink([{ type: 'errored', error: overrunText(c, pos) }]);
        watcher.handle.cancel();
        return;
      }
      const out: StoreEvent[] = [];
      for (; pos < c.writePos; pos++) {
        const event = c.eventAt(pos);
        if (event.type === 'created' || event.type === 'destroyed') {
          if (matches(event.resource)) out.push(event);
        } else if (event.type === 'updated') {
          const oldMatches = matches(event.old);
          const newMatches = matches(event.resource);
          if (oldMatches && newMatches) out.push(event);
          else if (oldMatches) out.push(withoutOld(event, 'destroyed'));
          else if (newMatches) out.push(withoutOld(event, 'created'));
        }
      }
      if (out.length > 0) sink(out);
    });
    if (initial.length > 0 || pos < c.writePos) scheduleFlush(watcher);
    return watcher.handle;
  }

  /** Watches one resource: an initial CREATED (or DESTROYED tombstone when absent), then its changes. */
  watch(namespace: string, type: string, id: string, opts: ResourceWatchOptions, sink: EventSink): WatchHandle {
    const c = this.collection(namespace, type);
    const tail = opts.tailEvents ?? 0;
    if (tail > 0 && opts.startFromBookmark !== undefined) {
      throw new OmniError('malformed', 'cannot use both TailEvents and StartFromBookmark options');
    }
    let pos = c.writePos;
    let initialEvent: StoreEvent | undefined;
    if (tail > 0) {
      const minPos = Math.max(c.writePos - c.capacity + this.gap, 0);
      for (let found = 0; pos > minPos && found < tail; pos--) {
        if (c.eventAt(pos - 1).resource?.metadata.id === id) found++;
      }
    } else if (opts.startFromBookmark !== undefined) {
      const at = this.decodeBookmark(opts.startFromBookmark);
      if (at < c.writePos - c.capacity + this.gap || at < 0 || at >= c.writePos) throw invalidBookmark();
      pos = at + 1;
    } else {
      const current = c.items.get(id);
      initialEvent = current
        ? { type: 'created', resource: copyResource(current) }
        : { type: 'destroyed', resource: tombstone(namespace, type, id, this.now()) };
    }
    const watcher = this.register(c, () => {
      if (initialEvent) {
        const event = initialEvent;
        initialEvent = undefined;
        sink([event]);
        if (watcher.handle.cancelled) return;
      }
      if (c.writePos - pos > c.capacity) {
        sink([{ type: 'errored', error: overrunText(c, pos) }]);
        watcher.handle.cancel();
        return;
      }
      for (; pos < c.writePos; pos++) {
        const event = c.eventAt(pos);
        if (event.resource?.metadata.id !== id) continue;
        sink([event]);
        if (watcher.handle.cancelled) return;
      }
    });
    scheduleFlush(watcher);
    return watcher.handle;
  }

  private register(c: Collection, flush: () => void): Watcher {
    let cancelled = false;
    const watcher: Watcher = {
      scheduled: false,
      flush,
      handle: {
        cancel: () => {
          cancelled = true;
          c.watchers.delete(watcher);
        },
        get cancelled() {
          return cancelled;
        },
      },
    };
    c.watchers.add(watcher);
    return watcher;
  }

  /** Number of open watches (for tests asserting that a client closed its streams). */
  watchCount(): number {
    let n = 0;
    for (const c of this.collections.values()) n += c.watchers.size;
    return n;
  }
}

function scheduleFlush(w: Watcher): void {
  if (w.scheduled || w.handle.cancelled) return;
  w.scheduled = true;
  setImmediate(() => {
    w.scheduled = false;
    if (!w.handle.cancelled) w.flush();
  });
}

function withoutOld(event: StoreEvent, type: EventType): StoreEvent {
  const out: StoreEvent = { type };
  if (event.resource) out.resource = event.resource;
  if (event.bookmark) out.bookmark = event.bookmark;
  return out;
}

function overrunText(c: Collection, pos: number): string {
  return `buffer overrun: namespace ${JSON.stringify(c.namespace)} type ${JSON.stringify(c.type)}, write pos ${c.writePos}, pos ${pos}, capacity ${c.capacity}`;
}

function normalize(input: ResourceInput, at: Date): Resource {
  const md = input.metadata;
  return {
    metadata: {
      namespace: md.namespace,
      type: md.type,
      id: md.id,
      version: md.version,
      owner: md.owner ?? '',
      phase: md.phase ?? 'running',
      created: md.created ?? at,
      updated: md.updated ?? at,
      finalizers: [...new Set(md.finalizers ?? [])],
      labels: { ...(md.labels ?? {}) },
      annotations: { ...(md.annotations ?? {}) },
    },
    spec: { protoSpec: new Uint8Array(input.spec.protoSpec), yamlSpec: input.spec.yamlSpec },
  };
}

function notFound(md: Pick<ResourceMetadata, 'namespace' | 'type' | 'id' | 'version'>): OmniError {
  return new OmniError('notFound', `resource ${describeResource(md)} doesn't exist`);
}

function ownerConflict(md: ResourceMetadata): OmniError {
  return new OmniError('ownerConflict', `resource ${describeResource(md)} is owned by ${JSON.stringify(md.owner)}`);
}

function invalidBookmark(): OmniError {
  return new OmniError('invalidBookmark', 'invalid watch bookmark');
}
