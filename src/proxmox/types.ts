// Hand-written shapes of the Proxmox VE API answers the provider uses, and their tolerant decoders
// (Perl emits some numbers as strings and some booleans as 0/1; lists may omit fields the caller may not audit).
import { PveResponseShapeError } from './errors.js';

/** A value Proxmox accepts as a top-level parameter. `undefined` means "leave out". */
export type PveParamValue = string | number | boolean | undefined;
export type PveParams = Record<string, PveParamValue>;

export interface PveVersion {
  version: string;
  release: string;
  repoid: string;
}

export type NodeOnlineStatus = 'online' | 'offline' | 'unknown';

/** `GET /nodes`. Stats are absent without Sys.Audit on the node. */
export interface NodeListEntry {
  node: string;
  status: NodeOnlineStatus;
  id?: string;
  cpu?: number;
  maxcpu?: number;
  mem?: number;
  maxmem?: number;
  disk?: number;
  maxdisk?: number;
  uptime?: number;
  level?: string;
  ssl_fingerprint?: string;
}

/** `GET /nodes/{node}/status` (the parts worth typing). */
export interface NodeStatus {
  cpu?: number;
  uptime?: number;
  cpuinfo?: { cpus?: number; cores?: number; sockets?: number; model?: string };
  memory?: { total?: number; used?: number; free?: number; available?: number };
  swap?: { total?: number; used?: number; free?: number };
  rootfs?: { total?: number; used?: number; free?: number; avail?: number };
  loadavg?: string[];
  kversion?: string;
  pveversion?: string;
  'boot-info'?: { mode?: string; secureboot?: number };
}

/** `GET /cluster/status`: one `cluster` entry (absent on a single standalone node) and one per node. */
export interface ClusterStatusEntry {
  type: 'cluster' | 'node' | string;
  id: string;
  name: string;
  /** cluster entries */
  version?: number;
  quorate?: boolean;
  nodes?: number;
  /** node entries */
  nodeid?: number;
  ip?: string;
  online?: boolean;
  local?: boolean;
  level?: string;
}

export type ClusterResourceType = 'vm' | 'storage' | 'node' | 'sdn';

/** `GET /cluster/resources`; which fields are present depends on `type`. */
export interface ClusterResource {
  id: string;
  type: 'qemu' | 'lxc' | 'node' | 'storage' | 'sdn' | 'pool' | string;
  node?: string;
  status?: string;
  vmid?: number;
  name?: string;
  /** Raw `;`-separated tag list. */
  tags?: string;
  lock?: string;
  template?: boolean;
  hastate?: string;
  pool?: string;
  maxmem?: number;
  mem?: number;
  maxcpu?: number;
  cpu?: number;
  maxdisk?: number;
  disk?: number;
  uptime?: number;
  storage?: string;
  plugintype?: string;
  shared?: boolean;
  content?: string;
}

export type VmRunStatus = 'running' | 'stopped' | string;

/** `GET /nodes/{node}/qemu`. */
export interface QemuListEntry {
  vmid: number;
  status: VmRunStatus;
  name?: string;
  maxmem?: number;
  mem?: number;
  cpus?: number;
  cpu?: number;
  maxdisk?: number;
  disk?: number;
  uptime?: number;
  pid?: number;
  lock?: string;
  /** Raw `;`-separated tag list. */
  tags?: string;
  template?: boolean;
}

/** `GET /nodes/{node}/qemu/{vmid}/status/current`. */
export interface VmStatus extends QemuListEntry {
  qmpstatus?: string;
  'running-machine'?: string;
  'running-qemu'?: string;
  ha?: { managed?: number; state?: string };
  /** True when the guest agent is enabled in the config. */
  agent?: boolean;
}

/** `GET /nodes/{node}/qemu/{vmid}/config`: a flat key → value map (drives, nets, ... as property strings). */
export interface VmConfig {
  digest?: string;
  lock?: string;
  name?: string;
  tags?: string;
  [key: string]: string | number | undefined;
}

/** `GET /nodes/{node}/storage`. */
export interface StorageEntry {
  storage: string;
  type: string;
  /** Comma-separated content types, e.g. `iso,vztmpl,backup`. */
  content: string;
  enabled: boolean;
  active: boolean;
  shared: boolean;
  total: number;
  used: number;
  avail: number;
  used_fraction?: number;
}

