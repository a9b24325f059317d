// Provider data (the YAML a MachineClass carries): the JSON Schema published to Omni as
// ProviderStatus.schema, the matching TS type, and the run-time parser/validator (ajv + PVE formats).
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { compileSelector, SelectorError } from '../cel/index.js';
import { VM_CPU_FLAGS, vmCpuConfError } from '../proxmox/cpuModels.js';
import { formats, NIC_MODELS, parsePropertyString, pveFormat, PropertyStringError } from '../proxmox/propertyString.js';
import { ADDRESS_POOL_NOUNS, addressPoolSchema, checkAddressPools, type AddressPool } from './addresses.js';
import { ProviderDataError } from './errors.js';
import { boundFor, LIMITS, MAX_VCPUS } from './limits.js';
import { HA_FIELD_NOUN, haSchema, type HaConfig } from './haData.js';
import { parseVmidRange } from './vmidRange.js';

export const PLACEMENT_STRATEGIES = ['spread', 'fewer-vms', 'round-robin', 'binpack'] as const;
export type PlacementStrategy = (typeof PLACEMENT_STRATEGIES)[number];

export const DISK_CACHE_MODES = ['none', 'writethrough', 'writeback', 'directsync', 'unsafe'] as const;
export const DISK_AIO_MODES = ['native', 'threads', 'io_uring'] as const;
/** Go accepted `2MB`/`1GB` (schema) and also `2`, `1024`, `any` (code). */
export const HUGEPAGES_VALUES = ['2MB', '1GB', '2', '1024', 'any'] as const;
/** `hugepages: 1024` written without quotes is a YAML number: accepted too (and read as the string). */
const HUGEPAGES_NUMBERS = [2, 1024] as const;
/** `i440fx` is the Go provider's name for PVE's `pc`. */
export const MACHINE_TYPES = ['q35', 'i440fx', 'pc'] as const;

export interface AdditionalDisk {
  /** GiB. */
  disk_size: number;
  /** CEL expression over the node's storages. */
  storage_selector: string;
  disk_ssd: boolean;
  disk_discard: boolean;
  disk_iothread: boolean;
  disk_cache?: (typeof DISK_CACHE_MODES)[number];
  disk_aio?: (typeof DISK_AIO_MODES)[number];
}

export interface AdditionalNic {
  bridge: string;
  /** 0 = untagged. */
  vlan: number;
  firewall: boolean;
  model: (typeof NIC_MODELS)[number];
  /** Static address from a pool instead of DHCP (addresses.ts). */
  address_pool?: AddressPool;
}

export interface PciDevice {
  /** Cluster resource mapping id (Datacenter → Resource Mappings → PCI). */
  mapping: string;
  pcie: boolean;
  /** x-vga=1 */
  primary_gpu: boolean;
  /** Unset leaves PVE's default (ROM BAR on). */
  rombar?: boolean;
  /** Mediated device type (vGPU profile), e.g. `nvidia-180`. */
  mdev?: string;
}

export interface UsbDevice {
  /** Cluster resource mapping id (Datacenter → Resource Mappings → USB). */
  mapping: string;
  /** usb3=1 (plug into an xHCI controller). */
  usb3: boolean;
}

