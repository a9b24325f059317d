// Daemon configuration from flags, environment and the YAML config file (flag > env > file > default), validated
// into a typed DaemonConfig: `demo` when nothing is configured, `live` when Omni and Proxmox are fully configured.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { YAMLParseError, parse as parseYaml } from 'yaml';
import type { PveCredentials } from '../proxmox/auth.js';
import type { PveTlsOptions } from '../proxmox/tls.js';
import { type ListenAddress, ListenAddressError, parseListenAddress } from '../ops/listen.js';
import type { HousekeepingSettings } from '../ops/housekeeping.js';
import {
  CONFIG_FILE_ENV,
  CONFIG_FILE_FLAG,
  HOSTNAME_MODES,
  LOG_LEVELS,
  SETTINGS,
  type SettingKey,
  type SettingSpec,
  describeSetting,
  settingSpec,
} from './settings.js';

export type SettingSource = 'flag' | 'env' | 'file' | 'default';
export type HostnameMode = (typeof HOSTNAME_MODES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Reads a whole text file (config file, `*_FILE` secrets, CA file). Throws like fs.readFileSync. */
export type ReadTextFile = (path: string) => string;

export interface ProviderSettings {
  id: string;
  name: string;
  description: string;
  concurrency: number;
  /** Proxmox tasks at once per node (TaskSlots). */
  tasksPerNode: number;
  /** VM creates / ISO downloads at once per storage (TaskSlots). */
  tasksPerStorage: number;
  /** Teardown: seconds of ACPI shutdown before a hard stop; 0 = hard stop at once. */
  shutdownTimeoutSeconds: number;
  hostname: HostnameMode;
  /** null = the ops endpoint is off. */
  healthListen: ListenAddress | null;
  logLevel: LogLevel;
  heartbeatIntervalSeconds: number;
  /** Leader lease timing (src/omni/lease.ts): retry period < renew deadline < duration. */
  leaseDurationSeconds: number;
  leaseRenewDeadlineSeconds: number;
  leaseRetryPeriodSeconds: number;
}

export interface OmniSettings {
  endpoint: string;
  serviceAccountKey: string;
  /** The identity written into the key (`infra-provider:<id>` or `<id>`); not secret. */
  serviceAccountName: string;
  insecureSkipVerify: boolean;
  /** PEM file of extra CA certificates to trust for Omni (checked at load: readable, holds a certificate). */
  caFile?: string;
}

/** Shaped like the matching fields of PveClientOptions. */
export interface ProxmoxSettings {
  url: string;
  auth: PveCredentials;
  tls: PveTlsOptions;
}

interface CommonConfig {
  provider: ProviderSettings;
  housekeeping: HousekeepingSettings;
  /** Path of the config file read, if any. */
  configFile: string | null;
  /** Where each setting's value came from. */
  sources: Record<SettingKey, SettingSource>;
  /** Things worth logging at start-up (never containing secret values). */
  warnings: string[];
}

export interface DemoConfig extends CommonConfig {
  mode: 'demo';
}

export interface LiveConfig extends CommonConfig {
  mode: 'live';
  omni: OmniSettings;
  proxmox: ProxmoxSettings;
}

export type DaemonConfig = DemoConfig | LiveConfig;

/** The configuration cannot be used; `problems` lists every issue found, each saying what to change. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  /** Exit status for the CLI: a usage/configuration error. */
  readonly exitCode = 2;
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(
      problems.length === 1
        ? `invalid configuration: ${problems[0]}`
        : `invalid configuration (${problems.length} problems): ${problems.map((p, i) => `(${i + 1}) ${p}`).join(' ')}`,
    );
    this.problems = problems;
  }
}

const defaultReadFile: ReadTextFile = (path) => readFileSync(path, 'utf8');

const SECTIONS = ['omni', 'proxmox', 'provider', 'housekeeping'] as const;

interface RawValue {
  value: string | boolean | number;
  source: SettingSource;
  /** How the user set it, for messages: "--concurrency", "PROVIDER_CONCURRENCY", "provider.concurrency in /config/config.yaml". */
  origin: string;
}