/** `GET /nodes/{node}/storage/{storage}/content`. */
export interface StorageContentEntry {
  volid: string;
  content: string;
  format: string;
  size: number;
  ctime?: number;
  vmid?: number;
  used?: number;
  parent?: string;
  notes?: string;
}

/** `GET /nodes/{node}/storage/{storage}/content/{volume}`. */
export interface VolumeInfo {
  path?: string;
  size: number;
  used?: number;
  format?: string;
  notes?: string;
  protected?: boolean;
}

/** `GET /nodes/{node}/tasks/{upid}/status`. */
export interface TaskStatus {
  upid: string;
  node: string;
  type: string;
  id: string;
  user: string;
  tokenid?: string;
  pid?: number;
  pstart?: number;
  starttime?: number;
  status: 'running' | 'stopped' | string;
  /** Present once stopped: `OK`, `WARNINGS: N`, or the error text. */
  exitstatus?: string;
}

export interface TaskLogLine {
  n: number;
  t: string;
}

export interface TaskLog {
  lines: TaskLogLine[];
  /** Total number of lines in the log. */
  total: number;
}

/** `GET /cluster/mapping/pci`. */
export interface PciMapping {
  id: string;
  description?: string;
  /** One property string per node: `node=pve1,path=0000:01:00.0,id=10de:2204,...`. */
  map: string[];
  mdev?: boolean;
  'live-migration-capable'?: boolean;
  digest?: string;
  checks?: Array<{ severity: string; message: string }>;
}

/** `GET /cluster/mapping/usb` (pve-cluster Mapping/USB.pm): one `node=<n>,id=<vendor:device>[,path=<bus-port>]` per node. */
export interface UsbMapping {
  id: string;
  description?: string;
  map: string[];
  digest?: string;
  checks?: Array<{ severity: string; message: string }>;
}

/** `POST /access/ticket`. */
export interface TicketResponse {
  username: string;
  ticket: string;
  CSRFPreventionToken: string;
  clustername?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Tolerant decoding

type Raw = Record<string, unknown>;

export function isRecord(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A number from a JSON number or a numeric string; undefined for anything else. */
export function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string') {
    const s = v.trim();
    if (s === '') return undefined;
    const n = Number(s);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/** A boolean from JSON true/false, 0/1, or the strings "0"/"1"/"true"/"false"/"yes"/"no"/"on"/"off". */
export function toBoolean(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(s)) return true;
    if (['0', 'false', 'no', 'off', ''].includes(s)) return false;
  }
  return undefined;
}

function str(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return undefined;
}

/** Copies `obj` and sets the listed fields to their decoded value, dropping those that do not decode. */
function withNumbers<T extends Raw>(obj: T, keys: readonly string[]): T {
  const out: Raw = { ...obj };
  for (const k of keys) {
    if (!(k in out)) continue;
    const n = toNumber(out[k]);
    if (n === undefined) delete out[k];
    else out[k] = n;
  }
  return out as T;
}

function withBooleans<T extends Raw>(obj: T, keys: readonly string[]): T {
  const out: Raw = { ...obj };
  for (const k of keys) {
    if (!(k in out)) continue;
    const b = toBoolean(out[k]);
    if (b === undefined) delete out[k];
    else out[k] = b;
  }
  return out as T;
}

function withStrings<T extends Raw>(obj: T, keys: readonly string[]): T {
  const out: Raw = { ...obj };
  for (const k of keys) {
    if (!(k in out)) continue;
    const s = str(out[k]);
    if (s === undefined) delete out[k];
    else out[k] = s;
  }
  return out as T;
}

function expectRecord(v: unknown, what: string): Raw {
  if (!isRecord(v)) throw new PveResponseShapeError(`${what}: expected an object, got ${describe(v)}`);
  return v;
}

function expectArray(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new PveResponseShapeError(`${what}: expected a list, got ${describe(v)}`);
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v;
}

function requireString(o: Raw, key: string, what: string): string {
  const s = str(o[key]);
  if (s === undefined) throw new PveResponseShapeError(`${what}: missing field '${key}'`);
  return s;
}

