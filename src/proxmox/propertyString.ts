// Proxmox property strings ("local-lvm:32,ssd=1"): one typed description per PVE format and a
// parser/serialiser driven by it, with PVE's own validation rules and error texts.
import { knownCpuModels } from './cpuModels.js';

/** How the value of one key is checked (mirrors the JSON-schema subset PVE uses inside property strings). */
export type PropertyValueType =
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'int'; min?: number; max?: number }
  | { kind: 'number'; min?: number; max?: number }
  /** accepts 1/0 on/off yes/no true/false when parsing (PVE is lenient inside property strings) */
  | { kind: 'bool' }
  | {
      kind: 'string';
      /** Anchored by the checker (PVE wraps patterns in ^...$). */
      pattern?: RegExp;
      maxLength?: number;
      /** PVE format name, e.g. 'pve-bridge-id', used in messages. */
      formatName?: string;
      /** PVE's format validator: returns its error text, or undefined when the value is valid. */
      check?: (value: string) => string | undefined;
      /** The value is a ';'-separated list (e.g. boot order, VLAN trunks), so ';' may appear in it. */
      semicolonList?: boolean;
    };

export interface PropertySpec {
  type: PropertyValueType;
  /** This key is another name for `aliasOf`; the parsed result uses the target name. */
  aliasOf?: string;
  /** For keys such as net's `virtio=<mac>`: the key name itself becomes the value of this key. */
  keyAliasOf?: string;
  /** PVE marks the key as not optional ("property is missing and it is not optional"). */
  required?: boolean;
}

export interface PropertyStringFormat {
  name: string;
  /** The key whose value may be written without "key=" (PVE's default_key). */
  defaultKey?: string;
  keys: Record<string, PropertySpec>;
}

export class PropertyStringError extends Error {
  /** The (canonical) key the first problem is about, when there is one. */
  readonly key: string | undefined;
  /** Per-key problems (PVE's `errors` hash), keyed by key name (prefixed with the path when given). */
  readonly errors: Readonly<Record<string, string>>;
  /** The message without the leading "invalid format - ", as PVE's parser raises it. */
  readonly detail: string;
  constructor(detail: string, key?: string, errors: Record<string, string> = {}) {
    super(`invalid format - ${detail}`);
    this.name = 'PropertyStringError';
    this.detail = detail;
    this.key = key;
    this.errors = errors;
  }
}

// ---------------------------------------------------------------------------------------------
// PVE's named formats (pve-common JSONSchema.pm, pve-storage, pve-access-control, qemu-server)
// ---------------------------------------------------------------------------------------------

