// Scripted stand-ins for Omni's own controllers (the internal actor, no auth): seeding the provider's singletons,
// creating/tearing down MachineRequests, holding cleanup finalizers, and machines joining with a join token.
import { create, toBinary, toJson, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { stringify as yamlStringify } from 'yaml';
import { NamespaceSpecSchema, ResourceDefinitionSpecSchema } from '../../gen/cosi/v1alpha1/meta_pb.js';
import {
  InfraProviderHealthStatusSpecSchema,
  InfraProviderSpecSchema,
  MachineRegistrationSpecSchema,
  MachineRequestSpecSchema,
} from '../../gen/omni/specs/infra_pb.js';
import { FeaturesConfigSpecSchema } from '../../gen/omni/specs/omni_pb.js';
import { ConnectionParamsSpecSchema, ProviderJoinConfigSpecSchema, SiderolinkAPIConfigSpecSchema } from '../../gen/omni/specs/siderolink_pb.js';
import { SysVersionSpecSchema } from '../../gen/omni/specs/system_pb.js';
import { fromBinary } from '@bufbuild/protobuf';
import { silentLogger, type Logger } from '../../log.js';
import { OmniError } from './errors.js';
import type { FaultInjector } from './faults.js';
import { joinTokenValidFor, parseJoinToken } from './jointoken.js';
import { FINALIZERS, IDS, LABELS, NS, TYPES } from './resources.js';
import type { CosiStore, Resource, ResourceSpec, WatchHandle } from './store.js';
import { SeededRandom } from '../rng.js';

/** Encodes a spec message the way Omni stores it: protobuf bytes plus a YAML rendering. */
export function encodeSpec<S extends DescMessage>(schema: S, init: MessageInitShape<S>): ResourceSpec {
  const message = create(schema, init);
  const json = toJson(schema, message, { useProtoFieldName: true });
  return { protoSpec: toBinary(schema, message), yamlSpec: yamlStringify(json) };
}

const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export interface SiderolinkSettings {
  /** SiderolinkAPIConfig.machine_api_advertised_url. */
  apiUrl: string;
  eventsPort: number;
  logsPort: number;
  wireguardEndpoint: string;
}

export interface OmniControllersOptions {
  providerId: string;
  store: CosiStore;
  faults?: FaultInjector;
  now?: () => Date;
  seed?: number;
  logger?: Logger;
  siderolink?: Partial<SiderolinkSettings>;
  /** Omni < 1.0: no ProviderJoinConfigs resource definition (providers fall back to ConnectionParams and v1 tokens). */
  legacy?: boolean;
  /** FeaturesConfig.image_factory_base_url (the fake factory's URL). */
  imageFactoryBaseUrl?: string;
  backendVersion?: string;
}

/** The resource definitions Omni registers that matter to a provider (IDs are the lower-cased type names). */
const DEFINED_TYPES: Array<{ type: string; namespace: string }> = [
  { type: TYPES.machineRequest, namespace: NS.infraProvider },
  { type: TYPES.machineRequestStatus, namespace: NS.infraProvider },
  { type: TYPES.infraProvider, namespace: NS.infraProvider },
  { type: TYPES.infraProviderStatus, namespace: NS.infraProvider },
  { type: TYPES.infraProviderHealthStatus, namespace: NS.infraProviderEphemeral },
  { type: TYPES.configPatchRequest, namespace: NS.infraProvider },
  { type: TYPES.infraMachineRegistration, namespace: NS.infraProvider },
  { type: TYPES.providerJoinConfig, namespace: NS.infraProvider },
  { type: TYPES.siderolinkApiConfig, namespace: NS.default },
  { type: TYPES.connectionParams, namespace: NS.default },
  { type: TYPES.featuresConfig, namespace: NS.default },
  { type: TYPES.machine, namespace: NS.default },
  { type: TYPES.sysVersion, namespace: NS.ephemeral },
];

/** How long after the last heartbeat Omni still shows a provider as connected. */
export const CONNECTED_WINDOW_MS = 31_000;

export class OmniControllers {
  readonly providerId: string;
  /** The provider's plain join token (ProviderJoinConfig.join_token); base62 of 32 random bytes in Omni. */
  readonly providerJoinToken: string;
  /** Omni's default join token (what v1/plain tokens are checked against; ConnectionParams.join_token). */
  readonly defaultJoinToken: string;
  readonly legacy: boolean;
  private readonly store: CosiStore;
  private readonly faults: FaultInjector | undefined;
  private readonly now: () => Date;
  private readonly random: SeededRandom;
  private readonly logger: Logger;
  private readonly siderolink: SiderolinkSettings;
  private readonly opts: OmniControllersOptions;
  private readonly watches: WatchHandle[] = [];

  constructor(opts: OmniControllersOptions) {
    this.opts = opts;
    this.providerId = opts.providerId;
    this.store = opts.store;
    this.faults = opts.faults;
    this.now = opts.now ?? (() => new Date());
    this.random = new SeededRandom(opts.seed ?? 1);
    this.logger = opts.logger ?? silentLogger;
    this.legacy = opts.legacy ?? false;
    this.providerJoinToken = this.random.pick(BASE62, 43);
    this.defaultJoinToken = this.random.pick(BASE62, 43);
    this.siderolink = {
      apiUrl: opts.siderolink?.apiUrl ?? 'https://127.0.0.1:8099',
      eventsPort: opts.siderolink?.eventsPort ?? 8091,
      logsPort: opts.siderolink?.logsPort ?? 8092,
      wireguardEndpoint: opts.siderolink?.wireguardEndpoint ?? '127.0.0.1:50180',
    };
  }

  private put(namespace: string, type: string, id: string, spec: ResourceSpec, labels: Record<string, string> = {}): Resource {
    const existing = this.store.find(namespace, type, id);
    if (!existing) return this.store.create({ metadata: { namespace, type, id, labels }, spec }, { owner: '' });
    existing.spec = spec;
    existing.metadata.labels = { ...existing.metadata.labels, ...labels };
    return this.store.update(existing, { owner: existing.metadata.owner });
  }

  /** Creates what Omni has in place once an admin registered provider P (idempotent). */
  seed(): void {
    const p = this.providerId;
    for (const ns of [NS.infraProvider, NS.infraProviderEphemeral, `${NS.providerPrefix}${p}`, NS.default, NS.ephemeral, NS.meta]) {
      this.put(NS.meta, TYPES.namespace, ns, encodeSpec(NamespaceSpecSchema, { description: `${ns} namespace` }));
    }
    for (const def of DEFINED_TYPES) {
      if (this.legacy && def.type === TYPES.providerJoinConfig) continue;
      this.put(
        NS.meta,
        TYPES.resourceDefinition,
        def.type.toLowerCase(),
        encodeSpec(ResourceDefinitionSpecSchema, {
          resourceType: def.type,
          displayType: def.type.split('.')[0] ?? def.type,
          defaultNamespace: def.namespace,
        }),
      );
    }
    this.registerInfraProvider();
    const siderolinkUrl = this.siderolink.apiUrl;
    if (!this.legacy) {
      this.put(
        NS.infraProvider,
        TYPES.providerJoinConfig,
        p,
        encodeSpec(ProviderJoinConfigSpecSchema, { joinToken: this.providerJoinToken, config: { kernelArgs: [], config: '' } }),
        { [LABELS.infraProviderId]: p },
      );
      this.put(
        NS.default,
        TYPES.siderolinkApiConfig,
        IDS.siderolinkConfig,
        encodeSpec(SiderolinkAPIConfigSpecSchema, {
          machineApiAdvertisedUrl: siderolinkUrl,
          wireguardAdvertisedEndpoint: this.siderolink.wireguardEndpoint,
          enforceGrpcTunnel: false,
          eventsPort: this.siderolink.eventsPort,
          logsPort: this.siderolink.logsPort,
        }),
      );
    }
    this.put(
      NS.default,
      TYPES.connectionParams,
      IDS.siderolinkConfig,
      encodeSpec(ConnectionParamsSpecSchema, {
        args: '',
        apiEndpoint: siderolinkUrl,
        wireguardEndpoint: this.siderolink.wireguardEndpoint,
        joinToken: this.defaultJoinToken,
        useGrpcTunnel: false,
        eventsPort: this.siderolink.eventsPort,
        logsPort: this.siderolink.logsPort,
      }),
    );
    this.put(
      NS.default,
      TYPES.featuresConfig,
      IDS.featuresConfig,
      encodeSpec(FeaturesConfigSpecSchema, { imageFactoryBaseUrl: this.opts.imageFactoryBaseUrl ?? 'https://factory.talos.dev' }),
    );
    this.put(
      NS.ephemeral,
      TYPES.sysVersion,
      IDS.sysVersion,
      encodeSpec(SysVersionSpecSchema, { backendVersion: this.opts.backendVersion ?? '1.10.4', instanceName: 'in-process', backendApiVersion: 1 }),
    );
  }

  /**
   * (Re)writes InfraProviders/P. `label: false` writes it as `omnictl infraprovider create P` leaves it in a real
   * Omni (seen on v1.10): without the `omni.sidero.dev/infra-provider-id` label. Omni hides unlabelled resources of
   * the shared namespaces from provider keys, so the provider's own Get of it then answers NOT_FOUND while all its
   * calls are still authorised (the registration check looks the resource up internally). `seed()` writes it with
   * the label (the default here), which older tests read back as the provider.
   */
  registerInfraProvider(opts: { label?: boolean } = {}): Resource {
    const p = this.providerId;
    const labels: Record<string, string> = (opts.label ?? true) ? { [LABELS.infraProviderId]: p } : {};
    const existing = this.store.find(NS.infraProvider, TYPES.infraProvider, p);
    if (!existing) {
      return this.store.create(
        { metadata: { namespace: NS.infraProvider, type: TYPES.infraProvider, id: p, labels }, spec: encodeSpec(InfraProviderSpecSchema, {}) },
        { owner: '' },
      );
    }
    existing.metadata.labels = labels;
    return this.store.update(existing, { owner: existing.metadata.owner });
  }

  /**
   * Deletes InfraProviders/P (`omnictl infraprovider delete`): every call with P's key is then refused with
   * PERMISSION_DENIED `infra provider with name "P" is not registered in the system`. `seed()` registers it again.
   */
  unregisterInfraProvider(): void {
    const existing = this.store.find(NS.infraProvider, TYPES.infraProvider, this.providerId);
    if (existing) this.store.destroy(NS.infraProvider, TYPES.infraProvider, this.providerId, { owner: existing.metadata.owner });
  }

  // --- machine requests -------------------------------------------------------------------------------------------

  /** What Omni's MachineRequestSetStatusController does when a machine set asks provider P for a machine. */
  createMachineRequest(setId: string, spec: MessageInitShape<typeof MachineRequestSpecSchema> = { talosVersion: 'v1.9.5' }, id?: string): Resource {
    const requestId = id ?? `${setId}-${this.random.pick(LOWER_ALNUM, 6)}`;
    const res = this.store.create(
      {
        metadata: {
          namespace: NS.infraProvider,
          type: TYPES.machineRequest,
          id: requestId,
          labels: { [LABELS.infraProviderId]: this.providerId, [LABELS.machineRequestSet]: setId },
        },
        spec: encodeSpec(MachineRequestSpecSchema, spec),
      },
      { owner: '' },
    );
    this.logger.debug({ request: requestId }, 'machine request created');
    return res;
  }

  machineRequest(id: string): Resource | undefined {
    return this.store.find(NS.infraProvider, TYPES.machineRequest, id);
  }

  /** Omni's scale-down: tear the request down (owner ""), wait until finalizers are gone, destroy it. */
  async deleteMachineRequest(id: string, signal?: AbortSignal): Promise<void> {
    const opts: { owner: string; signal?: AbortSignal } = { owner: '' };
    if (signal) opts.signal = signal;
    await this.store.teardownAndDestroy(NS.infraProvider, TYPES.machineRequest, id, opts);
  }

  // --- finalizers Omni holds ----------------------------------------------------------------------------------------

  /**
   * Puts `MachineRequestStatusCleanupController` on every MachineRequestStatus that appears (as Omni does) until
   * `releaseMachineRequestStatus` drops it. With `autoRelease`, it is dropped as soon as the status is torn down.
   */
  holdMachineRequestStatuses(opts: { autoRelease?: boolean } = {}): void {
    this.holdFinalizer(TYPES.machineRequestStatus, FINALIZERS.machineRequestStatusCleanup, opts.autoRelease ?? false);
  }

  /** Omni's cleanup finished for request `id`: drop its finalizer from the MachineRequestStatus. */
  releaseMachineRequestStatus(id: string): void {
    if (!this.store.find(NS.infraProvider, TYPES.machineRequestStatus, id)) return;
    this.store.removeFinalizer(NS.infraProvider, TYPES.machineRequestStatus, id, FINALIZERS.machineRequestStatusCleanup);
  }

  /** Holds `ConfigPatchRequestController` on every ConfigPatchRequest until it is torn down (then releases it). */
  holdConfigPatchRequests(): void {
    this.holdFinalizer(TYPES.configPatchRequest, FINALIZERS.configPatchRequest, true);
  }

  /** Adds `finalizer` to every new resource of `type`; with `autoRelease`, removes it once the resource tears down. */
  private holdFinalizer(type: string, finalizer: string, autoRelease: boolean): void {
    const handle = this.store.watchKind(NS.infraProvider, type, { bootstrapContents: true }, (events) => {
      for (const e of events) {
        const res = e.resource;
        if (!res || (e.type !== 'created' && e.type !== 'updated')) continue;
        const held = res.metadata.finalizers.includes(finalizer);
        try {
          if (res.metadata.phase === 'running' && !held && e.type === 'created') {
            this.store.addFinalizer(NS.infraProvider, type, res.metadata.id, finalizer);
          } else if (res.metadata.phase === 'tearingDown' && held && autoRelease) {
            this.store.removeFinalizer(NS.infraProvider, type, res.metadata.id, finalizer);
          }
        } catch (err) {
          this.logger.debug({ err: (err as Error).message, type }, 'finalizer change skipped');
        }
      }
    });
    this.watches.push(handle);
  }

  // --- machines joining --------------------------------------------------------------------------------------------

  /**
   * A machine with SMBIOS UUID `uuid` connects over SideroLink presenting `token`. Omni checks it (v2: HMAC
   * with the provider's join token named in the extra data; v1/plain: the default join token) and, for provider
   * tokens, records an InfraMachineRegistration labelled with the token's extra data. Invalid → PERMISSION_DENIED.
   */
  machineJoins(uuid: string, token: string): Resource {
    let parsed;
    try {
      parsed = parseJoinToken(token);
    } catch (err) {
      throw new OmniError('permissionDenied', `invalid join token ${(err as Error).message}`);
    }
    let valid = false;
    const providerId = parsed.extraData?.[LABELS.infraProviderId];
    if (parsed.version === '2' && providerId !== undefined) {
      const config = this.store.find(NS.infraProvider, TYPES.providerJoinConfig, providerId);
      if (config) {
        const joinToken = fromBinary(ProviderJoinConfigSpecSchema, config.spec.protoSpec).joinToken;
        valid = joinTokenValidFor(parsed, joinToken);
      }
    } else {
      valid = joinTokenValidFor(parsed, this.defaultJoinToken);
    }
    if (!valid) throw new OmniError('permissionDenied', 'unauthorized');

    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(parsed.extraData ?? {})) {
      if (k === LABELS.infraProviderId || k === LABELS.machineRequest) labels[k] = v;
    }
    if (labels[LABELS.infraProviderId] === undefined) {
      throw new OmniError('invalidArgument', 'the join token does not name an infra provider');
    }
    return this.put(NS.infraProvider, TYPES.infraMachineRegistration, uuid, encodeSpec(MachineRegistrationSpecSchema, {}), labels);
  }

  // --- provider health ---------------------------------------------------------------------------------------------

  /** Last heartbeat of the provider, if it wrote one. */
  lastHeartbeat(): Date | undefined {
    const res = this.store.find(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, this.providerId);
    if (!res) return undefined;
    const ts = fromBinary(InfraProviderHealthStatusSpecSchema, res.spec.protoSpec).lastHeartbeatTimestamp;
    return ts ? timestampDate(ts) : undefined;
  }

  /** What Omni's UI shows: connected when the last heartbeat is younger than 31 s. */
  connected(): boolean {
    const beat = this.lastHeartbeat();
    return beat !== undefined && this.now().getTime() - beat.getTime() < CONNECTED_WINDOW_MS;
  }

  // --- faults ------------------------------------------------------------------------------------------------------

  /** The API answers UNAVAILABLE for `ms` (until `restoreService()` if omitted); open watches are cut. */
  makeUnavailable(ms?: number): void {
    this.requireFaults().makeUnavailable(ms);
  }

  restoreService(): void {
    this.requireFaults().restore();
  }

  /** Ends every open watch stream mid-stream with UNAVAILABLE; returns how many were cut. */
  cutWatchStreams(): number {
    return this.requireFaults().cutWatches();
  }

  private requireFaults(): FaultInjector {
    if (!this.faults) throw new Error('no fault injector wired to these controllers');
    return this.faults;
  }

  stop(): void {
    for (const w of this.watches.splice(0)) w.cancel();
  }
}
