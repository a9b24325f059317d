import { describe, expect, it } from 'vitest';
import { ConfigError, type DaemonConfig, type LiveConfig, decodeServiceAccountKey, loadConfig } from '../../src/config/load.js';
import { redactConfig } from '../../src/config/redact.js';
import { printConfig } from '../../src/config/printCommand.js';
import { SETTINGS, daemonUsage } from '../../src/config/settings.js';

const TOKEN_SECRET = '5f1c2a9e-7b3d-4c8e-9a0f-d1e2c3b4a5f6';
const PASSWORD = 'hunter2-very-secret';
const PGP = '-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxVgEZabc...notarealkey\n-----END PGP PRIVATE KEY BLOCK-----\n';

function omniKey(name = 'infra-provider:proxmox'): string {
  return Buffer.from(JSON.stringify({ name, pgp_key: PGP })).toString('base64');
}
const KEY = omniKey();

/** An in-memory file system for readFile. */
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

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const GO_PASSWORD_FILE = `proxmox:
  username: root
  password: ${PASSWORD}
  url: "https://homelab.proxmox:8006/api2/json"
  insecureSkipVerify: true
  realm: "pam"
`;

const GO_TOKEN_FILE = `proxmox:
  url: https://pve1.example.com:8006/api2/json
  tokenID: omni@pve!provider
  tokenSecret: ${TOKEN_SECRET}
`;

const TOKEN_ENV = {
  OMNI_ENDPOINT: 'https://example.omni.siderolabs.io',
  OMNI_SERVICE_ACCOUNT_KEY: KEY,
  PROXMOX_URL: 'https://pve1.example.com:8006',
  PROXMOX_TOKEN_ID: 'omni@pve!provider',
  PROXMOX_TOKEN_SECRET: TOKEN_SECRET,
};

describe('loadConfig: modes', () => {
  it('runs the demo when nothing is configured, with the documented defaults', () => {
    const cfg = loadConfig([], {}, files({}));
    expect(cfg.mode).toBe('demo');
    expect(cfg.provider).toEqual({
      id: 'proxmox',
      name: 'Proxmox',
      description: 'Proxmox infrastructure provider',
      concurrency: 64,
      tasksPerNode: 4,
      tasksPerStorage: 4,
      shutdownTimeoutSeconds: 0,
      hostname: 'none',
      healthListen: { host: undefined, port: 8080 },
      logLevel: 'info',
      heartbeatIntervalSeconds: 10,
      leaseDurationSeconds: 15,
      leaseRenewDeadlineSeconds: 10,
      leaseRetryPeriodSeconds: 2,
    });
    expect(cfg.configFile).toBeNull();
    expect(Object.values(cfg.sources).every((s) => s === 'default')).toBe(true);
  });

  it('still applies provider settings in demo mode', () => {
    const cfg = loadConfig(['--health-listen', '127.0.0.1:0', '--log-level=debug'], { PROVIDER_CONCURRENCY: '2' }, files({}));
    expect(cfg.mode).toBe('demo');
    expect(cfg.provider.healthListen).toEqual({ host: '127.0.0.1', port: 0 });
    expect(cfg.provider.logLevel).toBe('debug');
    expect(cfg.provider.concurrency).toBe(2);
  });

  it('treats an Omni endpoint without a key as an error, not as the demo', () => {
    const e = configError(() =>
      loadConfig(['--omni-api-endpoint', 'https://example.omni.siderolabs.io'], { PROXMOX_URL: 'https://pve:8006', PROXMOX_TOKEN_ID: 'a@pve!b', PROXMOX_TOKEN_SECRET: TOKEN_SECRET }, files({})),
    );
    expect(e.problems).toHaveLength(1);
    expect(e.problems[0]).toContain('infra provider key is not set');
    expect(e.problems[0]).toContain('OMNI_SERVICE_ACCOUNT_KEY');
    expect(e.problems[0]).toContain('omnictl infraprovider create proxmox');
  });

  it('treats Omni without Proxmox as an error that says what to set', () => {
    const e = configError(() => loadConfig([], { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: KEY }, files({})));
    expect(e.problems.join('\n')).toMatch(/Proxmox is not.*PROXMOX_URL/);
  });

  it('treats a Proxmox URL without credentials (and without Omni) as an error listing both gaps', () => {
    const e = configError(() => loadConfig([], { PROXMOX_URL: 'https://pve1:8006' }, files({})));
    const text = e.problems.join('\n');
    expect(text).toContain('Omni is not');
    expect(text).toContain('no Proxmox credentials');
    expect(e.exitCode).toBe(2);
  });
});

