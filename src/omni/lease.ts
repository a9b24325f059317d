// The leader lease: one resource in Omni (`Lease.<id>.infraprovider.sidero.dev/leader` in `infra-provider:<id>`) that
// names the one instance of the provider allowed to act. Taken and renewed with COSI's version-checked Update
// (compare-and-swap); a standby takes it once it has seen no change for the lease duration, on its own clock; the
// holder stops acting once its renew deadline (shorter) has passed since its last successful renewal was sent.
// The timing argument is in docs/operations.md, "Running two instances".
import { randomUUID } from 'node:crypto';
import { hostname as osHostname } from 'node:os';
import { create } from '@bufbuild/protobuf';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { LeaseSpecSchema } from '../gen/proxmox/specs/lease_pb.js';
import { cloneResource, newResource, providerLeaseKind, type TypedResource } from '../cosi/resources.js';
import { isAlreadyExists, isConflict, isNotFound, toCosiError, type CosiState } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';

/** ID of the lease resource (one per provider ID). */
export const LEASE_ID = 'leader';

/** COSI owner of the lease resource (the same for every instance, so that any of them may update it). */
export function leaseOwner(providerId: string): string {
  return `${providerId}.LeaderLease`;
}

type LeaseResource = TypedResource<typeof LeaseSpecSchema>;

/** Who holds (or last held) the lease, decoded for people and tools (`status`). */
export interface LeaseView {
  /** Instance ID of the holder; '' when the lease was released (free to take at once). */
  holderInstance: string;
  holderHostname: string;
  holderPid: number;
  holderVersion: string;
  /** When the holder took it and last renewed it (the holder's wall clock; for people, never for decisions). */
  acquired: Date | undefined;
  renewed: Date | undefined;
  /** The holder's settings: a standby waits at least `durationSeconds` without a change before taking over. */
  durationSeconds: number;
  renewDeadlineSeconds: number;
  /** How often the lease changed hands. */
  transitions: number;
  /** COSI resource version (changes with every renewal). */
  resourceVersion: string;
  /** When Omni last stored it (Omni's clock). */
  updated: Date | undefined;
}

/** The lease's content as plain data. */
export function decodeLease(res: LeaseResource): LeaseView {
  const s = res.spec;
  return {
    holderInstance: s.holderInstance,
    holderHostname: s.holderHostname,
    holderPid: s.holderPid,
    holderVersion: s.holderVersion,
    acquired: s.acquireTime ? timestampDate(s.acquireTime) : undefined,
    renewed: s.renewTime ? timestampDate(s.renewTime) : undefined,
    durationSeconds: s.leaseDurationSeconds,
    renewDeadlineSeconds: s.renewDeadlineSeconds,
    transitions: s.transitions,
    resourceVersion: res.metadata.version,
    updated: res.metadata.updated,
  };
}

/** Reads the lease of `providerId` from Omni; undefined when no instance ever took it. Read-only. */
export async function readLease(state: Pick<CosiState, 'find'>, providerId: string): Promise<LeaseView | undefined> {
  const res = await state.find(providerLeaseKind(providerId), LEASE_ID);
  return res ? decodeLease(res) : undefined;
}

/** This process, as written into the lease. */
export interface LeaseIdentity {
  /** Random, new at every start: two processes never share it (hostname and PID may repeat in containers). */
  instance: string;
  hostname: string;
  pid: number;
  version: string;
}

export function newLeaseIdentity(version: string): LeaseIdentity {
  return { instance: randomUUID(), hostname: osHostname(), pid: process.pid, version };
}

export interface LeaseTiming {
  /** A standby takes the lease after seeing it unchanged this long. */
  durationMs: number;
  /** The holder stops acting this long after the send time of its last successful renewal. Less than durationMs. */
  renewDeadlineMs: number;
  /** The holder renews, and a standby re-reads, this often. Less than renewDeadlineMs. */
  retryPeriodMs: number;
}

/** Defaults (docs/configuration.md explains the choice): takeover within 15 s, well inside Omni's ~30 s. */
export const DEFAULT_LEASE_TIMING: LeaseTiming = { durationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

/** Thrown by write paths of an instance that is not (or no longer certainly) the lease holder. */
export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
}

export type LeaseRole = 'leader' | 'standby';

export interface LeaseStatus {
  role: LeaseRole;
  /** The lease as last read or written ('' holder when released; undefined before the first read or when absent). */
  lease: LeaseView | undefined;
  /** The last lease call (read, renewal, take-over) reached Omni. */
  omniOk: boolean;
  /** Monotonic ms of the last lease call that reached Omni (for staleness). */
  lastContactMs: number | undefined;
  lastError: string;
  /** Times this process took the lease. */
  acquisitions: number;
}