const DNS_LABEL = '[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?';
const DNS_NAME_RE = new RegExp(`^(${DNS_LABEL}\\.)*${DNS_LABEL}$`);
const ID_RE = /^[a-z][a-z0-9\-_.]*[a-z0-9]$/i;
const BRIDGE_RE = /^[-_.\w]+$/;
const TAG_RE = /^[a-z0-9_][a-z0-9_\-+.]*$/i;
const CONFIGID_RE = /^[a-z][a-z0-9_-]+$/i;
const MAC_RE = /^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$/i;
const VMID_RE = /^[1-9][0-9]{2,8}$/;
const POOL_RE = /^[A-Za-z0-9.\-_]+$/;
const NODE_RE = /^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/;
const PCI_ID = '(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\\.[a-f0-9])?';
const PCI_LIST_RE = new RegExp(`^${PCI_ID}(;${PCI_ID})*$`);
const DISK_SIZE_RE = /^(\d+(\.\d+)?)([KMGT](?:iB)?)?$/;
const URLENCODED_RE = /^[-%a-zA-Z0-9_.!~*'()]*$/;
const UUID_RE = /^[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}$/;
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;
/** Volume ids as pve-storage parses them: `<storage id>:<volume name>`. */
const VOLUME_ID_RE = /^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$/i;
/** A new disk to allocate: `[<storage>:]<size in GiB>` (qemu-server NEW_DISK_RE). */
export const NEW_DISK_RE = /^(([^/:\s]+):)?(\d+(\.\d+)?)$/;

/** Drive keys that exist in a qemu-server VM config, by bus, and their index limits. */
const DRIVE_BUS_MAX = { ide: 4, scsi: 31, virtio: 16, sata: 6 } as const;
const NET_MAX = 32;
const HOSTPCI_MAX = 16;
/** qemu-server QemuServer/USB.pm `$MAX_USB_DEVICES`: usb0..usb13. */
export const USB_MAX = 14;

function indexedKey(key: string, base: string, max: number): boolean {
  const m = new RegExp(`^${base}(\\d+)$`).exec(key);
  if (!m?.[1] || (m[1].length > 1 && m[1].startsWith('0'))) return false;
  return Number(m[1]) < max;
}

/** Whether `key` names a disk/cdrom slot (ide0..3, scsi0..30, virtio0..15, sata0..5). */
export function isDriveKey(key: string): boolean {
  return Object.entries(DRIVE_BUS_MAX).some(([bus, max]) => indexedKey(key, bus, max));
}

function isBootDevice(dev: string): boolean {
  return (
    isDriveKey(dev) ||
    indexedKey(dev, 'net', NET_MAX) ||
    indexedKey(dev, 'usb', USB_MAX) ||
    indexedKey(dev, 'hostpci', HOSTPCI_MAX)
  );
}

/** PVE's split_list: ',', ';' and whitespace all separate list entries. */
function splitList(text: string): string[] {
  return text.replace(/[,;]/g, ' ').trim().split(/\s+/).filter((s) => s !== '');
}

/** Boolean checks for PVE's named formats (the values users may put into provider data). */
export const pveFormat = {
  /** `dns-name` (VM name): dot-separated labels of letters, digits and inner dashes. */
  dnsName: (s: string): boolean => DNS_NAME_RE.test(s),
  /** `pve-storage-id`: at least 2 chars, `^[a-z][a-z0-9\-_.]*[a-z0-9]$` (case-insensitive). */
  storageId: (s: string): boolean => s.length >= 2 && ID_RE.test(s),
  /** `pve-bridge-id`: `^[-_.\w]+$`. */
  bridgeId: (s: string): boolean => BRIDGE_RE.test(s),
  /** `pve-tag`. */
  tag: (s: string): boolean => TAG_RE.test(s),
  /** `pve-tag-list`: tags separated by ';', ',' or whitespace (an empty list is allowed). */
  tagList: (s: string): boolean => splitList(s).every((t) => TAG_RE.test(t)),
  /** `pve-configid` (cluster mapping ids such as PCI mappings). */
  mappingId: (s: string): boolean => CONFIGID_RE.test(s),
  /** `mac-addr`: unicast MAC (the I/G bit must be clear). */
  macAddress: (s: string): boolean => MAC_RE.test(s),
  /** `pve-vmid`: 100..999999999 written without leading zeros. */
  vmid: (n: number | string): boolean => VMID_RE.test(String(n)),
  /** `pve-poolid`. */
  poolId: (s: string): boolean => POOL_RE.test(s),
  /** A host PCI id `[domain:]bus:dev[.func]` (lowercase hex), or a ';'-list of them. */
  pciId: (s: string): boolean => PCI_LIST_RE.test(s),
  /** `pve-node`. */
  nodeName: (s: string): boolean => NODE_RE.test(s),
  /** `pve-volume-id`: `<storage id>:<name>`. */
  volumeId: (s: string): boolean => {
    const m = VOLUME_ID_RE.exec(s);
    return m !== null && pveFormat.storageId(m[1] ?? '');
  },
  /** `disk-size`: e.g. `32G`, `512M`, `1.5T`, `4096`. */
  diskSize: (s: string): boolean => DISK_SIZE_RE.test(s),
  /** A UUID as smbios1 accepts it. */
  uuid: (s: string): boolean => UUID_RE.test(s),
} as const;

// ---------------------------------------------------------------------------------------------
// Value types shared by the formats
// ---------------------------------------------------------------------------------------------

const bool: PropertySpec = { type: { kind: 'bool' } };
const int = (min?: number, max?: number): PropertySpec => ({
  type: { kind: 'int', ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) },
});
const num = (min?: number, max?: number): PropertySpec => ({
  type: { kind: 'number', ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) },
});
const oneOf = (...values: string[]): PropertySpec => ({ type: { kind: 'enum', values } });
const str = (opts: Omit<Extract<PropertyValueType, { kind: 'string' }>, 'kind'> = {}): PropertySpec => ({
  type: { kind: 'string', ...opts },
});
const alias = (target: string, spec: PropertySpec): PropertySpec => ({ type: spec.type, aliasOf: target });

const volumeOrPath: PropertySpec = {
  required: true,
  type: {
    kind: 'string',
    formatName: 'pve-volume-id-or-qm-path',
    check: (v) => {
      if (v === 'none' || v === 'cdrom' || v.startsWith('/')) return undefined;
      const m = VOLUME_ID_RE.exec(v);
      if (!m) return `invalid format - unable to parse volume ID '${v}'`;
      const sid = m[1] ?? '';
      if (!pveFormat.storageId(sid)) return `invalid format - storage ID '${sid}' contains illegal characters`;
      return undefined;
    },
  },
};
const diskSize = str({
  formatName: 'disk-size',
  check: (v) => (DISK_SIZE_RE.test(v) ? undefined : `invalid format - value does not look like a valid disk size: ${v}`),
});
const urlencoded = (maxLength: number): PropertySpec =>
  str({
    formatName: 'urlencoded',
    maxLength,
    check: (v) => (URLENCODED_RE.test(v) ? undefined : `invalid format - invalid urlencoded string: ${v}`),
  });
