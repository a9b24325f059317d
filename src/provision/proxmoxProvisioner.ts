// The Proxmox half of provisioning: the seven Go-compatible steps (pickNode, createSchematic, uploadISO, syncVM,
// startVM, and the HA steps registerHA and syncHARules from ha.ts), deprovision and the health check. Every step is idempotent: it first looks for what an earlier run
// (of this process or another) already did and adopts it.
import { randomUUID } from 'node:crypto';
import { SelectorError } from '../cel/index.js';
import type { Logger } from '../log.js';
import type { PveClient } from '../proxmox/client.js';
import {
  isAuthError,
  isNodeUnreachable,
  isNoSuchTask,
  isNotFound,
  isPermissionError,
  PveConnectionError,
  PveError,
  PveTaskError,
  PveTaskTimeoutError,
} from '../proxmox/errors.js';
import { buildNoCloudSeed, seedIsoFileName } from '../proxmox/nocloud.js';
import { formatPropertyString, formats, parsePropertyString } from '../proxmox/propertyString.js';
import { TaskDurations, waitForTask, type TaskResult, type TaskWaitClock, type WaitForTaskOptions } from '../proxmox/tasks.js';
import { parseUpid } from '../proxmox/upid.js';
import {
  AddressAllocator,
  describeAddresses,
  nicNetworks,
  renderNetworkConfig,
  searchDomainsPatch,
  staticNics,
  vmConfigAddresses,
  type AddressBook,
} from './addresses.js';
import { cdromIsos, findRequestVm, findUnrecordedCreates, locateVm, nodeSnapshots, readConfig, smbiosUuidOf, splitTags, storageFacts } from './cluster.js';
import { HaSteps } from './ha.js';
import { PlacementError, ProviderDataError, VmPlanError } from './errors.js';
import { GO_SEED_TAG, goSeedFileName, isoFileName, IsoStore, parseIsoVolid } from './isoStore.js';
import type { MachineState } from './machineState.js';
import { DiskStorageError, selectDiskStorages } from './diskStorages.js';
import { InFlightLedger, pickNode, placementRequest } from './pickNode.js';
import { planVm, SEED_ISO_SLOT } from './planVm.js';
import { storageSlot, TaskSlots } from './taskSlots.js';
import { validateRequest } from './validateRequest.js';
import { poolForNewVm, removeEmptyGoPool } from './pools.js';
import { isoVolumesOf, VMID_SEED_PATTERN } from './orphanSeeds.js';
import { lowestFreeVmid, parseVmidRange, type VmidRange } from './vmidRange.js';
import {
  done,
  retryAfter,
  StepFailure,
  type DeprovisionContext,
  type ImageService,
  type Provisioner,
  type Step,
  type StepContext,
  type StepName,
  type StepResult,
} from './step.js';

export interface ProxmoxProvisionerOptions {
  pve: PveClient;
  images: ImageService;
  log: Logger;
  /** Shared across requests so concurrent members of one machine set spread. */
  ledger?: InFlightLedger;
  arch?: 'amd64' | 'arm64';
  /** Hostname the NoCloud meta-data announces when provider data does not say: `none` lets Omni decide. */
  hostname?: 'none' | 'request-id';
  /** Seconds a guest gets to shut down cleanly before it is stopped hard; 0 (default): stopped at once. */
  shutdownTimeoutSec?: number;
  /** How often a VMID collision is retried with a fresh ID (default 5). */
  createAttempts?: number;
  /** How often a failed ISO download is retried within one step run (default 3). */
  downloadAttempts?: number;
  /** Task polling overrides (tests use a fast schedule) and an observer of finished waits (metrics). */
  taskWait?: Pick<WaitForTaskOptions, 'pollSchedule' | 'clock' | 'onFinished'>;
  /**
   * How long to wait for a create whose outcome is not visible yet (default 60 s): unidentified VMs in `lock: create`
   * before concluding ours does not exist; a recorded create whose answer was lost before concluding it never took
   * effect; in a teardown, this request's own create (and seed upload) task before it is stopped.
   */
  pendingCreateWaitMs?: number;
  /**
   * Slots per Proxmox write: tasks at once per node and per storage (default: DEFAULT_TASK_SLOT_LIMITS). Shared by
   * every request; a request holds slots only from a task's call to its end.
   */
  taskSlots?: TaskSlots;
  /**
   * Where the addresses every request holds are read from (the private states in Omni: omniAddressBook). Needed
   * only by requests with an `address_pool`; without it such a request fails.
   */
  addressBook?: AddressBook;
}

/** A VMID this request recorded (the confirmed VM, or the write-ahead intent of a create) and where to look for it. */
interface RecordedVm {
  vmid: number;
  node: string;
  /** Field 11 (a VM Proxmox confirmed once): gone means gone. Otherwise a create intent, which may still appear. */
  confirmed: boolean;
  /** The UPID of the create call that made it, when recorded (field 7 naming a `qmcreate` of this VMID). */
  upid: string | undefined;
}

/** What one look at a recorded VMID found. */
type VmLook =
  /** A VM with our SMBIOS UUID (our name for states without a UUID), its config readable. */
  | { kind: 'ours'; node: string; config: Record<string, unknown> }
  /** A VM carrying another identity: someone else's, never touched. */
  | { kind: 'foreign'; node: string }
  /** A VM still in `lock: create` (not identifiable yet), or our recorded create task still running. */
  | { kind: 'creating'; node: string; taskRunning: boolean | undefined }
  /** No VM there, and the recorded create task has ended: none will appear. */
  | { kind: 'absent' }
  /** No VM there and no create task recorded: a create whose answer was lost may still take effect. */
  | { kind: 'unknown' };