describe('loadConfig: Go provider compatibility', () => {
  it('accepts the Go provider config file unchanged (password login) with its flags', () => {
    const cfg = live(
      loadConfig(
        ['--config-file', '/config.yaml', '--omni-api-endpoint', 'https://acct.omni.siderolabs.io/', '--omni-service-account-key', KEY],
        {},
        files({ '/config.yaml': GO_PASSWORD_FILE }),
      ),
    );
    expect(cfg.proxmox).toEqual({
      url: 'https://homelab.proxmox:8006/api2/json',
      auth: { username: 'root', password: PASSWORD, realm: 'pam' },
      tls: { insecureSkipVerify: true },
    });
    expect(cfg.omni).toEqual({
      endpoint: 'https://acct.omni.siderolabs.io/',
      serviceAccountKey: KEY,
      serviceAccountName: 'infra-provider:proxmox',
      insecureSkipVerify: false,
    });
    expect(cfg.configFile).toBe('/config.yaml');
    expect(cfg.sources['proxmox.password']).toBe('file');
    expect(cfg.sources['omni.endpoint']).toBe('flag');
    // The key on the command line works (as in Go) but earns a warning.
    expect(cfg.warnings.join('\n')).toMatch(/--omni-service-account-key puts a secret on the command line/);
  });

  it('accepts the Go token file, the env names of the Go flags, and its flag defaults', () => {
    const cfg = live(
      loadConfig(
        ['--config-file=/c.yaml', '--insecure-skip-verify', '--id', 'pve-lab', '--provider-name', 'Lab'],
        { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: omniKey('infra-provider:pve-lab') },
        files({ '/c.yaml': GO_TOKEN_FILE }),
      ),
    );
    expect(cfg.proxmox.auth).toEqual({ tokenId: 'omni@pve!provider', tokenSecret: TOKEN_SECRET });
    expect(cfg.proxmox.tls).toEqual({});
    expect(cfg.omni.insecureSkipVerify).toBe(true);
    expect(cfg.provider.id).toBe('pve-lab');
    expect(cfg.provider.name).toBe('Lab');
    expect(cfg.provider.description).toBe('Proxmox infrastructure provider');
    expect(cfg.warnings).toEqual([]);
  });

  it('accepts --insecure-skip-verify=false like Go flags do', () => {
    const cfg = live(loadConfig(['--insecure-skip-verify=false'], TOKEN_ENV, files({})));
    expect(cfg.omni.insecureSkipVerify).toBe(false);
    expect(cfg.sources['omni.insecureSkipVerify']).toBe('flag');
  });
});