interface ResolvedSettings {
  configFile: string | null;
  raw: Map<SettingKey, RawValue>;
  sources: Record<SettingKey, SettingSource>;
  str: Str;
  bool: Bool;
  int: (key: SettingKey, min: number, max: number, why: string) => number;
}

/** Reads flags, env and the config file, and resolves each setting's raw value by precedence. */
function resolveSettings(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  readFile: ReadTextFile,
  problems: string[],
  warnings: string[],
): ResolvedSettings {
  const flags = parseDaemonFlags(argv, problems);

  const configFile = nonEmpty(flagString(flags.get(CONFIG_FILE_FLAG))) ?? nonEmpty(env[CONFIG_FILE_ENV]) ?? null;
  const fileValues = configFile === null ? new Map<SettingKey, unknown>() : readConfigFile(configFile, readFile, problems);
  // A file that cannot be read or parsed makes every later message misleading: stop here.
  if (fileValues === null) throw new ConfigError(problems);

  const raw = new Map<SettingKey, RawValue>();
  const sources = {} as Record<SettingKey, SettingSource>;
  for (const spec of SETTINGS) {
    const r = resolveRaw(spec, flags, env, fileValues, configFile, readFile, problems);
    sources[spec.key] = r?.source ?? 'default';
    if (r) raw.set(spec.key, r);
    if (r?.source === 'flag' && spec.secret && String(r.value).trim() !== '') {
      warnings.push(
        `${r.origin} puts a secret on the command line, where other local users can see it in the process list; prefer ${spec.fileEnv ?? spec.env}`,
      );
    }
  }

  const str = (key: SettingKey): string => {
    const r = raw.get(key);
    return r === undefined ? settingSpec(key).default : String(r.value).trim();
  };
  const bool = (key: SettingKey): boolean => coerceBoolean(key, raw.get(key), problems);
  const int = (key: SettingKey, min: number, max: number, why: string): number =>
    coerceInteger(key, raw.get(key), min, max, why, problems);
  return { configFile, raw, sources, str, bool, int };
}

/**
 * The Proxmox settings alone, for the read-only tools (`plan`, `storage explain`): the config file's `proxmox:`
 * section and the PROXMOX_* environment. Throws ConfigError like loadConfig.
 */
export function loadProxmoxSettings(
  configFile: string,
  env: NodeJS.ProcessEnv,
  readFile: ReadTextFile = defaultReadFile,
): ProxmoxSettings {
  const problems: string[] = [];
  const { str, bool, raw } = resolveSettings([`--${CONFIG_FILE_FLAG}`, configFile], env, readFile, problems, []);
  const proxmox = buildProxmoxSettings(str, bool, raw, readFile, problems, []);
  if (problems.length > 0 || !proxmox) throw new ConfigError(problems);
  return proxmox;
}

/**
 * Builds the daemon configuration. Pure apart from `readFile` (config file, `*_FILE` secrets, CA file).
 * Throws ConfigError listing every problem; error texts never contain secret values.
 */
export function loadConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  readFile: ReadTextFile = defaultReadFile,
): DaemonConfig {
  const problems: string[] = [];
  const warnings: string[] = [];
  const { configFile, raw, sources, str, bool, int } = resolveSettings(argv, env, readFile, problems, warnings);

  const provider = buildProviderSettings(str, int, raw, problems, warnings);
  const housekeeping = buildHousekeepingSettings(bool, int, raw, problems);

  const omniGiven = str('omni.endpoint') !== '' || str('omni.serviceAccountKey') !== '';
  const proxmoxKeys = SETTINGS.filter((s) => s.key.startsWith('proxmox.')).map((s) => s.key);
  const proxmoxGiven = proxmoxKeys.some((k) => raw.has(k) && String(raw.get(k)!.value).trim() !== '');

  if (!omniGiven && !proxmoxGiven) {
    if (raw.has('omni.insecureSkipVerify') || str('omni.caFile') !== '') {
      warnings.push('the Omni TLS settings are ignored in demo mode (no Omni endpoint is set)');
    }
    if (problems.length > 0) throw new ConfigError(problems);
    return { mode: 'demo', provider, housekeeping, configFile, sources, warnings };
  }

  if (!omniGiven) {
    problems.push(
      `Proxmox is configured but Omni is not: set the Omni endpoint (${describeSetting('omni.endpoint')}) and the infra provider key (${describeSetting('omni.serviceAccountKey')}); leave every Omni and Proxmox setting unset to run the demo instead`,
    );
  }
  if (!proxmoxGiven) {
    problems.push(
      `Omni is configured but Proxmox is not: set the Proxmox URL (${describeSetting('proxmox.url')}) and an API token (PROXMOX_TOKEN_ID + PROXMOX_TOKEN_SECRET, or tokenID/tokenSecret under proxmox: in the config file)`,
    );
  }
  const omni = omniGiven ? buildOmniSettings(str, bool, raw, readFile, provider.id, problems, warnings) : undefined;
  const proxmox = proxmoxGiven ? buildProxmoxSettings(str, bool, raw, readFile, problems, warnings) : undefined;

  if (problems.length > 0 || !omni || !proxmox) throw new ConfigError(problems);
  return { mode: 'live', omni, proxmox, provider, housekeeping, configFile, sources, warnings };
}

