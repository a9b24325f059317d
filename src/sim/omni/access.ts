// Omni's authorization layer in front of the COSI store: what an infra-provider identity may read and write
// (namespaces, label scoping, read-only kinds, ID checks, MachineRequest validation) and the role rules for other kinds.
import { equals, fromBinary } from '@bufbuild/protobuf';
import { MachineRequestSpecSchema } from '../../gen/omni/specs/infra_pb.js';
import { roleAtLeast, type Caller, type Role } from './auth.js';
import { OmniError } from './errors.js';
import { LABELS, NS, PRIVATE_TYPE_SUFFIX, TYPES } from './resources.js';
import type {
  CosiStore,
  EventSink,
  KindWatchOptions,
  ListOptions,
  Phase,
  Resource,
  ResourceInput,
  ResourceWatchOptions,
  StoreEvent,
  WatchHandle,
} from './store.js';

interface ProviderKindRules {
  readOnlyForProviders?: boolean;
  checkId?: boolean;
  onlyAdminCanRead?: boolean;
}

const providerKinds = new Map<string, ProviderKindRules>([
  [TYPES.infraMachineRegistration, { readOnlyForProviders: true }],
  [TYPES.machineRequest, { readOnlyForProviders: true }],
  [TYPES.providerJoinConfig, { readOnlyForProviders: true }],
  [TYPES.machineRequestStatus, {}],
  [TYPES.infraMachine, { readOnlyForProviders: true }],
  [TYPES.infraMachineStatus, {}],
  [TYPES.infraProviderStatus, { checkId: true }],
  [TYPES.infraProviderHealthStatus, { checkId: true }],
  [TYPES.infraProvider, { checkId: true }],
  [TYPES.configPatchRequest, {}],
  [TYPES.bmcConfig, { onlyAdminCanRead: true, readOnlyForProviders: true }],
]);

function providerKindRules(namespace: string, type: string): ProviderKindRules | undefined {
  if (namespace.startsWith(NS.providerPrefix)) return {};
  return providerKinds.get(type);
}

/** Kinds a provider (role InfraProvider) may read in Omni's own namespaces. */
const readableWithInfraProviderRole = new Set<string>([TYPES.machine, TYPES.siderolinkApiConfig, TYPES.connectionParams]);
/** Kinds any validly signed caller may read. */
const readableWithSignature = new Set<string>([
  TYPES.namespace,
  TYPES.resourceDefinition,
  TYPES.featuresConfig,
  TYPES.talosExtensions,
  TYPES.talosVersion,
  TYPES.kubernetesVersion,
  TYPES.installationMedia,
  TYPES.sysVersion,
]);

type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'destroy';
const isRead = (verb: Verb): boolean => verb === 'get' || verb === 'list' || verb === 'watch';

function insufficientRole(role: Role): OmniError {
  return new OmniError('permissionDenied', `unauthorized: access denied: insufficient role: ${JSON.stringify(role)}`);
}

function requireRole(caller: Caller, wanted: Role): void {
  if (!roleAtLeast(caller.role, wanted)) throw insufficientRole(caller.role);
}

/** Management calls a provider makes need exactly one of these roles. */
export function checkManagementAccess(caller: Caller): void {
  if (caller.kind === 'internal') return;
  const allowed: Role[] = ['InfraProvider', 'Operator', 'Admin'];
  if (!allowed.includes(caller.role)) {
    throw new OmniError(
      'permissionDenied',
      `unauthorized: role ${JSON.stringify(caller.role)} is not one of the allowed roles [${allowed.join(' ')}]`,
    );
  }
}

const notFoundForProvider = (): OmniError => new OmniError('notFound', 'not found');

interface ProviderScope {
  /** Own provider ID when results must carry its label (shared namespaces); undefined when no scoping applies. */
  labelScope: string | undefined;
  rules: ProviderKindRules;
  /** The caller acts under the infra-provider rules (role exactly InfraProvider). */
  asProvider: boolean;
}

