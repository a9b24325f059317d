// `doctor` against the Proxmox simulator and the in-process Omni (both on 127.0.0.1): a healthy setup passes, and
// each broken piece (fingerprint, privilege, bridge, registration, key, identity, clock, token) is named with its fix.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { doctor } from '../../src/cli/doctor.js';
import { runCli } from '../../src/cli/index.js';
import type { DoctorFinding } from '../../src/ops/doctor.js';
import { silentLogger } from '../../src/log.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { providerToken, testFixture } from '../helpers/pveHarness.js';
import { ok, startPveServer } from '../proxmox/pveTestServer.js';
import { REQUIRED_PRIVILEGES } from '../../src/ops/doctor.js';

let omni: InProcessOmni;
let sim: PveSim;
let server: PveSimServer;
let key: string;

beforeAll(async () => {
  omni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger });
  sim = new PveSim({ fixture: testFixture(), clock: new ScaledClock(0.002), logger: silentLogger });
  server = await startPveSimServer(sim, { https: true });
  key = await omni.createProviderKey('proxmox');
}, 30_000);

afterAll(async () => {
  await server?.close();
  await omni?.close();
});

function env(overrides: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = {
    OMNI_ENDPOINT: omni.endpoint,
    OMNI_SERVICE_ACCOUNT_KEY: key,
    PROXMOX_URL: server.url,
    PROXMOX_TOKEN_ID: providerToken.tokenId,
    PROXMOX_TOKEN_SECRET: providerToken.tokenSecret,
    PROXMOX_FINGERPRINT: server.fingerprint!,
    ...overrides,
  };
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k];
  return e;
}

async function run(argv: string[], e: NodeJS.ProcessEnv, now?: () => number): Promise<{ code: number; findings: DoctorFinding[]; text: string }> {
  let text = '';
  const io = { env: e, stdout: (t: string) => void (text += t), timeoutMs: 5000, ...(now ? { now } : {}) };
  const code = await doctor(['--json', ...argv], io);
  return { code, findings: JSON.parse(text) as DoctorFinding[], text };
}

const statusOf = (f: DoctorFinding[], check: string): string[] => f.filter((x) => x.check === check).map((x) => x.status);
const messageOf = (f: DoctorFinding[], check: string): string => f.filter((x) => x.check === check).map((x) => x.message).join(' | ');

