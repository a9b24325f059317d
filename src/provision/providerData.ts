// Provider data (the YAML a MachineClass carries): the JSON Schema published to Omni as
// ProviderStatus.schema, the matching TS type, and the run-time parser/validator (ajv + PVE formats).
import { Ajv, type ErrorObject } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { formats, NIC_MODELS, parsePropertyString, pveFormat, PropertyStringError } from '../proxmox/propertyString.js';
import { ProviderDataError } from './errors.js';

export const PLACEMENT_STRATEGIES = ['spread', 'fewer-vms', 'round-robin', 'binpack'] as const;
export type PlacementStrategy = (typeof PLACEMENT_STRATEGIES)[number];

export const DISK_CACHE_MODES = ['none', 'writethrough', 'writeback', 'directsync', 'unsafe'] as const;
export const DISK_AIO_MODES = ['native', 'threads', 'io_uring'] as const;
/** Go accepted `2MB`/`1GB` (schema) and also `2`, `1024`, `any` (code). */
export const HUGEPAGES_VALUES = ['2MB', '1GB', '2', '1024', 'any'] as const;
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
  description?: string;
  /** What the NoCloud meta-data says the hostname is. */
  hostname: 'none' | 'request-id';
  tags: string[];
  pool?: string;
  additional_disks: AdditionalDisk[];
  additional_nics: AdditionalNic[];
  pci_devices: PciDevice[];
}

// Patterns mirror PVE's formats so the Omni UI rejects what Proxmox would (runtime re-checks them with pveFormat).
const NODE_PATTERN = '^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$';
const BRIDGE_PATTERN = '^[-_.A-Za-z0-9]+$';
const TAG_PATTERN = '^[a-zA-Z0-9_][a-zA-Z0-9_+.-]*$';
const POOL_PATTERN = '^[A-Za-z0-9._-]+$';
const MAPPING_PATTERN = '^[a-zA-Z][a-zA-Z0-9_-]+$';
const MDEV_PATTERN = '^[^/.:,;=\\s]+$';

const diskFlags = {
  disk_ssd: { type: 'boolean', default: false, description: 'Expose the disk as an SSD (ssd=1).' },
  disk_discard: { type: 'boolean', default: false, description: 'Pass TRIM/discard to the storage (discard=on).' },
  disk_iothread: { type: 'boolean', default: false, description: 'Dedicated IO thread for the disk (iothread=1).' },
  disk_cache: { type: 'string', enum: [...DISK_CACHE_MODES], description: 'Disk cache mode (cache=...).' },
  disk_aio: { type: 'string', enum: [...DISK_AIO_MODES], description: 'Async IO mode (aio=...).' },
} as const;

