// Housekeeping: what piles up on Proxmox over months, found and (only when the operator opts in) removed.
//
// * VMs with our identity (below) that neither a private state nor a MachineRequest accounts for: VMs of requests
//   deleted while no provider ran, or created by a provider that crashed before its state write. Reported (metric,
//   one log line, `status`), removed only with `housekeeping.removeOrphanVms` after `orphanVmGraceSeconds` counted
//   from when this process first saw them orphaned, and re-checked right before the removal.
// * Our NoCloud seed ISOs no VM uses (the listing of `seeds orphaned`), and Talos ISOs (`<sha256>.iso`, the cache
//   `uploadISO` fills) that no VM uses and that are older than `talosIsoMinAgeSeconds`. Removed only with
//   `housekeeping.removeUnusedIsos`. An ISO a VM's config names, or a private state names, is never removed.
//
// The scan is read-only and shared with the `status` command (src/cli/status.ts); docs/operations.md explains both.
import type { DescMessage } from '@bufbuild/protobuf';
import { LABEL_INFRA_PROVIDER_ID, MachineRequestKind, providerMachineKind, type ResourceKind, type TypedResource } from '../cosi/resources.js';
import type { CosiState } from '../cosi/state.js';
import type { MachineSpec, MachineSpecSchema } from '../gen/proxmox/specs/specs_pb.js';
import type { Logger } from '../log.js';
import type { PveClient } from '../proxmox/client.js';
import { isNotFound } from '../proxmox/errors.js';
import { seedIsoFileName } from '../proxmox/nocloud.js';
import type { ClusterResource, VmConfig } from '../proxmox/types.js';
import { smbiosUuidOf, splitTags } from '../provision/cluster.js';
import { isoFileName, rankIsoStorages } from '../provision/isoStore.js';
import { emptyMachineState } from '../provision/machineState.js';
import { isoVolumesOf, OUR_SEED_PATTERN, VMID_SEED_PATTERN } from '../provision/orphanSeeds.js';
import { MACHINE_REQUEST_TAG_PREFIX } from '../provision/planVm.js';
import type { DeprovisionContext } from '../provision/step.js';
import { waitForTask } from '../proxmox/tasks.js';
import type { HousekeepingMetrics } from './providerMetrics.js';

/** The Talos ISO cache: `<sha256 hex of the image URL>.iso` (`BootImage.cacheKey`, src/omni/images.ts). */
export const TALOS_ISO_PATTERN = /^[0-9a-f]{64}\.iso$/;
/**
 * The random part of a MachineRequest ID: Omni's MachineRequestSetStatusController names each request
 * `<machine request set ID>-<rand.String(6)>` (siderolabs/omni, controllers/omni/machine_request_set_status.go, scaleUp).
 */
const REQUEST_ID_SUFFIX = /^[a-z0-9]{6}$/;
/** What both providers put in `smbios1` (Go: uuid.New(); ours: randomUUID()): a random RFC 4122 version 4 UUID. */
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** A seed younger than this may be uploading right now, before its VM's ide0 names it (as `seeds orphaned`). */
export const SEED_MIN_AGE_SECONDS = 600;

export interface HousekeepingSettings {
  /** Seconds between passes; 0 = housekeeping off (no scan, no metric). */
  intervalSeconds: number;
  removeOrphanVms: boolean;
  /** An orphaned VM is removed only once it was first seen orphaned at least this long ago. */
  orphanVmGraceSeconds: number;
  removeUnusedIsos: boolean;
  /** A Talos ISO no VM uses is removed only when its file is at least this old. */
  talosIsoMinAgeSeconds: number;
}

export const DEFAULT_HOUSEKEEPING: HousekeepingSettings = {
  intervalSeconds: 600,
  removeOrphanVms: false,
  orphanVmGraceSeconds: 86400,
  removeUnusedIsos: false,
  talosIsoMinAgeSeconds: 7 * 86400,
};

/**
 * Our identity, strict enough that a VM someone else made is never taken for ours. All three must hold:
 *  1. a tag `machine-request.<S>` (what both providers add for a request of machine request set S; PVE lowercases
 *     tags),
 *  2. the name `<S>-<6 lowercase letters or digits>`, the MachineRequest ID Omni gives a request of S (the VM is
 *     named after its request), for the S of that tag,
 *  3. an SMBIOS UUID (`smbios1: uuid=`) of version 4, as both providers generate it.
 * A VM named like a request but without the tag, or with the tag and another name, or with a UUID of another form
 * (none, set by hand, another version) is not ours. Proxmox also fills in a random v4 UUID for VMs created without
 * one, so (3) alone says little: (1) and (2) together are the mark, (3) keeps out VMs whose UUID was set to
 * something else. Templates are never ours (the providers never convert a VM).
 */
