// A simulated Talos machine for the demo: reads its NoCloud seed (cidata ISO9660 + Joliet) the way Talos does,
// takes the SideroLink join token from the join config and presents it to Omni with its SMBIOS UUID.
import { parse as parseYaml } from 'yaml';

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
  /** Static addresses the network-config gives the machine's NICs (matched by MAC, as Talos does), by NIC MAC. */
  addresses?: Record<string, string[]>;
}

/**
 * What a Talos VM learns at boot from its cidata seed and its SMBIOS UUID. `nicMacs` are the MACs of the VM's NICs:
 * a network-config (version 2) entry applies to the NIC whose MAC its `match.macaddress` names (case-insensitive);
 * when they are given, an entry naming no NIC of the VM is an error here (Talos would configure a NIC that does not
 * exist).
 */
export function bootFromSeed(seed: Buffer, smbiosUuid: string, nicMacs: readonly string[] = []): BootedMachine {
  const files = readJolietRoot(seed);
  const userData = files.get('user-data');
  if (!userData) throw new Error('seed ISO has no user-data');
  const meta = files.get('meta-data')?.toString('utf8') ?? '';
  const host = /^hostname:\s*"?([^"\n]+)"?\s*$/m.exec(meta)?.[1];
  const machine: BootedMachine = { uuid: smbiosUuid, token: joinTokenFromConfig(userData.toString('utf8')), ...(host ? { hostname: host } : {}) };
  const net = parseYaml(files.get('network-config')?.toString('utf8') ?? '') as { version?: number; ethernets?: Record<string, { match?: { macaddress?: string }; addresses?: string[] }> } | null;
  if (net?.version === 2 && net.ethernets) {
    machine.addresses = {};
    for (const [name, eth] of Object.entries(net.ethernets)) {
      const mac = (eth.match?.macaddress ?? '').toLowerCase();
      // Without the VM's MACs (callers that only need the token) the entries are taken as they are.
      if (nicMacs.length > 0 && !nicMacs.some((m) => m.toLowerCase() === mac)) {
        throw new Error(`network-config ${name}: no NIC with MAC ${mac || '(none)'} (NICs: ${nicMacs.join(', ')})`);
      }
      machine.addresses[mac] = eth.addresses ?? [];
    }
  }
  return machine;
}
