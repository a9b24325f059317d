// TLS to Omni: a private CA given as caCertificates (omni.caFile) is trusted on top of the public CAs, a certificate
// nobody vouches for fails with a message that says so, host names get SNI and IP addresses do not (no Node DEP0123
// warning on stderr for https://<ip> endpoints).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { omniTrustedCas } from '../../src/cosi/grpc.js';
import { connectOmni } from '../../src/cosi/omni-client.js';
import { SysVersionKind } from '../../src/cosi/resources.js';
import { StateServer } from './state-server.js';

const REPO_ROOT = new URL('../..', import.meta.url).pathname;

interface Pki {
  caCert: string;
  serverKey: string;
  serverCert: string;
}

/** A private CA and a server certificate it issued for localhost and 127.0.0.1. */
async function privatePki(name: string): Promise<Pki> {
  const ca = await generate([{ name: 'commonName', value: `${name} private CA` }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true },
    ],
  });
  const server = await generate([{ name: 'commonName', value: 'omni.test' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
    ],
  });
  return { caCert: ca.cert, serverKey: server.private, serverCert: server.cert };
}

let pki: Pki;
let other: Pki;
let server: StateServer;
let endpoint: string;
let dir: string;

beforeAll(async () => {
  [pki, other] = await Promise.all([privatePki('omni'), privatePki('other')]);
  server = new StateServer();
  endpoint = await server.start({ tls: { key: pki.serverKey, certChain: pki.serverCert } });
  dir = mkdtempSync(join(tmpdir(), 'omni-ca-'));
  writeFileSync(join(dir, 'ca.pem'), pki.caCert);
}, 30_000);

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function listWith(settings: { endpoint?: string; caCertificates?: Buffer | string; insecureSkipVerify?: boolean }): Promise<number> {
  const omni = connectOmni({ endpoint, providerId: 'proxmox', ...settings });
  try {
    return (await omni.state.list(SysVersionKind, {})).length;
  } finally {
    omni.close();
  }
}

describe('Omni over TLS with a private CA', () => {
  it('connects to https://127.0.0.1 when the CA is configured', async () => {
    expect(await listWith({ caCertificates: Buffer.from(pki.caCert) })).toBe(0);
  });

  it('connects to https://localhost (a host name: sent as SNI, checked against the certificate)', async () => {
    expect(await listWith({ endpoint: endpoint.replace('127.0.0.1', 'localhost'), caCertificates: pki.caCert })).toBe(0);
  });

  it('without the CA fails with a certificate error that names the fix', async () => {
    const err = (await listWith({}).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/UNAVAILABLE/);
    expect(err.message).toMatch(/the TLS certificate of Omni at 127\.0\.0\.1 was not accepted: unable to (get local issuer|verify the first) certificate \((UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE)\)/);
    expect(err.message).toMatch(/OMNI_CA_FILE \(omni\.caFile\)/);
  });

  it('with another CA fails the same way (the configured CA is the one that must have issued the certificate)', async () => {
    const err = (await listWith({ caCertificates: other.caCert }).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/the TLS certificate of Omni at 127\.0\.0\.1 was not accepted/);
  });

  it('connects with insecureSkipVerify and no CA', async () => {
    expect(await listWith({ insecureSkipVerify: true })).toBe(0);
  });

  it('trusts the CA file in addition to the public CAs, not instead of them', () => {
    const cas = omniTrustedCas(pki.caCert);
    expect(cas).toEqual([...rootCertificates, pki.caCert]);
    expect(omniTrustedCas(undefined)).toBeUndefined();
  });

  it('a client process connecting to https://127.0.0.1 prints no DEP0123 (TLS ServerName set to an IP address), other warnings still', async () => {
    const script = join(REPO_ROOT, 'test', 'cosi', 'fixtures', 'tls-client.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', script, endpoint, join(dir, 'ca.pem')], {
      cwd: REPO_ROOT,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect({ code, stdout }).toEqual({ code: 0, stdout: 'listed 0\n' });
    expect(stderr).toContain('TEST_CANARY');
    expect(stderr).not.toMatch(/DEP0123|ServerName to an IP address/);
  }, 30_000);
});
