// The table of daemon settings: for each, its command-line flag, environment variable, YAML key, default and
// meaning. The loader, `--help`, `config print` and the docs tests all read this one table.

export type SettingKind = 'string' | 'boolean' | 'integer';

export interface SettingSpec {
  /** `section.key`, the same as the YAML path. */
  readonly key: SettingKey;
  readonly kind: SettingKind;
  /** Long flag name without dashes, if the setting has one. */
  readonly flag?: string;
  readonly env: string;
  /** Env var naming a file whose content is the value (Docker secrets). */
  readonly fileEnv?: string;
  /** Default value as text ('' = unset). */
  readonly default: string;
  /** Never printed or logged. */
  readonly secret?: boolean;
  readonly meaning: string;
}

export const SETTING_KEYS = [
  'omni.endpoint',
  'omni.serviceAccountKey',
  'omni.insecureSkipVerify',
  'omni.caFile',
  'proxmox.url',
  'proxmox.tokenID',
  'proxmox.tokenSecret',
  'proxmox.username',
  'proxmox.password',
  'proxmox.realm',
  'proxmox.insecureSkipVerify',
  'proxmox.caFile',
  'proxmox.fingerprint',
  'provider.id',
  'provider.name',
  'provider.description',
  'provider.concurrency',
  'provider.tasksPerNode',
  'provider.tasksPerStorage',
  'provider.shutdownTimeoutSeconds',
  'provider.hostname',
  'provider.healthListen',
  'provider.logLevel',
  'provider.heartbeatIntervalSeconds',
  // Housekeeping (src/ops/housekeeping.ts, docs/operations.md).
  'housekeeping.intervalSeconds',
  'housekeeping.removeOrphanVms',
  'housekeeping.orphanVmGraceSeconds',
  'housekeeping.removeUnusedIsos',
  'housekeeping.talosIsoMinAgeSeconds',
  'provider.leaseDurationSeconds',
  'provider.leaseRenewDeadlineSeconds',
  'provider.leaseRetryPeriodSeconds',
] as const;

export type SettingKey = (typeof SETTING_KEYS)[number];

