// The in-process Omni: COSI State and Management gRPC services on 127.0.0.1 (signed calls, Omni's access rules,
// capability switches to emulate older Omni, fault injection) plus the fake image factory, wired into one handle.
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { generate as generateCertificate } from 'selfsigned';
import { addServiceHandlers, methodPath, serverChannelOptions } from '../../cosi/grpc.js';
import {
  CreateResponseSchema,
  DestroyResponseSchema,
  GetResponseSchema,
  ListResponseSchema,
  State,
  TeardownAndDestroyResponseSchema,
  TeardownResponseSchema,
  UpdateResponseSchema,
  WatchResponseSchema,
  type WatchRequest,
  type WatchResponse,
} from '../../gen/cosi/v1alpha1/state_pb.js';
import {
  BootAssetURLRequest_BootAssetKind,
  BootAssetURLResponseSchema,
  CreateSchematicResponseSchema,
  ManagementService,
  type BootAssetURLRequest,
} from '../../gen/omni/management/management_pb.js';
import { silentLogger, type Logger } from '../../log.js';
import { checkManagementAccess, OmniAccess } from './access.js';
import { INTERNAL_ACTOR, KeyRegistry, type CallMetadata, type Caller } from './auth.js';
import { OmniControllers, type SiderolinkSettings } from './controllers.js';
import { GrpcCode, OmniError } from './errors.js';
import { startImageFactory, type ImageFactory } from './factory.js';
import { FaultInjector } from './faults.js';
import { CosiStore, type StoreEvent, type WatchHandle } from './store.js';
import { eventToWire, labelQueriesFromWire, resourceFromWire, resourceToWire } from './wire.js';

/** What this Omni can do; switch features off to emulate older releases. */
export interface OmniCapabilities {
  /** Teardown/TeardownAndDestroy RPCs (Omni >= 1.8). */
  teardownRpc: boolean;
  /** ManagementService.CreateSchematicFromRaw (Omni >= 1.8). */
  createSchematicFromRaw: boolean;
  /** CreateSchematicFromRaw understands field 2, talos_version (Omni >= 1.10). */
  schematicTalosVersion: boolean;
  /** ManagementService.GetBootAssetURL (Omni after 1.10.4). */
  getBootAssetUrl: boolean;
}

export interface InProcessOmniOptions {
  /** The provider the fixture registers (InfraProvider, ProviderJoinConfig). Default `proxmox`. */
  providerId?: string;
  capabilities?: Partial<OmniCapabilities>;
  /** Omni < 1.0: no ProviderJoinConfigs resource definition (legacy ConnectionParams + v1 tokens). */
  legacy?: boolean;
  /** Serve gRPC over TLS with a self-signed certificate (for https:// and --insecure-skip-verify). */
  tls?: boolean;
  /** Accept unsigned calls carrying `providerid` (Omni's local resource server). */
  localMode?: boolean;
  /** Do not seed the provider's singletons (tests that want an empty Omni). */
  skipSeed?: boolean;
  seed?: number;
  now?: () => Date;
  logger?: Logger;
  siderolink?: Partial<SiderolinkSettings>;
  historyCapacity?: number;
}

export interface InProcessOmni {
  /** URL to give the provider as --omni-api-endpoint (`http://127.0.0.1:<port>` or `https://…` with tls). */
  endpoint: string;
  /** Base URL of the fake image factory. */
  factoryUrl: string;
  /** PEM of the self-signed certificate when tls is on. */
  tlsCertificate?: string;
  /** Mints and registers a service-account key for `providerId`; returns the base64 key string. */
  createProviderKey(providerId: string): Promise<string>;
  store: CosiStore;
  access: OmniAccess;
  keys: KeyRegistry;
  controllers: OmniControllers;
  faults: FaultInjector;
  factory: ImageFactory;
  capabilities: OmniCapabilities;
  /** Calls received per full method path (counted before authentication). */
  callCounts(): Record<string, number>;
  /** Calls `listener` with the full method path of every call as it is counted. Returns the unsubscribe function. */
  onCall(listener: (path: string) => void): () => void;
  /**
   * Calls `listener` as each State write (Create, Update, Destroy, Teardown, TeardownAndDestroy) arrives, before it
   * is authorised or applied: the method, the resource it names and the caller's `user-agent` (tests with two
   * provider instances check who wrote). Returns the unsubscribe function.
   */
  onWriteCall(listener: (call: WriteCall) => void): () => void;
  close(): Promise<void>;
}

