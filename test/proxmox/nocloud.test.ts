// NoCloud seed for Talos: ISO contents as Linux tools see them, meta-data YAML, and per-request ISO file names.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  DEFAULT_NETWORK_CONFIG,
  NoCloudSeedError,
  buildNoCloudSeed,
  renderMetaData,
  seedIsoFileName,
} from '../../src/proxmox/nocloud.js';

const workDir = mkdtempSync(join(tmpdir(), 'nocloud-test-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

let counter = 0;
function save(image: Buffer): string {
  const path = join(workDir, `seed-${counter++}.iso`);
  writeFileSync(path, image);
  return path;
}

function extract(path: string, name: string): Buffer {
  return execFileSync('isoinfo', ['-J', '-x', `/${name}`, '-i', path], { maxBuffer: 16 * 1024 * 1024 });
}

const machineConfig = [
  'version: v1alpha1',
  'machine:',
  '  type: worker',
  '  token: SECRET-join-token-abc123',
  'cluster:',
  '  discovery: {enabled: true}',
  '',
].join('\n');

describe('buildNoCloudSeed', () => {
  it('produces an ISO labelled cidata with user-data, meta-data and network-config at the root', () => {
    const path = save(buildNoCloudSeed({ userData: machineConfig, instanceId: 'req-1', hostname: 'req-1' }));
    const blkid = execFileSync('blkid', ['-p', '-o', 'export', path]).toString('utf8');
    expect(blkid).toMatch(/^LABEL=cidata$/m);
    expect(blkid).toMatch(/^TYPE=iso9660$/m);
    const listing = execFileSync('isoinfo', ['-J', '-l', '-i', path]).toString('utf8');
    const names = [...listing.matchAll(/\]\s+(\S+)\s*$/gm)].map((m) => m[1]).filter((n) => n !== '.' && n !== '..');
    expect(names).toEqual(['meta-data', 'network-config', 'user-data']);

    expect(extract(path, 'user-data').toString('utf8')).toBe(machineConfig);
    expect(parseYaml(extract(path, 'meta-data').toString('utf8'))).toEqual({
      'instance-id': 'req-1',
      'local-hostname': 'req-1',
      hostname: 'req-1',
    });
    expect(extract(path, 'network-config').toString('utf8')).toBe(DEFAULT_NETWORK_CONFIG);
    expect(parseYaml(DEFAULT_NETWORK_CONFIG)).toEqual({ version: 1 });
  });

  it('writes only instance-id when no hostname is given', () => {
    const path = save(buildNoCloudSeed({ userData: machineConfig, instanceId: '0b7c2f4e-uuid' }));
    expect(parseYaml(extract(path, 'meta-data').toString('utf8'))).toEqual({ 'instance-id': '0b7c2f4e-uuid' });
  });

  it('keeps a custom network-config byte for byte', () => {
    const v2 = 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n';
    const path = save(buildNoCloudSeed({ userData: machineConfig, instanceId: 'i', networkConfig: v2 }));
    expect(extract(path, 'network-config').toString('utf8')).toBe(v2);
  });

  it('stores a large (300 KiB) user-data exactly', () => {
    const big = `${machineConfig}# ${'padding-with-unicode-é '.repeat(13_000)}\n`;
    expect(Buffer.byteLength(big)).toBeGreaterThan(300 * 1024);
    const path = save(buildNoCloudSeed({ userData: big, instanceId: 'big' }));
    expect(extract(path, 'user-data').equals(Buffer.from(big, 'utf8'))).toBe(true);
  });

  it('is byte-for-byte reproducible', () => {
    const input = { userData: machineConfig, instanceId: 'req-2', hostname: 'req-2' };
    expect(buildNoCloudSeed(input).equals(buildNoCloudSeed({ ...input }))).toBe(true);
    expect(buildNoCloudSeed(input).equals(buildNoCloudSeed({ ...input, instanceId: 'req-3' }))).toBe(false);
  });

  it('rejects user-data Talos would ignore, without echoing it', () => {
    for (const userData of ['', '  \n', `#cloud-config\n${machineConfig}`]) {
      let error: unknown;
      try {
        buildNoCloudSeed({ userData, instanceId: 'i' });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(NoCloudSeedError);
      expect(String(error)).not.toContain('SECRET');
    }
  });

  it.each([
    ['version: 3\n', /version: 1/],
    ['- version: 1\n', /version: 1/],
    ['', /version: 1/],
    ['version: [1\n', /not valid YAML/],
    ['version: "1"\n', /version: 1/],
  ])('rejects network-config %j that Talos would reject', (networkConfig, message) => {
    expect(() => buildNoCloudSeed({ userData: machineConfig, instanceId: 'i', networkConfig })).toThrow(message);
  });

  it.each(['', 'bad_host', '-lead', 'trail-', 'a..b', `${'a'.repeat(64)}`, 'sp ace'])('rejects hostname %j', (hostname) => {
    expect(() => buildNoCloudSeed({ userData: machineConfig, instanceId: 'i', hostname })).toThrow(NoCloudSeedError);
  });

  it('accepts FQDNs and request-id style hostnames', () => {
    for (const hostname of ['talos-abc-123', 'node1.example.com', 'a', `${'a'.repeat(63)}.b`]) {
      expect(() => buildNoCloudSeed({ userData: machineConfig, instanceId: 'i', hostname })).not.toThrow();
    }
  });
});

describe('renderMetaData', () => {
  it.each(['123', 'yes', 'null', 'true', '~', '2024-01-01', 'a: b', '#x', "it's", 'x'.repeat(200)])(
    'keeps instance-id %j a string for YAML 1.1 and 1.2 readers',
    (instanceId) => {
      const text = renderMetaData(instanceId);
      expect(parseYaml(text)).toEqual({ 'instance-id': instanceId });
      expect(parseYaml(text, { version: '1.1' })).toEqual({ 'instance-id': instanceId });
      expect(text.trim().split('\n')).toHaveLength(1);
    },
  );

  it('rejects an empty instance-id or one with control characters', () => {
    expect(() => renderMetaData('')).toThrow(NoCloudSeedError);
    expect(() => renderMetaData('a\nb')).toThrow(NoCloudSeedError);
  });
});

/** Inverse of the plain (non-hashed) encoding documented on seedIsoFileName; used to prove injectivity. */
function decodeSeedName(name: string): string {
  const m = /^omni-seed-(.*)\.iso$/.exec(name);
  if (m?.[1] === undefined) throw new Error(`not a seed name: ${name}`);
  const bytes: number[] = [];
  const body = m[1];
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '_') {
      const hex = body.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) throw new Error(`bad escape in ${name}`);
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(body.charCodeAt(i));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** Seeded PRNG (mulberry32) for reproducible random request ids. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PVE_ISO_NAME = /^[A-Za-z0-9_.-]+\.iso$/;

describe('seedIsoFileName', () => {
  it('keeps ordinary Omni request ids readable', () => {
    expect(seedIsoFileName('talos-proxmox-7x2kq')).toBe('omni-seed-talos-proxmox-7x2kq.iso');
    expect(seedIsoFileName('req.1')).toBe('omni-seed-req.1.iso');
  });

  it('escapes upper case, underscore and other characters so names stay distinct on case-insensitive storage', () => {
    expect(seedIsoFileName('A_b')).toBe('omni-seed-_41_5fb.iso');
    const names = ['Node', 'node', 'NODE', 'n_6fde', 'n/ode', 'n ode', 'nöde'].map(seedIsoFileName);
    expect(new Set(names.map((n) => n.toLowerCase())).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(PVE_ISO_NAME);
  });

  it('maps random ids injectively to valid PVE iso names that decode back to the id', () => {
    const alphabet = ['a', 'Z', '0', '-', '_', '.', '/', ' ', ':', 'é', '日', '\u{1F600}', '%', '\\'];
    const rand = prng(1234);
    const seen = new Map<string, string>();
    for (let i = 0; i < 2000; i++) {
      const len = 1 + Math.floor(rand() * 12);
      let id = '';
      for (let j = 0; j < len; j++) id += alphabet[Math.floor(rand() * alphabet.length)] ?? 'a';
      const name = seedIsoFileName(id);
      expect(name).toMatch(PVE_ISO_NAME);
      expect(name.length).toBeLessThanOrEqual(255);
      expect(decodeSeedName(name)).toBe(id);
      const previous = seen.get(name);
      if (previous !== undefined) expect(previous).toBe(id);
      seen.set(name, id);
    }
  });

  it('caps very long ids at 255 characters and keeps them distinct', () => {
    const ids = ['x'.repeat(241), 'x'.repeat(242), `${'x'.repeat(400)}a`, `${'x'.repeat(400)}b`, 'É'.repeat(100)];
    const names = ids.map(seedIsoFileName);
    expect(names[0]).toBe(`omni-seed-${'x'.repeat(241)}.iso`);
    for (const n of names) {
      expect(n.length).toBeLessThanOrEqual(255);
      expect(n).toMatch(PVE_ISO_NAME);
    }
    expect(names[1]).toMatch(/_h[0-9a-f]{64}\.iso$/);
    expect(new Set(names).size).toBe(names.length);
    // A plain id that looks like a hashed name still maps to a different file.
    const lookalike = names[2]?.slice('omni-seed-'.length, -'.iso'.length) ?? '';
    expect(seedIsoFileName(lookalike)).not.toBe(names[2]);
  });

  it('rejects ids that cannot be encoded injectively', () => {
    expect(() => seedIsoFileName('')).toThrow(NoCloudSeedError);
    expect(() => seedIsoFileName('a\ud800b')).toThrow(/lone surrogate/);
  });
});

describe('the label Talos probes', () => {
  // go-blockdevice v2 blkid iso9660 probe (Talos's volume discovery): the Joliet descriptor's volume id decoded as
  // UTF-16BE when there is one, else the primary's bytes; then only trailing spaces are trimmed (NULs are not).
  it('reads exactly "cidata" from both descriptors (padded with spaces, never NULs)', () => {
    const iso = buildNoCloudSeed({ userData: machineConfig, instanceId: 'i-1' });
    const volumeId = (lba: number) => iso.subarray(lba * 2048 + 40, lba * 2048 + 72);
    expect(iso[16 * 2048]).toBe(1);
    expect(iso[17 * 2048]).toBe(2);
    const joliet = new TextDecoder('utf-16be').decode(volumeId(17));
    const primary = volumeId(16).toString('latin1');
    expect(joliet.replace(/ +$/, '')).toBe('cidata');
    expect(primary.replace(/ +$/, '')).toBe('cidata');
  });
});
