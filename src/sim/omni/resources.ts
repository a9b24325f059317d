// Names the in-process Omni shares with the real one: namespaces, resource types, well-known IDs, labels, finalizers.

export const NS = {
  infraProvider: 'infra-provider',
  infraProviderEphemeral: 'infra-provider-ephemeral',
  /** Prefix of a provider's private namespace, `infra-provider:<id>`. */
  providerPrefix: 'infra-provider:',
  default: 'default',
  ephemeral: 'ephemeral',
  meta: 'meta',
} as const;

export const TYPES = {
  machineRequest: 'MachineRequests.omni.sidero.dev',
  machineRequestStatus: 'MachineRequestStatuses.omni.sidero.dev',
  infraMachine: 'InfraMachines.omni.sidero.dev',
  infraMachineStatus: 'InfraMachineStatuses.omni.sidero.dev',
  infraProvider: 'InfraProviders.omni.sidero.dev',
  infraProviderStatus: 'InfraProviderStatuses.omni.sidero.dev',
  infraProviderHealthStatus: 'InfraProviderHealthStatuses.omni.sidero.dev',
  configPatchRequest: 'ConfigPatchRequests.omni.sidero.dev',
  bmcConfig: 'BMCConfigs.omni.sidero.dev',
  infraMachineRegistration: 'InfraMachineRegistrations.omni.sidero.dev',
  providerJoinConfig: 'ProviderJoinConfigs.omni.sidero.dev',
  siderolinkApiConfig: 'SiderolinkAPIConfigs.omni.sidero.dev',
  connectionParams: 'ConnectionParams.omni.sidero.dev',
  featuresConfig: 'FeaturesConfigs.omni.sidero.dev',
  machine: 'Machines.omni.sidero.dev',
  link: 'Links.omni.sidero.dev',
  sysVersion: 'SysVersions.system.sidero.dev',
  talosVersion: 'TalosVersions.omni.sidero.dev',
  talosExtensions: 'TalosExtensions.omni.sidero.dev',
  kubernetesVersion: 'KubernetesVersions.omni.sidero.dev',
  installationMedia: 'InstallationMedias.omni.sidero.dev',
  resourceDefinition: 'ResourceDefinitions.meta.cosi.dev',
  namespace: 'Namespaces.meta.cosi.dev',
} as const;

export const IDS = {
  siderolinkConfig: 'siderolink-config',
  featuresConfig: 'features-config',
  sysVersion: 'current',
} as const;

export const LABELS = {
  infraProviderId: 'omni.sidero.dev/infra-provider-id',
  machineRequest: 'omni.sidero.dev/machine-request',
  machineRequestSet: 'omni.sidero.dev/machine-request-set',
  infraId: 'omni.sidero.dev/infra-id',
  machine: 'omni.sidero.dev/machine',
  cluster: 'omni.sidero.dev/cluster',
} as const;

export const FINALIZERS = {
  machineRequestStatusCleanup: 'MachineRequestStatusCleanupController',
  configPatchRequest: 'ConfigPatchRequestController',
} as const;

/** Suffix every type in a provider's private namespace must carry: `.<id>.infraprovider.sidero.dev`. */
export const PRIVATE_TYPE_SUFFIX = '.infraprovider.sidero.dev';