/** A State write as it arrived (see onWriteCall). */
export interface WriteCall {
  path: string;
  userAgent: string;
  namespace: string;
  type: string;
  id: string;
}

const STATE_WRITES = new Set(['Create', 'Update', 'Destroy', 'Teardown', 'TeardownAndDestroy']);

/** The resource a State write names: `resource` (Create), `newResource` (Update), or namespace/type/id. */
function writtenResource(request: unknown): Pick<WriteCall, 'namespace' | 'type' | 'id'> {
  const r = (request ?? {}) as { resource?: { metadata?: WriteRef }; newResource?: { metadata?: WriteRef } } & Partial<WriteRef>;
  const md = r.resource?.metadata ?? r.newResource?.metadata ?? r;
  return { namespace: md.namespace ?? '', type: md.type ?? '', id: md.id ?? '' };
}
type WriteRef = { namespace: string; type: string; id: string };

type WireCallback<T> = (error: grpc.ServerErrorResponse | null, value?: T) => void;

function toServiceError(err: unknown): grpc.ServerErrorResponse {
  if (err instanceof OmniError) return Object.assign(new Error(err.message), { code: err.code, details: err.message, metadata: new grpc.Metadata() });
  const message = err instanceof Error ? err.message : String(err);
  return Object.assign(new Error(message), { code: GrpcCode.UNKNOWN, details: message, metadata: new grpc.Metadata() });
}

function metadataRecord(md: grpc.Metadata): CallMetadata {
  const out: Record<string, string[]> = {};
  for (const [key, values] of Object.entries(md.toJSON())) {
    const strings = values.filter((v): v is string => typeof v === 'string');
    if (strings.length > 0) out[key] = strings;
  }
  return out;
}

function userAgentOf(md: grpc.Metadata): string {
  return md.get('user-agent').filter((v): v is string => typeof v === 'string').join(' ');
}

function normalizeVersion(version: string): string {
  return version.startsWith('v') ? version : `v${version}`;
}

