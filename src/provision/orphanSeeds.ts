// NoCloud seed ISOs that no VM uses any more. Our own teardown removes the seed of every request it deletes. After a
// rollback to the Go provider, its teardown removes a seed of ours only when go-proxmox finds it: ours is named
// `user-data-<vmid>.iso` and the VM tagged `go-proxmox+cloud-init` as go-proxmox does, but go-proxmox before v0.6 looks
// on one ISO storage of the node only (the first in API order, which PVE does not keep stable), and a seed named after
// its request (`omni-seed-<request>.iso`: earlier versions, and the fallback when a `user-data-<vmid>.iso` of another VM
// was in the way) is never its. What is left, the operator lists and removes with
// `omni-infra-provider-proxmox seeds orphaned [--delete]` (docs/operations.md).
import type { PveClient } from '../proxmox/client.js';
import { isNotFound } from '../proxmox/errors.js';
import { parsePropertyString, formats } from '../proxmox/propertyString.js';
import { waitForTask } from '../proxmox/tasks.js';
import { isoFileName, rankIsoStorages } from './isoStore.js';

export const OUR_SEED_PATTERN = /^omni-seed-[a-z0-9_.-]+\.iso$/;
/** A seed named after its VM (go-proxmox's `user-data-<vmid>.iso`: the Go provider's, and ours). */
export const VMID_SEED_PATTERN = /^user-data-(\d+)\.iso$/;

export interface SeedVolume {
  /** Node the storage was listed on (any node for a shared storage). */
  node: string;
  storage: string;
  volid: string;
  /** Upload time (seconds since the epoch) when Proxmox reports it. */
  ctime?: number;
  /** VMs whose config (a drive slot, current or pending) names this volume. */
  usedBy: number[];
  /** `request`: `omni-seed-<request>.iso` (only ours); `vmid`: `user-data-<vmid>.iso` whose VMID no guest holds. */
  kind: 'request' | 'vmid';
}

/** The ISO volume IDs a VM's drive slots (ide/sata/scsi/virtio) name, in the config given (current or pending). */
export function isoVolumesOf(config: Record<string, unknown>): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    if (!/^(ide|sata|scsi|virtio)\d+$/.test(key) || typeof value !== 'string') continue;
    let file: unknown;
    try {
      file = parsePropertyString(value, formats.ide).file;
    } catch {
      file = value.split(',')[0];
    }
    if (typeof file === 'string' && file.includes(':iso/')) out.push(file);
  }
  return out;
}

/**
 * Every ISO volume a drive slot of any VM in the cluster names, by volume ID → VMIDs (current and pending config), and
 * the VMIDs guests (VMs and containers) hold.
 */
async function referencedIsos(pve: PveClient): Promise<{ refs: Map<string, number[]>; vmids: Set<number> }> {
  const refs = new Map<string, number[]>();
  const guests = await pve.clusterResources('vm');
  const vmids = new Set(guests.flatMap((g) => (g.vmid !== undefined ? [g.vmid] : [])));
  const vms = guests.filter((v) => v.type === 'qemu' && v.vmid !== undefined && v.node);
  for (const vm of vms) {
    let config;
    try {
      config = await pve.vmConfig(vm.node as string, vm.vmid as number);
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    for (const file of isoVolumesOf(config)) {
      const list = refs.get(file) ?? [];
      list.push(vm.vmid as number);
      refs.set(file, list);
    }
  }
  return { refs, vmids };
}

/**
 * Seed ISOs on every ISO storage of every online node that may be ours, each with the VMs that use it. Read-only.
 * Ours by name (`omni-seed-*.iso`, kind `request`), and every `user-data-<vmid>.iso` whose VMID no guest holds (kind
 * `vmid`: ours or the Go provider's, its VM gone either way; one whose VM exists is that VM's, and is not listed). A
 * seed no VM uses is an orphan, except for a few seconds while a running provider of ours uploads a `request` seed
 * before attaching it: stop our provider (or use `minAgeSeconds`) before deleting.
 */
export async function listOurSeeds(pve: PveClient): Promise<SeedVolume[]> {
  const { refs, vmids } = await referencedIsos(pve);
  const nodes = (await pve.nodes()).filter((n) => n.status === 'online').map((n) => n.node).sort();
  const seen = new Set<string>();
  const out: SeedVolume[] = [];
  for (const node of nodes) {
    for (const s of rankIsoStorages(await pve.storageList(node, { content: 'iso', enabled: true }))) {
      const key = s.shared ? s.storage : `${node}/${s.storage}`;
      if (seen.has(key)) continue;
      seen.add(key);
      for (const c of await pve.storageContent(node, s.storage, { content: 'iso' })) {
        const name = isoFileName(c.volid);
        const byVmid = VMID_SEED_PATTERN.exec(name);
        const kind = OUR_SEED_PATTERN.test(name) ? 'request' : byVmid && !vmids.has(Number(byVmid[1])) ? 'vmid' : undefined;
        if (!kind) continue;
        out.push({ node, storage: s.storage, volid: c.volid, ...(c.ctime !== undefined ? { ctime: c.ctime } : {}), usedBy: refs.get(c.volid) ?? [], kind });
      }
    }
  }
  return out;
}

/** Whether a seed was uploaded less than `minAgeSeconds` before `nowSeconds` (0: no seed is young). */
export function isYoung(seed: { ctime?: number }, minAgeSeconds: number, nowSeconds: number): boolean {
  return minAgeSeconds > 0 && seed.ctime !== undefined && nowSeconds - seed.ctime < minAgeSeconds;
}

/**
 * Deletes the seeds of `listOurSeeds` that no VM uses and that are at least `minAgeSeconds` old (a `vmid` seed only while
 * its VMID is still free); returns them.
 */
export async function deleteOrphanedSeeds(
  pve: PveClient,
  opts: { minAgeSeconds: number; now?: () => number },
): Promise<{ deleted: SeedVolume[]; kept: SeedVolume[] }> {
  const now = (opts.now ?? Date.now)() / 1000;
  const deleted: SeedVolume[] = [];
  const kept: SeedVolume[] = [];
  for (const seed of await listOurSeeds(pve)) {
    if (seed.usedBy.length > 0 || isYoung(seed, opts.minAgeSeconds, now)) {
      kept.push(seed);
      continue;
    }
    if (seed.kind === 'vmid') {
      // Right before the removal: a VM that took this VMID since the listing owns the name now.
      const vmid = Number(VMID_SEED_PATTERN.exec(isoFileName(seed.volid))?.[1]);
      if ((await pve.clusterResources('vm')).some((g) => g.vmid === vmid)) {
        kept.push(seed);
        continue;
      }
    }
    try {
      const upid = await pve.deleteVolume(seed.node, seed.storage, seed.volid);
      if (upid) await waitForTask(pve, upid);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    deleted.push(seed);
  }
  return { deleted, kept };
}