export function ourVmIdentity(vm: Pick<ClusterResource, 'name' | 'tags' | 'template'>, config: VmConfig | undefined): { setId: string; uuid: string } | undefined {
  if (vm.template || !vm.name) return undefined;
  const setId = requestSetOf(vm.name, vm.tags);
  if (setId === undefined || !config) return undefined;
  if (config.template !== undefined && String(config.template) === '1') return undefined;
  if (config.name !== undefined && config.name !== vm.name) return undefined;
  const uuid = smbiosUuidOf(config);
  if (uuid === undefined || !UUID_V4.test(uuid)) return undefined;
  return { setId, uuid };
}

/** The set S when the name is `<S>-<suffix>` and the VM carries the tag `machine-request.<S>`; else undefined. */
function requestSetOf(name: string, tags: string | undefined): string | undefined {
  const lower = name.toLowerCase();
  for (const tag of splitTags(tags)) {
    if (!tag.startsWith(MACHINE_REQUEST_TAG_PREFIX)) continue;
    const set = tag.slice(MACHINE_REQUEST_TAG_PREFIX.length);
    if (set !== '' && lower.startsWith(`${set}-`) && REQUEST_ID_SUFFIX.test(name.slice(set.length + 1))) return set;
  }
  return undefined;
}

export interface OrphanVm {
  vmid: number;
  node: string;
  /** The VM name: the ID of the machine request it was made for. */
  name: string;
  setId: string;
  uuid: string;
  status?: string;
  /** Proxmox lock (`create`, `backup`, `migrate`, …): a locked VM is reported, never removed. */
  lock?: string;
}

export interface OurIso {
  kind: 'talos' | 'seed';
  /** Node the storage was listed on (any node for a shared storage). */
  node: string;
  storage: string;
  shared: boolean;
  volid: string;
  size: number;
  /** Upload time, seconds since the epoch, when Proxmox reports it. */
  ctime?: number;
  /** VMs whose config names it. */
  usedBy: number[];
  /** Private states (request IDs) that name it. */
  recordedBy: string[];
}

export interface HousekeepingScan {
  orphanVms: OrphanVm[];
  isos: OurIso[];
  /**
   * False when some VM's config could not be read (its node is offline, a call failed): the ISO usage is then
   * incomplete and no ISO is removed in this pass. The reasons are in `problems`.
   */
  complete: boolean;
  problems: string[];
}

/** What Omni accounts for: the provider's MachineRequests and private states, as listed. */
export interface OmniRecords {
  requestIds: ReadonlySet<string>;
  states: ReadonlyMap<string, TypedResource<typeof MachineSpecSchema>>;
}

/** Lists the provider's MachineRequests and private states. */
export async function readOmniRecords(state: CosiState, providerId: string): Promise<OmniRecords> {
  const [requests, states] = await Promise.all([
    state.list(MachineRequestKind, { labels: { [LABEL_INFRA_PROVIDER_ID]: providerId } }),
    state.list(providerMachineKind(providerId)),
  ]);
  return { requestIds: new Set(requests.map((r) => r.metadata.id)), states: new Map(states.map((s) => [s.metadata.id, s])) };
}

/** Whether a private state accounts for a VM: it is named after the state's request, or the state records it. */
function stateAccountsFor(records: OmniRecords, vm: { vmid: number; name: string; uuid: string }): boolean {
  if (records.requestIds.has(vm.name) || records.states.has(vm.name)) return true;
  for (const s of records.states.values()) {
    const spec: MachineSpec = s.spec;
    if (spec.vmid === vm.vmid || spec.createVmid === vm.vmid) return true;
    if (spec.uuid !== '' && spec.uuid.toLowerCase() === vm.uuid) return true;
  }
  return false;
}

