// Checks the container packaging and the operator docs against the code: what the files promise must exist.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { CONFIG_FILE_ENV, SETTINGS } from '../../src/config/settings.js';
import { createProviderMetrics } from '../../src/ops/providerMetrics.js';
import { IMAGE_ENV } from '../helpers/daemon-command.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string): string => readFileSync(`${root}${p}`, 'utf8');

/** dist/x/y.js as built by tsconfig.build.json (rootDir src) comes from src/x/y.ts. */
function sourceOfDist(path: string): string {
  return path.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts');
}

describe('compose.yaml', () => {
  const compose = parseYaml(read('compose.yaml')) as {
    services: Record<string, Record<string, unknown>>;
  };
  const services = Object.values(compose.services);
  const svc = services[0]!;

  it('runs the provider container alone, restarting unless stopped', () => {
    expect(services).toHaveLength(1);
    expect(svc.restart).toBe('unless-stopped');
  });

  it('mounts the config read-only at /config/config.yaml and passes it with --config-file', () => {
    expect(svc.volumes).toContainEqual({ type: 'bind', source: './config.yaml', target: '/config/config.yaml', read_only: true });
    const cmd = svc.command as string[];
    expect(cmd[cmd.indexOf('--config-file') + 1]).toBe('/config/config.yaml');
    // The command is accepted by the daemon's flag parser.
    const cfg = loadConfig(cmd, {}, (p) => (p === '/config/config.yaml' ? '' : (() => { throw new Error(p); })()));
    expect(cfg.configFile).toBe('/config/config.yaml');
  });

  it('takes the Omni key from .env, has a curl-free health check and bounded JSON logs', () => {
    expect(svc.env_file).toBe('.env');
    const hc = svc.healthcheck as { test: string[] };
    expect(hc.test.slice(0, 2)).toEqual(['CMD', 'node']);
    expect(existsSync(`${root}${sourceOfDist(hc.test[2]!)}`)).toBe(true);
    expect(hc.test.join(' ')).not.toMatch(/curl|wget/);
    expect(svc.logging).toMatchObject({ driver: 'json-file', options: { 'max-size': expect.any(String) } });
  });

  it('runs with a read-only root filesystem, a tmpfs /tmp, an init process and a stop grace period', () => {
    expect(svc.read_only).toBe(true);
    expect(svc.tmpfs).toEqual(['/tmp']);
    expect(svc.init).toBe(true);
    expect(svc.stop_grace_period).toBe('30s');
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  const lines = text.split('\n').filter((l) => !l.trimStart().startsWith('#'));
  const instr = (name: string): string[] => lines.filter((l) => l.startsWith(`${name} `));

  it('is multi-stage on Node 20: npm ci, then /app assembled by scripts/assemble-prod.sh (what npm test and CI run)', () => {
    expect(text).toMatch(/^ARG NODE_IMAGE=node:20-(alpine|slim|bookworm-slim)$/m);
    expect(instr('FROM').length).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/^RUN npm ci\b/m);
    expect(text).toMatch(/^COPY scripts\/assemble-prod\.sh /m);
    expect(text).toMatch(/^RUN sh scripts\/assemble-prod\.sh \/app\b/m);
    // The runtime stage takes /app as assembled, nothing else: the tests that run that layout test the image.
    const runtime = text.slice(text.lastIndexOf('\nFROM '));
    expect(runtime).toMatch(/^WORKDIR \/app$/m);
    expect(runtime.split('\n').filter((l) => /^(COPY|ADD) /.test(l))).toEqual(['COPY --from=build --chown=root:root /app ./']);
    // The tests run the compiled daemon with the same environment (test/helpers/daemon-command.ts).
    for (const [k, v] of Object.entries(IMAGE_ENV)) expect(runtime.split('\n')).toContain(`ENV ${k}=${v}`);
    // .ci/run and npm test assemble the same layout with the same script.
    expect(read('.ci/run')).toMatch(/^sh scripts\/assemble-prod\.sh \.tmp\/prod$/m);
    expect(read('scripts/run-tests.mjs')).toContain("'scripts/assemble-prod.sh'");
  });

  it('runs as a non-root user with the required entrypoint and a curl-free health check', () => {
    const user = instr('USER').at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
    expect(instr('ENTRYPOINT')).toEqual(['ENTRYPOINT ["node", "dist/main.js"]']);
    expect(existsSync(`${root}src/main.ts`)).toBe(true);
    const hc = text.slice(text.indexOf('HEALTHCHECK'));
    expect(hc).toMatch(/CMD \["node", "dist\/ops\/probe\.js"\]/);
    expect(hc.split('ENTRYPOINT')[0]).not.toMatch(/curl|wget/);
  });

  it('has no architecture-specific steps', () => {
    expect(lines.join('\n')).not.toMatch(/amd64|arm64|x86_64|aarch64|GOARCH/);
  });

  it('.dockerignore keeps secrets and local state out of the build context', () => {
    const ignore = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const p of ['.env', 'config.yaml', 'node_modules', 'dist', '.git']) expect(ignore).toContain(p);
    expect(ignore).toContain('!.env.example');
  });
});

