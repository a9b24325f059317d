// Omni's join tokens as the server reads them: plain tokens and `v1:`/`v2:` tokens carrying extra data signed with
// HMAC-SHA256 over Go's canonical JSON of that data (sorted keys, HTML-escaped), keyed by the plain token.
// Written apart from the provider's encoder (src/omni/join.ts) on purpose: a shared misunderstanding would pass here.
import { createHmac, timingSafeEqual } from 'node:crypto';

export type JoinTokenVersion = 'plain' | '1' | '2';

export interface ParsedJoinToken {
  version: JoinTokenVersion;
  /** The token itself for a plain token. */
  plain?: string;
  extraData?: Record<string, string>;
  signature?: Uint8Array;
}

/** Go's json.Marshal of a string→string map: keys sorted, `<`, `>`, `&`, U+2028, U+2029 escaped. */
export function goCanonicalJson(data: Readonly<Record<string, string>>): string {
  const sorted: Record<string, string> = {};
  for (const key of Object.keys(data).sort()) sorted[key] = data[key] ?? '';
  return JSON.stringify(sorted)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

export function extraDataSignature(plainToken: string, extraData: Readonly<Record<string, string>>): Uint8Array {
  return new Uint8Array(createHmac('sha256', plainToken).update(goCanonicalJson(extraData), 'utf8').digest());
}

/** Builds a `v1:`/`v2:` token as Omni's Go library does (used by the fake for fixtures and tests). */
export function encodeJoinToken(plainToken: string, version: '1' | '2', extraData: Readonly<Record<string, string>>): string {
  const signature = Buffer.from(extraDataSignature(plainToken, extraData)).toString('base64');
  const body = `{"extra_data":${goCanonicalJson(extraData)},"signature":${JSON.stringify(signature)}}`;
  return `v${version}:${Buffer.from(body, 'utf8').toString('base64')}`;
}

/** Go's strings.TrimLeft: strips leading characters that appear anywhere in `cutset`. */
function trimLeftCutset(value: string, cutset: string): string {
  let i = 0;
  while (i < value.length && cutset.includes(value.charAt(i))) i++;
  return value.slice(i);
}

/** Parses a token like Omni; throws with Go-like text on malformed base64/JSON. */
export function parseJoinToken(value: string): ParsedJoinToken {
  let version: JoinTokenVersion = 'plain';
  let prefix = '';
  if (value.startsWith('v1:')) {
    version = '1';
    prefix = 'v1:';
  } else if (value.startsWith('v2:')) {
    version = '2';
    prefix = 'v2:';
  }
  if (version === 'plain') return { version, plain: value };
  const encoded = trimLeftCutset(value, prefix);
  if (encoded.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(encoded)) {
    throw new Error('illegal base64 data at input byte 0');
  }
  const body: unknown = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('json: cannot unmarshal into Go value of type jointoken.JoinToken');
  const obj = body as Record<string, unknown>;
  const parsed: ParsedJoinToken = { version };
  if (obj.extra_data !== undefined && obj.extra_data !== null) {
    if (typeof obj.extra_data !== 'object' || Array.isArray(obj.extra_data)) throw new Error('json: cannot unmarshal extra_data');
    const extra: Record<string, string> = {};
    for (const [k, v] of Object.entries(obj.extra_data as Record<string, unknown>)) {
      if (typeof v !== 'string') throw new Error('json: cannot unmarshal extra_data value');
      extra[k] = v;
    }
    parsed.extraData = extra;
  }
  if (obj.signature !== undefined && obj.signature !== null) {
    if (typeof obj.signature !== 'string') throw new Error('json: cannot unmarshal signature');
    parsed.signature = new Uint8Array(Buffer.from(obj.signature, 'base64'));
  }
  return parsed;
}

/** True when the token is valid for `plainToken`: equal for plain tokens, matching HMAC for signed ones. */
export function joinTokenValidFor(token: ParsedJoinToken, plainToken: string): boolean {
  if (token.signature === undefined) return token.plain === plainToken;
  const expected = extraDataSignature(plainToken, token.extraData ?? {});
  return expected.length === token.signature.length && timingSafeEqual(expected, token.signature);
}
