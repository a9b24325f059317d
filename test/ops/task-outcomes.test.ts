// waitForTask's onFinished observer (what feeds proxmox_provider_pve_tasks_total): one report per finished wait with
// the task type, its outcome and the time waited, against the simulator over HTTPS on 127.0.0.1.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProviderMetrics, recordPveTasks } from '../../src/ops/providerMetrics.js';
import { PveTaskError, PveTaskTimeoutError } from '../../src/proxmox/errors.js';
import { waitForTask, type TaskOutcome, type TaskWaitClock } from '../../src/proxmox/tasks.js';
import { startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness;
let clock: TaskWaitClock;

beforeAll(async () => {
  h = await startPveHarness({ timeScale: 0.002 });
  clock = { now: () => h.sim.clock.now(), sleep: (ms) => h.sim.clock.sleep(ms) };
}, 20_000);

afterAll(async () => {
  await h?.close();
});

let n = 0;
/** Starts a qmconfig task on VM 100 (200 ms simulated). */
async function configTask(): Promise<string> {
  return h.pve.post<string>('/nodes/pve1/qemu/100/config', { description: `change ${n++}` });
}

interface Report {
  type: string;
  outcome: TaskOutcome;
  seconds: number;
}

async function waitAndReport(upid: string, deadlineMs?: number): Promise<{ reports: Report[]; error?: unknown }> {
  const reports: Report[] = [];
  const onFinished = (type: string, outcome: TaskOutcome, seconds: number): void => void reports.push({ type, outcome, seconds });
  try {
    await waitForTask(h.pve, upid, { clock, onFinished, ...(deadlineMs !== undefined ? { deadlineMs } : {}) });
    return { reports };
  } catch (error) {
    return { reports, error };
  }
}

describe('waitForTask onFinished', () => {
  it('reports ok with the simulated seconds waited', async () => {
    const { reports, error } = await waitAndReport(await configTask());
    expect(error).toBeUndefined();
    expect(reports).toHaveLength(1);
    expect(reports[0]!.type).toBe('qmconfig');
    expect(reports[0]!.outcome).toBe('ok');
    // The task runs 200 ms of simulated time, so the wait cannot have been shorter.
    expect(reports[0]!.seconds).toBeGreaterThanOrEqual(0.2);
  });

  it('reports warnings, failed and vanished tasks', async () => {
    h.sim.faults.onTask({ type: 'qmconfig' }, { kind: 'warnings', count: 2 });
    let r = await waitAndReport(await configTask());
    expect(r.error).toBeUndefined();
    expect(r.reports.map((x) => x.outcome)).toEqual(['warnings']);

    h.sim.faults.onTask({ type: 'qmconfig' }, { kind: 'fail', message: 'disk full' });
    r = await waitAndReport(await configTask());
    expect(r.error).toBeInstanceOf(PveTaskError);
    expect(r.reports.map((x) => x.outcome)).toEqual(['failed']);

    h.sim.faults.onTask({ type: 'qmconfig' }, { kind: 'vanish' });
    r = await waitAndReport(await configTask());
    expect((r.error as PveTaskError).vanished).toBe(true);
    expect(r.reports.map((x) => x.outcome)).toEqual(['vanished']);
  });

  it('reports a timeout when a stuck task outlives the deadline', async () => {
    h.sim.faults.onTask({ type: 'qmconfig' }, { kind: 'stuck' });
    const r = await waitAndReport(await configTask(), 5_000);
    expect(r.error).toBeInstanceOf(PveTaskTimeoutError);
    expect(r.reports.map((x) => [x.type, x.outcome])).toEqual([['qmconfig', 'timeout']]);
    expect(r.reports[0]!.seconds).toBeGreaterThanOrEqual(5);
  });

  it('keeps the result when the observer throws, and reports nothing for an aborted wait', async () => {
    const result = await waitForTask(h.pve, await configTask(), {
      clock,
      onFinished: () => {
        throw new Error('observer broke');
      },
    });
    expect(result.exitstatus).toBe('OK');

    h.sim.faults.onTask({ type: 'qmconfig' }, { kind: 'stuck' });
    const upid = await configTask();
    const reports: TaskOutcome[] = [];
    const abort = new AbortController();
    const waiting = waitForTask(h.pve, upid, { clock, signal: abort.signal, onFinished: (_t, o) => void reports.push(o) });
    abort.abort();
    await expect(waiting).rejects.toThrow();
    expect(reports).toEqual([]);
  });

  it('recordPveTasks counts outcomes by type and observes the wait time', () => {
    const m = createProviderMetrics({ version: 'test' });
    const hook = recordPveTasks(m);
    hook('qmstart', 'ok', 2);
    hook('qmstart', 'ok', 3);
    hook('qmstart', 'timeout', 120);
    const text = m.registry.render();
    expect(text).toContain('proxmox_provider_pve_tasks_total{type="qmstart",result="ok"} 2');
    expect(text).toContain('proxmox_provider_pve_tasks_total{type="qmstart",result="timeout"} 1');
    expect(text).toContain('proxmox_provider_pve_task_duration_seconds_count{type="qmstart"} 3');
    expect(text).toContain('proxmox_provider_pve_task_duration_seconds_bucket{type="qmstart",le="5"} 2');
  });
});