export async function startInProcessOmni(opts: InProcessOmniOptions = {}): Promise<InProcessOmni> {
  const logger = opts.logger ?? silentLogger;
  const providerId = opts.providerId ?? 'proxmox';
  const capabilities: OmniCapabilities = {
    teardownRpc: true,
    createSchematicFromRaw: true,
    schematicTalosVersion: true,
    getBootAssetUrl: true,
    ...opts.capabilities,
  };
  const nowDate = opts.now ?? (() => new Date());
  const storeOpts: ConstructorParameters<typeof CosiStore>[0] = { now: nowDate };
  if (opts.historyCapacity !== undefined) storeOpts.historyCapacity = opts.historyCapacity;
  const store = new CosiStore(storeOpts);
  const access = new OmniAccess(store);
  const keys = new KeyRegistry({ now: nowDate, logger, localMode: opts.localMode ?? false });
  const faults = new FaultInjector(() => nowDate().getTime());
  const factory = await startImageFactory({ logger });
  const controllerOpts: ConstructorParameters<typeof OmniControllers>[0] = {
    providerId,
    store,
    faults,
    now: nowDate,
    logger,
    legacy: opts.legacy ?? false,
    imageFactoryBaseUrl: factory.url,
  };
  if (opts.seed !== undefined) controllerOpts.seed = opts.seed;
  if (opts.siderolink) controllerOpts.siderolink = opts.siderolink;
  const controllers = new OmniControllers(controllerOpts);
  if (!opts.skipSeed) controllers.seed();

  const counts: Record<string, number> = {};
  const callListeners = new Set<(path: string) => void>();
  const writeListeners = new Set<(call: WriteCall) => void>();
  const count = (path: string) => {
    counts[path] = (counts[path] ?? 0) + 1;
    for (const listener of [...callListeners]) listener(path);
  };

  const authorize = async (path: string, md: grpc.Metadata): Promise<Caller> => {
    const fault = faults.errorFor(path, userAgentOf(md));
    if (fault) throw fault;
    return keys.authenticate(path, metadataRecord(md));
  };

  function unary<Req, Res>(
    path: string,
    run: (req: Req, caller: Caller, call: grpc.ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
    available = () => true,
  ): grpc.handleUnaryCall<Req, Res> {
    return (call, callback: WireCallback<Res>) => {
      count(path);
      if (writeListeners.size > 0 && path.startsWith('/cosi.resource.State/') && STATE_WRITES.has(path.slice(path.lastIndexOf('/') + 1))) {
        const write: WriteCall = { path, userAgent: userAgentOf(call.metadata), ...writtenResource(call.request) };
        for (const listener of [...writeListeners]) listener(write);
      }
      if (!available()) {
        const [, service, method] = path.split('/');
        callback(toServiceError(new OmniError('unimplemented', `unknown method ${method ?? ''} for service ${service ?? ''}`)));
        return;
      }
      authorize(path, call.metadata)
        .then((caller) => run(call.request, caller, call))
        .then(
          (res) => callback(null, res),
          (err: unknown) => {
            logger.debug({ method: path, err: (err as Error).message }, 'in-process Omni call failed');
            callback(toServiceError(err));
          },
        );
    };
  }

  const paths = {
    get: methodPath(State.method.get),
    list: methodPath(State.method.list),
    create: methodPath(State.method.create),
    update: methodPath(State.method.update),
    destroy: methodPath(State.method.destroy),
    watch: methodPath(State.method.watch),
    teardown: methodPath(State.method.teardown),
    teardownAndDestroy: methodPath(State.method.teardownAndDestroy),
    createSchematicFromRaw: methodPath(ManagementService.method.createSchematicFromRaw),
    getBootAssetURL: methodPath(ManagementService.method.getBootAssetURL),
  };

  const openCalls = new Set<grpc.ServerWritableStream<WatchRequest, WatchResponse>>();

  const watch: grpc.handleServerStreamingCall<WatchRequest, WatchResponse> = (call) => {
    count(paths.watch);
    let handle: WatchHandle | undefined;
    let unregister: (() => void) | undefined;
    let ended = false;
    const finish = () => {
      handle?.cancel();
      unregister?.();
      openCalls.delete(call);
    };
    const fail = (err: unknown) => {
      if (ended) return;
      ended = true;
      finish();
      call.emit('error', toServiceError(err));
    };
    call.on('cancelled', () => {
      ended = true;
      finish();
    });
    openCalls.add(call);
    authorize(paths.watch, call.metadata)
      .then((caller) => {
        if (ended) return;
        const req = call.request;
        const o = req.options;
        const apiVersion = req.apiVersion;
        const aggregated = o?.aggregated ?? false;
        const send = (events: StoreEvent[]) => {
          if (ended) return;
          const wire = events.map((e) => eventToWire(e, apiVersion)).filter((e) => e !== undefined);
          if (aggregated) call.write(create(WatchResponseSchema, { event: wire }));
          else for (const e of wire) call.write(create(WatchResponseSchema, { event: [e] }));
        };
        if (req.id === undefined) {
          const kindOpts: Parameters<OmniAccess['watchKind']>[3] = {
            bootstrapContents: o?.bootstrapContents ?? false,
            bootstrapBookmark: o?.bootstrapBookmark ?? false,
            tailEvents: o?.tailEvents ?? 0,
            labelQueries: labelQueriesFromWire(o?.labelQuery ?? []),
          };
          if (o?.idQuery?.regexp) kindOpts.idRegexp = o.idQuery.regexp;
          if (o?.startFromBookmark !== undefined) kindOpts.startFromBookmark = o.startFromBookmark;
          handle = access.watchKind(caller, req.namespace, req.type, kindOpts, send);
        } else {
          if (o?.bootstrapContents) throw new OmniError('unimplemented', 'bootstrap contents is not implemented for resource watch');
          if ((o?.labelQuery.length ?? 0) > 0) throw new OmniError('unimplemented', 'label query is not implemented for resource watch');
          const oneOpts: Parameters<OmniAccess['watch']>[4] = { tailEvents: o?.tailEvents ?? 0 };
          if (o?.startFromBookmark !== undefined) oneOpts.startFromBookmark = o.startFromBookmark;
          handle = access.watch(caller, req.namespace, req.type, req.id, oneOpts, send);
        }
        // The real server confirms an established watch with one empty response before any event.
        call.write(create(WatchResponseSchema, {}));
        unregister = faults.onCut((fault) => {
          if (fault.type === 'end') {
            fail(fault.error);
          } else {
            handle?.cancel();
            send([{ type: 'errored', error: fault.message }]);
          }
        }, userAgentOf(call.metadata));
      })
      .catch(fail);
  };

  const server = new grpc.Server(serverChannelOptions);
  addServiceHandlers(server, State, {
    get: unary(paths.get, (req, caller) => {
      const stale = faults.takeStaleRead(req.type);
      return create(GetResponseSchema, { resource: resourceToWire(access.get(caller, req.namespace, req.type, req.id, { stale })) });
    }),
    list: (call) => {
      count(paths.list);
      authorize(paths.list, call.metadata)
        .then((caller) => {
          const o = call.request.options;
          const listOpts: Parameters<OmniAccess['list']>[3] = { labelQueries: labelQueriesFromWire(o?.labelQuery ?? []) };
          if (o?.idQuery?.regexp) listOpts.idRegexp = o.idQuery.regexp;
          for (const res of access.list(caller, call.request.namespace, call.request.type, listOpts)) {
            call.write(create(ListResponseSchema, { resource: resourceToWire(res) }));
          }
          call.end();
        })
        .catch((err: unknown) => call.emit('error', toServiceError(err)));
    },
    create: unary(paths.create, (req, caller) => {
      const input = resourceFromWire(req.resource);
      const created = access.create(caller, input, { owner: req.options?.owner ?? '' });
      return create(CreateResponseSchema, { resource: resourceToWire(created) });
    }),
    update: unary(paths.update, (req, caller) => {
      const input = resourceFromWire(req.newResource);
      const updateOpts: Parameters<OmniAccess['update']>[2] = { owner: req.options?.owner ?? '' };
      const expected = req.options?.expectedPhase;
      if (expected !== undefined) {
        if (expected !== 'running' && expected !== 'tearingDown') throw new OmniError('malformed', `unknown phase: ${expected}`);
        updateOpts.expectedPhase = expected;
      }
      return create(UpdateResponseSchema, { resource: resourceToWire(access.update(caller, input, updateOpts)) });
    }),
    destroy: unary(paths.destroy, (req, caller) => {
      access.destroy(caller, req.namespace, req.type, req.id, { owner: req.options?.owner ?? '' });
      return create(DestroyResponseSchema, {});
    }),
    watch,
    teardown: unary(
      paths.teardown,
      (req, caller) =>
        create(TeardownResponseSchema, {
          destroyReady: access.teardown(caller, req.namespace, req.type, req.id, { owner: req.options?.owner ?? '' }),
        }),
      () => capabilities.teardownRpc,
    ),
    teardownAndDestroy: unary(
      paths.teardownAndDestroy,
      async (req, caller, call) => {
        const abort = new AbortController();
        call.on('cancelled', () => abort.abort());
        await access.teardownAndDestroy(caller, req.namespace, req.type, req.id, { owner: req.options?.owner ?? '', signal: abort.signal });
        return create(TeardownAndDestroyResponseSchema, {});
      },
      () => capabilities.teardownRpc,
    ),
  });

  addServiceHandlers(server, ManagementService, {
    createSchematicFromRaw: unary(
      paths.createSchematicFromRaw,
      (req, caller) => {
        checkManagementAccess(caller);
        try {
          const stored = factory.registry.register(req.rawSchematic, 'omni', capabilities.schematicTalosVersion ? req.talosVersion : '');
          return create(CreateSchematicResponseSchema, { schematicId: stored.id });
        } catch (err) {
          throw new OmniError('invalidArgument', `failed to parse schematic: ${(err as Error).message}`);
        }
      },
      () => capabilities.createSchematicFromRaw,
    ),
    getBootAssetURL: unary(
      paths.getBootAssetURL,
      (req, caller) => {
        checkManagementAccess(caller);
        return bootAssetUrl(req, factory.url);
      },
      () => capabilities.getBootAssetUrl,
    ),
  });

  let credentials = grpc.ServerCredentials.createInsecure();
  let tlsCertificate: string | undefined;
  if (opts.tls) {
    const pems = await generateCertificate([{ name: 'commonName', value: '127.0.0.1' }], {
      keyType: 'ec',
      algorithm: 'sha256',
      extensions: [
        { name: 'basicConstraints', cA: false },
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
          ],
        },
      ],
    });
    tlsCertificate = pems.cert;
    credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(pems.private), cert_chain: Buffer.from(pems.cert) }], false);
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (err, boundPort) => (err ? reject(err) : resolve(boundPort))),
  );

  const handle: InProcessOmni = {
    endpoint: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    factoryUrl: factory.url,
    createProviderKey: async (id: string) => (await keys.createProviderKey(id)).keyString,
    store,
    access,
    keys,
    controllers,
    faults,
    factory,
    capabilities,
    callCounts: () => ({ ...counts }),
    onWriteCall: (listener) => {
      writeListeners.add(listener);
      return () => writeListeners.delete(listener);
    },
    onCall: (listener) => {
      callListeners.add(listener);
      return () => callListeners.delete(listener);
    },
    close: async () => {
      controllers.stop();
      for (const call of openCalls) {
        call.emit('error', toServiceError(new OmniError('unavailable', 'server shutting down')));
      }
      openCalls.clear();
      // Calls still in flight (a blocking TeardownAndDestroy, say) are cut, as a dying Omni would.
      server.forceShutdown();
      await factory.close();
    },
  };
  if (tlsCertificate !== undefined) handle.tlsCertificate = tlsCertificate;
  return handle;
}