describe('doctor', () => {
  it('passes a working setup: every check OK or WARN, exit 0, no secret printed', async () => {
    const r = await run([], env());
    expect(r.code).toBe(0);
    expect(r.findings.filter((f) => f.status === 'FAIL')).toEqual([]);
    for (const check of ['config', 'proxmox.connect', 'proxmox.tls', 'proxmox.auth', 'clock', 'proxmox.nodes', 'proxmox.storage', 'omni.key', 'omni.identity', 'omni.api', 'omni.registered']) {
      expect(statusOf(r.findings, check), check).toContain('OK');
    }
    expect(messageOf(r.findings, 'proxmox.auth')).toMatch(/API token omni@pve!provider accepted/);
    expect(messageOf(r.findings, 'proxmox.nodes')).toMatch(/pve1/);
    expect(messageOf(r.findings, 'proxmox.storage')).toMatch(/images .*local-lvm/);
    // The least-privilege token's effective permissions (GET /access/permissions) cover the needed and optional ones.
    expect(statusOf(r.findings, 'proxmox.privileges')).toEqual(['OK']);
    expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/omni@pve!provider holds every privilege/);
    expect(statusOf(r.findings, 'proxmox.bridges')).toEqual(['OK']);
    expect(messageOf(r.findings, 'proxmox.bridges')).toBe('pve1: vmbr0, vmbr1; pve2: vmbr0, vmbr1; pve3: vmbr0, vmbr1');
    expect(r.text).not.toContain(providerToken.tokenSecret);
    expect(r.text).not.toContain(key.slice(0, 40));
  }, 30_000);

  it('prints one plain line per check without --json', async () => {
    let text = '';
    const code = await doctor([], { env: env(), stdout: (t) => void (text += t), timeoutMs: 5000 });
    expect(code).toBe(0);
    const lines = text.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(8);
    for (const l of lines) expect(l).toMatch(/^(OK  |WARN|FAIL)  \S+\s+\S/);
  }, 30_000);

  it('on a wrong fingerprint fails TLS and prints the server\'s real fingerprint to pin', async () => {
    const wrong = 'AB:'.repeat(31) + 'AB';
    const r = await run([], env({ PROXMOX_FINGERPRINT: wrong }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'proxmox.tls')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'proxmox.tls')).toContain(server.fingerprint!.toUpperCase());
    expect(messageOf(r.findings, 'proxmox.tls')).toMatch(/fingerprint: /);
    expect(statusOf(r.findings, 'proxmox.auth')).toEqual([]);
  }, 30_000);

  it('with system CAs (self-signed server) fails TLS and offers the fingerprint', async () => {
    const r = await run([], env({ PROXMOX_FINGERPRINT: undefined }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'proxmox.tls')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'proxmox.tls')).toContain(server.fingerprint!.toUpperCase());
  }, 30_000);

  it('names a missing privilege', async () => {
    const tokenAcl = sim.access.acl.filter((e) => e.ugid === providerToken.tokenId);
    sim.access.revokeAll(providerToken.tokenId);
    sim.access.grant('/', providerToken.tokenId, { privs: ['VM.Audit', 'Datastore.Audit', 'Datastore.AllocateSpace'] });
    try {
      const r = await run([], env());
      expect(r.code).toBe(1);
      expect(statusOf(r.findings, 'proxmox.privileges')[0]).toBe('FAIL');
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/lacks Sys\.Audit, VM\.Allocate/);
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/intersection/);
      // Without SDN.Audit/SDN.Use the token sees no bridge at all.
      expect(statusOf(r.findings, 'proxmox.bridges')).toEqual(['WARN']);
      expect(messageOf(r.findings, 'proxmox.bridges')).toMatch(/no vmbr0 .* visible on pve1, pve2, pve3 .*SDN\.Use/);
    } finally {
      sim.access.revokeAll(providerToken.tokenId);
      sim.access.acl.push(...tokenAcl);
    }
  }, 30_000);

  it("fails when one needed privilege is revoked from the token's user (privsep intersection)", async () => {
    const userAcl = sim.access.acl.filter((e) => e.ugid === 'omni@pve');
    const role = [...sim.access.roles.get('OmniProvider')!].filter((p) => p !== 'VM.PowerMgmt');
    sim.access.revokeAll('omni@pve');
    sim.access.grant('/', 'omni@pve', { privs: role });
    try {
      const r = await run([], env());
      expect(r.code).toBe(1);
      expect(statusOf(r.findings, 'proxmox.privileges')).toEqual(['FAIL']);
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/omni@pve!provider lacks VM\.PowerMgmt;.*--privs "VM\.PowerMgmt"/);
    } finally {
      sim.access.revokeAll('omni@pve');
      sim.access.acl.push(...userAcl);
    }
    expect(statusOf((await run([], env())).findings, 'proxmox.privileges')).toEqual(['OK']);
  }, 30_000);

  it('names a node whose bridges lack vmbr0', async () => {
    sim.setNodeBridges('pve2', ['vmbr1']);
    try {
      const r = await run([], env());
      expect(statusOf(r.findings, 'proxmox.bridges')).toEqual(['WARN']);
      expect(messageOf(r.findings, 'proxmox.bridges')).toMatch(/no vmbr0 .* visible on pve2 \(.*name an existing bridge in provider data/);
      expect(messageOf(r.findings, 'proxmox.bridges')).toMatch(/pve2: vmbr1;/);
    } finally {
      sim.setNodeBridges('pve2', ['vmbr0', 'vmbr1']);
    }
  }, 30_000);

  it('explains a rejected token', async () => {
    const r = await run([], env({ PROXMOX_TOKEN_SECRET: '0a1b2c3d-0000-4000-8000-0000000000ff' }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'proxmox.auth')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'proxmox.auth')).toMatch(/rejected the API token omni@pve!provider.*pveum user token list/);
    expect(r.text).not.toContain('0a1b2c3d-0000-4000-8000-0000000000ff');
  }, 30_000);

  it('fails the clock check when this host is more than 5 minutes off', async () => {
    const r = await run([], env(), () => Date.now() + 10 * 60_000);
    expect(statusOf(r.findings, 'clock')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'clock')).toMatch(/10 min ahead of Proxmox.*5 minutes/);
    expect(r.code).toBe(1);
  }, 30_000);

  it('reports an unregistered provider (Omni refuses its calls with PERMISSION_DENIED "not registered")', async () => {
    omni.controllers.unregisterInfraProvider();
    try {
      const r = await run([], env());
      expect(r.code).toBe(1);
      expect(statusOf(r.findings, 'omni.api')).toEqual(['OK']);
      expect(statusOf(r.findings, 'omni.registered')).toEqual(['FAIL']);
      expect(messageOf(r.findings, 'omni.registered')).toMatch(/no infra provider "proxmox" .*not registered.*omnictl infraprovider create proxmox/);
    } finally {
      omni.controllers.seed();
    }
  }, 30_000);

  it('passes a provider registered by omnictl, whose InfraProvider resource the provider key cannot see (NOT_FOUND)', async () => {
    // `omnictl infraprovider create` writes InfraProviders/<id> without the infra-provider-id label; Omni hides such
    // resources of shared namespaces from provider keys, so the Get answers NOT_FOUND although every call is authorised.
    omni.controllers.registerInfraProvider({ label: false });
    try {
      expect(omni.store.find(NS.infraProvider, TYPES.infraProvider, 'proxmox')?.metadata.labels).toEqual({});
      const r = await run([], env());
      expect(r.findings.filter((f) => f.status === 'FAIL')).toEqual([]);
      expect(r.code).toBe(0);
      expect(statusOf(r.findings, 'omni.api')).toEqual(['OK']);
      expect(statusOf(r.findings, 'omni.registered')).toEqual(['OK']);
      expect(messageOf(r.findings, 'omni.registered')).toMatch(/"proxmox" is registered in Omni; 0 machine request\(s\).*not visible to the provider key.*without the omni\.sidero\.dev\/infra-provider-id label.*normal/);
    } finally {
      omni.controllers.registerInfraProvider();
    }
    // Labelled (visible to the key): plain OK.
    const r = await run([], env());
    expect(messageOf(r.findings, 'omni.registered')).toBe('infra provider "proxmox" is registered in Omni; 0 machine request(s) for it');
  }, 30_000);

  it('rejects a key that does not decode, and a key of another provider', async () => {
    let r = await run([], env({ OMNI_SERVICE_ACCOUNT_KEY: Buffer.from(JSON.stringify({ name: 'infra-provider:proxmox', pgp_key: '-----BEGIN PGP PRIVATE KEY BLOCK-----\nnope\n-----END PGP PRIVATE KEY BLOCK-----' })).toString('base64') }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'omni.key')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'omni.key')).toMatch(/not an OpenPGP private key.*renewkey/);

    const other = await omni.createProviderKey('other');
    r = await run([], env({ OMNI_SERVICE_ACCOUNT_KEY: other }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'omni.identity')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'omni.identity')).toMatch(/belongs to infra provider "other".*--id other/);
  }, 30_000);

  it('reports a revoked key as a rejected signature', async () => {
    const revoked = await omni.keys.createProviderKey('proxmox');
    omni.keys.revoke(revoked.fingerprint);
    const r = await run([], env({ OMNI_SERVICE_ACCOUNT_KEY: revoked.keyString }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'omni.api')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'omni.api')).toMatch(/rejected the signature/);
  }, 30_000);

  it('lists configuration problems as FAIL and exits 1; usage errors exit 2', async () => {
    const r = await run([], env({ PROXMOX_URL: undefined, PROXMOX_TOKEN_ID: undefined, PROXMOX_TOKEN_SECRET: undefined, PROXMOX_FINGERPRINT: undefined }));
    expect(r.code).toBe(1);
    expect(r.findings.every((f) => f.check === 'config' && f.status === 'FAIL')).toBe(true);
    expect(r.findings[0]!.message).toMatch(/Proxmox is not/);
    const stderr: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => (stderr.push(t), true)) as typeof process.stderr.write;
    try {
      expect(await runCli(['doctor', '--json=yes'])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(stderr.join('')).toMatch(/--json takes no value/);
  }, 30_000);

  it('names the Go provider\'s machine-set pools the token could not remove once empty (Pool.Allocate)', async () => {
    let allocate = false;
    const pve = await startPveServer((req) => {
      if (req.path === '/version') return ok({ version: '9.1.5', release: '9.1', repoid: 'abc' });
      if (req.path === '/pools') return ok([{ poolid: 'workers', comment: 'managed by omni-infra-provider-proxmox' }, { poolid: 'lab', comment: 'ops' }]);
      if (req.path === '/access/permissions' && req.query.get('path') === '/pool/workers') {
        return ok({ '/pool/workers': allocate ? { 'Pool.Allocate': 1 } : { 'VM.Allocate': 1 } });
      }
      if (req.path === '/access/permissions') return ok({ '/': Object.fromEntries(REQUIRED_PRIVILEGES.map((p) => [p, 1])) });
      if (req.path === '/nodes') return ok([{ node: 'pve1', status: 'online' }]);
      return { status: 501, reason: `Method 'GET ${req.path}' not implemented` };
    });
    try {
      const e = env({ PROXMOX_URL: pve.url, PROXMOX_FINGERPRINT: undefined });
      let r = await run([], e);
      expect(statusOf(r.findings, 'proxmox.pools')).toEqual(['WARN']);
      expect(messageOf(r.findings, 'proxmox.pools')).toMatch(/^1 machine-set pool the Go provider created \(workers\); the token lacks Pool\.Allocate on \/pool\/workers/);
      allocate = true;
      r = await run([], e);
      expect(statusOf(r.findings, 'proxmox.pools')).toEqual(['OK']);
    } finally {
      await pve.close();
    }
  });

  it('says when Mapping.Use covers PCI mappings but not USB mappings (ACL narrowed to /mapping/pci)', async () => {
    const pve = await startPveServer((req) => {
      if (req.path === '/version') return ok({ version: '9.1.5', release: '9.1', repoid: 'abc' });
      if (req.path === '/access/permissions' && req.query.get('path') === '/mapping/pci') return ok({ '/mapping/pci': { 'Mapping.Use': 1, 'Mapping.Audit': 1 } });
      if (req.path === '/access/permissions' && req.query.get('path') === '/mapping/usb') return ok({ '/mapping/usb': {} });
      if (req.path === '/access/permissions') {
        return ok({ '/': Object.fromEntries(REQUIRED_PRIVILEGES.map((p) => [p, 1])), '/mapping/pci': { 'Mapping.Use': 1, 'Mapping.Audit': 1 } });
      }
      if (req.path === '/nodes') return ok([{ node: 'pve1', status: 'online' }]);
      return { status: 501, reason: `Method 'GET ${req.path}' not implemented` };
    });
    try {
      const r = await run([], env({ PROXMOX_URL: pve.url, PROXMOX_FINGERPRINT: undefined }));
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(
        /holds Mapping\.Use on \/mapping\/pci but not on \/mapping\/usb: usb_devices are refused \(Permission check failed \(\/mapping\/usb\/<id>, Mapping\.Use\)\)/,
      );
    } finally {
      await pve.close();
    }
  });

  it('compares GET /access/permissions with the privileges the provider needs', async () => {
    let granted: string[] = [...REQUIRED_PRIVILEGES];
    const pve = await startPveServer((req) => {
      if (req.path === '/version') return ok({ version: '9.1.5', release: '9.1', repoid: 'abc' });
      if (req.path === '/access/permissions') return ok({ '/': Object.fromEntries(granted.map((p) => [p, 1])), '/vms': { 'VM.Audit': 1 } });
      if (req.path === '/nodes') return ok([{ node: 'pve1', status: 'online' }]);
      return { status: 501, reason: `Method 'GET ${req.path}' not implemented` };
    });
    try {
      const e = env({ PROXMOX_URL: pve.url, PROXMOX_FINGERPRINT: undefined });
      let r = await run([], e);
      expect(statusOf(r.findings, 'proxmox.privileges')).toEqual(['OK', 'WARN', 'WARN', 'WARN']);
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/holds every privilege.*lacks Sys\.AccessNetwork/);
      granted = granted.filter((p) => p !== 'VM.Allocate' && p !== 'SDN.Use');
      r = await run([], e);
      expect(statusOf(r.findings, 'proxmox.privileges')[0]).toBe('FAIL');
      expect(messageOf(r.findings, 'proxmox.privileges')).toMatch(/omni@pve!provider lacks VM\.Allocate, SDN\.Use/);
      expect(r.code).toBe(1);
    } finally {
      await pve.close();
    }
  }, 30_000);
});