const imageFormat = oneOf('raw', 'qcow', 'qed', 'qcow2', 'vmdk', 'cloop');

// ---------------------------------------------------------------------------------------------
// Drives (qemu-server QemuServer/Drive.pm)
// ---------------------------------------------------------------------------------------------

const driveBase: Record<string, PropertySpec> = {
  file: volumeOrPath,
  volume: alias('file', volumeOrPath),
  media: oneOf('cdrom', 'disk'),
  snapshot: bool,
  cache: oneOf('none', 'writethrough', 'writeback', 'unsafe', 'directsync'),
  format: imageFormat,
  size: diskSize,
  backup: bool,
  replicate: bool,
  rerror: oneOf('ignore', 'report', 'stop'),
  werror: oneOf('enospc', 'ignore', 'report', 'stop'),
  aio: oneOf('native', 'threads', 'io_uring'),
  discard: oneOf('ignore', 'on'),
  detect_zeroes: bool,
  serial: urlencoded(60),
  shared: bool,
  bps: int(),
  bps_rd: int(),
  bps_wr: int(),
  mbps: num(),
  mbps_rd: num(),
  mbps_wr: num(),
  iops: int(),
  iops_rd: int(),
  iops_wr: int(),
  mbps_max: num(),
  mbps_rd_max: num(),
  mbps_wr_max: num(),
  iops_max: int(),
  iops_rd_max: int(),
  iops_wr_max: int(),
  bps_max_length: int(1),
  bps_rd_max_length: int(1),
  bps_wr_max_length: int(1),
  iops_max_length: int(1),
  iops_rd_max_length: int(1),
  iops_wr_max_length: int(1),
  bps_rd_length: alias('bps_rd_max_length', int(1)),
  bps_wr_length: alias('bps_wr_max_length', int(1)),
  iops_rd_length: alias('iops_rd_max_length', int(1)),
  iops_wr_length: alias('iops_wr_max_length', int(1)),
};
const driveIothread = { iothread: bool };
const driveSsd = { ssd: bool };
const driveRo = { ro: bool };
const driveModel = { model: urlencoded(120) };
const driveProduct = { product: str({ pattern: /^[A-Za-z0-9\-_\s]{0,16}$/ }) };
const driveVendor = { vendor: str({ pattern: /^[A-Za-z0-9\-_\s]{0,8}$/ }) };
const driveQueues = { queues: int(2) };
const driveScsiblock = { scsiblock: bool };
const driveWwn = { wwn: str({ pattern: /^0x[0-9a-fA-F]{16}$/ }) };

const ideFormat: PropertyStringFormat = {
  name: 'pve-qm-ide',
  defaultKey: 'file',
  keys: { ...driveBase, ...driveModel, ...driveSsd, ...driveWwn },
};
const scsiFormat: PropertyStringFormat = {
  name: 'pve-qm-scsi',
  defaultKey: 'file',
  keys: {
    ...driveBase,
    ...driveIothread,
    ...driveProduct,
    ...driveQueues,
    ...driveRo,
    ...driveScsiblock,
    ...driveSsd,
    ...driveVendor,
    ...driveWwn,
  },
};
const sataFormat: PropertyStringFormat = {
  name: 'pve-qm-sata',
  defaultKey: 'file',
  keys: { ...driveBase, ...driveSsd, ...driveWwn },
};
const virtioFormat: PropertyStringFormat = {
  name: 'pve-qm-virtio',
  defaultKey: 'file',
  keys: { ...driveBase, ...driveIothread, ...driveRo },
};
/** Every option any disk bus accepts (use `driveFormatFor(key)` for the exact per-bus set). */
const driveFormat: PropertyStringFormat = {
  name: 'pve-qm-drive',
  defaultKey: 'file',
  keys: { ...scsiFormat.keys, ...ideFormat.keys },
};

const efidiskFormat: PropertyStringFormat = {
  name: 'pve-qm-efidisk',
  defaultKey: 'file',
  keys: {
    file: volumeOrPath,
    volume: alias('file', volumeOrPath),
    format: imageFormat,
    size: diskSize,
    efitype: oneOf('2m', '4m'),
    'pre-enrolled-keys': bool,
    'ms-cert': oneOf('2011', '2023', '2023w', '2023k'),
  },
};

// ---------------------------------------------------------------------------------------------
// Network (qemu-server QemuServer/Network.pm)
// ---------------------------------------------------------------------------------------------