/** The ISO file names and volume IDs the private states name (Talos ISO in field 4, seed in field 101). */
function recordedIsos(records: OmniRecords): { byName: Map<string, string[]>; byVolid: Map<string, string[]> } {
  const byName = new Map<string, string[]>();
  const byVolid = new Map<string, string[]>();
  const add = (m: Map<string, string[]>, k: string, id: string): void => {
    m.set(k, [...(m.get(k) ?? []), id]);
  };
  for (const [id, s] of records.states) {
    const spec: MachineSpec = s.spec;
    // Field 4 is the bare file name (or a full volume ID from older versions); the Go provider looks for it on its
    // first ISO storage, so the name is protected on every storage.
    if (spec.volumeId) add(byName, isoFileName(spec.volumeId), id);
    if (spec.seedVolume) add(byVolid, spec.seedVolume, id);
    // Our seed is named after its request, wherever it is.
    try {
      add(byName, seedIsoFileName(id), id);
    } catch {
      // An ID no seed can be named after has no seed.
    }
  }
  return { byName, byVolid };
}

/** Both listings together: what either of them accounts for. */
function unionRecords(a: OmniRecords, b: OmniRecords): OmniRecords {
  return { requestIds: new Set([...a.requestIds, ...b.requestIds]), states: new Map([...a.states, ...b.states]) };
}

/**
 * One read-only look at the cluster against what Omni records: orphaned VMs and every Talos and seed ISO of ours with
 * who uses it. Omni is read before and after the VMs are listed, and what either read accounts for counts: a request
 * that starts meanwhile records its state before its VM exists (seen by the read after), one that is torn down meanwhile
 * deletes its VM before its state (seen by the read before), so neither looks orphaned for a moment.
 */
export async function scanHousekeeping(pve: PveClient, readRecords: () => Promise<OmniRecords>): Promise<HousekeepingScan> {
  const problems: string[] = [];
  let complete = true;
  const before = await readRecords();
  const vms = (await pve.clusterResources('vm')).filter((v) => v.type === 'qemu' && v.vmid !== undefined && v.node);
  const configs = new Map<number, VmConfig>();
  const refs = new Map<string, number[]>();
  const failed: string[] = [];
  // A few at a time: one GET per VM, and clusters have hundreds.
  await eachLimited(vms, CONFIG_READS_IN_PARALLEL, async (vm) => {
    try {
      configs.set(vm.vmid as number, await pve.vmConfig(vm.node as string, vm.vmid as number));
    } catch (err) {
      if (isNotFound(err)) return; // deleted meanwhile
      failed.push(`the config of VM ${vm.vmid} on node ${vm.node} could not be read (${errorText(err)}); ISO usage is incomplete, no ISO is removed`);
    }
  });
  if (failed.length > 0) {
    complete = false;
    problems.push(...failed.sort());
  }
  for (const vm of vms) {
    const config = configs.get(vm.vmid as number);
    if (config) for (const file of isoVolumesOf(config)) refs.set(file, [...(refs.get(file) ?? []), vm.vmid as number]);
  }
  const records = unionRecords(before, await readRecords());

  const orphanVms: OrphanVm[] = [];
  for (const vm of vms) {
    const config = configs.get(vm.vmid as number);
    const id = ourVmIdentity(vm, config);
    if (!id) continue;
    const v = { vmid: vm.vmid as number, name: vm.name as string, uuid: id.uuid };
    if (stateAccountsFor(records, v)) continue;
    const lock = vm.lock ?? config?.lock;
    orphanVms.push({
      ...v,
      node: vm.node as string,
      setId: id.setId,
      ...(vm.status ? { status: vm.status } : {}),
      ...(lock ? { lock } : {}),
    });
  }

  const recorded = recordedIsos(records);
  const isos: OurIso[] = [];
  const nodes = (await pve.nodes()).filter((n) => n.status === 'online').map((n) => n.node).sort();
  const seen = new Set<string>();
  for (const node of nodes) {
    let storages;
    try {
      storages = rankIsoStorages(await pve.storageList(node, { content: 'iso', enabled: true }));
    } catch (err) {
      problems.push(`the ISO storages of node ${node} could not be listed (${errorText(err)})`);
      continue;
    }
    for (const s of storages) {
      const key = s.shared ? s.storage : `${node}/${s.storage}`;
      if (seen.has(key)) continue;
      seen.add(key);
      let content;
      try {
        content = await pve.storageContent(node, s.storage, { content: 'iso' });
      } catch (err) {
        problems.push(`storage ${s.storage} on node ${node} could not be listed (${errorText(err)})`);
        continue;
      }
      for (const c of content) {
        const name = isoFileName(c.volid);
        // A seed named after its VMID (go-proxmox's name, ours too) is ours only while a private state of ours records
        // it, and then it is in use: reported, never removed (the Go provider's are not ours to remove).
        const recordedSeed = VMID_SEED_PATTERN.test(name) && recorded.byVolid.has(c.volid);
        const kind = TALOS_ISO_PATTERN.test(name) ? 'talos' : OUR_SEED_PATTERN.test(name) || recordedSeed ? 'seed' : undefined;
        if (!kind) continue; // not ours: never reported, never touched
        isos.push({
          kind,
          node,
          storage: s.storage,
          shared: s.shared,
          volid: c.volid,
          size: c.size,
          ...(c.ctime !== undefined ? { ctime: c.ctime } : {}),
          usedBy: refs.get(c.volid) ?? [],
          recordedBy: [...new Set([...(recorded.byName.get(name) ?? []), ...(recorded.byVolid.get(c.volid) ?? [])])],
        });
      }
    }
  }
  return { orphanVms, isos, complete, problems };
}

