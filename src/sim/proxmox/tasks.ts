// Worker tasks: UPIDs, per-node task lists, durations, logs and exit statuses, with injectable outcomes.
import type { Caller } from './auth.js';
import type { SimClock } from './clock.js';

/** What a fault makes of a task: fail with a message, end with warnings, never end, vanish, or end oddly. */
export type TaskOutcomeOverride =
  | { kind: 'fail'; message: string }
  | { kind: 'warnings'; count: number }
  | { kind: 'stuck' }
  | { kind: 'vanish' }
  | { kind: 'unexpected' };

export const defaultTaskDurations = {
  qmcreate: 3000,
  download: 20000,
  imgcopy: 1000,
  imgdel: 500,
  qmstart: 2000,
  qmstop: 1000,
  qmshutdown: 5000,
  qmdestroy: 3000,
  qmconfig: 200,
  hastart: 1000,
  hastop: 1000,
} as const satisfies Readonly<Record<string, number>>;

/**
 * What limits a node under parallel load (docs/simulator.md, "Contention"). Durations are fixed when a task starts.
 */
export interface ContentionModel {
  /**
   * Simulated ms one disk allocation of a VM create holds its storage's lock (PVE allocates each volume under a
   * storage lock: per node for local storage, cluster-wide for shared storage). 0 = no lock. Default 300.
   */
  storageAllocMs: number;
  /** How long an allocation waits for that lock before the create fails (PVE: 10 s for both kinds). */
  storageLockTimeoutMs: number;
  /**
   * Tasks a node runs at full speed. A task started while N tasks (itself included) run on its node takes its
   * duration × N / capacity when N is above it (an approximation of the node's CPU and I/O shared by its tasks). 0 = no
   * slowdown. Default 0.
   */
  nodeTaskCapacity: number;
}

/** Tasks that mostly wait for the guest (a graceful shutdown): no load on the node, and not slowed by it. */
const waitingTasks = new Set(['qmshutdown']);

export const defaultContention: ContentionModel = { storageAllocMs: 300, storageLockTimeoutMs: 10_000, nodeTaskCapacity: 0 };

/** One disk allocation of a task: the storage lock it takes, and the error PVE reports when that lock times out. */
export interface TaskAllocation {
  /** `<node>/<storage>` for local storage, `<storage>` for shared storage. */
  lock: string;
  timeoutMessage: string;
}

/** The body of a task: runs when the task's time is up. Throwing fails the task with the error's message. */
export type TaskWork = (log: (line: string) => void) => void | { warnings: number };

export interface TaskSpec {
  node: string;
  type: string;
  id: string;
  caller: Caller;
  work: TaskWork;
  /** Cleanup when the task fails or is interrupted (e.g. delete a half-created VM). */
  onFailure?: (message: string) => void;
  /** Called when the task starts, before the UPID is returned. */
  durationMs?: number;
  vmid?: number;
  /** Disk allocations at the start of the task, in order, each under its storage lock (ContentionModel). */
  allocations?: readonly TaskAllocation[];
}

export interface SimTask {
  upid: string;
  node: string;
  type: string;
  id: string;
  /** authid: `user@realm` or `user@realm!token`. */
  user: string;
  pid: number;
  pstart: number;
  starttime: number;
  startedAtMs: number;
  dueAtMs: number;
  endtime?: number;
  status: 'running' | 'stopped';
  exitstatus?: string;
  log: string[];
  vmid?: number;
  override?: TaskOutcomeOverride;
  work: TaskWork;
  onFailure?: (message: string) => void;
}

export interface TaskFilter {
  type?: string;
  vmid?: number;
  node?: string;
  status?: 'running' | 'stopped';
}

export class TaskBoard {
  private readonly tasks: SimTask[] = [];
  private readonly pidCounters = new Map<string, number>();
  readonly durations: Record<string, number>;
  readonly contention: ContentionModel;
  /** When each storage lock is free again (simulated ms). */
  private readonly lockFreeAt = new Map<string, number>();

  constructor(
    private readonly clock: SimClock,
    durations: Readonly<Record<string, number>>,
    private readonly pickOverride: (t: { type: string; node: string; vmid?: number }) => TaskOutcomeOverride | undefined,
    private readonly nodeBootMs: (node: string) => number,
    contention: Partial<ContentionModel> = {},
  ) {
    this.durations = { ...defaultTaskDurations, ...durations };
    this.contention = { ...defaultContention, ...contention };
  }

  /**
   * Takes the storage locks of `allocations` one after the other from `now`: how long the task waited for them,
   * and the timeout error when a lock stayed held past storageLockTimeoutMs.
   */
  private allocate(allocations: readonly TaskAllocation[], now: number): { waitedMs: number; failure?: string } {
    const hold = this.contention.storageAllocMs;
    if (hold <= 0) return { waitedMs: 0 };
    let t = now;
    let waited = 0;
    for (const a of allocations) {
      const free = Math.max(t, this.lockFreeAt.get(a.lock) ?? 0);
      if (free - t > this.contention.storageLockTimeoutMs) {
        return { waitedMs: waited + this.contention.storageLockTimeoutMs, failure: a.timeoutMessage };
      }
      waited += free - t;
      t = free + hold;
      this.lockFreeAt.set(a.lock, t);
    }
    return { waitedMs: waited };
  }

  /** Running tasks on `node` that load it. */
  private running(node: string): number {
    return this.tasks.filter((t) => t.node === node && t.status === 'running' && !waitingTasks.has(t.type)).length;
  }