describe('doctor against Omni over TLS (self-signed certificate on 127.0.0.1)', () => {
  let tlsOmni: InProcessOmni;
  let tlsKey: string;
  let dir: string;

  beforeAll(async () => {
    tlsOmni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger, tls: true });
    tlsKey = await tlsOmni.createProviderKey('proxmox');
    dir = mkdtempSync(join(tmpdir(), 'doctor-omni-ca-'));
    writeFileSync(join(dir, 'omni-ca.pem'), tlsOmni.tlsCertificate!);
    const other = await generate([{ name: 'commonName', value: 'another CA' }], { keyType: 'ec', algorithm: 'sha256' });
    writeFileSync(join(dir, 'other-ca.pem'), other.cert);
  }, 30_000);

  afterAll(async () => {
    await tlsOmni?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const tlsEnv = (overrides: Record<string, string | undefined> = {}) =>
    env({ OMNI_ENDPOINT: tlsOmni.endpoint, OMNI_SERVICE_ACCOUNT_KEY: tlsKey, ...overrides });

  it('with OMNI_CA_FILE: handshake verified against the CA file, then the API checks pass', async () => {
    const r = await run([], tlsEnv({ OMNI_CA_FILE: join(dir, 'omni-ca.pem') }));
    expect(r.findings.filter((f) => f.status === 'FAIL')).toEqual([]);
    expect(r.code).toBe(0);
    expect(statusOf(r.findings, 'omni.connect')).toEqual(['OK']);
    expect(messageOf(r.findings, 'omni.connect')).toMatch(/^TLS connection to 127\.0\.0\.1:\d+; the server presents "127\.0\.0\.1" with SHA-256 fingerprint [0-9A-F:]{95}$/);
    expect(statusOf(r.findings, 'omni.tls')).toEqual(['OK']);
    expect(messageOf(r.findings, 'omni.tls')).toMatch(/certificate verified against the CA file .*omni-ca\.pem \(with the public CAs\)/);
    expect(statusOf(r.findings, 'omni.api')).toEqual(['OK']);
    expect(statusOf(r.findings, 'omni.registered')).toEqual(['OK']);
  }, 30_000);

  it('without a CA file: FAIL naming the certificate problem and OMNI_CA_FILE, and no API check', async () => {
    const r = await run([], tlsEnv());
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'omni.connect')).toEqual(['OK']);
    expect(statusOf(r.findings, 'omni.tls')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'omni.tls')).toMatch(/the public CAs do not vouch for Omni's certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\).*OMNI_CA_FILE/);
    expect(statusOf(r.findings, 'omni.api')).toEqual([]);
  }, 30_000);

  it('with a CA file of another CA: FAIL saying the file must hold the issuing CA', async () => {
    const r = await run([], tlsEnv({ OMNI_CA_FILE: join(dir, 'other-ca.pem') }));
    expect(r.code).toBe(1);
    expect(statusOf(r.findings, 'omni.tls')).toEqual(['FAIL']);
    expect(messageOf(r.findings, 'omni.tls')).toMatch(/the CA file .*other-ca\.pem \(with the public CAs\) do not vouch for Omni's certificate .*make .*other-ca\.pem hold the CA that issued/);
  }, 30_000);

  it('with insecureSkipVerify: WARN, and the API checks still run', async () => {
    const r = await run([], tlsEnv({ OMNI_INSECURE_SKIP_VERIFY: 'true' }));
    expect(r.code).toBe(0);
    expect(statusOf(r.findings, 'omni.tls')).toEqual(['WARN']);
    expect(messageOf(r.findings, 'omni.tls')).toMatch(/verification is off .*OMNI_CA_FILE/);
    expect(statusOf(r.findings, 'omni.registered')).toEqual(['OK']);
  }, 30_000);

  it('an unreadable or non-PEM CA file is a configuration FAIL naming the setting', async () => {
    let r = await run([], tlsEnv({ OMNI_CA_FILE: join(dir, 'missing.pem') }));
    expect(r.code).toBe(1);
    expect(r.findings).toEqual([{ check: 'config', status: 'FAIL', message: expect.stringMatching(/^cannot read OMNI_CA_FILE .*missing\.pem \(ENOENT\)/) as unknown as string }]);
    writeFileSync(join(dir, 'not-pem.txt'), 'hello\n');
    r = await run(['--omni-ca-file', join(dir, 'not-pem.txt')], tlsEnv());
    expect(messageOf(r.findings, 'config')).toMatch(/--omni-ca-file .*not-pem\.txt holds no PEM certificate/);
  }, 30_000);
});