/** Provider data after defaults are applied. Keys are the Go provider's (snake_case). */
export interface ProviderData {
  cores: number;
  sockets: number;
  /** MiB. */
  memory: number;
  /** GiB. */
  disk_size: number;
  storage_selector: string;
  node?: string;
  allowed_nodes: string[];
  placement_strategy: PlacementStrategy;
  network_bridge: string;
  /** 0 = untagged. */
  vlan: number;
  network_firewall: boolean;
  disk_ssd: boolean;
  disk_discard: boolean;
  disk_iothread: boolean;
  disk_cache?: (typeof DISK_CACHE_MODES)[number];
  disk_aio?: (typeof DISK_AIO_MODES)[number];
  /** A PVE cpu property string; usually just a model name. */
  cpu_type: string;
  machine_type?: (typeof MACHINE_TYPES)[number];
  numa: boolean;
  hugepages?: (typeof HUGEPAGES_VALUES)[number];
  /** false → balloon=0 (device off); unset/true → PVE default. */
  balloon?: boolean;
  bios?: 'seabios' | 'ovmf';
  /** PVE `vga` property string (`std`, `qxl,memory=32`, `virtio,clipboard=vnc`); unset leaves PVE's default. */
  vga?: string;
  description?: string;
  /** What the NoCloud meta-data says the hostname is. */
  hostname: 'none' | 'request-id';
  tags: string[];
  pool?: string;
  additional_disks: AdditionalDisk[];
  additional_nics: AdditionalNic[];
  pci_devices: PciDevice[];
  /** Proxmox HA (the Go provider's `ha` block); absent = no HA. */
  ha?: HaConfig;
  /** usb0, usb1, ... in list order (the Go provider's v0.3 key). */
  usb_devices: UsbDevice[];
  /** `start-end`: the VM takes the lowest free VMID of this range instead of Proxmox's nextid. */
  vmid_range?: string;
  /** net0's static address pool; unset = DHCP (addresses.ts). */
  address_pool?: AddressPool;
}

// Patterns mirror PVE's formats so that Omni refuses (at `omnictl apply`, with Go's RE2) what Proxmox would; the run
// time checks them again with ajv (JavaScript regular expressions, `u` flag). Both engines must read them the same
// way: explicit ASCII classes, `\xNN` escapes, no `\s`/`\w`/`\d`, no lookaround or backreferences (see the RE2 test).
const NODE_PATTERN = '^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$';
const BRIDGE_PATTERN = '^[-_.A-Za-z0-9]+$';
const TAG_PATTERN = '^[a-zA-Z0-9_][a-zA-Z0-9_+.-]*$';
const POOL_PATTERN = '^[A-Za-z0-9._-]+$';
const MAPPING_PATTERN = '^[a-zA-Z][a-zA-Z0-9_-]+$';
const MDEV_PATTERN = '^[A-Za-z0-9_+-]+$';
/** Two PVE VMIDs (pve-vmid: 100..999999999, no leading zero) joined by `-`; start <= end is checked at run time. */
const VMID_RANGE_PATTERN = '^[1-9][0-9]{2,8}-[1-9][0-9]{2,8}$';
/** Text without control characters (tab, LF and CR allowed): CEL selectors. */
const SELECTOR_TEXT_PATTERN = '^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]*$';
/** Text without control characters (tab and LF allowed): the VM description, kept in the VM's text config file. */
const NOTES_TEXT_PATTERN = '^[^\\x00-\\x08\\x0b-\\x1f\\x7f]*$';

/** A PVE boolean inside a property string (1/0, on/off, yes/no, true/false; any case). Spelled out: JS has no (?i:). */
const PVE_BOOL = '(0|1|[oO][nN]|[oO][fF][fF]|[yY][eE][sS]|[nN][oO]|[tT][rR][uU][eE]|[fF][aA][lL][sS][eE])';
const CPU_MODEL = '[A-Za-z0-9][A-Za-z0-9_.+-]*';
const CPU_FLAG = `[+-](${VM_CPU_FLAGS.join('|')})`;
const CPU_OPTION =
  `(cputype=${CPU_MODEL}|flags=${CPU_FLAG}(;${CPU_FLAG})*|hidden=${PVE_BOOL}|hv-vendor-id=[a-zA-Z0-9]{1,12}` +
  '|phys-bits=(host|[0-9]{1,2})|guest-phys-bits=[0-9]{1,2}|level=[0-9]{1,10})';
/**
 * The cpu value a VM config may hold (qemu-server's pve-vm-cpu-conf with the VM-specific rules): a model and
 * options, flags only from the VM-specific list, no `reported-model`. Whether the model exists is asked of the
 * node before the VM is created (its list depends on the installed QEMU).
 */
const CPU_PATTERN = `^(${CPU_MODEL}|${CPU_OPTION})(,(${CPU_MODEL}|${CPU_OPTION}))*$`;

