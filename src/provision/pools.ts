// Resource pools and the Go provider's machine-set pools. The Go provider (v0.1+) puts a VM in the provider data's
// `pool`, else in a pool named after the machine request set, which it creates with the comment below, records in
// the private state (field 12) and removes once empty. This provider creates no pool (docs/compat.md, "pool"): a VM
// joins the set's pool when it exists (so a set moved from the Go provider keeps its VMs together), the pool is
// recorded the same way, and a teardown removes it exactly as the Go provider would: only with that comment, only empty.
import type { Logger } from '../log.js';
import type { PveClient } from '../proxmox/client.js';
import { PveConnectionError, PveError } from '../proxmox/errors.js';
import { pveFormat } from '../proxmox/propertyString.js';
import { pvePath } from '../proxmox/client.js';
import type { ProviderData } from './providerData.js';

/** The comment the Go provider gives the pools it creates (its ensurePool); only such pools are ever removed. */
export const GO_PROVIDER_POOL_COMMENT = 'managed by omni-infra-provider-proxmox';

/** What `GET /pools?poolid=` (PVE 8.1+) tells about a pool. */
export type PoolLook = { kind: 'exists'; comment: string | undefined; members: string[] } | { kind: 'absent' } | { kind: 'unknown'; why: string };

export async function lookAtPool(pve: PveClient, poolid: string): Promise<PoolLook> {
  try {
    const list = await pve.get<unknown>('/pools', { poolid });
    const entry = Array.isArray(list) ? (list as Array<Record<string, unknown>>).find((p) => p?.poolid === poolid) : undefined;
    if (!entry) return { kind: 'unknown', why: 'not in the answer' };
    const members = Array.isArray(entry.members)
      ? (entry.members as Array<Record<string, unknown>>).map((m) => String(m?.id ?? `${String(m?.type)}/${String(m?.vmid ?? m?.storage)}`))
      : [];
    return { kind: 'exists', comment: typeof entry.comment === 'string' ? entry.comment : undefined, members };
  } catch (err) {
    if (err instanceof PveConnectionError) throw err;
    if (err instanceof PveError && /does not exist/i.test(err.statusText)) return { kind: 'absent' };
    // PVE 8.0 has no `poolid` filter (400); 401/403/5xx: Proxmox cannot tell now.
    if (err instanceof PveError) return { kind: 'unknown', why: err.message };
    throw err;
  }
}

/**
 * The pool a new VM is created in: the provider data's `pool`, else the machine request set's pool when one by that
 * name exists (the Go provider's default, created by it); undefined = none.
 */
export async function poolForNewVm(
  pve: PveClient,
  data: Pick<ProviderData, 'pool'>,
  setId: string | undefined,
  log?: Logger,
): Promise<string | undefined> {
  if (data.pool !== undefined) return data.pool;
  if (!setId || !pveFormat.poolId(setId)) return undefined;
  const look = await lookAtPool(pve, setId);
  if (look.kind === 'unknown') log?.debug({ pool: setId, why: look.why }, 'could not tell whether the machine set has a pool; creating the VM outside any pool');
  return look.kind === 'exists' ? setId : undefined;
}

/**
 * After a teardown removed the VM: removes `poolid` when the Go provider created it (its comment) and it has no
 * member left, as the Go provider's cleanupPool does. Never throws for Proxmox's answers (a pool left behind is
 * logged), as in the Go provider; an unreachable Proxmox is thrown (the teardown is retried).
 */
export async function removeEmptyGoPool(pve: PveClient, poolid: string, log: Logger): Promise<void> {
  const look = await lookAtPool(pve, poolid);
  if (look.kind !== 'exists') {
    if (look.kind === 'unknown') log.warn({ pool: poolid, why: look.why }, 'could not read the pool; it is left as it is');
    return;
  }
  if (look.comment !== GO_PROVIDER_POOL_COMMENT) return; // not a pool the Go provider created: never touched
  if (look.members.length > 0) return;
  try {
    await pve.delete(pvePath`/pools/${poolid}`);
    log.info({ pool: poolid }, 'removed the empty machine-set pool the Go provider created');
  } catch (err) {
    if (err instanceof PveConnectionError) throw err;
    if (!(err instanceof PveError)) throw err;
    log.warn({ pool: poolid, err: err.message }, 'could not remove the empty machine-set pool (needs Pool.Allocate on /pool/<id>)');
  }
}
