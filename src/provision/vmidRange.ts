// `vmid_range: "start-end"` (the Go provider's PR #81 key): a VM takes the lowest free VMID of the range instead of
// `GET /cluster/nextid`. Free means: no guest in `/cluster/resources` holds it, no create of this process is in flight
// or recorded at it (another request's write-ahead intent), and Proxmox confirms it unused (`GET /cluster/nextid?vmid=`
// checks the cluster's whole VM list, also guests the token cannot see). Like nextid this reserves nothing: the caller
// picks and creates under the provisioner's create lock, and an `already exists` answer is retried with the next ID.
import type { PveClient } from '../proxmox/client.js';
import { PveError } from '../proxmox/errors.js';
import { ProviderDataError } from './errors.js';

/** PVE's VMID bounds (pve-common `pve-vmid`: 100 to 999999999). */
export const VMID_MIN = 100;
export const VMID_MAX = 999_999_999;

export interface VmidRange {
  start: number;
  end: number;
}

/** `"start-end"` → the range; a text the schema's pattern let through but that is not a range → why not. */
export function parseVmidRange(text: string): VmidRange | string {
  const m = /^(\d+)-(\d+)$/.exec(text);
  if (!m) return 'must be "start-end", e.g. "1000-1099"';
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (start < VMID_MIN || end > VMID_MAX) return `both ends must be VMIDs Proxmox accepts (${VMID_MIN}-${VMID_MAX})`;
  if (start > end) return `start ${start} is above end ${end}`;
  return { start, end };
}

/** Why an ID of the range is not free, for the exhaustion message. */
export type HeldBy = ReadonlyMap<number, string>;

/**
 * The lowest free VMID of `range`. `held` names IDs this process knows are taken although Proxmox may not show a VM
 * yet (creates in flight, recorded intents of other requests). Throws ProviderDataError naming vmid_range when every
 * ID is held; Proxmox errors other than "already exists" propagate.
 */
export async function lowestFreeVmid(pve: PveClient, range: VmidRange, held: HeldBy): Promise<number> {
  const taken = new Map<number, string>();
  for (const v of await pve.clusterResources('vm')) {
    if (v.vmid === undefined || v.vmid < range.start || v.vmid > range.end) continue;
    taken.set(v.vmid, `${v.type === 'lxc' ? 'container' : 'VM'} ${v.name ?? v.vmid}`);
  }
  for (const [id, why] of held) if (id >= range.start && id <= range.end && !taken.has(id)) taken.set(id, why);
  for (let id = range.start; id <= range.end; id++) {
    if (taken.has(id)) continue;
    try {
      await pve.nextId(id);
      return id;
    } catch (err) {
      if (err instanceof PveError && err.status === 400 && /already exists/i.test(JSON.stringify(err.errors ?? {}) + err.statusText)) {
        taken.set(id, 'a guest the token cannot see');
        continue;
      }
      throw err;
    }
  }
  const size = range.end - range.start + 1;
  const shown = [...taken].sort((a, b) => a[0] - b[0]).slice(0, 5).map(([id, why]) => `${id}: ${why}`);
  throw new ProviderDataError(
    `provider data: vmid_range: no free VMID in ${range.start}-${range.end} (all ${size} in use: ${shown.join('; ')}${taken.size > 5 ? '; …' : ''}); ` +
      'widen the range or remove VMs from it',
    'vmid_range',
  );
}