/** The Omni API as seen by a given caller: every call is checked, then served from the store. */
export class OmniAccess {
  constructor(private readonly store: CosiStore) {}

  private scope(caller: Caller, namespace: string, type: string, verb: Verb): ProviderScope {
    const rules = providerKindRules(namespace, type);
    if (caller.kind === 'internal') return { labelScope: undefined, rules: rules ?? {}, asProvider: false };
    if (!rules) {
      this.checkOmniKind(caller, type, verb);
      return { labelScope: undefined, rules: {}, asProvider: false };
    }
    requireRole(caller, 'InfraProvider');
    if (caller.role === 'InfraProvider') {
      const id = caller.infraProviderId ?? '';
      if (!this.store.find(NS.infraProvider, TYPES.infraProvider, id)) {
        throw new OmniError('permissionDenied', `infra provider with name ${JSON.stringify(id)} is not registered in the system`);
      }
      return { labelScope: this.checkNamespaceAndType(namespace, id, type) ? id : undefined, rules, asProvider: true };
    }
    if (!isRead(verb) && type !== TYPES.infraProvider && type !== TYPES.machineRequest) {
      throw new OmniError('permissionDenied', `users are not allowed to modify ${JSON.stringify(type)} resources`);
    }
    if (!isRead(verb) && type === TYPES.machineRequest && !roleAtLeast(caller.role, 'Operator')) {
      throw new OmniError('permissionDenied', `only operators and admins are allowed to modify ${JSON.stringify(type)} resources`);
    }
    if (rules.onlyAdminCanRead && caller.role !== 'Admin') {
      throw new OmniError('permissionDenied', `only admins are allowed to read ${JSON.stringify(type)} resources`);
    }
    return { labelScope: undefined, rules, asProvider: false };
  }

  /** Returns true when results in this namespace are scoped by the provider label. */
  private checkNamespaceAndType(namespace: string, providerId: string, type: string): boolean {
    if (namespace === NS.infraProvider || namespace === NS.infraProviderEphemeral) return true;
    if (type === TYPES.link) return true;
    const own = `${NS.providerPrefix}${providerId}`;
    if (namespace === own) {
      const suffix = `.${providerId}${PRIVATE_TYPE_SUFFIX}`;
      if (!type.endsWith(suffix)) {
        throw new OmniError('invalidArgument', `resources in namespace ${JSON.stringify(namespace)} must have a type suffix ${JSON.stringify(suffix)}`);
      }
      return false;
    }
    throw new OmniError(
      'permissionDenied',
      `namespace not allowed, must be one of: ${NS.infraProvider}, ${NS.infraProviderEphemeral}, ${own}`,
    );
  }

  /** Role rules for Omni's own kinds (default/meta/ephemeral namespaces). */
  private checkOmniKind(caller: Caller, type: string, verb: Verb): void {
    if (readableWithInfraProviderRole.has(type)) {
      requireRole(caller, 'InfraProvider');
    } else if (readableWithSignature.has(type)) {
      // any valid signature will do
    } else if (caller.role !== 'Admin') {
      throw new OmniError('permissionDenied', 'no access is permitted');
    } else {
      return;
    }
    if (!isRead(verb)) throw new OmniError('permissionDenied', 'only read access is permitted');
  }

  private static carries(res: Resource | undefined, providerId: string): boolean {
    return res?.metadata.labels[LABELS.infraProviderId] === providerId;
  }

  get(caller: Caller, namespace: string, type: string, id: string, opts: { stale?: boolean } = {}): Resource {
    const scope = this.scope(caller, namespace, type, 'get');
    const res = opts.stale ? this.store.getStale(namespace, type, id) : this.store.get(namespace, type, id);
    if (scope.labelScope !== undefined && !OmniAccess.carries(res, scope.labelScope)) throw notFoundForProvider();
    return res;
  }

  list(caller: Caller, namespace: string, type: string, opts: ListOptions = {}): Resource[] {
    const scope = this.scope(caller, namespace, type, 'list');
    const items = this.store.list(namespace, type, opts);
    const providerId = scope.labelScope;
    return providerId === undefined ? items : items.filter((r) => OmniAccess.carries(r, providerId));
  }

