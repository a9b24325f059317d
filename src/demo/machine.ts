// A simulated Talos machine for the demo: reads its NoCloud seed (cidata ISO9660 + Joliet) the way Talos does,
// takes the SideroLink join token from the join config and presents it to Omni with its SMBIOS UUID.

const SECTOR = 2048;

/** Files in the root directory of an ISO9660 image, by their Joliet names. */
export function readJolietRoot(image: Buffer): Map<string, Buffer> {
  for (let lba = 16; (lba + 1) * SECTOR <= image.length; lba++) {
    const d = image.subarray(lba * SECTOR, (lba + 1) * SECTOR);
    if (d.toString('latin1', 1, 6) !== 'CD001') break;
    const type = d[0];
    if (type === 255) break;
    // Supplementary volume descriptor with a Joliet escape sequence (%/@, %/C or %/E).
    if (type === 2 && d[88] === 0x25 && d[89] === 0x2f) {
      const root = d.subarray(156, 156 + 34);
      const extent = root.readUInt32LE(2);
      const size = root.readUInt32LE(10);
      return readDirectory(image, extent, size);
    }
  }
  throw new Error('seed ISO has no Joliet volume descriptor');
}

function readDirectory(image: Buffer, extent: number, size: number): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const dir = image.subarray(extent * SECTOR, extent * SECTOR + size);
  let off = 0;
  while (off < dir.length) {
    const len = dir[off] ?? 0;
    if (len === 0) {
      off = (Math.floor(off / SECTOR) + 1) * SECTOR; // records never cross a sector; zero means "next sector"
      continue;
    }
    const rec = dir.subarray(off, off + len);
    const nameLen = rec[32] ?? 0;
    const flags = rec[25] ?? 0;
    const nameBytes = rec.subarray(33, 33 + nameLen);
    if (!(nameLen === 1 && (nameBytes[0] === 0 || nameBytes[0] === 1)) && (flags & 0x02) === 0) {
      const name = Buffer.from(nameBytes).swap16().toString('utf16le').replace(/;1$/, '');
      const at = rec.readUInt32LE(2) * SECTOR;
      files.set(name, image.subarray(at, at + rec.readUInt32LE(10)));
    }
    off += len;
  }
  return files;
}

/** The join token inside a Talos join config (SideroLinkConfig.apiUrl `?jointoken=`). */
export function joinTokenFromConfig(joinConfig: string): string {
  const m = /^apiUrl:\s*(\S+)\s*$/m.exec(joinConfig);
  if (!m?.[1]) throw new Error('join config has no SideroLinkConfig apiUrl');
  const url = new URL(m[1].replace(/^['"]|['"]$/g, ''));
  const token = url.searchParams.get('jointoken');
  if (!token) throw new Error('SideroLink API URL has no jointoken');
  return token;
}

export interface BootedMachine {
  uuid: string;
  token: string;
  hostname?: string;
}

/** What a Talos VM learns at boot from its cidata seed and its SMBIOS UUID. */
export function bootFromSeed(seed: Buffer, smbiosUuid: string): BootedMachine {
  const files = readJolietRoot(seed);
  const userData = files.get('user-data');
  if (!userData) throw new Error('seed ISO has no user-data');
  const meta = files.get('meta-data')?.toString('utf8') ?? '';
  const host = /^hostname:\s*"?([^"\n]+)"?\s*$/m.exec(meta)?.[1];
  return { uuid: smbiosUuid, token: joinTokenFromConfig(userData.toString('utf8')), ...(host ? { hostname: host } : {}) };
}
