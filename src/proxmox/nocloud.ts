// The NoCloud seed a Talos VM boots with: an ISO labelled `cidata` holding user-data, meta-data and network-config,
// and the per-machine-request file name it is stored under on a Proxmox ISO storage.
import { createHash } from 'node:crypto';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { writeIso, DEFAULT_ISO_DATE } from './iso9660.js';

/** Filesystem label Talos looks for (it tries `cidata`, then `CIDATA`). */
export const NOCLOUD_VOLUME_ID = 'cidata';

/** network-config meaning "no platform network settings": Talos then keeps its defaults (DHCP on every link). */
export const DEFAULT_NETWORK_CONFIG = 'version: 1\n';

export interface NoCloudSeedInput {
  /** Talos machine config (for Omni: the join config). Stored verbatim; never logged or echoed in errors. */
  userData: string;
  /** `instance-id` in meta-data. */
  instanceId: string;
  /** When given, written as both `local-hostname` and `hostname` (Talos reads `hostname`). Must be a valid DNS name. */
  hostname?: string;
  /** network-config YAML, version 1 or 2. Defaults to DEFAULT_NETWORK_CONFIG. */
  networkConfig?: string;
}

/** The seed input is one Talos would reject or silently ignore. */
export class NoCloudSeedError extends Error {
  override readonly name = 'NoCloudSeedError';
}

/** Builds the seed ISO image. Same input → same bytes. */
export function buildNoCloudSeed(input: NoCloudSeedInput): Buffer {
  if (input.userData.trim().length === 0) {
    throw new NoCloudSeedError('user-data is empty: Talos would boot without a machine config');
  }
  if (input.userData.startsWith('#cloud-config')) {
    // Talos treats cloud-config user-data as "no config" and would wait forever in maintenance mode.
    throw new NoCloudSeedError('user-data is a #cloud-config document, which Talos ignores; it must be a Talos machine config');
  }
  const networkConfig = input.networkConfig ?? DEFAULT_NETWORK_CONFIG;
  validateNetworkConfig(networkConfig);
  return writeIso({
    volumeId: NOCLOUD_VOLUME_ID,
    date: DEFAULT_ISO_DATE,
    files: [
      { name: 'meta-data', data: renderMetaData(input.instanceId, input.hostname) },
      { name: 'network-config', data: networkConfig },
      { name: 'user-data', data: input.userData },
    ],
  });
}

/** meta-data YAML: `instance-id`, plus `local-hostname` and `hostname` when a hostname is given. */
export function renderMetaData(instanceId: string, hostname?: string): string {
  if (instanceId.length === 0) throw new NoCloudSeedError('instance-id must not be empty');
  if (/[\u0000-\u001f\u007f]/.test(instanceId)) {
    throw new NoCloudSeedError('instance-id must not contain control characters');
  }
  const doc: Record<string, string> = { 'instance-id': instanceId };
  if (hostname !== undefined) {
    validateHostname(hostname);
    doc['local-hostname'] = hostname;
    doc.hostname = hostname;
  }
  // Double-quote every value so no YAML 1.1 reader (cloud-init, go-yaml v2) sees a bool, number or date.
  return stringifyYaml(doc, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
}

function validateHostname(hostname: string): void {
  const label = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
  const name = hostname.endsWith('.') ? hostname.slice(0, -1) : hostname;
  if (name.length === 0 || name.length > 253 || !name.split('.').every((l) => label.test(l))) {
    throw new NoCloudSeedError(
      `hostname ${JSON.stringify(hostname)} is not a valid DNS name (labels of letters, digits and inner '-', ≤ 63 each, ≤ 253 total)`,
    );
  }
}

function validateNetworkConfig(text: string): void {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new NoCloudSeedError(`network-config is not valid YAML: ${(err as Error).message}`);
  }
  const version = typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>).version : undefined;
  if (version !== 1 && version !== 2) {
    throw new NoCloudSeedError('network-config must be a YAML mapping with `version: 1` or `version: 2` (Talos rejects anything else)');
  }
}

const SEED_PREFIX = 'omni-seed-';
const SEED_SUFFIX = '.iso';
/** PVE volume names are file names; keep under the usual 255-byte limit. */
const MAX_SEED_FILE_NAME = 255;
const MAX_ENCODED_ID = MAX_SEED_FILE_NAME - SEED_PREFIX.length - SEED_SUFFIX.length;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** sha256 in hex. */
const HASH_LENGTH = 64;

/**
 * ISO file name of the seed for one machine request: `omni-seed-<encoded id>.iso`.
 *
 * Encoding: `a-z`, `0-9`, `-` and `.` stay as they are; every other UTF-8 byte (including `_` and upper-case
 * letters) becomes `_` plus two lower-case hex digits. So the result uses only `[a-z0-9_.-]`, is a valid PVE iso
 * name even on case-insensitive storages, and distinct ids give distinct names (an `_` is always followed by
 * two hex digits, so decoding is unambiguous). An encoded id longer than fits in 255 characters is cut at an
 * escape boundary and followed by `_h` + the sha256 of the full id; `_h` never occurs in the plain encoding,
 * so the two forms cannot collide with each other.
 */
export function seedIsoFileName(requestId: string): string {
  if (requestId.length === 0) throw new NoCloudSeedError('machine request id must not be empty');
  if (LONE_SURROGATE.test(requestId)) {
    // UTF-8 would turn every lone surrogate into U+FFFD, so two different ids could share a name.
    throw new NoCloudSeedError('machine request id is not well-formed Unicode (lone surrogate)');
  }
  const encoded = encodeRequestId(requestId);
  if (encoded.length <= MAX_ENCODED_ID) return `${SEED_PREFIX}${encoded}${SEED_SUFFIX}`;
  let cut = MAX_ENCODED_ID - 2 - HASH_LENGTH;
  // Never split an `_xx` escape.
  const lastEscape = encoded.lastIndexOf('_', cut - 1);
  if (lastEscape >= 0 && lastEscape + 3 > cut) cut = lastEscape;
  const digest = createHash('sha256').update(requestId, 'utf8').digest('hex');
  return `${SEED_PREFIX}${encoded.slice(0, cut)}_h${digest}${SEED_SUFFIX}`;
}

function encodeRequestId(requestId: string): string {
  let out = '';
  for (const byte of Buffer.from(requestId, 'utf8')) {
    const isPlain =
      (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte === 0x2d /* - */ || byte === 0x2e; /* . */
    out += isPlain ? String.fromCharCode(byte) : `_${byte.toString(16).padStart(2, '0')}`;
  }
  return out;
}
