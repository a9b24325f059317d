// The simulator's fixture format (JSON or YAML): cluster layout, storages, VMs, auth, and timing knobs.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { DatacenterOptions } from './state.js';
import type { ContentionModel } from './tasks.js';
import type { VersionProfileName } from './version.js';

export interface FixtureNode {
  name: string;
  status?: 'online' | 'offline';
  maxcpu?: number;
  /** Bytes. */
  maxmem?: number;
  /** Host memory in use (bytes) before any simulated VM runs. */
  mem?: number;
  cpu?: number;
  ip?: string;
}

export interface FixtureStorage {
  name: string;
  type: 'dir' | 'nfs' | 'cifs' | 'cephfs' | 'btrfs' | 'glusterfs' | 'lvmthin' | 'lvm' | 'zfspool' | 'rbd' | 'iscsi';
  content: string[];
  shared?: boolean;
  /** Bytes per node (or for the one shared pool). */
  total?: number;
  /** Bytes already used by things the simulator does not model. */
  used?: number;
  /** Nodes the storage is enabled on; all when absent. */
  nodes?: string[];
  disabled?: boolean;
  path?: string;
}

export interface FixturePciMapping {
  id: string;
  description?: string;
  /** Node names, or full entries. */
  nodes: Array<string | { node: string; path?: string; id?: string }>;
}

export interface FixtureUsbMapping {
  id: string;
  description?: string;
  /** Node names (device `0bda:2838`), or full entries. */
  nodes: Array<string | { node: string; id?: string; path?: string }>;
}

export interface FixtureVm {
  vmid: number;
  node: string;
  name?: string;
  tags?: string[];
  /** Bytes (memory = maxmem / MiB). */
  maxmem?: number;
  cores?: number;
  status?: 'running' | 'stopped';
  smbiosUuid?: string;
  /** Managed by HA (start/stop go through hastart/hastop; destroy needs purge). */
  haManaged?: boolean;
  /** A disk to create as scsi0. */
  disk?: { storage: string; sizeGiB: number };
  /** Extra raw config keys. */
  config?: Record<string, string>;
}

export interface FixtureVolume {
  storage: string;
  /** Required for storages that are not shared. */
  node?: string;
  /** Volume name relative to the storage, e.g. `iso/talos.iso`. */
  name: string;
  size?: number;
}

export interface FixtureUser {
  userid: string;
  password?: string;
  enabled?: boolean;
}

export interface FixtureToken {
  /** `user@realm!name` */
  id: string;
  secret: string;
  /** Privilege separation (default true, as in PVE). */
  privsep?: boolean;
  /** Unix seconds, 0 = never. */
  expire?: number;
}

export interface FixtureAcl {
  path: string;
  ugid: string;
  roles?: string[];
  privs?: string[];
  propagate?: boolean;
}

export interface PveFixture {
  seed?: number | string;
  /** Wall time per simulated time (0.01 = 100x faster). Default 1. */
  timeScale?: number;
  versionProfile?: VersionProfileName;
  clusterName?: string;
  /** The node the API URL points at. Default: the first node. */
  entryNode?: string;
  quorate?: boolean;
  nextId?: { lower?: number; upper?: number };
  /** Randomise (seeded) list order, as PVE's hash iteration does. Default true. */
  shuffleLists?: boolean;
  ticketLifetimeMs?: number;
  /** Delay before any 401 (simulated ms). Default 3000. */
  authFailDelayMs?: number;
  /** 595 delay for calls proxied to an offline node (simulated ms). Default 0. */
  offlineConnectDelayMs?: number;
  /** RRD sample cadence in ms: new VMs show `status: unknown` in /cluster/resources until the next sample. Default 10000; 0 = off. */
  statsCadenceMs?: number;
  /** Simulated task durations in ms, per task type. */
  taskDurations?: Record<string, number>;
  /** Storage allocation lock and node slowdown (docs/simulator.md, Contention). */
  contention?: Partial<ContentionModel>;
  /** Size of the bytes a download-url task "downloads". Default 8 MiB. */
  downloadSizeBytes?: number;
  nodes: FixtureNode[];
  storages: FixtureStorage[];
  bridges?: Record<string, string[]>;
  pciMappings?: FixturePciMapping[];
  /** Cluster USB mappings (`GET /cluster/mapping/usb`). */
  usbMappings?: FixtureUsbMapping[];
  /** Resource pools that exist (`GET /pools`; a create with another `pool` is refused). */
  pools?: Array<string | { poolid: string; comment?: string }>;
  /** Custom CPU models (names without `custom-`), listed by the node's CPU capabilities and accepted as `custom-<name>`. */
  customCpuModels?: string[];
  /** datacenter.cfg: `registered-tags` and `user-tag-access` (who may set which tag). */
  datacenter?: DatacenterOptions;
  vms?: FixtureVm[];
  volumes?: FixtureVolume[];
  roles?: Record<string, string[]>;
  users?: FixtureUser[];
  tokens?: FixtureToken[];
  acl?: FixtureAcl[];
}

/** The password of `root@pam` unless the fixture sets users. Fake, for the simulator only. */
export const defaultRootPassword = 'pve-sim-root';
/** The well-known fake secret of the default token `root@pam!omni` (privsep 0). */
export const defaultTokenId = 'root@pam!omni';
export const defaultTokenSecret = '5ec7e7a0-0000-4000-8000-00000000cafe';

export async function loadFixture(file: string): Promise<PveFixture> {
  const text = await readFile(file, 'utf8');
  return parseFixture(text, file);
}

/** Parses JSON or YAML text and checks the shape a fixture must have. */
export function parseFixture(text: string, source = 'fixture'): PveFixture {
  let raw: unknown;
  try {
    raw = /\.json$/i.test(source) ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new Error(`${source}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const f = raw as Partial<PveFixture> | null;
  if (!f || typeof f !== 'object') throw new Error(`${source}: a fixture is an object`);
  if (!Array.isArray(f.nodes) || f.nodes.length === 0) throw new Error(`${source}: nodes[] must list at least one node`);
  if (!Array.isArray(f.storages)) throw new Error(`${source}: storages[] is required`);
  const nodeNames = new Set<string>();
  for (const n of f.nodes) {
    if (!n || typeof n.name !== 'string') throw new Error(`${source}: every node needs a name`);
    nodeNames.add(n.name);
  }
  for (const s of f.storages) {
    if (!s || typeof s.name !== 'string' || typeof s.type !== 'string' || !Array.isArray(s.content)) {
      throw new Error(`${source}: every storage needs name, type and content[]`);
    }
    for (const n of s.nodes ?? []) if (!nodeNames.has(n)) throw new Error(`${source}: storage ${s.name}: unknown node ${n}`);
  }
  for (const vm of f.vms ?? []) {
    if (!nodeNames.has(vm.node)) throw new Error(`${source}: vm ${vm.vmid}: unknown node ${vm.node}`);
  }
  return f as PveFixture;
}