/** The internal actor, for tests that want to read or write as Omni itself through the access layer. */
export { INTERNAL_ACTOR };

function bootAssetUrl(req: BootAssetURLRequest, factoryUrl: string) {
  if (req.schematicId === '') throw new OmniError('invalidArgument', 'schematic ID is required');
  if (req.talosVersion === '') throw new OmniError('invalidArgument', 'talos version is required');
  if (req.platform === '') throw new OmniError('invalidArgument', 'platform is required');
  if (req.architecture !== 'amd64' && req.architecture !== 'arm64') {
    throw new OmniError('invalidArgument', `unsupported architecture ${JSON.stringify(req.architecture)}`);
  }
  const version = normalizeVersion(req.talosVersion);
  const base = `${req.platform}-${req.architecture}${req.secureBoot ? '-secureboot' : ''}`;
  let path: string;
  switch (req.bootAssetKind) {
    case BootAssetURLRequest_BootAssetKind.ISO:
      path = `image/${req.schematicId}/${version}/${base}.iso`;
      break;
    case BootAssetURLRequest_BootAssetKind.DISK:
      if (req.format === '') throw new OmniError('invalidArgument', 'disk image format is required');
      path = `image/${req.schematicId}/${version}/${base}.${req.format}`;
      break;
    case BootAssetURLRequest_BootAssetKind.PXE:
      path = `pxe/${req.schematicId}/${version}/${base}`;
      break;
    default:
      throw new OmniError('invalidArgument', 'boot asset kind is required');
  }
  const url = new URL(path, `${factoryUrl}/`);
  return create(BootAssetURLResponseSchema, {
    url: url.toString(),
    headers: {},
    imageFactoryHost: url.host,
    storageKey: createHash('sha256').update(path).digest('hex'),
  });
}
