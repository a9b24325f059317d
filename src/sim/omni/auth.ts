// The in-process Omni's side of "siderov1" request signing: the public-key registry (Omni's PublicKey/User
// resources), verification of signed gRPC metadata as Omni does it, and minting of infra-provider service-account keys.
import { createMessage, generateKey, readKey, readPrivateKey, readSignature, verify, type PublicKey } from 'openpgp';
import { OmniError } from './errors.js';
import { silentLogger, type Logger } from '../../log.js';

/** Omni roles in increasing order of power. */
export const ROLES = ['None', 'InfraProvider', 'Reader', 'Auditor', 'Operator', 'Admin'] as const;
export type Role = (typeof ROLES)[number];

export function roleAtLeast(role: Role, wanted: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(wanted);
}

/** Suffix of the e-mail identity Omni gives an infra-provider service account. */
export const INFRA_PROVIDER_IDENTITY_SUFFIX = '@infra-provider.serviceaccount.omni.sidero.dev';

/** The headers whose values are part of the signed payload (gRPC metadata keys, looked up exactly). */
export const SIGNED_HEADERS = [
  'x-sidero-timestamp',
  'nodes',
  'selectors',
  'fieldSelectors',
  'runtime',
  'context',
  'cluster',
  'namespace',
  'uid',
  'authorization',
] as const;

const ALLOWED_SKEW_MS = 5 * 60 * 1000;

/** gRPC call metadata as lower-cased key → list of values (absent keys are simply missing). */
export type CallMetadata = Readonly<Record<string, readonly string[]>>;

export interface RegisteredKey {
  fingerprint: string;
  publicKey: PublicKey;
  /** The e-mail identity stored with the key (for providers `<id>@infra-provider.serviceaccount.omni.sidero.dev`). */
  identity: string;
  role: Role;
  expiration: Date;
  confirmed: boolean;
  /** The user the key belongs to still exists (deleting the service account drops it). */
  userExists: boolean;
  suspended: boolean;
}

/** Who made an authenticated call. */
export interface Caller {
  kind: 'user' | 'internal';
  identity: string;
  role: Role;
  fingerprint: string;
  /** Set when the identity is an infra-provider service account: the part before `@`. */
  infraProviderId?: string;
}

export interface KeyRegistryOptions {
  /** Server clock (tests skew it). */
  now?: () => Date;
  logger?: Logger;
  /**
   * Omni's unauthenticated local resource server: unsigned calls carrying `providerid` act as that provider,
   * other unsigned calls as a read-only user.
   */
  localMode?: boolean;
}

export interface ProviderKeyOptions {
  /** Service-account name written into the key string (`infra-provider:<id>` as omnictl does). */
  name?: string;
  /** Key lifetime in seconds (default 365 days). */
  lifetimeSeconds?: number;
  /** When the key was created (default now). */
  created?: Date;
}

export interface ProviderKey {
  /** What an operator hands the provider in --omni-service-account-key: base64 of {"name","pgp_key"}. */
  keyString: string;
  fingerprint: string;
  identity: string;
}

const invalidSignature = (): OmniError => new OmniError('unauthenticated', 'invalid signature');

/** The keys Omni knows and the check of a signed call against them. */
export class KeyRegistry {
  private readonly keys = new Map<string, RegisteredKey>();
  private readonly logger: Logger;
  private readonly clock: () => Date;
  private skewMs = 0;
  readonly localMode: boolean;

  constructor(opts: KeyRegistryOptions = {}) {
    this.clock = opts.now ?? (() => new Date());
    this.logger = opts.logger ?? silentLogger;
    this.localMode = opts.localMode ?? false;
  }

  /** The server's notion of now, including any injected skew. */
  now(): Date {
    return new Date(this.clock().getTime() + this.skewMs);
  }

  /** Fault injection: move the server clock by `ms` (positive = server ahead of clients). */
  skewClock(ms: number): void {
    this.skewMs = ms;
  }

  async register(
    armoredPublicKey: string,
    opts: { identity: string; role: Role; expiration?: Date; confirmed?: boolean },
  ): Promise<RegisteredKey> {
    const publicKey = await readKey({ armoredKey: armoredPublicKey });
    const keyExpiry = await publicKey.getExpirationTime();
    const expiration = opts.expiration ?? (keyExpiry instanceof Date ? keyExpiry : new Date(this.now().getTime() + 365 * 86400_000));
    const entry: RegisteredKey = {
      fingerprint: publicKey.getFingerprint().toLowerCase(),
      publicKey,
      identity: opts.identity,
      role: opts.role,
      expiration,
      confirmed: opts.confirmed ?? true,
      userExists: true,
      suspended: false,
    };
    this.keys.set(entry.fingerprint, entry);
    return entry;
  }

