import * as grpc from '@grpc/grpc-js';
import * as openpgp from 'openpgp';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  decodeServiceAccountKey,
  ServiceAccountKeyError,
  signaturePayload,
  signMetadata,
  type ServiceAccountKey,
} from '../../src/cosi/signing.js';

const EMAIL = 'proxmox@infra-provider.serviceaccount.omni.sidero.dev';
const FIXED_NOW = new Date('2026-01-01T00:00:00Z');

async function generateArmored(opts: { email?: string; passphrase?: string; date?: Date; lifetimeSeconds?: number } = {}) {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ name: 'proxmox (linux/amd64)', email: opts.email ?? EMAIL }],
    format: 'armored',
    date: opts.date ?? new Date(FIXED_NOW.getTime() - 3600_000),
    keyExpirationTime: opts.lifetimeSeconds ?? 365 * 24 * 3600,
    ...(opts.passphrase !== undefined ? { passphrase: opts.passphrase } : {}),
  });
  return { privateKey, publicKey };
}

function keyString(obj: unknown): string {
  return Buffer.from(JSON.stringify(obj)).toString('base64');
}

/** The server's check (Omni §2.3), written step by step with openpgp directly. */
async function verifyLikeOmni(
  md: grpc.Metadata,
  method: string,
  publicKeys: Map<string, string>,
  serverNow: Date,
): Promise<string> {
  const sigHeader = md.get('x-sidero-signature');
  if (sigHeader.length !== 1) return 'no signature';
  const fields = String(sigHeader[0]).split(' ');
  if (fields.length !== 4 || fields[0] !== 'siderov1') return 'malformed';
  const [, , fingerprint, b64] = fields as [string, string, string, string];
  const armoredPublic = publicKeys.get(fingerprint);
  if (!armoredPublic) return 'unknown key';
  const ts = Number(String(md.get('x-sidero-timestamp')[0]));
  if (!Number.isInteger(ts) || Math.abs(ts - serverNow.getTime() / 1000) > 300) return 'clock skew';
  const payloadText = String(md.get('x-sidero-payload')[0]);
  const payload = JSON.parse(payloadText) as { method: string; headers: Record<string, unknown> };
  if (payload.method !== method) return 'method mismatch';
  for (const h of ['authorization', 'cluster', 'context', 'fieldSelectors', 'namespace', 'nodes', 'runtime', 'selectors', 'uid', 'x-sidero-timestamp']) {
    const actual = md.get(h.toLowerCase()).map(String);
    const claimed = payload.headers[h];
    if (actual.length === 0) {
      if (claimed !== null && claimed !== undefined) return `header ${h} mismatch`;
    } else if (JSON.stringify(claimed) !== JSON.stringify(actual)) return `header ${h} mismatch`;
  }
  const signature = await openpgp.readSignature({ binarySignature: Buffer.from(b64, 'base64') });
  const packet = signature.packets[0] as unknown as { signatureType: number };
  if (packet.signatureType !== openpgp.enums.signature.binary) return 'not a binary signature';
  const message = await openpgp.createMessage({ binary: new TextEncoder().encode(payloadText) });
  const result = await openpgp.verify({
    message,
    signature,
    verificationKeys: await openpgp.readKey({ armoredKey: armoredPublic }),
    date: serverNow,
  });
  try {
    await result.signatures[0]!.verified;
  } catch {
    return 'bad signature';
  }
  return 'ok';
}

