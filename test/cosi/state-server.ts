// Minimal in-memory COSI State server for the client tests (loopback only), with fault injection:
// conflicting writes, missing Teardown RPC, broken watch streams, ERRORED events and rejected bookmarks.
import * as grpc from '@grpc/grpc-js';
import { create, type MessageShape } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { ResourceSchema, type Resource } from '../../src/gen/cosi/v1alpha1/resource_pb.js';
import {
  EventType,
  State,
  WatchResponseSchema,
  type Event,
  type WatchRequest,
  type WatchResponse,
} from '../../src/gen/cosi/v1alpha1/state_pb.js';
import { ManagementService } from '../../src/gen/omni/management/management_pb.js';
import { addServiceHandlers, serverChannelOptions } from '../../src/cosi/grpc.js';
import { Changes } from '../helpers/wait.js';

type WatchCall = grpc.ServerWritableStream<WatchRequest, WatchResponse>;

interface LoggedEvent {
  pos: number;
  ns: string;
  type: string;
  event: Event;
}

function fail(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

function bookmarkOf(pos: number): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(pos));
  return new Uint8Array(b);
}

export class StateServer {
  readonly server = new grpc.Server(serverChannelOptions);
  readonly store = new Map<string, Resource>();
  readonly log: LoggedEvent[] = [];
  /** Every call: method path and the metadata it arrived with. */
  readonly calls: { method: string; metadata: grpc.Metadata }[] = [];
  readonly watchRequests: WatchRequest[] = [];
  private readonly watches = new Set<{ call: WatchCall; req: WatchRequest }>();
  /** Notified whenever a watch stream opens or closes (for waits on `openWatches`). */
  readonly watchChanges = new Changes();
  teardownImplemented = true;
  rejectBookmarks = false;
  /** Runs before each Update is applied (e.g. to simulate a concurrent writer). */
  beforeUpdate: ((req: Resource) => void) | undefined;
  /** Runs before each Create is applied, with the resource as it arrived. */
  beforeCreate: ((req: Resource) => void) | undefined;
  port = 0;