// ---------------------------------------------------------------------------------------------------------------
// Flags

const BOOLEAN_FLAGS = new Set(SETTINGS.filter((s) => s.flag && s.kind === 'boolean').map((s) => s.flag!));
const VALUE_FLAGS = new Set([CONFIG_FILE_FLAG, ...SETTINGS.filter((s) => s.flag && s.kind !== 'boolean').map((s) => s.flag!)]);

/** `--name value`, `--name=value`, `--bool`, `--bool=true|false` (like the Go provider's flags). Last one wins. */
function parseDaemonFlags(argv: readonly string[], problems: string[]): Map<string, string | boolean> {
  const flags = new Map<string, string | boolean>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--') || arg === '--') {
      problems.push(`unexpected argument ${JSON.stringify(arg)}: the daemon takes only --flags (see --help)`);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (BOOLEAN_FLAGS.has(name)) {
      if (eq === -1) {
        flags.set(name, true);
      } else {
        const b = parseBooleanText(arg.slice(eq + 1));
        if (b === undefined) problems.push(`--${name} takes true or false, got ${JSON.stringify(arg.slice(eq + 1))}`);
        else flags.set(name, b);
      }
    } else if (VALUE_FLAGS.has(name)) {
      const value = eq === -1 ? argv[i + 1] : arg.slice(eq + 1);
      if (eq === -1) i++;
      if (value === undefined || (eq === -1 && value.startsWith('--'))) {
        problems.push(`--${name} needs a value`);
        if (value !== undefined) i--;
        continue;
      }
      flags.set(name, value);
    } else {
      problems.push(`unknown flag --${name} (see --help for the flags; Proxmox settings are set by env or config file)`);
    }
  }
  return flags;
}

function flagString(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Config file

/** The file's settings by key; null when the file cannot be read or parsed at all. */
function readConfigFile(path: string, readFile: ReadTextFile, problems: string[]): Map<SettingKey, unknown> | null {
  const values = new Map<SettingKey, unknown>();
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    problems.push(`cannot read the config file ${path} (${errorCode(err)}); check --${CONFIG_FILE_FLAG} / ${CONFIG_FILE_ENV} and the volume mount`);
    return null;
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    // Only the first line: the rest of the YAML error quotes the source, which may hold a secret.
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : '';
    const first = (err instanceof Error ? err.message : String(err)).split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    problems.push(`the config file ${path} is not valid YAML${where}: ${first}`);
    return null;
  }
  if (doc === null || doc === undefined) return values;
  if (!isPlainObject(doc)) {
    problems.push(`the config file ${path} must be a YAML mapping with the sections ${SECTIONS.join(', ')}`);
    return null;
  }
  for (const [section, body] of Object.entries(doc)) {
    if (!(SECTIONS as readonly string[]).includes(section)) {
      problems.push(`unknown section "${section}" in ${path}; known sections: ${SECTIONS.join(', ')}${suggest(section, SECTIONS)}`);
      continue;
    }
    if (body === null || body === undefined) continue;
    if (!isPlainObject(body)) {
      problems.push(`"${section}" in ${path} must be a mapping of settings`);
      continue;
    }
    const known = SETTINGS.filter((s) => s.key.startsWith(`${section}.`)).map((s) => s.key.slice(section.length + 1));
    for (const [k, v] of Object.entries(body)) {
      if (!known.includes(k)) {
        problems.push(`unknown setting "${section}.${k}" in ${path}; known: ${known.join(', ')}${suggest(k, known)}`);
        continue;
      }
      if (v !== null && v !== undefined) values.set(`${section}.${k}` as SettingKey, v);
    }
  }
  return values;
}