const CONFIG_READS_IN_PARALLEL = 4;

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** An ISO nothing uses: no VM's config and no private state names it. */
export function isUnused(iso: OurIso): boolean {
  return iso.usedBy.length === 0 && iso.recordedBy.length === 0;
}

/** Whether an unused ISO is old enough to remove (its upload time must be known). */
export function oldEnough(iso: OurIso, settings: Pick<HousekeepingSettings, 'talosIsoMinAgeSeconds'>, nowMs: number): boolean {
  if (iso.ctime === undefined) return false;
  const minAge = iso.kind === 'talos' ? settings.talosIsoMinAgeSeconds : SEED_MIN_AGE_SECONDS;
  return nowMs / 1000 - iso.ctime >= minAge;
}

// ---------------------------------------------------------------------------------------------------------------
// The daemon's periodic pass

export interface HousekeeperOptions {
  pve: PveClient;
  state: CosiState;
  providerId: string;
  settings: HousekeepingSettings;
  log: Logger;
  /** Removes an orphaned VM and the seeds its drive slots hold: the provisioner's Deprovision. */
  deprovision: (ctx: DeprovisionContext) => Promise<void>;
  metrics?: HousekeepingMetrics;
  now?: () => number;
  /**
   * Whether this process may write now. LEASE HOOK: the leader lease (issue 11, part 1) wires its holder check
   * here, so that only the lease holder removes anything; reporting runs on every instance.
   */
  mayWrite?: () => boolean;
  /**
   * Whether provisioning or teardown work is going on (the provisioner's task slots). A pass due while busy waits,
   * re-checking every `busyRetryMs`, for at most one interval: housekeeping's listings do not compete with the
   * requests' own calls, and the scan does not race creates in flight.
   */
  busy?: () => boolean;
  /** How often a pass postponed by `busy` looks again (default 30 s). */
  busyRetryMs?: number;
}

export interface HousekeepingPass {
  scan: HousekeepingScan;
  removedVms: OrphanVm[];
  removedIsos: OurIso[];
  failures: string[];
}

/**
 * Runs a pass every `intervalSeconds` (the first one 10 s after start, postponed while provisioning work is going
 * on, see `busy`); removes only what the settings allow.
 */
export class Housekeeper {
  readonly #o: HousekeeperOptions;
  readonly #now: () => number;
  /** When this process first saw each orphaned VM (by VMID and UUID) and each unused ISO (by node and volume ID). */
  readonly #firstSeen = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #stopped = false;
  #lastProblems = '';
  #abort = new AbortController();
  /** The last pass, for tests and a future /status endpoint. */
  last: HousekeepingPass | undefined;

  constructor(opts: HousekeeperOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  start(firstDelayMs = 10_000): void {
    if (this.#o.settings.intervalSeconds <= 0 || this.#stopped) return;
    const { intervalSeconds, removeOrphanVms, orphanVmGraceSeconds, removeUnusedIsos, talosIsoMinAgeSeconds } = this.#o.settings;
    this.#o.log.info(
      { intervalSeconds, removeOrphanVms, ...(removeOrphanVms ? { orphanVmGraceSeconds } : {}), removeUnusedIsos, ...(removeUnusedIsos ? { talosIsoMinAgeSeconds } : {}) },
      removeOrphanVms || removeUnusedIsos ? 'housekeeping on: reports and removes what the settings allow' : 'housekeeping on: reports only',
    );
    const retryMs = this.#o.busyRetryMs ?? 30_000;
    const tick = (delay: number, postponedMs = 0): void => {
      this.#timer = setTimeout(() => {
        if (this.#o.busy?.() && postponedMs + retryMs <= this.#o.settings.intervalSeconds * 1000) {
          tick(retryMs, postponedMs + retryMs);
          return;
        }
        this.#running = this.runOnce()
          .catch(() => undefined)
          .finally(() => {
            this.#running = undefined;
            if (!this.#stopped) tick(this.#o.settings.intervalSeconds * 1000);
          });
      }, delay);
      this.#timer.unref();
    };
    tick(firstDelayMs);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#abort.abort();
    await this.#running;
  }

