import { describe, expect, it } from 'vitest';
import { WorkQueue, requeueAfter, workDone, type WorkOutcome } from '../../src/provision/queue.js';
import { Changes, waitFor } from '../helpers/wait.js';

/** Every run a handler in these tests starts (the queue's only observable activity). */
const started = new Changes();

/** A handler whose runs stay open until the test releases them. */
function gatedHandler() {
  const open = new Map<string, Array<(o: WorkOutcome) => void>>();
  const runs: string[] = [];
  let concurrent = 0;
  let maxConcurrent = 0;
  const handler = (id: string) =>
    new Promise<WorkOutcome>((resolve) => {
      runs.push(id);
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      open.set(id, [...(open.get(id) ?? []), (o) => {
        concurrent--;
        resolve(o);
      }]);
      started.notify();
    });
  const release = (id: string, outcome: WorkOutcome = workDone) => {
    const list = open.get(id) ?? [];
    const next = list.shift();
    if (!next) throw new Error(`${id} is not running`);
    next(outcome);
  };
  return { handler, runs, release, running: () => [...open.entries()].filter(([, l]) => l.length > 0).map(([id]) => id), max: () => maxConcurrent };
}

/** Waits until `check` holds, re-checked whenever a handler run starts (no deadline: the test's timeout is the bound). */
function until(check: () => boolean): Promise<unknown> {
  return waitFor(() => check() || undefined, { what: String(check), on: [started.trigger] });
}

describe('WorkQueue', () => {
  it('never runs more than `concurrency` IDs at once and never one ID twice at once', async () => {
    const g = gatedHandler();
    const q = new WorkQueue(g.handler, { concurrency: 2 });
    // c and d are queued twice: deduplicated.
    for (const id of ['a', 'b', 'c', 'd', 'c', 'd']) q.add(id);
    await until(() => g.running().length === 2);
    expect(g.running()).toEqual(['a', 'b']);
    q.add('a'); // while running: one more run after this one
    q.add('a');
    g.release('a');
    await until(() => g.runs.length === 3);
    expect(g.runs).toEqual(['a', 'b', 'c']);
    g.release('b');
    g.release('c');
    await until(() => g.runs.length === 5);
    expect(g.runs).toEqual(['a', 'b', 'c', 'd', 'a']);
    g.release('d');
    g.release('a');
    await q.whenIdle();
    expect(g.runs).toHaveLength(5);
    expect(g.max()).toBe(2);
  });

  it('retries failures with growing per-ID backoff and honours retry-after', async () => {
    const delays: number[] = [];
    let failures = 0;
    let last = Date.now();
    const q = new WorkQueue(
      async (id) => {
        const now = Date.now();
        delays.push(now - last);
        last = now;
        started.notify();
        if (id === 'fail' && failures++ < 3) throw new Error('boom');
        return workDone;
      },
      { backoff: { initialMs: 5, factor: 2, maxMs: 1000, jitter: 0 } },
    );
    q.add('fail');
    await until(() => delays.length === 4);
    expect(q.backoffDelay(1)).toBe(5);
    expect(q.backoffDelay(3)).toBe(20);
    expect(q.backoffDelay(30)).toBe(1000);
    await q.whenIdle();
    expect(q.scheduled()).toEqual([]);

    const seen: string[] = [];
    const r = new WorkQueue(async (id) => {
      seen.push(id);
      started.notify();
      return seen.length === 1 ? requeueAfter(5) : workDone;
    });
    r.add('x');
    await until(() => seen.length === 2);
    expect(r.scheduled()).toEqual([]);
  });

  it('jitter is drawn from the given random source', () => {
    const q = new WorkQueue(async () => workDone, { backoff: { initialMs: 100, factor: 1.5, maxMs: 60_000, jitter: 0.5 }, random: () => 1 });
    expect(q.backoffDelay(1)).toBe(150);
    expect(q.backoffDelay(2)).toBe(225);
  });

  it('stop() takes no new work, waits for in-flight items up to the bound, then aborts them', async () => {
    let signalSeen: AbortSignal | undefined;
    const startedIds: string[] = [];
    const q = new WorkQueue(
      (id, signal) => {
        startedIds.push(id);
        started.notify();
        signalSeen = signal;
        return new Promise(() => {});
      },
      { concurrency: 1 },
    );
    q.add('hung');
    q.add('waiting');
    q.addAfter('later', 1);
    await until(() => startedIds.length === 1);
    const result = await q.stop(20);
    expect(result).toEqual({ drained: false, abandoned: ['hung'] });
    expect(signalSeen?.aborted).toBe(true);
    // Nothing can run any more: no retry timer is left ('later' was dropped), and an add is refused on the spot
    // (a run would start one microtask after add(); a macrotask later it would have).
    expect(q.scheduled()).toEqual([]);
    q.add('after-stop');
    await new Promise((r) => setImmediate(r));
    expect(q.inFlight()).toEqual(['hung']);
    expect(startedIds).toEqual(['hung']);
  });
});
