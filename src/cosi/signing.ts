// Omni request signing ("siderov1"): decoding the infra-provider service-account key and signing every gRPC call
// with a detached OpenPGP signature over the exact payload JSON sent in x-sidero-payload.
import * as grpc from '@grpc/grpc-js';
import * as openpgp from 'openpgp';
import type { Logger } from '../log.js';

/** E-mail domain of infra-provider service accounts; the provider ID is the part before the `@`. */
export const INFRA_PROVIDER_EMAIL_DOMAIN = 'infra-provider.serviceaccount.omni.sidero.dev';
/** Prefix of infra-provider service account names (`infra-provider:<id>`). */
export const INFRA_PROVIDER_NAME_PREFIX = 'infra-provider:';

export const HEADER_TIMESTAMP = 'x-sidero-timestamp';
export const HEADER_PAYLOAD = 'x-sidero-payload';
export const HEADER_SIGNATURE = 'x-sidero-signature';
export const HEADER_PROVIDER_ID = 'providerid';
export const SIGNATURE_VERSION = 'siderov1';

/** The metadata keys whose values are part of the signed payload, in the (sorted) order they are serialised. */
export const SIGNED_HEADER_NAMES = [
  'authorization',
  'cluster',
  'context',
  'fieldSelectors',
  'namespace',
  'nodes',
  'runtime',
  'selectors',
  'uid',
  HEADER_TIMESTAMP,
] as const;

/** Why a service-account key could not be used. The message never contains key material. */
export class ServiceAccountKeyError extends Error {
  override readonly name = 'ServiceAccountKeyError';
}

/** A decoded, usable signing key. */
export interface ServiceAccountKey {
  /** The key string's `name` (e.g. `infra-provider:proxmox`); only echoed in the signature header. */
  readonly identity: string;
  /** v4 fingerprint, 40 lower-case hex characters (Omni's PublicKey resource ID). */
  readonly fingerprint: string;
  /** E-mail of the key's user ID, the identity Omni authorises (`<id>@infra-provider.serviceaccount.omni.sidero.dev`). */
  readonly email: string | undefined;
  /** Infra provider ID the key belongs to, when it is an infra-provider key. */
  readonly providerId: string | undefined;
  /** When the key expires; undefined when it never does. */
  readonly expiresAt: Date | undefined;
  readonly privateKey: openpgp.PrivateKey;
}

export interface DecodeKeyOptions {
  /** The provider's `--id`; when given, the key must belong to this infra provider. */
  providerId?: string;
  now?: Date;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Decodes `--omni-service-account-key`: standard base64 of JSON `{"name", "pgp_key"}` where pgp_key is an
 * armored, unencrypted OpenPGP private key. Throws ServiceAccountKeyError with an operator-facing reason.
 */
export async function decodeServiceAccountKey(keyString: string, opts: DecodeKeyOptions = {}): Promise<ServiceAccountKey> {
  const compact = keyString.replace(/\s+/g, '');
  if (compact === '') throw new ServiceAccountKeyError('the Omni service account key is empty');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
    throw new ServiceAccountKeyError('the Omni service account key is not base64 (copy it exactly as omnictl or the Omni UI printed it)');
  }
  const text = Buffer.from(compact, 'base64').toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new ServiceAccountKeyError('the Omni service account key is base64 but does not decode to JSON');
  }
  if (!isRecord(parsed)) throw new ServiceAccountKeyError('the Omni service account key does not decode to a JSON object');
  const name = parsed['name'];
  const armored = parsed['pgp_key'];
  const missing = [typeof name === 'string' && name !== '' ? '' : 'name', typeof armored === 'string' && armored !== '' ? '' : 'pgp_key']
    .filter((f) => f !== '');
  if (missing.length > 0 || typeof name !== 'string' || typeof armored !== 'string') {
    throw new ServiceAccountKeyError(`the Omni service account key is missing field(s): ${missing.join(', ')}`);
  }

  let privateKey: openpgp.PrivateKey;
  try {
    privateKey = await openpgp.readPrivateKey({ armoredKey: armored });
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : 'unreadable';
    throw new ServiceAccountKeyError(`the Omni service account key's pgp_key is not an OpenPGP private key (${reason})`);
  }
  if (!privateKey.isDecrypted()) {
    throw new ServiceAccountKeyError('the Omni service account key is passphrase-protected; Omni keys must be unencrypted');
  }

  const now = opts.now ?? new Date();
  const fingerprint = privateKey.getFingerprint().toLowerCase();
  let expiration: Date | number | null;
  try {
    expiration = await privateKey.getExpirationTime();
  } catch {
    expiration = null;
  }
  const expiresAt = expiration instanceof Date ? expiration : undefined;
  if (expiresAt !== undefined && expiresAt.getTime() <= now.getTime()) {
    throw new ServiceAccountKeyError(
      `the Omni service account key ${fingerprint} expired on ${expiresAt.toISOString()}; renew it (omnictl infraprovider renewkey or the Omni UI)`,
    );
  }
  if (expiration === null) {
    // openpgp.js reports null when no valid self-signature exists at `now` (revoked or not yet valid).
    throw new ServiceAccountKeyError(`the Omni service account key ${fingerprint} has no valid self-signature (revoked or not yet valid)`);
  }

  const email = privateKey.users.map((u) => u.userID?.email ?? '').find((e) => e !== '');
  const emailProvider =
    email !== undefined && email.endsWith(`@${INFRA_PROVIDER_EMAIL_DOMAIN}`) ? email.slice(0, email.indexOf('@')) : undefined;
  const nameProvider = name.startsWith(INFRA_PROVIDER_NAME_PREFIX) ? name.slice(INFRA_PROVIDER_NAME_PREFIX.length) : undefined;
  const providerId = emailProvider ?? nameProvider;

  if (opts.providerId !== undefined) {
    if (providerId === undefined) {
      throw new ServiceAccountKeyError(
        `the Omni service account key (${email ?? name}) is not an infra provider key; create one with "omnictl infraprovider create ${opts.providerId}"`,
      );
    }
    if (providerId !== opts.providerId) {
      throw new ServiceAccountKeyError(
        `the Omni service account key belongs to infra provider "${providerId}" but --id is "${opts.providerId}"; they must be equal`,
      );
    }
  }

  return { identity: name, fingerprint, email, providerId, expiresAt, privateKey };
}