/** The UPID in field 7 when it is the create task of `vmid` (field 7 keeps the last create's UPID). */
function createTaskOf(state: MachineState, vmid: number): string | undefined {
  if (!state.vmCreateTask) return undefined;
  try {
    const upid = parseUpid(state.vmCreateTask);
    return upid.type === 'qmcreate' && upid.id === String(vmid) ? state.vmCreateTask : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Field 109 between the record before a seed upload and Proxmox's answer: an upload may be running whose UPID is not
 * known. Not a UPID (the Go provider never reads fields >= 100).
 */
export const SEED_UPLOAD_UNANSWERED = 'unanswered';

function clearCreateIntent(state: MachineState): void {
  state.createVmid = 0;
  state.createNode = '';
}

/**
 * Whether a failed create call may still have created the VM: the answer was lost, or a proxy (not the node) answered
 * 502/503/504/59x. A refusal by Proxmox itself (4xx, a 500 with Proxmox's message, 595 = node not reached) did not.
 */
export function createMayHaveHappened(err: unknown): boolean {
  if (err instanceof PveConnectionError) return err.mayHaveExecuted;
  if (err instanceof PveError) {
    if (err.status < 500 || err.status === 595 || err.status === 501) return false;
    if (err.status === 500) return err.statusText === 'Internal Server Error';
    return true;
  }
  return true;
}

/** Turns what Proxmox and the planners throw into a StepFailure the operator can act on. */
export function toStepFailure(step: StepName, err: unknown): StepFailure {
  if (err instanceof StepFailure) return err;
  const prefix = `${step}: `;
  if (
    err instanceof ProviderDataError ||
    err instanceof VmPlanError ||
    err instanceof PlacementError ||
    err instanceof DiskStorageError
  ) {
    return new StepFailure(prefix + err.message, { cause: err });
  }
  if (err instanceof SelectorError) return new StepFailure(prefix + err.message, { cause: err });
  if (err instanceof PveConnectionError) {
    return new StepFailure(`${prefix}Proxmox API unreachable: ${err.message}`, { transient: true, cause: err });
  }
  if (err instanceof PveTaskTimeoutError) return new StepFailure(prefix + err.message, { transient: true, cause: err });
  if (err instanceof PveTaskError) {
    const tail = err.logTail.length > 0 ? ` (task log: ${err.logTail.slice(-3).join(' | ')})` : '';
    return new StepFailure(prefix + err.message + tail, { cause: err });
  }
  if (err instanceof PveError) {
    if (isAuthError(err)) {
      return new StepFailure(`${prefix}Proxmox rejected the credentials (${err.statusText}); check the API token or password`, {
        cause: err,
      });
    }
    if (isPermissionError(err)) {
      return new StepFailure(
        `${prefix}${err.statusText}: grant this privilege to the provider's Proxmox user and token (docs/configuration.md)`,
        { cause: err },
      );
    }
    const transient = isNodeUnreachable(err) || [502, 503, 504].includes(err.status);
    return new StepFailure(prefix + err.message, { transient, cause: err });
  }
  return new StepFailure(prefix + (err instanceof Error ? err.message : String(err)), { cause: err });
}

export class ProxmoxProvisioner implements Provisioner {
  readonly steps: readonly Step[];
  readonly ledger: InFlightLedger;
  /** Static addresses: one allocation at a time in this process, recorded in the private state. */
  readonly addresses: AddressAllocator;
  readonly #pve: PveClient;
  readonly #images: ImageService;
  readonly #log: Logger;
  readonly #opts: ProxmoxProvisionerOptions;
  readonly #isos: IsoStore;
  /** VMIDs this process is creating right now (their `lock: create` is ours, not an unknown create). */
  readonly #creating = new Set<number>();
  /** Serialises nextid + create inside this process: Proxmox does not reserve the ID it hands out. */
  #createChain: Promise<unknown> = Promise.resolve();
  /**
   * The create intent (field 106) each request has recorded, as far as this process has seen it: a `vmid_range` pick
   * skips another request's recorded VMID even while no VM is visible there (a create whose answer was lost).
   */
  readonly #intents = new Map<string, number>();
  /** When each request first saw unidentified pending creates (bounded wait). */
  readonly #pendingSince = new Map<string, number>();
  /** When this process first saw a recorded create (`request/vmid`) unresolved: the bound of its waits. */
  readonly #unresolvedSince = new Map<string, number>();
  readonly #clock: TaskWaitClock;
  readonly #ha: HaSteps;
  /** Durations of the tasks this provisioner started, per node and type: where their waits poll first. */
  readonly taskDurations = new TaskDurations();
  /** Tasks at once per node and per storage. */
  readonly slots: TaskSlots;

  constructor(opts: ProxmoxProvisionerOptions) {
    this.#opts = opts;
    this.#pve = opts.pve;
    this.#images = opts.images;
    this.#log = opts.log;
    this.ledger = opts.ledger ?? new InFlightLedger();
    this.addresses = new AddressAllocator(opts.addressBook);
    this.slots = opts.taskSlots ?? new TaskSlots();
    this.#isos = new IsoStore(opts.pve, this.#wait.bind(this), this.slots);
    this.#ha = new HaSteps(opts.pve);
    this.#clock = opts.taskWait?.clock ?? {
      now: () => Date.now(),
      sleep: (ms, signal) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(done, ms);
          signal?.addEventListener('abort', done, { once: true });
          function done() {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            resolve();
          }
        }),
    };
    const step = (name: StepName, run: (ctx: StepContext) => Promise<StepResult>): Step => ({
      name,
      run: async (ctx) => {
        try {
          return await run(ctx);
        } catch (err) {
          throw toStepFailure(name, err);
        }
      },
    });
    this.steps = [
      step('pickNode', (ctx) => this.pickNode(ctx)),
      step('createSchematic', (ctx) => this.createSchematic(ctx)),
      step('uploadISO', (ctx) => this.uploadIso(ctx)),
      step('syncVM', (ctx) => this.syncVm(ctx)),
      step('startVM', (ctx) => this.startVm(ctx)),
      step('registerHA', (ctx) => this.#ha.registerHA(ctx)),
      step('syncHARules', (ctx) => this.#ha.syncHARules(ctx)),
    ];
  }

  /** Waits for a task; `fresh`: started just before, so its duration is learned and estimated (TaskDurations). */
  #wait(upid: string, signal?: AbortSignal, fresh = false): Promise<TaskResult> {
    const durations = fresh ? { durations: this.taskDurations } : {};
    return waitForTask(this.#pve, upid, { ...this.#opts.taskWait, signal, logger: this.#log, ...durations });
  }

  /** Chooses the node (once; kept while it is usable) and the SMBIOS UUID, so both are persisted before syncVM. */
  async pickNode(ctx: StepContext): Promise<StepResult> {
    const { request, state } = ctx;
    const data = request.providerData;
    if (!state.uuid) state.uuid = randomUUID();
    // The VM exists, or a create of it is recorded: its node is where it is (or is being created).
    if (state.vmid || state.createVmid) return done;
    // Before anything is downloaded or created: refuse (permanently, naming the field) what Proxmox would refuse.
    const checked = await validateRequest(this.#pve, request, ctx.log);
    // A range with no free VMID fails here, before the ISO download (read-only; retried, as VMs may leave the range).
    const range = vmidRangeOf(request.providerData);
    if (range) await lowestFreeVmid(this.#pve, range, this.#heldVmids(request.id));
    // Static addresses are taken now (before anything is written to Proxmox) and recorded before the VM create.
    await this.#ensureAddresses(ctx);
    const snapshots = await nodeSnapshots(this.#pve, {
      setId: request.machineRequestSetId,
      needPciMappings: data.pci_devices.length > 0,
      needUsbMappings: data.usb_devices.length > 0,
      bridges: checked.bridges,
    });
    const want = placementRequest(request.id, data, request.machineRequestSetId);
    const placement = pickNode({ nodes: snapshots, inFlight: this.ledger.entries(), request: want });
    if (state.node && state.node !== placement.node) {
      const previous = placement.candidates.find((c) => c.node === state.node);
      if (previous?.accepted) {
        // Keep an earlier choice that still fits: the ISO may already be on its storage.
        placement.node = state.node;
      } else {
        ctx.log.warn({ node: state.node, reason: previous?.reason }, 'previously chosen node no longer fits; placing again');
        state.isoStorage = '';
        state.volumeId = '';
      }
    }
    state.node = placement.node;
    this.ledger.reserve(request.id, request.machineRequestSetId, state.node, want.memoryBytes);
    ctx.log.info({ node: state.node, candidates: placement.candidates }, 'node picked');
    return done;
  }

  /**
   * One address per NIC with an `address_pool`, written to the private state (checkpoint) before it is used; kept
   * when already recorded. A pool without a free address fails the step with a message naming the field.
   */
  async #ensureAddresses(ctx: StepContext): Promise<void> {
    const nics = staticNics(ctx.request.providerData);
    if (nics.length === 0 && ctx.state.nicAddresses.length === 0) return;
    const before = describeAddresses(ctx.state.nicAddresses);
    // Addresses of VMs this provider did not create, where their config tells (read outside the allocation lock).
    const external = this.addresses.needsAllocation(nics, ctx.state) ? await this.#foreignAddresses(ctx.log) : undefined;
    const got = await this.addresses.ensure(ctx.request.id, nics, ctx.state, () => ctx.checkpoint(), external);
    const now = describeAddresses(got);
    if (now !== before) ctx.log.info({ addresses: got.map((a) => ({ nic: `net${a.nic}`, address: a.address, mac: a.mac })) }, `static addresses allocated: ${now}`);
  }

  /**
   * Addresses other VMs of the cluster hold by their own config (cloud-init `ipconfigN`), as `address → holder`. A VM
   * whose config cannot be read (no VM.Audit, node down) is skipped: what cannot be known is not guarded.
   */
  async #foreignAddresses(log: Logger): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    let vms;
    try {
      vms = (await this.#pve.clusterResources('vm')).filter((r) => r.type === 'qemu' && r.vmid !== undefined && r.node && !r.template);
    } catch (err) {
      log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not list VMs to skip addresses they hold; allocating from private states only');
      return out;
    }
    for (const vm of vms) {
      let config;
      try {
        config = await readConfig(this.#pve, vm.node!, vm.vmid!);
      } catch {
        continue;
      }
      if (!config) continue;
      for (const { address, key } of vmConfigAddresses(config)) {
        if (!out.has(address)) out.set(address, `VM ${vm.vmid}${vm.name ? ` (${vm.name})` : ''} ${key}`);
      }
    }
    return out;
  }

  async createSchematic(ctx: StepContext): Promise<StepResult> {
    ctx.state.schematic = await this.#images.createSchematic(ctx.request);
    ctx.state.talosVersion = ctx.request.talosVersion;
    ctx.log.info({ schematic: ctx.state.schematic }, 'schematic ready');
    return done;
  }

  /** Makes sure the Talos ISO for the schematic is on an ISO storage the VM's node can use. */
  async uploadIso(ctx: StepContext): Promise<StepResult> {
    const { state } = ctx;
    this.#requireNode(state);
    // Resuming a Go provider that may have created the VM already: field 4 still names the ISO that VM boots.
    const adopted = await this.#unrecordedGoCreate(ctx);
    if (adopted) return adopted;
    const image = await this.#images.bootImage(state.schematic, state.talosVersion || ctx.request.talosVersion, this.#opts.arch ?? 'amd64');
    if (state.volumeUploadTask) {
      // A download this request started earlier (before a crash or a failed wait): let it finish instead of starting
      // a second one of the same file. Its failure is not final: ensureDownloaded below looks and retries.
      try {
        await this.#wait(state.volumeUploadTask, ctx.signal);
      } catch (err) {
        if (!(err instanceof PveTaskError)) throw err;
        ctx.log.warn({ err: err.message }, 'earlier Talos ISO download did not succeed');
      }
    }
    if (!state.isoStorage) state.isoStorage = await this.#isos.chooseIsoStorage(state.node);
    // Field 4 is recorded before the download, as the Go provider does: its uploadISO, finding field 6 set and that
    // task successful, ends without setting field 4, and its syncVM then looks the ISO up by field 4.
    state.volumeId = `${image.cacheKey}.iso`;
    const volid = await this.#isos.ensureDownloaded({
      node: state.node,
      storage: state.isoStorage,
      url: image.url,
      filename: `${image.cacheKey}.iso`,
      attempts: this.#opts.downloadAttempts ?? 3,
      log: ctx.log,
      signal: ctx.signal,
      // Record before writing: the storage before download-url is called, its UPID (field 6) once answered.
      onStarting: () => ctx.checkpoint(),
      onStarted: async (upid) => {
        state.volumeUploadTask = upid;
        await ctx.checkpoint();
      },
    });
    state.volumeUploadTask = '';
    // Field 4 holds the bare file name, as the Go provider writes and reads it (it looks the name up on its own ISO
    // storage); the storage is ours, in field 100.
    state.volumeId = isoFileName(volid);
    return done;
  }

  /**
   * The boot ISO's full volume ID for the create call. Field 4 is the bare `<sha256>.iso` (Go's format); a full volume
   * ID there is what versions of ours before issue 12 wrote, and is accepted. A state without `iso_storage` (written
   * by the Go provider) is resolved by looking for the file on the node's ISO storages; when it is on none, uploadISO
   * runs again (the ISO is downloaded to our storage).
   */
  async #bootIsoVolid(ctx: StepContext): Promise<string> {
    const { state } = ctx;
    if (state.volumeId.includes(':')) {
      const legacy = state.volumeId;
      const iso = parseIsoVolid(legacy);
      if (iso) {
        state.isoStorage ||= iso.storage;
        state.volumeId = iso.name;
      }
      return legacy;
    }
    if (state.volumeId && state.isoStorage) return `${state.isoStorage}:iso/${state.volumeId}`;
    if (state.volumeId) {
      const found = await this.#isos.findIso(state.node, state.volumeId);
      if (found) {
        state.isoStorage = found;
        return `${found}:iso/${state.volumeId}`;
      }
      ctx.log.info({ file: state.volumeId }, 'the recorded Talos ISO is on no ISO storage of the node; downloading it');
    }
    await this.uploadIso(ctx);
    return `${state.isoStorage}:iso/${state.volumeId}`;
  }

  /**
   * Creates the VM, or adopts the one an earlier run created. The create is recorded before it is sent (write-ahead
   * intent: `create_vmid`, `create_node`, then the UPID in `vm_create_task`), so a retry, a restart or a teardown
   * starts from that record. The VMID (field 11) is recorded only once Proxmox confirmed the VM.
   */
  async syncVm(ctx: StepContext): Promise<StepResult> {
    const { state, request } = ctx;
    this.#requireNode(state);
    if (!state.uuid) {
      const found = await this.#unrecordedGoCreate(ctx);
      if (found) return found;
      // State written by an older provider before it chose a UUID: persist one before creating anything.
      state.uuid = randomUUID();
      return retryAfter(0);
    }
    this.#noteIntent(request.id, state);
    if (state.vmid) {
      const look = await this.#look(this.#recorded(state, 'confirmed'), state, request.id);
      if (look.kind === 'ours') {
        state.node = look.node;
        if (state.createVmid === state.vmid) clearCreateIntent(state);
        this.ledger.release(request.id);
        return done;
      }
      if (look.kind === 'creating') {
        return retryAfter(2_000, `VM ${state.vmid} on node ${look.node} is still being created; waiting for Proxmox to finish it`);
      }
      if (look.kind === 'foreign') {
        ctx.log.warn({ vmid: state.vmid, node: look.node }, 'VMID now belongs to a VM that is not ours; leaving it alone and creating ours again');
      } else {
        ctx.log.warn({ vmid: state.vmid }, 'recorded VM no longer exists in Proxmox; creating it again');
      }
      if (state.createVmid === state.vmid) clearCreateIntent(state);
      state.vmid = 0;
    }
    if (state.createVmid) {
      // A create of ours was recorded but its outcome never confirmed (lost answer, failed task wait, crash, abort).
      const vmid = state.createVmid;
      const look = await this.#look(this.#recorded(state, 'intent'), state, request.id);
      switch (look.kind) {
        case 'ours':
          ctx.log.info({ vmid, node: look.node }, 'adopting existing VM');
          this.#unresolvedSince.delete(`${request.id}/${vmid}`);
          clearCreateIntent(state);
          state.vmid = vmid;
          state.node = look.node;
          this.ledger.release(request.id);
          return done;
        case 'creating':
          return retryAfter(2_000, `VM ${vmid} (this request's create on node ${look.node}) is still being created; waiting for Proxmox to finish it`);
        case 'unknown':
          if (!this.#waitedLongEnough(request.id, vmid)) {
            return retryAfter(
              2_000,
              `the answer to this request's create of VM ${vmid} was lost and no VM is there yet; waiting before creating it again`,
            );
          }
          ctx.log.warn({ vmid }, 'the create whose answer was lost never took effect; creating the VM again');
          break;
        case 'foreign':
          ctx.log.warn({ vmid, node: look.node }, 'the VMID recorded for our create belongs to a VM that is not ours; leaving it alone');
          break;
        case 'absent':
          ctx.log.info({ vmid }, 'the earlier create did not produce a VM; creating it again');
          break;
      }
      this.#unresolvedSince.delete(`${request.id}/${vmid}`);
      clearCreateIntent(state);
    }
    const found = await findRequestVm(this.#pve, request.id, state.uuid, { ignoreCreating: this.#creating });
    if (found.vm) {
      ctx.log.info({ vmid: found.vm.vmid, node: found.vm.node }, 'adopting existing VM');
      state.vmid = found.vm.vmid;
      state.node = found.vm.node;
      this.#pendingSince.delete(request.id);
      this.ledger.release(request.id);
      return done;
    }
    if (found.pending.length > 0) {
      // Creates nobody recorded (another client, or a provider version without write-ahead intent).
      if (!this.#pendingWaitOver(request.id)) {
        return retryAfter(2_000, `waiting for VM(s) ${found.pending.join(', ')} still being created to tell whether one is ours`);
      }
    }
    this.#pendingSince.delete(request.id);

    // Write-ahead: the addresses (and the MACs the create sets) are in the private state before the create call.
    await this.#ensureAddresses(ctx);
    const isoVolid = await this.#bootIsoVolid(ctx);
    // The pool (field 12, the Go provider's): recorded with the create intent, so a teardown knows it.
    state.pool = (await poolForNewVm(this.#pve, request.providerData, request.machineRequestSetId, ctx.log)) ?? '';
    const storages = await storageFacts(this.#pve, state.node);
    const diskStorages = selectDiskStorages(request.providerData, storages, state.node, this.#log);
    // The create occupies its node and every storage it allocates a disk on (PVE allocates under a storage lock).
    const claim = {
      node: state.node,
      storages: [diskStorages.primary, ...diskStorages.additional].map((id) =>
        storageSlot(state.node, id, storages.find((s) => s.storage === id)?.shared === true),
      ),
    };
    const vmid = await this.slots.run(claim, () => this.#create(ctx, diskStorages, isoVolid), ctx.signal);
    state.vmid = vmid;
    clearCreateIntent(state);
    this.ledger.release(request.id);
    ctx.log.info({ vmid, node: state.node }, 'VM created');
    return done;
  }

  async #create(ctx: StepContext, diskStorages: { primary: string; additional: string[] }, isoVolid: string): Promise<number> {
    try {
      return await this.#createAttempts(ctx, diskStorages, isoVolid);
    } finally {
      this.#noteIntent(ctx.request.id, ctx.state);
    }
  }

  /** Keeps `#intents` in step with the request's recorded create intent (field 106). */
  #noteIntent(requestId: string, state: MachineState): void {
    if (state.createVmid) this.#intents.set(requestId, state.createVmid);
    else this.#intents.delete(requestId);
  }

  /** VMIDs a range pick must skip although Proxmox may not list a VM there yet, with why (for messages). */
  #heldVmids(requestId: string, refused: ReadonlyMap<number, string> = new Map()): Map<number, string> {
    const held = new Map(refused);
    for (const id of this.#creating) held.set(id, 'being created by this provider');
    for (const [other, id] of this.#intents) if (other !== requestId && !held.has(id)) held.set(id, `create recorded by request ${other}`);
    return held;
  }

  async #createAttempts(ctx: StepContext, diskStorages: { primary: string; additional: string[] }, isoVolid: string): Promise<number> {
    const { state, request } = ctx;
    const attempts = this.#opts.createAttempts ?? 5;
    const range = vmidRangeOf(request.providerData);
    /** VMIDs of the range Proxmox refused in this run (`already exists`): skipped by the next attempt. */
    const refused = new Map<number, string>();
    let lastError: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      let vmid = 0;
      let sent = false;
      let upid: string;
      // nextid (or the range pick) + POST under one lock: the ID is not reserved until the create wrote `lock: create`.
      const createCall = this.#createChain.then(async () => {
        vmid = range ? await lowestFreeVmid(this.#pve, range, this.#heldVmids(request.id, refused)) : await this.#pve.nextId();
        const params = planVm(request.providerData, {
          requestId: request.id,
          vmid,
          machineRequestSetId: request.machineRequestSetId,
          smbiosUuid: state.uuid,
          isoVolid,
          diskStorages,
          pool: state.pool || undefined,
          nicMacs: Object.fromEntries(state.nicAddresses.map((a) => [a.nic, a.mac])),
        });
        // Write-ahead intent: what is about to be created is in Omni before the call is sent. A failed write
        // rejects here, and nothing is sent.
        state.createVmid = vmid;
        state.createNode = state.node;
        state.vmCreateTask = '';
        await ctx.checkpoint();
        this.#intents.set(request.id, vmid);
        this.#creating.add(vmid);
        sent = true;
        return this.#pve.createVm(state.node, { ...params, vmid });
      });
      this.#createChain = createCall.catch(() => undefined);
      try {
        upid = await createCall;
      } catch (err) {
        this.#creating.delete(vmid);
        if (!sent) {
          // Nothing was sent (nextid, the plan or the checkpoint failed). A recorded intent, if the write got through
          // after all, names a VMID with no VM of ours: a later look settles it.
          clearCreateIntent(state);
          throw err;
        }
        if (err instanceof PveError && /already exists/i.test(err.statusText)) {
          // Someone else holds this VMID: it is not ours and must never be touched. Forget it, then try a fresh one.
          refused.set(vmid, 'taken while this provider was creating');
          clearCreateIntent(state);
          await ctx.checkpoint();
          if (attempt < attempts) {
            ctx.log.warn({ vmid, attempt }, 'VMID taken meanwhile; retrying with a new one');
            lastError = err;
            continue;
          }
          throw err;
        }
        if (createMayHaveHappened(err)) {
          // The create may have happened: the intent stays recorded, and the next run (or a teardown) looks at this
          // VMID on this node before anything else. Never a second VM, never a forgotten one.
          const why = err instanceof PveConnectionError ? err.code : err instanceof PveError ? `${err.status} ${err.statusText}` : String(err);
          throw new StepFailure(`syncVM: the answer to the create call of VM ${vmid} was lost (${why}); will look for the VM before retrying`, {
            transient: true,
            cause: err,
          });
        }
        // Proxmox refused the create: no VM of ours exists at that VMID. Recorded as such when Omni can be reached
        // (otherwise the record is settled by a look later).
        clearCreateIntent(state);
        await ctx.checkpoint().catch(() => undefined);
        throw err;
      }
      try {
        // The UPID is recorded (and kept once the VM exists): a teardown or restart waits for exactly this task.
        // Field 11 is written with it, as the Go provider does (it reads field 7 as "the create of the VM in field
        // 11": once that task succeeded it goes on to startVM with field 11); the create intent (106) stays until
        // the VM is confirmed.
        state.vmCreateTask = upid;
        state.vmid = vmid;
        await ctx.checkpoint();
        try {
          await this.#wait(upid, ctx.signal, true);
        } catch (err) {
          if (err instanceof PveTaskError && !err.vanished) {
            // The create task failed: no VM. Fields 7 and 11 are cleared (the Go provider would otherwise fail on
            // that task forever) and the next run creates again.
            state.vmCreateTask = '';
            state.vmid = 0;
            clearCreateIntent(state);
            await ctx.checkpoint().catch(() => undefined);
          }
          throw err;
        }
      } finally {
        this.#creating.delete(vmid);
      }
      const config = await readConfig(this.#pve, state.node, vmid);
      if (!config) throw new StepFailure(`syncVM: VM ${vmid} vanished right after its create task succeeded`, { transient: true });
      return vmid;
    }
    throw lastError instanceof Error ? lastError : new Error('VM create failed');
  }

  /** The confirmed VM (field 11) or the create intent, with the UPID of its create when field 7 names it. */
  #recorded(state: MachineState, which: 'confirmed' | 'intent'): RecordedVm {
    const vmid = which === 'confirmed' ? state.vmid : state.createVmid;
    const node = (which === 'intent' && state.createNode) || state.node;
    return { vmid, node, confirmed: which === 'confirmed', upid: createTaskOf(state, vmid) };
  }

  /** Whether `upid` is still running; unknown (node unreachable) counts as running, a forgotten task as ended. */
  async #taskRunning(upid: string): Promise<boolean> {
    try {
      return (await this.#pve.taskStatus(upid)).status === 'running';
    } catch (err) {
      if (isNoSuchTask(err)) return false;
      if (err instanceof PveConnectionError || isNodeUnreachable(err) || (err instanceof PveError && [502, 503, 504].includes(err.status))) {
        return true;
      }
      throw err;
    }
  }

  /**
   * One look at a recorded VMID: where it is now (cluster-wide, it may have migrated), whether it is still being
   * created, and whose it is once its config is readable (our SMBIOS UUID, or our name for a state without a UUID).
   */
  async #look(rec: RecordedVm, state: MachineState, requestId: string): Promise<VmLook> {
    const located = await locateVm(this.#pve, rec.vmid);
    const node = located?.node ?? rec.node;
    const config = node ? await readConfig(this.#pve, node, rec.vmid) : undefined;
    if (!config) {
      if (rec.upid === undefined) return rec.confirmed ? { kind: 'absent' } : { kind: 'unknown' };
      return (await this.#taskRunning(rec.upid)) ? { kind: 'creating', node, taskRunning: true } : { kind: 'absent' };
    }
    if (config.lock === 'create') {
      return { kind: 'creating', node, taskRunning: rec.upid === undefined ? undefined : await this.#taskRunning(rec.upid) };
    }
    const ours = state.uuid ? smbiosUuidOf(config) === state.uuid.toLowerCase() : config.name === requestId;
    return ours ? { kind: 'ours', node, config } : { kind: 'foreign', node };
  }

  /** True once this process has seen the create `request/vmid` unresolved for the pending-create bound. */
  #waitedLongEnough(requestId: string, vmid: number): boolean {
    const key = `${requestId}/${vmid}`;
    const since = this.#unresolvedSince.get(key) ?? this.#clock.now();
    this.#unresolvedSince.set(key, since);
    return this.#clock.now() - since >= (this.#opts.pendingCreateWaitMs ?? 60_000);
  }

  /**
   * For a teardown: settles a recorded VMID into ours / foreign / absent. A VM still being created is waited for
   * (bounded by `pendingCreateWaitMs`): our own create task (by its recorded UPID) is then stopped; a VM that cannot be
   * identified yet makes this throw, so the teardown is retried and the finalizer stays until it can be.
   */
  async #settleForTeardown(
    rec: RecordedVm,
    state: MachineState,
    requestId: string,
    log: Logger,
    signal: AbortSignal | undefined,
  ): Promise<{ kind: 'ours'; node: string; config: Record<string, unknown> } | { kind: 'foreign'; node: string } | { kind: 'absent' }> {
    const bound = this.#opts.pendingCreateWaitMs ?? 60_000;
    const key = `${requestId}/${rec.vmid}`;
    let announced = false;
    let stopped = false;
    for (;;) {
      signal?.throwIfAborted();
      const look = await this.#look(rec, state, requestId);
      if (look.kind === 'ours' || look.kind === 'foreign' || look.kind === 'absent') {
        this.#unresolvedSince.delete(key);
        return look;
      }
      const since = this.#unresolvedSince.get(key) ?? this.#clock.now();
      this.#unresolvedSince.set(key, since);
      const remaining = bound - (this.#clock.now() - since);
      if (!announced) {
        announced = true;
        if (look.kind === 'creating') {
          log.info({ vmid: rec.vmid, node: look.node, task: rec.upid }, 'VM of this request is still being created; waiting for it before deleting it');
        } else {
          log.info({ vmid: rec.vmid, node: rec.node }, 'create of this request whose answer was lost; waiting to see whether its VM appears');
        }
      }
      if (remaining <= 0) {
        if (look.kind === 'unknown') {
          log.info({ vmid: rec.vmid }, 'no VM appeared at the VMID of the create whose answer was lost; it never took effect');
          this.#unresolvedSince.delete(key);
          return { kind: 'absent' };
        }
        if (rec.upid !== undefined && look.taskRunning === true && !stopped) {
          // Our own create (by its recorded UPID), still running after the bound: stop it. Proxmox then removes the
          // half-created VM, or leaves it for the next look to identify and delete.
          stopped = true;
          log.warn({ vmid: rec.vmid, node: look.node, waitedMs: bound }, 'create task of this request did not finish; stopping it');
          try {
            await this.#pve.stopTask(rec.upid);
            await this.#wait(rec.upid, signal).catch((err: unknown) => {
              if (signal?.aborted) throw err;
            });
          } catch (err) {
            if (signal?.aborted) throw err;
            log.warn({ err: err instanceof Error ? err.message : String(err) }, 'stopping the create task failed');
          }
          continue;
        }
        throw new Error(
          `VM ${rec.vmid} on node ${look.node} is still being created (lock: create) and cannot be identified yet; ` +
            'the machine request is released only once it is known whether that VM is ours',
        );
      }
      if (look.kind === 'creating' && rec.upid !== undefined && look.taskRunning !== false) {
        try {
          await waitForTask(this.#pve, rec.upid, { ...this.#opts.taskWait, signal, logger: this.#log, deadlineMs: remaining });
        } catch (err) {
          if (signal?.aborted) throw err;
          // Failed, vanished or still running: the next look tells what is there.
        }
      } else {
        await this.#clock.sleep(Math.min(1_000, remaining), signal);
      }
    }
  }

  /** The VM of this state if it still exists and is ours (same SMBIOS UUID); updates `state.node` if it moved. */
  async #findByVmid(state: MachineState, requestId: string): Promise<{ node: string; config: Record<string, unknown> } | undefined> {
    const located = await locateVm(this.#pve, state.vmid);
    const node = located?.node ?? state.node;
    const config = await readConfig(this.#pve, node, state.vmid);
    if (!config) return undefined;
    // Ours means: our SMBIOS UUID, or (state from before a UUID was recorded) our name.
    const ours = state.uuid ? smbiosUuidOf(config) === state.uuid.toLowerCase() : config.name === requestId;
    if (!ours) {
      this.#log.warn({ vmid: state.vmid, node }, 'VMID now belongs to a VM that is not ours; leaving it alone');
      return undefined;
    }
    state.node = node;
    return { node, config };
  }

  /** Delivers the join config over NoCloud (seed ISO on ide0) and starts the VM. */
  async startVm(ctx: StepContext): Promise<StepResult> {
    const { state, request } = ctx;
    if (!state.vmid) throw new StepFailure('startVM: no VM recorded for this request; syncVM must run first');
    const vm = await this.#findByVmid(state, request.id);
    if (!vm) {
      state.vmid = 0;
      throw new StepFailure(`startVM: VM is gone from Proxmox; it will be created again`, { transient: true });
    }
    const status = await this.#pve.vmStatus(state.node, state.vmid);
    if (status.status === 'running') return done;

    if (!state.isoStorage) state.isoStorage = await this.#isos.chooseIsoStorage(state.node);
    const hostnameMode = request.providerData.hostname === 'request-id' ? 'request-id' : (this.#opts.hostname ?? 'none');
    const networkConfig = await this.#networkConfig(ctx);
    await this.#searchDomains(ctx);
    const seed = buildNoCloudSeed({
      userData: ctx.joinConfig,
      instanceId: state.uuid || request.id,
      ...(hostnameMode === 'request-id' ? { hostname: request.id } : {}),
      ...(networkConfig !== undefined ? { networkConfig } : {}),
    });
    const seedVolume = await this.#seedVolumeFor(ctx, vm.config);
    if (state.seedVolume && state.seedVolume !== seedVolume) {
      // An earlier attempt's seed under another name (this request's VM was created again under a new VMID): removed
      // first, once its upload ended, by the rules of a teardown.
      await this.#settleSeedUpload(state, request.id, ctx.log, ctx.signal);
      const old = await this.#recordedSeed(state, new Set([state.vmid]), ctx.log);
      if (old) await this.#isos.removeSeeds({ nodeHint: state.seedNode || state.node, storage: old.storage, names: [old.name], log: ctx.log });
    }
    // Record before writing: the seed volume and its node before the upload, with field 109 saying that an upload is
    // on its way (until Proxmox answers, a teardown cannot tell whether one runs), then the upload's UPID once answered.
    const { storage: seedStorage, name: filename } = parseIsoVolid(seedVolume)!;
    state.seedVolume = seedVolume;
    state.seedNode = state.node;
    state.seedUploadTask = SEED_UPLOAD_UNANSWERED;
    await ctx.checkpoint();
    try {
      state.seedVolume = await this.#isos.uploadSeed({
        node: state.node,
        storage: seedStorage,
        filename,
        data: seed,
        signal: ctx.signal,
        onStarted: async (upid) => {
          state.seedUploadTask = upid;
          await ctx.checkpoint();
        },
      });
    } catch (err) {
      if (state.seedUploadTask === SEED_UPLOAD_UNANSWERED && !createMayHaveHappened(err)) {
        // Proxmox refused the upload: none runs. Recorded as such when Omni can be reached.
        state.seedUploadTask = '';
        await ctx.checkpoint().catch(() => undefined);
      }
      throw err;
    }
    state.seedUploadTask = '';

    const desired = formatPropertyString({ file: state.seedVolume, media: 'cdrom' }, formats.ide);
    const config = await this.#pve.vmConfig(state.node, state.vmid);
    if (!isAttached(config[SEED_ISO_SLOT], state.seedVolume)) {
      // The Go provider's seed of this VM in ide0 (it stopped between its CloudInit and its start) on another storage:
      // replaced by ours, then removed, since only this VM's config linked to it.
      const replaced = attachedSeeds({ [SEED_ISO_SLOT]: config[SEED_ISO_SLOT] }, state.vmid, request.id).filter(
        (a) => a.name === goSeedFileName(state.vmid) && `${a.storage}:iso/${a.name}` !== state.seedVolume,
      );
      // Only ide0 changes (and the tag go-proxmox's VM delete looks for); the boot order stays as created (the seed is
      // data, not a boot device).
      await this.#attachSeed(ctx, config, desired);
      for (const r of replaced) {
        // Best effort: once ide0 holds ours, a retry no longer knows the replaced file (`seeds orphaned` lists it).
        await this.#isos.removeSeeds({ nodeHint: state.node, storage: r.storage, names: [r.name], log: ctx.log }).catch((err: unknown) => {
          ctx.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not remove the replaced seed ISO');
        });
      }
    }
    const release = await this.slots.acquire({ node: state.node }, ctx.signal);
    try {
      const upid = await this.#pve.startVm(state.node, state.vmid);
      // Field 8 is recorded as soon as Proxmox answered and kept once the VM runs, as the Go provider does: its
      // startVM reads a non-empty field 8 as "started, look at that task" and otherwise injects its seed and starts
      // again (a start of a running VM fails, and it would fail on that task forever).
      state.vmStartTask = upid;
      await ctx.checkpoint();
      await this.#wait(upid, ctx.signal, true);
    } catch (err) {
      if (err instanceof PveTaskError && /already running/i.test(err.exitstatus)) {
        state.vmStartTask = '';
        return done;
      }
      if (err instanceof PveTaskError && !err.vanished) {
        state.vmStartTask = '';
        await ctx.checkpoint().catch(() => undefined);
      }
      throw err;
    } finally {
      release();
    }
    ctx.log.info({ vmid: state.vmid, node: state.node }, 'VM started');
    return done;
  }

  /**
   * Where this request's seed goes: `user-data-<vmid>.iso` on the ISO storage, the name go-proxmox gives the Go
   * provider's seed. With the VM tagged `go-proxmox+cloud-init` (see #attachSeed), the Go provider's VM delete removes
   * that file with the VM, so a rollback leaves no seed of ours behind. A file of that name that is neither recorded
   * as this request's nor held by this VM (an earlier, unrelated VM with this VMID left it) is never overwritten: the
   * seed is then named after the request (`omni-seed-<request>.iso`, which only our teardown or `seeds orphaned`
   * removes). An earlier attempt's choice is kept.
   */
  async #seedVolumeFor(ctx: StepContext, config: Record<string, unknown>): Promise<string> {
    const { state, request } = ctx;
    const byVmid = `${state.isoStorage}:iso/${goSeedFileName(state.vmid)}`;
    const byRequest = `${state.isoStorage}:iso/${seedIsoFileName(request.id)}`;
    if (state.seedVolume === byVmid || state.seedVolume === byRequest) return state.seedVolume;
    // This VM's own seed from the Go provider (it stopped between its seed and its start): the same request's file.
    if (cdromIsos(config).some((iso) => `${iso.storage}:iso/${iso.name}` === byVmid)) return byVmid;
    const content = await this.#pve.storageContent(state.node, state.isoStorage, { content: 'iso' });
    if (!content.some((c) => c.volid === byVmid)) return byVmid;
    ctx.log.warn(
      { volume: byVmid, seed: byRequest },
      "a seed ISO named after this VMID is already on the storage and is not this request's; it is left alone and the seed is named after the request",
    );
    return byRequest;
  }

  /**
   * Points ide0 at the seed. A seed named after the VMID also gets the VM tag `go-proxmox+cloud-init`, in the same
   * config update: go-proxmox's VM delete looks for that tag before it removes `user-data-<vmid>.iso`. A token that may
   * not set that tag (a registered tag, or `user-tag-access`) still gets its seed attached, with a warning: that seed
   * then outlives the VM after a rollback to the Go provider, until `seeds orphaned --delete`.
   */
  async #attachSeed(ctx: StepContext, config: Record<string, unknown>, drive: string): Promise<void> {
    const { state } = ctx;
    const params: Record<string, string> = { [SEED_ISO_SLOT]: drive };
    const tags = splitTags(typeof config['tags'] === 'string' ? config['tags'] : undefined);
    if (isoFileName(state.seedVolume) === goSeedFileName(state.vmid) && !tags.includes(GO_SEED_TAG)) {
      params['tags'] = [...tags, GO_SEED_TAG].join(';');
    }
    try {
      await this.#pve.setVmConfig(state.node, state.vmid, params);
    } catch (err) {
      // pve-guest-common `assert_tag_permissions`: "Permission check failed (/, Sys.Modify for modifying tag '<tag>')".
      // It is raised inside the VM's config lock; matched on the text, whatever the status (403, or the 500 the
      // simulator answers for an error inside the lock).
      if (params['tags'] === undefined || !(err instanceof PveError) || !/for modifying tag/i.test(err.message)) throw err;
      ctx.log.warn(
        { tag: GO_SEED_TAG, err: err.message },
        "the token may not set the VM tag go-proxmox+cloud-init: after a rollback to the Go provider, its teardown will not remove this VM's seed ISO (seeds orphaned lists it)",
      );
      await this.#pve.setVmConfig(state.node, state.vmid, { [SEED_ISO_SLOT]: drive });
    }
  }

  /** Lets a recorded seed upload end (or stops it, bounded), so that its file cannot appear after it was removed. */
  async #settleSeedUpload(state: MachineState, requestId: string, log: Logger, signal: AbortSignal | undefined): Promise<void> {
    if (state.seedUploadTask === SEED_UPLOAD_UNANSWERED) {
      // An upload was sent and its answer lost (or the process died first): its task, if Proxmox started one, is not
      // known. Give it the pending-create bound to finish before the seed is removed, so that it cannot appear after.
      await this.#waitForUnansweredUpload(requestId, log, signal);
    } else if (state.seedUploadTask) {
      await this.#finishOrStop(state.seedUploadTask, log, signal);
    }
  }

  /**
   * The seed the private state records (field 101), when it may be removed by its volume ID. One named after a VMID N
   * (`user-data-N.iso`, go-proxmox's name and ours) unless another VM now holds VMID N and uses that very file (a drive
   * slot of its config names it): go-proxmox uploads over a file of that name for its VM N. Ours
   * never does (see #seedVolumeFor: a file of that name it did not record makes it use the request's name), and the
   * teardown removes the seed while our VM still holds N; a file of ours no VM N uses is ours to remove.
   */
  async #recordedSeed(state: MachineState, ourVmids: ReadonlySet<number>, log: Logger): Promise<{ storage: string; name: string } | undefined> {
    const seed = parseIsoVolid(state.seedVolume);
    if (!seed) return undefined;
    const byVmid = VMID_SEED_PATTERN.exec(seed.name);
    if (byVmid && !ourVmids.has(Number(byVmid[1]))) {
      const vmid = Number(byVmid[1]);
      const holder = await locateVm(this.#pve, vmid);
      // GET .../config answers the pending values where there are any.
      const config = holder?.node ? await readConfig(this.#pve, holder.node, vmid) : undefined;
      if (config && isoVolumesOf(config).includes(state.seedVolume)) {
        log.warn({ volume: state.seedVolume, vmid }, "the recorded seed's VMID now belongs to a VM that is not this request's and uses that file; its seed ISO is left alone");
        return undefined;
      }
    }
    return seed;
  }

  /**
   * The seed's network-config for a request with static addresses (undefined: the default, DHCP everywhere). Each
   * NIC is matched by the MAC its netN has in the VM's config: the one this provider set at create, or, for a VM
   * created before the request had addresses, the one Proxmox chose.
   */
  async #networkConfig(ctx: StepContext): Promise<string | undefined> {
    const nics = staticNics(ctx.request.providerData);
    if (nics.length === 0) return undefined;
    await this.#ensureAddresses(ctx);
    const config = await this.#pve.vmConfig(ctx.state.node, ctx.state.vmid);
    const macOf = (nic: number): string | undefined => {
      const value = config[`net${nic}`];
      if (typeof value !== 'string') return undefined;
      try {
        return parsePropertyString(value, formats.net).macaddr;
      } catch {
        return undefined;
      }
    };
    const networks = nicNetworks(nics, ctx.state.nicAddresses, macOf);
    ctx.log.info({ addresses: describeAddresses(ctx.state.nicAddresses) }, 'seed network-config with static addresses');
    return renderNetworkConfig(networks);
  }

  /** The pools' search domains as a machine-config patch (Talos ignores them in network-config). */
  async #searchDomains(ctx: StepContext): Promise<void> {
    const patch = searchDomainsPatch(staticNics(ctx.request.providerData), ctx.request.talosVersion);
    if (patch === undefined) return;
    if (patch === 'tooOld') {
      ctx.log.warn({ talosVersion: ctx.request.talosVersion }, 'search_domains need Talos 1.9 or later (machine.network.searchDomains); not applied');
      return;
    }
    if (!ctx.createConfigPatch) return;
    // One patch per request: its ID is the request's, so two requests never share one.
    await ctx.createConfigPatch(`${ctx.request.id}-${patch.name}`, patch.data);
  }

  /** What the machine request status shows besides the step: the static addresses, once allocated. */
  statusNote(state: MachineState): string {
    return describeAddresses(state.nicAddresses);
  }

  /**
   * Removes what the request's record names: the confirmed VM (field 11), the VM of a recorded create (write-ahead
   * intent, waited for while Proxmox is still creating it), any VM carrying our name and SMBIOS UUID, and the seed
   * ISO (after its recorded upload finished). VMs that turn out to carry another identity are never touched. Throws
   * while a VM that may be ours cannot be identified yet: the caller keeps the finalizer and retries.
   */
  async deprovision(ctx: DeprovisionContext): Promise<void> {
    const { state, requestId, log } = ctx;
    this.ledger.release(requestId);
    this.#pendingSince.delete(requestId);
    const targets = new Map<number, string>();
    /** Configs read while settling (the VM's identity was checked on them): its seed slots are read from them. */
    const configs = new Map<number, Record<string, unknown>>();
    const recorded: RecordedVm[] = [];
    if (state.vmid) recorded.push(this.#recorded(state, 'confirmed'));
    if (state.createVmid && state.createVmid !== state.vmid) recorded.push(this.#recorded(state, 'intent'));
    for (const rec of recorded) {
      const settled = await this.#settleForTeardown(rec, state, requestId, log, ctx.signal);
      if (settled.kind === 'ours') {
        targets.set(rec.vmid, settled.node);
        configs.set(rec.vmid, settled.config);
      } else if (settled.kind === 'foreign') {
        log.warn({ vmid: rec.vmid, node: settled.node }, 'VMID now belongs to a VM that is not ours; leaving it alone');
      }
    }
    if (state.uuid && configs.size === 0) {
      // Also by name + SMBIOS UUID: a VM of ours nothing recorded (a provider version without write-ahead intent).
      // Not needed when a recorded VMID already holds the VM with this UUID: the request has one VM.
      const found = await findRequestVm(this.#pve, requestId, state.uuid);
      if (found.vm && !targets.has(found.vm.vmid)) targets.set(found.vm.vmid, found.vm.node);
    } else if (!state.vmid && !state.createVmid && state.volumeId) {
      // A Go-written state past uploadISO without a UUID: the Go provider may have been stopped between its create call
      // and its record (see syncVm). Its VM is found by name, SMBIOS UUID present and this request's Talos ISO.
      const left = await findUnrecordedCreates(this.#pve, requestId, state.volumeId, { ignoreCreating: this.#creating });
      if (left.vms.length === 0 && left.pending.length > 0 && !this.#pendingWaitOver(`teardown/${requestId}`)) {
        throw new Error(`waiting for VM(s) ${left.pending.join(', ')} still being created to tell whether one is this request's`);
      }
      this.#pendingSince.delete(`teardown/${requestId}`);
      for (const vm of left.vms) {
        log.warn({ vmid: vm.vmid, node: vm.node }, 'found a VM an earlier provider created for this request without recording it; deleting it');
        targets.set(vm.vmid, vm.node);
      }
    }
    if (state.haRegistered) {
      // The HA resource goes first (the Go provider's order): with it gone, HA neither restarts the VM being shut down
      // nor moves it; then the VM is looked up again, in case HA had moved it meanwhile.
      for (const [vmid, node] of targets) {
        await this.#ha.teardown(vmid, log);
        targets.set(vmid, (await locateVm(this.#pve, vmid))?.node ?? node);
      }
      if (targets.size > 0) state.haRegistered = false;
    }
    // Seeds attached to the VMs about to be deleted: read from their CD-ROM slots first, removed once the VM is gone.
    // A file is removed only when the VM's own config points at it and it is a seed (the Go provider's
    // `user-data-<that VMID>.iso`, or ours): never because of its name alone.
    const attached: Array<{ node: string; storage: string; name: string }> = [];
    for (const [vmid, node] of targets) {
      const config = configs.get(vmid) ?? (await readConfig(this.#pve, node, vmid));
      if (config) for (const v of attachedSeeds(config, vmid, requestId)) attached.push({ node, ...v });
    }
    if (targets.size === 0) log.info({ vmid: state.vmid || state.createVmid || undefined }, 'no VM of this request exists; nothing to delete');
    // Our seed upload may still be running: it ends (or is stopped) before anything is removed, so that no file
    // appears after its removal, and while our VM still holds the VMID the seed is named after.
    await this.#settleSeedUpload(state, requestId, log, ctx.signal);
    // The seeds go before the VMs, once the VMs are stopped: a seed named after a VMID is removed while our VM still
    // holds that VMID, so a VM created meanwhile under the same VMID (ours or the Go provider's) can never be holding
    // a file of that name we are about to remove. A seed that cannot be removed fails the teardown before the VM is
    // deleted; the retry finds both again.
    for (const [vmid, node] of targets) await this.#stopForTeardown(node, vmid, log, ctx.signal);
    // What is removed: the seeds the VMs' CD-ROM slots hold (Go's or ours: never a file because of its name alone),
    // ours by its recorded volume (a VMID-named one unless another VM with that VMID uses it, see #recordedSeed), and
    // by the name earlier versions gave every seed (`omni-seed-<request>.iso`, also the fallback name). One listing
    // per storage (and node).
    const vmNode = targets.size > 0 ? [...targets.values()][0] : undefined;
    const nodeHint = state.seedNode || vmNode || state.node;
    const wanted = new Map<string, { nodeHint: string; storage: string; names: Set<string> }>();
    const want = (node: string, storage: string, name: string): void => {
      const key = `${node}/${storage}`;
      const entry = wanted.get(key) ?? { nodeHint: node, storage, names: new Set<string>() };
      entry.names.add(name);
      wanted.set(key, entry);
    };
    for (const a of attached) want(a.node, a.storage, a.name);
    const recordedSeed = await this.#recordedSeed(state, new Set(targets.keys()), log);
    if (recordedSeed) want(nodeHint, recordedSeed.storage, recordedSeed.name);
    if (state.isoStorage) want(nodeHint, state.isoStorage, seedIsoFileName(requestId));
    const seedFailures: string[] = [];
    for (const w of wanted.values()) {
      try {
        await this.#isos.removeSeeds({ nodeHint: w.nodeHint, storage: w.storage, names: [...w.names], log });
      } catch (err) {
        seedFailures.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (seedFailures.length > 0) {
      throw new Error(`${seedFailures.join('; ')}; the machine request is released once its seed ISO is removed (its VM is deleted after it)`);
    }
    for (const [vmid, node] of targets) await this.#destroyVm(node, vmid, log, ctx.signal);
    // The VM is gone: its pool goes too when the Go provider created it and nothing is left in it (field 12).
    if (state.pool) await removeEmptyGoPool(this.#pve, state.pool, log);
    // Only now: until the teardown settled it, a recorded create of this request may still produce its VM.
    this.#intents.delete(requestId);
    // The VM is gone: its addresses are free once the private state is destroyed (until then the listing holds them).
    this.addresses.release(requestId);
    if (state.nicAddresses.length > 0) log.info({ addresses: describeAddresses(state.nicAddresses) }, 'static addresses released with the VM');
  }

  /** Waits out the pending-create bound (counted from when this process first saw it) for an upload of unknown task. */
  async #waitForUnansweredUpload(requestId: string, log: Logger, signal: AbortSignal | undefined): Promise<void> {
    const key = `${requestId}/seed upload`;
    const since = this.#unresolvedSince.get(key) ?? this.#clock.now();
    this.#unresolvedSince.set(key, since);
    const remaining = (this.#opts.pendingCreateWaitMs ?? 60_000) - (this.#clock.now() - since);
    if (remaining > 0) {
      log.info({ waitMs: remaining }, 'seed upload of this request whose answer was lost; waiting for it before removing the seed');
      await this.#clock.sleep(remaining, signal);
      signal?.throwIfAborted();
    }
    this.#unresolvedSince.delete(key);
  }

  /** Waits for a task of ours (bounded by `pendingCreateWaitMs`), then stops it if it still runs. */
  async #finishOrStop(upid: string, log: Logger, signal: AbortSignal | undefined): Promise<void> {
    try {
      await waitForTask(this.#pve, upid, { ...this.#opts.taskWait, signal, logger: this.#log, deadlineMs: this.#opts.pendingCreateWaitMs ?? 60_000 });
      return;
    } catch (err) {
      if (signal?.aborted) throw err;
      if (!(err instanceof PveTaskTimeoutError)) return; // failed or forgotten: it writes nothing more
    }
    log.warn({ task: upid }, 'task of this request did not finish; stopping it');
    await this.#pve.stopTask(upid);
    await this.#wait(upid, signal).catch((err: unknown) => {
      if (signal?.aborted) throw err;
    });
  }

  /** A clean (ACPI) shutdown within `timeout` seconds; false when it failed (the caller then stops the VM hard). */
  async #shutDown(node: string, vmid: number, timeout: number, log: Logger, signal?: AbortSignal): Promise<boolean> {
    try {
      const upid = await this.#pve.shutdownVm(node, vmid, { timeout });
      await waitForTask(this.#pve, upid, { ...this.#opts.taskWait, signal, deadlineMs: (timeout + 30) * 1000, durations: this.taskDurations });
      log.info({ vmid, node }, 'VM shut down');
      return true;
    } catch (err) {
      if (signal?.aborted) throw err;
      log.warn({ vmid, node, err: err instanceof Error ? err.message : String(err) }, 'graceful shutdown failed; stopping');
      return false;
    }
  }

  async #destroyVm(node: string, vmid: number, log: Logger, signal?: AbortSignal): Promise<void> {
    if (!(await this.#stopForTeardown(node, vmid, log, signal))) return;
    try {
      await this.slots.run(
        { node },
        async () => {
          const upid = await this.#pve.deleteVm(node, vmid, { purge: true, destroyUnreferencedDisks: true });
          await this.#wait(upid, signal, true);
        },
        signal,
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    log.info({ vmid, node }, 'VM deleted');
  }

  /** Stops a VM of this request for its teardown (hard, or after an ACPI shutdown when configured); false: it is gone. */
  async #stopForTeardown(node: string, vmid: number, log: Logger, signal?: AbortSignal): Promise<boolean> {
    const status = await this.#pve.vmStatus(node, vmid).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (!status) return false;
    if (status.status === 'running') {
      const timeout = this.#opts.shutdownTimeoutSec ?? 0;
      if (!(timeout > 0 && (await this.#shutDown(node, vmid, timeout, log, signal)))) {
        await this.slots.run(
          { node },
          async () => {
            const upid = await this.#pve.stopVm(node, vmid, { overruleShutdown: true });
            await this.#wait(upid, signal, true);
          },
          signal,
        );
      }
    }
    return true;
  }

  /**
   * Proxmox answers and at least one node is online. Trusts recent traffic instead of probing: when Proxmox answered a
   * call within `freshMs`, no call failed since (unreachable, 5xx), and a node list read within `nodesFreshMs` showed
   * a node online, no call is made (a busy provider would otherwise add calls every heartbeat); else one `GET /nodes`
   * (it needs a reachable API and a valid credential, like every other call).
   */
  async healthCheck(freshMs = 10_000, nodesFreshMs = 60_000): Promise<void> {
    const now = Date.now();
    const seen = this.#pve.lastNodes;
    const { lastOkAtMs, lastFailAtMs } = this.#pve;
    if (now - lastOkAtMs < freshMs && lastOkAtMs > lastFailAtMs && seen && now - seen.atMs < nodesFreshMs && seen.nodes.some((n) => n.status === 'online')) return;
    let nodes;
    try {
      nodes = await this.#pve.nodes();
    } catch (err) {
      throw new Error(toStepFailure('pickNode', err).message.replace(/^pickNode: /, 'Proxmox: '));
    }
    const online = nodes.filter((n) => n.status === 'online');
    if (online.length === 0) {
      throw new Error(`Proxmox: no node is online (${nodes.map((n) => `${n.node}: ${n.status}`).join(', ') || 'no nodes visible'})`);
    }
  }

  /**
   * For a state the Go provider wrote past uploadISO (field 4 set, no UUID): the Go provider chooses the UUID inside
   * syncVM and records it only after its create call returned, so a Go provider stopped in between left a VM nothing
   * records. Finds it (named after the request, an SMBIOS UUID, booting the Talos ISO field 4 names) and adopts it:
   * its UUID, VMID and node are recorded and `done` returned. A retry while unidentified creates are still running
   * (bounded by the pending-create wait), a permanent failure when several VMs fit; undefined when there is none.
   */
  async #unrecordedGoCreate(ctx: StepContext): Promise<StepResult | undefined> {
    const { state, request } = ctx;
    if (state.uuid || state.vmid || state.createVmid || !state.volumeId) return undefined;
    const left = await findUnrecordedCreates(this.#pve, request.id, state.volumeId, { ignoreCreating: this.#creating });
    if (left.vms.length > 1) {
      throw new StepFailure(
        `VMs ${left.vms.map((v) => `${v.vmid} (${v.node})`).join(', ')} are all named after this request and boot its Talos ISO, ` +
          'but no private state records any of them: delete the extra ones in Proxmox (keep one) and the request resumes',
      );
    }
    if (left.vms.length === 1) {
      const vm = left.vms[0]!;
      ctx.log.warn({ vmid: vm.vmid, node: vm.node }, 'found the VM an earlier provider created for this request without recording it; adopting it');
      this.#pendingSince.delete(request.id);
      state.uuid = vm.uuid;
      state.vmid = vm.vmid;
      state.node = vm.node;
      this.ledger.release(request.id);
      return done;
    }
    if (left.pending.length > 0 && !this.#pendingWaitOver(request.id)) {
      return retryAfter(2_000, `waiting for VM(s) ${left.pending.join(', ')} still being created to tell whether one is this request's`);
    }
    this.#pendingSince.delete(request.id);
    return undefined;
  }

  /** Whether the pending-create bound has passed since this process first waited for unidentified creates for `key`. */
  #pendingWaitOver(key: string): boolean {
    const since = this.#pendingSince.get(key) ?? this.#clock.now();
    this.#pendingSince.set(key, since);
    return this.#clock.now() - since >= (this.#opts.pendingCreateWaitMs ?? 60_000);
  }

  #requireNode(state: MachineState): void {
    if (!state.node) throw new StepFailure('no node recorded for this request; pickNode must run first');
  }
}

/** The request's `vmid_range`, parsed (validation already refused a malformed one). */
function vmidRangeOf(data: { vmid_range?: string | undefined }): VmidRange | undefined {
  if (data.vmid_range === undefined) return undefined;
  const range = parseVmidRange(data.vmid_range);
  if (typeof range === 'string') throw new ProviderDataError(`provider data: vmid_range: ${JSON.stringify(data.vmid_range)}: ${range}`, 'vmid_range');
  return range;
}

/**
 * The seed ISOs a VM's CD-ROM slots (ide/sata/scsi) hold: the Go provider's `user-data-<vmid>.iso` of this very VM, or
 * our `omni-seed-<request>.iso` of this request. The boot ISO (a shared cache) and anything else are not seeds.
 */
export function attachedSeeds(config: Record<string, unknown>, vmid: number, requestId: string): Array<{ storage: string; name: string }> {
  return cdromIsos(config).filter((iso) => iso.name === goSeedFileName(vmid) || iso.name === seedIsoFileName(requestId));
}

/** Whether a drive value (`<volid>,media=cdrom[,size=..]`) has `volid` in its CD drive. */
function isAttached(value: string | number | undefined, volid: string): boolean {
  if (typeof value !== 'string') return false;
  try {
    const drive = parsePropertyString(value, formats.ide);
    return drive.file === volid && drive.media === 'cdrom';
  } catch {
    return false;
  }
}