// ---------------------------------------------------------------------------------------------------------------
// Resolution: flag > env (or env _FILE) > file > default

function resolveRaw(
  spec: SettingSpec,
  flags: Map<string, string | boolean>,
  env: NodeJS.ProcessEnv,
  fileValues: ReadonlyMap<SettingKey, unknown>,
  configFile: string | null,
  readFile: ReadTextFile,
  problems: string[],
): RawValue | undefined {
  if (spec.flag && flags.has(spec.flag)) {
    return { value: flags.get(spec.flag)!, source: 'flag', origin: `--${spec.flag}` };
  }
  const direct = nonEmpty(env[spec.env]);
  const filePath = spec.fileEnv ? nonEmpty(env[spec.fileEnv]) : undefined;
  if (direct !== undefined && filePath !== undefined) {
    problems.push(`both ${spec.env} and ${spec.fileEnv} are set; set only one of them`);
    return undefined;
  }
  if (direct !== undefined) return { value: direct, source: 'env', origin: spec.env };
  if (filePath !== undefined) {
    try {
      const content = readFile(filePath).replace(/\s+$/, '');
      if (content === '') {
        problems.push(`${spec.fileEnv} points to ${filePath}, which is empty`);
        return undefined;
      }
      return { value: content, source: 'env', origin: `${spec.fileEnv} (${filePath})` };
    } catch (err) {
      problems.push(`cannot read ${spec.fileEnv} file ${filePath} (${errorCode(err)}); check the path and the secret mount`);
      return undefined;
    }
  }
  if (fileValues.has(spec.key)) {
    const v = fileValues.get(spec.key);
    const origin = `"${spec.key}" in ${configFile}`;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return { value: v, source: 'file', origin };
    problems.push(`${origin} must be a ${spec.kind === 'string' ? 'string' : spec.kind}, not a ${Array.isArray(v) ? 'list' : 'mapping'}`);
  }
  return undefined;
}

/** Shows the value in messages unless the setting is secret. */
function shown(key: SettingKey, r: RawValue): string {
  return settingSpec(key).secret ? '' : ` (got ${JSON.stringify(String(r.value))})`;
}

function coerceBoolean(key: SettingKey, r: RawValue | undefined, problems: string[]): boolean {
  if (r === undefined) return settingSpec(key).default === 'true';
  if (typeof r.value === 'boolean') return r.value;
  const b = parseBooleanText(String(r.value));
  if (b === undefined) {
    problems.push(`${r.origin} must be true or false${shown(key, r)}`);
    return false;
  }
  return b;
}

function coerceInteger(
  key: SettingKey,
  r: RawValue | undefined,
  min: number,
  max: number,
  why: string,
  problems: string[],
): number {
  const text = r === undefined ? settingSpec(key).default : String(r.value).trim();
  const n = /^-?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    problems.push(`${r?.origin ?? key} must be a whole number from ${min} to ${max}${r ? shown(key, r) : ''}; ${why}`);
    return Number(settingSpec(key).default);
  }
  return n;
}