/** Values of one metadata key as strings, or null when absent (never an empty list). */
function headerValues(metadata: grpc.Metadata, key: string): string[] | null {
  const values = metadata.get(key.toLowerCase());
  if (values.length === 0) return null;
  return values.map((v) => (typeof v === 'string' ? v : v.toString('utf8')));
}

/**
 * The exact payload text Omni expects: `{"headers":{<10 keys, sorted>},"method":"<path>"}`, no whitespace,
 * each header a list of values or null.
 */
export function signaturePayload(method: string, metadata: grpc.Metadata): string {
  const headers: Record<string, string[] | null> = {};
  for (const key of SIGNED_HEADER_NAMES) headers[key] = headerValues(metadata, key);
  return JSON.stringify({ headers, method });
}

/**
 * Adds x-sidero-timestamp, x-sidero-payload and x-sidero-signature to `metadata` for a call to `method`.
 * Previous payload/signature headers are replaced.
 */
export async function signMetadata(
  key: ServiceAccountKey,
  method: string,
  metadata: grpc.Metadata,
  now: Date = new Date(),
): Promise<void> {
  metadata.remove(HEADER_PAYLOAD);
  metadata.remove(HEADER_SIGNATURE);
  metadata.set(HEADER_TIMESTAMP, String(Math.floor(now.getTime() / 1000)));
  const payload = signaturePayload(method, metadata);
  const message = await openpgp.createMessage({ binary: new TextEncoder().encode(payload) });
  const signature = await openpgp.sign({
    message,
    signingKeys: key.privateKey,
    detached: true,
    format: 'binary',
    date: now,
    config: { nonDeterministicSignaturesViaNotation: false },
  });
  metadata.set(HEADER_PAYLOAD, payload);
  metadata.set(
    HEADER_SIGNATURE,
    `${SIGNATURE_VERSION} ${key.identity} ${key.fingerprint} ${Buffer.from(signature).toString('base64')}`,
  );
}

export interface SigningInterceptorOptions {
  /** Sent as `providerid` metadata on COSI State calls (not on management calls). */
  providerId?: string;
  /** Clock; defaults to the system clock. */
  now?: () => Date;
  logger?: Logger;
}

const STATE_SERVICE_PREFIX = '/cosi.resource.State/';

/**
 * A grpc-js client interceptor that signs every call (unary and streaming) before it starts, and adds the
 * `providerid` header on COSI State calls. Without a key, calls go out unsigned (Omni's local resource server).
 */
export function signingInterceptor(key: ServiceAccountKey | undefined, opts: SigningInterceptorOptions = {}): grpc.Interceptor {
  const now = opts.now ?? (() => new Date());
  return (options, nextCall) => {
    const path = options.method_definition.path;
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        if (opts.providerId !== undefined && path.startsWith(STATE_SERVICE_PREFIX)) {
          metadata.set(HEADER_PROVIDER_ID, opts.providerId);
        }
        if (key === undefined) {
          next(metadata, listener);
          return;
        }
        signMetadata(key, path, metadata, now()).then(
          () => next(metadata, listener),
          (err: unknown) => {
            const reason = err instanceof Error ? err.message.split('\n')[0] : 'unknown error';
            opts.logger?.error({ method: path, reason }, 'signing an Omni request failed');
            // The call is never started: nothing unsigned leaves the process.
            listener.onReceiveStatus({
              code: grpc.status.UNAUTHENTICATED,
              details: `signing the request failed: ${reason}`,
              metadata: new grpc.Metadata(),
            });
          },
        );
      },
    });
  };
}