  /** Mints an infra-provider service-account key (ed25519 EdDSA-legacy, like omnictl) and registers its public half. */
  async createProviderKey(providerId: string, opts: ProviderKeyOptions = {}): Promise<ProviderKey> {
    const identity = `${providerId}${INFRA_PROVIDER_IDENTITY_SUFFIX}`;
    const lifetime = opts.lifetimeSeconds ?? 365 * 86400;
    const { privateKey, publicKey } = await generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      userIDs: [{ name: providerId, email: identity }],
      keyExpirationTime: lifetime,
      date: opts.created ?? this.clock(),
      format: 'armored',
    });
    const entry = await this.register(publicKey, { identity, role: 'InfraProvider' });
    const keyString = Buffer.from(JSON.stringify({ name: opts.name ?? `infra-provider:${providerId}`, pgp_key: privateKey }), 'utf8').toString(
      'base64',
    );
    return { keyString, fingerprint: entry.fingerprint, identity };
  }

  key(fingerprint: string): RegisteredKey | undefined {
    return this.keys.get(fingerprint);
  }

  /** Fault injection / admin actions on a registered key. */
  expire(fingerprint: string): void {
    const key = this.keys.get(fingerprint);
    if (key) key.expiration = new Date(this.now().getTime() - 1000);
  }

  revoke(fingerprint: string): void {
    this.keys.delete(fingerprint);
  }

  /**
   * Checks a call's signature like Omni: any failure is UNAUTHENTICATED "invalid signature" (the reason is logged
   * at debug level, never the signature itself). `method` is the full gRPC path, e.g. `/cosi.resource.State/Get`.
   */
  async authenticate(method: string, md: CallMetadata): Promise<Caller> {
    const header = first(md, 'x-sidero-signature');
    if (header === undefined || header === '') {
      if (this.localMode) {
        const providerId = first(md, 'providerid');
        if (providerId) return { kind: 'user', identity: `${providerId}${INFRA_PROVIDER_IDENTITY_SUFFIX}`, role: 'InfraProvider', fingerprint: '', infraProviderId: providerId };
        return { kind: 'user', identity: '', role: 'Reader', fingerprint: '' };
      }
      return this.reject(method, 'missing signature header');
    }
    const parts = header.split(' ');
    if (parts[0] !== 'siderov1') return this.reject(method, `unsupported signature version: ${parts[0] ?? ''}`);
    const [, identityField, fingerprint, encoded] = parts;
    if (identityField === undefined || fingerprint === undefined || encoded === undefined) {
      // The Go parser indexes the fourth field unconditionally; the panic surfaces as INTERNAL.
      throw new OmniError('internal', 'internal error: malformed signature header');
    }
    const signatureBytes = decodeStdBase64(encoded);
    if (!signatureBytes) return this.reject(method, 'signature is not valid base64');

    const key = this.keys.get(fingerprint);
    const now = this.now();
    if (!key) return this.reject(method, 'unknown key fingerprint');
    if (key.expiration.getTime() <= now.getTime()) return this.reject(method, 'public key expired');
    if (!key.confirmed) return this.reject(method, 'public key not confirmed');
    if (!key.userExists) return this.reject(method, 'user not found');

    const tsText = first(md, 'x-sidero-timestamp');
    if (tsText === undefined || tsText === '') return this.reject(method, 'missing timestamp');
    if (!/^[+-]?\d+$/.test(tsText)) return this.reject(method, 'timestamp is not an integer');
    const ts = Number(tsText) * 1000;
    if (now.getTime() + ALLOWED_SKEW_MS < ts || now.getTime() - ALLOWED_SKEW_MS > ts) {
      return this.reject(method, 'timestamp is outside of allowed skew');
    }

    const payloadText = first(md, 'x-sidero-payload');
    if (payloadText === undefined || payloadText === '') return this.reject(method, 'missing payload');
    const payload = parsePayload(payloadText);
    if (!payload) return this.reject(method, 'payload is not valid JSON of the expected shape');
    if (payload.method !== method) return this.reject(method, 'payload method does not match');
    for (const name of SIGNED_HEADERS) {
      if (!sameValues(payload.headers?.[name], md[name])) return this.reject(method, `payload header does not match: ${name}`);
    }

    const payloadBytes = new TextEncoder().encode(payloadText);
    const lifetime = await keyLifetimeMs(key.publicKey);
    const retryOffset = Math.min(ALLOWED_SKEW_MS, lifetime === undefined ? ALLOWED_SKEW_MS : lifetime / 2);
    const verified =
      (await verifyDetached(payloadBytes, signatureBytes, key.publicKey, now)) ||
      (await verifyDetached(payloadBytes, signatureBytes, key.publicKey, new Date(now.getTime() + retryOffset)));
    if (!verified) return this.reject(method, 'signature verification failed');

    const role: Role = key.suspended ? 'Reader' : key.role;
    const caller: Caller = { kind: 'user', identity: key.identity, role, fingerprint: key.fingerprint };
    if (key.identity.endsWith(INFRA_PROVIDER_IDENTITY_SUFFIX)) {
      caller.infraProviderId = key.identity.slice(0, -INFRA_PROVIDER_IDENTITY_SUFFIX.length);
    }
    return caller;
  }

  private reject(method: string, reason: string): never {
    this.logger.debug({ method, reason }, 'rejected call signature');
    throw invalidSignature();
  }
}

