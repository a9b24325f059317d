// ISO9660+Joliet writer: images read back by Debian's isoinfo/blkid and by an independent TS reader.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_ISO_DATE, ISO_SECTOR_SIZE, IsoLayoutError, writeIso, type IsoFile } from '../../src/proxmox/iso9660.js';

const workDir = mkdtempSync(join(tmpdir(), 'iso9660-test-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

let fileCounter = 0;
function saveImage(image: Buffer): string {
  const path = join(workDir, `image-${fileCounter++}.iso`);
  writeFileSync(path, image);
  return path;
}

function run(cmd: string, args: string[]): Buffer {
  return execFileSync(cmd, args, { maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Deterministic pseudo-random bytes (xorshift32), so large-file tests need no real randomness. */
function seededBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** `name -> size` from an `isoinfo -l` listing (files only, no `.`/`..`). */
function listing(text: string): Map<string, number> {
  const entries = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^-\S*\s+\d+\s+\d+\s+\d+\s+(\d+)\s+\w{3}\s+\d+\s+\d{4}\s+\[\s*\d+\s+\d+\]\s+(.*?)\s*$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) entries.set(m[2], Number(m[1]));
  }
  return entries;
}

function blkidExport(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of run('blkid', ['-p', '-o', 'export', path]).toString('utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

// ---------- independent reader (second oracle) ----------

interface ReadVolume {
  volumeId: string;
  volumeSectors: number;
  escape: string;
  files: Map<string, Buffer>;
  /** Directory extent LBA and length of the root. */
  root: { lba: number; size: number };
  pathTable: { size: number; l: number; m: number };
}

function both32(buf: Buffer, offset: number): number {
  const le = buf.readUInt32LE(offset);
  const be = buf.readUInt32BE(offset + 4);
  if (le !== be) throw new Error(`both-endian 32-bit mismatch at ${offset}: ${le} vs ${be}`);
  return le;
}

function both16(buf: Buffer, offset: number): number {
  const le = buf.readUInt16LE(offset);
  const be = buf.readUInt16BE(offset + 2);
  if (le !== be) throw new Error(`both-endian 16-bit mismatch at ${offset}: ${le} vs ${be}`);
  return le;
}

function decodeUcs2(buf: Buffer): string {
  let s = '';
  for (let i = 0; i + 1 < buf.length; i += 2) s += String.fromCharCode(buf.readUInt16BE(i));
  return s;
}

function readVolumes(image: Buffer): { primary: ReadVolume; joliet: ReadVolume | undefined } {
  if (image.length % ISO_SECTOR_SIZE !== 0) throw new Error('image is not a whole number of sectors');
  if (!image.subarray(0, 16 * ISO_SECTOR_SIZE).equals(Buffer.alloc(16 * ISO_SECTOR_SIZE))) {
    throw new Error('system area is not zero');
  }
  let primary: ReadVolume | undefined;
  let joliet: ReadVolume | undefined;
  for (let lba = 16; ; lba++) {
    const vd = image.subarray(lba * ISO_SECTOR_SIZE, (lba + 1) * ISO_SECTOR_SIZE);
    if (vd.subarray(1, 6).toString('latin1') !== 'CD001' || vd[6] !== 1) throw new Error(`bad descriptor at ${lba}`);
    if (vd[0] === 255) break;
    if (vd[0] !== 1 && vd[0] !== 2) continue;
    const isJoliet = vd[0] === 2;
    const text = (o: number, n: number): string =>
      (isJoliet ? decodeUcs2(vd.subarray(o, o + n)) : vd.subarray(o, o + n).toString('latin1')).replace(/[ \0]+$/, '');
    if (both16(vd, 128) !== ISO_SECTOR_SIZE) throw new Error('block size');
    if (both16(vd, 120) !== 1 || both16(vd, 124) !== 1) throw new Error('volume set');
    if (vd[881] !== 1) throw new Error('file structure version');
    const rootRecord = vd.subarray(156, 190);
    if (rootRecord[0] !== 34 || rootRecord[32] !== 1 || rootRecord[33] !== 0 || rootRecord[25] !== 2) {
      throw new Error('root record');
    }
    const root = { lba: both32(rootRecord, 2), size: both32(rootRecord, 10) };
    const volume: ReadVolume = {
      volumeId: text(40, 32),
      volumeSectors: both32(vd, 80),
      escape: vd.subarray(88, 91).toString('latin1'),
      root,
      pathTable: { size: both32(vd, 132), l: vd.readUInt32LE(140), m: vd.readUInt32BE(148) },
      files: readDirectory(image, root, isJoliet),
    };
    if (isJoliet) joliet = volume;
    else primary = volume;
  }
  if (primary === undefined) throw new Error('no primary volume descriptor');
  return { primary, joliet };
}

function readDirectory(image: Buffer, root: { lba: number; size: number }, joliet: boolean): Map<string, Buffer> {
  if (root.size % ISO_SECTOR_SIZE !== 0) throw new Error('directory size is not whole sectors');
  const dir = image.subarray(root.lba * ISO_SECTOR_SIZE, root.lba * ISO_SECTOR_SIZE + root.size);
  const files = new Map<string, Buffer>();
  let offset = 0;
  let index = 0;
  while (offset < dir.length) {
    const len = dir[offset] ?? 0;
    if (len === 0) {
      offset = (Math.floor(offset / ISO_SECTOR_SIZE) + 1) * ISO_SECTOR_SIZE; // rest of sector is padding
      continue;
    }
    if (Math.floor(offset / ISO_SECTOR_SIZE) !== Math.floor((offset + len - 1) / ISO_SECTOR_SIZE)) {
      throw new Error('directory record crosses a sector boundary');
    }
    if (len % 2 !== 0) throw new Error('odd directory record length');
    const rec = dir.subarray(offset, offset + len);
    const idLen = rec[32] ?? 0;
    const id = rec.subarray(33, 33 + idLen);
    const extent = both32(rec, 2);
    const size = both32(rec, 10);
    both16(rec, 28);
    if (index < 2) {
      if (idLen !== 1 || id[0] !== index || rec[25] !== 2 || extent !== root.lba) throw new Error('bad ./.. record');
    } else {
      if (rec[25] !== 0) throw new Error('unexpected flags on file record');
      if (size > 0 && (extent + Math.ceil(size / ISO_SECTOR_SIZE)) * ISO_SECTOR_SIZE > image.length) {
        throw new Error('file extent past end of image');
      }
      const name = joliet ? decodeUcs2(id) : id.toString('latin1');
      files.set(name, image.subarray(extent * ISO_SECTOR_SIZE, extent * ISO_SECTOR_SIZE + size));
    }
    index++;
    offset += len;
  }
  return files;
}

// ---------- tests ----------

const seedFiles: IsoFile[] = [
  { name: 'user-data', data: 'version: v1alpha1\nmachine:\n  type: worker\n' },
  { name: 'meta-data', data: 'instance-id: "abc"\n' },
  { name: 'network-config', data: 'version: 1\n' },
];

describe('writeIso read back by Debian tools', () => {
  it('reports label cidata, Joliet level 3 and the exact volume size', () => {
    const image = writeIso({ volumeId: 'cidata', files: seedFiles });
    const path = saveImage(image);
    const info = run('isoinfo', ['-d', '-i', path]).toString('utf8');
    expect(info).toMatch(/^Volume id: cidata$/m);
    expect(info).toMatch(/^Joliet with UCS level 3 found$/m);
    expect(info).toMatch(/^Logical block size is: 2048$/m);
    expect(info).toContain(`Volume size is: ${image.length / ISO_SECTOR_SIZE}`);

    expect(blkidExport(path)).toMatchObject({ LABEL: 'cidata', TYPE: 'iso9660', VERSION: 'Joliet Extension' });
  });

  it('lists the Joliet names and plain level-1 names, and extracts every file byte for byte', () => {
    const image = writeIso({ volumeId: 'cidata', files: seedFiles });
    const path = saveImage(image);
    const joliet = listing(run('isoinfo', ['-J', '-l', '-i', path]).toString('utf8'));
    expect([...joliet.keys()]).toEqual(['meta-data', 'network-config', 'user-data']);
    const plain = listing(run('isoinfo', ['-l', '-i', path]).toString('utf8'));
    expect([...plain.keys()]).toEqual(['META_DAT.;1', 'NETWORK_.;1', 'USER_DAT.;1']);
    for (const f of seedFiles) {
      const expected = Buffer.from(f.data);
      expect(joliet.get(f.name)).toBe(expected.length);
      expect(run('isoinfo', ['-J', '-x', `/${f.name}`, '-i', path]).equals(expected)).toBe(true);
    }
    expect(run('isoinfo', ['-x', '/USER_DAT.;1', '-i', path]).toString('utf8')).toBe(seedFiles[0]?.data);
  });

  it('has the same visible structure as genisoimage -J -V cidata for the same files', () => {
    const srcDir = mkdtempSync(join(workDir, 'src-'));
    for (const f of seedFiles) writeFileSync(join(srcDir, f.name), f.data);
    const reference = join(workDir, 'genisoimage.iso');
    run('genisoimage', ['-quiet', '-J', '-V', 'cidata', '-o', reference, ...seedFiles.map((f) => join(srcDir, f.name))]);
    const ours = saveImage(writeIso({ volumeId: 'cidata', files: seedFiles }));

    for (const args of [['-J', '-l'], ['-l']]) {
      const a = listing(run('isoinfo', [...args, '-i', reference]).toString('utf8'));
      const b = listing(run('isoinfo', [...args, '-i', ours]).toString('utf8'));
      expect([...b.entries()]).toEqual([...a.entries()]);
    }
    const pick = ({ LABEL, TYPE, VERSION }: Record<string, string>): object => ({ LABEL, TYPE, VERSION });
    expect(pick(blkidExport(ours))).toEqual(pick(blkidExport(reference)));
    // Our reader parses genisoimage's image the same way, so it is a fair oracle for ours.
    const ref = readVolumes(readFileSync(reference));
    expect(ref.joliet?.files.get('user-data')?.toString('utf8')).toBe(seedFiles[0]?.data);
  });

  it('stores a 300 KiB file across many sectors and extracts it exactly', () => {
    const big = seededBytes(300 * 1024 + 123, 42);
    const image = writeIso({ volumeId: 'cidata', files: [{ name: 'user-data', data: big }, ...seedFiles.slice(1)] });
    const path = saveImage(image);
    expect(run('isoinfo', ['-J', '-x', '/user-data', '-i', path]).equals(big)).toBe(true);
    expect(run('isoinfo', ['-J', '-x', '/meta-data', '-i', path]).toString('utf8')).toBe(seedFiles[1]?.data);
    expect(readVolumes(image).joliet?.files.get('user-data')?.equals(big)).toBe(true);
  });

  it('spreads a directory with many long names over several sectors without losing any file', () => {
    const files: IsoFile[] = Array.from({ length: 70 }, (_, i) => ({
      name: `${String(i).padStart(3, '0')}-${'long-file-name-'.repeat(4)}`.slice(0, 64),
      data: i % 10 === 0 ? seededBytes(5000 + i, i + 1) : `file number ${i}\n`,
    }));
    const image = writeIso({ volumeId: 'MANY_FILES', files: [...files].reverse() });
    const { primary, joliet } = readVolumes(image);
    expect(joliet?.root.size).toBeGreaterThan(4 * ISO_SECTOR_SIZE); // 70 × 162-byte records
    expect(primary.files.size).toBe(70);
    expect(new Set(primary.files.keys()).size).toBe(70);

    const path = saveImage(image);
    const listed = listing(run('isoinfo', ['-J', '-l', '-i', path]).toString('utf8'));
    expect([...listed.keys()]).toEqual(files.map((f) => f.name)); // sorted
    expect(listing(run('isoinfo', ['-l', '-i', path]).toString('utf8')).size).toBe(70);
    for (const f of files.filter((_, i) => i % 7 === 0)) {
      expect(run('isoinfo', ['-J', '-x', `/${f.name}`, '-i', path]).equals(Buffer.from(f.data))).toBe(true);
    }
  });

  it('handles empty files and files of exactly one sector', () => {
    const exact = seededBytes(ISO_SECTOR_SIZE, 7);
    const image = writeIso({
      volumeId: 'cidata',
      files: [
        { name: 'empty', data: '' },
        { name: 'exact', data: exact },
        { name: 'z', data: 'z' },
      ],
    });
    const path = saveImage(image);
    expect(run('isoinfo', ['-J', '-x', '/empty', '-i', path]).length).toBe(0);
    expect(run('isoinfo', ['-J', '-x', '/exact', '-i', path]).equals(exact)).toBe(true);
    expect(run('isoinfo', ['-J', '-x', '/z', '-i', path]).toString('utf8')).toBe('z');
    // 16 system + 3 descriptors + 4 path tables + 2 directories + 1 (exact) + 1 (z); empty takes none.
    expect(image.length / ISO_SECTOR_SIZE).toBe(27);
  });
});

describe('writeIso structure (TS reader)', () => {
  it('writes both descriptors with the label, the Joliet escape and consistent sizes and path tables', () => {
    const image = writeIso({ volumeId: 'cidata', files: seedFiles });
    const { primary, joliet } = readVolumes(image);
    expect(primary.volumeId).toBe('cidata');
    expect(joliet?.volumeId).toBe('cidata');
    expect(joliet?.escape).toBe('%/E');
    expect(primary.volumeSectors * ISO_SECTOR_SIZE).toBe(image.length);
    expect(joliet?.volumeSectors).toBe(primary.volumeSectors);
    for (const vol of [primary, joliet]) {
      if (vol === undefined) throw new Error('missing volume');
      expect(vol.pathTable.size).toBe(10);
      const l = image.subarray(vol.pathTable.l * ISO_SECTOR_SIZE);
      const m = image.subarray(vol.pathTable.m * ISO_SECTOR_SIZE);
      expect([l[0], l.readUInt32LE(2), l.readUInt16LE(6), l[8]]).toEqual([1, vol.root.lba, 1, 0]);
      expect([m[0], m.readUInt32BE(2), m.readUInt16BE(6), m[8]]).toEqual([1, vol.root.lba, 1, 0]);
    }
    // Both trees share the same file extents.
    expect(joliet?.files.get('user-data')?.byteOffset).toBe(primary.files.get('USER_DAT.;1')?.byteOffset);
  });

  it('writes the given date into descriptors and records, and leaves expiration unset', () => {
    const date = new Date(Date.UTC(2031, 6, 9, 13, 14, 15, 160));
    const image = writeIso({ volumeId: 'cidata', files: seedFiles, date });
    const pvd = image.subarray(16 * ISO_SECTOR_SIZE, 17 * ISO_SECTOR_SIZE);
    expect(pvd.subarray(813, 829).toString('latin1')).toBe('2031070913141516');
    expect(pvd.subarray(830, 846).toString('latin1')).toBe('2031070913141516');
    expect(pvd.subarray(847, 863).toString('latin1')).toBe('0000000000000000');
    expect([...pvd.subarray(156 + 18, 156 + 25)]).toEqual([131, 7, 9, 13, 14, 15, 0]);
    const path = saveImage(image);
    expect(blkidExport(path).UUID).toBe('2031-07-09-13-14-15-16');
  });

  it('is deterministic: same input gives the same bytes; the default date is fixed', () => {
    const a = writeIso({ volumeId: 'cidata', files: seedFiles });
    const b = writeIso({ volumeId: 'cidata', files: [...seedFiles].reverse() });
    const c = writeIso({ volumeId: 'cidata', files: seedFiles, date: DEFAULT_ISO_DATE });
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(true);
    expect(a.equals(writeIso({ volumeId: 'cidata', files: seedFiles, date: new Date(Date.UTC(2021, 0, 1)) }))).toBe(false);
  });

  it('gives distinct level-1 names to Joliet names that would clash', () => {
    const image = writeIso({
      volumeId: 'X',
      files: [
        { name: 'user-data', data: 'a' },
        { name: 'user_data', data: 'b' },
        { name: 'user-dat', data: 'c' },
        { name: 'report.final.json', data: 'd' },
        { name: '.hidden', data: 'e' },
      ],
    });
    const { primary, joliet } = readVolumes(image);
    expect(primary.files.size).toBe(5);
    for (const name of primary.files.keys()) expect(name).toMatch(/^[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3};1$/);
    expect(primary.files.get('REPORT_F.JSO;1')?.toString()).toBe('d');
    expect(joliet?.files.get('user_data')?.toString()).toBe('b');
    expect(joliet?.files.get('.hidden')?.toString()).toBe('e');
  });

  it('keeps non-ASCII Joliet names (UCS-2) readable by isoinfo', () => {
    const image = writeIso({ volumeId: 'cidata', files: [{ name: 'café-ü', data: 'x' }] });
    const path = saveImage(image);
    expect(readVolumes(image).joliet?.files.has('café-ü')).toBe(true);
    // isoinfo cannot print UTF-8; ask for ISO 8859-1, which covers these characters.
    const listed = run('isoinfo', ['-J', '-j', 'iso8859-1', '-l', '-i', path]).toString('latin1');
    expect([...listing(listed).keys()]).toEqual(['café-ü']);
  });
});

describe('writeIso rejects what it cannot represent', () => {
  const one = (name: string): IsoFile[] => [{ name, data: 'x' }];
  it.each([
    ['a/b', /only the root directory/],
    ['', /empty/],
    ['x'.repeat(65), /longer than 64/],
    ['a:b', /forbids/],
    ['a;1', /forbids/],
    ['tab\there', /forbids/],
    ['smile-\u{1F600}', /outside UCS-2/],
    ['trailing.', /must not end with '\.'/],
  ])('file name %j', (name, message) => {
    expect(() => writeIso({ volumeId: 'cidata', files: one(name) })).toThrow(message);
  });

  it('accepts a 64-character name', () => {
    expect(() => writeIso({ volumeId: 'cidata', files: one('n'.repeat(64)) })).not.toThrow();
  });

  it('rejects duplicate names, also when they differ only in case', () => {
    expect(() => writeIso({ volumeId: 'cidata', files: [...one('a'), ...one('a')] })).toThrow(/duplicate/);
    expect(() => writeIso({ volumeId: 'cidata', files: [...one('user-data'), ...one('USER-DATA')] })).toThrow(
      /differ only in case/,
    );
  });

  it.each(['', 'ci data', 'cidata-x', 'x'.repeat(17), 'ümlaut'])('volume id %j', (volumeId) => {
    expect(() => writeIso({ volumeId, files: [] })).toThrow(IsoLayoutError);
  });

  it('rejects invalid dates and application ids', () => {
    expect(() => writeIso({ volumeId: 'cidata', files: [], date: new Date(Number.NaN) })).toThrow(/valid Date/);
    expect(() => writeIso({ volumeId: 'cidata', files: [], date: new Date(Date.UTC(1899, 0, 1)) })).toThrow(/1900/);
    expect(() => writeIso({ volumeId: 'cidata', files: [], applicationId: 'lower' })).toThrow(/a-characters/);
  });

  it('never puts file contents into an error message', () => {
    const secret = 'join-token-SECRET-1234';
    try {
      writeIso({ volumeId: 'cidata', files: [{ name: 'bad/name', data: secret }] });
      expect.unreachable();
    } catch (err) {
      expect(String(err)).not.toContain(secret);
    }
  });
});
