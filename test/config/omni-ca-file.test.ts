// omni.caFile (--omni-ca-file, OMNI_CA_FILE): resolved like every setting (flag > env > file), checked at load
// (readable, holds PEM certificates that decode), errors naming the setting as the user gave it.
import { generate } from 'selfsigned';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, type DaemonConfig, type LiveConfig } from '../../src/config/load.js';
import { redactConfig } from '../../src/config/redact.js';
import { describeSetting } from '../../src/config/settings.js';

const PGP = '-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxVgEZabc...notarealkey\n-----END PGP PRIVATE KEY BLOCK-----\n';
const KEY = Buffer.from(JSON.stringify({ name: 'infra-provider:proxmox', pgp_key: PGP })).toString('base64');
const ENV = {
  OMNI_ENDPOINT: 'https://omni.internal.example',
  OMNI_SERVICE_ACCOUNT_KEY: KEY,
  PROXMOX_URL: 'https://pve1.example.com:8006',
  PROXMOX_TOKEN_ID: 'omni@pve!provider',
  PROXMOX_TOKEN_SECRET: '5f1c2a9e-7b3d-4c8e-9a0f-d1e2c3b4a5f6',
};

let ca = '';
beforeAll(async () => {
  ca = (await generate([{ name: 'commonName', value: 'Private CA' }], { keyType: 'ec', algorithm: 'sha256', extensions: [{ name: 'basicConstraints', cA: true }] })).cert;
});

function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    const content = map[path];
    if (content === undefined) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });
    return content;
  };
}

function live(cfg: DaemonConfig): LiveConfig {
  if (cfg.mode !== 'live') throw new Error(`expected live config, got ${cfg.mode}`);
  return cfg;
}

function problems(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.join('\n');
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('omni.caFile', () => {
  it('is set by flag, env or config file, flag first', () => {
    const fs = files({ '/a.pem': ca, '/b.pem': ca, '/c.pem': ca, '/c.yaml': 'omni:\n  caFile: /c.pem\n' });
    let cfg = live(loadConfig([], { ...ENV, OMNI_CA_FILE: '/b.pem' }, fs));
    expect(cfg.omni.caFile).toBe('/b.pem');
    expect(cfg.sources['omni.caFile']).toBe('env');
    cfg = live(loadConfig(['--omni-ca-file', '/a.pem', '--config-file', '/c.yaml'], { ...ENV, OMNI_CA_FILE: '/b.pem' }, fs));
    expect(cfg.omni.caFile).toBe('/a.pem');
    expect(cfg.sources['omni.caFile']).toBe('flag');
    cfg = live(loadConfig(['--omni-ca-file=/a.pem'], ENV, fs));
    expect(cfg.omni.caFile).toBe('/a.pem');
    cfg = live(loadConfig(['--config-file', '/c.yaml'], ENV, fs));
    expect(cfg.omni.caFile).toBe('/c.pem');
    expect(cfg.sources['omni.caFile']).toBe('file');
    expect(cfg.warnings).toEqual([]);
    expect(redactConfig(cfg).omni).toMatchObject({ caFile: '/c.pem', insecureSkipVerify: false });
    // Unset: no caFile at all.
    expect(live(loadConfig([], ENV, fs)).omni).not.toHaveProperty('caFile');
    expect(describeSetting('omni.caFile')).toBe('--omni-ca-file / OMNI_CA_FILE / "omni.caFile" in the config file');
  });

  it('must be readable: the error names the setting as given and the path', () => {
    expect(problems(() => loadConfig([], { ...ENV, OMNI_CA_FILE: '/nope.pem' }, files({})))).toContain(
      'cannot read OMNI_CA_FILE /nope.pem (ENOENT); check the path and the volume mount',
    );
    expect(problems(() => loadConfig(['--omni-ca-file', '/nope.pem'], ENV, files({})))).toContain('cannot read --omni-ca-file /nope.pem (ENOENT)');
    expect(problems(() => loadConfig(['--config-file', '/c.yaml'], ENV, files({ '/c.yaml': 'omni:\n  caFile: /nope.pem\n' })))).toContain(
      'cannot read "omni.caFile" in /c.yaml /nope.pem (ENOENT)',
    );
  });

  it('must hold a PEM certificate that decodes', () => {
    const fs = files({ '/key.pem': '-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n', '/bad.pem': '-----BEGIN CERTIFICATE-----\nMIIBnotacert\n-----END CERTIFICATE-----\n', '/two.pem': `${ca}${ca}` });
    expect(problems(() => loadConfig([], { ...ENV, OMNI_CA_FILE: '/key.pem' }, fs))).toContain(
      'OMNI_CA_FILE /key.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)',
    );
    expect(problems(() => loadConfig([], { ...ENV, OMNI_CA_FILE: '/bad.pem' }, fs))).toContain(
      'OMNI_CA_FILE /bad.pem: certificate 1 of 1 is not a valid X.509 certificate',
    );
    // A bundle (CA plus intermediates) is fine.
    expect(live(loadConfig([], { ...ENV, OMNI_CA_FILE: '/two.pem' }, fs)).omni.caFile).toBe('/two.pem');
  });

  it('wins over insecureSkipVerify, and says when it has no effect', () => {
    const fs = files({ '/ca.pem': ca });
    let cfg = live(loadConfig(['--insecure-skip-verify'], { ...ENV, OMNI_CA_FILE: '/ca.pem' }, fs));
    expect(cfg.omni.insecureSkipVerify).toBe(false);
    expect(cfg.warnings.join('\n')).toContain('omni.insecureSkipVerify is ignored because an Omni CA file is set');
    cfg = live(loadConfig([], { ...ENV, OMNI_ENDPOINT: 'http://127.0.0.1:8080', OMNI_CA_FILE: '/ca.pem' }, fs));
    expect(cfg.warnings.join('\n')).toContain('OMNI_CA_FILE is ignored: the Omni endpoint is not https://');
    const demo = loadConfig([], { OMNI_CA_FILE: '/ca.pem' }, fs);
    expect(demo.mode).toBe('demo');
    expect(demo.warnings.join('\n')).toContain('the Omni TLS settings are ignored in demo mode');
  });
});
