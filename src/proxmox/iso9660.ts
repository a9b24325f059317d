// In-memory ISO9660 (ECMA-119) image writer with a Joliet tree, for small flat volumes such as NoCloud seeds.
// Root directory only; same input gives the same bytes (fixed default timestamp).

/** Logical sector (block) size of every image this module writes. */
export const ISO_SECTOR_SIZE = 2048;

/** Timestamp written into the image when the caller gives none; fixed so images are reproducible. */
export const DEFAULT_ISO_DATE = new Date(Date.UTC(2020, 0, 1, 0, 0, 0));

/** Longest Joliet file name (UCS-2 code units) the writer accepts. */
export const MAX_JOLIET_NAME_LENGTH = 64;

/** Longest volume id: the Joliet descriptor holds 32 bytes of UCS-2, so 16 characters. */
export const MAX_VOLUME_ID_LENGTH = 16;

export interface IsoFile {
  /** File name in the root directory, as readers with Joliet support (Linux, Windows, isoinfo -J) show it. */
  name: string;
  /** Contents; strings are encoded as UTF-8. */
  data: Buffer | string;
}

export interface IsoImageOptions {
  /**
   * Volume label. Written verbatim into both volume descriptors, so `blkid` and Talos see it as given.
   * Characters A-Z, a-z, 0-9 and `_`, at most 16. (ECMA-119 asks for upper case only; like genisoimage
   * and go-diskfs we also allow lower case, which Talos needs for `cidata`.)
   */
  volumeId: string;
  /** Files of the root directory; order does not matter (directories are written sorted). */
  files: readonly IsoFile[];
  /** Recording time for descriptors and directory records; defaults to DEFAULT_ISO_DATE. Years 1900–2155. */
  date?: Date;
  /** Application identifier (ECMA-119 a-characters, at most 64); blank when omitted. */
  applicationId?: string;
}

/** The image cannot be written as requested (bad name, label, date, or something this writer does not support). */
export class IsoLayoutError extends Error {
  override readonly name = 'IsoLayoutError';
}

// Sector map: 0-15 system area, 16 PVD, 17 Joliet SVD, 18 terminator, 19-22 path tables, then the two root
// directories, then file data.
const PVD_LBA = 16;
const SVD_LBA = 17;
const TERMINATOR_LBA = 18;
const ISO_L_PATH_LBA = 19;
const ISO_M_PATH_LBA = 20;
const JOLIET_L_PATH_LBA = 21;
const JOLIET_M_PATH_LBA = 22;
const FIRST_DIRECTORY_LBA = 23;

/** A root-only path table holds one 10-byte record. */
const PATH_TABLE_SIZE = 10;
const MAX_UINT32 = 0xffff_ffff;

