import { describe, expect, it } from 'vitest';
import { PveClient } from '../../src/proxmox/client.js';
import { PveError, PveTaskError, PveTaskTimeoutError } from '../../src/proxmox/errors.js';
import {
  type TaskProgress,
  type TaskWaitClock,
  backoffSchedule,
  defaultTaskDeadlineMs,
  estimatedPoll,
  TaskDurations,
  waitForTask,
} from '../../src/proxmox/tasks.js';
import { type RecordedRequest, type Reply, ok, startPveServer, closeAfterEach } from './pveTestServer.js';

const UPID = 'UPID:pve2:000A1B2C:0012D687:65A0F1E2:qmcreate:105:omni@pve!provider:';

const { servers, clients } = closeAfterEach();

function status(s: 'running' | 'stopped', exitstatus?: string): Reply {
  return ok({
    upid: UPID,
    node: 'pve2',
    pid: 0xa1b2c,
    pstart: 0x12d687,
    starttime: 0x65a0f1e2,
    type: 'qmcreate',
    id: '105',
    user: 'omni@pve',
    tokenid: 'provider',
    status: s,
    ...(exitstatus === undefined ? {} : { exitstatus }),
  });
}

/** A Proxmox task endpoint that answers status polls from a script (the last entry repeats) and serves a log. */
async function setup(script: Reply[], logLines: string[] = ['TASK OK']) {
  let i = 0;
  const server = await startPveServer((r: RecordedRequest) => {
    if (r.path.endsWith('/status')) return script[Math.min(i++, script.length - 1)]!;
    if (r.path.endsWith('/log')) {
      const start = Number(r.query.get('start') ?? 0);
      const limit = Number(r.query.get('limit') ?? 50);
      const lines = logLines.slice(start, start + limit).map((t, k) => ({ n: start + k + 1, t }));
      return ok(lines, { total: logLines.length });
    }
    return { status: 501, reason: 'not implemented' };
  });
  servers.push(server);
  const client = new PveClient({ url: server.url, auth: { tokenId: 'omni@pve!provider', tokenSecret: 'tok' } });
  clients.push(client);
  return { server, client };
}

function fakeClock(): TaskWaitClock & { sleeps: number[]; t: number } {
  const c = {
    t: 0,
    sleeps: [] as number[],
    now: () => c.t,
    sleep: async (ms: number) => {
      c.sleeps.push(ms);
      c.t += ms;
    },
  };
  return c;
}