describe('loadConfig: env-only deployments and precedence', () => {
  it('works from the environment alone, without a config file', () => {
    const cfg = live(
      loadConfig([], { ...TOKEN_ENV, PROXMOX_FINGERPRINT: 'ab'.repeat(32), PROVIDER_HOSTNAME: 'request-id', PROVIDER_HEALTH_LISTEN: 'off' }, files({})),
    );
    expect(cfg.configFile).toBeNull();
    expect(cfg.proxmox.url).toBe('https://pve1.example.com:8006');
    expect(cfg.proxmox.tls.fingerprint).toBe(Array(32).fill('AB').join(':'));
    expect(cfg.provider.hostname).toBe('request-id');
    expect(cfg.provider.healthListen).toBeNull();
  });

  it('applies flag > env > file > default and records each source', () => {
    const file = `provider:
  concurrency: 2
  heartbeatIntervalSeconds: 15
  logLevel: warn
  description: from-file
`;
    const cfg = loadConfig(
      ['--config-file', '/c.yaml', '--concurrency', '8'],
      { PROVIDER_CONCURRENCY: '6', PROVIDER_HEARTBEAT_INTERVAL_SECONDS: '12' },
      files({ '/c.yaml': file }),
    );
    expect(cfg.provider.concurrency).toBe(8);
    expect(cfg.sources['provider.concurrency']).toBe('flag');
    expect(cfg.provider.heartbeatIntervalSeconds).toBe(12);
    expect(cfg.sources['provider.heartbeatIntervalSeconds']).toBe('env');
    expect(cfg.provider.logLevel).toBe('warn');
    expect(cfg.sources['provider.logLevel']).toBe('file');
    expect(cfg.provider.id).toBe('proxmox');
    expect(cfg.sources['provider.id']).toBe('default');
  });

  it('lets env override single keys of the Go file (e.g. the secret kept out of the file)', () => {
    const file = `proxmox:
  url: https://pve1:8006
  tokenID: omni@pve!provider
`;
    const cfg = live(
      loadConfig(['--config-file', '/c.yaml'], { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: KEY, PROXMOX_TOKEN_SECRET: TOKEN_SECRET }, files({ '/c.yaml': file })),
    );
    expect(cfg.proxmox.auth).toEqual({ tokenId: 'omni@pve!provider', tokenSecret: TOKEN_SECRET });
    expect(cfg.sources['proxmox.tokenSecret']).toBe('env');
  });

  it('takes the config file path from PROVIDER_CONFIG_FILE when no flag is given', () => {
    const cfg = loadConfig([], { PROVIDER_CONFIG_FILE: '/etc/p.yaml' }, files({ '/etc/p.yaml': 'provider:\n  id: lab\n' }));
    expect(cfg.configFile).toBe('/etc/p.yaml');
    expect(cfg.provider.id).toBe('lab');
  });

  it('treats empty environment variables as unset (compose passes VAR= through)', () => {
    const cfg = loadConfig([], { OMNI_ENDPOINT: '', PROXMOX_URL: '  ', PROVIDER_ID: '' }, files({}));
    expect(cfg.mode).toBe('demo');
    expect(cfg.provider.id).toBe('proxmox');
  });
});

describe('loadConfig: secrets from files (Docker secrets)', () => {
  it('reads *_FILE variables and strips the trailing newline', () => {
    const env = {
      OMNI_ENDPOINT: 'https://o.example',
      OMNI_SERVICE_ACCOUNT_KEY_FILE: '/run/secrets/omni_key',
      PROXMOX_URL: 'https://pve1:8006',
      PROXMOX_TOKEN_ID: 'omni@pve!provider',
      PROXMOX_TOKEN_SECRET_FILE: '/run/secrets/pve_token',
    };
    const cfg = live(loadConfig([], env, files({ '/run/secrets/omni_key': `${KEY}\n`, '/run/secrets/pve_token': `${TOKEN_SECRET}\n` })));
    expect(cfg.omni.serviceAccountKey).toBe(KEY);
    expect(cfg.proxmox.auth).toEqual({ tokenId: 'omni@pve!provider', tokenSecret: TOKEN_SECRET });
    expect(cfg.sources['omni.serviceAccountKey']).toBe('env');
  });

  it('reads PROXMOX_PASSWORD_FILE for password login', () => {
    const env = { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: KEY, PROXMOX_URL: 'https://pve1:8006', PROXMOX_USERNAME: 'omni@pve', PROXMOX_PASSWORD_FILE: '/s/pw' };
    const cfg = live(loadConfig([], env, files({ '/s/pw': PASSWORD })));
    expect(cfg.proxmox.auth).toEqual({ username: 'omni@pve', password: PASSWORD });
  });

  it('refuses a secret set both directly and by file, and a missing secret file, naming the variables', () => {
    const e = configError(() =>
      loadConfig([], { ...TOKEN_ENV, PROXMOX_TOKEN_SECRET_FILE: '/run/secrets/x', OMNI_SERVICE_ACCOUNT_KEY: '', OMNI_SERVICE_ACCOUNT_KEY_FILE: '/missing' }, files({})),
    );
    const text = e.problems.join('\n');
    expect(text).toContain('both PROXMOX_TOKEN_SECRET and PROXMOX_TOKEN_SECRET_FILE are set');
    expect(text).toContain('cannot read OMNI_SERVICE_ACCOUNT_KEY_FILE file /missing (ENOENT)');
  });
});