function requireNumber(o: Raw, key: string, what: string): number {
  const n = toNumber(o[key]);
  if (n === undefined) throw new PveResponseShapeError(`${what}: missing or non-numeric field '${key}'`);
  return n;
}

const NODE_NUMBERS = ['cpu', 'maxcpu', 'mem', 'maxmem', 'disk', 'maxdisk', 'uptime'] as const;
const VM_NUMBERS = ['vmid', 'maxmem', 'mem', 'cpus', 'maxcpu', 'cpu', 'maxdisk', 'disk', 'uptime', 'pid'] as const;

export function decodeVersion(v: unknown): PveVersion {
  const o = expectRecord(v, 'version');
  return { version: str(o.version) ?? '', release: str(o.release) ?? '', repoid: str(o.repoid) ?? '' };
}

export function decodeNodeList(v: unknown): NodeListEntry[] {
  return expectArray(v, 'nodes').filter(isRecord).map((o) => {
    const e = withStrings(withNumbers(o, NODE_NUMBERS), ['level', 'ssl_fingerprint', 'id']);
    return { ...e, node: requireString(o, 'node', 'nodes entry'), status: (str(o.status) ?? 'unknown') as NodeOnlineStatus } as NodeListEntry;
  });
}

export function decodeNodeStatus(v: unknown): NodeStatus {
  const o = expectRecord(v, 'node status');
  const out: Raw = withNumbers(o, ['cpu', 'uptime']);
  if (isRecord(o.cpuinfo)) out.cpuinfo = withNumbers(o.cpuinfo, ['cpus', 'cores', 'sockets']);
  if (isRecord(o.memory)) out.memory = withNumbers(o.memory, ['total', 'used', 'free', 'available']);
  if (isRecord(o.swap)) out.swap = withNumbers(o.swap, ['total', 'used', 'free']);
  if (isRecord(o.rootfs)) out.rootfs = withNumbers(o.rootfs, ['total', 'used', 'free', 'avail']);
  return out as NodeStatus;
}

export function decodeClusterStatus(v: unknown): ClusterStatusEntry[] {
  return expectArray(v, 'cluster status').filter(isRecord).map((o) => {
    const e = withBooleans(withNumbers(o, ['version', 'nodes', 'nodeid']), ['quorate', 'online', 'local']);
    return { ...e, type: str(o.type) ?? '', id: str(o.id) ?? '', name: str(o.name) ?? '' } as ClusterStatusEntry;
  });
}

export function decodeClusterResources(v: unknown): ClusterResource[] {
  return expectArray(v, 'cluster resources').filter(isRecord).map((o) => {
    const e = withBooleans(withNumbers(o, [...VM_NUMBERS, 'maxcpu']), ['template', 'shared']);
    return withStrings({ ...e, id: str(o.id) ?? '', type: str(o.type) ?? '' }, ['tags', 'name', 'lock', 'content']) as ClusterResource;
  });
}

function decodeQemuEntry(o: Raw, what: string): QemuListEntry {
  const e = withStrings(withBooleans(withNumbers(o, VM_NUMBERS), ['template']), ['name', 'tags', 'lock']);
  return { ...e, vmid: requireNumber(o, 'vmid', what), status: str(o.status) ?? 'unknown' } as QemuListEntry;
}

export function decodeQemuList(v: unknown): QemuListEntry[] {
  return expectArray(v, 'qemu list').filter(isRecord).map((o) => decodeQemuEntry(o, 'qemu list entry'));
}

export function decodeVmStatus(v: unknown): VmStatus {
  const o = expectRecord(v, 'vm status');
  const e: Raw = { ...o, ...decodeQemuEntry(o, 'vm status') };
  if ('agent' in o) {
    const b = toBoolean(o.agent);
    if (b === undefined) delete e.agent;
    else e.agent = b;
  }
  if (isRecord(o.ha)) e.ha = withNumbers(o.ha, ['managed']);
  return e as unknown as VmStatus;
}

export function decodeVmConfig(v: unknown): VmConfig {
  const o = expectRecord(v, 'vm config');
  const out: VmConfig = {};
  for (const [k, val] of Object.entries(o)) {
    if (typeof val === 'string' || typeof val === 'number') out[k] = val;
    else if (typeof val === 'boolean') out[k] = val ? 1 : 0;
  }
  return out;
}