/** qemu-server's `vga` types (pve-qm-vga `type`, its default key). */
export const VGA_TYPES = ['cirrus', 'qxl', 'qxl2', 'qxl3', 'qxl4', 'none', 'serial0', 'serial1', 'serial2', 'serial3', 'std', 'virtio', 'virtio-gl', 'vmware'] as const;
/**
 * The `vga` value a VM config may hold (qemu-server pve-qm-vga): a type (bare or `type=`), `memory=4..512` (MiB),
 * `clipboard=vnc`, each at most once and in any order (PVE refuses a key given twice). RE2 has no lookahead, so the
 * orders are spelled out: every non-empty arrangement of the three options.
 */
const VGA_PATTERN = (() => {
  const options = [`(type=)?(${VGA_TYPES.join('|')})`, 'memory=([4-9]|[1-9][0-9]|[1-4][0-9]{2}|50[0-9]|51[0-2])', 'clipboard=vnc'];
  const arrangements: string[] = [];
  const build = (used: readonly number[]): void => {
    if (used.length > 0) arrangements.push(used.map((i) => options[i]).join(','));
    for (let i = 0; i < options.length; i++) if (!used.includes(i)) build([...used, i]);
  };
  build([]);
  return `^(${arrangements.map((a) => `(${a})`).join('|')})$`;
})();

const diskFlags = {
  disk_ssd: { type: 'boolean', default: false, description: 'Expose the disk as an SSD (ssd=1).' },
  disk_discard: { type: 'boolean', default: false, description: 'Pass TRIM/discard to the storage (discard=on).' },
  disk_iothread: { type: 'boolean', default: false, description: 'Dedicated IO thread for the disk (iothread=1).' },
  disk_cache: { type: 'string', enum: [...DISK_CACHE_MODES], description: 'Disk cache mode (cache=...).' },
  disk_aio: { type: 'string', enum: [...DISK_AIO_MODES], description: 'Async IO mode (aio=...).' },
} as const;

const selectorSchema = (description: string) =>
  ({
    type: 'string',
    minLength: 1,
    maxLength: LIMITS.storage_selector.max,
    pattern: SELECTOR_TEXT_PATTERN,
    description,
  }) as const;