export const NIC_MODELS = [
  'e1000',
  'e1000-82540em',
  'e1000-82544gc',
  'e1000-82545em',
  'e1000e',
  'i82551',
  'i82557b',
  'i82559er',
  'ne2k_isa',
  'ne2k_pci',
  'pcnet',
  'rtl8139',
  'virtio',
  'vmxnet3',
] as const;

const macaddr = str({
  formatName: 'mac-addr',
  check: (v) => (MAC_RE.test(v) ? undefined : 'invalid format - value does not look like a valid unicast MAC address'),
});
const netFormat: PropertyStringFormat = {
  name: 'pve-qm-net',
  defaultKey: 'model',
  keys: {
    model: { type: { kind: 'enum', values: NIC_MODELS }, required: true },
    macaddr,
    ...Object.fromEntries(
      NIC_MODELS.map((m): [string, PropertySpec] => [m, { type: macaddr.type, aliasOf: 'macaddr', keyAliasOf: 'model' }]),
    ),
    bridge: str({
      formatName: 'pve-bridge-id',
      check: (v) => (BRIDGE_RE.test(v) ? undefined : `invalid format - invalid bridge ID '${v}'`),
    }),
    queues: int(0, 64),
    rate: num(0),
    tag: int(1, 4094),
    trunks: str({ pattern: /^\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*$/, semicolonList: true }),
    firewall: bool,
    link_down: bool,
    mtu: int(1, 65520),
    'host-tunnel': bool,
  },
};

// ---------------------------------------------------------------------------------------------
// PCI passthrough (qemu-server QemuServer/PCI.pm)
// ---------------------------------------------------------------------------------------------

const pciHexId = str({ pattern: /^0x[0-9a-fA-F]{4}$/ });
const hostpciFormat: PropertyStringFormat = {
  name: 'pve-qm-hostpci',
  defaultKey: 'host',
  keys: {
    host: str({ pattern: PCI_LIST_RE, semicolonList: true }),
    mapping: str({
      formatName: 'pve-configid',
      check: (v) => (CONFIGID_RE.test(v) ? undefined : `invalid format - invalid configuration ID '${v}'`),
    }),
    rombar: bool,
    romfile: str({ pattern: /^[^,;]+$/ }),
    pcie: bool,
    'x-vga': bool,
    'legacy-igd': bool,
    mdev: str({ pattern: /^[^/.:]+$/ }),
    'vendor-id': pciHexId,
    'device-id': pciHexId,
    'sub-vendor-id': pciHexId,
    'sub-device-id': pciHexId,
    driver: oneOf('vfio', 'keep'),
  },
};

// ---------------------------------------------------------------------------------------------
// CPU, agent, memory, smbios1, machine, boot
// ---------------------------------------------------------------------------------------------

const CPU_FLAG = '[+-][a-zA-Z0-9\\-_.]+';
/** PVE's `reported-model` enum: every model it knows, sorted case-insensitively. */
const REPORTED_MODELS = [...knownCpuModels()].sort((a, b) => {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  return x < y ? -1 : x > y ? 1 : 0;
});
/**
 * The cpu format as PVE parses it: `cputype` is any string here; the VM-specific rules (known model, allowed flags,
 * no `reported-model`) are `vmCpuConfError` in cpuModels.ts, which PVE runs after the parse.
 */
const cpuFormat: PropertyStringFormat = {
  name: 'pve-vm-cpu-conf',
  defaultKey: 'cputype',
  keys: {
    cputype: str(),
    'reported-model': oneOf(...REPORTED_MODELS),
    hidden: bool,
    'hv-vendor-id': str({ pattern: /^[a-zA-Z0-9]{1,12}$/ }),
    flags: str({ pattern: new RegExp(`^${CPU_FLAG}(;${CPU_FLAG})*$`), semicolonList: true }),
    'guest-phys-bits': int(32, 64),
    'phys-bits': str({
      formatName: 'pve-phys-bits',
      check: (v) => {
        const ok = /^(host|\d{1,2})$/.test(v) && (v === 'host' || (Number(v) >= 8 && Number(v) <= 64));
        return ok ? undefined : "invalid format - value must be an integer between 8 and 64 or 'host'";
      },
    }),
    level: int(0, 4294967295),
  },
};

const agentFormat: PropertyStringFormat = {
  name: 'pve-qm-agent',
  defaultKey: 'enabled',
  keys: {
    enabled: { type: { kind: 'bool' }, required: true },
    fstrim_cloned_disks: bool,
    'freeze-fs': bool,
    'freeze-fs-on-backup': alias('freeze-fs', bool),
    'guest-fsfreeze': alias('freeze-fs', bool),
    type: oneOf('virtio', 'isa'),
  },
};

