// The Proxmox half of provisioning: the five Go-compatible steps (pickNode, createSchematic, uploadISO, syncVM,
// startVM), deprovision and the health check. Every step is idempotent: it first looks for what an earlier run
// (of this process or another) already did and adopts it.
import { randomUUID } from 'node:crypto';
import { SelectorError } from '../cel/index.js';
import type { Logger } from '../log.js';
import type { PveClient } from '../proxmox/client.js';
import {
  isAuthError,
  isNodeUnreachable,
  isNotFound,
  isPermissionError,
  PveConnectionError,
  PveError,
  PveTaskError,
  PveTaskTimeoutError,
} from '../proxmox/errors.js';
import { buildNoCloudSeed, seedIsoFileName } from '../proxmox/nocloud.js';
import { formatPropertyString, formats, parsePropertyString } from '../proxmox/propertyString.js';
import { waitForTask, type TaskResult, type WaitForTaskOptions } from '../proxmox/tasks.js';
import { findRequestVm, locateVm, nodeSnapshots, readConfig, smbiosUuidOf, storageFacts } from './cluster.js';
import { PlacementError, ProviderDataError, VmPlanError } from './errors.js';
import { IsoStore } from './isoStore.js';
import type { MachineState } from './machineState.js';
import { DiskStorageError, selectDiskStorages } from './diskStorages.js';
import { InFlightLedger, pickNode, placementRequest } from './pickNode.js';
import { planVm, SEED_ISO_SLOT } from './planVm.js';
import { validateRequest } from './validateRequest.js';
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
  /** Seconds a guest gets to shut down before it is stopped hard (default 60). */
  shutdownTimeoutSec?: number;
  /** How often a VMID collision is retried with a fresh ID (default 5). */
  createAttempts?: number;
  /** How often a failed ISO download is retried within one step run (default 3). */
  downloadAttempts?: number;
  /** Task polling overrides (tests use a fast schedule) and an observer of finished waits (metrics). */
  taskWait?: Pick<WaitForTaskOptions, 'pollSchedule' | 'clock' | 'onFinished'>;
  /** How long to wait for unidentified VMs in `lock: create` before concluding ours does not exist (default 60 s). */
  pendingCreateWaitMs?: number;
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
  readonly #pve: PveClient;
  readonly #images: ImageService;
  readonly #log: Logger;
  readonly #opts: ProxmoxProvisionerOptions;
  readonly #isos: IsoStore;
  /** VMIDs this process is creating right now (their `lock: create` is ours, not an unknown create). */
  readonly #creating = new Set<number>();
  /** Serialises nextid + create inside this process: Proxmox does not reserve the ID it hands out. */
  #createChain: Promise<unknown> = Promise.resolve();
  /** When each request first saw unidentified pending creates (bounded wait). */
  readonly #pendingSince = new Map<string, number>();

  constructor(opts: ProxmoxProvisionerOptions) {
    this.#opts = opts;
    this.#pve = opts.pve;
    this.#images = opts.images;
    this.#log = opts.log;
    this.ledger = opts.ledger ?? new InFlightLedger();
    this.#isos = new IsoStore(opts.pve, this.#wait.bind(this));
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
    ];
  }

  #wait(upid: string, signal?: AbortSignal): Promise<TaskResult> {
    return waitForTask(this.#pve, upid, { ...this.#opts.taskWait, signal, logger: this.#log });
  }

  /** Chooses the node (once; kept while it is usable) and the SMBIOS UUID, so both are persisted before syncVM. */
  async pickNode(ctx: StepContext): Promise<StepResult> {
    const { request, state } = ctx;
    const data = request.providerData;
    if (!state.uuid) state.uuid = randomUUID();
    if (state.vmid) return done; // the VM exists; its node is where it is
    // Before anything is downloaded or created: refuse (permanently, naming the field) what Proxmox would refuse.
    const checked = await validateRequest(this.#pve, request, ctx.log);
    const snapshots = await nodeSnapshots(this.#pve, {
      setId: request.machineRequestSetId,
      needPciMappings: data.pci_devices.length > 0,
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
    const image = await this.#images.bootImage(state.schematic, state.talosVersion || ctx.request.talosVersion, this.#opts.arch ?? 'amd64');
    if (!state.isoStorage) state.isoStorage = await this.#isos.chooseIsoStorage(state.node);
    state.volumeId = await this.#isos.ensureDownloaded({
      node: state.node,
      storage: state.isoStorage,
      url: image.url,
      filename: `${image.cacheKey}.iso`,
      attempts: this.#opts.downloadAttempts ?? 3,
      log: ctx.log,
      signal: ctx.signal,
    });
    state.volumeUploadTask = '';
    return done;
  }

  /** Creates the VM, or adopts the one an earlier run created. Records the VMID only once Proxmox confirmed it. */
  async syncVm(ctx: StepContext): Promise<StepResult> {
    const { state, request } = ctx;
    this.#requireNode(state);
    if (!state.uuid) {
      // State written by an older provider before it chose a UUID: persist one before creating anything.
      state.uuid = randomUUID();
      return retryAfter(0);
    }
    if (state.vmid) {
      const existing = await this.#findByVmid(state, request.id);
      if (existing) {
        this.ledger.release(request.id);
        return done;
      }
      ctx.log.warn({ vmid: state.vmid }, 'recorded VM no longer exists in Proxmox; creating it again');
      state.vmid = 0;
    }
    if (state.vmCreateTask) {
      // A create of ours was in flight when we last stopped: its outcome decides.
      const upid = state.vmCreateTask;
      state.vmCreateTask = '';
      try {
        await this.#wait(upid, ctx.signal);
      } catch (err) {
        if (!(err instanceof PveTaskError)) throw err;
        ctx.log.warn({ err: err.message }, 'earlier create task did not succeed');
      }
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
      const since = this.#pendingSince.get(request.id) ?? Date.now();
      this.#pendingSince.set(request.id, since);
      if (Date.now() - since < (this.#opts.pendingCreateWaitMs ?? 60_000)) {
        return retryAfter(2_000, `waiting for VM(s) ${found.pending.join(', ')} still being created to tell whether one is ours`);
      }
    }
    this.#pendingSince.delete(request.id);

    const storages = await storageFacts(this.#pve, state.node);
    const vmid = await this.#create(ctx, selectDiskStorages(request.providerData, storages, state.node, this.#log));
    state.vmid = vmid;
    this.ledger.release(request.id);
    ctx.log.info({ vmid, node: state.node }, 'VM created');
    return done;
  }

  async #create(ctx: StepContext, diskStorages: { primary: string; additional: string[] }): Promise<number> {
    const { state, request } = ctx;
    const attempts = this.#opts.createAttempts ?? 5;
    let lastError: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      let vmid = 0;
      let upid: string;
      // nextid + POST under one lock: the ID is not reserved until the create call wrote `lock: create`.
      const createCall = this.#createChain.then(async () => {
        vmid = await this.#pve.nextId();
        const params = planVm(request.providerData, {
          requestId: request.id,
          vmid,
          machineRequestSetId: request.machineRequestSetId,
          smbiosUuid: state.uuid,
          isoVolid: state.volumeId,
          diskStorages,
        });
        this.#creating.add(vmid);
        return this.#pve.createVm(state.node, { ...params, vmid });
      });
      this.#createChain = createCall.catch(() => undefined);
      try {
        upid = await createCall;
      } catch (err) {
        this.#creating.delete(vmid);
        if (err instanceof PveError && /already exists/i.test(err.statusText) && attempt < attempts) {
          ctx.log.warn({ vmid, attempt }, 'VMID taken meanwhile; retrying with a new one');
          lastError = err;
          continue;
        }
        if (err instanceof PveConnectionError && err.mayHaveExecuted) {
          // The create may have happened: find it on the next run instead of creating a second VM.
          throw new StepFailure(`syncVM: answer to the create call was lost (${err.code}); will look for the VM before retrying`, {
            transient: true,
            cause: err,
          });
        }
        throw err;
      }
      state.vmCreateTask = upid;
      try {
        await this.#wait(upid, ctx.signal);
      } finally {
        this.#creating.delete(vmid);
      }
      state.vmCreateTask = '';
      const config = await readConfig(this.#pve, state.node, vmid);
      if (!config) throw new StepFailure(`syncVM: VM ${vmid} vanished right after its create task succeeded`, { transient: true });
      return vmid;
    }
    throw lastError instanceof Error ? lastError : new Error('VM create failed');
  }

  /** The VM of this state if it still exists and is ours (same SMBIOS UUID); updates `state.node` if it moved. */
  async #findByVmid(state: MachineState, requestId: string): Promise<{ node: string } | undefined> {
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
    return { node };
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
    const seed = buildNoCloudSeed({
      userData: ctx.joinConfig,
      instanceId: state.uuid || request.id,
      ...(hostnameMode === 'request-id' ? { hostname: request.id } : {}),
    });
    state.seedVolume = await this.#isos.uploadSeed({
      node: state.node,
      storage: state.isoStorage,
      filename: seedIsoFileName(request.id),
      data: seed,
      signal: ctx.signal,
    });

    const desired = formatPropertyString({ file: state.seedVolume, media: 'cdrom' }, formats.ide);
    const config = await this.#pve.vmConfig(state.node, state.vmid);
    if (!isAttached(config[SEED_ISO_SLOT], state.seedVolume)) {
      // Only ide0 changes; the boot order stays as created (the seed is data, not a boot device).
      await this.#pve.setVmConfig(state.node, state.vmid, { [SEED_ISO_SLOT]: desired });
    }
    const upid = await this.#pve.startVm(state.node, state.vmid);
    state.vmStartTask = upid;
    try {
      await this.#wait(upid, ctx.signal);
    } catch (err) {
      if (err instanceof PveTaskError && /already running/i.test(err.exitstatus)) {
        state.vmStartTask = '';
        return done;
      }
      state.vmStartTask = '';
      throw err;
    }
    state.vmStartTask = '';
    ctx.log.info({ vmid: state.vmid, node: state.node }, 'VM started');
    return done;
  }

  async deprovision(ctx: DeprovisionContext): Promise<void> {
    const { state, requestId, log } = ctx;
    this.ledger.release(requestId);
    let target: { vmid: number; node: string } | undefined;
    let recordedVmIsOurs = false;
    if (state.vmid) {
      const found = await this.#findByVmid(state, requestId);
      if (found) {
        target = { vmid: state.vmid, node: found.node };
        recordedVmIsOurs = true;
      }
    }
    if (!target && state.uuid) {
      // No VMID recorded (crash between create and checkpoint) or it was reused: look by name + SMBIOS UUID.
      const found = await findRequestVm(this.#pve, requestId, state.uuid);
      if (found.vm) target = { vmid: found.vm.vmid, node: found.vm.node };
    }
    if (target) {
      await this.#destroyVm(target.node, target.vmid, log, ctx.signal);
    } else {
      log.info({ vmid: state.vmid || undefined }, 'no VM of this request exists; nothing to delete');
    }
    await this.#isos.removeSeeds({
      nodeHint: target?.node ?? state.node,
      storage: state.isoStorage,
      // The Go provider named seeds after the VMID: remove that one only when that VMID was verifiably ours.
      names: [seedIsoFileName(requestId), ...(recordedVmIsOurs ? [`user-data-${state.vmid}.iso`] : [])],
      log,
    });
  }

  async #destroyVm(node: string, vmid: number, log: Logger, signal?: AbortSignal): Promise<void> {
    const status = await this.#pve.vmStatus(node, vmid).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (!status) return;
    if (status.status === 'running') {
      const timeout = this.#opts.shutdownTimeoutSec ?? 60;
      try {
        const upid = await this.#pve.shutdownVm(node, vmid, { timeout });
        await waitForTask(this.#pve, upid, { ...this.#opts.taskWait, signal, deadlineMs: (timeout + 30) * 1000 });
        log.info({ vmid, node }, 'VM shut down');
      } catch (err) {
        log.warn({ vmid, node, err: err instanceof Error ? err.message : String(err) }, 'graceful shutdown failed; stopping');
        const upid = await this.#pve.stopVm(node, vmid, { overruleShutdown: true });
        await this.#wait(upid, signal);
      }
    }
    try {
      const upid = await this.#pve.deleteVm(node, vmid, { purge: true, destroyUnreferencedDisks: true });
      await this.#wait(upid, signal);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    log.info({ vmid, node }, 'VM deleted');
  }

  async healthCheck(): Promise<void> {
    let nodes;
    try {
      await this.#pve.version();
      nodes = await this.#pve.nodes();
    } catch (err) {
      throw new Error(toStepFailure('pickNode', err).message.replace(/^pickNode: /, 'Proxmox: '));
    }
    const online = nodes.filter((n) => n.status === 'online');
    if (online.length === 0) {
      throw new Error(`Proxmox: no node is online (${nodes.map((n) => `${n.node}: ${n.status}`).join(', ') || 'no nodes visible'})`);
    }
  }

  #requireNode(state: MachineState): void {
    if (!state.node) throw new StepFailure('no node recorded for this request; pickNode must run first');
  }
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