  start(spec: TaskSpec): SimTask {
    const now = this.clock.now();
    const pid = (this.pidCounters.get(spec.node) ?? 0x1a2b00 + spec.node.length * 0x1000) + 1;
    this.pidCounters.set(spec.node, pid);
    // pstart: clock ticks (1/100 s) since the node booted, as /proc reports it.
    const pstart = Math.max(0, Math.floor((now - this.nodeBootMs(spec.node)) / 10));
    const starttime = Math.floor(now / 1000);
    const upid = `UPID:${spec.node}:${hex(pid, 8)}:${hex(pstart, 8)}:${hex(starttime, 8)}:${spec.type}:${spec.id}:${spec.caller.authid}:`;
    let override = this.pickOverride({ type: spec.type, node: spec.node, ...(spec.vmid !== undefined ? { vmid: spec.vmid } : {}) });
    const base = spec.durationMs ?? this.durations[spec.type] ?? 1000;
    const capacity = this.contention.nodeTaskCapacity;
    const load = this.running(spec.node) + 1;
    const slowed = capacity > 0 && load > capacity && !waitingTasks.has(spec.type) ? Math.round((base * load) / capacity) : base;
    const lock = spec.allocations?.length ? this.allocate(spec.allocations, now) : { waitedMs: 0 };
    let duration = override?.kind === 'stuck' ? Infinity : lock.waitedMs + slowed;
    if (lock.failure !== undefined && override === undefined) {
      override = { kind: 'fail', message: lock.failure };
      duration = lock.waitedMs;
    }
    const task: SimTask = {
      upid,
      node: spec.node,
      type: spec.type,
      id: spec.id,
      user: spec.caller.authid,
      pid,
      pstart,
      starttime,
      startedAtMs: now,
      dueAtMs: now + duration,
      status: 'running',
      log: [],
      work: spec.work,
      ...(spec.vmid !== undefined ? { vmid: spec.vmid } : {}),
      ...(override ? { override } : {}),
      ...(spec.onFailure ? { onFailure: spec.onFailure } : {}),
    };
    this.tasks.push(task);
    return task;
  }

  /** Finishes every task whose time is up, in due order. */
  runDue(now = this.clock.now()): void {
    for (;;) {
      const next = this.tasks
        .filter((t) => t.status === 'running' && t.dueAtMs <= now)
        .sort((a, b) => a.dueAtMs - b.dueAtMs || a.startedAtMs - b.startedAtMs)[0];
      if (!next) return;
      this.finish(next);
    }
  }

  /** Makes running tasks held by a `stuck` outcome due at `now`; returns how many. */
  releaseStuck(filter: TaskFilter, now: number): number {
    let n = 0;
    for (const t of this.list({ ...filter, status: 'running' })) {
      if (t.override?.kind !== 'stuck') continue;
      delete t.override;
      t.dueAtMs = now;
      n++;
    }
    return n;
  }

  /** The earliest due time of a running task that will finish by itself. */
  nextDue(): number | undefined {
    const due = this.tasks.filter((t) => t.status === 'running' && Number.isFinite(t.dueAtMs)).map((t) => t.dueAtMs);
    return due.length ? Math.min(...due) : undefined;
  }

  private finish(task: SimTask): void {
    const log = (line: string) => task.log.push(line);
    const o = task.override;
    task.endtime = Math.floor(Math.max(task.dueAtMs, task.startedAtMs) / 1000);
    if (o?.kind === 'fail') {
      this.fail(task, o.message);
      return;
    }
    try {
      const result = task.work(log);
      if (o?.kind === 'unexpected') {
        task.status = 'stopped';
        task.exitstatus = 'unexpected status';
      } else {
        const warnings = (result?.warnings ?? 0) + (o?.kind === 'warnings' ? o.count : 0);
        if (o?.kind === 'warnings') for (let i = 0; i < o.count; i++) log('WARN: injected warning');
        const last = warnings > 0 ? `TASK WARNINGS: ${warnings}` : 'TASK OK';
        log(last);
        task.status = 'stopped';
        task.exitstatus = warnings > 0 ? `WARNINGS: ${warnings}` : 'OK';
      }
    } catch (err) {
      this.fail(task, err instanceof Error ? err.message : String(err));
    }
    if (o?.kind === 'vanish') this.forget(task);
  }

  private fail(task: SimTask, message: string): void {
    const text = message.replace(/\n+$/, '');
    task.onFailure?.(text);
    task.log.push(`TASK ERROR: ${text}`);
    task.status = 'stopped';
    task.exitstatus = text.replace(/\n/g, ' ');
    if (task.endtime === undefined) task.endtime = Math.floor(this.clock.now() / 1000);
  }

  /** DELETE /tasks/{upid}: the worker is killed. */
  interrupt(task: SimTask): void {
    if (task.status !== 'running') return;
    task.endtime = Math.floor(this.clock.now() / 1000);
    this.fail(task, 'received interrupt');
  }

  forget(task: SimTask): void {
    const i = this.tasks.indexOf(task);
    if (i >= 0) this.tasks.splice(i, 1);
  }

  /** Tasks are only known to the node that runs them. */
  find(node: string, upid: string): SimTask | undefined {
    return this.tasks.find((t) => t.upid === upid && t.node === node);
  }

  list(filter: TaskFilter = {}): SimTask[] {
    return this.tasks.filter(
      (t) =>
        (filter.type === undefined || t.type === filter.type) &&
        (filter.vmid === undefined || t.vmid === filter.vmid) &&
        (filter.node === undefined || t.node === filter.node) &&
        (filter.status === undefined || t.status === filter.status),
    );
  }

  /** Every task on a node (used when a node is rebuilt and loses its task history). */
  forgetNode(node: string): void {
    for (const t of this.tasks.filter((x) => x.node === node)) this.forget(t);
  }
}

function hex(n: number, width: number): string {
  return n.toString(16).toUpperCase().padStart(width, '0');
}

/** PVE's UPID grammar; the id may be empty. */
export const upidPattern =
  /^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$/;