describe('service account key decoding', () => {
  let good: { privateKey: string; publicKey: string };
  beforeAll(async () => {
    good = await generateArmored();
  });

  it('decodes the identity, lower-case fingerprint, provider ID and expiry', async () => {
    const key = await decodeServiceAccountKey(keyString({ name: 'infra-provider:proxmox', pgp_key: good.privateKey }), {
      providerId: 'proxmox',
      now: FIXED_NOW,
    });
    expect(key.identity).toBe('infra-provider:proxmox');
    expect(key.fingerprint).toMatch(/^[0-9a-f]{40}$/);
    expect(key.fingerprint).toBe((await openpgp.readKey({ armoredKey: good.publicKey })).getFingerprint());
    expect(key.providerId).toBe('proxmox');
    expect(key.expiresAt?.getTime()).toBeGreaterThan(FIXED_NOW.getTime());
  });

  it('rejects malformed key strings with a reason and without echoing the key', async () => {
    const cases: [string, RegExp][] = [
      ['not base64 at all!', /not base64/],
      [Buffer.from('hello world').toString('base64'), /does not decode to JSON/],
      [keyString({ name: 'infra-provider:proxmox' }), /missing field\(s\): pgp_key/],
      [keyString({ pgp_key: 'x' }), /missing field\(s\): name/],
      [keyString({ name: 'infra-provider:proxmox', pgp_key: 'garbage' }), /not an OpenPGP private key/],
    ];
    for (const [input, pattern] of cases) {
      const err = await decodeServiceAccountKey(input, { now: FIXED_NOW }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ServiceAccountKeyError);
      expect((err as Error).message).toMatch(pattern);
    }
    const err = (await decodeServiceAccountKey(keyString({ name: 'n', pgp_key: good.privateKey }), { providerId: 'other', now: FIXED_NOW }).catch(
      (e: unknown) => e,
    )) as Error;
    expect(err.message).not.toContain('PRIVATE KEY');
  });

  it('rejects passphrase-protected keys', async () => {
    const enc = await generateArmored({ passphrase: 'secret-pass' });
    await expect(decodeServiceAccountKey(keyString({ name: 'infra-provider:proxmox', pgp_key: enc.privateKey }), { now: FIXED_NOW })).rejects.toThrow(
      /passphrase-protected/,
    );
  });

  it('rejects expired keys, saying when they expired', async () => {
    const old = await generateArmored({ date: new Date('2024-01-01T00:00:00Z'), lifetimeSeconds: 3600 });
    await expect(decodeServiceAccountKey(keyString({ name: 'infra-provider:proxmox', pgp_key: old.privateKey }), { now: FIXED_NOW })).rejects.toThrow(
      /expired on 2024-01-01T01:00:00.000Z/,
    );
  });

  it('requires the key to belong to the infra provider given by --id', async () => {
    const ks = keyString({ name: 'infra-provider:proxmox', pgp_key: good.privateKey });
    await expect(decodeServiceAccountKey(ks, { providerId: 'pve2', now: FIXED_NOW })).rejects.toThrow(
      /belongs to infra provider "proxmox" but --id is "pve2"/,
    );
    const user = await generateArmored({ email: 'ci@serviceaccount.omni.sidero.dev' });
    await expect(decodeServiceAccountKey(keyString({ name: 'ci', pgp_key: user.privateKey }), { providerId: 'proxmox', now: FIXED_NOW })).rejects.toThrow(
      /not an infra provider key/,
    );
    // The UI writes just "<id>" as name; the e-mail still binds the key to the provider.
    const key = await decodeServiceAccountKey(keyString({ name: 'proxmox', pgp_key: good.privateKey }), { providerId: 'proxmox', now: FIXED_NOW });
    expect(key.providerId).toBe('proxmox');
  });
});

describe('request signing', () => {
  let key: ServiceAccountKey;
  let publicKeys: Map<string, string>;
  beforeAll(async () => {
    const pair = await generateArmored();
    key = await decodeServiceAccountKey(keyString({ name: 'infra-provider:proxmox', pgp_key: pair.privateKey }), { now: FIXED_NOW });
    publicKeys = new Map([[key.fingerprint, pair.publicKey]]);
  });

  it('builds the payload byte for byte as Omni expects, with null for absent headers', () => {
    const md = new grpc.Metadata();
    md.set('x-sidero-timestamp', '1767225600');
    expect(signaturePayload('/cosi.resource.State/List', md)).toBe(
      '{"headers":{"authorization":null,"cluster":null,"context":null,"fieldSelectors":null,"namespace":null,"nodes":null,' +
        '"runtime":null,"selectors":null,"uid":null,"x-sidero-timestamp":["1767225600"]},"method":"/cosi.resource.State/List"}',
    );
  });

  it('produces headers the server-side verification accepts', async () => {
    const md = new grpc.Metadata();
    md.set('providerid', 'proxmox');
    await signMetadata(key, '/cosi.resource.State/Get', md, FIXED_NOW);
    expect(md.get('x-sidero-timestamp')).toEqual(['1767225600']);
    const sig = String(md.get('x-sidero-signature')[0]).split(' ');
    expect(sig.slice(0, 3)).toEqual(['siderov1', 'infra-provider:proxmox', key.fingerprint]);
    expect(await verifyLikeOmni(md, '/cosi.resource.State/Get', publicKeys, FIXED_NOW)).toBe('ok');
  });

  it('is rejected by the verifier when replayed to another method, tampered with, or too old', async () => {
    const md = new grpc.Metadata();
    await signMetadata(key, '/cosi.resource.State/Get', md, FIXED_NOW);
    expect(await verifyLikeOmni(md, '/cosi.resource.State/Destroy', publicKeys, FIXED_NOW)).toBe('method mismatch');
    expect(await verifyLikeOmni(md, '/cosi.resource.State/Get', publicKeys, new Date(FIXED_NOW.getTime() + 301_000))).toBe('clock skew');
    const tampered = md.clone();
    tampered.set('x-sidero-payload', String(md.get('x-sidero-payload')[0]).replace('"uid":null', '"uid": null'));
    expect(await verifyLikeOmni(tampered, '/cosi.resource.State/Get', publicKeys, FIXED_NOW)).toBe('bad signature');
  });

  it('signs headers that are present and replaces stale signatures on re-signing', async () => {
    const md = new grpc.Metadata();
    md.set('namespace', 'infra-provider');
    await signMetadata(key, '/cosi.resource.State/Get', md, FIXED_NOW);
    const later = new Date(FIXED_NOW.getTime() + 10_000);
    await signMetadata(key, '/cosi.resource.State/Get', md, later);
    expect(md.get('x-sidero-signature')).toHaveLength(1);
    expect(md.get('x-sidero-payload')).toHaveLength(1);
    expect(String(md.get('x-sidero-payload')[0])).toContain('"namespace":["infra-provider"]');
    expect(await verifyLikeOmni(md, '/cosi.resource.State/Get', publicKeys, later)).toBe('ok');
  });
});