const memoryFormat: PropertyStringFormat = {
  name: 'pve-qm-memory',
  defaultKey: 'current',
  keys: { current: { type: { kind: 'int', min: 16 }, required: true } },
};

const b64 = str({ pattern: BASE64_RE });
const smbios1Format: PropertyStringFormat = {
  name: 'pve-qm-smbios1',
  keys: {
    uuid: str({ pattern: UUID_RE }),
    version: b64,
    serial: b64,
    manufacturer: b64,
    product: b64,
    sku: b64,
    family: b64,
    base64: bool,
  },
};

const machineFormat: PropertyStringFormat = {
  name: 'pve-qemu-machine-fmt',
  defaultKey: 'type',
  keys: {
    type: str({
      pattern:
        /^(pc|pc(-i440fx)?-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|q35|pc-q35-\d+(\.\d+)+(\+pve\d+)?(\.pxe)?|virt(?:-\d+(\.\d+)+)?(\+pve\d+)?)$/,
      maxLength: 40,
    }),
    viommu: oneOf('intel', 'virtio'),
    'aw-bits': num(32, 64),
    'enable-s3': bool,
    'enable-s4': bool,
  },
};

const bootFormat: PropertyStringFormat = {
  name: 'pve-qm-boot',
  defaultKey: 'legacy',
  keys: {
    legacy: str({ pattern: /^[acdn]{1,4}$/ }),
    order: str({
      formatName: 'pve-qm-bootdev-list',
      semicolonList: true,
      check: (v) => {
        for (const dev of splitList(v)) {
          if (!isBootDevice(dev)) return `invalid format - invalid boot device '${dev}'`;
        }
        return undefined;
      },
    }),
  },
};

// ---------------------------------------------------------------------------------------------
// Options the provider does not send but a VM config may hold (the simulator validates them as PVE does)
// ---------------------------------------------------------------------------------------------

const NUMBER_SET = /^\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*$/;
/** qemu-server Memory.pm `pve-qm-numanode`. */
const numaFormat: PropertyStringFormat = {
  name: 'pve-qm-numanode',
  keys: {
    cpus: { type: { kind: 'string', pattern: NUMBER_SET, semicolonList: true }, required: true },
    hostnodes: str({ pattern: NUMBER_SET, semicolonList: true }),
    memory: num(),
    policy: oneOf('preferred', 'bind', 'interleave'),
  },
};

/** qemu-server RNG.pm `pve-qm-rng`: `source` is the default key and not optional. */
const rngFormat: PropertyStringFormat = {
  name: 'pve-qm-rng',
  defaultKey: 'source',
  keys: {
    source: { type: { kind: 'enum', values: ['/dev/urandom', '/dev/random', '/dev/hwrng'] }, required: true },
    max_bytes: int(),
    period: int(),
  },
};

/** qemu-server `pve-qm-watchdog`. */
const watchdogFormat: PropertyStringFormat = {
  name: 'pve-qm-watchdog',
  defaultKey: 'model',
  keys: {
    model: oneOf('i6300esb', 'ib700'),
    action: oneOf('reset', 'shutdown', 'poweroff', 'pause', 'debug', 'none'),
  },
};

const IPV4_OCTET = '(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)';
const IPV4_RE = new RegExp(`^(?:${IPV4_OCTET}\\.){3}${IPV4_OCTET}$`);
/** IPv6 as PVE's IPV6RE accepts it (full, compressed, with an embedded IPv4 tail). */
function isIpv6(v: string): boolean {
  const m = /^(.*?)(?::((?:\d{1,3}\.){3}\d{1,3}))?$/.exec(v);
  let head = v;
  let groupsForV4 = 0;
  if (m?.[2] !== undefined && IPV4_RE.test(m[2])) {
    head = `${m[1]}:`;
    groupsForV4 = 2;
  }
  if (!/^[0-9a-fA-F:]+$/.test(head) || head.includes(':::')) return false;
  const halves = head.split('::');
  if (halves.length > 2) return false;
  const groups = (h: string): string[] => (h === '' ? [] : h.replace(/:$/, '').split(':'));
  const parts = halves.flatMap((h) => groups(h === ':' ? '' : h));
  if (parts.some((g) => g === '' || g.length > 4)) return false;
  const count = parts.length + groupsForV4;
  return halves.length === 2 ? count <= 7 : count === 8;
}
function cidr(v: string, isAddr: (a: string) => boolean, maxBits: number): boolean {
  const m = /^(.+)\/(\d+)$/.exec(v);
  return m !== null && isAddr(m[1] ?? '') && Number(m[2]) > 7 && Number(m[2]) <= maxBits;
}
/** PVE's `ipv4` and `ipv6` formats. */
export const ipFormat = {
  ipv4: (v: string): boolean => IPV4_RE.test(v),
  ipv6: isIpv6,
} as const;