function parseBooleanText(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (['true', 't', '1', 'yes', 'y', 'on'].includes(t)) return true;
  if (['false', 'f', '0', 'no', 'n', 'off'].includes(t)) return false;
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Sections

type Str = (key: SettingKey) => string;
type Bool = (key: SettingKey) => boolean;
type Int = (key: SettingKey, min: number, max: number, why: string) => number;

function originOf(raw: Map<SettingKey, RawValue>, key: SettingKey): string {
  return raw.get(key)?.origin ?? `the default of ${key}`;
}

function buildProviderSettings(
  str: Str,
  int: Int,
  raw: Map<SettingKey, RawValue>,
  problems: string[],
  warnings: string[],
): ProviderSettings {
  const id = str('provider.id');
  if (id === '' || /[\s/:@!]/.test(id)) {
    problems.push(
      `${originOf(raw, 'provider.id')} must be a non-empty provider ID without spaces, "/", ":", "@" or "!" (e.g. proxmox)`,
    );
  } else if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(id)) {
    warnings.push(
      `provider ID ${JSON.stringify(id)} is not a lowercase DNS label; it must match the name used with \`omnictl infraprovider create\` exactly (IDs are case-sensitive)`,
    );
  }
  const hostname = str('provider.hostname');
  if (!(HOSTNAME_MODES as readonly string[]).includes(hostname)) {
    problems.push(
      `${originOf(raw, 'provider.hostname')} must be one of ${HOSTNAME_MODES.join(', ')} (got ${JSON.stringify(hostname)})`,
    );
  }
  const logLevel = str('provider.logLevel').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    problems.push(`${originOf(raw, 'provider.logLevel')} must be one of ${LOG_LEVELS.join(', ')} (got ${JSON.stringify(logLevel)})`);
  }
  let healthListen: ListenAddress | null = null;
  try {
    healthListen = parseListenAddress(str('provider.healthListen'));
  } catch (err) {
    if (!(err instanceof ListenAddressError)) throw err;
    problems.push(`${originOf(raw, 'provider.healthListen')}: ${err.message}`);
  }
  const leaseDurationSeconds = int('provider.leaseDurationSeconds', 2, 300, 'it bounds how long requests wait after the leader dies');
  const leaseRenewDeadlineSeconds = int('provider.leaseRenewDeadlineSeconds', 1, 299, 'the holder must stop acting before a standby may take over');
  const leaseRetryPeriodSeconds = int('provider.leaseRetryPeriodSeconds', 1, 298, 'the holder must renew several times per renew deadline');
  if (leaseRenewDeadlineSeconds >= leaseDurationSeconds) {
    problems.push(
      `${originOf(raw, 'provider.leaseRenewDeadlineSeconds')} (${leaseRenewDeadlineSeconds}) must be less than ${originOf(raw, 'provider.leaseDurationSeconds')} (${leaseDurationSeconds}): a holder cut off from Omni must stop acting before another instance may take the lease`,
    );
  }
  if (leaseRetryPeriodSeconds >= leaseRenewDeadlineSeconds) {
    problems.push(
      `${originOf(raw, 'provider.leaseRetryPeriodSeconds')} (${leaseRetryPeriodSeconds}) must be less than ${originOf(raw, 'provider.leaseRenewDeadlineSeconds')} (${leaseRenewDeadlineSeconds}): the holder renews every retry period and needs more than one try before its deadline`,
    );
  }
  return {
    id,
    name: str('provider.name') || 'Proxmox',
    description: str('provider.description'),
    concurrency: int('provider.concurrency', 1, 1000, 'it is how many machine requests are worked on at once'),
    tasksPerNode: int('provider.tasksPerNode', 1, 64, 'it is how many Proxmox tasks this provider runs at once on one node'),
    tasksPerStorage: int('provider.tasksPerStorage', 1, 64, 'it is how many VM creates or ISO downloads this provider runs at once on one storage'),
    shutdownTimeoutSeconds: int('provider.shutdownTimeoutSeconds', 0, 600, 'it is how long a VM being deleted gets to shut down cleanly'),
    hostname: hostname as HostnameMode,
    healthListen,
    logLevel: logLevel as LogLevel,
    heartbeatIntervalSeconds: int(
      'provider.heartbeatIntervalSeconds',
      1,
      25,
      'Omni marks a provider disconnected after about 30 s without a heartbeat',
    ),
    leaseDurationSeconds,
    leaseRenewDeadlineSeconds,
    leaseRetryPeriodSeconds,
  };
}

