import { describe, expect, it } from 'vitest';
import { encodeJoinToken, extraDataSignature, joinTokenValidFor, parseJoinToken } from '../../src/sim/omni/jointoken.js';

// Vectors from Omni's own unit tests (omni-protocol.md §5.4).
const PROVIDER_ONLY =
  'v2:eyJleHRyYV9kYXRhIjp7Im9tbmkuc2lkZXJvLmRldi9pbmZyYS1wcm92aWRlci1pZCI6InRlc3QifSwic2lnbmF0dXJlIjoiWTNpZ285V2xJSVZOWWpXZmgyWlg5NnpnWW5UQjlwWTI3ZEJaVnJwNDJMZz0ifQ==';
const WITH_REQUEST =
  'v2:eyJleHRyYV9kYXRhIjp7Im9tbmkuc2lkZXJvLmRldi9pbmZyYS1wcm92aWRlci1pZCI6InRlc3QiLCJvbW5pLnNpZGVyby5kZXYvbWFjaGluZS1yZXF1ZXN0IjoicmVxdWVzdDEifSwic2lnbmF0dXJlIjoiellrTFRwOUVIanlwTGxrZG1mZjV2Z1A1SERXRktUUXBGR281REp2TDV4MD0ifQ==';

describe('join tokens', () => {
  it('reproduces the HMACs and encodings of the reference vectors', () => {
    const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
    expect(b64(extraDataSignature('abcd', { 'omni.sidero.dev/infra-provider-id': 'test' }))).toBe('Y3igo9WlIIVNYjWfh2ZX96zgYnTB9pY27dBZVrp42Lg=');
    // Key order in the input must not matter: the signature is over the sorted canonical JSON.
    const extra = { 'omni.sidero.dev/machine-request': 'request1', 'omni.sidero.dev/infra-provider-id': 'test' };
    expect(b64(extraDataSignature('abcd', extra))).toBe('zYkLTp9EHjypLlkdmff5vgP5HDWFKTQpFGo5DJvL5x0=');
    expect(encodeJoinToken('abcd', '2', { 'omni.sidero.dev/infra-provider-id': 'test' })).toBe(PROVIDER_ONLY);
    expect(encodeJoinToken('abcd', '2', extra)).toBe(WITH_REQUEST);
  });

  it('validates the vectors against the right plain token only', () => {
    const parsed = parseJoinToken(WITH_REQUEST);
    expect(parsed.version).toBe('2');
    expect(parsed.extraData).toEqual({ 'omni.sidero.dev/infra-provider-id': 'test', 'omni.sidero.dev/machine-request': 'request1' });
    expect(joinTokenValidFor(parsed, 'abcd')).toBe(true);
    expect(joinTokenValidFor(parsed, 'abce')).toBe(false);
    expect(joinTokenValidFor(parseJoinToken(PROVIDER_ONLY), 'abcd')).toBe(true);
  });

  it('rejects a token whose extra data was altered after signing', () => {
    const body = JSON.parse(Buffer.from(WITH_REQUEST.slice(3), 'base64').toString()) as { extra_data: Record<string, string> };
    body.extra_data['omni.sidero.dev/machine-request'] = 'request2';
    const forged = `v2:${Buffer.from(JSON.stringify(body)).toString('base64')}`;
    expect(joinTokenValidFor(parseJoinToken(forged), 'abcd')).toBe(false);
  });

  it('treats unprefixed tokens as plain and compares them verbatim', () => {
    const plain = parseJoinToken('abcd');
    expect(plain.version).toBe('plain');
    expect(joinTokenValidFor(plain, 'abcd')).toBe(true);
    expect(joinTokenValidFor(plain, 'abcde')).toBe(false);
    expect(() => parseJoinToken('v2:***')).toThrow();
  });
});