describe('config.example.yaml and .env.example', () => {
  const example = read('config.example.yaml');

  it('documents every setting with its env variable and default', () => {
    for (const s of SETTINGS) {
      const key = s.key.split('.')[1]!;
      expect(example, s.key).toMatch(new RegExp(`^\\s*#?\\s*${key}:`, 'm'));
      expect(example, s.env).toContain(s.env);
      if (s.fileEnv) expect(example).toContain(s.fileEnv);
      if (s.flag) expect(example).toContain(`--${s.flag}`);
      expect(example).toContain(`Default: ${s.default === '' ? 'unset' : s.default === ':8080' ? '":8080"' : s.default}`);
    }
  });

  it('loads as a valid config once the Omni endpoint and key are added', () => {
    const key = Buffer.from(
      JSON.stringify({ name: 'infra-provider:proxmox', pgp_key: '-----BEGIN PGP PRIVATE KEY BLOCK-----\nx\n-----END PGP PRIVATE KEY BLOCK-----' }),
    ).toString('base64');
    const cfg = loadConfig(['--config-file', 'config.example.yaml'], { OMNI_ENDPOINT: 'https://o.example', OMNI_SERVICE_ACCOUNT_KEY: key }, (p) => read(p));
    expect(cfg.mode).toBe('live');
    expect(cfg.warnings).toEqual([]);
    expect(cfg.provider.id).toBe('proxmox');
  });

  it('.env.example only sets variables the daemon knows', () => {
    const known = new Set([...SETTINGS.flatMap((s) => [s.env, s.fileEnv ?? s.env]), CONFIG_FILE_ENV]);
    const names = read('.env.example')
      .split('\n')
      .map((l) => l.replace(/^#\s*/, ''))
      .filter((l) => /^[A-Z][A-Z0-9_]*=/.test(l))
      .map((l) => l.slice(0, l.indexOf('=')));
    expect(names).toContain('OMNI_ENDPOINT');
    expect(names).toContain('OMNI_SERVICE_ACCOUNT_KEY');
    for (const n of names) expect(known.has(n), n).toBe(true);
  });
});

describe('docs', () => {
  it('configuration.md lists every flag, env variable and YAML key, and the pveum commands', () => {
    const doc = read('docs/configuration.md');
    for (const s of SETTINGS) {
      expect(doc, s.key).toContain(`\`${s.key}\``);
      expect(doc, s.env).toContain(`\`${s.env}\``);
      if (s.flag) expect(doc).toContain(`\`--${s.flag}\``);
    }
    expect(doc).toContain(CONFIG_FILE_ENV);
    expect(doc).toMatch(/pveum role add \S+ --privs/);
    expect(doc).toMatch(/pveum user token add \S+ \S+ --privsep 1/);
    expect(doc).toMatch(/pveum acl modify \/ --tokens/);
    expect(doc).toMatch(/pveum acl modify \/ --users/);
  });

  it('operations.md documents every metric family and the endpoints', () => {
    const doc = read('docs/operations.md');
    const m = createProviderMetrics({ version: 'test' });
    m.pveRequests.inc({ method: 'GET', code: '200' });
    const families = [...m.registry.render().matchAll(/^# TYPE (\S+)/gm)].map((x) => x[1]!);
    const all = Object.values(m)
      .filter((v): v is { name: string } => typeof v === 'object' && v !== null && 'name' in v)
      .map((v) => v.name);
    for (const name of new Set([...families, ...all])) expect(doc, name).toContain(`\`${name}\``);
    for (const p of ['/healthz', '/readyz', '/metrics', 'omnictl infraprovider create proxmox', 'renewkey']) expect(doc).toContain(p);
  });
});

// scripts/lint-dockerfile.sh builds tools/dockerfile-lint (BuildKit's checks) and .ci/run lints the Dockerfile with it.
const linter = `${root}.tmp/bin/dockerfile-lint`;
describe.skipIf(!existsSync(linter))('Dockerfile lint (BuildKit checks)', () => {
  it('passes on the Dockerfile and fails on one that breaks the rules (the linter can fail)', async () => {
    const { spawnSync } = await import('node:child_process');
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    expect(spawnSync(linter, [`${root}Dockerfile`], { encoding: 'utf8' }).status).toBe(0);
    const dir = mkdtempSync(`${tmpdir()}/dflint-`);
    try {
      writeFileSync(`${dir}/Dockerfile`, 'FROM node:20-alpine as build\nENTRYPOINT node dist/main.js\n');
      const bad = spawnSync(linter, [`${dir}/Dockerfile`], { encoding: 'utf8' });
      expect(bad.status).toBe(1);
      expect(bad.stdout).toMatch(/FromAsCasing/);
      expect(bad.stdout).toMatch(/JSONArgsRecommended/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
if (!existsSync(linter)) console.warn('########## Dockerfile lint test SKIPPED: .tmp/bin/dockerfile-lint not built (scripts/lint-dockerfile.sh; needs Go)');
