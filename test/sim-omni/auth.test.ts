import { beforeAll, describe, expect, it } from 'vitest';
import { KeyRegistry } from '../../src/sim/omni/auth.js';
import { GrpcCode, OmniError } from '../../src/sim/omni/errors.js';
import { decodeKeyString, payloadFor, signedMetadata, type DecodedKey } from './sign-fixture.js';

const LIST = '/cosi.resource.State/List';

async function rejection(p: Promise<unknown>): Promise<OmniError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof OmniError) return err;
    throw err;
  }
  throw new Error('expected the call to be rejected');
}

describe('KeyRegistry.authenticate', () => {
  const registry = new KeyRegistry();
  let proxmox: DecodedKey;
  let stranger: DecodedKey;
  let keyString = '';

  beforeAll(async () => {
    const minted = await registry.createProviderKey('proxmox');
    keyString = minted.keyString;
    proxmox = await decodeKeyString(minted.keyString);
    // A key Omni has never seen.
    const other = new KeyRegistry();
    stranger = await decodeKeyString((await other.createProviderKey('proxmox')).keyString);
  });

  it('mints a key string the way omnictl does: base64 JSON with name and armored private key', () => {
    const json = JSON.parse(Buffer.from(keyString, 'base64').toString('utf8')) as Record<string, string>;
    expect(json.name).toBe('infra-provider:proxmox');
    expect(json.pgp_key).toMatch(/^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    expect(proxmox.fingerprint).toMatch(/^[0-9a-f]{40}$/);
    expect(proxmox.key.getAlgorithmInfo()).toMatchObject({ algorithm: 'eddsaLegacy', curve: 'ed25519Legacy' });
  });

  it('accepts a correctly signed call and binds the identity to the provider ID', async () => {
    const caller = await registry.authenticate(LIST, await signedMetadata(LIST, proxmox));
    expect(caller).toMatchObject({
      role: 'InfraProvider',
      infraProviderId: 'proxmox',
      identity: 'proxmox@infra-provider.serviceaccount.omni.sidero.dev',
    });
  });

  it('rejects a call without a signature', async () => {
    const err = await rejection(registry.authenticate(LIST, { providerid: ['proxmox'] }));
    expect(err.code).toBe(GrpcCode.UNAUTHENTICATED);
    expect(err.message).toBe('invalid signature');
  });

  it('rejects an unknown key and a signature made by another key than the claimed fingerprint', async () => {
    const unknown = await rejection(registry.authenticate(LIST, await signedMetadata(LIST, stranger)));
    expect(unknown.code).toBe(GrpcCode.UNAUTHENTICATED);
    const wrongKey = await rejection(registry.authenticate(LIST, await signedMetadata(LIST, stranger, { fingerprint: proxmox.fingerprint })));
    expect(wrongKey.message).toBe('invalid signature');
    const upper = await rejection(registry.authenticate(LIST, await signedMetadata(LIST, proxmox, { fingerprint: proxmox.fingerprint.toUpperCase() })));
    expect(upper.code).toBe(GrpcCode.UNAUTHENTICATED);
  });

  it('rejects timestamps more than five minutes away from the server clock', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect(registry.authenticate(LIST, await signedMetadata(LIST, proxmox, { timestamp: now - 240 }))).resolves.toBeDefined();
    const stale = await rejection(registry.authenticate(LIST, await signedMetadata(LIST, proxmox, { timestamp: now - 360 })));
    expect(stale.code).toBe(GrpcCode.UNAUTHENTICATED);
    const skewed = new KeyRegistry();
    const k = await decodeKeyString((await skewed.createProviderKey('p')).keyString);
    skewed.skewClock(10 * 60 * 1000);
    expect((await rejection(skewed.authenticate(LIST, await signedMetadata(LIST, k)))).message).toBe('invalid signature');
    skewed.skewClock(0);
    await expect(skewed.authenticate(LIST, await signedMetadata(LIST, k))).resolves.toBeDefined();
  });

  it('rejects tampered payloads: other method, [] instead of null, payload differing from the signed bytes', async () => {
    const ts = String(Math.floor(Date.now() / 1000));
    const otherMethod = await signedMetadata(LIST, proxmox, { payload: payloadFor('/cosi.resource.State/Get', ts), timestamp: Number(ts) });
    expect((await rejection(registry.authenticate(LIST, otherMethod))).code).toBe(GrpcCode.UNAUTHENTICATED);

    const emptyList = `{"authorization":[],"cluster":null,"context":null,"fieldSelectors":null,"namespace":null,"nodes":null,"runtime":null,"selectors":null,"uid":null,"x-sidero-timestamp":["${ts}"]}`;
    const withEmpty = await signedMetadata(LIST, proxmox, { payload: payloadFor(LIST, ts, emptyList), timestamp: Number(ts) });
    expect((await rejection(registry.authenticate(LIST, withEmpty))).code).toBe(GrpcCode.UNAUTHENTICATED);

    // Whitespace difference: same JSON meaning, different bytes than what was signed.
    const sent = payloadFor(LIST, ts).replace('"method":', '"method": ');
    const reserialized = await signedMetadata(LIST, proxmox, { payload: sent, signedPayload: payloadFor(LIST, ts), timestamp: Number(ts) });
    expect((await rejection(registry.authenticate(LIST, reserialized))).code).toBe(GrpcCode.UNAUTHENTICATED);

    // A signed header that is present in the call but missing from the payload.
    const md = await signedMetadata(LIST, proxmox);
    md.runtime = ['Talos'];
    expect((await rejection(registry.authenticate(LIST, md))).code).toBe(GrpcCode.UNAUTHENTICATED);
  });

  it('rejects an expired key and treats a three-field header as an internal error', async () => {
    const reg = new KeyRegistry();
    const minted = await reg.createProviderKey('p');
    const k = await decodeKeyString(minted.keyString);
    const md = await signedMetadata(LIST, k);
    await expect(reg.authenticate(LIST, md)).resolves.toBeDefined();
    const header = md['x-sidero-signature']?.[0] ?? '';
    const short = { ...md, 'x-sidero-signature': [header.split(' ').slice(0, 3).join(' ')] };
    expect((await rejection(reg.authenticate(LIST, short))).code).toBe(GrpcCode.INTERNAL);
    reg.expire(minted.fingerprint);
    expect((await rejection(reg.authenticate(LIST, md))).code).toBe(GrpcCode.UNAUTHENTICATED);
  });

  it('in local mode lets unsigned calls act as the provider named in providerid', async () => {
    const local = new KeyRegistry({ localMode: true });
    expect(await local.authenticate(LIST, { providerid: ['proxmox'] })).toMatchObject({ role: 'InfraProvider', infraProviderId: 'proxmox' });
    expect((await local.authenticate(LIST, {})).role).toBe('Reader');
  });
});