/** The JSON Schema (draft-07) of provider data: published to Omni and used at run time. */
export const providerDataSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Proxmox provider data',
  type: 'object',
  additionalProperties: false,
  required: ['cores', 'memory', 'disk_size', 'storage_selector'],
  properties: {
    cores: { type: 'integer', minimum: 1, description: 'CPU cores per socket.' },
    sockets: { type: 'integer', minimum: 1, default: 1, description: 'CPU sockets.' },
    memory: { type: 'integer', minimum: 2048, description: 'Memory in MiB.' },
    disk_size: { type: 'integer', minimum: 5, description: 'System disk size in GiB.' },
    storage_selector: {
      type: 'string',
      minLength: 1,
      description:
        'CEL expression choosing the storage for the system disk, e.g. name == "local-lvm". ' +
        'Variables: name, node, storageType, availableSpace.',
    },
    node: { type: 'string', pattern: NODE_PATTERN, description: 'Always create the VM on this Proxmox node.' },
    allowed_nodes: {
      type: 'array',
      items: { type: 'string', pattern: NODE_PATTERN },
      uniqueItems: true,
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
    network_bridge: { type: 'string', pattern: BRIDGE_PATTERN, default: 'vmbr0', description: 'Bridge of the first NIC.' },
    vlan: { type: 'integer', minimum: 0, maximum: 4094, default: 0, description: 'VLAN tag of the first NIC; 0 = none.' },
    network_firewall: { type: 'boolean', default: true, description: 'Proxmox firewall on the first NIC.' },
    ...diskFlags,
    cpu_type: {
      type: 'string',
      minLength: 1,
      default: 'x86-64-v2-AES',
      description: "CPU model, e.g. 'host' or 'x86-64-v2-AES' (default). PVE cpu options may follow: 'host,flags=+aes'.",
    },
    machine_type: { type: 'string', enum: [...MACHINE_TYPES], description: "Machine type; 'q35' for PCIe passthrough." },
    numa: { type: 'boolean', default: false, description: 'Enable NUMA.' },
    hugepages: { type: 'string', enum: [...HUGEPAGES_VALUES], description: "Hugepages: '2MB', '1GB' or 'any' (needs root@pam)." },
    balloon: { type: 'boolean', description: 'false disables the balloon device (balloon=0).' },
    bios: { type: 'string', enum: ['seabios', 'ovmf'], description: "Firmware; 'ovmf' also creates efidisk0 on the system disk storage." },
    description: { type: 'string', maxLength: 8192, description: 'VM notes shown in the Proxmox UI.' },
    hostname: {
      type: 'string',
      enum: ['none', 'request-id'],
      default: 'none',
      description: "'request-id' sets the machine request id as hostname in the NoCloud meta-data; 'none' leaves it to Talos/Omni.",
    },
    tags: {
      type: 'array',
      items: { type: 'string', pattern: TAG_PATTERN },
      default: [],
      description: 'Extra Proxmox tags (machine-request.<set> is always added).',
    },
    pool: { type: 'string', pattern: POOL_PATTERN, description: 'Existing Proxmox resource pool to put the VM in.' },
    additional_disks: {
      type: 'array',
      maxItems: 30,
      default: [],
      description: 'Additional disks (scsi1, scsi2, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['disk_size', 'storage_selector'],
        properties: {
          disk_size: { type: 'integer', minimum: 1, description: 'Size in GiB.' },
          storage_selector: { type: 'string', minLength: 1, description: 'CEL expression choosing the storage.' },
          ...diskFlags,
        },
      },
    },
    additional_nics: {
      type: 'array',
      maxItems: 31,
      default: [],
      description: 'Additional NICs (net1, net2, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['bridge'],
        properties: {
          bridge: { type: 'string', pattern: BRIDGE_PATTERN, description: 'Bridge, e.g. vmbr1.' },
          vlan: { type: 'integer', minimum: 0, maximum: 4094, default: 0, description: 'VLAN tag; 0 = none.' },
          firewall: { type: 'boolean', default: false, description: 'Proxmox firewall on this NIC.' },
          model: { type: 'string', enum: [...NIC_MODELS], default: 'virtio', description: 'NIC model.' },
        },
      },
    },
    pci_devices: {
      type: 'array',
      maxItems: 16,
      default: [],
      description: 'PCI devices passed through via cluster resource mappings (hostpci0, ...).',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['mapping'],
        properties: {
          mapping: { type: 'string', pattern: MAPPING_PATTERN, description: 'Resource mapping id, e.g. nvidia-gpu-1.' },
          pcie: { type: 'boolean', default: false, description: 'PCIe (needs machine_type q35).' },
          primary_gpu: { type: 'boolean', default: false, description: 'Primary GPU (x-vga=1).' },
          rombar: { type: 'boolean', description: 'ROM BAR visible (PVE default on).' },
          mdev: { type: 'string', pattern: MDEV_PATTERN, description: 'Mediated device type, e.g. nvidia-180.' },
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
      const noun = FIELD_NOUN[last] ?? 'value';
      return new ProviderDataError(`provider data: ${where}${show(value)} is not a valid ${noun}`, path);
    }
    case 'minimum':
    case 'maximum':
      return new ProviderDataError(`provider data: ${where}${show(value)} must be ${String(params.comparison)} ${String(params.limit)}`, path);
    default:
      return new ProviderDataError(`provider data: ${where}${e.message ?? 'invalid'}`, path);
  }
}

function article(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

function itemSchemaFor(path: string): { properties?: Record<string, unknown> } | undefined {
  const top = path.replace(/\[\d+\].*$/, '');
  const prop = (providerDataSchema.properties as Record<string, { items?: unknown }>)[top];
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
  try {
    parsePropertyString(d.cpu_type, formats.cpu);
  } catch (err) {
    const detail = err instanceof PropertyStringError ? err.detail.replace(/\n/g, '; ') : String(err);
    throw new ProviderDataError(`provider data: cpu_type: ${JSON.stringify(d.cpu_type)} is not a valid Proxmox cpu value (${detail})`, 'cpu_type');
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
    const order = ['additionalProperties', 'required'];
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
  const data = copy as unknown as ProviderData;
  checkPveFormats(data);
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