export const HOSTNAME_MODES = ['none', 'request-id'] as const;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const SETTINGS: readonly SettingSpec[] = [
  {
    key: 'omni.endpoint',
    kind: 'string',
    flag: 'omni-api-endpoint',
    env: 'OMNI_ENDPOINT',
    default: '',
    meaning: 'Omni API URL, e.g. https://example.omni.siderolabs.io (only scheme, host and port are used).',
  },
  {
    key: 'omni.serviceAccountKey',
    kind: 'string',
    flag: 'omni-service-account-key',
    env: 'OMNI_SERVICE_ACCOUNT_KEY',
    fileEnv: 'OMNI_SERVICE_ACCOUNT_KEY_FILE',
    default: '',
    secret: true,
    meaning: 'Infra provider key printed by `omnictl infraprovider create <id>` (not a user service-account key).',
  },
  {
    key: 'omni.insecureSkipVerify',
    kind: 'boolean',
    flag: 'insecure-skip-verify',
    env: 'OMNI_INSECURE_SKIP_VERIFY',
    default: 'false',
    meaning: 'Do not verify the Omni TLS certificate.',
  },
  {
    key: 'omni.caFile',
    kind: 'string',
    flag: 'omni-ca-file',
    env: 'OMNI_CA_FILE',
    default: '',
    meaning: 'PEM file of a private CA to trust for Omni, in addition to the public CAs (NODE_EXTRA_CA_CERTS does not reach gRPC).',
  },
  {
    key: 'proxmox.url',
    kind: 'string',
    env: 'PROXMOX_URL',
    default: '',
    meaning: 'Proxmox VE API URL, e.g. https://pve1.example.com:8006/api2/json (the /api2/json suffix is optional).',
  },
  {
    key: 'proxmox.tokenID',
    kind: 'string',
    env: 'PROXMOX_TOKEN_ID',
    default: '',
    meaning: 'API token ID, user@realm!tokenname (recommended over username/password).',
  },
  {
    key: 'proxmox.tokenSecret',
    kind: 'string',
    env: 'PROXMOX_TOKEN_SECRET',
    fileEnv: 'PROXMOX_TOKEN_SECRET_FILE',
    default: '',
    secret: true,
    meaning: 'API token secret (the UUID shown once when the token is created).',
  },
  {
    key: 'proxmox.username',
    kind: 'string',
    env: 'PROXMOX_USERNAME',
    default: '',
    meaning: 'User for ticket login, `user` (with realm) or `user@realm`.',
  },
  {
    key: 'proxmox.password',
    kind: 'string',
    env: 'PROXMOX_PASSWORD',
    fileEnv: 'PROXMOX_PASSWORD_FILE',
    default: '',
    secret: true,
    meaning: 'Password for ticket login.',
  },
  {
    key: 'proxmox.realm',
    kind: 'string',
    env: 'PROXMOX_REALM',
    default: '',
    meaning: 'Realm for ticket login (pam, pve, ...) when username has no @realm.',
  },
  {
    key: 'proxmox.insecureSkipVerify',
    kind: 'boolean',
    env: 'PROXMOX_INSECURE_SKIP_VERIFY',
    default: 'false',
    meaning: 'Do not verify the Proxmox TLS certificate (prefer caFile or fingerprint).',
  },
  {
    key: 'proxmox.caFile',
    kind: 'string',
    env: 'PROXMOX_CA_FILE',
    default: '',
    meaning: 'PEM file of the CA to trust for Proxmox, e.g. a copy of /etc/pve/pve-root-ca.pem.',
  },
  {
    key: 'proxmox.fingerprint',
    kind: 'string',
    env: 'PROXMOX_FINGERPRINT',
    default: '',
    meaning: 'SHA-256 fingerprint of the Proxmox certificate to pin (AA:BB:..., colons optional).',
  },
  {
    key: 'provider.id',
    kind: 'string',
    flag: 'id',
    env: 'PROVIDER_ID',
    default: 'proxmox',
    meaning: 'Infra provider ID; must equal the name given to `omnictl infraprovider create`.',
  },
  {
    key: 'provider.name',
    kind: 'string',
    flag: 'provider-name',
    env: 'PROVIDER_NAME',
    default: 'Proxmox',
    meaning: 'Provider name shown in Omni.',
  },
  {
    key: 'provider.description',
    kind: 'string',
    flag: 'provider-description',
    env: 'PROVIDER_DESCRIPTION',
    default: 'Proxmox infrastructure provider',
    meaning: 'Provider description shown in Omni.',
  },
  {
    key: 'provider.concurrency',
    kind: 'integer',
    flag: 'concurrency',
    env: 'PROVIDER_CONCURRENCY',
    default: '64',
    meaning:
      'Machine requests worked on at once (1-1000): a safety valve; the load on Proxmox is bounded by provider.tasksPerNode and provider.tasksPerStorage.',
  },
  {
    key: 'provider.tasksPerNode',
    kind: 'integer',
    flag: 'tasks-per-node',
    env: 'PROVIDER_TASKS_PER_NODE',
    default: '4',
    meaning:
      "Proxmox tasks this provider runs at once on one node (1-64): VM create, seed upload, start, stop, destroy, seed removal. 4 is PVE's own default for bulk actions and the HA manager (datacenter.cfg max_workers).",
  },
  {
    key: 'provider.tasksPerStorage',
    kind: 'integer',
    flag: 'tasks-per-storage',
    env: 'PROVIDER_TASKS_PER_STORAGE',
    default: '4',
    meaning:
      'VM creates allocating disks on one storage, and ISO downloads to one storage, at once (1-64); a shared storage counts cluster-wide (PVE allocates on it under a cluster-wide lock).',
  },
  {
    key: 'provider.hostname',
    kind: 'string',
    flag: 'hostname',
    env: 'PROVIDER_HOSTNAME',
    default: 'none',
    meaning: 'Hostname given to new VMs via NoCloud: `none` (leave it to Talos/Omni) or `request-id` (the Go provider behaviour).',
  },
  {
    key: 'provider.healthListen',
    kind: 'string',
    flag: 'health-listen',
    env: 'PROVIDER_HEALTH_LISTEN',
    default: ':8080',
    meaning: 'Address of the /healthz, /readyz and /metrics endpoint, e.g. :8080 or 127.0.0.1:8080; `off` disables it.',
  },
  {
    key: 'provider.logLevel',
    kind: 'string',
    flag: 'log-level',
    env: 'LOG_LEVEL',
    default: 'info',
    meaning: `Log level: ${LOG_LEVELS.join(', ')}.`,
  },
  {
    key: 'provider.shutdownTimeoutSeconds',
    kind: 'integer',
    flag: 'shutdown-timeout-seconds',
    env: 'PROVIDER_SHUTDOWN_TIMEOUT_SECONDS',
    default: '0',
    meaning:
      'On teardown, how long a running VM gets to shut down cleanly (ACPI) before it is stopped hard (0-600). 0: stopped at once, as the Go provider does; the VM and its disks are deleted right after, and Omni has already removed the machine from its cluster.',
  },
  {
    key: 'provider.heartbeatIntervalSeconds',
    kind: 'integer',
    flag: 'heartbeat-interval-seconds',
    env: 'PROVIDER_HEARTBEAT_INTERVAL_SECONDS',
    default: '10',
    meaning: 'Seconds between heartbeats to Omni (1-25; Omni marks a provider disconnected after about 30 s of silence).',
  },
  // --- housekeeping (src/ops/housekeeping.ts) ---
  {
    key: 'housekeeping.intervalSeconds',
    kind: 'integer',
    env: 'HOUSEKEEPING_INTERVAL_SECONDS',
    default: '600',
    meaning: 'Seconds between housekeeping passes, which look for orphaned VMs and unused ISOs (60-86400; 0 turns housekeeping off).',
  },
  {
    key: 'housekeeping.removeOrphanVms',
    kind: 'boolean',
    env: 'HOUSEKEEPING_REMOVE_ORPHAN_VMS',
    default: 'false',
    meaning: 'Remove VMs with this provider\'s identity that no machine request and no private state account for (off: only reported).',
  },
  {
    key: 'housekeeping.orphanVmGraceSeconds',
    kind: 'integer',
    env: 'HOUSEKEEPING_ORPHAN_VM_GRACE_SECONDS',
    default: '86400',
    meaning: 'An orphaned VM is removed only once it has been orphaned this long, counted from when the running provider first saw it (600-2592000).',
  },
  {
    key: 'housekeeping.removeUnusedIsos',
    kind: 'boolean',
    env: 'HOUSEKEEPING_REMOVE_UNUSED_ISOS',
    default: 'false',
    meaning: 'Remove seed ISOs no VM uses and Talos ISOs no VM uses that are older than talosIsoMinAgeSeconds (off: only reported).',
  },
  {
    key: 'housekeeping.talosIsoMinAgeSeconds',
    kind: 'integer',
    env: 'HOUSEKEEPING_TALOS_ISO_MIN_AGE_SECONDS',
    default: '604800',
    meaning: 'A Talos ISO no VM uses is removed only when its file is at least this old (3600-31536000).',
  },
  {
    key: 'provider.leaseDurationSeconds',
    kind: 'integer',
    flag: 'lease-duration-seconds',
    env: 'PROVIDER_LEASE_DURATION_SECONDS',
    default: '15',
    meaning:
      'Leader lease: a standby takes over after seeing the lease unchanged this long (2-300; more than the renew deadline).',
  },
  {
    key: 'provider.leaseRenewDeadlineSeconds',
    kind: 'integer',
    flag: 'lease-renew-deadline-seconds',
    env: 'PROVIDER_LEASE_RENEW_DEADLINE_SECONDS',
    default: '10',
    meaning:
      'Leader lease: the holder stops acting when its last successful renewal was sent this long ago (less than the duration).',
  },
  {
    key: 'provider.leaseRetryPeriodSeconds',
    kind: 'integer',
    flag: 'lease-retry-period-seconds',
    env: 'PROVIDER_LEASE_RETRY_PERIOD_SECONDS',
    default: '2',
    meaning: 'Leader lease: how often the holder renews and a standby re-reads the lease (less than the renew deadline).',
  },
];