describe('loadConfig: validation messages', () => {
  it('names the flag/env/key and the fix, and reports every problem at once', () => {
    const e = configError(() =>
      loadConfig(
        ['--concurrency', '0', '--hostname', 'fqdn'],
        { ...TOKEN_ENV, PROVIDER_HEARTBEAT_INTERVAL_SECONDS: '30', LOG_LEVEL: 'loud', PROVIDER_HEALTH_LISTEN: 'localhost' },
        files({}),
      ),
    );
    expect(e.problems).toHaveLength(5);
    const text = e.problems.join('\n');
    expect(text).toContain('--concurrency must be a whole number from 1 to 1000 (got "0")');
    expect(text).toContain('--hostname must be one of none, request-id');
    expect(text).toMatch(/PROVIDER_HEARTBEAT_INTERVAL_SECONDS must be a whole number from 1 to 25 .*30 s/);
    expect(text).toContain('LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent');
    expect(text).toMatch(/PROVIDER_HEALTH_LISTEN: listen address "localhost" is not valid/);
    expect(e.message).toMatch(/^invalid configuration \(5 problems\): \(1\)/);
    expect(e.message).not.toContain('\n');
  });

  it('takes the leader lease timing from flags/env and refuses an order that would break fencing', () => {
    const cfg = loadConfig(['--lease-duration-seconds', '30'], { ...TOKEN_ENV, PROVIDER_LEASE_RENEW_DEADLINE_SECONDS: '20' }, files({}));
    expect(cfg.provider).toMatchObject({ leaseDurationSeconds: 30, leaseRenewDeadlineSeconds: 20, leaseRetryPeriodSeconds: 2 });
    const e = configError(() =>
      loadConfig(['--lease-duration-seconds', '10'], { ...TOKEN_ENV, PROVIDER_LEASE_RENEW_DEADLINE_SECONDS: '10', PROVIDER_LEASE_RETRY_PERIOD_SECONDS: '12' }, files({})),
    );
    const text = e.problems.join('\n');
    expect(text).toMatch(/PROVIDER_LEASE_RENEW_DEADLINE_SECONDS \(10\) must be less than --lease-duration-seconds \(10\): a holder cut off from Omni/);
    expect(text).toMatch(/PROVIDER_LEASE_RETRY_PERIOD_SECONDS \(12\) must be less than PROVIDER_LEASE_RENEW_DEADLINE_SECONDS \(10\)/);
  });

  it('rejects an Omni key that is not an infra provider key, without echoing it', () => {
    const wrong = 'not-a-key-but-a-secret-anyway';
    const e = configError(() => loadConfig([], { ...TOKEN_ENV, OMNI_SERVICE_ACCOUNT_KEY: wrong }, files({})));
    expect(e.message).toContain('OMNI_SERVICE_ACCOUNT_KEY');
    expect(e.message).toContain('omnictl infraprovider create');
    expect(e.message).not.toContain(wrong);
  });

  it('warns when the key was issued for a different provider ID than --id', () => {
    const cfg = live(loadConfig(['--id', 'Proxmox'], { ...TOKEN_ENV }, files({})));
    const text = cfg.warnings.join('\n');
    expect(text).toContain('the Omni key was issued for "infra-provider:proxmox" but the provider ID is "Proxmox"');
    expect(text).toContain('set --id proxmox');
    expect(text).toContain('not a lowercase DNS label');
  });

  it('accepts a key from the Omni UI (name = bare provider ID) silently', () => {
    const cfg = live(loadConfig([], { ...TOKEN_ENV, OMNI_SERVICE_ACCOUNT_KEY: omniKey('proxmox') }, files({})));
    expect(cfg.warnings).toEqual([]);
  });

  it('validates the Omni endpoint and Proxmox URL shapes', () => {
    const e = configError(() => loadConfig([], { ...TOKEN_ENV, OMNI_ENDPOINT: 'omni.example.com:443', PROXMOX_URL: 'ftp://pve' }, files({})));
    const text = e.problems.join('\n');
    expect(text).toContain('the Omni endpoint "omni.example.com:443" must be an https:// URL');
    expect(text).toContain('PROXMOX_URL must be an https:// URL');
    const cfg = live(loadConfig([], { ...TOKEN_ENV, OMNI_ENDPOINT: 'https://o.example/some/path' }, files({})));
    expect(cfg.warnings.join('\n')).toContain('path/query "/some/path" is ignored');
  });

  it('checks token ID shape and refuses half credentials and two kinds of credentials', () => {
    let e = configError(() => loadConfig([], { ...TOKEN_ENV, PROXMOX_TOKEN_ID: 'omni-provider' }, files({})));
    expect(e.problems.join('\n')).toContain('PROXMOX_TOKEN_ID "omni-provider" must look like user@realm!tokenname');
    e = configError(() => loadConfig([], { ...TOKEN_ENV, PROXMOX_TOKEN_SECRET: '' }, files({})));
    expect(e.problems.join('\n')).toContain('the Proxmox token ID is set but its secret is not: set PROXMOX_TOKEN_SECRET');
    e = configError(() =>
      loadConfig(['--config-file', '/c.yaml'], TOKEN_ENV, files({ '/c.yaml': 'proxmox:\n  username: root@pam\n  password: x\n' })),
    );
    expect(e.problems.join('\n')).toMatch(/set twice: an API token \(PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET\) and a username\/password \("proxmox.username" in \/c.yaml/);
  });

  it('needs a realm for password login and refuses two different realms', () => {
    const base = { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: KEY, PROXMOX_URL: 'https://pve:8006', PROXMOX_PASSWORD: PASSWORD };
    let e = configError(() => loadConfig([], { ...base, PROXMOX_USERNAME: 'root' }, files({})));
    expect(e.problems.join('\n')).toContain('the Proxmox username has no realm: set PROXMOX_REALM');
    e = configError(() => loadConfig([], { ...base, PROXMOX_USERNAME: 'root@pam', PROXMOX_REALM: 'pve' }, files({})));
    expect(e.problems.join('\n')).toContain('says realm "pam" but the realm setting says "pve"');
    const cfg = live(loadConfig([], { ...base, PROXMOX_USERNAME: 'root@pam', PROXMOX_REALM: 'pam' }, files({})));
    expect(cfg.proxmox.auth).toEqual({ username: 'root@pam', password: PASSWORD });
  });

  it('checks the CA file and fingerprint, and prefers them over insecureSkipVerify', () => {
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    const cfg = live(loadConfig([], { ...TOKEN_ENV, PROXMOX_CA_FILE: '/ca.pem', PROXMOX_INSECURE_SKIP_VERIFY: 'true' }, files({ '/ca.pem': pem })));
    expect(cfg.proxmox.tls).toEqual({ caFile: '/ca.pem' });
    expect(cfg.warnings.join('\n')).toContain('insecureSkipVerify is ignored because a CA file is set');
    const e = configError(() =>
      loadConfig([], { ...TOKEN_ENV, PROXMOX_CA_FILE: '/nope.pem', PROXMOX_FINGERPRINT: 'AB:CD', PROXMOX_INSECURE_SKIP_VERIFY: 'maybe' }, files({})),
    );
    const text = e.problems.join('\n');
    expect(text).toContain('cannot read PROXMOX_CA_FILE /nope.pem (ENOENT)');
    expect(text).toContain('PROXMOX_FINGERPRINT must be a SHA-256 fingerprint');
    expect(text).toContain('PROXMOX_INSECURE_SKIP_VERIFY must be true or false (got "maybe")');
  });

  it('refuses unknown flags, positional arguments and flags missing their value', () => {
    const e = configError(() => loadConfig(['--omni-endpoint', 'x', 'serve', '--id'], {}, files({})));
    const text = e.problems.join('\n');
    expect(text).toContain('unknown flag --omni-endpoint');
    expect(text).toContain('unexpected argument "serve"');
    expect(text).toContain('--id needs a value');
  });
});

describe('loadConfig: config file errors', () => {
  it('stops at an unreadable config file, naming the path', () => {
    const e = configError(() => loadConfig(['--config-file', '/config/config.yaml'], TOKEN_ENV, files({})));
    expect(e.problems).toEqual([
      'cannot read the config file /config/config.yaml (ENOENT); check --config-file / PROVIDER_CONFIG_FILE and the volume mount',
    ]);
  });

  it('reports a YAML syntax error by line without quoting the file (which may hold secrets)', () => {
    const text = `proxmox:\n  url: https://pve:8006\n  tokenSecret: "${TOKEN_SECRET}\n  tokenID: [oops\n`;
    const e = configError(() => loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': text })));
    expect(e.problems).toHaveLength(1);
    expect(e.problems[0]).toMatch(/^the config file \/c.yaml is not valid YAML at line \d+/);
    expect(e.message).not.toContain(TOKEN_SECRET);
  });

  it('refuses unknown keys and sections with a suggestion instead of silently ignoring them', () => {
    const text = 'proxmox:\n  url: https://pve:8006\n  tokenId: a@pve!b\nprovder:\n  id: x\n';
    const e = configError(() => loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': text })));
    const all = e.problems.join('\n');
    expect(all).toContain('unknown setting "proxmox.tokenId" in /c.yaml; known: url, tokenID');
    expect(all).toContain('(did you mean "tokenID"?)');
    expect(all).toContain('unknown section "provder" in /c.yaml; known sections: omni, proxmox, provider, housekeeping (did you mean "provider"?)');
  });

  it('accepts an empty file and empty sections, and the omni section for endpoint and key', () => {
    expect(loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': '' })).mode).toBe('demo');
    expect(loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': 'proxmox:\nprovider:\n' })).mode).toBe('demo');
    const file = `omni:\n  endpoint: https://o.example\n  serviceAccountKey: ${KEY}\n${GO_TOKEN_FILE}provider:\n  concurrency: "3"\n`;
    const cfg = live(loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': file })));
    expect(cfg.omni.endpoint).toBe('https://o.example');
    expect(cfg.provider.concurrency).toBe(3);
  });

  it('refuses a list where a value belongs', () => {
    const e = configError(() => loadConfig(['--config-file', '/c.yaml'], {}, files({ '/c.yaml': 'proxmox:\n  url: [a, b]\n' })));
    expect(e.problems.join('\n')).toContain('"proxmox.url" in /c.yaml must be a string, not a list');
  });
});

describe('secrets never leak', () => {
  const secrets = [KEY, TOKEN_SECRET, PASSWORD];

  it('keeps secret values out of every error message', () => {
    const attempts: Array<() => unknown> = [
      () => loadConfig(['--concurrency', 'x'], { ...TOKEN_ENV, PROXMOX_TOKEN_ID: 'bad' }, files({})),
      () => loadConfig([], { ...TOKEN_ENV, PROXMOX_USERNAME: 'root', PROXMOX_PASSWORD: PASSWORD }, files({})),
      () => loadConfig([], { OMNI_SERVICE_ACCOUNT_KEY: KEY, PROXMOX_TOKEN_SECRET: TOKEN_SECRET }, files({})),
      () => loadConfig([], { OMNI_SERVICE_ACCOUNT_KEY: `${TOKEN_SECRET}x`, PROXMOX_PASSWORD: PASSWORD }, files({})),
      () => loadConfig(['--config-file', '/c'], {}, files({ '/c': `proxmox:\n  password: ${PASSWORD}\n  tokenSecret: ${TOKEN_SECRET}\n  x: 1\n` })),
    ];
    for (const attempt of attempts) {
      const e = configError(attempt);
      for (const s of [...secrets, `${TOKEN_SECRET}x`]) {
        expect(e.message).not.toContain(s);
        expect(e.problems.join('\n')).not.toContain(s);
      }
    }
  });

  it('redactConfig hides every secret and keeps everything an operator needs', () => {
    const cfg = live(loadConfig([], { ...TOKEN_ENV, PROXMOX_INSECURE_SKIP_VERIFY: '1' }, files({})));
    const red = redactConfig(cfg);
    const text = JSON.stringify(red);
    for (const s of secrets) expect(text).not.toContain(s);
    expect(red.omni?.serviceAccountKey).toBe('[redacted]');
    expect(red.proxmox?.auth).toEqual({ tokenId: 'omni@pve!provider', tokenSecret: '[redacted]' });
    expect(red.proxmox?.tls).toEqual({ insecureSkipVerify: true });
    expect(red.provider.healthListen).toBe(':8080');
    expect(red.sources['proxmox.tokenSecret']).toBe('env');

    const pw = live(loadConfig(['--config-file', '/c'], { OMNI_ENDPOINT: 'https://o', OMNI_SERVICE_ACCOUNT_KEY: KEY }, files({ '/c': GO_PASSWORD_FILE })));
    expect(JSON.stringify(redactConfig(pw))).not.toContain(PASSWORD);
    expect(redactConfig(pw).proxmox?.auth).toEqual({ username: 'root', password: '[redacted]', realm: 'pam' });
  });

  it('config print shows sources and redacts, or lists problems with exit code 2', async () => {
    let out = '';
    let err = '';
    const io = { stdout: (t: string) => void (out += t), stderr: (t: string) => void (err += t), readFile: files({}) };
    expect(await printConfig(['--concurrency', '5'], { ...io, env: TOKEN_ENV })).toBe(0);
    expect(out).toContain('mode: live');
    expect(out).toContain('provider.concurrency: flag');
    expect(out).toContain('tokenSecret: "[redacted]"');
    for (const s of secrets) expect(out).not.toContain(s);
    expect(await printConfig([], { ...io, env: { OMNI_ENDPOINT: 'https://o' } })).toBe(2);
    expect(err).toMatch(/^error: invalid configuration:\n {2}- /);
  });
});

describe('settings table', () => {
  it('decodes the shape of an Omni key', () => {
    expect(decodeServiceAccountKey(KEY)).toEqual({ name: 'infra-provider:proxmox' });
    expect(decodeServiceAccountKey(Buffer.from('{"name":"x"}').toString('base64'))).toHaveProperty('problem');
  });

  it('lists every flag in --help with its env name', () => {
    const help = daemonUsage();
    for (const s of SETTINGS.filter((x) => x.flag)) {
      expect(help).toContain(`--${s.flag}`);
      expect(help).toContain(s.env);
    }
    expect(help).toContain('--config-file');
  });
});

describe('loadConfig: housekeeping', () => {
  it('defaults to reporting only, every 600 s; reads the section and the env; refuses values out of bounds by name', () => {
    const defaults = loadConfig([], {}, files({}));
    expect(defaults.housekeeping).toEqual({
      intervalSeconds: 600,
      removeOrphanVms: false,
      orphanVmGraceSeconds: 86400,
      removeUnusedIsos: false,
      talosIsoMinAgeSeconds: 604800,
    });
    const file = 'housekeeping:\n  removeOrphanVms: true\n  orphanVmGraceSeconds: 3600\n  removeUnusedIsos: true\n';
    const cfg = loadConfig(['--config-file', '/c.yaml'], { HOUSEKEEPING_INTERVAL_SECONDS: '0', HOUSEKEEPING_TALOS_ISO_MIN_AGE_SECONDS: '7200' }, files({ '/c.yaml': file }));
    expect(cfg.housekeeping).toEqual({ intervalSeconds: 0, removeOrphanVms: true, orphanVmGraceSeconds: 3600, removeUnusedIsos: true, talosIsoMinAgeSeconds: 7200 });
    expect(redactConfig(cfg).housekeeping).toEqual(cfg.housekeeping);
    expect(cfg.sources['housekeeping.removeOrphanVms']).toBe('file');
    expect(cfg.sources['housekeeping.intervalSeconds']).toBe('env');
    const err = configError(() =>
      loadConfig([], { HOUSEKEEPING_INTERVAL_SECONDS: '5', HOUSEKEEPING_ORPHAN_VM_GRACE_SECONDS: '10', HOUSEKEEPING_REMOVE_ORPHAN_VMS: 'maybe' }, files({})),
    );
    const all = err.problems.join('\n');
    expect(all).toMatch(/HOUSEKEEPING_INTERVAL_SECONDS.*0 \(off\) or 60-86400/);
    expect(all).toMatch(/HOUSEKEEPING_ORPHAN_VM_GRACE_SECONDS/);
    expect(all).toMatch(/HOUSEKEEPING_REMOVE_ORPHAN_VMS/);
  });
});