/** The JSON Schema (draft-07) of provider data: published to Omni and used at run time. */
export const providerDataSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Proxmox provider data',
  type: 'object',
  additionalProperties: false,
  required: ['cores', 'memory', 'disk_size', 'storage_selector'],
  properties: {
    cores: { type: 'integer', minimum: 1, maximum: LIMITS.cores.max, description: 'CPU cores per socket.' },
    sockets: { type: 'integer', minimum: 1, maximum: LIMITS.sockets.max, default: 1, description: 'CPU sockets.' },
    memory: { type: 'integer', minimum: 2048, maximum: LIMITS.memory.max, description: 'Memory in MiB.' },
    disk_size: { type: 'integer', minimum: 5, maximum: LIMITS.disk_size.max, description: 'System disk size in GiB.' },
    storage_selector: selectorSchema(
      'CEL expression choosing the storage for the system disk, e.g. name == "local-lvm". ' +
        'Variables: name, node, storageType, availableSpace.',
    ),
    node: {
      type: 'string',
      maxLength: LIMITS.node.max,
      pattern: NODE_PATTERN,
      description: 'Always create the VM on this Proxmox node.',
    },
    allowed_nodes: {
      type: 'array',
      items: { type: 'string', maxLength: LIMITS.node.max, pattern: NODE_PATTERN },
      uniqueItems: true,
      maxItems: LIMITS.allowed_nodes.max,
      default: [],
      description: 'Only place VMs on these nodes (empty = any online node).',
    },
    placement_strategy: {
      type: 'string',
      enum: [...PLACEMENT_STRATEGIES],
      default: 'spread',
      description:
        "How a node is chosen when 'node' is not set: 'spread' (default) spreads a machine set over nodes, then most " +
        "uncommitted memory; 'fewer-vms' prefers nodes with the fewest VMs; 'round-robin' spreads a set over nodes " +
        "by name; 'binpack' fills the node with the least uncommitted memory that still fits.",
    },
    network_bridge: {
      type: 'string',
      maxLength: LIMITS.bridge.max,
      pattern: BRIDGE_PATTERN,
      default: 'vmbr0',
      description: 'Bridge of the first NIC.',
    },
    vlan: { type: 'integer', minimum: 0, maximum: LIMITS.vlan.max, default: 0, description: 'VLAN tag of the first NIC; 0 = none.' },
    network_firewall: { type: 'boolean', default: true, description: 'Proxmox firewall on the first NIC.' },
    address_pool: addressPoolSchema,
    ...diskFlags,
    cpu_type: {
      type: 'string',
      minLength: 1,
      maxLength: LIMITS.cpu_type.max,
      pattern: CPU_PATTERN,
      default: 'x86-64-v2-AES',
      description:
        "CPU model, e.g. 'host' or 'x86-64-v2-AES' (default). PVE cpu options may follow: 'host,flags=+aes' " +
        `(VM-specific flags: ${VM_CPU_FLAGS.join(', ')}).`,
    },
    machine_type: { type: 'string', enum: [...MACHINE_TYPES], description: "Machine type; 'q35' for PCIe passthrough." },
    numa: { type: 'boolean', default: false, description: 'Enable NUMA.' },
    hugepages: {
      enum: [...HUGEPAGES_VALUES, ...HUGEPAGES_NUMBERS],
      description: "Hugepages: '2MB', '1GB' or 'any' (needs numa: true and root@pam).",
    },
    balloon: { type: 'boolean', description: 'false disables the balloon device (balloon=0).' },
    bios: { type: 'string', enum: ['seabios', 'ovmf'], description: "Firmware; 'ovmf' also creates efidisk0 on the system disk storage." },
    vga: {
      type: 'string',
      minLength: 1,
      maxLength: LIMITS.vga.max,
      pattern: VGA_PATTERN,
      description:
        `Display (PVE vga): a type (${VGA_TYPES.join(', ')}), optionally with memory=4..512 (MiB) and clipboard=vnc, ` +
        "e.g. 'std', 'none', 'qxl,memory=32'. Unset: Proxmox's default.",
    },
    description: {
      type: 'string',
      maxLength: LIMITS.description.max,
      pattern: NOTES_TEXT_PATTERN,
      description: 'VM notes shown in the Proxmox UI.',
    },
    hostname: {
      type: 'string',
      enum: ['none', 'request-id'],
      default: 'none',
      description: "'request-id' sets the machine request id as hostname in the NoCloud meta-data; 'none' leaves it to Talos/Omni.",
    },
    tags: {
      type: 'array',
      items: { type: 'string', maxLength: LIMITS.tag.max, pattern: TAG_PATTERN },
      maxItems: LIMITS.tags.max,
      default: [],
      description: 'Extra Proxmox tags (machine-request.<set> is always added).',
    },
    pool: {
      type: 'string',
      maxLength: LIMITS.pool.max,
      pattern: POOL_PATTERN,
      description:
        "Existing Proxmox resource pool to put the VM in. Unset: the machine set's pool when one named after the set " +
        'exists (the Go provider creates those), else none.',
    },
    additional_disks: {
      type: 'array',
      maxItems: LIMITS.additional_disks.max,
      default: [],
      description: 'Additional disks (scsi1, scsi2, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['disk_size', 'storage_selector'],
        properties: {
          disk_size: { type: 'integer', minimum: 1, maximum: LIMITS.disk_size.max, description: 'Size in GiB.' },
          storage_selector: selectorSchema('CEL expression choosing the storage.'),
          ...diskFlags,
        },
      },
    },
    additional_nics: {
      type: 'array',
      maxItems: LIMITS.additional_nics.max,
      default: [],
      description: 'Additional NICs (net1, net2, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['bridge'],
        properties: {
          bridge: { type: 'string', maxLength: LIMITS.bridge.max, pattern: BRIDGE_PATTERN, description: 'Bridge, e.g. vmbr1.' },
          vlan: { type: 'integer', minimum: 0, maximum: LIMITS.vlan.max, default: 0, description: 'VLAN tag; 0 = none.' },
          firewall: { type: 'boolean', default: false, description: 'Proxmox firewall on this NIC.' },
          model: { type: 'string', enum: [...NIC_MODELS], default: 'virtio', description: 'NIC model.' },
          address_pool: addressPoolSchema,
        },
      },
    },
    pci_devices: {
      type: 'array',
      maxItems: LIMITS.pci_devices.max,
      default: [],
      description: 'PCI devices passed through via cluster resource mappings (hostpci0, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['mapping'],
        properties: {
          mapping: {
            type: 'string',
            maxLength: LIMITS.mapping.max,
            pattern: MAPPING_PATTERN,
            description: 'Resource mapping id, e.g. nvidia-gpu-1.',
          },
          pcie: { type: 'boolean', default: false, description: 'PCIe (needs machine_type q35).' },
          primary_gpu: { type: 'boolean', default: false, description: 'Primary GPU (x-vga=1).' },
          rombar: { type: 'boolean', description: 'ROM BAR visible (PVE default on).' },
          mdev: {
            type: 'string',
            maxLength: LIMITS.mdev.max,
            pattern: MDEV_PATTERN,
            description: 'Mediated device type, e.g. nvidia-180.',
          },
        },
      },
    },
    ha: haSchema,
    vmid_range: {
      type: 'string',
      maxLength: LIMITS.vmid_range.max,
      pattern: VMID_RANGE_PATTERN,
      description:
        "VMIDs for this class's VMs, 'start-end' (100-999999999, start <= end): each VM takes the lowest free one. " +
        'Unset: Proxmox picks (nextid).',
    },
    usb_devices: {
      type: 'array',
      maxItems: LIMITS.usb_devices.max,
      default: [],
      description: 'USB devices passed through via cluster resource mappings (usb0, usb1, ... in list order).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['mapping'],
        properties: {
          mapping: {
            type: 'string',
            maxLength: LIMITS.mapping.max,
            pattern: MAPPING_PATTERN,
            description: 'USB resource mapping id (Datacenter → Resource Mappings), e.g. zigbee-controller.',
          },
          usb3: { type: 'boolean', default: false, description: 'USB 3 device (usb3=1).' },
        },
      },
    },
  },
} as const;