  create(caller: Caller, input: ResourceInput, opts: { owner?: string } = {}): Resource {
    const { namespace, type, id } = input.metadata;
    const scope = this.scope(caller, namespace, type, 'create');
    let toStore = input;
    if (scope.asProvider && scope.labelScope !== undefined) {
      if (scope.rules.readOnlyForProviders) {
        throw new OmniError('permissionDenied', `infra providers are not allowed to create ${JSON.stringify(type)} resources`);
      }
      if (scope.rules.checkId && id !== scope.labelScope) {
        throw new OmniError('invalidArgument', `resource ID must match the infra provider ID ${JSON.stringify(scope.labelScope)}`);
      }
      toStore = withProviderLabel(input, scope.labelScope);
    }
    if (caller.kind !== 'internal') validateCreate(toStore);
    return this.store.create(toStore, opts);
  }

  update(caller: Caller, input: ResourceInput, opts: { owner?: string; expectedPhase?: Phase } = {}): Resource {
    const { namespace, type, id } = input.metadata;
    const scope = this.scope(caller, namespace, type, 'update');
    const old = this.store.get(namespace, type, id);
    let toStore = input;
    if (scope.asProvider && scope.labelScope !== undefined) {
      if (scope.rules.readOnlyForProviders && !onlyFinalizersDiffer(old, input)) {
        throw new OmniError(
          'permissionDenied',
          `infra providers are not allowed to update ${JSON.stringify(type)} resources other than setting finalizers`,
        );
      }
      if (!OmniAccess.carries(old, scope.labelScope)) throw notFoundForProvider();
      toStore = withProviderLabel(input, scope.labelScope);
    }
    if (caller.kind !== 'internal') validateUpdate(old, toStore);
    return this.store.update(toStore, opts);
  }

  destroy(caller: Caller, namespace: string, type: string, id: string, opts: { owner?: string } = {}): void {
    const scope = this.scope(caller, namespace, type, 'destroy');
    const current = this.store.get(namespace, type, id);
    if (scope.asProvider && scope.labelScope !== undefined) {
      if (scope.rules.readOnlyForProviders) {
        throw new OmniError('permissionDenied', `infra providers are not allowed to destroy ${JSON.stringify(type)} resources`);
      }
      if (!OmniAccess.carries(current, scope.labelScope)) throw notFoundForProvider();
    }
    this.store.destroy(namespace, type, id, opts);
  }

  /** Teardown as Omni's wrapped state does it: Get, then Update to tearingDown (both through these rules). */
  teardown(caller: Caller, namespace: string, type: string, id: string, opts: { owner?: string } = {}): boolean {
    let current = this.get(caller, namespace, type, id);
    if (current.metadata.phase !== 'tearingDown') {
      current.metadata.phase = 'tearingDown';
      current = this.update(caller, current, { owner: opts.owner ?? '' });
    }
    return current.metadata.finalizers.length === 0;
  }

  async teardownAndDestroy(
    caller: Caller,
    namespace: string,
    type: string,
    id: string,
    opts: { owner?: string; signal?: AbortSignal } = {},
  ): Promise<void> {
    if (!this.teardown(caller, namespace, type, id, opts)) {
      const destroyed = await new Promise<boolean>((resolve, reject) => {
        const handle = this.watch(caller, namespace, type, id, {}, (events) => {
          for (const e of events) {
            if (e.type === 'destroyed' || ((e.type === 'created' || e.type === 'updated') && e.resource?.metadata.finalizers.length === 0)) {
              handle.cancel();
              resolve(e.type === 'destroyed');
              return;
            }
          }
        });
        opts.signal?.addEventListener('abort', () => {
          handle.cancel();
          reject(new OmniError('cancelled', 'context canceled'));
        });
      });
      if (destroyed) return;
    }
    this.destroy(caller, namespace, type, id, opts);
  }