/** gRPC codes that no retry fixes (wrong key, unregistered provider, wrong ID). */
const CONFIGURATION_ERRORS = new Set<grpc.status>([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNIMPLEMENTED,
]);

export interface LeaderElectorOptions {
  state: CosiState;
  providerId: string;
  identity: LeaseIdentity;
  timing?: LeaseTiming;
  /** Monotonic milliseconds (default performance.now): every decision is measured on this clock. */
  monotonicMs?: () => number;
  /** Wall clock for the informational timestamps written into the lease. */
  now?: () => Date;
  logger?: Logger;
  /** This process took the lease: start acting. */
  onStartedLeading?: () => void;
  /** This process lost the lease (or stopped): stop acting. The elector does not wait for it. */
  onStoppedLeading?: (reason: string) => void;
  /** Called after every change of status (metrics, health). */
  onStatus?: (status: LeaseStatus) => void;
}

/**
 * Runs the election for one process. `canAct()` / `assertCanAct()` is the fence every write path checks: true only
 * while this process holds the lease and its renew deadline has not passed.
 */
export class LeaderElector {
  private readonly kind;
  private readonly owner: string;
  private readonly timing: LeaseTiming;
  private readonly mono: () => number;
  private readonly now: () => Date;
  private readonly log: Logger;
  private leading = false;
  /** Monotonic send time of the last successful take or renewal (valid while leading). */
  private lastRenewSentAt = 0;
  /** The lease as last stored (our own write or a read). */
  private current: LeaseResource | undefined;
  /** The version last seen ('absent' when there was none) and when it was first seen, on the monotonic clock. */
  private observedKey: string | undefined;
  private observedAt = 0;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private stopped = false;
  /** This process has seen the lease exist (a later absence means it was deleted, not that none was ever taken). */
  private sawLease = false;
  /** Set when a lease call succeeds after failures: the next observation is logged. */
  private recovered = false;
  private loop: Promise<void> | undefined;
  private watch: { close(): void } | undefined;
  private readonly st: LeaseStatus = { role: 'standby', lease: undefined, omniOk: false, lastContactMs: undefined, lastError: '', acquisitions: 0 };

  constructor(private readonly opts: LeaderElectorOptions) {
    this.kind = providerLeaseKind(opts.providerId);
    this.owner = leaseOwner(opts.providerId);
    this.timing = opts.timing ?? DEFAULT_LEASE_TIMING;
    const t = this.timing;
    if (!(t.retryPeriodMs > 0 && t.retryPeriodMs < t.renewDeadlineMs && t.renewDeadlineMs < t.durationMs)) {
      throw new Error(`lease timing must satisfy 0 < retry period < renew deadline < duration (got ${JSON.stringify(t)})`);
    }
    this.mono = opts.monotonicMs ?? (() => performance.now());
    this.now = opts.now ?? (() => new Date());
    this.log = (opts.logger ?? silentLogger).child({ component: 'lease', instance: opts.identity.instance });
  }

  get resourceType(): string {
    return this.kind.type;
  }

  /**
   * Makes the first attempt (take the lease, or see who holds it), then keeps the election running. Rejects when
   * that first attempt shows a configuration error (bad key, provider not registered); any other failure (Omni
   * unreachable) leaves this process a standby that keeps trying.
   */
  async start(): Promise<void> {
    try {
      await this.tick(true);
    } catch (err) {
      const cosi = toCosiError(err, 'taking the leader lease');
      if (CONFIGURATION_ERRORS.has(cosi.code)) throw cosi;
      this.failed(cosi);
    }
    this.loop = this.run();
    this.startWatch();
  }

  /** True while this process holds the lease and its renew deadline has not passed. */
  canAct(): boolean {
    return this.leading && this.mono() < this.lastRenewSentAt + this.timing.renewDeadlineMs;
  }

  /** The fence: throws NotLeaderError unless canAct(). */
  assertCanAct(what: string): void {
    if (this.canAct()) return;
    const why = this.leading ? 'its lease renewal is overdue (renew deadline passed)' : 'it does not hold the leader lease';
    throw new NotLeaderError(`refusing ${what}: this instance may not act, ${why}`);
  }

  status(): LeaseStatus {
    return { ...this.st, role: this.canAct() ? 'leader' : 'standby' };
  }