  /** One pass: scan, report what is new, remove what the settings allow and what still qualifies right now. */
  async runOnce(): Promise<HousekeepingPass> {
    const { log, settings, metrics } = this.#o;
    const started = this.#now();
    let scan: HousekeepingScan;
    try {
      scan = await scanHousekeeping(this.#o.pve, () => readOmniRecords(this.#o.state, this.#o.providerId));
    } catch (err) {
      metrics?.runs.inc({ result: 'failed' });
      log.warn({ err: errorText(err) }, 'housekeeping pass failed');
      throw err;
    }
    // Logged when they change, not at every pass (a node can stay offline for days).
    const problems = scan.problems.join('\n');
    if (problems !== this.#lastProblems) {
      for (const p of scan.problems) log.warn({ problem: p }, 'housekeeping: incomplete view');
      this.#lastProblems = problems;
    }

    const current = new Set<string>();
    const orphanKey = (v: OrphanVm): string => `vm/${v.vmid}/${v.uuid}`;
    const isoKey = (i: OurIso): string => `iso/${i.shared ? '' : i.node}/${i.volid}`;
    for (const v of scan.orphanVms) {
      const key = orphanKey(v);
      current.add(key);
      if (this.#firstSeen.has(key)) continue;
      this.#firstSeen.set(key, started);
      const what = settings.removeOrphanVms
        ? `it is removed once it stays orphaned for ${settings.orphanVmGraceSeconds} s`
        : 'housekeeping.removeOrphanVms is off: remove it by hand, or turn that setting on';
      log.warn(
        { vmid: v.vmid, node: v.node, vmName: v.name, uuid: v.uuid, ...(v.lock ? { lock: v.lock } : {}) },
        `orphaned VM: it carries this provider's identity, but no machine request and no private state account for it; ${what}`,
      );
    }
    const unused = scan.isos.filter(isUnused);
    for (const i of unused) {
      const key = isoKey(i);
      current.add(key);
      if (this.#firstSeen.has(key)) continue;
      this.#firstSeen.set(key, started);
      log.info(
        { volume: i.volid, node: i.node, storage: i.storage, kind: i.kind, size: i.size },
        `unused ${i.kind === 'talos' ? 'Talos' : 'seed'} ISO: no VM and no machine request uses it${settings.removeUnusedIsos ? '' : ' (housekeeping.removeUnusedIsos is off)'}`,
      );
    }
    for (const key of [...this.#firstSeen.keys()]) if (!current.has(key)) this.#firstSeen.delete(key);

    metrics?.orphanVms.set({}, scan.orphanVms.length);
    for (const kind of ['talos', 'seed'] as const) {
      const mine = unused.filter((i) => i.kind === kind);
      metrics?.unusedIsos.set({ kind }, mine.length);
      metrics?.unusedIsoBytes.set({ kind }, mine.reduce((s, i) => s + i.size, 0));
    }

    const pass: HousekeepingPass = { scan, removedVms: [], removedIsos: [], failures: [] };
    const mayWrite = this.#o.mayWrite ?? (() => true);
    if (settings.removeOrphanVms) {
      for (const v of scan.orphanVms) {
        const since = this.#firstSeen.get(orphanKey(v)) ?? started;
        if (started - since < settings.orphanVmGraceSeconds * 1000 || this.#abort.signal.aborted || !mayWrite()) continue;
        try {
          if (await this.#removeOrphanVm(v)) {
            pass.removedVms.push(v);
            this.#firstSeen.delete(orphanKey(v));
            metrics?.removals.inc({ kind: 'vm', result: 'done' });
          }
        } catch (err) {
          metrics?.removals.inc({ kind: 'vm', result: 'failed' });
          pass.failures.push(`VM ${v.vmid}: ${errorText(err)}`);
          log.warn({ vmid: v.vmid, node: v.node, err: errorText(err) }, 'removing an orphaned VM failed; retried next pass');
        }
      }
    }
    if (settings.removeUnusedIsos && scan.complete) {
      // Only what was already unused in an earlier pass, and old enough.
      const candidates = unused.filter((i) => (this.#firstSeen.get(isoKey(i)) ?? started) < started && oldEnough(i, settings, this.#now()));
      if (candidates.length > 0 && mayWrite() && !this.#abort.signal.aborted) {
        // Right before removing: what the private states name now (a request that started meanwhile records its
        // Talos ISO and seed before any VM names them).
        const fresh = recordedIsos(await readOmniRecords(this.#o.state, this.#o.providerId));
        for (const i of candidates) {
          if (fresh.byName.has(isoFileName(i.volid)) || fresh.byVolid.has(i.volid) || !mayWrite()) continue;
          try {
            const upid = await this.#o.pve.deleteVolume(i.node, i.storage, i.volid);
            if (upid) await waitForTask(this.#o.pve, upid, { signal: this.#abort.signal });
            pass.removedIsos.push(i);
            this.#firstSeen.delete(isoKey(i));
            metrics?.removals.inc({ kind: i.kind, result: 'done' });
            log.info({ volume: i.volid, node: i.node, storage: i.storage, kind: i.kind, size: i.size }, 'unused ISO removed');
          } catch (err) {
            if (isNotFound(err)) continue;
            metrics?.removals.inc({ kind: i.kind, result: 'failed' });
            pass.failures.push(`${i.volid}: ${errorText(err)}`);
            log.warn({ volume: i.volid, node: i.node, err: errorText(err) }, 'removing an unused ISO failed; retried next pass');
          }
        }
      }
    }
    metrics?.runs.inc({ result: 'ok' });
    metrics?.lastSuccess.set({}, Math.floor(this.#now() / 1000));
    this.last = pass;
    return pass;
  }

  /**
   * Removes one orphaned VM after checking again, right now, that it still qualifies: the same VM (VMID, name, UUID)
   * with our identity, not locked, and still no MachineRequest and no private state for it. Returns false (and
   * removes nothing) when any of that changed.
   */
  async #removeOrphanVm(v: OrphanVm): Promise<boolean> {
    const { pve, state, providerId, log } = this.#o;
    const now = (await pve.clusterResources('vm')).find((r) => r.type === 'qemu' && r.vmid === v.vmid);
    if (!now?.node) return false;
    let config: VmConfig;
    try {
      config = await pve.vmConfig(now.node, v.vmid);
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
    const id = ourVmIdentity(now, config);
    if (!id || id.uuid !== v.uuid || now.name !== v.name) return false;
    if (now.lock || config.lock) {
      log.info({ vmid: v.vmid, lock: now.lock ?? config.lock }, 'orphaned VM is locked; not removed in this pass');
      return false;
    }
    const records = await readOmniRecords(state, providerId);
    if (stateAccountsFor(records, { vmid: v.vmid, name: v.name, uuid: v.uuid })) return false;
    // Also by ID: a request or state the listings did not show (another provider's label, a stale list).
    if ((await findOrKeep(state, MachineRequestKind, v.name)) || (await findOrKeep(state, providerMachineKind(providerId), v.name))) return false;
    log.warn({ vmid: v.vmid, node: now.node, vmName: v.name, uuid: v.uuid }, 'removing orphaned VM (housekeeping.removeOrphanVms is on)');
    // The provisioner's own teardown, given only the identity: it finds the VM by name and SMBIOS UUID, shuts it down,
    // deletes it with its disks and removes the seed its drive slots hold.
    await this.#o.deprovision({
      requestId: v.name,
      state: { ...emptyMachineState(), uuid: v.uuid },
      log: log.child({ request: v.name }),
      signal: this.#abort.signal,
    });
    log.warn({ vmid: v.vmid, node: now.node, vmName: v.name }, 'orphaned VM removed');
    return true;
  }
}

/** True when Omni has a resource of that ID, and also when it cannot tell (any error but NOT_FOUND). */
async function findOrKeep<S extends DescMessage>(state: CosiState, kind: ResourceKind<S>, id: string): Promise<boolean> {
  try {
    return (await state.find(kind, id)) !== undefined;
  } catch {
    return true;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}
