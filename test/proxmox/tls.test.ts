import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PveClient } from '../../src/proxmox/client.js';
import { PveConfigError, PveConnectionError } from '../../src/proxmox/errors.js';
import { TLS_PIN_MISMATCH, normalizeFingerprint } from '../../src/proxmox/tls.js';
import type { PveTlsOptions } from '../../src/proxmox/tls.js';
import { type PveTestServer, type TestPki, capturedLogger, makeTestPki, ok, startPveServer } from './pveTestServer.js';

let pki: TestPki;
let caServer: PveTestServer; // serves a leaf signed by the test CA
let selfServer: PveTestServer; // serves a self-signed certificate
let dir: string;
let clients: PveClient[] = [];

beforeAll(async () => {
  pki = await makeTestPki();
  caServer = await startPveServer(() => ok({ version: '9.1.3', release: '9.1', repoid: 'x' }), { key: pki.leafKey, cert: pki.leafCert });
  selfServer = await startPveServer(() => ok({ version: '8.4.1', release: '8.4', repoid: 'y' }), { key: pki.selfKey, cert: pki.selfCert });
  dir = mkdtempSync(join(tmpdir(), 'pve-tls-'));
});

afterAll(async () => {
  await caServer.close();
  await selfServer.close();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  clients = [];
});

function client(url: string, tls?: PveTlsOptions, logger?: ReturnType<typeof capturedLogger>['logger']): PveClient {
  const c = new PveClient({
    url,
    auth: { tokenId: 'omni@pve!provider', tokenSecret: 's3cr3t-token' },
    ...(tls ? { tls } : {}),
    ...(logger ? { logger } : {}),
  });
  clients.push(c);
  return c;
}

describe('TLS trust', () => {
  it('rejects a certificate the system CAs do not know', async () => {
    const err = (await client(caServer.url).version().catch((e: unknown) => e)) as PveConnectionError;
    expect(err).toBeInstanceOf(PveConnectionError);
    expect(err.mayHaveExecuted).toBe(false);
    expect(caServer.requests).toHaveLength(0);
  });

  it('trusts the cluster CA from a file', async () => {
    const caFile = join(dir, 'pve-root-ca.pem');
    writeFileSync(caFile, pki.caCert);
    await expect(client(caServer.url, { caFile }).version()).resolves.toMatchObject({ version: '9.1.3' });
  });

  it('trusts the cluster CA given as PEM, and still rejects other certificates', async () => {
    await expect(client(caServer.url, { caPem: pki.caCert }).version()).resolves.toMatchObject({ version: '9.1.3' });
    const err = await client(selfServer.url, { caPem: pki.caCert }).version().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveConnectionError);
  });

  it('fails early on an unreadable CA file', () => {
    expect(() => client(caServer.url, { caFile: join(dir, 'missing.pem') })).toThrow(PveConfigError);
    expect(() => client(caServer.url, { caPem: 'not a pem' })).toThrow(PveConfigError);
  });

  it('accepts a self-signed certificate whose SHA-256 fingerprint is pinned, in any spelling', async () => {
    const spelled = pki.selfFingerprint256.replace(/:/g, '').toLowerCase();
    await expect(client(selfServer.url, { fingerprint: spelled }).version()).resolves.toMatchObject({ version: '8.4.1' });
    await expect(client(selfServer.url, { fingerprint: pki.selfFingerprint256 }).version()).resolves.toMatchObject({
      version: '8.4.1',
    });
  });

  it('refuses a certificate that does not match the pin, before sending anything', async () => {
    const before = caServer.requests.length;
    const err = (await client(caServer.url, { fingerprint: pki.selfFingerprint256 })
      .version()
      .catch((e: unknown) => e)) as PveConnectionError;
    expect(err).toBeInstanceOf(PveConnectionError);
    expect(err.code).toBe(TLS_PIN_MISMATCH);
    expect(err.mayHaveExecuted).toBe(false);
    expect(err.message).toContain('does not match the pinned fingerprint');
    expect(caServer.requests.length).toBe(before);
  });

  it('rejects a malformed fingerprint', () => {
    expect(() => normalizeFingerprint('AA:BB')).toThrow(PveConfigError);
    expect(normalizeFingerprint('ab'.repeat(32))).toBe(Array(32).fill('AB').join(':'));
  });

  it('skips verification when insecureSkipVerify is set, and warns once', async () => {
    const cap = capturedLogger();
    const c = client(selfServer.url, { insecureSkipVerify: true }, cap.logger);
    await c.version();
    await c.version();
    const warnings = cap
      .text()
      .split('\n')
      .filter((l) => l.includes('"level":"warn"'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('insecureSkipVerify');
  });
});
