// The provisioning controller: turns Omni's MachineRequests into runs of the provider's steps (status, private
// state, resume annotation, retries) and, on teardown, into Deprovision plus the cleanup of everything it wrote.
import type { MessageShape } from '@bufbuild/protobuf';
import type { DescMessage } from '@bufbuild/protobuf';
import { MachineRequestStatusSpec_Stage, type MachineRequestSpecSchema } from '../gen/omni/specs/infra_pb.js';
import { GrpcTunnelMode } from '../gen/omni/specs/omni_pb.js';
import { MachineSpecSchema } from '../gen/proxmox/specs/specs_pb.js';
import {
  ANNOTATION_STEP,
  ConfigPatchRequestKind,
  InfraMachineRegistrationKind,
  LABEL_INFRA_PROVIDER_ID,
  LABEL_MACHINE_REQUEST,
  LABEL_MACHINE_REQUEST_SET,
  MachineRequestKind,
  MachineRequestStatusKind,
  newResource,
  providerMachineKind,
  type ResourceKind,
  type TypedResource,
} from '../cosi/resources.js';
import { isAlreadyExists, isNotFound, resourceUnchanged, type CosiState, type WatchEvent } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';
import { readConnectionParams, type JoinMode } from '../omni/join.js';
import { machineSpecFromState, machineStateFromSpec, type MachineState } from './machineState.js';
import { parseProviderData } from './providerData.js';
import { WorkQueue, requeueAfter, workDone, type BackoffPolicy, type WorkOutcome } from './queue.js';
import { StepFailure, type Provisioner, type ProvisionRequest, type StepResult } from './step.js';

type MachineRequest = TypedResource<typeof MachineRequestSpecSchema>;
type PrivateState = TypedResource<typeof MachineSpecSchema>;

/** MRS status text while step `index` (0-based) of `total` runs. */
export function runningStepStatus(name: string, index: number, total: number): string {
  return `Running Step: ${JSON.stringify(name)} (${index + 1}/${total})`;
}
export const PROVISION_COMPLETE_STATUS = 'Provision Complete';


/** Where a machine request stands, from this controller's point of view. */
export type RequestPhase = 'provisioning' | 'provisioned' | 'failed' | 'tearing_down';
export const REQUEST_PHASES: readonly RequestPhase[] = ['provisioning', 'provisioned', 'failed', 'tearing_down'];

/** Hooks called as the controller works (metrics). Exceptions they throw are ignored. */
export interface ControllerObserver {
  /** One run of a provision step: `retry` = asked to come back or failed transiently, `failed` = stage FAILED. */
  stepRun?(step: string, result: 'done' | 'retry' | 'failed', seconds: number): void;
  /** One Deprovision call. */
  deprovision?(result: 'done' | 'failed'): void;
  /** A watch stream was opened again after it failed. */
  watchRestarted?(watch: string): void;
}

export interface ProvisionControllerOptions {
  state: CosiState;
  providerId: string;
  provisioner: Provisioner;
  /** From the resource definitions (see omni/join.ts detectJoinMode). */
  joinMode: JoinMode;
  /** Encode the request ID into join tokens (Go's WithEncodeRequestIDsIntoTokens). Default true. */
  encodeRequestIdsIntoTokens?: boolean;
  /** Requests reconciled at the same time. Default 1. */
  concurrency?: number;
  /** Retry delay after a step failed hard (stage FAILED). Default 60 s. */
  failedRetryMs?: number;
  /** Backoff after reconcile errors (per request). */
  backoff?: Partial<BackoffPolicy>;
  random?: () => number;
  /** How long stop() waits for in-flight reconciles. Default 30 s. */
  shutdownTimeoutMs?: number;
  /** Delay before re-opening a watch that failed for good (e.g. permission denied). Default 5 s. */
  watchRestartMs?: number;
  logger?: Logger;
  observer?: ControllerObserver;
}

export interface ControllerStatus {
  /** Watches are open and bootstrapped. */
  watching: boolean;
  /** Last reconcile or watch error ('' if the last reconcile succeeded). */
  lastError: string;
}

