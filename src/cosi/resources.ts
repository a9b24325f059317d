// The COSI resource kinds the provider reads and writes (namespace, type string, spec message) and the codec
// between the wire envelope (cosi.resource.Resource) and typed resources with plain-object metadata.
import { create, fromBinary, toBinary, toJson, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import { stringify as yamlStringify } from 'yaml';
import { ResourceSchema, type Resource } from '../gen/cosi/v1alpha1/resource_pb.js';
import { ResourceDefinitionSpecSchema } from '../gen/cosi/v1alpha1/meta_pb.js';
import {
  InfraProviderHealthStatusSpecSchema,
  InfraProviderSpecSchema,
  InfraProviderStatusSpecSchema,
  MachineRegistrationSpecSchema,
  MachineRequestSpecSchema,
  MachineRequestStatusSpecSchema,
} from '../gen/omni/specs/infra_pb.js';
import { ConfigPatchSpecSchema, FeaturesConfigSpecSchema } from '../gen/omni/specs/omni_pb.js';
import {
  ConnectionParamsSpecSchema,
  ProviderJoinConfigSpecSchema,
  SiderolinkAPIConfigSpecSchema,
} from '../gen/omni/specs/siderolink_pb.js';
import { SysVersionSpecSchema } from '../gen/omni/specs/system_pb.js';
import { LeaseSpecSchema } from '../gen/proxmox/specs/lease_pb.js';
import { MachineSpecSchema } from '../gen/proxmox/specs/specs_pb.js';

/** One resource type: where it lives and which protobuf message its spec is. */
export interface ResourceKind<S extends DescMessage = DescMessage> {
  readonly namespace: string;
  readonly type: string;
  readonly spec: S;
}

export const NS_INFRA_PROVIDER = 'infra-provider';
export const NS_INFRA_PROVIDER_EPHEMERAL = 'infra-provider-ephemeral';
export const NS_DEFAULT = 'default';
export const NS_EPHEMERAL = 'ephemeral';
export const NS_META = 'meta';

/** Label keys Omni and providers use (all under omni.sidero.dev/). */
export const LABEL_INFRA_PROVIDER_ID = 'omni.sidero.dev/infra-provider-id';
export const LABEL_MACHINE_REQUEST = 'omni.sidero.dev/machine-request';
export const LABEL_MACHINE_REQUEST_SET = 'omni.sidero.dev/machine-request-set';
export const LABEL_INFRA_ID = 'omni.sidero.dev/infra-id';
/** Annotation on the private state: name of the last provisioning step that ran. */
export const ANNOTATION_STEP = 'infra.omni.sidero.dev/step';

/** Well-known singleton IDs. */
export const SIDEROLINK_CONFIG_ID = 'siderolink-config';
export const FEATURES_CONFIG_ID = 'features-config';
export const SYS_VERSION_ID = 'current';

function kind<S extends DescMessage>(namespace: string, type: string, spec: S): ResourceKind<S> {
  return { namespace, type, spec };
}

export const MachineRequestKind = kind(NS_INFRA_PROVIDER, 'MachineRequests.omni.sidero.dev', MachineRequestSpecSchema);
export const MachineRequestStatusKind = kind(
  NS_INFRA_PROVIDER,
  'MachineRequestStatuses.omni.sidero.dev',
  MachineRequestStatusSpecSchema,
);
export const InfraProviderKind = kind(NS_INFRA_PROVIDER, 'InfraProviders.omni.sidero.dev', InfraProviderSpecSchema);
export const InfraProviderStatusKind = kind(
  NS_INFRA_PROVIDER,
  'InfraProviderStatuses.omni.sidero.dev',
  InfraProviderStatusSpecSchema,
);
export const InfraProviderHealthStatusKind = kind(
  NS_INFRA_PROVIDER_EPHEMERAL,
  'InfraProviderHealthStatuses.omni.sidero.dev',
  InfraProviderHealthStatusSpecSchema,
);
export const ConfigPatchRequestKind = kind(NS_INFRA_PROVIDER, 'ConfigPatchRequests.omni.sidero.dev', ConfigPatchSpecSchema);
export const ProviderJoinConfigKind = kind(
  NS_INFRA_PROVIDER,
  'ProviderJoinConfigs.omni.sidero.dev',
  ProviderJoinConfigSpecSchema,
);
export const InfraMachineRegistrationKind = kind(
  NS_INFRA_PROVIDER,
  'InfraMachineRegistrations.omni.sidero.dev',
  MachineRegistrationSpecSchema,
);
export const SiderolinkAPIConfigKind = kind(NS_DEFAULT, 'SiderolinkAPIConfigs.omni.sidero.dev', SiderolinkAPIConfigSpecSchema);
/** Legacy (Omni < 1.0) join parameters. */
export const ConnectionParamsKind = kind(NS_DEFAULT, 'ConnectionParams.omni.sidero.dev', ConnectionParamsSpecSchema);
export const FeaturesConfigKind = kind(NS_DEFAULT, 'FeaturesConfigs.omni.sidero.dev', FeaturesConfigSpecSchema);
export const SysVersionKind = kind(NS_EPHEMERAL, 'SysVersions.system.sidero.dev', SysVersionSpecSchema);
/** IDs of resource definitions are the lower-cased type strings. */
export const ResourceDefinitionKind = kind(NS_META, 'ResourceDefinitions.meta.cosi.dev', ResourceDefinitionSpecSchema);

/** Namespace of a provider's private state. */
export function providerNamespace(providerId: string): string {
  return `infra-provider:${providerId}`;
}

/** The provider's private per-request state: `Machine.<id>.infraprovider.sidero.dev` in `infra-provider:<id>`. */
export function providerMachineKind(providerId: string): ResourceKind<typeof MachineSpecSchema> {
  return kind(providerNamespace(providerId), `Machine.${providerId}.infraprovider.sidero.dev`, MachineSpecSchema);
}

/**
 * The provider's leader lease: `Lease.<id>.infraprovider.sidero.dev` in `infra-provider:<id>` (one resource, ID
 * `leader`; src/omni/lease.ts). A type of its own: the private state's type is listed at start-up for dangling-state
 * clean-up, which must never see the lease.
 */
export function providerLeaseKind(providerId: string): ResourceKind<typeof LeaseSpecSchema> {
  return kind(providerNamespace(providerId), `Lease.${providerId}.infraprovider.sidero.dev`, LeaseSpecSchema);
}

/** Every fixed kind, by name (the private state kind depends on the provider ID: see providerMachineKind). */
export const resourceKinds = {
  MachineRequest: MachineRequestKind,
  MachineRequestStatus: MachineRequestStatusKind,
  InfraProvider: InfraProviderKind,
  InfraProviderStatus: InfraProviderStatusKind,
  InfraProviderHealthStatus: InfraProviderHealthStatusKind,
  ConfigPatchRequest: ConfigPatchRequestKind,
  ProviderJoinConfig: ProviderJoinConfigKind,
  InfraMachineRegistration: InfraMachineRegistrationKind,
  SiderolinkAPIConfig: SiderolinkAPIConfigKind,
  ConnectionParams: ConnectionParamsKind,
  FeaturesConfig: FeaturesConfigKind,
  SysVersion: SysVersionKind,
  ResourceDefinition: ResourceDefinitionKind,
} as const;

export type Phase = 'running' | 'tearingDown';

/** Version of a resource that was never stored. */
export const VERSION_UNDEFINED = 'undefined';

/** Resource metadata as plain data. `version` is the server's decimal counter, or "undefined" before Create. */
export interface ResourceMetadata {
  namespace: string;
  type: string;
  id: string;
  version: string;
  owner: string;
  phase: Phase;
  created?: Date | undefined;
  updated?: Date | undefined;
  finalizers: string[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** A resource with its spec decoded into the kind's protobuf message. */
export interface TypedResource<S extends DescMessage = DescMessage> {
  metadata: ResourceMetadata;
  spec: MessageShape<S>;
}

/**
 * A resource not yet stored: version "undefined", phase running, empty spec unless given, and `created` =
 * `updated` = now, as cosi-project/runtime's `resource.NewMetadata` stamps every new resource of a Go client. The
 * COSI server keeps the `updated` a Create carries (it stamps only `created`), so a Create without it would be
 * stored as updated at the Unix epoch.
 */
export function newResource<S extends DescMessage>(
  kind: ResourceKind<S>,
  id: string,
  spec?: MessageShape<S>,
  meta: Partial<Pick<ResourceMetadata, 'labels' | 'annotations' | 'finalizers' | 'created'>> = {},
): TypedResource<S> {
  const now = meta.created ?? new Date();
  return {
    metadata: {
      namespace: kind.namespace,
      type: kind.type,
      id,
      version: VERSION_UNDEFINED,
      owner: '',
      phase: 'running',
      created: now,
      updated: now,
      finalizers: [...(meta.finalizers ?? [])],
      labels: { ...(meta.labels ?? {}) },
      annotations: { ...(meta.annotations ?? {}) },
    },
    spec: spec ?? (create(kind.spec) as MessageShape<S>),
  };
}

/** Human-readable YAML of a spec (field names as in the .proto); never empty. */
export function specYaml<S extends DescMessage>(schema: S, spec: MessageShape<S>): string {
  const json = toJson(schema, spec, { useProtoFieldName: true });
  return yamlStringify(json ?? {});
}

/**
 * Wire envelope of a typed resource: metadata as given (version "undefined" for new resources, phase never
 * empty) and a spec with both proto_spec bytes and a non-empty yaml_spec.
 */
export function encodeResource<S extends DescMessage>(kind: ResourceKind<S>, resource: TypedResource<S>): Resource {
  const m = resource.metadata;
  if (m.version === '') throw new Error('resource version must be "undefined" or a decimal number, not empty');
  if (m.phase !== 'running' && m.phase !== 'tearingDown') throw new Error(`invalid resource phase ${JSON.stringify(m.phase)}`);
  return create(ResourceSchema, {
    metadata: {
      namespace: m.namespace,
      type: m.type,
      id: m.id,
      version: m.version,
      owner: m.owner,
      phase: m.phase,
      created: m.created ? timestampFromDate(m.created) : undefined,
      updated: m.updated ? timestampFromDate(m.updated) : undefined,
      finalizers: [...m.finalizers],
      labels: { ...m.labels },
      annotations: { ...m.annotations },
    },
    spec: { protoSpec: toBinary(kind.spec, resource.spec), yamlSpec: specYaml(kind.spec, resource.spec) },
  });
}

/** Typed resource from the wire envelope; the spec is decoded from proto_spec (unknown fields are kept). */
export function decodeResource<S extends DescMessage>(kind: ResourceKind<S>, resource: Resource): TypedResource<S> {
  const m = resource.metadata;
  if (!m) throw new Error(`resource of type ${kind.type} arrived without metadata`);
  const phase: Phase = m.phase === 'tearingDown' ? 'tearingDown' : 'running';
  return {
    metadata: {
      namespace: m.namespace,
      type: m.type,
      id: m.id,
      version: m.version,
      owner: m.owner,
      phase,
      created: m.created ? timestampDate(m.created) : undefined,
      updated: m.updated ? timestampDate(m.updated) : undefined,
      finalizers: [...m.finalizers],
      labels: { ...m.labels },
      annotations: { ...m.annotations },
    },
    spec: fromBinary(kind.spec, resource.spec?.protoSpec ?? new Uint8Array()),
  };
}

/** Deep copy of a typed resource (spec re-decoded so the copy shares nothing with the original). */
export function cloneResource<S extends DescMessage>(kind: ResourceKind<S>, resource: TypedResource<S>): TypedResource<S> {
  return {
    metadata: {
      ...resource.metadata,
      finalizers: [...resource.metadata.finalizers],
      labels: { ...resource.metadata.labels },
      annotations: { ...resource.metadata.annotations },
    },
    spec: fromBinary(kind.spec, toBinary(kind.spec, resource.spec)),
  };
}
