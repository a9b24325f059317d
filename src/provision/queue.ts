// The controller's work queue: one item per MachineRequest ID (deduplicated, never run twice at once), bounded
// concurrency across IDs, retry-after timers and per-ID exponential backoff, and a bounded graceful stop.
import { silentLogger, type Logger } from '../log.js';

/** What one run of the handler asks for next. Throwing means "failed": retry with per-ID backoff. */
export type WorkOutcome = { kind: 'done' } | { kind: 'requeue'; afterMs: number };

export const workDone: WorkOutcome = { kind: 'done' };
export function requeueAfter(afterMs: number): WorkOutcome {
  return { kind: 'requeue', afterMs };
}

export interface BackoffPolicy {
  initialMs: number;
  factor: number;
  maxMs: number;
  /** Random extra delay as a fraction of the delay (0.5 = up to +50%). */
  jitter: number;
}

export interface WorkQueueOptions {
  /** Different IDs processed at the same time. Default 1. */
  concurrency?: number;
  /** Default: 0.5 s × 1.5 per failure, capped at 60 s, jitter 0.5 (the Go controller runtime's). */
  backoff?: Partial<BackoffPolicy>;
  /** Random source for jitter (tests pass a seeded one). */
  random?: () => number;
  logger?: Logger;
}

export type WorkHandler = (id: string, signal: AbortSignal) => Promise<WorkOutcome>;

export interface StopResult {
  /** Every in-flight item finished within the bound. */
  drained: boolean;
  /** IDs still running when the bound expired (their signal was aborted). */
  abandoned: string[];
}

export class WorkQueue {
  private readonly concurrency: number;
  private readonly backoff: BackoffPolicy;
  private readonly random: () => number;
  private readonly log: Logger;
  /** IDs waiting to run, in arrival order (never contains a running ID). */
  private readonly queued = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  /** Running IDs that were added again meanwhile: they run once more right after. */
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; at: number }>();
  private readonly failures = new Map<string, number>();
  private readonly abort = new AbortController();
  private idleWaiters: Array<() => void> = [];
  private stopped = false;

  constructor(
    private readonly handler: WorkHandler,
    opts: WorkQueueOptions = {},
  ) {
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    this.backoff = { initialMs: 500, factor: 1.5, maxMs: 60_000, jitter: 0.5, ...opts.backoff };
    this.random = opts.random ?? Math.random;
    this.log = opts.logger ?? silentLogger;
  }

  /** Schedules `id` to run as soon as a slot is free (no-op if already waiting; re-run once if running). */
  add(id: string): void {
    if (this.stopped) return;
    if (this.running.has(id)) {
      this.dirty.add(id);
      return;
    }
    this.queued.add(id);
    this.pump();
  }

  /** Schedules `id` after `ms`; an earlier pending timer for it wins, a later one is replaced. */
  addAfter(id: string, ms: number): void {
    if (this.stopped) return;
    const at = Date.now() + ms;
    const existing = this.timers.get(id);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.timers.delete(id);
      this.add(id);
    }, Math.max(0, ms));
    this.timers.set(id, { timer, at });
  }

  /** IDs currently being processed. */
  inFlight(): string[] {
    return [...this.running.keys()];
  }

  /** Pending retry timers by ID (for diagnostics and tests). */
  scheduled(): string[] {
    return [...this.timers.keys()];
  }

  /** Resolves once nothing is queued or running (retry timers may still be pending). */
  whenIdle(): Promise<void> {
    if (this.queued.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops taking work (queued items and timers are dropped), waits up to `timeoutMs` for in-flight items, then
   * aborts the signal of whatever is still running and returns.
   */
  async stop(timeoutMs: number): Promise<StopResult> {
    this.stopped = true;
    this.queued.clear();
    this.dirty.clear();
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    const inFlight = [...this.running.values()];
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      Promise.allSettled(inFlight).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    if (timer) clearTimeout(timer);
    const abandoned = drained ? [] : [...this.running.keys()];
    this.abort.abort();
    return { drained, abandoned };
  }

  private pump(): void {
    while (!this.stopped && this.running.size < this.concurrency && this.queued.size > 0) {
      const id = this.queued.values().next().value as string;
      this.queued.delete(id);
      this.running.set(id, this.runOne(id));
    }
    if (this.queued.size === 0 && this.running.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async runOne(id: string): Promise<void> {
    // Let the caller's add() return before the handler starts (keeps ordering predictable).
    await Promise.resolve();
    let outcome: WorkOutcome | undefined;
    let failed = false;
    try {
      outcome = await this.handler(id, this.abort.signal);
    } catch (err) {
      failed = true;
      this.log.debug({ request: id, err: err instanceof Error ? err.message : String(err) }, 'work item failed');
    }
    this.running.delete(id);
    if (!this.stopped) {
      if (failed) {
        const n = (this.failures.get(id) ?? 0) + 1;
        this.failures.set(id, n);
        this.replaceTimer(id, this.backoffDelay(n));
      } else {
        this.failures.delete(id);
        if (outcome?.kind === 'requeue') this.replaceTimer(id, outcome.afterMs);
        else this.clearTimer(id);
      }
      if (this.dirty.delete(id)) this.queued.add(id);
    }
    this.pump();
  }

  /** Delay before the n-th retry after consecutive failures. */
  backoffDelay(failures: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * this.backoff.factor ** (failures - 1));
    return Math.round(Math.min(this.backoff.maxMs, base * (1 + this.backoff.jitter * this.random())));
  }

  private replaceTimer(id: string, ms: number): void {
    this.clearTimer(id);
    this.addAfter(id, ms);
  }

  private clearTimer(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t.timer);
    this.timers.delete(id);
  }
}