/** `housekeeping.*`: an interval of 0 turns it off; anything else within the bounds the settings table names. */
function buildHousekeepingSettings(bool: Bool, int: Int, raw: Map<SettingKey, RawValue>, problems: string[]): HousekeepingSettings {
  const interval = int('housekeeping.intervalSeconds', 0, 86400, 'it is how often housekeeping looks at the cluster');
  if (interval > 0 && interval < 60) {
    problems.push(`${originOf(raw, 'housekeeping.intervalSeconds')} must be 0 (off) or 60-86400 seconds (got ${interval}): each pass reads every VM's config`);
  }
  return {
    intervalSeconds: interval,
    removeOrphanVms: bool('housekeeping.removeOrphanVms'),
    orphanVmGraceSeconds: int('housekeeping.orphanVmGraceSeconds', 600, 2592000, 'a VM is removed only after it has been orphaned this long'),
    removeUnusedIsos: bool('housekeeping.removeUnusedIsos'),
    talosIsoMinAgeSeconds: int('housekeeping.talosIsoMinAgeSeconds', 3600, 31536000, 'an unused Talos ISO is removed only when it is this old'),
  };
}

function buildOmniSettings(
  str: Str,
  bool: Bool,
  raw: Map<SettingKey, RawValue>,
  readFile: ReadTextFile,
  providerId: string,
  problems: string[],
  warnings: string[],
): OmniSettings | undefined {
  const endpoint = str('omni.endpoint');
  const key = str('omni.serviceAccountKey');
  const before = problems.length;
  if (endpoint === '') {
    problems.push(`the Omni endpoint is not set: set ${describeSetting('omni.endpoint')}, e.g. https://example.omni.siderolabs.io`);
  } else {
    let url: URL | undefined;
    try {
      url = new URL(endpoint);
    } catch {
      problems.push(
        `the Omni endpoint ${JSON.stringify(endpoint)} is not a URL; write it with its scheme, e.g. https://example.omni.siderolabs.io`,
      );
    }
    if (url) {
      if (!['https:', 'http:', 'grpc:'].includes(url.protocol) || url.hostname === '') {
        problems.push(
          `the Omni endpoint ${JSON.stringify(endpoint)} must be an https:// URL (http:// or grpc:// only for plaintext test setups)`,
        );
      } else if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '') {
        warnings.push(`the Omni endpoint path/query "${url.pathname}${url.search}" is ignored; only scheme, host and port are used`);
      }
      if (url.protocol !== 'https:' && !problems.slice(before).length) {
        warnings.push('the Omni endpoint is not https://; the connection is not encrypted');
      }
    }
  }
  let serviceAccountName = '';
  if (key === '') {
    problems.push(
      `the Omni infra provider key is not set: set ${describeSetting('omni.serviceAccountKey')} to the key printed by \`omnictl infraprovider create ${providerId}\``,
    );
  } else {
    const decoded = decodeServiceAccountKey(key);
    if ('problem' in decoded) {
      problems.push(`the Omni infra provider key (${describeSetting('omni.serviceAccountKey')}) ${decoded.problem}`);
    } else {
      serviceAccountName = decoded.name;
      const base = decoded.name.startsWith('infra-provider:') ? decoded.name.slice('infra-provider:'.length) : decoded.name;
      if (base !== providerId) {
        warnings.push(
          `the Omni key was issued for ${JSON.stringify(decoded.name)} but the provider ID is ${JSON.stringify(providerId)}; Omni rejects a provider whose ID differs from its key's provider name: set --id ${base} (or PROVIDER_ID) if this key is the right one`,
        );
      }
    }
  }
  let insecureSkipVerify = bool('omni.insecureSkipVerify');
  const caFile = str('omni.caFile');
  if (caFile !== '') {
    checkCaFile(caFile, originOf(raw, 'omni.caFile'), readFile, problems, { parse: true });
    if (endpoint !== '' && !/^https:/i.test(endpoint)) {
      warnings.push(`${originOf(raw, 'omni.caFile')} is ignored: the Omni endpoint is not https://`);
    }
    if (insecureSkipVerify) {
      warnings.push('omni.insecureSkipVerify is ignored because an Omni CA file is set (the certificate is verified against it)');
      insecureSkipVerify = false;
    }
  }
  if (problems.length > before) return undefined;
  return {
    endpoint,
    serviceAccountKey: key,
    serviceAccountName,
    insecureSkipVerify,
    ...(caFile !== '' ? { caFile } : {}),
  };
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * A CA file setting must name a readable file holding at least one PEM certificate; with `parse`, every certificate
 * in it must also decode (X.509). Problems name the setting.
 */