const A_CHARACTERS = /^[A-Z0-9_ !"%&'()*+,\-./:;<=>?]*$/;
const VOLUME_ID_CHARACTERS = /^[A-Za-z0-9_]+$/;
/** Characters Joliet forbids in identifiers, plus C0 controls. */
// eslint-disable-next-line no-control-regex
const JOLIET_FORBIDDEN = /[\u0000-\u001f*/:;?\\]/;

interface PlacedFile {
  jolietName: string;
  isoName: string;
  data: Buffer;
  extent: number;
}

/** Builds the whole image in memory and returns it; throws IsoLayoutError on any input it cannot represent. */
export function writeIso(opts: IsoImageOptions): Buffer {
  const date = opts.date ?? DEFAULT_ISO_DATE;
  validateDate(date);
  validateVolumeId(opts.volumeId);
  const applicationId = opts.applicationId ?? '';
  if (applicationId.length > 64 || !A_CHARACTERS.test(applicationId)) {
    throw new IsoLayoutError(
      'application id must be at most 64 ECMA-119 a-characters (upper-case letters, digits, space, punctuation)',
    );
  }

  const files = prepareFiles(opts.files);
  const isoDirectory = [...files].sort((a, b) => compareIsoIdentifiers(a.isoName, b.isoName));
  const jolietDirectory = [...files].sort((a, b) => compareCodeUnits(a.jolietName, b.jolietName));

  const isoIds = new Map(isoDirectory.map((f) => [f, Buffer.from(f.isoName, 'latin1')]));
  const jolietIds = new Map(jolietDirectory.map((f) => [f, ucs2be(f.jolietName)]));

  const isoDirSectors = directorySectorCount([...isoIds.values()]);
  const jolietDirSectors = directorySectorCount([...jolietIds.values()]);
  const isoRootLba = FIRST_DIRECTORY_LBA;
  const jolietRootLba = isoRootLba + isoDirSectors;

  // File data, in Joliet name order; both trees point at the same extents. Empty files take no sector and
  // record extent 0, so no record ever points past the end of the volume.
  let next = jolietRootLba + jolietDirSectors;
  for (const file of jolietDirectory) {
    const sectors = sectorsFor(file.data.length);
    file.extent = sectors === 0 ? 0 : next;
    next += sectors;
  }
  const totalSectors = next;
  if (totalSectors > MAX_UINT32) throw new IsoLayoutError('image would exceed the ISO9660 volume size limit');

  const image = Buffer.alloc(totalSectors * ISO_SECTOR_SIZE);
  const at = (lba: number): Buffer => image.subarray(lba * ISO_SECTOR_SIZE, (lba + 1) * ISO_SECTOR_SIZE);

  const isoRoot = { lba: isoRootLba, size: isoDirSectors * ISO_SECTOR_SIZE };
  const jolietRoot = { lba: jolietRootLba, size: jolietDirSectors * ISO_SECTOR_SIZE };

  writeVolumeDescriptor(at(PVD_LBA), {
    joliet: false,
    volumeId: opts.volumeId,
    applicationId,
    totalSectors,
    lPathLba: ISO_L_PATH_LBA,
    mPathLba: ISO_M_PATH_LBA,
    root: isoRoot,
    date,
  });
  writeVolumeDescriptor(at(SVD_LBA), {
    joliet: true,
    volumeId: opts.volumeId,
    applicationId,
    totalSectors,
    lPathLba: JOLIET_L_PATH_LBA,
    mPathLba: JOLIET_M_PATH_LBA,
    root: jolietRoot,
    date,
  });
  const terminator = at(TERMINATOR_LBA);
  terminator[0] = 255;
  terminator.write('CD001', 1, 'latin1');
  terminator[6] = 1;

  writePathTableRecord(at(ISO_L_PATH_LBA), isoRoot.lba, 'little');
  writePathTableRecord(at(ISO_M_PATH_LBA), isoRoot.lba, 'big');
  writePathTableRecord(at(JOLIET_L_PATH_LBA), jolietRoot.lba, 'little');
  writePathTableRecord(at(JOLIET_M_PATH_LBA), jolietRoot.lba, 'big');

  writeDirectory(image, isoRoot, isoDirectory.map((f) => ({ file: f, id: isoIds.get(f) ?? Buffer.alloc(0) })), date);
  writeDirectory(
    image,
    jolietRoot,
    jolietDirectory.map((f) => ({ file: f, id: jolietIds.get(f) ?? Buffer.alloc(0) })),
    date,
  );

  for (const file of jolietDirectory) {
    if (file.data.length > 0) file.data.copy(image, file.extent * ISO_SECTOR_SIZE);
  }
  return image;
}

function prepareFiles(input: readonly IsoFile[]): PlacedFile[] {
  const seen = new Map<string, string>();
  const files: PlacedFile[] = [];
  for (const f of input) {
    validateJolietName(f.name);
    const folded = f.name.toLowerCase();
    const clash = seen.get(folded);
    if (clash !== undefined) {
      throw new IsoLayoutError(
        clash === f.name
          ? `duplicate file name ${JSON.stringify(f.name)}`
          : `file names ${JSON.stringify(clash)} and ${JSON.stringify(f.name)} differ only in case`,
      );
    }
    seen.set(folded, f.name);
    const data = typeof f.data === 'string' ? Buffer.from(f.data, 'utf8') : f.data;
    if (data.length > MAX_UINT32) {
      throw new IsoLayoutError(`file ${JSON.stringify(f.name)} is 4 GiB or larger; multi-extent files are not supported`);
    }
    files.push({ jolietName: f.name, isoName: '', data, extent: 0 });
  }
  assignIsoNames(files);
  return files;
}

function validateJolietName(name: string): void {
  if (name.length === 0) throw new IsoLayoutError('file name must not be empty');
  if (name.includes('/')) {
    throw new IsoLayoutError(`file name ${JSON.stringify(name)} contains '/': only the root directory is supported`);
  }
  if (name.length > MAX_JOLIET_NAME_LENGTH) {
    throw new IsoLayoutError(`file name ${JSON.stringify(name)} is longer than ${MAX_JOLIET_NAME_LENGTH} characters`);
  }
  if (JOLIET_FORBIDDEN.test(name)) {
    throw new IsoLayoutError(`file name ${JSON.stringify(name)} contains a character Joliet forbids (* / : ; ? \\ or control)`);
  }
  if (/[\ud800-\udfff]/.test(name)) {
    throw new IsoLayoutError(`file name ${JSON.stringify(name)} has characters outside UCS-2 (Joliet cannot store them)`);
  }
  if (name === '.' || name === '..' || name.endsWith('.')) {
    // Linux drops trailing dots from Joliet names, so such a file would not be found under its name.
    throw new IsoLayoutError(`file name ${JSON.stringify(name)} must not end with '.'`);
  }
}

function validateVolumeId(volumeId: string): void {
  if (volumeId.length === 0 || volumeId.length > MAX_VOLUME_ID_LENGTH || !VOLUME_ID_CHARACTERS.test(volumeId)) {
    throw new IsoLayoutError(
      `volume id ${JSON.stringify(volumeId)} must be 1-${MAX_VOLUME_ID_LENGTH} characters from A-Z, a-z, 0-9 and _`,
    );
  }
}

function validateDate(date: Date): void {
  const time = date.getTime();
  if (Number.isNaN(time)) throw new IsoLayoutError('date is not a valid Date');
  const year = date.getUTCFullYear();
  if (year < 1900 || year > 2155) throw new IsoLayoutError(`date year ${year} is outside 1900-2155`);
}

/**
 * Level-1 names for the primary tree (8.3, d-characters, `;1`), e.g. `user-data` → `USER_DAT.;1`.
 * Readers without Joliet see these; a clash gets a numeric tail (`USER_DA1.;1`) in Joliet-name order.
 */
function assignIsoNames(files: PlacedFile[]): void {
  const used = new Set<string>();
  const ordered = [...files].sort((a, b) => compareCodeUnits(a.jolietName, b.jolietName));
  for (const file of ordered) {
    const dot = file.jolietName.lastIndexOf('.');
    const rawBase = dot > 0 ? file.jolietName.slice(0, dot) : file.jolietName;
    const rawExt = dot > 0 ? file.jolietName.slice(dot + 1) : '';
    const base = toDCharacters(rawBase).slice(0, 8) || '_';
    const ext = toDCharacters(rawExt).slice(0, 3);
    let candidate = `${base}.${ext}`;
    for (let n = 1; used.has(candidate); n++) {
      const tail = String(n);
      if (tail.length > 8) throw new IsoLayoutError('too many files with similar names');
      candidate = `${base.slice(0, 8 - tail.length)}${tail}.${ext}`;
    }
    used.add(candidate);
    file.isoName = `${candidate};1`;
  }
}

function toDCharacters(s: string): string {
  return s.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

/** ECMA-119 9.3 order: name, then extension, each compared as if padded with spaces, then version. */
function compareIsoIdentifiers(a: string, b: string): number {
  const split = (id: string): [string, string] => {
    const noVersion = id.slice(0, id.lastIndexOf(';'));
    const dot = noVersion.indexOf('.');
    return [noVersion.slice(0, dot), noVersion.slice(dot + 1)];
  };
  const [an, ae] = split(a);
  const [bn, be] = split(b);
  return comparePadded(an, bn) || comparePadded(ae, be);
}

function comparePadded(a: string, b: string): number {
  const len = Math.max(a.length, b.length);
  return compareCodeUnits(a.padEnd(len, ' '), b.padEnd(len, ' '));
}

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function ucs2be(s: string): Buffer {
  const out = Buffer.alloc(s.length * 2);
  for (let i = 0; i < s.length; i++) out.writeUInt16BE(s.charCodeAt(i), i * 2);
  return out;
}

function sectorsFor(bytes: number): number {
  return Math.ceil(bytes / ISO_SECTOR_SIZE);
}

function recordLength(idLength: number): number {
  return 33 + idLength + (idLength % 2 === 0 ? 1 : 0);
}

/** Sectors a root directory needs: `.` and `..` plus one record per file; records never cross a sector. */
function directorySectorCount(ids: readonly Buffer[]): number {
  const lengths = [recordLength(1), recordLength(1), ...ids.map((id) => recordLength(id.length))];
  let sectors = 1;
  let used = 0;
  for (const len of lengths) {
    if (used + len > ISO_SECTOR_SIZE) {
      sectors++;
      used = 0;
    }
    used += len;
  }
  return sectors;
}

interface Extent {
  lba: number;
  size: number;
}

function writeDirectory(image: Buffer, dir: Extent, entries: ReadonlyArray<{ file: PlacedFile; id: Buffer }>, date: Date): void {
  const records = [
    encodeDirectoryRecord(dir, true, Buffer.from([0]), date),
    encodeDirectoryRecord(dir, true, Buffer.from([1]), date), // the root is its own parent
    ...entries.map(({ file, id }) => encodeDirectoryRecord({ lba: file.extent, size: file.data.length }, false, id, date)),
  ];
  const start = dir.lba * ISO_SECTOR_SIZE;
  let offset = 0;
  for (const record of records) {
    const inSector = offset % ISO_SECTOR_SIZE;
    if (inSector + record.length > ISO_SECTOR_SIZE) offset += ISO_SECTOR_SIZE - inSector;
    record.copy(image, start + offset);
    offset += record.length;
  }
  if (offset > dir.size) throw new Error('internal: directory records overflow their extent');
}

function encodeDirectoryRecord(extent: Extent, isDirectory: boolean, id: Buffer, date: Date): Buffer {
  const record = Buffer.alloc(recordLength(id.length));
  record[0] = record.length;
  record[1] = 0; // extended attribute record length
  writeBoth32(record, 2, extent.lba);
  writeBoth32(record, 10, extent.size);
  writeRecordingDate(record, 18, date);
  record[25] = isDirectory ? 0x02 : 0x00;
  record[26] = 0; // file unit size (not interleaved)
  record[27] = 0; // interleave gap
  writeBoth16(record, 28, 1); // volume sequence number
  record[32] = id.length;
  id.copy(record, 33);
  return record;
}

function writePathTableRecord(sector: Buffer, rootLba: number, endian: 'little' | 'big'): void {
  sector[0] = 1; // identifier length
  sector[1] = 0; // extended attribute record length
  if (endian === 'little') {
    sector.writeUInt32LE(rootLba, 2);
    sector.writeUInt16LE(1, 6);
  } else {
    sector.writeUInt32BE(rootLba, 2);
    sector.writeUInt16BE(1, 6);
  }
  sector[8] = 0; // root identifier
  sector[9] = 0; // pad to even length
}

interface VolumeDescriptorFields {
  joliet: boolean;
  volumeId: string;
  applicationId: string;
  totalSectors: number;
  lPathLba: number;
  mPathLba: number;
  root: Extent;
  date: Date;
}

function writeVolumeDescriptor(sector: Buffer, f: VolumeDescriptorFields): void {
  const text = (offset: number, length: number, value: string): void => {
    if (f.joliet) {
      const encoded = ucs2be(value);
      for (let i = 0; i + 1 < length; i += 2) {
        sector.writeUInt16BE(i < encoded.length ? encoded.readUInt16BE(i) : 0x0020, offset + i);
      }
      // An odd-length field (the 37-byte file ids) keeps its final byte zero.
    } else {
      sector.write(value.padEnd(length, ' '), offset, length, 'latin1');
    }
  };

  sector[0] = f.joliet ? 2 : 1;
  sector.write('CD001', 1, 'latin1');
  sector[6] = 1; // descriptor version
  sector[7] = 0; // volume flags (SVD): only escape sequences registered with ISO 2375
  text(8, 32, ''); // system identifier
  text(40, 32, f.volumeId);
  writeBoth32(sector, 80, f.totalSectors);
  if (f.joliet) sector.write('%/E', 88, 'latin1'); // Joliet UCS-2 level 3
  writeBoth16(sector, 120, 1); // volume set size
  writeBoth16(sector, 124, 1); // volume sequence number
  writeBoth16(sector, 128, ISO_SECTOR_SIZE);
  writeBoth32(sector, 132, PATH_TABLE_SIZE);
  sector.writeUInt32LE(f.lPathLba, 140);
  sector.writeUInt32BE(f.mPathLba, 148);
  encodeDirectoryRecord(f.root, true, Buffer.from([0]), f.date).copy(sector, 156);
  text(190, 128, ''); // volume set identifier
  text(318, 128, ''); // publisher
  text(446, 128, ''); // data preparer
  text(574, 128, f.applicationId);
  text(702, 37, ''); // copyright file
  text(739, 37, ''); // abstract file
  text(776, 37, ''); // bibliographic file
  writeDescriptorDate(sector, 813, f.date); // creation
  writeDescriptorDate(sector, 830, f.date); // modification
  writeDescriptorDate(sector, 847, null); // expiration: never
  writeDescriptorDate(sector, 864, f.date); // effective
  sector[881] = 1; // file structure version
}

/** 7-byte directory record time: years since 1900, month, day, hour, minute, second, GMT offset (UTC here). */
function writeRecordingDate(buf: Buffer, offset: number, date: Date): void {
  buf[offset] = date.getUTCFullYear() - 1900;
  buf[offset + 1] = date.getUTCMonth() + 1;
  buf[offset + 2] = date.getUTCDate();
  buf[offset + 3] = date.getUTCHours();
  buf[offset + 4] = date.getUTCMinutes();
  buf[offset + 5] = date.getUTCSeconds();
  buf[offset + 6] = 0;
}

/** 17-byte descriptor time: `YYYYMMDDHHMMSScc` digits plus a GMT offset byte; all-`0` digits mean "not set". */
function writeDescriptorDate(buf: Buffer, offset: number, date: Date | null): void {
  if (date === null) {
    buf.write('0'.repeat(16), offset, 'latin1');
    buf[offset + 16] = 0;
    return;
  }
  const two = (n: number): string => String(n).padStart(2, '0');
  const digits =
    String(date.getUTCFullYear()).padStart(4, '0') +
    two(date.getUTCMonth() + 1) +
    two(date.getUTCDate()) +
    two(date.getUTCHours()) +
    two(date.getUTCMinutes()) +
    two(date.getUTCSeconds()) +
    two(Math.floor(date.getUTCMilliseconds() / 10));
  buf.write(digits, offset, 'latin1');
  buf[offset + 16] = 0;
}

function writeBoth16(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt16LE(value, offset);
  buf.writeUInt16BE(value, offset + 2);
}

function writeBoth32(buf: Buffer, offset: number, value: number): void {
  buf.writeUInt32LE(value, offset);
  buf.writeUInt32BE(value, offset + 4);
}
