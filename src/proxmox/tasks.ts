// Waiting for Proxmox tasks: adaptive status polling on the UPID's own node, per-type deadlines, success rules
// (`OK`, `WARNINGS: N`), failures with the task log's tail, vanished tasks, and unreachable nodes as "unknown".
import { setTimeout as sleepMs } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { PveClient } from './client.js';
import {
  PveConnectionError,
  PveError,
  PveTaskError,
  PveTaskTimeoutError,
  isNoSuchTask,
  isNodeUnreachable,
} from './errors.js';
import type { TaskStatus } from './types.js';
import { parseUpid } from './upid.js';

/** The client calls the waiter needs (a PveClient satisfies it). */
export type TaskClient = Pick<PveClient, 'taskStatus' | 'taskLog'>;

export interface TaskResult {
  upid: string;
  node: string;
  type: string;
  id: string;
  /** `OK` or `WARNINGS: N`. */
  exitstatus: string;
  /** N of `WARNINGS: N`; 0 for `OK`. */
  warnings: number;
}

export interface TaskProgress {
  /** `unknown` when the poll failed transiently (node unreachable, connection lost). */
  status: 'running' | 'stopped' | 'unknown';
  elapsedMs: number;
  task?: TaskStatus;
}

/**
 * How a wait ended: `ok` / `warnings` (PVE's success), `failed` (another exit status), `vanished` (the node no
 * longer knows the task), `timeout` (the deadline passed while it ran or its node was unreachable).
 */
export type TaskOutcome = 'ok' | 'warnings' | 'failed' | 'vanished' | 'timeout';

export interface TaskWaitClock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export interface WaitForTaskOptions {
  /** Give up after this long (default: by task type, see defaultTaskDeadlineMs). */
  deadlineMs?: number;
  signal?: AbortSignal;
  onProgress?: (p: TaskProgress) => void;
  /**
   * Milliseconds to wait before poll number `attempt + 1` (attempt counts from 0); with it the first poll goes at
   * once. Default: the duration estimate when there is one, else the no-history plan (NO_HISTORY_FIRST_POLL_MS).
   */
  pollSchedule?: (attempt: number) => number;
  /** Time source and sleep; for tests. */
  clock?: TaskWaitClock;
  logger?: Logger;
  /** How many log lines to attach to a failure (default 20). */
  logTailLines?: number;
  /**
   * Told once per wait that reached an outcome, with the task type and the seconds waited (on `clock`).
   * Not called when the wait was aborted or a status call failed for good. Errors it throws are ignored.
   */
  onFinished?: (type: string, outcome: TaskOutcome, seconds: number) => void;
  /**
   * Durations seen so far, per node and task type. When it holds an estimate for this task (and no pollSchedule is
   * given), the first poll goes at that estimate instead of the back-off (see estimatedPoll); a successful wait
   * records its duration. Pass it only for a task started just before the wait (a resumed wait would record a
   * duration too short).
   */
  durations?: TaskDurations;
}

const MINUTE = 60_000;
const DEADLINES: Record<string, number> = {
  qmcreate: 5 * MINUTE,
  download: 30 * MINUTE,
  imgcopy: 5 * MINUTE,
  qmstart: 2 * MINUTE,
  hastart: 2 * MINUTE,
  qmstop: 1 * MINUTE,
  hastop: 1 * MINUTE,
  qmshutdown: 5 * MINUTE,
  qmdestroy: 5 * MINUTE,
  qmconfig: 1 * MINUTE,
};

/** How long a task of `type` may reasonably run before we stop waiting. */
export function defaultTaskDeadlineMs(type: string): number {
  return DEADLINES[type] ?? 10 * MINUTE;
}

/**
 * A task with no duration history yet (the first of its type since start, or many started at once): polls every
 * second for 5 s, then at 6.5, 8.5 and 11 s, then every 3 s. A 1–4 s task (create, seed upload, start, stop,
 * destroy) costs 2–4 polls instead of the 5–6 of a back-off from 100 ms and is noticed at most 1 s late. A download
 * (a Talos ISO: tens of seconds) is first polled at 5 s, then every 3 s: a 20 s download costs 7 polls
 * (docs/performance.md, "Task waits").
 */
