// Typed client of Omni's COSI State API: CRUD with metadata rules, conflict-retrying modify, finalizer edits,
// teardown (with the Get+Update fallback for old servers) and kind watches that resume from bookmarks or resync.
import * as grpc from '@grpc/grpc-js';
import { create, equals, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { LabelTerm_Operation, type LabelQuery, LabelQuerySchema } from '../gen/cosi/v1alpha1/resource_pb.js';
import { EventType, State, type Event } from '../gen/cosi/v1alpha1/state_pb.js';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { isServiceError, type ServiceClient } from './grpc.js';
import {
  cloneResource,
  decodeResource,
  encodeResource,
  newResource,
  type Phase,
  type ResourceKind,
  type TypedResource,
} from './resources.js';

/** A failed COSI call: gRPC status code and the server's message. */
export class CosiError extends Error {
  override readonly name = 'CosiError';
  constructor(
    readonly code: grpc.status,
    readonly details: string,
    readonly operation: string,
  ) {
    super(`${operation}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

/** Wraps any error from a State RPC into a CosiError (non-gRPC errors become UNKNOWN). */
export function toCosiError(err: unknown, operation: string): CosiError {
  if (err instanceof CosiError) return err;
  if (isServiceError(err)) return new CosiError(err.code, err.details, operation);
  return new CosiError(grpc.status.UNKNOWN, err instanceof Error ? err.message : String(err), operation);
}

function hasCode(err: unknown, code: grpc.status): boolean {
  return (err instanceof CosiError || isServiceError(err)) && err.code === code;
}

export const isNotFound = (err: unknown): boolean => hasCode(err, grpc.status.NOT_FOUND);
export const isAlreadyExists = (err: unknown): boolean => hasCode(err, grpc.status.ALREADY_EXISTS);
/** Version conflict on Update (or pending finalizers on Destroy): re-read and retry. */
export const isConflict = (err: unknown): boolean => hasCode(err, grpc.status.FAILED_PRECONDITION);
/** Update with expected_phase that did not match (e.g. writing a resource that is tearing down). */
export const isPhaseConflict = (err: unknown): boolean => hasCode(err, grpc.status.INVALID_ARGUMENT);
/** Owner mismatch or access denied. */
export const isPermissionDenied = (err: unknown): boolean => hasCode(err, grpc.status.PERMISSION_DENIED);
export const isUnimplemented = (err: unknown): boolean => hasCode(err, grpc.status.UNIMPLEMENTED);
/** Bad, expired or unknown key, or clock skew: a configuration problem, not worth retrying. */
export const isUnauthenticated = (err: unknown): boolean => hasCode(err, grpc.status.UNAUTHENTICATED);
export const isUnavailable = (err: unknown): boolean => hasCode(err, grpc.status.UNAVAILABLE);

/** Label selector: terms in one query are ANDed. */
export type LabelTermInput =
  | { key: string; op: 'exists'; invert?: boolean }
  | { key: string; op: 'equal'; value: string; invert?: boolean }
  | { key: string; op: 'in'; values: string[]; invert?: boolean };

export interface ListFilter {
  /** Alternatives (ORed); each is a list of ANDed terms. A plain record means "all these labels equal". */
  labels?: Record<string, string> | LabelTermInput[][];
  /** Regular expression on the ID. */
  idRegexp?: string;
}

function labelQueries(labels: ListFilter['labels']): LabelQuery[] {
  if (labels === undefined) return [];
  const alternatives: LabelTermInput[][] = Array.isArray(labels)
    ? labels
    : [Object.entries(labels).map(([key, value]) => ({ key, op: 'equal' as const, value }))];
  return alternatives.map((terms) =>
    create(LabelQuerySchema, {
      terms: terms.map((t) => ({
        key: t.key,
        op: t.op === 'exists' ? LabelTerm_Operation.EXISTS : t.op === 'equal' ? LabelTerm_Operation.EQUAL : LabelTerm_Operation.IN,
        value: t.op === 'exists' ? [] : t.op === 'equal' ? [t.value] : [...t.values],
        invert: t.invert ?? false,
      })),
    }),
  );
}

export interface RetryPolicy {
  /** Attempts for conflict retries (version conflict / already exists). */
  attempts: number;
  /** Delay before the n-th retry: initialMs × 1.5^(n-1), capped at maxMs. */
  initialMs: number;
  maxMs: number;
}

export interface CosiStateOptions {
  logger?: Logger;
  /** Retry policy for modify/finalizer/teardown-fallback conflict loops. */
  conflictRetry?: Partial<RetryPolicy>;
  /** Backoff for re-opening broken watch streams. */
  watchBackoff?: { initialMs?: number; maxMs?: number };
  /**
   * Called before every write RPC (Create, Update, Destroy, Teardown) with the operation and the resource type;
   * throwing refuses the write before it is sent (the leader lease's fencing: src/omni/lease.ts).
   */
  writeGuard?: (operation: string, type: string) => void;
}

/** Per-call options of the plain CRUD methods. */
export interface CallOptions {
  /** gRPC deadline: the call fails with DEADLINE_EXCEEDED after this long (default: no deadline). */
  timeoutMs?: number;
}

function rpcOptions(opts: CallOptions | undefined): { deadline?: Date } {
  return opts?.timeoutMs !== undefined ? { deadline: new Date(Date.now() + opts.timeoutMs) } : {};
}

export interface ModifyOptions {
  /** Owner passed to Create/Update (the controller name, e.g. `proxmox.ProvisionController`). */
  owner: string;
  /** Phase the stored resource must be in for Update; default "running"; null = any phase. */
  expectedPhase?: Phase | null;
  /** Create the resource when it does not exist (default true); otherwise NOT_FOUND is thrown. */
  createIfMissing?: boolean;
}

/** Typed events of a kind watch. `bootstrapped` marks that every live resource has been reported (again, on resync). */
export type WatchEvent<S extends DescMessage> =
  | { type: 'created'; resource: TypedResource<S> }
  | { type: 'updated'; resource: TypedResource<S>; old: TypedResource<S> | undefined }
  | { type: 'destroyed'; resource: TypedResource<S> }
  | { type: 'bootstrapped'; resync: boolean };

export interface WatchOptions {
  labels?: ListFilter['labels'];
  idRegexp?: string;
}

/** A running kind watch. Iterate it once; `close()` ends the iteration. */
export interface ResourceWatch<S extends DescMessage> extends AsyncIterable<WatchEvent<S>> {
  close(): void;
}

const FATAL_WATCH_CODES = new Set<grpc.status>([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.UNIMPLEMENTED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.NOT_FOUND,
]);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function sameStringArray(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/** True when a write of `next` over `current` would change nothing the server stores. */
export function resourceUnchanged<S extends DescMessage>(
  kind: ResourceKind<S>,
  current: TypedResource<S>,
  next: TypedResource<S>,
): boolean {
  const a = current.metadata;
  const b = next.metadata;
  return (
    a.phase === b.phase &&
    a.owner === b.owner &&
    sameStringArray(a.finalizers, b.finalizers) &&
    sameRecord(a.labels, b.labels) &&
    sameRecord(a.annotations, b.annotations) &&
    equals(kind.spec, current.spec, next.spec)
  );
}

/** The COSI State client. Every method throws CosiError on failure. */
export class CosiState {
  private readonly logger: Logger;
  private readonly retry: RetryPolicy;
  private readonly watchBackoff: { initialMs: number; maxMs: number };
  private readonly writeGuard: ((operation: string, type: string) => void) | undefined;
  /** Set once the server answered Teardown with UNIMPLEMENTED (Omni < 1.8). */
  private teardownUnsupported = false;

  constructor(
    private readonly rpc: ServiceClient<typeof State>,
    opts: CosiStateOptions = {},
  ) {
    this.logger = opts.logger ?? silentLogger;
    this.retry = { attempts: 10, initialMs: 50, maxMs: 2000, ...opts.conflictRetry };
    this.watchBackoff = { initialMs: 500, maxMs: 60_000, ...opts.watchBackoff };
    this.writeGuard = opts.writeGuard;
  }

  /**
   * Runs the write guard; its refusal becomes a CosiError with code ABORTED naming the operation (not
   * FAILED_PRECONDITION: a refused write must not be retried as a version conflict).
   */
  private guard(op: string, type: string): void {
    if (!this.writeGuard) return;
    try {
      this.writeGuard(op, type);
    } catch (err) {
      throw new CosiError(grpc.status.ABORTED, err instanceof Error ? err.message : String(err), op);
    }
  }

  async get<S extends DescMessage>(kind: ResourceKind<S>, id: string, call?: CallOptions): Promise<TypedResource<S>> {
    const op = `get ${kind.type}/${id}`;
    try {
      const res = await this.rpc.get({ namespace: kind.namespace, type: kind.type, id, options: {} }, rpcOptions(call));
      if (!res.resource) throw new CosiError(grpc.status.INTERNAL, 'empty response', op);
      return decodeResource(kind, res.resource);
    } catch (err) {
      throw toCosiError(err, op);
    }
  }

  /** Like get, but NOT_FOUND yields undefined. */
  async find<S extends DescMessage>(kind: ResourceKind<S>, id: string, call?: CallOptions): Promise<TypedResource<S> | undefined> {
    try {
      return await this.get(kind, id, call);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list<S extends DescMessage>(kind: ResourceKind<S>, filter: ListFilter = {}): Promise<TypedResource<S>[]> {
    const op = `list ${kind.type}`;
    const out: TypedResource<S>[] = [];
    try {
      const stream = this.rpc.list({
        namespace: kind.namespace,
        type: kind.type,
        options: {
          labelQuery: labelQueries(filter.labels),
          idQuery: filter.idRegexp !== undefined ? { regexp: filter.idRegexp } : undefined,
        },
      });
      for await (const msg of stream) {
        if (msg.resource) out.push(decodeResource(kind, msg.resource));
      }
    } catch (err) {
      throw toCosiError(err, op);
    }
    return out;
  }

  /**
   * Creates the resource with `owner`; returns the stored resource (version 1, `created` stamped by the server).
   * Like a Go client, the request always carries `created` and `updated` (now, unless the resource has them): the
   * server keeps the `updated` it is sent.
   */
  async create<S extends DescMessage>(
    kind: ResourceKind<S>,
    resource: TypedResource<S>,
    opts: { owner: string } & CallOptions,
  ): Promise<TypedResource<S>> {
    const op = `create ${kind.type}/${resource.metadata.id}`;
    this.guard(op, kind.type);
    const m = resource.metadata;
    const now = new Date();
    const stamped: TypedResource<S> =
      m.created !== undefined && m.updated !== undefined
        ? resource
        : { ...resource, metadata: { ...m, created: m.created ?? now, updated: m.updated ?? now } };
    try {
      const res = await this.rpc.create({ resource: encodeResource(kind, stamped), options: { owner: opts.owner } }, rpcOptions(opts));
      if (!res.resource) throw new CosiError(grpc.status.INTERNAL, 'empty response', op);
      return decodeResource(kind, res.resource);
    } catch (err) {
      throw toCosiError(err, op);
    }
  }

  /**
   * Replaces the stored resource (metadata and spec). `resource.metadata.version` must be the version that was
   * read; the server bumps it. FAILED_PRECONDITION = someone else wrote in between.
   */
  async update<S extends DescMessage>(
    kind: ResourceKind<S>,
    resource: TypedResource<S>,
    opts: { owner: string; expectedPhase?: Phase | undefined } & CallOptions,
  ): Promise<TypedResource<S>> {
    const op = `update ${kind.type}/${resource.metadata.id}`;
    this.guard(op, kind.type);
    try {
      const res = await this.rpc.update(
        {
          newResource: encodeResource(kind, resource),
          options: { owner: opts.owner, expectedPhase: opts.expectedPhase },
        },
        rpcOptions(opts),
      );
      if (!res.resource) throw new CosiError(grpc.status.INTERNAL, 'empty response', op);
      return decodeResource(kind, res.resource);
    } catch (err) {
      throw toCosiError(err, op);
    }
  }

  async destroy<S extends DescMessage>(kind: ResourceKind<S>, id: string, opts: { owner: string }): Promise<void> {
    const op = `destroy ${kind.type}/${id}`;
    this.guard(op, kind.type);
    try {
      await this.rpc.destroy({ namespace: kind.namespace, type: kind.type, id, options: { owner: opts.owner } });
    } catch (err) {
      throw toCosiError(err, op);
    }
  }

  /**
   * Moves the resource to phase tearingDown; returns true when no finalizers remain (Destroy may follow).
   * On servers without the Teardown RPC, falls back (permanently) to Get + Update(phase=tearingDown).
   */
  async teardown<S extends DescMessage>(kind: ResourceKind<S>, id: string, opts: { owner: string }): Promise<boolean> {
    const op = `teardown ${kind.type}/${id}`;
    this.guard(op, kind.type);
    if (!this.teardownUnsupported) {
      try {
        const res = await this.rpc.teardown({ namespace: kind.namespace, type: kind.type, id, options: { owner: opts.owner } });
        return res.destroyReady;
      } catch (err) {
        if (!isUnimplemented(err)) throw toCosiError(err, op);
        this.teardownUnsupported = true;
        this.logger.info('Omni has no Teardown RPC (Omni < 1.8); tearing down with get + update');
      }
    }
    return this.retryOnConflict(op, async () => {
      const current = await this.get(kind, id);
      if (current.metadata.phase === 'tearingDown') return current.metadata.finalizers.length === 0;
      const next = cloneResource(kind, current);
      next.metadata.phase = 'tearingDown';
      const stored = await this.update(kind, next, { owner: opts.owner });
      return stored.metadata.finalizers.length === 0;
    });
  }

  /**
   * Read-modify-write: reads the resource (always fresh, so finalizers/labels written by Omni are kept), lets
   * `mutate` change the copy, and writes it only if something changed. Missing → a new resource is mutated and
   * created. Version conflicts and concurrent creates re-read and re-apply `mutate`.
   */
  async modify<S extends DescMessage>(
    kind: ResourceKind<S>,
    id: string,
    mutate: (resource: TypedResource<S>, existed: boolean) => void | Promise<void>,
    opts: ModifyOptions,
  ): Promise<TypedResource<S>> {
    const op = `modify ${kind.type}/${id}`;
    const expectedPhase = opts.expectedPhase === undefined ? 'running' : (opts.expectedPhase ?? undefined);
    return this.retryOnConflict(op, async () => {
      const current = await this.find(kind, id);
      if (current === undefined) {
        if (opts.createIfMissing === false) throw new CosiError(grpc.status.NOT_FOUND, 'resource does not exist', op);
        const fresh = newResource(kind, id);
        await mutate(fresh, false);
        return this.create(kind, fresh, { owner: opts.owner });
      }
      const next = cloneResource(kind, current);
      await mutate(next, true);
      next.metadata.version = current.metadata.version;
      if (resourceUnchanged(kind, current, next)) return current;
      return this.update(kind, next, { owner: opts.owner, expectedPhase });
    });
  }

  /**
   * Adds a finalizer (Get + Update with the resource's current owner, any phase). No write if already present.
   */
  async addFinalizer<S extends DescMessage>(kind: ResourceKind<S>, id: string, finalizer: string): Promise<TypedResource<S>> {
    return this.editFinalizers(kind, id, (list) => (list.includes(finalizer) ? list : [...list, finalizer]));
  }

  /** Removes a finalizer; a resource that no longer exists counts as done (returns undefined). */
  async removeFinalizer<S extends DescMessage>(
    kind: ResourceKind<S>,
    id: string,
    finalizer: string,
  ): Promise<TypedResource<S> | undefined> {
    try {
      return await this.editFinalizers(kind, id, (list) => list.filter((f) => f !== finalizer));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private editFinalizers<S extends DescMessage>(
    kind: ResourceKind<S>,
    id: string,
    edit: (finalizers: string[]) => string[],
  ): Promise<TypedResource<S>> {
    return this.retryOnConflict(`finalizers of ${kind.type}/${id}`, async () => {
      const current = await this.get(kind, id);
      const finalizers = edit([...current.metadata.finalizers]);
      if (sameStringArray(finalizers, current.metadata.finalizers)) return current;
      const next = cloneResource(kind, current);
      next.metadata.finalizers = finalizers;
      return this.update(kind, next, { owner: current.metadata.owner });
    });
  }

  private async retryOnConflict<T>(op: string, attempt: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        const retriable = isConflict(err) || isAlreadyExists(err);
        if (!retriable || n >= this.retry.attempts) throw toCosiError(err, op);
        const delay = Math.min(this.retry.maxMs, this.retry.initialMs * 1.5 ** (n - 1));
        this.logger.debug({ op, attempt: n, delay }, 'write conflict, re-reading');
        await sleep(delay);
      }
    }
  }

  /**
   * Watches a kind: reports every live resource (created), then `bootstrapped`, then changes. A broken stream is
   * resumed from the last bookmark; after ERRORED, or when resuming is impossible, the watch re-bootstraps and
   * reports the difference to what it had reported before (created/updated/destroyed), then `bootstrapped`
   * with resync=true. Configuration errors (UNAUTHENTICATED, PERMISSION_DENIED, …) end the iteration with a CosiError.
   */
  watch<S extends DescMessage>(kind: ResourceKind<S>, opts: WatchOptions = {}): ResourceWatch<S> {
    const abort = new AbortController();
    const self = this;
    let iterated = false;
    return {
      close: () => abort.abort(),
      [Symbol.asyncIterator]() {
        if (iterated) throw new Error('a ResourceWatch can be iterated only once');
        iterated = true;
        return self.runWatch(kind, opts, abort.signal);
      },
    };
  }

  private async *runWatch<S extends DescMessage>(
    kind: ResourceKind<S>,
    opts: WatchOptions,
    signal: AbortSignal,
  ): AsyncGenerator<WatchEvent<S>, void, undefined> {
    const log = this.logger.child({ watch: `${kind.namespace}/${kind.type}` });
    /** What the consumer has been told exists, by ID. */
    const known = new Map<string, TypedResource<S>>();
    let bookmark: Uint8Array | undefined;
    let bootstrappedOnce = false;
    let failures = 0;

    while (!signal.aborted) {
      const resuming = bookmark !== undefined;
      const stream = this.rpc.watch(
        {
          namespace: kind.namespace,
          type: kind.type,
          apiVersion: 1,
          options: {
            aggregated: true,
            bootstrapContents: !resuming,
            startFromBookmark: resuming ? bookmark : undefined,
            labelQuery: labelQueries(opts.labels),
            idQuery: opts.idRegexp !== undefined ? { regexp: opts.idRegexp } : undefined,
          },
        },
        { signal },
      );
      const onAbort = () => stream.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      /** Resources seen while (re)bootstrapping, reported as a diff at BOOTSTRAPPED. */
      let pending: Map<string, TypedResource<S>> | undefined = resuming ? undefined : new Map();
      let established = false;
      let resyncNeeded = false;
      try {
        for await (const msg of stream) {
          if (!established) {
            established = true;
            failures = 0;
          }
          for (const ev of msg.event) {
            const outcome = this.applyWatchEvent(kind, ev, known, pending);
            if (ev.bookmark !== undefined && ev.bookmark.length > 0) bookmark = ev.bookmark;
            if (outcome.kind === 'errored') {
              log.warn({ error: ev.error ?? '' }, 'watch errored on the server; resyncing');
              resyncNeeded = true;
              break;
            }
            if (outcome.kind === 'bootstrapped' && pending !== undefined) {
              for (const e of this.diffSnapshot(known, pending)) yield e;
              pending = undefined;
              yield { type: 'bootstrapped', resync: bootstrappedOnce };
              bootstrappedOnce = true;
            }
            for (const e of outcome.events) yield e;
          }
          if (resyncNeeded) break;
        }
        if (signal.aborted) return;
        if (!resyncNeeded) log.warn('watch stream ended by the server; reconnecting');
      } catch (err) {
        if (signal.aborted) return;
        const cosiErr = toCosiError(err, `watch ${kind.type}`);
        if (resuming && !established && cosiErr.code === grpc.status.FAILED_PRECONDITION) {
          log.warn({ error: cosiErr.details }, 'cannot resume watch from bookmark; resyncing');
          resyncNeeded = true;
        } else if (FATAL_WATCH_CODES.has(cosiErr.code)) {
          throw cosiErr;
        } else {
          log.warn({ code: grpc.status[cosiErr.code], error: cosiErr.details }, 'watch stream broken; reconnecting');
        }
      } finally {
        signal.removeEventListener('abort', onAbort);
        stream.cancel();
      }
      if (resyncNeeded || pending !== undefined) {
        // Errored, bookmark rejected, or the stream broke before bootstrap finished: start over from a snapshot.
        bookmark = undefined;
      }
      failures++;
      await sleep(Math.min(this.watchBackoff.maxMs, this.watchBackoff.initialMs * 1.5 ** (failures - 1)), signal);
    }
  }

  /** Updates `known` (or `pending` during bootstrap) from one wire event and returns what to report. */
  private applyWatchEvent<S extends DescMessage>(
    kind: ResourceKind<S>,
    ev: Event,
    known: Map<string, TypedResource<S>>,
    pending: Map<string, TypedResource<S>> | undefined,
  ): { kind: 'events' | 'bootstrapped' | 'errored'; events: WatchEvent<S>[] } {
    switch (ev.eventType) {
      case EventType.ERRORED:
        return { kind: 'errored', events: [] };
      case EventType.BOOTSTRAPPED:
        return { kind: 'bootstrapped', events: [] };
      case EventType.NOOP:
        return { kind: 'events', events: [] };
      default:
        break;
    }
    if (!ev.resource?.metadata || ev.resource.metadata.id === '') return { kind: 'events', events: [] };
    const resource = decodeResource(kind, ev.resource);
    const id = resource.metadata.id;
    if (pending !== undefined) {
      if (ev.eventType === EventType.DESTROYED) pending.delete(id);
      else pending.set(id, resource);
      return { kind: 'events', events: [] };
    }
    const previous = known.get(id);
    if (ev.eventType === EventType.DESTROYED) {
      known.delete(id);
      return { kind: 'events', events: [{ type: 'destroyed', resource }] };
    }
    known.set(id, resource);
    if (previous === undefined) return { kind: 'events', events: [{ type: 'created', resource }] };
    const old = ev.old?.metadata ? decodeResource(kind, ev.old) : previous;
    return { kind: 'events', events: [{ type: 'updated', resource, old }] };
  }

  /** Events turning the reported set `known` into `fresh`; `known` becomes `fresh`. */
  private diffSnapshot<S extends DescMessage>(
    known: Map<string, TypedResource<S>>,
    fresh: Map<string, TypedResource<S>>,
  ): WatchEvent<S>[] {
    const events: WatchEvent<S>[] = [];
    for (const [id, resource] of [...fresh].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const previous = known.get(id);
      if (previous === undefined) events.push({ type: 'created', resource });
      else if (previous.metadata.version !== resource.metadata.version) events.push({ type: 'updated', resource, old: previous });
    }
    for (const [id, resource] of known) {
      if (!fresh.has(id)) events.push({ type: 'destroyed', resource });
    }
    known.clear();
    for (const [id, resource] of fresh) known.set(id, resource);
    return events;
  }
}

/** Convenience re-export so callers can type spec values. */
export type SpecOf<K> = K extends ResourceKind<infer S> ? MessageShape<S> : never;
