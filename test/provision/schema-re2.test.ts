// Omni validates provider data against the schema we publish with santhosh-tekuri/jsonschema, whose `pattern` runs
// on Go's regexp (RE2); we validate it again with ajv (JavaScript regular expressions with the `u` flag). Every
// pattern must compile in both and match exactly the same strings, or an operator would see Omni accept what the
// provider refuses (or the reverse). The RE2 side runs a small Go program (standard library only) when Go is
// installed; the syntax rules below hold either way.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { providerDataSchemaJson } from '../../src/provision/providerData.js';

function patterns(): string[] {
  const out = new Set<string>();
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'pattern' && typeof x === 'string') out.add(x);
        else visit(x);
      }
    }
  };
  visit(JSON.parse(providerDataSchemaJson()));
  return [...out];
}

/** Strings worth telling apart: every ASCII character alone and inside a value, non-ASCII letters and spaces. */
function samples(): string[] {
  const out = new Set<string>(['', 'vmbr0', 'pve1', 'host', 'host,flags=+aes;-pcid', 'x86-64-v2-AES', 'custom-x', 'nvidia-180', 'gpu-a100', 'a.b_c-d', 'talos', 'true']);
  for (let c = 0; c < 128; c++) {
    const ch = String.fromCharCode(c);
    out.add(ch);
    out.add(`a${ch}b`);
    out.add(`host,flags=+aes${ch}`);
  }
  // Addresses, networks, ranges and DNS names (address_pool).
  for (const a of ['10.0.0.1', '10.0.0.0/24', '10.0.0.10-10.0.0.20', '2001:db8::1', '2001:db8::/64', '::ffff:10.0.0.1', '::', 'fe80::1%eth0',
    '2001:db8::10-2001:db8::20', '10.0.0.1/x', '10.0.0.1-', 'lan.example', 'lan.example.', '-lan.example', 'a..b', `${'a'.repeat(64)}.example`]) {
    out.add(a);
  }
  for (const u of ['ä', 'é', 'ß', 'вмбр0', 'ＡＢＣ', '\u00a0', '\u2028', '\u2029', '\ufeff', '\u200b', '😀', 'a\u0301', 'İ', 'ſ', 'K']) {
    out.add(u);
    out.add(`vmbr${u}`);
    out.add(`${u}x`);
  }
  for (const vga of ['std', 'STD', 'qxl,memory=32', 'memory=512,type=virtio-gl,clipboard=vnc', 'std,std', 'std,memory=513', 'std,memory=04', 'clipboard=vnc', 'std,type=qxl']) {
    out.add(vga);
  }
  for (const cpu of [
    'host,hidden=1',
    'host,hidden=On',
    'host,hidden=maybe',
    'host,phys-bits=host',
    'host,phys-bits=40',
    'host,level=30',
    'host,hv-vendor-id=proxmox',
    'host,reported-model=EPYC',
    'host,flags=+avx2',
    'host,flags=+vmx',
    'cputype=host,flags=+nested-virt;+md-clear',
    'host,,',
  ]) {
    out.add(cpu);
  }
  return [...out];
}

describe('every pattern in the published schema reads the same in RE2 and JavaScript', () => {
  const all = patterns();

  it('the schema has patterns (sanity)', () => {
    expect(all.length).toBeGreaterThanOrEqual(8);
  });

  it.each(all.map((p) => [p]))('syntax both engines share: %s', (p) => {
    // RE2 has no lookaround, backreferences or atomic groups; JavaScript has no inline flags; \s \d \w \b mean
    // different things with JavaScript's `u` flag than in RE2, so patterns spell their classes out.
    expect(p).not.toMatch(/\(\?(=|!|<=|<!|>)/);
    expect(p).not.toMatch(/\\[1-9]|\\k</);
    expect(p).not.toMatch(/\(\?[a-zA-Z]/);
    expect(p).not.toMatch(/\\[sSdDwWbB]/);
    expect(() => new RegExp(p, 'u')).not.toThrow();
    expect(p.startsWith('^') && p.endsWith('$')).toBe(true);
  });

  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  const haveGo = go.status === 0;
  if (!haveGo) console.warn('schema-re2: Go is not installed; the RE2 comparison is skipped (syntax rules still checked)');

  it.skipIf(!haveGo)('Go regexp (RE2) compiles every pattern and matches the same samples as ajv', () => {
    const texts = samples();
    const dir = fileURLToPath(new URL('./schema-re2/', import.meta.url));
    const run = spawnSync('go', ['run', 'main.go'], {
      cwd: dir,
      input: JSON.stringify({ patterns: all, samples: texts }),
      encoding: 'utf8',
      env: { ...process.env, GOTOOLCHAIN: 'local', GOFLAGS: '', GO111MODULE: 'off', GOPROXY: 'off' },
      timeout: 300_000,
    });
    expect(run.status, run.stderr).toBe(0);
    const results = JSON.parse(run.stdout) as Array<{ pattern: string; error?: string; matches: boolean[] }>;
    expect(results.filter((r) => r.error !== undefined)).toEqual([]);
    const disagreements: string[] = [];
    for (const r of results) {
      const js = new RegExp(r.pattern, 'u');
      texts.forEach((t, i) => {
        if (js.test(t) !== r.matches[i]) disagreements.push(`${r.pattern} on ${JSON.stringify(t)}: RE2 ${r.matches[i]}, JS ${!r.matches[i]}`);
      });
    }
    expect(disagreements).toEqual([]);
  }, 320_000);
});
