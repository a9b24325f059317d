// Test-side siderov1 signer (deliberately independent of src/cosi/signing.ts) used to drive the in-process Omni.
import { createMessage, readPrivateKey, sign, type PrivateKey } from 'openpgp';

export interface DecodedKey {
  name: string;
  key: PrivateKey;
  fingerprint: string;
}

export async function decodeKeyString(keyString: string): Promise<DecodedKey> {
  const json = JSON.parse(Buffer.from(keyString, 'base64').toString('utf8')) as { name: string; pgp_key: string };
  const key = await readPrivateKey({ armoredKey: json.pgp_key });
  return { name: json.name, key, fingerprint: key.getFingerprint() };
}

export function payloadFor(method: string, timestamp: string, headersOverride?: string): string {
  const headers =
    headersOverride ??
    `{"authorization":null,"cluster":null,"context":null,"fieldSelectors":null,"namespace":null,"nodes":null,"runtime":null,"selectors":null,"uid":null,"x-sidero-timestamp":["${timestamp}"]}`;
  return `{"headers":${headers},"method":"${method}"}`;
}

export interface SignOptions {
  /** Unix seconds to put in x-sidero-timestamp (default: now). */
  timestamp?: number;
  /** Payload text to send (default: the canonical one for method and timestamp). */
  payload?: string;
  /** Payload text to actually sign (default: the sent payload). */
  signedPayload?: string;
  /** Fingerprint to claim (default: the key's). */
  fingerprint?: string;
}

/** Returns the metadata (lower-case key → values) a signed call carries. */
export async function signedMetadata(method: string, signer: DecodedKey, opts: SignOptions = {}): Promise<Record<string, string[]>> {
  const ts = String(opts.timestamp ?? Math.floor(Date.now() / 1000));
  const payload = opts.payload ?? payloadFor(method, ts);
  const toSign = opts.signedPayload ?? payload;
  const signature = await sign({
    message: await createMessage({ binary: new TextEncoder().encode(toSign) }),
    signingKeys: signer.key,
    detached: true,
    format: 'binary',
  });
  const b64 = Buffer.from(signature).toString('base64');
  return {
    providerid: [signer.name.replace(/^infra-provider:/, '')],
    'x-sidero-timestamp': [ts],
    'x-sidero-payload': [payload],
    'x-sidero-signature': [`siderov1 ${signer.name} ${opts.fingerprint ?? signer.fingerprint} ${b64}`],
  };
}