function checkCaFile(path: string, origin: string, readFile: ReadTextFile, problems: string[], opts: { parse?: boolean } = {}): void {
  let text: string;
  try {
    text = readFile(path);
  } catch (err) {
    problems.push(`cannot read ${origin} ${path} (${errorCode(err)}); check the path and the volume mount`);
    return;
  }
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    problems.push(`${origin} ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
    return;
  }
  if (!opts.parse) return;
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch {
      problems.push(`${origin} ${path}: certificate ${i + 1} of ${blocks.length} is not a valid X.509 certificate`);
      return;
    }
  }
}

/** Checks the shape of an Omni key (base64 of JSON with `name` and an armored `pgp_key`) without revealing it. */
export function decodeServiceAccountKey(key: string): { name: string } | { problem: string } {
  const compact = key.replace(/\s+/g, '');
  const wrongKind =
    'it must be the base64 text printed by `omnictl infraprovider create <id>` (or the Omni UI when creating an infra provider)';
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
    return { problem: `is not base64; ${wrongKind}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(compact, 'base64').toString('utf8'));
  } catch {
    return { problem: `does not decode to the expected JSON; ${wrongKind}` };
  }
  if (!isPlainObject(parsed) || typeof parsed.name !== 'string' || typeof parsed.pgp_key !== 'string') {
    return { problem: `lacks the name/pgp_key fields of an Omni key; ${wrongKind}` };
  }
  if (!parsed.pgp_key.includes('-----BEGIN PGP PRIVATE KEY BLOCK-----')) {
    return { problem: `does not hold an armored PGP private key; ${wrongKind}` };
  }
  return { name: parsed.name };
}

const TOKEN_ID_RE = /^[^\s@!:=]+@[^\s@!:=]+![A-Za-z][A-Za-z0-9._-]*$/;