  constructor() {
    addServiceHandlers(this.server, State, {
      get: (call, cb) => {
        this.record('Get', call.metadata);
        const r = this.store.get(this.key(call.request.namespace, call.request.type, call.request.id));
        if (!r) return cb(fail(grpc.status.NOT_FOUND, 'resource not found'));
        cb(null, create(State.method.get.output, { resource: r }));
      },
      list: (call) => {
        this.record('List', call.metadata);
        const queries = call.request.options?.labelQuery ?? [];
        for (const r of this.sorted(call.request.namespace, call.request.type)) {
          const labels = r.metadata?.labels ?? {};
          const match =
            queries.length === 0 ||
            queries.some((q) => q.terms.every((t) => labels[t.key] !== undefined && (t.op !== 1 || labels[t.key] === t.value[0])));
          if (match) call.write(create(State.method.list.output, { resource: r }));
        }
        call.end();
      },
      create: (call, cb) => {
        this.record('Create', call.metadata);
        const r = call.request.resource;
        const m = r?.metadata;
        if (!r || !m) return cb(fail(grpc.status.INVALID_ARGUMENT, 'resource is missing'));
        if (!r.spec) return cb(fail(grpc.status.INVALID_ARGUMENT, 'spec is missing'));
        this.beforeCreate?.(r);
        if (m.version !== 'undefined' && !/^\d+$/.test(m.version)) return cb(fail(grpc.status.INVALID_ARGUMENT, 'error parsing version'));
        if (m.phase !== 'running' && m.phase !== 'tearingDown') return cb(fail(grpc.status.INVALID_ARGUMENT, 'unknown phase'));
        const k = this.key(m.namespace, m.type, m.id);
        if (this.store.has(k)) return cb(fail(grpc.status.ALREADY_EXISTS, 'resource already exists'));
        const stored = create(ResourceSchema, r);
        stored.metadata = { ...m, version: '1', owner: call.request.options?.owner ?? '', created: timestampNow(), updated: timestampNow() };
        this.store.set(k, stored);
        this.emit(EventType.CREATED, stored);
        cb(null, create(State.method.create.output, { resource: stored }));
      },
      update: (call, cb) => {
        this.record('Update', call.metadata);
        const r = call.request.newResource;
        const m = r?.metadata;
        if (!r || !m) return cb(fail(grpc.status.INVALID_ARGUMENT, 'resource is missing'));
        if (!r.spec) return cb(fail(grpc.status.INVALID_ARGUMENT, 'spec is missing'));
        this.beforeUpdate?.(r);
        const k = this.key(m.namespace, m.type, m.id);
        const cur = this.store.get(k);
        if (!cur?.metadata) return cb(fail(grpc.status.NOT_FOUND, 'resource not found'));
        const opts = call.request.options;
        if (cur.metadata.owner !== (opts?.owner ?? '')) return cb(fail(grpc.status.PERMISSION_DENIED, 'owner conflict'));
        if (cur.metadata.version !== m.version) return cb(fail(grpc.status.FAILED_PRECONDITION, 'resource version conflict'));
        if (opts?.expectedPhase !== undefined && opts.expectedPhase !== cur.metadata.phase) {
          return cb(fail(grpc.status.INVALID_ARGUMENT, 'phase conflict'));
        }
        const stored = create(ResourceSchema, r);
        stored.metadata = {
          ...m,
          owner: cur.metadata.owner,
          version: String(Number(cur.metadata.version) + 1),
          created: cur.metadata.created,
          updated: timestampNow(),
        };
        this.store.set(k, stored);
        this.emit(EventType.UPDATED, stored, cur);
        cb(null, create(State.method.update.output, { resource: stored }));
      },
      destroy: (call, cb) => {
        this.record('Destroy', call.metadata);
        const k = this.key(call.request.namespace, call.request.type, call.request.id);
        const cur = this.store.get(k);
        if (!cur?.metadata) return cb(fail(grpc.status.NOT_FOUND, 'resource not found'));
        if (cur.metadata.owner !== (call.request.options?.owner ?? '')) return cb(fail(grpc.status.PERMISSION_DENIED, 'owner conflict'));
        if (cur.metadata.finalizers.length > 0) return cb(fail(grpc.status.FAILED_PRECONDITION, 'pending finalizers'));
        this.store.delete(k);
        this.emit(EventType.DESTROYED, cur);
        cb(null, create(State.method.destroy.output, {}));
      },
      teardown: (call, cb) => {
        this.record('Teardown', call.metadata);
        if (!this.teardownImplemented) return cb(fail(grpc.status.UNIMPLEMENTED, 'unknown method Teardown'));
        const cur = this.store.get(this.key(call.request.namespace, call.request.type, call.request.id));
        if (!cur?.metadata) return cb(fail(grpc.status.NOT_FOUND, 'resource not found'));
        if (cur.metadata.phase !== 'tearingDown') {
          const old = create(ResourceSchema, cur);
          cur.metadata.phase = 'tearingDown';
          cur.metadata.version = String(Number(cur.metadata.version) + 1);
          this.emit(EventType.UPDATED, cur, old);
        }
        cb(null, create(State.method.teardown.output, { destroyReady: cur.metadata.finalizers.length === 0 }));
      },
      teardownAndDestroy: (_call, cb) => cb(fail(grpc.status.UNIMPLEMENTED, 'not in this test server')),
      watch: (call) => this.watch(call),
    });
    addServiceHandlers(this.server, ManagementService, {
      createSchematicFromRaw: (call, cb) => {
        this.record('CreateSchematicFromRaw', call.metadata);
        cb(null, create(ManagementService.method.createSchematicFromRaw.output, { schematicId: 'abc' }));
      },
      getBootAssetURL: (_call, cb) => cb(fail(grpc.status.UNIMPLEMENTED, 'no')),
    });
  }