/** The config file path: flag `--config-file`, env PROVIDER_CONFIG_FILE. Not itself a YAML key. */
export const CONFIG_FILE_FLAG = 'config-file';
export const CONFIG_FILE_ENV = 'PROVIDER_CONFIG_FILE';

export function settingSpec(key: SettingKey): SettingSpec {
  const spec = SETTINGS.find((s) => s.key === key);
  if (!spec) throw new Error(`unknown setting ${key}`);
  return spec;
}

/** How to set a setting, for error messages: "--id / PROVIDER_ID / provider.id". */
export function describeSetting(key: SettingKey): string {
  const s = settingSpec(key);
  const parts = [];
  if (s.flag) parts.push(`--${s.flag}`);
  parts.push(s.fileEnv ? `${s.env} (or ${s.fileEnv})` : s.env);
  parts.push(`"${s.key}" in the config file`);
  return parts.join(' / ');
}

/** `--help` text listing every flag and the config file. */
export function daemonUsage(): string {
  const lines = [
    'Usage: omni-infra-provider-proxmox [flags]',
    '',
    'With no Omni endpoint and no Proxmox settings the daemon runs the built-in demo.',
    'Precedence: flag > environment variable > config file > default.',
    '',
    `  --${CONFIG_FILE_FLAG} PATH  (env ${CONFIG_FILE_ENV})  YAML config file (the Go provider's format is accepted)`,
  ];
  for (const s of SETTINGS) {
    if (!s.flag) continue;
    const value = s.kind === 'boolean' ? '' : ' VALUE';
    const def = s.default && s.kind !== 'boolean' ? ` [default ${s.default}]` : '';
    lines.push(`  --${s.flag}${value}  (env ${s.env})  ${s.meaning}${def}`);
  }
  lines.push('', 'Proxmox connection settings are set by environment variable or config file; see docs/configuration.md.');
  return `${lines.join('\n')}\n`;
}
