// Read-side views of the Proxmox cluster that the steps and the CLI share: node snapshots for placement, storage
// facts for selectors, and finding VMs cluster-wide (by VMID, or by name + SMBIOS UUID).
import type { StorageFacts } from '../cel/index.js';
import { STEP_READ_MS, type PveClient } from '../proxmox/client.js';
import { isNotFound } from '../proxmox/errors.js';
import { formats, parsePropertyString } from '../proxmox/propertyString.js';
import type { ClusterResource, VmConfig } from '../proxmox/types.js';
import { parseIsoVolid } from './isoStore.js';
import type { NodeSnapshot } from './pickNode.js';
import { machineRequestTag } from './planVm.js';

/** Tags of a VM as PVE reports them (`a;b`, also `,` or space separated), lowercased. */
export function splitTags(raw: string | undefined): string[] {
  if (!raw) return [];
  return raw
    .split(/[;, ]+/)
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
}

/** The `uuid` of a VM's `smbios1` config value, lowercased; undefined when absent or unreadable. */
export function smbiosUuidOf(config: VmConfig): string | undefined {
  const raw = config.smbios1;
  if (typeof raw !== 'string' || raw === '') return undefined;
  try {
    const uuid = parsePropertyString(raw, formats.smbios1).uuid;
    return uuid ? uuid.toLowerCase() : undefined;
  } catch {
    return undefined;
  }
}

/** Node ids (from `map` entries `node=<n>,...`) per mapping id (PCI and USB mappings list nodes alike). */
export function pciMappingNodes(mappings: ReadonlyArray<{ id: string; map: readonly string[] }>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of mappings) {
    const nodes = new Set<string>();
    for (const entry of m.map) {
      const match = /(?:^|,)node=([^,]+)/.exec(entry);
      if (match?.[1]) nodes.add(match[1]);
    }
    out.set(m.id, nodes);
  }
  return out;
}

/**
 * One snapshot per node: status and RAM from `/nodes`, committed VM memory, VM counts and same-set VM counts from
 * `/cluster/resources?type=vm` (its `tags` are current, unlike the per-VM config the Go provider read), and the
 * PCI mappings with an entry for the node (only fetched when the request needs some).
 */
export async function nodeSnapshots(
  pve: PveClient,
  opts: {
    setId?: string | undefined;
    needPciMappings?: boolean;
    needUsbMappings?: boolean;
    /** The bridges each node lists, as validateRequest found them (nodes left out are not checked). */
    bridges?: ReadonlyMap<string, ReadonlySet<string> | undefined>;
  },
): Promise<NodeSnapshot[]> {
  const [nodes, vms, mappings, usbMappings] = await Promise.all([
    pve.nodes({ maxAgeMs: STEP_READ_MS }),
    pve.clusterResources('vm'),
    opts.needPciMappings ? pve.pciMappings() : Promise.resolve([]),
    opts.needUsbMappings ? pve.usbMappings() : Promise.resolve([]),
  ]);
  const setTag = opts.setId ? machineRequestTag(opts.setId).toLowerCase() : undefined;
  const mappingNodes = pciMappingNodes(mappings);
  const usbNodes = pciMappingNodes(usbMappings);
  return nodes.map((n) => {
    // Templates never run: they hold no memory and are not machines of a set.
    const here = vms.filter((v) => v.type === 'qemu' && v.node === n.node && !v.template);
    const pci = [...mappingNodes].filter(([, set]) => set.has(n.node)).map(([id]) => id);
    return {
      name: n.node,
      status: n.status,
      maxmem: n.maxmem,
      committedMemory: here.reduce((sum, v) => sum + (v.maxmem ?? 0), 0),
      setVmCount: setTag ? here.filter((v) => splitTags(v.tags).includes(setTag)).length : 0,
      vmCount: here.length,
      pciMappings: pci,
      usbMappings: [...usbNodes].filter(([, set]) => set.has(n.node)).map(([id]) => id),
      vmNames: here.map((v) => v.name ?? '').filter((x) => x !== ''),
      maxcpu: n.maxcpu,
      bridges: opts.bridges?.get(n.node),
    };
  });
}

/** Storage facts of one node, as the CEL selector sees them. */
export async function storageFacts(pve: PveClient, node: string): Promise<StorageFacts[]> {
  const list = await pve.storageList(node, { maxAgeMs: STEP_READ_MS });
  return list.map((s) => ({
    storage: s.storage,
    node,
    type: s.type,
    content: s.content
      .split(',')
      .map((c) => c.trim())
      .filter((c) => c !== ''),
    shared: s.shared,
    active: s.active,
    enabled: s.enabled,
    total: s.total,
    used: s.used,
    avail: s.avail,
  }));
}