  /** Stops the election. A holder stops acting (onStoppedLeading) and then releases the lease so a standby takes it at once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.watch?.close();
    this.wake?.();
    await this.loop;
    const wasLeading = this.leading;
    this.lose('this instance is stopping');
    if (wasLeading && this.current) await this.release(this.current);
  }

  /** Gives the lease up (holder emptied, version-checked): a standby takes it without waiting for it to expire. */
  private async release(held: LeaseResource): Promise<void> {
    const next = cloneResource(this.kind, held);
    next.spec.holderInstance = '';
    next.spec.holderHostname = '';
    next.spec.holderPid = 0;
    try {
      await this.opts.state.update(this.kind, next, { owner: this.owner, ...this.callTimeout() });
      this.log.info('leader lease released');
    } catch (err) {
      this.log.warn({ err: toCosiError(err, 'releasing the leader lease').message }, 'could not release the leader lease; a standby takes it when it expires');
    }
  }

  /** Deadline of one lease call: a hung call must not hold the election up for long (the fence does not depend on it). */
  private callTimeout(): { timeoutMs: number } {
    return { timeoutMs: Math.max(this.timing.retryPeriodMs, this.timing.renewDeadlineMs / 2) };
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.timing.retryPeriodMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      if (this.stopped) return;
      try {
        await this.tick(false);
      } catch (err) {
        this.failed(toCosiError(err, this.leading ? 'renewing the leader lease' : 'reading the leader lease'));
      }
    }
  }

  private failed(err: Error): void {
    this.st.omniOk = false;
    this.st.lastError = err.message;
    this.log.warn({ err: err.message, leading: this.leading }, 'leader lease call failed');
    this.emit();
  }

  private contact(): void {
    if (!this.st.omniOk && this.st.lastError !== '') this.recovered = true;
    this.st.omniOk = true;
    this.st.lastContactMs = this.mono();
    this.st.lastError = '';
  }

  /** One round: the holder renews; a standby reads and takes the lease if it is free or expired. */
  private async tick(first: boolean): Promise<void> {
    const callTimeout = this.callTimeout();
    if (this.leading && !this.canAct()) {
      this.lose(`no successful renewal within the renew deadline (${this.timing.renewDeadlineMs} ms)`);
    }
    if (this.leading && this.current) {
      const next = cloneResource(this.kind, this.current);
      next.spec.renewTime = timestampFromDate(this.now());
      const sentAt = this.mono();
      try {
        const stored = await this.opts.state.update(this.kind, next, { owner: this.owner, ...callTimeout });
        this.renewed(stored, sentAt);
      } catch (err) {
        if (!isConflict(err) && !isNotFound(err)) throw err;
        // Someone else wrote the lease: re-read it. Still ours (an earlier renewal whose answer was lost): keep its
        // version and renew again next round, without moving the deadline. Anyone else's: lost.
        const fresh = await this.opts.state.find(this.kind, LEASE_ID, callTimeout);
        this.contact();
        this.observe(fresh);
        if (fresh && fresh.spec.holderInstance === this.opts.identity.instance) this.current = fresh;
        else this.lose(fresh ? `the lease was taken by ${describeHolder(decodeLease(fresh))}` : 'the lease resource was removed');
      }
      this.emit();
      return;
    }

    const found = await this.opts.state.find(this.kind, LEASE_ID, callTimeout);
    this.contact();
    this.observe(found);
    const me = this.opts.identity;
    if (found === undefined) {
      // No lease yet: create it. But a lease this process has seen disappear (deleted by hand) may still be held by
      // an instance that has not noticed: wait one lease duration from its disappearance, as for an expiry.
      if (this.sawLease && this.mono() - this.observedAt < this.timing.durationMs) {
        this.emit();
        return;
      }
      const fresh = newResource(this.kind, LEASE_ID, this.spec(undefined));
      const sentAt = this.mono();
      try {
        const stored = await this.opts.state.create(this.kind, fresh, { owner: this.owner, ...callTimeout });
        this.acquired(stored, sentAt, 'no lease existed');
      } catch (err) {
        if (!isAlreadyExists(err)) throw err; // another instance created it first: it holds the lease
      }
      this.emit();
      return;
    }
    const lease = decodeLease(found);
    // The holder's own duration counts too: a standby configured shorter than the holder still waits long enough.
    const waitMs = Math.max(this.timing.durationMs, lease.durationSeconds * 1000);
    const unchangedMs = this.mono() - this.observedAt;
    let why: string | undefined;
    if (lease.holderInstance === '') why = 'the lease was released';
    else if (lease.holderInstance === me.instance) why = 'the lease still names this instance';
    else if (unchangedMs >= waitMs) why = `the lease of ${describeHolder(lease)} was not renewed for ${Math.round(unchangedMs)} ms`;
    if (why === undefined) {
      if (first) this.log.info({ holder: describeHolder(lease), waitMs }, 'another instance holds the leader lease; standing by');
      this.emit();
      return;
    }
    const next = cloneResource(this.kind, found);
    next.spec = this.spec(found);
    const sentAt = this.mono();
    try {
      const stored = await this.opts.state.update(this.kind, next, { owner: this.owner, ...callTimeout });
      this.acquired(stored, sentAt, why);
    } catch (err) {
      if (!isConflict(err) && !isNotFound(err)) throw err; // someone wrote first: they hold it
      this.log.info({ err: toCosiError(err, 'taking the lease').message }, 'another instance took the leader lease first');
    }
    this.emit();
  }

  /** The spec this process writes when it takes the lease (`previous`: the lease it replaces). */
  private spec(previous: LeaseResource | undefined) {
    const me = this.opts.identity;
    const at = timestampFromDate(this.now());
    const changedHands = previous !== undefined && previous.spec.holderInstance !== me.instance;
    return create(LeaseSpecSchema, {
      holderInstance: me.instance,
      holderHostname: me.hostname,
      holderPid: me.pid,
      holderVersion: me.version,
      acquireTime: at,
      renewTime: at,
      leaseDurationSeconds: Math.ceil(this.timing.durationMs / 1000),
      renewDeadlineSeconds: Math.ceil(this.timing.renewDeadlineMs / 1000),
      transitions: (previous?.spec.transitions ?? 0) + (changedHands ? 1 : 0),
    });
  }

  /** Notes a read of the lease: a new version (or its appearance/disappearance) restarts the expiry wait. */
  private observe(res: LeaseResource | undefined): void {
    const key = res ? res.metadata.version : 'absent';
    if (key !== this.observedKey) {
      this.observedKey = key;
      this.observedAt = this.mono();
    }
    if (res) this.sawLease = true;
    if (res) this.st.lease = decodeLease(res);
    else this.st.lease = undefined;
    if (this.recovered) {
      this.recovered = false;
      const lease = this.st.lease;
      this.log.info({ holder: lease ? describeHolder(lease) : 'none', leading: this.leading }, 'Omni answers the leader lease calls again');
    }
  }

  private acquired(stored: LeaseResource, sentAt: number, why: string): void {
    this.contact();
    this.current = stored;
    this.observe(stored);
    this.leading = true;
    this.lastRenewSentAt = sentAt;
    this.armDeadline();
    this.st.acquisitions++;
    this.log.info({ reason: why, transitions: stored.spec.transitions }, 'leader lease acquired: this instance acts');
    this.emit();
    this.opts.onStartedLeading?.();
  }

  private renewed(stored: LeaseResource, sentAt: number): void {
    this.contact();
    this.current = stored;
    this.observe(stored);
    this.lastRenewSentAt = sentAt;
    this.armDeadline();
  }

  private armDeadline(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    const left = this.lastRenewSentAt + this.timing.renewDeadlineMs - this.mono();
    this.deadlineTimer = setTimeout(() => {
      this.deadlineTimer = undefined;
      if (this.leading && !this.canAct()) this.lose(`no successful renewal within the renew deadline (${this.timing.renewDeadlineMs} ms)`);
    }, Math.max(0, left));
    this.deadlineTimer.unref();
  }

  private lose(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    this.log.warn({ reason }, 'leader lease lost: this instance stops acting');
    this.emit();
    this.opts.onStoppedLeading?.(reason);
  }

  private emit(): void {
    try {
      this.opts.onStatus?.(this.status());
    } catch {
      // observers must not break the election
    }
  }

  /** Watches the lease so a standby notices a release or a take-over without waiting for its next read. */
  private startWatch(): void {
    const watch = this.opts.state.watch(this.kind, { idRegexp: `^${LEASE_ID}$` });
    this.watch = watch;
    void (async () => {
      try {
        for await (const ev of watch) {
          if (ev.type === 'bootstrapped') continue;
          const res = ev.type === 'destroyed' ? undefined : ev.resource;
          if (this.leading) {
            if (res && res.spec.holderInstance !== this.opts.identity.instance) {
              this.lose(`the lease was taken by ${describeHolder(decodeLease(res))}`);
            }
            continue;
          }
          this.observe(res);
          if (res === undefined || res.spec.holderInstance === '') this.wake?.();
        }
      } catch (err) {
        if (!this.stopped) this.log.warn({ err: toCosiError(err, 'watching the leader lease').message }, 'lease watch ended; reading it periodically');
      }
    })();
  }
}

/** `host (pid 12, instance 1b2c…)` for logs. */
export function describeHolder(lease: Pick<LeaseView, 'holderInstance' | 'holderHostname' | 'holderPid'>): string {
  if (lease.holderInstance === '') return 'nobody (released)';
  return `${lease.holderHostname || '?'} (pid ${lease.holderPid}, instance ${lease.holderInstance})`;
}