function buildProxmoxSettings(
  str: Str,
  bool: Bool,
  raw: Map<SettingKey, RawValue>,
  readFile: ReadTextFile,
  problems: string[],
  warnings: string[],
): ProxmoxSettings | undefined {
  const before = problems.length;
  const url = str('proxmox.url');
  if (url === '') {
    problems.push(`the Proxmox URL is not set: set ${describeSetting('proxmox.url')}, e.g. https://pve1.example.com:8006`);
  } else {
    let parsed: URL | undefined;
    try {
      parsed = new URL(url);
    } catch {
      problems.push(`${originOf(raw, 'proxmox.url')} ${JSON.stringify(url)} is not a URL; write it like https://pve1.example.com:8006`);
    }
    if (parsed && (!['https:', 'http:'].includes(parsed.protocol) || parsed.hostname === '')) {
      problems.push(`${originOf(raw, 'proxmox.url')} must be an https:// URL like https://pve1.example.com:8006`);
    } else if (parsed?.protocol === 'http:') {
      warnings.push('the Proxmox URL is http://; credentials travel unencrypted');
    }
  }

  const tokenId = str('proxmox.tokenID');
  const tokenSecret = str('proxmox.tokenSecret');
  const username = str('proxmox.username');
  const password = str('proxmox.password');
  const realm = str('proxmox.realm');
  const tokenGiven = tokenId !== '' || tokenSecret !== '';
  const passwordGiven = username !== '' || password !== '';
  let auth: PveCredentials | undefined;
  if (tokenGiven && passwordGiven) {
    const from = (keys: SettingKey[]): string => keys.filter((k) => raw.has(k)).map((k) => originOf(raw, k)).join(', ');
    problems.push(
      `Proxmox credentials are set twice: an API token (${from(['proxmox.tokenID', 'proxmox.tokenSecret'])}) and a username/password (${from(['proxmox.username', 'proxmox.password'])}); keep only one (the token is recommended)`,
    );
  } else if (tokenGiven) {
    if (tokenId === '') problems.push(`the Proxmox token secret is set but the token ID is not: set ${describeSetting('proxmox.tokenID')}`);
    else if (!TOKEN_ID_RE.test(tokenId)) {
      problems.push(
        `${originOf(raw, 'proxmox.tokenID')} ${JSON.stringify(tokenId)} must look like user@realm!tokenname (e.g. omni@pve!provider)`,
      );
    }
    if (tokenSecret === '') problems.push(`the Proxmox token ID is set but its secret is not: set ${describeSetting('proxmox.tokenSecret')}`);
    if (realm !== '') warnings.push('proxmox.realm is ignored with API token authentication (the token ID names the realm)');
    auth = { tokenId, tokenSecret };
  } else if (passwordGiven) {
    if (username === '') problems.push(`the Proxmox password is set but the username is not: set ${describeSetting('proxmox.username')}`);
    if (password === '') problems.push(`the Proxmox username is set but the password is not: set ${describeSetting('proxmox.password')}`);
    const at = username.indexOf('@');
    if (username !== '' && at === -1 && realm === '') {
      problems.push(
        `the Proxmox username has no realm: set ${describeSetting('proxmox.realm')} (pam for root, pve for Proxmox users) or write the username as user@realm`,
      );
    } else if (at !== -1 && realm !== '' && username.slice(at + 1) !== realm) {
      problems.push(
        `the Proxmox username says realm "${username.slice(at + 1)}" but the realm setting says "${realm}"; keep one of them`,
      );
    }
    auth = realm !== '' && at === -1 ? { username, password, realm } : { username, password };
    warnings.push('Proxmox password login uses tickets that expire every 2 hours (renewed automatically); an API token is recommended');
  } else {
    problems.push(
      'no Proxmox credentials: set PROXMOX_TOKEN_ID and PROXMOX_TOKEN_SECRET (or tokenID/tokenSecret under proxmox: in the config file), or username/password/realm',
    );
  }

  const tls: PveTlsOptions = {};
  const fingerprint = str('proxmox.fingerprint');
  const caFile = str('proxmox.caFile');
  const insecure = bool('proxmox.insecureSkipVerify');
  if (fingerprint !== '') {
    const hex = fingerprint.replace(/[\s:]/g, '').toUpperCase();
    if (!/^[0-9A-F]{64}$/.test(hex)) {
      problems.push(
        `${originOf(raw, 'proxmox.fingerprint')} must be a SHA-256 fingerprint (64 hex digits, colons optional), as shown by \`openssl x509 -noout -fingerprint -sha256\``,
      );
    } else {
      tls.fingerprint = hex.match(/../g)!.join(':');
    }
  }
  if (caFile !== '') {
    checkCaFile(caFile, originOf(raw, 'proxmox.caFile'), readFile, problems);
    tls.caFile = caFile;
  }
  if (insecure) {
    if (fingerprint !== '' || caFile !== '') {
      warnings.push(`proxmox.insecureSkipVerify is ignored because ${fingerprint !== '' ? 'a fingerprint' : 'a CA file'} is set`);
    } else {
      tls.insecureSkipVerify = true;
      warnings.push(
        'Proxmox TLS verification is off (insecureSkipVerify); set PROXMOX_FINGERPRINT or PROXMOX_CA_FILE to verify the server',
      );
    }
  }
  if (fingerprint !== '' && caFile !== '') warnings.push('both a Proxmox fingerprint and a CA file are set; the fingerprint pin is used');

  if (problems.length > before || !auth) return undefined;
  return { url, auth, tls };
}

// ---------------------------------------------------------------------------------------------------------------

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.message.split('\n')[0]! : 'unreadable';
}

/** " (did you mean X?)" when a known name is one or two edits away or differs only in case. */
function suggest(given: string, known: readonly string[]): string {
  const best = known.find((k) => k.toLowerCase() === given.toLowerCase() || editDistance(k.toLowerCase(), given.toLowerCase()) <= 2);
  return best ? ` (did you mean "${best}"?)` : '';
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