  /**
   * Kind watch. For a provider in a shared namespace every batch is filtered by the provider label; a batch can
   * therefore arrive empty (as from the real Omni).
   */
  watchKind(caller: Caller, namespace: string, type: string, opts: KindWatchOptions, sink: EventSink): WatchHandle {
    const scope = this.scope(caller, namespace, type, 'watch');
    const providerId = scope.labelScope;
    if (providerId === undefined) return this.store.watchKind(namespace, type, opts, sink);
    return this.store.watchKind(namespace, type, opts, (events) => sink(events.filter((e) => shouldSend(e, providerId))));
  }

  watch(caller: Caller, namespace: string, type: string, id: string, opts: ResourceWatchOptions, sink: EventSink): WatchHandle {
    const scope = this.scope(caller, namespace, type, 'watch');
    const providerId = scope.labelScope;
    if (providerId === undefined) return this.store.watch(namespace, type, id, opts, sink);
    return this.store.watch(namespace, type, id, opts, (events) => {
      const kept = events.filter((e) => shouldSend(e, providerId));
      if (kept.length > 0) sink(kept);
    });
  }
}

function shouldSend(event: StoreEvent, providerId: string): boolean {
  if (!event.resource) return true;
  if (event.type === 'noop' || event.type === 'bootstrapped' || event.type === 'errored') return true;
  return event.resource.metadata.labels[LABELS.infraProviderId] === providerId;
}

function withProviderLabel(input: ResourceInput, providerId: string): ResourceInput {
  return {
    metadata: { ...input.metadata, labels: { ...(input.metadata.labels ?? {}), [LABELS.infraProviderId]: providerId } },
    spec: input.spec,
  };
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/** Omni's "only finalizers (and version) may change" comparison for kinds that are read-only to providers. */
function onlyFinalizersDiffer(old: Resource, next: ResourceInput): boolean {
  const a = old.metadata;
  const b = next.metadata;
  if (a.namespace !== b.namespace || a.type !== b.type || a.id !== b.id) return false;
  if (a.phase !== (b.phase ?? 'running') || a.owner !== (b.owner ?? '')) return false;
  if (!sameRecord(a.labels, b.labels ?? {}) || !sameRecord(a.annotations, b.annotations ?? {})) return false;
  return specsEqual(a.type, old.spec.protoSpec, next.spec.protoSpec);
}

function specsEqual(type: string, a: Uint8Array, b: Uint8Array): boolean {
  if (type === TYPES.machineRequest) {
    try {
      return equals(MachineRequestSpecSchema, fromBinary(MachineRequestSpecSchema, a), fromBinary(MachineRequestSpecSchema, b));
    } catch {
      return false;
    }
  }
  return Buffer.from(a).equals(Buffer.from(b));
}

/** blang/semver ParseTolerant: optional `v`, missing minor/patch filled in, pre-release and build allowed. */
const tolerantSemver = /^v?(0|[1-9]\d*)(\.(0|[1-9]\d*)){0,2}(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

function validateCreate(input: ResourceInput): void {
  if (input.metadata.type !== TYPES.machineRequest || input.metadata.namespace !== NS.infraProvider) return;
  let talosVersion = '';
  try {
    talosVersion = fromBinary(MachineRequestSpecSchema, input.spec.protoSpec).talosVersion;
  } catch {
    talosVersion = '';
  }
  if (!tolerantSemver.test(talosVersion.trim())) {
    throw new OmniError(
      'invalidArgument',
      `failed to validate: 1 error occurred:\n\t* invalid talos version format: ${JSON.stringify(talosVersion)}\n\n`,
    );
  }
}

function validateUpdate(old: Resource, next: ResourceInput): void {
  if (next.metadata.type !== TYPES.machineRequest || next.metadata.namespace !== NS.infraProvider) return;
  if (!specsEqual(TYPES.machineRequest, old.spec.protoSpec, next.spec.protoSpec)) {
    throw new OmniError('invalidArgument', 'failed to validate: machine request spec is immutable');
  }
}
