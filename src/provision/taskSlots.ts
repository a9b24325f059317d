// Slots per Proxmox write: how many tasks this provider runs at once on one node and on one storage. A request
// holds slots only from the call that starts a task to the end of that task, never while it waits for anything
// else, so a request waiting on a long task (or on another request's ISO download) does not hold back quick work.
// docs/performance.md ("Scheduling") explains the defaults.

export interface TaskSlotLimits {
  /** Tasks at once per node (create, seed upload, start, stop, destroy, seed removal). */
  perNode: number;
  /** Tasks at once per storage: VM creates allocating disks on it, ISO downloads to it. */
  perStorage: number;
}

/** PVE's own parallelism per node for bulk guest actions and the HA manager (datacenter.cfg `max_workers`). */
export const DEFAULT_TASK_SLOT_LIMITS: TaskSlotLimits = { perNode: 4, perStorage: 4 };

/** What one task occupies: its node (none for a download), and the storages it allocates on or downloads to. */
export interface SlotClaim {
  node?: string;
  storages?: readonly string[];
}

/**
 * The slot key of a storage: cluster-wide for shared storage (PVE takes a cluster lock to allocate on it), per node
 * for local storage (a lock file on that node). `kind` keeps downloads apart from disk allocations.
 */
export function storageSlot(node: string, storage: string, shared: boolean, kind: 'disk' | 'download' = 'disk'): string {
  return `${kind}:${shared ? storage : `${node}/${storage}`}`;
}

interface Waiter {
  keys: string[];
  resolve: (release: () => void) => void;
  reject: (err: unknown) => void;
}

export class TaskSlots {
  readonly limits: TaskSlotLimits;
  readonly #held = new Map<string, number>();
  readonly #peak = new Map<string, number>();
  /** Claims waiting, in arrival order. A claim is granted as a whole, once every key it needs has room. */
  #waiting: Waiter[] = [];
  #lastActivityAt = 0;

  constructor(limits: Partial<TaskSlotLimits> = {}) {
    this.limits = { ...DEFAULT_TASK_SLOT_LIMITS, ...limits };
    for (const [k, v] of Object.entries(this.limits)) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`task slot limit ${k} must be a whole number >= 1 (got ${v})`);
    }
  }

  /**
   * Waits until the node and every storage of `claim` have a free slot, takes them all at once and resolves with
   * the function that gives them back. Rejects (taking nothing) when `signal` aborts first.
   */
  acquire(claim: SlotClaim, signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    const keys = [...(claim.node === undefined ? [] : [`node:${claim.node}`]), ...new Set(claim.storages ?? [])];
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { keys, resolve, reject };
      const onAbort = (): void => {
        this.#waiting = this.#waiting.filter((w) => w !== waiter);
        reject(signal?.reason ?? new Error('aborted'));
        this.#grant();
      };
      waiter.resolve = (release) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(release);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(waiter);
      this.#grant();
    });
  }

  /** Runs `fn` holding the claim's slots. */
  async run<T>(claim: SlotClaim, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(claim, signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Slots of `key` held now (`node:pve1`, a storageSlot key). */
  inUse(key: string): number {
    return this.#held.get(key) ?? 0;
  }

  /** The most slots of `key` ever held at once. */
  peak(key: string): number {
    return this.#peak.get(key) ?? 0;
  }

  /**
   * Whether Proxmox work is going on: a slot held or wanted now, or one given back within the last `quietMs` (a
   * request between two tasks counts as busy). Background work (housekeeping) waits while this is true.
   */
  busy(quietMs = 30_000, now = Date.now()): boolean {
    for (const n of this.#held.values()) if (n > 0) return true;
    return this.#waiting.length > 0 || now - this.#lastActivityAt < quietMs;
  }

  /** Claims waiting for a slot. */
  waiting(): number {
    return this.#waiting.length;
  }

  #limit(key: string): number {
    return key.startsWith('node:') ? this.limits.perNode : this.limits.perStorage;
  }

  /**
   * Grants every waiting claim that fits, oldest first. A claim that does not fit keeps its place in line for the
   * keys that are full (no younger claim takes them first); younger claims on other keys go ahead (a full node does
   * not hold back work on another node).
   */
  #grant(): void {
    const blocked = new Set<string>();
    const still: Waiter[] = [];
    for (const w of this.#waiting) {
      const fits = w.keys.every((k) => !blocked.has(k) && this.inUse(k) < this.#limit(k));
      if (!fits) {
        for (const k of w.keys) if (blocked.has(k) || this.inUse(k) >= this.#limit(k)) blocked.add(k);
        still.push(w);
        continue;
      }
      for (const k of w.keys) {
        const n = this.inUse(k) + 1;
        this.#held.set(k, n);
        if (n > this.peak(k)) this.#peak.set(k, n);
      }
      this.#lastActivityAt = Date.now();
      let released = false;
      w.resolve(() => {
        if (released) return;
        released = true;
        this.#lastActivityAt = Date.now();
        for (const k of w.keys) this.#held.set(k, this.inUse(k) - 1);
        this.#grant();
      });
    }
    this.#waiting = still;
  }
}