  /** Listens on 127.0.0.1; with `tls` (server key and certificate chain, PEM) over TLS. Returns the endpoint URL. */
  async start(opts: { tls?: { key: string; certChain: string } } = {}): Promise<string> {
    const credentials = opts.tls
      ? grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(opts.tls.key), cert_chain: Buffer.from(opts.tls.certChain) }], false)
      : grpc.ServerCredentials.createInsecure();
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', credentials, (err, port) => (err ? reject(err) : resolve(port))),
    );
    return `${opts.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    for (const w of this.watches) w.call.end();
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }

  /** Puts a resource as an Omni controller would (no owner checks), emitting the matching event. */
  put(resource: MessageShape<typeof ResourceSchema>): void {
    const m = resource.metadata!;
    const k = this.key(m.namespace, m.type, m.id);
    const cur = this.store.get(k);
    const stored = create(ResourceSchema, resource);
    stored.metadata!.version = String(cur?.metadata ? Number(cur.metadata.version) + 1 : 1);
    this.store.set(k, stored);
    this.emit(cur ? EventType.UPDATED : EventType.CREATED, stored, cur);
  }

  remove(ns: string, type: string, id: string): void {
    const k = this.key(ns, type, id);
    const cur = this.store.get(k);
    if (!cur) return;
    this.store.delete(k);
    this.emit(EventType.DESTROYED, cur);
  }

  /** Like remove, but no watcher is told (as if the event were lost while a stream was down). */
  removeSilently(ns: string, type: string, id: string): void {
    this.store.delete(this.key(ns, type, id));
  }

  /** Ends every open watch stream with a gRPC error. */
  breakWatches(code = grpc.status.UNAVAILABLE): void {
    for (const w of [...this.watches]) {
      this.watches.delete(w);
      w.call.emit('error', fail(code, 'connection reset by test'));
    }
  }

  /** Sends an ERRORED event on every open watch (the stream stays open, as Omni's does). */
  sendErrored(): void {
    for (const w of this.watches) {
      w.call.write(create(WatchResponseSchema, { event: [{ eventType: EventType.ERRORED, error: 'buffer overrun' }] }));
    }
  }

  /** Sends an empty batch on every open watch (what provider filtering can produce). */
  sendEmptyBatch(): void {
    for (const w of this.watches) w.call.write(create(WatchResponseSchema, { event: [] }));
  }

  get openWatches(): number {
    return this.watches.size;
  }

  countCalls(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  private record(method: string, metadata: grpc.Metadata): void {
    this.calls.push({ method, metadata });
  }

  private key(ns: string, type: string, id: string): string {
    return `${ns}\u0000${type}\u0000${id}`;
  }

  private sorted(ns: string, type: string): Resource[] {
    return [...this.store.values()]
      .filter((r) => r.metadata?.namespace === ns && r.metadata.type === type)
      .sort((a, b) => (a.metadata!.id < b.metadata!.id ? -1 : 1));
  }

  private emit(eventType: EventType, resource: Resource, old?: Resource): void {
    const m = resource.metadata!;
    const pos = this.log.length + 1;
    const ev = create(WatchResponseSchema, {
      event: [{ eventType, resource: create(ResourceSchema, resource), old: old ? create(ResourceSchema, old) : undefined, bookmark: bookmarkOf(pos) }],
    }).event[0]!;
    this.log.push({ pos, ns: m.namespace, type: m.type, event: ev });
    for (const w of this.watches) {
      if (w.req.namespace === m.namespace && w.req.type === m.type) w.call.write(create(WatchResponseSchema, { event: [ev] }));
    }
  }

  private watch(call: WatchCall): void {
    this.record('Watch', call.metadata);
    const req = call.request;
    this.watchRequests.push(req);
    const opts = req.options;
    const start = opts?.startFromBookmark;
    if (start !== undefined) {
      const pos = Number(Buffer.from(start).readBigUInt64BE());
      if (this.rejectBookmarks || pos > this.log.length) {
        call.emit('error', fail(grpc.status.FAILED_PRECONDITION, 'invalid bookmark'));
        return;
      }
      call.write(create(WatchResponseSchema, {}));
      const replay = this.log.filter((e) => e.pos > pos && e.ns === req.namespace && e.type === req.type).map((e) => e.event);
      if (replay.length > 0) call.write(create(WatchResponseSchema, { event: replay }));
    } else {
      call.write(create(WatchResponseSchema, {}));
      if (opts?.bootstrapContents) {
        const events = this.sorted(req.namespace, req.type).map((r) => ({ eventType: EventType.CREATED, resource: r }));
        const tombstone = { metadata: { namespace: req.namespace, type: req.type, id: '', version: 'undefined', phase: 'running' }, spec: {} };
        call.write(
          create(WatchResponseSchema, {
            event: [...events, { eventType: EventType.BOOTSTRAPPED, resource: tombstone, bookmark: bookmarkOf(this.log.length) }],
          }),
        );
      }
    }
    const entry = { call, req };
    this.watches.add(entry);
    this.watchChanges.notify();
    call.on('cancelled', () => {
      this.watches.delete(entry);
      this.watchChanges.notify();
    });
  }
}