export function decodeNextId(v: unknown): number {
  const n = toNumber(v);
  if (n === undefined || !Number.isInteger(n)) throw new PveResponseShapeError(`nextid: expected a VMID, got ${describe(v)}`);
  return n;
}

export function decodeStorageList(v: unknown): StorageEntry[] {
  return expectArray(v, 'storage list').filter(isRecord).map((o) => {
    const e = withNumbers(o, ['used_fraction']);
    return {
      ...e,
      storage: requireString(o, 'storage', 'storage entry'),
      type: str(o.type) ?? '',
      content: str(o.content) ?? '',
      // Disabled storages are listed explicitly with enabled=0; a missing field means the listing was filtered.
      enabled: toBoolean(o.enabled) ?? true,
      active: toBoolean(o.active) ?? false,
      shared: toBoolean(o.shared) ?? false,
      total: toNumber(o.total) ?? 0,
      used: toNumber(o.used) ?? 0,
      avail: toNumber(o.avail) ?? 0,
    } as StorageEntry;
  });
}

export function decodeStorageContent(v: unknown): StorageContentEntry[] {
  return expectArray(v, 'storage content').filter(isRecord).map((o) => {
    const e = withNumbers(o, ['ctime', 'vmid', 'used']);
    return {
      ...e,
      volid: requireString(o, 'volid', 'storage content entry'),
      content: str(o.content) ?? '',
      format: str(o.format) ?? '',
      size: toNumber(o.size) ?? 0,
    } as StorageContentEntry;
  });
}

export function decodeVolumeInfo(v: unknown): VolumeInfo {
  const o = expectRecord(v, 'volume info');
  const e = withBooleans(withNumbers(o, ['used']), ['protected']);
  return { ...e, size: toNumber(o.size) ?? 0 } as VolumeInfo;
}

export function decodeTaskStatus(v: unknown): TaskStatus {
  const o = expectRecord(v, 'task status');
  const e = withNumbers(o, ['pid', 'starttime', 'pstart']);
  const out: Raw = {
    ...e,
    upid: str(o.upid) ?? '',
    node: str(o.node) ?? '',
    type: str(o.type) ?? '',
    id: str(o.id) ?? '',
    user: str(o.user) ?? '',
    status: requireString(o, 'status', 'task status'),
  };
  if (o.exitstatus !== undefined && o.exitstatus !== null) out.exitstatus = str(o.exitstatus) ?? String(o.exitstatus);
  else delete out.exitstatus;
  return out as unknown as TaskStatus;
}

export function decodeTaskLog(v: unknown, total: unknown): TaskLog {
  const lines = expectArray(v, 'task log')
    .filter(isRecord)
    .map((o) => ({ n: toNumber(o.n) ?? 0, t: str(o.t) ?? '' }));
  return { lines, total: toNumber(total) ?? lines.length };
}

export function decodePciMappings(v: unknown): PciMapping[] {
  return expectArray(v, 'pci mappings').filter(isRecord).map((o) => {
    const e = withBooleans(o, ['mdev', 'live-migration-capable']);
    const map = Array.isArray(o.map) ? o.map.filter((x): x is string => typeof x === 'string') : typeof o.map === 'string' ? [o.map] : [];
    return { ...e, id: requireString(o, 'id', 'pci mapping'), map } as PciMapping;
  });
}

export function decodeUsbMappings(v: unknown): UsbMapping[] {
  return expectArray(v, 'usb mappings').filter(isRecord).map((o) => {
    const map = Array.isArray(o.map) ? o.map.filter((x): x is string => typeof x === 'string') : typeof o.map === 'string' ? [o.map] : [];
    return { ...o, id: requireString(o, 'id', 'usb mapping'), map } as UsbMapping;
  });
}

export function decodeTicket(v: unknown): TicketResponse {
  const o = expectRecord(v, 'ticket');
  const out: TicketResponse = {
    username: requireString(o, 'username', 'ticket'),
    ticket: requireString(o, 'ticket', 'ticket'),
    CSRFPreventionToken: requireString(o, 'CSRFPreventionToken', 'ticket'),
  };
  const cn = str(o.clustername);
  if (cn !== undefined) out.clustername = cn;
  return out;
}