export const NO_HISTORY_FIRST_POLL_MS = 1_000;
const NO_HISTORY_INTERVALS_MS = [1_000, 1_000, 1_000, 1_000, 1_500, 2_000, 2_500];
const NO_HISTORY_FIRST_POLL_BY_TYPE: Record<string, number> = { download: 5_000 };
const noHistorySchedule =
  (type: string) =>
  (attempt: number): number =>
    type in NO_HISTORY_FIRST_POLL_BY_TYPE ? 3_000 : (NO_HISTORY_INTERVALS_MS[attempt] ?? 3_000);

/** Exponential polling: `initialMs`, doubling, capped at `maxMs` (defaults 100 ms → 3 s). */
export function backoffSchedule(opts: { initialMs?: number; maxMs?: number; factor?: number } = {}): (attempt: number) => number {
  const initial = opts.initialMs ?? 100;
  const max = opts.maxMs ?? 3_000;
  const factor = opts.factor ?? 2;
  return (attempt) => Math.min(max, initial * factor ** Math.min(attempt, 30));
}

/**
 * How long tasks took, per node and type, as this process saw them (ms from the start of the wait, right after the
 * call that started the task). A wait records the middle between the last poll that saw the task running and the one
 * that saw it stopped; when its first poll already saw it stopped, 90% of that poll's time (the estimate was too long,
 * so it drifts down). The estimate is the median of the last `window` records of that type on that node, else of
 * that type on any node, else none (the wait then uses the back-off).
 */
export class TaskDurations {
  readonly #byNodeType = new Map<string, number[]>();
  readonly #byType = new Map<string, number[]>();

  constructor(private readonly window = 5) {}

