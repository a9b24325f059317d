// The simulated cluster: nodes, storages with capacity, volumes, VMs and their configs, PCI mappings.
import { createHash } from 'node:crypto';
import { serverError } from './errors.js';

export interface SimNode {
  name: string;
  online: boolean;
  nodeid: number;
  ip: string;
  maxcpu: number;
  maxmem: number;
  /** Host memory used without simulated VMs. */
  baseMem: number;
  cpu: number;
  bootedAtMs: number;
  sslFingerprint: string;
  bridges: Set<string>;
}

export const fileBasedTypes = new Set(['dir', 'nfs', 'cifs', 'cephfs', 'btrfs', 'glusterfs']);

export interface SimStorage {
  id: string;
  type: string;
  content: Set<string>;
  shared: boolean;
  disabled: boolean;
  /** Nodes it is enabled on; undefined = all. */
  nodes?: Set<string>;
  total: number;
  baseUsed: number;
  /** Nodes where the storage cannot be activated (unreachable NFS, ...). */
  inactiveOn: Set<string>;
  path?: string;
}

export interface SimVolume {
  volid: string;
  storage: string;
  /** Name relative to the storage, e.g. `iso/x.iso` or `vm-105-disk-0`. */
  name: string;
  /** Owning node for non-shared storages. */
  node?: string;
  content: string;
  format: string;
  size: number;
  ctime: number;
  vmid?: number;
  /** Bytes of uploaded files (ISOs); downloaded files keep only their size. */
  data?: Buffer;
}

export interface SimVm {
  vmid: number;
  node: string;
  /** Ordered config; values as PVE writes them. */
  config: Map<string, string>;
  running: boolean;
  startedAtMs?: number;
  pid?: number;
  paused: boolean;
  haManaged: boolean;
  /** When the config file was first written (simulated ms); undefined for fixture VMs. */
  createdAtMs?: number;
  /** Resource pool the VM was created in. */
  pool?: string;
}

export interface PciMappingEntry {
  node: string;
  path: string;
  id: string;
}

export interface PciMapping {
  id: string;
  description?: string;
  map: PciMappingEntry[];
}

/** A USB mapping entry (pve-cluster Mapping/USB.pm): the device by vendor:device id, or by port (`path`). */
export interface UsbMappingEntry {
  node: string;
  id: string;
  path?: string;
}

export interface UsbMapping {
  id: string;
  description?: string;
  map: UsbMappingEntry[];
}

/** The datacenter.cfg options the simulator knows, as `GET /cluster/options` returns them. */
export interface DatacenterOptions {
  /** Tags only users with Sys.Modify on / may set. */
  'registered-tags'?: string[];
  /** Which tags other users may set: `free` (default), `existing`, `list`, `none`. */
  'user-tag-access'?: { 'user-allow'?: 'none' | 'list' | 'existing' | 'free'; 'user-allow-list'?: string[] };
}

export class ClusterState {
  clusterName = 'pve-sim';
  entryNode = '';
  quorate = true;
  nextId = { lower: 100, upper: 1_000_000 };
  readonly nodes = new Map<string, SimNode>();
  readonly storages = new Map<string, SimStorage>();
  /** scope key (`sid` when shared, else `sid/node`) -> volume name -> volume */
  readonly volumes = new Map<string, Map<string, SimVolume>>();
  readonly vms = new Map<number, SimVm>();
  readonly pciMappings = new Map<string, PciMapping>();
  readonly usbMappings = new Map<string, UsbMapping>();
  /** Resource pools (user.cfg): id → comment. */
  readonly pools = new Map<string, { comment?: string }>();
  /** Custom CPU models (cpu-models.conf), without the `custom-` prefix. */
  readonly customCpuModels = new Set<string>();
  /** datacenter.cfg options the simulator reads (`GET /cluster/options`, tag rules at create). */
  datacenter: DatacenterOptions = {};

  // ---- nodes ----

  /** Resolves `localhost` to the entry node. Unknown names fail like PVE's DNS fallback. */
  resolveNode(name: string): SimNode {
    const real = name === 'localhost' ? this.entryNode : name;
    const node = this.nodes.get(real);
    if (!node) throw serverError(`hostname lookup '${name}' failed - failed to get address info for: ${name}: Name or service not known`);
    return node;
  }