/** qemu-server Network.pm `pve-qm-ipconfig` (the cloud-init address of one NIC). */
const ipconfigFormat: PropertyStringFormat = {
  name: 'pve-qm-ipconfig',
  keys: {
    ip: str({
      formatName: 'pve-ipv4-config',
      check: (v) =>
        /^(?:dhcp|manual)$/.test(v) || cidr(v, ipFormat.ipv4, 32)
          ? undefined
          : 'invalid format - value does not look like a valid ipv4 network configuration',
    }),
    gw: str({
      formatName: 'ipv4',
      check: (v) => (ipFormat.ipv4(v) ? undefined : 'invalid format - value does not look like a valid IPv4 address'),
    }),
    ip6: str({
      formatName: 'pve-ipv6-config',
      check: (v) =>
        /^(?:auto|dhcp|manual)$/.test(v) || cidr(v, isIpv6, 128)
          ? undefined
          : 'invalid format - value does not look like a valid ipv6 network configuration',
    }),
    gw6: str({
      formatName: 'ipv6',
      check: (v) => (isIpv6(v) ? undefined : 'invalid format - value does not look like a valid IPv6 address'),
    }),
  },
};

/** qemu-server `usb[n]` (QemuServer/USB.pm `$usb_fmt`, pve-qm-usb): a host device or port, `spice`, or a mapping. */
const usbFormat: PropertyStringFormat = {
  name: 'pve-qm-usb',
  defaultKey: 'host',
  keys: {
    host: str({ pattern: /(?:(?:0x)?[0-9A-Fa-f]{4}:(?:0x)?[0-9A-Fa-f]{4})|(?:\d+-\d+(?:\.\d+)*)|[Ss][Pp][Ii][Cc][Ee]/ }),
    mapping: str({
      formatName: 'pve-configid',
      check: (v) => (CONFIGID_RE.test(v) ? undefined : `invalid format - invalid configuration ID '${v}'`),
    }),
    usb3: bool,
  },
};

/** qemu-server `vga`. */
const vgaFormat: PropertyStringFormat = {
  name: 'pve-qm-vga',
  defaultKey: 'type',
  keys: {
    type: oneOf('cirrus', 'qxl', 'qxl2', 'qxl3', 'qxl4', 'none', 'serial0', 'serial1', 'serial2', 'serial3', 'std', 'virtio', 'virtio-gl', 'vmware'),
    clipboard: oneOf('vnc'),
    memory: int(4, 512),
  },
};

export const formats = {
  numa: numaFormat,
  rng: rngFormat,
  watchdog: watchdogFormat,
  ipconfig: ipconfigFormat,
  vga: vgaFormat,
  usb: usbFormat,
  drive: driveFormat,
  ide: ideFormat,
  scsi: scsiFormat,
  sata: sataFormat,
  virtio: virtioFormat,
  efidisk: efidiskFormat,
  net: netFormat,
  hostpci: hostpciFormat,
  cpu: cpuFormat,
  agent: agentFormat,
  memory: memoryFormat,
  smbios1: smbios1Format,
  machine: machineFormat,
  boot: bootFormat,
} as const satisfies Record<string, PropertyStringFormat>;