/** Where a VM lives now (it may have migrated since we created it); undefined when no node reports it. */
export async function locateVm(pve: PveClient, vmid: number): Promise<ClusterResource | undefined> {
  const vms = await pve.clusterResources('vm');
  return vms.find((v) => v.type === 'qemu' && v.vmid === vmid);
}

export interface OwnedVm {
  vmid: number;
  node: string;
  config: VmConfig;
}

/** Reads a VM's config; undefined when Proxmox says it does not exist (deleted or moved meanwhile). */
export async function readConfig(pve: PveClient, node: string, vmid: number): Promise<VmConfig | undefined> {
  try {
    return await pve.vmConfig(node, vmid);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Finds the VM a request created: named after the request and carrying its SMBIOS UUID. `pending` lists VMs still
 * being created by someone we cannot identify (their config holds only `lock: create` until the task ends), so a
 * caller that may have lost a create response must wait for them before concluding there is no VM.
 */
export async function findRequestVm(
  pve: PveClient,
  requestId: string,
  uuid: string,
  opts: { ignoreCreating?: ReadonlySet<number> } = {},
): Promise<{ vm?: OwnedVm; pending: number[] }> {
  const vms = (await pve.clusterResources('vm')).filter((v) => v.type === 'qemu' && v.vmid !== undefined && v.node);
  const pending = vms
    .filter((v) => v.lock === 'create' && !opts.ignoreCreating?.has(v.vmid as number))
    .map((v) => v.vmid as number);
  const want = uuid.toLowerCase();
  for (const v of vms.filter((x) => x.name === requestId)) {
    const config = await readConfig(pve, v.node as string, v.vmid as number);
    if (config && smbiosUuidOf(config) === want) {
      return { vm: { vmid: v.vmid as number, node: v.node as string, config }, pending };
    }
  }
  return { pending };
}

/** The ISO volumes (`<storage>:iso/<file>`) a VM config holds in its CD-ROM slots (ide/sata/scsi, `media=cdrom`). */
export function cdromIsos(config: Record<string, unknown>): Array<{ storage: string; name: string }> {
  const out: Array<{ storage: string; name: string }> = [];
  for (const [key, value] of Object.entries(config)) {
    if (!/^(ide|sata|scsi)\d+$/.test(key) || typeof value !== 'string') continue;
    let drive;
    try {
      drive = parsePropertyString(value, formats.ide);
    } catch {
      continue;
    }
    if (drive.media !== 'cdrom' || typeof drive.file !== 'string') continue;
    const iso = parseIsoVolid(drive.file);
    if (iso) out.push(iso);
  }
  return out;
}

/**
 * The VMs a provider created for this request without recording them. The Go provider chooses the SMBIOS UUID inside
 * syncVM and records it (with the create's UPID) only after its create call returned, so a Go provider stopped in
 * between leaves a VM that no private state names. Such a VM is recognised by everything the request did record: it
 * is named after the request, carries an SMBIOS UUID, and boots the Talos ISO this request downloaded (`bootIso`, the
 * bare file name of field 4) from a CD-ROM slot. `pending` lists creates still running that nobody identified.
 */
export async function findUnrecordedCreates(
  pve: PveClient,
  requestId: string,
  bootIso: string,
  opts: { ignoreCreating?: ReadonlySet<number> } = {},
): Promise<{ vms: Array<OwnedVm & { uuid: string }>; pending: number[] }> {
  const vms = (await pve.clusterResources('vm')).filter((v) => v.type === 'qemu' && v.vmid !== undefined && v.node);
  const pending = vms
    .filter((v) => v.lock === 'create' && !opts.ignoreCreating?.has(v.vmid as number))
    .map((v) => v.vmid as number);
  const out: Array<OwnedVm & { uuid: string }> = [];
  if (!bootIso) return { vms: out, pending };
  for (const v of vms.filter((x) => x.name === requestId && x.lock !== 'create')) {
    const config = await readConfig(pve, v.node as string, v.vmid as number);
    const uuid = config ? smbiosUuidOf(config) : undefined;
    if (!config || !uuid || !cdromIsos(config).some((iso) => iso.name === bootIso)) continue;
    out.push({ vmid: v.vmid as number, node: v.node as string, config, uuid });
  }
  return { vms: out, pending };
}