/** The internal actor (Omni's own controllers): bypasses authentication and access rules. */
export const INTERNAL_ACTOR: Caller = { kind: 'internal', identity: 'omni-internal', role: 'Admin', fingerprint: '' };

/** Reads a provider key string back (the fixture side; the provider has its own parser). */
export async function readProviderKeyString(keyString: string): Promise<{ name: string; fingerprint: string }> {
  const decoded = JSON.parse(Buffer.from(keyString, 'base64').toString('utf8')) as { name?: unknown; pgp_key?: unknown };
  if (typeof decoded.name !== 'string' || typeof decoded.pgp_key !== 'string') throw new Error('malformed provider key string');
  const key = await readPrivateKey({ armoredKey: decoded.pgp_key });
  return { name: decoded.name, fingerprint: key.getFingerprint().toLowerCase() };
}

function first(md: CallMetadata, key: string): string | undefined {
  return md[key]?.[0];
}

function decodeStdBase64(text: string): Uint8Array | undefined {
  if (text.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'base64'));
}

interface SignedPayload {
  headers?: Record<string, string[] | null>;
  method: string;
}

/** Mirrors Go's decoding into {headers map[string][]string; method string}: anything else is a decode error. */
function parsePayload(text: string): SignedPayload | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return undefined;
  const obj = raw as Record<string, unknown>;
  const method = obj.method ?? '';
  if (typeof method !== 'string') return undefined;
  const headers = obj.headers;
  if (headers === undefined || headers === null) return { method };
  if (typeof headers !== 'object' || Array.isArray(headers)) return undefined;
  const out: Record<string, string[] | null> = {};
  for (const [k, v] of Object.entries(headers as Record<string, unknown>)) {
    if (v === null) out[k] = null;
    else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) out[k] = v as string[];
    else return undefined;
  }
  return { headers: out, method };
}

/** Go's reflect.DeepEqual of []string: nil (null or missing) only equals an absent header; [] never does. */
function sameValues(signed: string[] | null | undefined, actual: readonly string[] | undefined): boolean {
  const signedNil = signed === null || signed === undefined;
  const actualNil = actual === undefined;
  if (signedNil || actualNil) return signedNil && actualNil;
  return signed.length === actual.length && signed.every((v, i) => v === actual[i]);
}

async function keyLifetimeMs(key: PublicKey): Promise<number | undefined> {
  const expiry = await key.getExpirationTime();
  if (!(expiry instanceof Date)) return undefined;
  return expiry.getTime() - key.getCreationTime().getTime();
}

async function verifyDetached(data: Uint8Array, signature: Uint8Array, key: PublicKey, date: Date): Promise<boolean> {
  try {
    const result = await verify({
      message: await createMessage({ binary: data }),
      signature: await readSignature({ binarySignature: signature }),
      verificationKeys: key,
      date,
      format: 'binary',
    });
    const first = result.signatures[0];
    if (!first || result.signatures.length !== 1) return false;
    await first.verified;
    return true;
  } catch {
    return false;
  }
}