/** The exact format of a drive config key (`scsi3` → scsi options), or undefined for a non-drive key. */
export function driveFormatFor(key: string): PropertyStringFormat | undefined {
  if (key === 'efidisk0') return efidiskFormat;
  for (const bus of Object.keys(DRIVE_BUS_MAX) as (keyof typeof DRIVE_BUS_MAX)[]) {
    if (indexedKey(key, bus, DRIVE_BUS_MAX[bus])) return formats[bus];
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Parser and serialiser
// ---------------------------------------------------------------------------------------------

const TRUE_RE = /^(1|on|yes|true)$/i;
const FALSE_RE = /^(0|off|no|false)$/i;

/** PVE's parse_boolean: '1'/'0', or undefined when the text is not a boolean word. */
export function parsePveBoolean(v: string): '1' | '0' | undefined {
  if (TRUE_RE.test(v)) return '1';
  if (FALSE_RE.test(v)) return '0';
  return undefined;
}

const INTEGER_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.\d*|\d+|\.\d+)([eE][+-]?\d+)?$/;

/** Checks one (canonical-key) value against its type; returns PVE's error text or undefined. */
export function checkPropertyValue(spec: PropertySpec, value: string): string | undefined {
  const t = spec.type;
  switch (t.kind) {
    case 'bool':
      return value === '1' || value === '0' ? undefined : `type check ('boolean') failed - got '${value}'`;
    case 'int':
    case 'number': {
      const re = t.kind === 'int' ? INTEGER_RE : NUMBER_RE;
      if (!re.test(value)) return `type check ('${t.kind === 'int' ? 'integer' : 'number'}') failed - got '${value}'`;
      const n = Number(value);
      if (t.max !== undefined && n > t.max) return `value must have a maximum value of ${t.max}`;
      if (t.min !== undefined && n < t.min) return `value must have a minimum value of ${t.min}`;
      return undefined;
    }
    case 'enum':
      return t.values.includes(value)
        ? undefined
        : `value '${value}' does not have a value in the enumeration '${t.values.join(', ')}'`;
    case 'string': {
      if (t.check) {
        const err = t.check(value);
        if (err) return err;
      }
      if (t.pattern && !t.pattern.test(value)) return 'value does not match the regex pattern';
      if (t.maxLength !== undefined && value.length > t.maxLength) {
        return `value may only be ${t.maxLength} characters long`;
      }
      return undefined;
    }
  }
}

function formatErrors(errors: Record<string, string>): PropertyStringError {
  const keys = Object.keys(errors);
  const lines = keys.map((k) => `${k}: ${errors[k] ?? ''}`);
  return new PropertyStringError(`format error\n${lines.join('\n')}`, keys[0], errors);
}

/**
 * Parses e.g. "local-lvm:32,ssd=1" with formats.drive into canonical keys ({file, ssd: '1'}).
 * Booleans come back as '1'/'0'; aliases under their target name; net's `virtio=<mac>` as
 * {model: 'virtio', macaddr: <mac>}. Throws PropertyStringError with PVE's text. `path` prefixes
 * the keys in error messages the way PVE does for a parameter ("net0.firewall: ...").
 */
export function parsePropertyString(
  value: string,
  format: PropertyStringFormat,
  path?: string,
): Record<string, string> {
  const res: Record<string, string> = {};
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(res, k);
  let defaultSeen = false;
  for (const rawPart of value.split(',')) {
    if (/^\s*$/.test(rawPart)) continue;
    let part = rawPart;
    const kv = /^([^=]+)=([\s\S]+)$/.exec(part);
    if (kv) {
      let k = kv[1] as string;
      let v = kv[2] as string;
      if (has(k)) throw new PropertyStringError(`duplicate key in comma-separated list property: ${k}`, k);
      let spec = Object.prototype.hasOwnProperty.call(format.keys, k) ? format.keys[k] : undefined;
      if (spec?.aliasOf) {
        if (spec.keyAliasOf) {
          if (has(spec.keyAliasOf)) {
            throw new PropertyStringError(`key alias '${spec.keyAliasOf}' is already defined`, spec.keyAliasOf);
          }
          res[spec.keyAliasOf] = k;
        }
        k = spec.aliasOf;
        spec = format.keys[k];
        if (has(k)) throw new PropertyStringError(`key '${k}' is already defined (via alias)`, k);
      }
      if (!spec) throw new PropertyStringError(`invalid key in comma-separated list property: ${k}`, k);
      if (spec.type.kind === 'bool') v = parsePveBoolean(v) ?? v;
      res[k] = v;
    } else if (!part.includes('=')) {
      const dk = format.defaultKey;
      if (defaultSeen) throw new PropertyStringError(`duplicate key in comma-separated list property: ${dk ?? ''}`, dk);
      if (dk === undefined) {
        throw new PropertyStringError('value without key, but schema does not define a default key');
      }
      defaultSeen = true;
      if (has(dk)) throw new PropertyStringError(`duplicate key in comma-separated list property: ${dk}`, dk);
      const spec = format.keys[dk];
      if (spec?.type.kind === 'bool') part = parsePveBoolean(part) ?? part;
      res[dk] = part;
    } else {
      throw new PropertyStringError('missing key in comma-separated list property');
    }
  }

  const errors: Record<string, string> = {};
  const at = (k: string): string => (path ? `${path}.${k}` : k);
  for (const [k, spec] of Object.entries(format.keys)) {
    if (spec.aliasOf) continue;
    const v = res[k];
    if (v === undefined) {
      if (spec.required) errors[at(k)] = 'property is missing and it is not optional';
      continue;
    }
    const err = checkPropertyValue(spec, v);
    if (err) errors[at(k)] = err;
  }
  if (Object.keys(errors).length > 0) throw formatErrors(errors);
  return res;
}

// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\x00-\x1f\x7f]/;

function toText(key: string, spec: PropertySpec, v: string | number | boolean): string {
  if (typeof v === 'boolean') {
    if (spec.type.kind !== 'bool') {
      throw new PropertyStringError(`format error\n${key}: boolean given for a non-boolean property`, key);
    }
    return v ? '1' : '0';
  }
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new PropertyStringError(`format error\n${key}: not a finite number`, key);
    return String(v);
  }
  if (spec.type.kind === 'bool') return parsePveBoolean(v) ?? v;
  return v;
}