/** The schema as the JSON text Omni stores in ProviderStatus.schema. */
export function providerDataSchemaJson(): string {
  return JSON.stringify(providerDataSchema);
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
const validateShape = ajv.compile(providerDataSchema);

/** What a pattern-checked field holds, for messages ("... is not a valid bridge name"). */
const FIELD_NOUN: Record<string, string> = {
  node: 'node name',
  allowed_nodes: 'node name',
  network_bridge: 'bridge name',
  bridge: 'bridge name',
  tags: 'Proxmox tag',
  pool: 'pool name',
  mapping: 'PCI mapping id',
  mdev: 'mediated device type',
  description: 'description (control characters other than tab and newline are not allowed)',
  storage_selector: 'storage selector (control characters other than tab and newline are not allowed)',
  vmid_range: 'VMID range ("start-end", each 100-999999999 without leading zeros)',
  ...ADDRESS_POOL_NOUNS,
};

const TOP_KEYS = Object.keys(providerDataSchema.properties);

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0] as number;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j] as number;
      dp[j] = Math.min((dp[j] as number) + 1, (dp[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length] as number;
}

function suggestion(key: string, known: readonly string[]): string {
  let best: string | undefined;
  let bestD = 3;
  for (const k of known) {
    const d = editDistance(key, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best ? ` (did you mean "${best}"?)` : '';
}

/** "/additional_disks/0/disk_size" → "additional_disks[0].disk_size" */
function fieldPath(pointer: string): string {
  let out = '';
  for (const seg of pointer.split('/').slice(1)) {
    const s = seg.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(s) ? `[${s}]` : out === '' ? s : `.${s}`;
  }
  return out;
}

function valueAt(root: unknown, pointer: string): unknown {
  let cur: unknown = root;
  for (const seg of pointer.split('/').slice(1)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

function show(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : JSON.stringify(v) ?? String(v);
}

function describeAjvError(e: ErrorObject, root: unknown): ProviderDataError {
  const path = fieldPath(e.instancePath);
  const where = path === '' ? '' : `${path}: `;
  const value = valueAt(root, e.instancePath);
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(params.additionalProperty);
      const known = path === '' ? TOP_KEYS : Object.keys(itemSchemaFor(path)?.properties ?? {});
      return new ProviderDataError(`provider data: ${where}unknown key "${key}"${suggestion(key, known)}`, path ? `${path}.${key}` : key);
    }
    case 'required': {
      const key = String(params.missingProperty);
      return new ProviderDataError(`provider data: ${where}missing required key "${key}"`, path ? `${path}.${key}` : key);
    }
    case 'type':
      return new ProviderDataError(`provider data: ${where}${show(value)} is not ${article(String(params.type))}`, path);
    case 'enum':
      return new ProviderDataError(
        `provider data: ${where}${show(value)} is not one of ${(params.allowedValues as unknown[]).map((v) => show(v)).join(', ')}`,
        path,
      );
    case 'pattern': {
      const last = path.replace(/\[\d+\]$/, '').split('.').pop() ?? '';
      if (last === 'cpu_type') return cpuTypeError(String(value));
      if (last === 'vga') return vgaError(String(value));
      const noun =
        (path.startsWith('ha.') ? HA_FIELD_NOUN[last] : undefined) ??
        (last === 'mapping' && path.startsWith('usb_devices') ? 'USB mapping id' : undefined) ??
        FIELD_NOUN[last] ??
        'value';
      return new ProviderDataError(`provider data: ${where}${preview(value)} is not a valid ${noun}`, path);
    }
    case 'minimum':
      return new ProviderDataError(`provider data: ${where}${show(value)} must be ${String(params.comparison)} ${String(params.limit)}`, path);
    case 'maximum': {
      const bound = boundFor(path);
      const limit = `${String(params.limit)}${bound?.unit ? ` ${bound.unit}` : ''}`;
      const why = bound ? `${limit}: ${bound.source}` : limit;
      return new ProviderDataError(`provider data: ${where}${show(value)} exceeds the largest value Proxmox accepts (${why})`, path);
    }
    case 'maxLength': {
      const bound = boundFor(path);
      const length = typeof value === 'string' ? [...value].length : 0;
      const why = bound ? ` (${bound.source})` : '';
      return new ProviderDataError(
        `provider data: ${where}${preview(value)} is ${length} characters long; at most ${String(params.limit)} are allowed${why}`,
        path,
      );
    }
    case 'maxItems': {
      const bound = boundFor(path);
      const count = Array.isArray(value) ? value.length : 0;
      const why = bound ? ` (${bound.source})` : '';
      return new ProviderDataError(`provider data: ${where}${count} entries; at most ${String(params.limit)} are allowed${why}`, path);
    }
    case 'minLength':
      return new ProviderDataError(`provider data: ${where}must not be empty`, path);
    case 'uniqueItems':
      return new ProviderDataError(`provider data: ${where}lists a value twice (entries ${String(params.j)} and ${String(params.i)})`, path);
    default:
      return new ProviderDataError(`provider data: ${where}${e.message ?? 'invalid'}`, path);
  }
}

/** A value as quoted in a message: JSON, control characters escaped, long strings cut after 40 characters. */
function preview(v: unknown): string {
  if (typeof v !== 'string') return show(v);
  const chars = [...v];
  return chars.length > 40 ? `${JSON.stringify(chars.slice(0, 40).join(''))}…` : JSON.stringify(v);
}

/** Why a cpu_type is refused: PVE's parse error or qemu-server's VM-specific rule, in PVE's words. */
function cpuTypeError(value: string): ProviderDataError {
  let detail: string;
  try {
    detail = vmCpuConfError(parsePropertyString(value, formats.cpu)) ?? 'not a model followed by cpu options';
  } catch (err) {
    detail = err instanceof PropertyStringError ? err.detail.replace(/^format error\n/, '').replace(/\n/g, '; ') : String(err);
  }
  // eslint-disable-next-line no-control-regex
  const safe = detail.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`).slice(0, 400);
  return new ProviderDataError(`provider data: cpu_type: ${preview(value)} is not a valid Proxmox cpu value (${safe})`, 'cpu_type');
}

/** Why a vga value is refused: PVE's parse error of the pve-qm-vga format, or the form the schema requires. */
function vgaError(value: string): ProviderDataError {
  let detail = `a type (${VGA_TYPES.join(', ')}), then optionally memory=4..512 and clipboard=vnc, each once`;
  try {
    parsePropertyString(value, formats.vga);
  } catch (err) {
    if (err instanceof PropertyStringError) detail = err.detail.replace(/^format error\n/, '').replace(/\n/g, '; ');
  }
  // eslint-disable-next-line no-control-regex
  const safe = detail.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`).slice(0, 400);
  return new ProviderDataError(`provider data: vga: ${preview(value)} is not a valid Proxmox vga value (${safe})`, 'vga');
}

function article(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

function itemSchemaFor(path: string): { properties?: Record<string, unknown> } | undefined {
  const top = path.replace(/\[\d+\].*$/, '');
  const prop = (providerDataSchema.properties as Record<string, { items?: unknown; properties?: unknown }>)[top];
  // An object (ha) holds its keys itself; a list its items.
  if (prop?.properties !== undefined) return prop as { properties?: Record<string, unknown> };
  return prop?.items as { properties?: Record<string, unknown> } | undefined;
}

/** PVE-format checks the schema's patterns cannot fully express, with the same message style. */
function checkPveFormats(d: ProviderData): void {
  const bad = (field: string, value: string, noun: string): ProviderDataError =>
    new ProviderDataError(`provider data: ${field}: ${JSON.stringify(value)} is not a valid ${noun}`, field);
  if (!pveFormat.bridgeId(d.network_bridge)) throw bad('network_bridge', d.network_bridge, 'bridge name');
  if (d.node !== undefined && !pveFormat.nodeName(d.node)) throw bad('node', d.node, 'node name');
  d.allowed_nodes.forEach((n, i) => {
    if (!pveFormat.nodeName(n)) throw bad(`allowed_nodes[${i}]`, n, 'node name');
  });
  if (d.node !== undefined && d.allowed_nodes.length > 0 && !d.allowed_nodes.includes(d.node)) {
    throw new ProviderDataError(
      `provider data: node: "${d.node}" is not in allowed_nodes (${d.allowed_nodes.join(', ')})`,
      'node',
    );
  }
  if (d.pool !== undefined && !pveFormat.poolId(d.pool)) throw bad('pool', d.pool, 'pool name');
  d.tags.forEach((t, i) => {
    if (!pveFormat.tag(t)) throw bad(`tags[${i}]`, t, 'Proxmox tag');
  });
  // qemu-server's validate_vm_cpu_conf: a known model (static list here; the node's own list before creating),
  // VM-specific flags only, no reported-model.
  try {
    const cpu = parsePropertyString(d.cpu_type, formats.cpu);
    const err = vmCpuConfError(cpu);
    if (err !== undefined && !/^Built-in cputype/.test(err)) throw cpuTypeError(d.cpu_type);
  } catch (err) {
    if (err instanceof ProviderDataError) throw err;
    throw cpuTypeError(d.cpu_type);
  }
  if (d.vga !== undefined) {
    // The schema's pattern is the first check; PVE's own parser (pve-qm-vga) is the second.
    try {
      parsePropertyString(d.vga, formats.vga);
    } catch {
      throw vgaError(d.vga);
    }
  }
  d.additional_nics.forEach((n, i) => {
    if (!pveFormat.bridgeId(n.bridge)) throw bad(`additional_nics[${i}].bridge`, n.bridge, 'bridge name');
  });
  d.pci_devices.forEach((p, i) => {
    if (!pveFormat.mappingId(p.mapping)) throw bad(`pci_devices[${i}].mapping`, p.mapping, 'PCI mapping id');
    if (p.pcie && d.machine_type !== 'q35') {
      throw new ProviderDataError(
        `provider data: pci_devices[${i}].pcie: PCIe passthrough needs machine_type: q35 (Proxmox refuses to start the VM otherwise)`,
        `pci_devices[${i}].pcie`,
      );
    }
  });
  if (d.vmid_range !== undefined) {
    const range = parseVmidRange(d.vmid_range);
    if (typeof range === 'string') {
      throw new ProviderDataError(`provider data: vmid_range: ${JSON.stringify(d.vmid_range)}: ${range}`, 'vmid_range');
    }
  }
  d.usb_devices.forEach((u, i) => {
    if (!pveFormat.mappingId(u.mapping)) throw bad(`usb_devices[${i}].mapping`, u.mapping, 'USB mapping id');
  });
}

/** Rules that span fields, each one a refusal Proxmox would otherwise give only when the VM starts. */
function checkCombinations(d: ProviderData): void {
  const vcpus = d.cores * d.sockets;
  const machine = d.machine_type === 'q35' ? 'q35' : 'pc';
  const max = MAX_VCPUS[machine];
  if (vcpus > max) {
    const label = machine === 'q35' ? 'q35' : `${d.machine_type ?? 'pc'} (i440fx${d.machine_type === undefined ? ', the default' : ''})`;
    const field = d.sockets > 1 && d.cores <= max ? 'sockets' : 'cores';
    throw new ProviderDataError(
      `provider data: ${field}: ${plural(d.cores, 'core')} × ${plural(d.sockets, 'socket')} = ${vcpus} vCPUs; QEMU's ${label} machine takes at most ${max}` +
        (machine === 'pc' ? ' (machine_type: q35 takes up to 4096)' : ''),
      field,
    );
  }
  if (d.hugepages !== undefined && !d.numa) {
    throw new ProviderDataError(
      'provider data: hugepages: needs numa: true (Proxmox refuses to start the VM otherwise: "numa needs to be enabled to use hugepages")',
      'hugepages',
    );
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Every storage selector compiles and is a bool condition; refusals name the selector's field. */
function checkSelectors(d: ProviderData): void {
  const check = (field: string, expr: string): void => {
    try {
      compileSelector(expr);
    } catch (err) {
      if (err instanceof SelectorError) throw new ProviderDataError(`provider data: ${field}: ${err.message}`, field);
      throw err;
    }
  };
  check('storage_selector', d.storage_selector);
  d.additional_disks.forEach((disk, i) => check(`additional_disks[${i}].storage_selector`, disk.storage_selector));
}

/** Validates an already-decoded provider-data object (applies defaults to a copy). */
export function validateProviderData(input: unknown): ProviderData {
  if (input === null || input === undefined) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new ProviderDataError('provider data: must be a YAML mapping of keys to values');
  }
  const copy = structuredClone(input) as Record<string, unknown>;
  if (!validateShape(copy)) {
    const errors = validateShape.errors ?? [];
    // Report the most useful problem first: unknown keys, then missing ones, then values.
    const order = ['additionalProperties', 'required', 'type', 'pattern', 'maxLength', 'maxItems', 'maximum'];
    const sorted = [...errors].sort((a, b) => {
      const ia = order.indexOf(a.keyword);
      const ib = order.indexOf(b.keyword);
      return (ia === -1 ? 9 : ia) - (ib === -1 ? 9 : ib);
    });
    const first = sorted[0];
    if (first?.keyword === 'required') {
      const missing = errors
        .filter((e) => e.keyword === 'required' && e.instancePath === first.instancePath)
        .map((e) => String((e.params as Record<string, unknown>).missingProperty));
      if (missing.length > 1) {
        const where = fieldPath(first.instancePath);
        throw new ProviderDataError(
          `provider data: ${where ? `${where}: ` : ''}missing required keys ${missing.map((k) => `"${k}"`).join(', ')}`,
          where ? `${where}.${missing[0] ?? ''}` : missing[0],
        );
      }
    }
    throw first ? describeAjvError(first, copy) : new ProviderDataError('provider data: invalid');
  }
  if (typeof copy.hugepages === 'number') copy.hugepages = String(copy.hugepages);
  const data = copy as unknown as ProviderData;
  checkPveFormats(data);
  checkCombinations(data);
  checkSelectors(data);
  checkAddressPools(data);
  return data;
}

/** Parses the provider-data YAML text Omni stores on a MachineRequest; throws ProviderDataError. */
export function parseProviderData(yamlText: string): ProviderData {
  let decoded: unknown;
  try {
    decoded = yamlText.trim() === '' ? {} : parseYaml(yamlText, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ProviderDataError(`provider data: invalid YAML: ${msg}`);
  }
  return validateProviderData(decoded);
}