  // ---- storages ----

  scopeKey(storage: SimStorage, node: string): string {
    return storage.shared ? storage.id : `${storage.id}/${node}`;
  }

  /** The storage as seen from `node`, or a PVE-worded 500. */
  storageOn(sid: string, node: string): SimStorage {
    const s = this.storages.get(sid);
    if (!s) throw serverError(`storage '${sid}' does not exist`);
    if (s.disabled) throw serverError(`storage '${sid}' is disabled`);
    if (s.nodes && !s.nodes.has(node)) throw serverError(`storage '${sid}' is not available on node '${node}'`);
    return s;
  }

  enabledOn(s: SimStorage, node: string): boolean {
    return !s.disabled && (s.nodes === undefined || s.nodes.has(node));
  }

  activeOn(s: SimStorage, node: string): boolean {
    return this.enabledOn(s, node) && !s.inactiveOn.has(node) && this.nodes.get(node)?.online !== false;
  }

  volumeMap(s: SimStorage, node: string): Map<string, SimVolume> {
    const key = this.scopeKey(s, node);
    let m = this.volumes.get(key);
    if (!m) {
      m = new Map();
      this.volumes.set(key, m);
    }
    return m;
  }

  usage(s: SimStorage, node: string): { total: number; used: number; avail: number } {
    let used = s.baseUsed;
    for (const v of this.volumeMap(s, node).values()) used += v.size;
    return { total: s.total, used, avail: Math.max(0, s.total - used) };
  }

  /** Splits `sid:name` (or a name relative to `defaultSid`). */
  parseVolid(volume: string, defaultSid?: string): { sid: string; name: string } {
    const m = /^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$/i.exec(volume);
    if (m) return { sid: m[1]!, name: m[2]! };
    if (defaultSid !== undefined) return { sid: defaultSid, name: volume };
    throw serverError(`unable to parse volume ID '${volume}'`);
  }

  findVolume(volid: string, node: string): SimVolume | undefined {
    const { sid, name } = this.parseVolid(volid);
    const s = this.storages.get(sid);
    if (!s) return undefined;
    return this.volumeMap(s, node).get(name);
  }

  addVolume(s: SimStorage, node: string, v: Omit<SimVolume, 'volid' | 'storage' | 'node'>): SimVolume {
    const vol: SimVolume = { ...v, volid: `${s.id}:${v.name}`, storage: s.id, ...(s.shared ? {} : { node }) };
    this.volumeMap(s, node).set(v.name, vol);
    return vol;
  }

  removeVolume(volid: string, node: string): boolean {
    const { sid, name } = this.parseVolid(volid);
    const s = this.storages.get(sid);
    if (!s) return false;
    return this.volumeMap(s, node).delete(name);
  }

  /** Path of a volume on the node's file system, as PVE reports it. */
  volumePath(s: SimStorage, name: string): string {
    if (fileBasedTypes.has(s.type)) {
      const base = s.path ?? (s.type === 'dir' ? '/var/lib/vz' : `/mnt/pve/${s.id}`);
      const m = /^(\d+)\/(.+)$/.exec(name);
      if (m) return `${base}/images/${m[1]}/${m[2]}`;
      if (name.startsWith('iso/')) return `${base}/template/iso/${name.slice(4)}`;
      if (name.startsWith('vztmpl/')) return `${base}/template/cache/${name.slice(7)}`;
      if (name.startsWith('import/')) return `${base}/import/${name.slice(7)}`;
      return `${base}/${name}`;
    }
    if (s.type === 'rbd') return `rbd:${s.id}/${name}`;
    if (s.type === 'zfspool') return `/dev/zvol/rpool/data/${name}`;
    return `/dev/pve/${name}`;
  }