describe('doctor: HA privileges, only when HA is in use', () => {
  it('no finding without HA; FAIL with the fix when a request uses ha or a provider VM is an HA resource and Sys.Console on / is missing; OK once granted', async () => {
    expect(statusOf((await run([], env())).findings, 'proxmox.ha')).toEqual([]);
    // A machine request of this provider whose provider data has an ha block.
    omni.controllers.createMachineRequest('ha-set', { talosVersion: 'v1.11.5', providerData: 'cores: 2\nha:\n  state: started\n' }, 'doctor-ha-1');
    try {
      let r = await run([], env());
      expect(statusOf(r.findings, 'proxmox.ha')).toEqual(['FAIL']);
      expect(messageOf(r.findings, 'proxmox.ha')).toMatch(/1 machine request\(s\) use ha, but the token lacks Sys\.Console on \/.*pveum role modify OmniProvider --append 1 --privs "Sys\.Console"/);
      expect(r.code).toBe(1);
      // A VM of the provider (tagged machine-request.<set>) that is an HA resource also makes it relevant.
      sim.externalCreateVm({ vmid: 190, node: 'pve1', name: 'ha-vm', tags: ['machine-request.ha-set'] });
      sim.setHaManaged(190, true);
      r = await run([], env());
      expect(messageOf(r.findings, 'proxmox.ha')).toMatch(/1 of the provider's VMs are HA resources \(vm:190\)/);
      for (const ugid of ['omni@pve', 'omni@pve!provider']) sim.access.grant('/', ugid, { privs: ['Sys.Console'] });
      r = await run([], env());
      expect(statusOf(r.findings, 'proxmox.ha')).toEqual(['OK']);
    } finally {
      omni.store.destroy(NS.infraProvider, TYPES.machineRequest, 'doctor-ha-1', { owner: '' });
    }
  });
});