describe('waitForTask', () => {
  it('polls the node named in the UPID with a growing interval until OK', async () => {
    const { server, client } = await setup([status('running'), status('running'), status('running'), status('stopped', 'OK')]);
    const clock = fakeClock();
    const seen: TaskProgress['status'][] = [];
    const res = await waitForTask(client, UPID, { clock, onProgress: (p) => seen.push(p.status) });
    expect(res).toEqual({ upid: UPID, node: 'pve2', type: 'qmcreate', id: '105', exitstatus: 'OK', warnings: 0 });
    expect(clock.sleeps).toEqual([1000, 1000, 1000, 1000]);
    expect(seen).toEqual(['running', 'running', 'running', 'stopped']);
    expect(new Set(server.requests.map((r) => r.path))).toEqual(new Set([`/nodes/pve2/tasks/${UPID}/status`]));
  });

  it('treats WARNINGS: N as success and reports the count', async () => {
    const { client } = await setup([status('stopped', 'WARNINGS: 2')]);
    const res = await waitForTask(client, UPID, { clock: fakeClock() });
    expect(res.exitstatus).toBe('WARNINGS: 2');
    expect(res.warnings).toBe(2);
  });

  it('throws the exit status with the last 20 log lines on failure', async () => {
    const log = Array.from({ length: 59 }, (_, k) => `line ${k + 1}`).concat('TASK ERROR: unable to create VM 105 - no space left');
    const { server, client } = await setup(
      [status('running'), status('stopped', 'unable to create VM 105 - no space left')],
      log,
    );
    const err = (await waitForTask(client, UPID, { clock: fakeClock() }).catch((e: unknown) => e)) as PveTaskError;
    expect(err).toBeInstanceOf(PveTaskError);
    expect(err.vanished).toBe(false);
    expect(err.exitstatus).toBe('unable to create VM 105 - no space left');
    expect(err.type).toBe('qmcreate');
    expect(err.upid).toBe(UPID);
    expect(err.message).toBe('task qmcreate on node pve2 failed: unable to create VM 105 - no space left');
    expect(err.logTail).toHaveLength(20);
    expect(err.logTail[0]).toBe('line 41');
    expect(err.logTail.at(-1)).toBe('TASK ERROR: unable to create VM 105 - no space left');
    const logReqs = server.requests.filter((r) => r.path.endsWith('/log'));
    expect(logReqs.every((r) => r.path === `/nodes/pve2/tasks/${UPID}/log`)).toBe(true);
  });

  it('treats any other exit status as failure, including a stop without exit status', async () => {
    const { client } = await setup([status('stopped')], ['no content']);
    const err = (await waitForTask(client, UPID, { clock: fakeClock() }).catch((e: unknown) => e)) as PveTaskError;
    expect(err).toBeInstanceOf(PveTaskError);
    expect(err.exitstatus).toBe('unexpected status');
    expect(err.logTail).toEqual([]);
  });

  it('reports a task that vanished (400 no such task) as outcome unknown', async () => {
    const { client } = await setup([
      { status: 400, reason: 'Parameter verification failed.', json: { data: null, errors: { upid: 'no such task' } } },
    ]);
    const err = (await waitForTask(client, UPID, { clock: fakeClock() }).catch((e: unknown) => e)) as PveTaskError;
    expect(err).toBeInstanceOf(PveTaskError);
    expect(err.vanished).toBe(true);
    expect(err.message).toContain('vanished');
  });

  it('keeps polling through an unreachable node and lost connections', async () => {
    const { client } = await setup([
      { status: 595, reason: 'Connection refused' },
      { status: 596, reason: 'Connection timed out' },
      { destroy: true },
      { destroy: true }, // the client retries a GET once, so two in a row surface as a connection error
      status('running'),
      status('stopped', 'OK'),
    ]);
    const seen: TaskProgress['status'][] = [];
    const res = await waitForTask(client, UPID, { clock: fakeClock(), onProgress: (p) => seen.push(p.status) });
    expect(res.exitstatus).toBe('OK');
    expect(seen).toEqual(['unknown', 'unknown', 'unknown', 'running', 'stopped']);
  });

  it('gives up at the deadline, polling one last time at it', async () => {
    const { server, client } = await setup([status('running')]);
    const clock = fakeClock();
    const err = (await waitForTask(client, UPID, { clock, deadlineMs: 1000, pollSchedule: () => 300 }).catch(
      (e: unknown) => e,
    )) as PveTaskTimeoutError;
    expect(err).toBeInstanceOf(PveTaskTimeoutError);
    expect(err.lastStatus).toBe('running');
    expect(err.message).toContain('did not finish');
    expect(clock.sleeps).toEqual([300, 300, 300, 100]);
    expect(server.requests).toHaveLength(5);
  });

  it('reports "unknown" at the deadline when the node stayed unreachable', async () => {
    const { client } = await setup([{ status: 595, reason: 'No route to host' }]);
    const err = (await waitForTask(client, UPID, { clock: fakeClock(), deadlineMs: 500 }).catch((e: unknown) => e)) as PveTaskTimeoutError;
    expect(err).toBeInstanceOf(PveTaskTimeoutError);
    expect(err.lastStatus).toBe('unknown');
  });

  it('passes on errors that polling again cannot fix', async () => {
    const { client } = await setup([{ status: 403, reason: 'Permission check failed (/nodes/pve2, Sys.Audit)' }]);
    const err = await waitForTask(client, UPID, { clock: fakeClock() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveError);
    expect((err as PveError).status).toBe(403);
  });

  it('stops waiting when the signal aborts', async () => {
    const { client } = await setup([status('running')]);
    const ac = new AbortController();
    let polls = 0;
    const err = await waitForTask(client, UPID, {
      clock: fakeClock(),
      signal: ac.signal,
      onProgress: () => {
        if (++polls === 2) ac.abort(new Error('shutting down'));
      },
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('shutting down');
    expect(polls).toBe(2);
  });

  it('with the real clock, waits briefly and resolves', async () => {
    const { client } = await setup([status('running'), status('stopped', 'OK')]);
    await expect(waitForTask(client, UPID, { pollSchedule: () => 5 })).resolves.toMatchObject({ exitstatus: 'OK' });
  });
});

describe('task deadlines and schedule', () => {
  it('defaults the deadline by task type', () => {
    expect(defaultTaskDeadlineMs('qmcreate')).toBe(5 * 60_000);
    expect(defaultTaskDeadlineMs('download')).toBe(30 * 60_000);
    expect(defaultTaskDeadlineMs('imgcopy')).toBe(5 * 60_000);
    expect(defaultTaskDeadlineMs('qmstart')).toBe(2 * 60_000);
    expect(defaultTaskDeadlineMs('qmstop')).toBe(60_000);
    expect(defaultTaskDeadlineMs('qmshutdown')).toBe(5 * 60_000);
    expect(defaultTaskDeadlineMs('qmdestroy')).toBe(5 * 60_000);
    expect(defaultTaskDeadlineMs('qmconfig')).toBe(60_000);
    expect(defaultTaskDeadlineMs('imgdel')).toBe(10 * 60_000);
  });

  it('backs off from 100 ms, doubling, capped', () => {
    const s = backoffSchedule();
    expect([0, 1, 2, 3, 4, 5, 6, 50].map(s)).toEqual([100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    expect([0, 1, 2].map(backoffSchedule({ initialMs: 1000, maxMs: 5000 }))).toEqual([1000, 2000, 4000]);
  });

  it('with a duration estimate, polls first near it, then in short steps, and learns from the wait', async () => {
    const durations = new TaskDurations();
    durations.record('pve2', 'qmcreate', 3000);
    const { server, client } = await setup([status('running'), status('running'), status('stopped', 'OK')]);
    const clock = fakeClock();
    await waitForTask(client, UPID, { clock, durations });
    // 95% of 3 s, then steps of 5% (150 ms) while near the estimate.
    expect(clock.sleeps).toEqual([2850, 150, 150]);
    expect(server.requests).toHaveLength(3);
    // Ended between the poll at 3.0 s (running) and the one at 3.15 s: the middle is recorded; median of 3000, 3075.
    expect(durations.estimate('pve2', 'qmcreate')).toBe(3037.5);
  });

  it('with a duration estimate, a task done at the first poll costs one call and lowers the estimate', async () => {
    const durations = new TaskDurations(1);
    durations.record('pve2', 'qmcreate', 4000);
    const { server, client } = await setup([status('stopped', 'OK')]);
    const clock = fakeClock();
    await waitForTask(client, UPID, { clock, durations });
    expect(clock.sleeps).toEqual([3800]);
    expect(server.requests).toHaveLength(1);
    expect(durations.estimate('pve2', 'qmcreate')).toBe(0.9 * 3800);
  });

  it('without an estimate, polls every second for 5 s, then at 6.5, 8.5, 11 s and every 3 s; with an explicit schedule at once; failures are not learned', async () => {
    const durations = new TaskDurations();
    const { client } = await setup([status('running'), status('stopped', 'boom')]);
    const clock = fakeClock();
    await expect(waitForTask(client, UPID, { clock, durations })).rejects.toBeInstanceOf(PveTaskError);
    expect(clock.sleeps).toEqual([1000, 1000]);
    const long = await setup([...Array.from({ length: 8 }, () => status('running')), status('stopped', 'OK')]);
    const clockLong = fakeClock();
    await waitForTask(long.client, UPID, { clock: clockLong });
    expect(clockLong.sleeps).toEqual([1000, 1000, 1000, 1000, 1000, 1500, 2000, 2500, 3000]);
    expect(long.server.requests).toHaveLength(9);
    // A download (a Talos ISO, tens of seconds) is first polled at 5 s, then every 3 s.
    const dl = await setup([status('running'), status('running'), status('stopped', 'OK')]);
    const clockDl = fakeClock();
    await waitForTask(dl.client, 'UPID:pve2:000A1B2C:0012D687:65A0F1E2:download:talos.iso:omni@pve!provider:', { clock: clockDl });
    expect(clockDl.sleeps).toEqual([5000, 3000, 3000]);
    expect(durations.estimate('pve2', 'qmcreate')).toBeUndefined();
    durations.record('pve2', 'qmcreate', 3000);
    const second = await setup([status('stopped', 'OK')]);
    const clock2 = fakeClock();
    await waitForTask(second.client, UPID, { clock: clock2, durations, pollSchedule: () => 10 });
    expect(clock2.sleeps).toEqual([]);
  });

  it('estimates per node and type, falling back to the type on any node, from the median of a window', () => {
    const d = new TaskDurations(3);
    expect(d.estimate('pve1', 'qmstart')).toBeUndefined();
    for (const ms of [1000, 5000, 2000, 3000]) d.record('pve1', 'qmstart', ms);
    expect(d.estimate('pve1', 'qmstart')).toBe(3000); // median of the last three: 5000, 2000, 3000
    expect(d.estimate('pve9', 'qmstart')).toBe(3000); // no record on pve9: the type on any node
    d.record('pve9', 'qmstart', 800);
    expect(d.estimate('pve9', 'qmstart')).toBe(800);
    expect(d.estimate('pve1', 'qmcreate')).toBeUndefined();
  });

  it('spaces polls out as a task overruns its estimate', () => {
    expect(estimatedPoll.nextMs(3000, 3000)).toBe(150);
    expect(estimatedPoll.nextMs(500, 600)).toBe(100);
    expect(estimatedPoll.nextMs(60_000, 60_500)).toBe(1000);
    expect(estimatedPoll.nextMs(3000, 7000)).toBe(1000);
    expect(estimatedPoll.nextMs(3000, 60_000)).toBe(3000);
  });
});
