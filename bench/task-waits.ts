// Task-wait strategies side by side, in simulated time: how many status polls a task costs and how long after its
// end the wait notices it. Runs the simulator's own task board and status endpoint in process on a manual clock, so
// the figures are the poll schedule alone (no HTTP latency, no machine load). `npx tsx bench/task-waits.ts`
// prints the table that docs/performance.md ("Task waits") quotes.
import { BENCH_TASK_DURATIONS_MS, BENCH_TOKEN, benchFixture } from './fixture.js';
import { ManualClock, PveSim } from '../src/sim/proxmox/index.js';
import { backoffSchedule, TaskDurations, waitForTask, type TaskClient, type TaskWaitClock, type WaitForTaskOptions } from '../src/proxmox/tasks.js';
import type { TaskStatus } from '../src/proxmox/types.js';

const NODE = 'pve1';
const TYPES = ['qmcreate', 'imgcopy', 'qmstart', 'qmdestroy', 'qmconfig'] as const;
const TASKS_PER_TYPE = 30;

interface Strategy {
  name: string;
  options: () => Pick<WaitForTaskOptions, 'pollSchedule' | 'durations'>;
}

const strategies: Strategy[] = [
  { name: 'back-off 100 ms ×2 to 3 s (before)', options: () => ({ pollSchedule: backoffSchedule() }) },
  { name: 'back-off capped at 250 ms', options: () => ({ pollSchedule: backoffSchedule({ maxMs: 250 }) }) },
  { name: 'fixed 1 s', options: () => ({ pollSchedule: () => 1_000 }) },
  { name: 'first poll at the median (chosen)', options: () => ({ durations: new TaskDurations() }) },
];

/** A seeded uniform random source (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Figures {
  polls: number;
  latencyMs: number[];
}

/** Waits for `count` tasks of `type`, one after the other, with one strategy; `spread` is the duration jitter (±). */
async function measure(strategy: Strategy, type: string, spread: number, seed: number): Promise<Figures> {
  const clock = new ManualClock();
  const sim = new PveSim({ fixture: { ...benchFixture(), authFailDelayMs: 0 }, clock });
  let polls = 0;
  const client: TaskClient = {
    taskStatus: async (upid) => {
      polls++;
      const res = await sim.handle({
        method: 'GET',
        path: `/api2/json/nodes/${NODE}/tasks/${encodeURIComponent(upid)}/status`,
        headers: { authorization: `PVEAPIToken=${BENCH_TOKEN.tokenId}=${BENCH_TOKEN.tokenSecret}` },
      });
      return (JSON.parse(res.body.toString('utf8')) as { data: TaskStatus }).data;
    },
    taskLog: async () => ({ lines: [], total: 0 }),
  };
  // The waiter sleeps on this clock; the loop below moves the simulator's clock to each wake-up.
  let wake: { at: number; resolve: () => void } | undefined;
  const waitClock: TaskWaitClock = {
    now: () => clock.now(),
    sleep: (ms) => new Promise<void>((resolve) => (wake = { at: clock.now() + ms, resolve })),
  };
  const random = seeded(seed);
  const base = BENCH_TASK_DURATIONS_MS[type as keyof typeof BENCH_TASK_DURATIONS_MS];
  const opts = strategy.options();
  const latencyMs: number[] = [];
  for (let i = 0; i < TASKS_PER_TYPE; i++) {
    const durationMs = Math.round(base * (1 + spread * (2 * random() - 1)));
    const task = sim.taskBoard.start({
      node: NODE,
      type,
      id: '100',
      caller: { authid: BENCH_TOKEN.tokenId, userid: 'root@pam', tokenid: 'omni', via: 'token' },
      work: () => undefined,
      durationMs,
    });
    let noticedAt: number | undefined;
    const waiting = waitForTask(client, task.upid, { ...opts, clock: waitClock }).then(() => (noticedAt = clock.now()));
    while (noticedAt === undefined) {
      await new Promise((r) => setImmediate(r));
      if (noticedAt !== undefined) break;
      const w = wake;
      if (!w) continue;
      wake = undefined;
      clock.advance(w.at - clock.now());
      w.resolve();
    }
    await waiting;
    latencyMs.push(noticedAt - task.dueAtMs);
  }
  return { polls, latencyMs };
}

function pct(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}

async function main(): Promise<void> {
  console.log(`${TASKS_PER_TYPE} tasks per type, one after the other, on one node (simulated time; no HTTP latency)`);
  for (const spread of [0, 0.25]) {
    console.log(`\ntask durations: the bench's${spread ? ` ±${spread * 100}% (uniform, seeded)` : ' (fixed)'}`);
    console.log('| strategy | ' + TYPES.map((t) => `${t} polls / mean / p90 notice ms`).join(' | ') + ' | all: polls per task |');
    console.log('|---|' + TYPES.map(() => '---|').join('') + '---|');
    for (const s of strategies) {
      const cells: string[] = [];
      let polls = 0;
      for (const [k, type] of TYPES.entries()) {
        const f = await measure(s, type, spread, 1000 + k);
        polls += f.polls;
        const mean = f.latencyMs.reduce((a, b) => a + b, 0) / f.latencyMs.length;
        cells.push(`${(f.polls / TASKS_PER_TYPE).toFixed(2)} / ${mean.toFixed(0)} / ${pct(f.latencyMs, 0.9)}`);
      }
      console.log(`| ${s.name} | ${cells.join(' | ')} | ${(polls / (TASKS_PER_TYPE * TYPES.length)).toFixed(2)} |`);
    }
  }
}

await main();