/** Drops our own finalizer so that "only our finalizer changed" updates compare equal. */
function withoutFinalizer<S extends DescMessage>(res: TypedResource<S>, finalizer: string): TypedResource<S> {
  return { metadata: { ...res.metadata, finalizers: res.metadata.finalizers.filter((f) => f !== finalizer) }, spec: res.spec };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The reason a provisioning pass was aborted because its request started tearing down. */
class TeardownAbort extends Error {
  override readonly name = 'TeardownAbort';
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export class ProvisionController {
  /** `<id>.ProvisionController`: our finalizer on MachineRequests and the owner of everything we write. */
  readonly name: string;
  private readonly state: CosiState;
  private readonly providerId: string;
  private readonly provisioner: Provisioner;
  private readonly privateKind: ResourceKind<typeof MachineSpecSchema>;
  private readonly log: Logger;
  private readonly queue: WorkQueue;
  private readonly failedRetryMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly watchRestartMs: number;
  private readonly encodeRequestIds: boolean;
  private readonly joinMode: JoinMode;
  private readonly observer: ControllerObserver;
  /** Phase of every request this controller has reconciled and not yet released. */
  private readonly phases = new Map<string, RequestPhase>();
  /** MachineRequest IDs the watch reported as existing. */
  private readonly knownRequests = new Set<string>();
  /** Requests deprovisioned in this process whose private state is not destroyed yet. */
  private readonly deprovisioned = new Set<string>();
  /** Provisioning passes in flight, by request: aborted when the request starts tearing down (or disappears). */
  private readonly provisioningRuns = new Map<string, AbortController>();
  private readonly watchAbort = new AbortController();
  private readonly watchLoops: Promise<void>[] = [];
  private readonly bootstrapped = new Set<string>();
  private watchCount = 0;
  private lastError = '';
  private started = false;
  /** Set by stop(): reconciles in flight finish their current step and return. */
  private stopping = false;

  constructor(opts: ProvisionControllerOptions) {
    this.state = opts.state;
    this.providerId = opts.providerId;
    this.provisioner = opts.provisioner;
    this.name = `${opts.providerId}.ProvisionController`;
    this.privateKind = providerMachineKind(opts.providerId);
    this.log = (opts.logger ?? silentLogger).child({ controller: this.name });
    this.failedRetryMs = opts.failedRetryMs ?? 60_000;
    this.shutdownTimeoutMs = opts.shutdownTimeoutMs ?? 30_000;
    this.watchRestartMs = opts.watchRestartMs ?? 5000;
    this.encodeRequestIds = opts.encodeRequestIdsIntoTokens ?? true;
    this.joinMode = opts.joinMode;
    this.observer = opts.observer ?? {};
    const queueOpts: ConstructorParameters<typeof WorkQueue>[1] = { concurrency: opts.concurrency ?? 1, logger: this.log };
    if (opts.backoff) queueOpts.backoff = opts.backoff;
    if (opts.random) queueOpts.random = opts.random;
    this.queue = new WorkQueue((id, signal) => this.reconcileLogged(id, signal), queueOpts);
  }

  /** Opens the watches (their bootstrap enqueues every request) and queues dangling private state for cleanup. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const signal = this.watchAbort.signal;
    this.watchLoops.push(
      this.watchLoop('MachineRequests', MachineRequestKind, { labels: { [LABEL_INFRA_PROVIDER_ID]: this.providerId } }, (e) =>
        this.onMachineRequestEvent(e),
      ),
      this.watchLoop('MachineRequestStatuses', MachineRequestStatusKind, {}, (e) => this.enqueueIfDestroyReady(e, e.type === 'bootstrapped' ? '' : e.resource.metadata.id)),
      this.watchLoop('InfraMachineRegistrations', InfraMachineRegistrationKind, {}, (e) => {
        if (e.type === 'bootstrapped') return;
        const request = e.resource.metadata.labels[LABEL_MACHINE_REQUEST];
        if (request !== undefined && request !== '') this.queue.add(request);
      }),
      this.watchLoop('ConfigPatchRequests', ConfigPatchRequestKind, {}, (e) =>
        this.enqueueIfDestroyReady(e, e.type === 'bootstrapped' ? '' : (e.resource.metadata.labels[LABEL_MACHINE_REQUEST] ?? '')),
      ),
      this.watchLoop('private state', this.privateKind, {}, (e) => this.enqueueIfDestroyReady(e, e.type === 'bootstrapped' ? '' : e.resource.metadata.id)),
      this.cleanupDangling(signal),
    );
  }

  /** Aborts the provisioning pass of request `id` if one is in flight (its step sees its signal aborted). */
  private abortProvisioning(id: string, reason: string): void {
    const run = this.provisioningRuns.get(id);
    if (run === undefined || run.signal.aborted) return;
    this.log.info({ request: id, reason }, 'aborting the provision step in flight');
    run.abort(new TeardownAbort(reason));
  }

  /** Stops watching and taking work; waits for in-flight reconciles up to the shutdown bound. */
  async stop(): Promise<{ drained: boolean; abandoned: string[] }> {
    this.stopping = true;
    this.watchAbort.abort();
    const result = await this.queue.stop(this.shutdownTimeoutMs);
    if (!result.drained) this.log.warn({ requests: result.abandoned }, 'shutdown bound reached; abandoning in-flight reconciles');
    await Promise.race([Promise.allSettled(this.watchLoops), sleep(1000, new AbortController().signal)]);
    return result;
  }

  status(): ControllerStatus {
    return { watching: this.bootstrapped.size === this.watchCount && this.watchCount > 0, lastError: this.lastError };
  }

  /** How many requests are in each phase right now (every phase present, possibly 0). */
  requestPhases(): Record<RequestPhase, number> {
    const counts = Object.fromEntries(REQUEST_PHASES.map((p) => [p, 0])) as Record<RequestPhase, number>;
    for (const phase of this.phases.values()) counts[phase]++;
    return counts;
  }

  private observe(call: (o: ControllerObserver) => void): void {
    try {
      call(this.observer);
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'controller observer failed');
    }
  }

  /** Resolves when no reconcile is queued or running (retry timers may be pending). */
  whenIdle(): Promise<void> {
    return this.queue.whenIdle();
  }

  /** Queues a reconcile of request `id` (e.g. from tests or an operator command). */
  enqueue(id: string): void {
    this.queue.add(id);
  }

  // --- events --------------------------------------------------------------------------------------------------

  private onMachineRequestEvent(e: WatchEvent<typeof MachineRequestSpecSchema>): void {
    if (e.type === 'bootstrapped') {
      if (e.resync) for (const id of this.knownRequests) this.queue.add(id);
      return;
    }
    const id = e.resource.metadata.id;
    if (e.type === 'destroyed') {
      this.knownRequests.delete(id);
      this.phases.delete(id);
      this.abortProvisioning(id, 'the machine request was destroyed');
      this.queue.add(id);
      return;
    }
    this.knownRequests.add(id);
    // A teardown that arrives while a step runs aborts that step; the queue then runs the request again (below),
    // and that pass deprovisions from what the step recorded.
    if (e.resource.metadata.phase === 'tearingDown') this.abortProvisioning(id, 'the machine request is tearing down');
    // Our own finalizer edit comes back as an update: nothing to do for it.
    if (
      e.type === 'updated' &&
      e.old !== undefined &&
      resourceUnchanged(MachineRequestKind, withoutFinalizer(e.old, this.name), withoutFinalizer(e.resource, this.name))
    ) {
      return;
    }
    this.queue.add(id);
  }

  /** Provider-written kinds matter only once they are tearing down and every finalizer is gone. */
  private enqueueIfDestroyReady<S extends DescMessage>(e: WatchEvent<S>, requestId: string): void {
    if (e.type === 'bootstrapped') {
      if (e.resync) for (const id of this.knownRequests) this.queue.add(id);
      return;
    }
    if (e.type === 'destroyed' || requestId === '') return;
    const md = e.resource.metadata;
    if (md.phase === 'tearingDown' && md.finalizers.length === 0) this.queue.add(requestId);
  }

  private async watchLoop<S extends DescMessage>(
    label: string,
    kind: ResourceKind<S>,
    opts: Parameters<CosiState['watch']>[1],
    onEvent: (e: WatchEvent<S>) => void,
  ): Promise<void> {
    const signal = this.watchAbort.signal;
    this.watchCount++;
    let restarts = 0;
    while (!signal.aborted) {
      const watch = this.state.watch(kind, opts);
      const onAbort = () => watch.close();
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const event of watch) {
          if (event.type === 'bootstrapped') {
            this.bootstrapped.add(label);
            // A watch re-opened after a failure has missed events: treat its bootstrap as a resync.
            onEvent(restarts > 0 && !event.resync ? { type: 'bootstrapped', resync: true } : event);
            continue;
          }
          onEvent(event);
        }
      } catch (err) {
        if (signal.aborted) break;
        this.bootstrapped.delete(label);
        this.lastError = `watching ${label} failed: ${errorMessage(err)}`;
        this.log.error({ watch: label, err: errorMessage(err) }, 'watch failed; re-opening');
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
      restarts++;
      await sleep(this.watchRestartMs, signal);
      if (!signal.aborted) this.observe((o) => o.watchRestarted?.(label));
    }
  }

  /** Queues every private state: reconcile deprovisions and destroys those whose MachineRequest is gone. */
  private async cleanupDangling(signal: AbortSignal): Promise<void> {
    for (let attempt = 1; !signal.aborted; attempt++) {
      try {
        const states = await this.state.list(this.privateKind);
        for (const s of states) this.queue.add(s.metadata.id);
        return;
      } catch (err) {
        this.log.warn({ err: errorMessage(err), attempt }, 'listing private state for dangling cleanup failed; retrying');
        await sleep(Math.min(60_000, 500 * 1.5 ** (attempt - 1)), signal);
      }
    }
  }

  // --- reconcile -----------------------------------------------------------------------------------------------

  private async reconcileLogged(id: string, signal: AbortSignal): Promise<WorkOutcome> {
    try {
      const outcome = await this.reconcile(id, signal);
      this.lastError = '';
      return outcome;
    } catch (err) {
      this.lastError = `request ${id}: ${errorMessage(err)}`;
      this.log.warn({ request: id, err: errorMessage(err) }, 'reconcile failed; retrying with backoff');
      throw err;
    }
  }

  /** One level-triggered pass over request `id` (§5.3 / §5.7 of the protocol notes). */
  async reconcile(id: string, signal: AbortSignal = new AbortController().signal): Promise<WorkOutcome> {
    // Registered before the request is read, so that a teardown event arriving at any point of this pass aborts it.
    const run = new AbortController();
    this.provisioningRuns.set(id, run);
    try {
      return await this.reconcilePass(id, signal, run.signal);
    } finally {
      if (this.provisioningRuns.get(id) === run) this.provisioningRuns.delete(id);
    }
  }

  private async reconcilePass(id: string, signal: AbortSignal, teardownSignal: AbortSignal): Promise<WorkOutcome> {
    const log = this.log.child({ request: id });
    const request = await this.state.find(MachineRequestKind, id);
    if (request === undefined) {
      this.phases.delete(id);
      this.provisioningRuns.delete(id);
      return this.reconcileOrphan(id, log, signal);
    }
    if (request.metadata.labels[LABEL_INFRA_PROVIDER_ID] !== this.providerId) {
      this.phases.delete(id);
      return workDone;
    }
    if (request.metadata.phase === 'tearingDown') {
      this.phases.set(id, 'tearing_down');
      this.provisioningRuns.delete(id);
      return this.reconcileTeardown(request, log, signal);
    }

    if (!request.metadata.finalizers.includes(this.name)) {
      await this.state.addFinalizer(MachineRequestKind, id, this.name);
    }
    let status = await this.initStatus(request, log);
    const connection = await readConnectionParams(this.state, {
      providerId: this.providerId,
      mode: this.joinMode,
      requestId: id,
      grpcTunnel: request.spec.grpcTunnel === GrpcTunnelMode.ENABLED,
      encodeRequestIds: this.encodeRequestIds,
    });
    const priv = await this.ensurePrivateState(id);

    if (status.spec.id === '') {
      const registrations = await this.state.list(InfraMachineRegistrationKind, { labels: { [LABEL_MACHINE_REQUEST]: id } });
      const only = registrations.length === 1 ? registrations[0] : undefined;
      if (only !== undefined) {
        log.info({ machine: only.metadata.id }, 'machine registered; recording its UUID');
        status = await this.writeStatus(id, (spec) => {
          spec.id = only.metadata.id;
        });
      }
    }
    if (status.spec.stage === MachineRequestStatusSpec_Stage.PROVISIONED) {
      this.phases.set(id, 'provisioned');
      return workDone;
    }
    this.phases.set(id, status.spec.stage === MachineRequestStatusSpec_Stage.FAILED ? 'failed' : 'provisioning');

    let provisionRequest: ProvisionRequest;
    try {
      provisionRequest = this.provisionRequest(request);
    } catch (err) {
      // The request's spec is immutable: retrying cannot help until it is replaced.
      log.error({ err: errorMessage(err) }, 'invalid provider data');
      await this.writeStatus(id, (spec) => {
        spec.error = errorMessage(err);
        spec.stage = MachineRequestStatusSpec_Stage.FAILED;
      });
      this.phases.set(request.metadata.id, 'failed');
      return workDone;
    }
    return this.runSteps(provisionRequest, priv, connection.joinConfig, log, signal, teardownSignal);
  }

  private provisionRequest(request: MachineRequest): ProvisionRequest {
    const spec = request.spec;
    return {
      id: request.metadata.id,
      machineRequestSetId: request.metadata.labels[LABEL_MACHINE_REQUEST_SET],
      talosVersion: spec.talosVersion,
      providerData: parseProviderData(spec.providerData),
      extensions: [...spec.extensions],
      kernelArgs: [...spec.kernelArgs],
      metaValues: spec.metaValues.map((m) => ({ key: m.key, value: m.value })),
    };
  }

  private async initStatus(request: MachineRequest, log: Logger): Promise<TypedResource<typeof MachineRequestStatusKind.spec>> {
    const existing = await this.state.find(MachineRequestStatusKind, request.metadata.id);
    if (existing !== undefined) return existing;
    return this.state.modify(
      MachineRequestStatusKind,
      request.metadata.id,
      (res) => {
        if (res.spec.stage === MachineRequestStatusSpec_Stage.UNKNOWN) {
          res.spec.stage = MachineRequestStatusSpec_Stage.PROVISIONING;
          res.metadata.labels = { ...request.metadata.labels };
          log.info('machine provision started');
        }
      },
      { owner: this.name },
    );
  }

  private async ensurePrivateState(id: string): Promise<PrivateState> {
    const existing = await this.state.find(this.privateKind, id);
    if (existing !== undefined) return existing;
    try {
      return await this.state.create(this.privateKind, newResource(this.privateKind, id), { owner: this.name });
    } catch (err) {
      if (isAlreadyExists(err)) return this.state.get(this.privateKind, id);
      throw err;
    }
  }

  private writeStatus(
    id: string,
    mutate: (spec: MessageShape<typeof MachineRequestStatusKind.spec>, labels: Record<string, string>) => void,
  ): Promise<TypedResource<typeof MachineRequestStatusKind.spec>> {
    return this.state.modify(MachineRequestStatusKind, id, (res) => mutate(res.spec, res.metadata.labels), {
      owner: this.name,
      createIfMissing: false,
    });
  }

  private async runSteps(
    request: ProvisionRequest,
    priv: PrivateState,
    joinConfig: string,
    log: Logger,
    signal: AbortSignal,
    teardownSignal: AbortSignal,
  ): Promise<WorkOutcome> {
    const steps = this.provisioner.steps;
    // The step's signal: shutdown (the queue's) or a teardown of this request (abortProvisioning).
    const stepSignal = AbortSignal.any([signal, teardownSignal]);
    const id = request.id;
    const resumeFrom = priv.metadata.annotations[ANNOTATION_STEP];
    let first = 0;
    if (resumeFrom !== undefined && resumeFrom !== '') {
      first = steps.findIndex((s) => s.name === resumeFrom);
      if (first < 0) {
        log.warn({ step: resumeFrom }, 'stored step name matches no step; starting again from the first step');
        first = 0;
      }
    }
    let machine = machineStateFromSpec(priv.spec);
    for (let i = first; i < steps.length; i++) {
      const step = steps[i];
      if (step === undefined) break;
      if (signal.aborted) throw new Error('shutting down');
      if (teardownSignal.aborted) {
        log.info({ step: step.name }, 'teardown requested; not starting the next provision step');
        return workDone;
      }
      if (this.stopping) {
        log.info({ step: step.name }, 'shutting down; the next start resumes at this step');
        return workDone;
      }
      const statusText = runningStepStatus(step.name, i, steps.length);
      const working: MachineState = { ...machine };
      const stepLog = log.child({ step: step.name, node: machine.node || undefined, vmid: machine.vmid || undefined });
      stepLog.info('running provision step');
      let result: StepResult;
      const stepStarted = performance.now();
      const seconds = () => (performance.now() - stepStarted) / 1000;
      // Write-ahead checkpoints: the private state as the step holds it now, annotation unchanged.
      const checkpoint = async (): Promise<void> => {
        await this.state.modify(
          this.privateKind,
          id,
          (res) => {
            res.spec = machineSpecFromState(working);
          },
          { owner: this.name, createIfMissing: false },
        );
      };
      const createConfigPatch = async (name: string, data: string): Promise<void> => {
        await this.state.modify(
          ConfigPatchRequestKind,
          name,
          (res) => {
            res.metadata.labels[LABEL_INFRA_PROVIDER_ID] = this.providerId;
            res.metadata.labels[LABEL_MACHINE_REQUEST] = id;
            res.spec.data = data;
          },
          { owner: this.name },
        );
      };
      try {
        result = await step.run({ request, state: working, joinConfig, log: stepLog, signal: stepSignal, checkpoint, createConfigPatch });
      } catch (err) {
        if (signal.aborted) throw err;
        if (teardownSignal.aborted) {
          // Whatever the step recorded through checkpoint() is in Omni; the next pass deprovisions from it.
          stepLog.info({ err: errorMessage(err) }, 'provision step aborted: the machine request is tearing down');
          return workDone;
        }
        const message = errorMessage(err);
        if (err instanceof StepFailure && err.transient) {
          this.observe((o) => o.stepRun?.(step.name, 'retry', seconds()));
          stepLog.warn({ err: message }, 'provision step failed; retrying');
          await this.writeStatus(id, (spec) => {
            spec.status = statusText;
            spec.error = message;
            spec.stage = MachineRequestStatusSpec_Stage.PROVISIONING;
          });
          throw err;
        }
        this.observe((o) => o.stepRun?.(step.name, 'failed', seconds()));
        this.phases.set(id, 'failed');
        const permanent = err instanceof StepFailure && err.permanent;
        stepLog.error({ err: message, permanent }, permanent ? 'machine request refused; not retried' : 'machine provision failed');
        await this.writeStatus(id, (spec) => {
          spec.status = statusText;
          spec.error = message;
          spec.stage = MachineRequestStatusSpec_Stage.FAILED;
        });
        // A refused request stays FAILED until it is replaced (its spec is immutable); anything else is retried.
        return permanent ? workDone : requeueAfter(this.failedRetryMs);
      }
      this.observe((o) => o.stepRun?.(step.name, result.kind, seconds()));
      this.phases.set(id, 'provisioning');
      await this.state.modify(
        this.privateKind,
        id,
        (res) => {
          res.spec = machineSpecFromState(working);
          res.metadata.annotations[ANNOTATION_STEP] = step.name;
        },
        { owner: this.name, createIfMissing: false },
      );
      machine = working;
      if (teardownSignal.aborted) {
        // The step finished before it noticed the teardown: what it did is recorded above; nothing more is reported.
        stepLog.info('teardown requested; not starting the next provision step');
        return workDone;
      }
      await this.writeStatus(id, (spec) => {
        spec.status = this.withNote(statusText, working);
        spec.error = result.kind === 'retry' && result.message ? result.message : '';
        spec.stage = MachineRequestStatusSpec_Stage.PROVISIONING;
        // Like the Go provider's SetMachineUUID in syncVM: the machine ID is announced once the VM exists.
        if (working.uuid !== '' && working.vmid !== 0) spec.id = working.uuid;
      });
      if (result.kind === 'retry') {
        stepLog.debug({ afterMs: result.afterMs }, 'provision step asked to be retried');
        return requeueAfter(result.afterMs);
      }
    }
    const current = await this.state.get(MachineRequestKind, id);
    await this.writeStatus(id, (spec, labels) => {
      spec.stage = MachineRequestStatusSpec_Stage.PROVISIONED;
      spec.status = this.withNote(PROVISION_COMPLETE_STATUS, machine);
      spec.error = '';
      for (const k of Object.keys(labels)) delete labels[k];
      Object.assign(labels, current.metadata.labels);
    });
    this.phases.set(id, 'provisioned');
    log.info({ node: machine.node || undefined, vmid: machine.vmid || undefined }, 'machine provision finished');
    return workDone;
  }

  /** The status text with the provisioner's note (the static addresses), when it has one. */
  private withNote(text: string, machine: MachineState): string {
    let note = '';
    try {
      note = this.provisioner.statusNote?.(machine) ?? '';
    } catch {
      note = '';
    }
    return note === '' ? text : `${text} (${note})`;
  }

  // --- teardown ------------------------------------------------------------------------------------------------

  /**
   * Tears down one resource we own. True when it is gone (or was never there); false while finalizers hold it.
   */
  private async teardownAndDestroy<S extends DescMessage>(kind: ResourceKind<S>, id: string): Promise<boolean> {
    let ready: boolean;
    try {
      ready = await this.state.teardown(kind, id, { owner: this.name });
    } catch (err) {
      if (isNotFound(err)) return true;
      throw err;
    }
    if (!ready) return false;
    try {
      await this.state.destroy(kind, id, { owner: this.name });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    return true;
  }

  private async reconcileTeardown(request: MachineRequest, log: Logger, signal: AbortSignal): Promise<WorkOutcome> {
    const id = request.metadata.id;
    const patches = await this.state.list(ConfigPatchRequestKind, {
      labels: { [LABEL_INFRA_PROVIDER_ID]: this.providerId, [LABEL_MACHINE_REQUEST]: id },
    });
    let patchesGone = true;
    for (const patch of patches) {
      if (!(await this.teardownAndDestroy(ConfigPatchRequestKind, patch.metadata.id))) patchesGone = false;
    }
    if (!patchesGone) {
      log.debug('waiting for Omni to release config patch requests');
      return workDone;
    }
    if (!(await this.teardownAndDestroy(MachineRequestStatusKind, id))) {
      log.debug('waiting for Omni to release the machine request status');
      return workDone;
    }
    const priv = await this.state.find(this.privateKind, id);
    if (priv !== undefined) {
      if (!(await this.deprovisionOnce(priv, log, signal))) return workDone;
    }
    // Removing our finalizer is itself an update of the request, which brings it back here while Omni has not
    // destroyed it yet (another finalizer, or just Omni's own pace): only the pass that held the finalizer (or
    // deprovisioned something) reports the machine as deprovisioned.
    const held = request.metadata.finalizers.includes(this.name);
    if (held) await this.state.removeFinalizer(MachineRequestKind, id, this.name);
    this.phases.delete(id);
    if (held || priv !== undefined) log.info('machine deprovisioned');
    return workDone;
  }

  /** Request gone but private state left (a crash, or a Go provider's leftovers): deprovision and destroy it. */
  private async reconcileOrphan(id: string, log: Logger, signal: AbortSignal): Promise<WorkOutcome> {
    const priv = await this.state.find(this.privateKind, id);
    if (priv === undefined) return workDone;
    log.info('private state without a machine request; deprovisioning it');
    await this.deprovisionOnce(priv, log, signal, true);
    return workDone;
  }

  /**
   * Deprovision (once per teardown), then tear down and destroy the private state. Returns false while the
   * private state is still held by finalizers.
   */
  private async deprovisionOnce(priv: PrivateState, log: Logger, signal: AbortSignal, orphan = false): Promise<boolean> {
    const id = priv.metadata.id;
    // We tear the private state down only after Deprovision succeeded, so tearingDown marks "already done" —
    // except for orphans, which a Go provider tore down without deprovisioning.
    const alreadyDone = this.deprovisioned.has(id) || (!orphan && priv.metadata.phase === 'tearingDown');
    if (!alreadyDone) {
      const machine = machineStateFromSpec(priv.spec);
      const stepLog = log.child({ node: machine.node || undefined, vmid: machine.vmid || undefined });
      stepLog.info('deprovisioning machine');
      try {
        await this.provisioner.deprovision({ requestId: id, state: machine, log: stepLog, signal });
      } catch (err) {
        if (!signal.aborted) this.observe((o) => o.deprovision?.('failed'));
        throw err;
      }
      this.observe((o) => o.deprovision?.('done'));
      this.deprovisioned.add(id);
    }
    if (!(await this.teardownAndDestroy(this.privateKind, id))) {
      log.debug('waiting for finalizers on the private state');
      return false;
    }
    this.deprovisioned.delete(id);
    return true;
  }
}