  record(node: string, type: string, ms: number): void {
    if (!(ms >= 0)) return;
    push(this.#byNodeType, `${node}\0${type}`, ms, this.window);
    push(this.#byType, type, ms, this.window);
  }

  /** Milliseconds a task of `type` on `node` is expected to take, or undefined before the first one was seen. */
  estimate(node: string, type: string): number | undefined {
    return median(this.#byNodeType.get(`${node}\0${type}`) ?? this.#byType.get(type));
  }
}

function push(map: Map<string, number[]>, key: string, ms: number, window: number): void {
  const list = map.get(key) ?? [];
  list.push(ms);
  if (list.length > window) list.shift();
  map.set(key, list);
}

function median(list: number[] | undefined): number | undefined {
  if (!list?.length) return undefined;
  const sorted = [...list].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * The poll plan when the task's duration is estimated (docs/performance.md, "Task waits", has the measurements):
 * the first poll at 95% of the estimate, then polls every 5% of the estimate (at least 100 ms, at most 1 s) while the task is
 * near its estimate, spacing out to 3 s as it overruns (a quarter of the overrun).
 */
export const estimatedPoll = {
  firstMs: (estimateMs: number): number => Math.round(0.95 * estimateMs),
  nextMs: (estimateMs: number, elapsedMs: number): number => {
    const step = Math.min(1_000, Math.max(100, 0.05 * estimateMs));
    return Math.round(Math.min(3_000, Math.max(step, (elapsedMs - estimateMs) / 4)));
  },
};

const realClock: TaskWaitClock = {
  now: () => Date.now(),
  sleep: async (ms, signal) => {
    await sleepMs(ms, undefined, signal ? { signal } : {});
  },
};

const WARNINGS_RE = /^WARNINGS: (\d+)$/;

/** Success per PVE's own rule: `OK` or `WARNINGS: N`. Returns the warning count, or undefined for a failure. */
export function taskWarnings(exitstatus: string | undefined): number | undefined {
  if (exitstatus === 'OK') return 0;
  const m = exitstatus === undefined ? null : WARNINGS_RE.exec(exitstatus);
  return m ? Number(m[1]) : undefined;
}

function isTransient(err: unknown): boolean {
  if (err instanceof PveConnectionError) return true;
  if (isNodeUnreachable(err)) return true;
  return err instanceof PveError && [502, 503, 504].includes(err.status);
}

/** Polls the task until it stops; resolves on success, throws PveTaskError / PveTaskTimeoutError otherwise. */
export async function waitForTask(client: TaskClient, upid: string, opts: WaitForTaskOptions = {}): Promise<TaskResult> {
  const onFinished = opts.onFinished;
  if (!onFinished) return pollTask(client, upid, opts);
  const clock = opts.clock ?? realClock;
  const started = clock.now();
  const report = (outcome: TaskOutcome): void => {
    try {
      onFinished(parseUpid(upid).type, outcome, Math.max(0, clock.now() - started) / 1000);
    } catch {
      // An observer must not change the wait's result.
    }
  };
  try {
    const result = await pollTask(client, upid, opts);
    report(result.warnings > 0 ? 'warnings' : 'ok');
    return result;
  } catch (err) {
    if (err instanceof PveTaskTimeoutError) report('timeout');
    else if (err instanceof PveTaskError) report(err.vanished ? 'vanished' : 'failed');
    throw err;
  }
}

async function pollTask(client: TaskClient, upid: string, opts: WaitForTaskOptions): Promise<TaskResult> {
  const info = parseUpid(upid);
  const clock = opts.clock ?? realClock;
  const schedule = opts.pollSchedule ?? noHistorySchedule(info.type);
  const deadlineMs = opts.deadlineMs ?? defaultTaskDeadlineMs(info.type);
  const log = (opts.logger ?? silentLogger).child({ task: info.type, node: info.node, id: info.id });
  const started = clock.now();
  let lastStatus = 'running';
  const estimate = opts.pollSchedule ? undefined : opts.durations?.estimate(info.node, info.type);
  /** When a poll last saw the task running (ms into the wait): the task ended between it and the poll that saw it stopped. */
  let lastRunningMs: number | undefined;
  if (estimate !== undefined) await clock.sleep(Math.min(deadlineMs, estimatedPoll.firstMs(estimate)), opts.signal);
  else if (!opts.pollSchedule) {
    const first = NO_HISTORY_FIRST_POLL_BY_TYPE[info.type] ?? NO_HISTORY_FIRST_POLL_MS;
    await clock.sleep(Math.min(deadlineMs, first), opts.signal);
  }

  for (let attempt = 0; ; attempt++) {
    opts.signal?.throwIfAborted();
    let status: TaskStatus | undefined;
    try {
      status = await client.taskStatus(upid);
    } catch (err) {
      if (isNoSuchTask(err)) {
        log.warn({ upid }, 'proxmox task vanished (no such task); its outcome is unknown');
        throw new PveTaskError({
          upid,
          type: info.type,
          node: info.node,
          exitstatus: 'no such task',
          logTail: [],
          vanished: true,
        });
      }
      if (!isTransient(err)) throw err;
      lastStatus = 'unknown';
      log.debug({ upid, err: (err as Error).message }, 'proxmox task status unknown for now; polling again');
      opts.onProgress?.({ status: 'unknown', elapsedMs: clock.now() - started });
    }

    if (status) {
      lastStatus = status.status;
      const stopped = status.status === 'stopped';
      if (!stopped) lastRunningMs = clock.now() - started;
      opts.onProgress?.({ status: stopped ? 'stopped' : 'running', elapsedMs: clock.now() - started, task: status });
      if (stopped) {
        const exitstatus = status.exitstatus ?? 'unexpected status';
        const warnings = taskWarnings(exitstatus);
        if (warnings !== undefined) {
          if (warnings > 0) log.info({ upid, warnings }, 'proxmox task finished with warnings');
          const endMs = clock.now() - started;
          opts.durations?.record(info.node, info.type, lastRunningMs === undefined ? 0.9 * endMs : (lastRunningMs + endMs) / 2);
          return { upid, node: info.node, type: info.type, id: info.id, exitstatus, warnings };
        }
        const logTail = await fetchTaskLogTail(client, upid, opts.logTailLines ?? 20);
        throw new PveTaskError({ upid, type: info.type, node: info.node, exitstatus, logTail });
      }
    }

    const elapsed = clock.now() - started;
    if (elapsed >= deadlineMs) {
      throw new PveTaskTimeoutError({ upid, type: info.type, node: info.node, deadlineMs, lastStatus });
    }
    const next = estimate !== undefined ? estimatedPoll.nextMs(estimate, elapsed) : schedule(attempt);
    await clock.sleep(Math.max(0, Math.min(next, deadlineMs - elapsed)), opts.signal);
  }
}

/** The last `lines` lines of a task's log, oldest first; empty when the log cannot be read. */
export async function fetchTaskLogTail(client: TaskClient, upid: string, lines = 20): Promise<string[]> {
  try {
    const first = await client.taskLog(upid, { start: 0, limit: 50 });
    let entries = first.lines;
    if (first.total > entries.length && first.total > 50) {
      const start = Math.max(0, first.total - lines);
      entries = (await client.taskLog(upid, { start, limit: lines })).lines;
    }
    return entries
      .map((l) => l.t)
      .filter((t) => t !== 'no content')
      .slice(-lines);
  } catch {
    return [];
  }
}
