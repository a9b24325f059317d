// Waiting in tests without wall-clock deadlines. A wait resolves on an event, or re-checks its condition whenever
// something the condition depends on changes (a store write, a simulator request, a log line, a process exit, a
// callback, the simulated clock). It has no timeout of its own: vitest's per-test timeout is the only outer bound,
// and the test context's `signal` (aborted when that timeout fires) ends the wait so that the test's clean-up runs.
// A wait whose condition can no longer become true (the daemon exited, ...) fails at once with the reason.
import type { ChildProcess } from 'node:child_process';
import type { CosiStore } from '../../src/sim/omni/store.js';
import type { SimClock } from '../../src/sim/proxmox/clock.js';
import type { PveSim } from '../../src/sim/proxmox/sim.js';

export type Wake = () => void;
/** A source of change: subscribes `wake`, returns the function that unsubscribes it. */
export type Trigger = (wake: Wake) => () => void;

export interface WaitOptions {
  /** What is awaited, for the failure message; a function is evaluated when the wait fails (shows the state then). */
  what: string | (() => string);
  /** What can make the condition true: it is re-checked whenever one of these fires. */
  on: Trigger[];
  /** Returns why the condition can no longer become true (e.g. the daemon exited); the wait then fails at once. */
  impossible?: () => string | undefined;
  /** The test context's signal (aborted when the test times out): the wait rejects and stops listening. */
  signal?: AbortSignal | undefined;
}

type Falsy = undefined | null | false;

function describe(what: WaitOptions['what']): string {
  try {
    return typeof what === 'function' ? what() : what;
  } catch (err) {
    return `(describing the wait failed: ${err instanceof Error ? err.message : String(err)})`;
  }
}

/** Resolves with the first truthy value of `check` (checked now and after every trigger). */
export function waitFor<T>(check: () => T | Falsy, opts: WaitOptions): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const unsubscribe: Array<() => void> = [];
    let settled = false;
    const finish = (settle: () => void) => {
      if (settled) return;
      settled = true;
      for (const u of unsubscribe) u();
      opts.signal?.removeEventListener('abort', onAbort);
      settle();
    };
    const evaluate = () => {
      if (settled) return;
      let value: T | Falsy;
      try {
        value = check();
      } catch (err) {
        finish(() => reject(err));
        return;
      }
      if (value !== undefined && value !== null && value !== false) {
        const v = value;
        finish(() => resolve(v));
        return;
      }
      const reason = opts.impossible?.();
      if (reason !== undefined) finish(() => reject(new Error(`waiting for ${describe(opts.what)}: ${reason}`)));
    };
    function onAbort() {
      const message = `gave up waiting for ${describe(opts.what)} (${abortText(opts.signal)})`;
      // vitest has already reported the timeout; this line says what the test was waiting for at that moment.
      console.error(message);
      finish(() => reject(new Error(message)));
    }
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    for (const subscribe of opts.on) unsubscribe.push(subscribe(evaluate));
    evaluate();
  });
}

/**
 * For conditions only an asynchronous call can read (a server in another process): checks, then again after
 * `everyMs` of wall time, with no deadline. Prefer `waitFor` with a trigger wherever a change can be observed.
 */
export async function pollFor<T>(
  check: () => Promise<T | Falsy>,
  opts: { what: string | (() => string); everyMs?: number; signal?: AbortSignal | undefined },
): Promise<T> {
  for (;;) {
    if (opts.signal?.aborted) {
      const message = `gave up waiting for ${describe(opts.what)} (${abortText(opts.signal)})`;
      console.error(message);
      throw new Error(message);
    }
    const value = await check();
    if (value !== undefined && value !== null && value !== false) return value;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, opts.everyMs ?? 50);
      opts.signal?.addEventListener('abort', done, { once: true });
      function done() {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', done);
        resolve();
      }
    });
  }
}

/** Rejects when `signal` aborts (for racing a promise that has no abort support against the test's timeout). */
export function whenAborted(signal: AbortSignal | undefined, what: string): Promise<never> {
  return new Promise<never>((_, reject) => {
    if (!signal) return;
    const fail = () => reject(new Error(`gave up waiting for ${what} (${abortText(signal)})`));
    if (signal.aborted) fail();
    else signal.addEventListener('abort', fail, { once: true });
  });
}

function abortText(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}

// --- triggers --------------------------------------------------------------------------------------------------

/**
 * Every write to the in-process Omni's store. The wake-up comes one macrotask after the write, behind the store's
 * own watch deliveries (also setImmediate), so that a test resuming after the wait also sees what its watches
 * recorded about that write.
 */
export function storeChanges(store: CosiStore): Trigger {
  return (wake) => {
    let pending: NodeJS.Immediate | undefined;
    const unsubscribe = store.onChange(() => {
      pending ??= setImmediate(() => {
        pending = undefined;
        wake();
      });
    });
    return () => {
      unsubscribe();
      if (pending) clearImmediate(pending);
    };
  };
}

/** Every request the Proxmox simulator answered. */
export function simChanges(sim: PveSim): Trigger {
  return (wake) => sim.onChange(() => wake());
}

/** Output, exit and the end of the output of a child process. */
export function processActivity(child: ChildProcess): Trigger {
  return (wake) => {
    child.stdout?.on('data', wake);
    child.stdout?.on('end', wake);
    child.stderr?.on('data', wake);
    child.on('exit', wake);
    child.on('close', wake);
    return () => {
      child.stdout?.off('data', wake);
      child.stdout?.off('end', wake);
      child.stderr?.off('data', wake);
      child.off('exit', wake);
      child.off('close', wake);
    };
  };
}

/** Every `ms` of simulated time (for conditions that only the passing of simulated time can make true). */
export function simulatedTime(clock: SimClock, ms: number): Trigger {
  return (wake) => {
    let stopped = false;
    void (async () => {
      while (!stopped) {
        await clock.sleep(ms);
        if (!stopped) wake();
      }
    })();
    return () => {
      stopped = true;
    };
  };
}

/** A hand-made event source: code under test (a test double, a callback) calls `notify()` when something changed. */
export class Changes {
  private readonly listeners = new Set<Wake>();
  notify = (): void => {
    for (const l of [...this.listeners]) l();
  };
  readonly trigger: Trigger = (wake) => {
    this.listeners.add(wake);
    return () => this.listeners.delete(wake);
  };
}