  /**
   * Allocates a new disk for `vmid` (task-time): `vm-<id>-disk-<n>` on block storage,
   * `<id>/vm-<id>-disk-<n>.qcow2` on file storage. Throws plain errors that become task failures.
   */
  allocateDisk(sid: string, node: string, vmid: number, sizeBytes: number): SimVolume {
    const s = this.storageOn(sid, node);
    if (!s.content.has('images')) throw new Error(`storage '${sid}' does not support vm images`);
    if (!this.activeOn(s, node)) throw new Error(`storage '${sid}' is not online`);
    const { avail } = this.usage(s, node);
    if (sizeBytes > avail) {
      throw new Error(
        `unable to create image: not enough free space on storage '${sid}' (requested ${sizeBytes} bytes, available ${avail} bytes)`,
      );
    }
    const file = fileBasedTypes.has(s.type);
    const vols = this.volumeMap(s, node);
    let n = 0;
    const nameFor = (i: number) => (file ? `${vmid}/vm-${vmid}-disk-${i}.qcow2` : `vm-${vmid}-disk-${i}`);
    while (vols.has(nameFor(n))) n++;
    return this.addVolume(s, node, {
      name: nameFor(n),
      content: 'images',
      format: file ? 'qcow2' : 'raw',
      size: sizeBytes,
      ctime: 0,
      vmid,
    });
  }

  // ---- VMs ----

  configPath(node: string, vmid: number): string {
    return `nodes/${node}/qemu-server/${vmid}.conf`;
  }

  /** The VM if its config lives on `node`; otherwise PVE's "does not exist" 500. */
  vmOn(node: string, vmid: number): SimVm {
    const vm = this.vms.get(vmid);
    if (!vm || vm.node !== node) throw serverError(`Configuration file '${this.configPath(node, vmid)}' does not exist`);
    return vm;
  }

  digest(vm: SimVm): string {
    return createHash('sha1').update(serialiseConfig(vm.config)).digest('hex');
  }

  /** Volumes referenced by the VM's drives (`sid:name`), without cdrom media. */
  referencedVolids(vm: SimVm, includeCdrom = false): string[] {
    const out: string[] = [];
    for (const [k, v] of vm.config) {
      if (!/^(ide|scsi|sata|virtio)\d+$|^efidisk0$|^tpmstate0$/.test(k)) continue;
      if (!includeCdrom && /(^|,)media=cdrom(,|$)/.test(v)) continue;
      const file = v.split(',')[0] ?? '';
      if (/^[a-z][a-z0-9\-_.]*[a-z0-9]:/i.test(file)) out.push(file);
    }
    return out;
  }

  vmMemoryBytes(vm: SimVm): number {
    const m = /^(?:current=)?(\d+)/.exec(vm.config.get('memory') ?? '512');
    return Number(m?.[1] ?? 512) * 1024 * 1024;
  }

  vmCpus(vm: SimVm): number {
    return Number(vm.config.get('cores') ?? 1) * Number(vm.config.get('sockets') ?? 1);
  }

  vmMaxDisk(vm: SimVm): number {
    for (const [k, v] of vm.config) {
      if (!/^(scsi|virtio|sata|ide)\d+$/.test(k) || /media=cdrom/.test(v)) continue;
      const m = /(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)/.exec(v);
      if (m) return Math.round(Number(m[1]) * sizeUnit(m[2] ?? ''));
    }
    return 0;
  }

  /** Memory a running VM uses on its host (a fixed share of its maximum). */
  vmMemUsed(vm: SimVm): number {
    return vm.running ? Math.floor(this.vmMemoryBytes(vm) * 0.35) : 0;
  }

  nodeMemUsed(node: SimNode): number {
    let mem = node.baseMem;
    for (const vm of this.vms.values()) if (vm.node === node.name) mem += this.vmMemUsed(vm);
    return Math.min(mem, node.maxmem);
  }
}

export function sizeUnit(u: string): number {
  switch (u[0]) {
    case 'K':
      return 1024;
    case 'M':
      return 1024 ** 2;
    case 'G':
      return 1024 ** 3;
    case 'T':
      return 1024 ** 4;
    default:
      return 1;
  }
}

/** A size the way PVE writes it in drive strings (`32G`, `4M`, `528K`). */
export function formatSize(bytes: number): string {
  for (const [u, f] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= f && bytes % f === 0) return `${bytes / f}${u}`;
  }
  return String(bytes);
}

export function serialiseConfig(config: ReadonlyMap<string, string>): string {
  return [...config].map(([k, v]) => `${k}: ${v}`).join('\n') + '\n';
}