/**
 * Serialises fields (the default key first without "key=" unless `bareDefaultKey: false`, then the
 * others in the given order),
 * validating every value against the format. Throws PropertyStringError naming the key when a
 * value is invalid or could change the meaning of the string: no value may contain ',', control
 * characters, '=' (in the default-key position) or ';' (unless the key is a ';' list), so nothing
 * can smuggle an extra property. Undefined fields are skipped.
 */
export function formatPropertyString(
  fields: Record<string, string | number | boolean | undefined>,
  format: PropertyStringFormat,
  options: { bareDefaultKey?: boolean } = {},
): string {
  const bareDefault = options.bareDefaultKey ?? true;
  const parts: string[] = [];
  const errors: Record<string, string> = {};
  const dk = format.defaultKey;
  const present = Object.entries(fields).filter((e): e is [string, string | number | boolean] => e[1] !== undefined);

  // net-style "model=<mac>": the default key's value names an alias key whose target is also given.
  let combined: { key: string; target: string } | undefined;
  if (dk !== undefined && typeof fields[dk] === 'string') {
    const spec = format.keys[fields[dk]];
    if (spec?.keyAliasOf === dk && spec.aliasOf !== undefined && fields[spec.aliasOf] !== undefined) {
      combined = { key: fields[dk], target: spec.aliasOf };
    }
  }

  const texts = new Map<string, string>();
  for (const [key, raw] of present) {
    const spec = Object.prototype.hasOwnProperty.call(format.keys, key) ? format.keys[key] : undefined;
    if (!spec) {
      errors[key] = `unknown key '${key}' in ${format.name}`;
      continue;
    }
    if (spec.aliasOf) {
      errors[key] = `'${key}' is an alias; use '${spec.aliasOf}'`;
      continue;
    }
    const text = toText(key, spec, raw);
    const semicolonOk = spec.type.kind === 'string' && spec.type.semicolonList === true;
    if (text === '') errors[key] = 'empty value';
    else if (text.includes(',')) errors[key] = `value must not contain ',' - got '${text}'`;
    else if (CONTROL_RE.test(text)) errors[key] = 'value must not contain control characters';
    else if (!semicolonOk && text.includes(';')) errors[key] = `value must not contain ';' - got '${text}'`;
    else if (key === dk && combined === undefined && text.includes('=')) {
      errors[key] = `value must not contain '=' - got '${text}'`;
    } else if (/^\s|\s$/.test(text)) errors[key] = `value must not start or end with whitespace - got '${text}'`;
    else {
      const err = checkPropertyValue(spec, text);
      if (err) errors[key] = err;
      else texts.set(key, text);
    }
  }
  for (const [k, spec] of Object.entries(format.keys)) {
    if (spec.required && !spec.aliasOf && fields[k] === undefined) errors[k] = 'property is missing and it is not optional';
  }
  if (Object.keys(errors).length > 0) throw formatErrors(errors);

  if (combined) {
    parts.push(`${combined.key}=${texts.get(combined.target) ?? ''}`);
    texts.delete(combined.target);
    texts.delete(dk as string);
  } else if (dk !== undefined && texts.has(dk)) {
    parts.push(bareDefault ? (texts.get(dk) as string) : `${dk}=${texts.get(dk) as string}`);
    texts.delete(dk);
  }
  for (const [k, text] of texts) parts.push(`${k}=${text}`);
  const out = parts.join(',');

  // Belt and braces: what we wrote must read back as exactly what we meant.
  const back = parsePropertyString(out, format);
  for (const [k, v] of present) {
    if (back[k] !== toText(k, format.keys[k] as PropertySpec, v)) {
      throw new PropertyStringError(`format error\n${k}: value does not survive a round trip`, k);
    }
  }
  if (Object.keys(back).length !== present.length) {
    throw new PropertyStringError('format error\nserialised string does not read back to the same keys');
  }
  return out;
}

/** Serialises a tag list the way PVE stores it (';'-separated); throws PropertyStringError on a bad tag. */
export function formatTagList(tags: readonly string[]): string {
  for (const t of tags) {
    if (!TAG_RE.test(t)) throw new PropertyStringError(`format error\ntags: invalid characters in tag '${t}'`, 'tags');
  }
  return tags.join(';');
}

/** Splits a PVE tag list (`a;b`, `a,b`, `a b`) into tags. */
export function parseTagList(text: string): string[] {
  return splitList(text);
}
