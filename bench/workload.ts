// One benchmark workload: an in-process Omni asks one provider process for N machines of one machine set on the
// simulated 3-node cluster, waits until every request is PROVISIONED, then tears them all down; records timings,
// Proxmox calls, Omni RPCs, CPU and peak RSS, and the VM create parameters (for the differential report).
import { writeFile } from 'node:fs/promises';
import { silentLogger } from '../src/log.js';
import { PveSim, ScaledClock, startPveSimServer, type PveFixture, type RequestRecord } from '../src/sim/proxmox/index.js';
import { startInProcessOmniBackend, type OmniBackend } from './omni-backend.js';
import { BENCH_TOKEN, benchFixture } from './fixture.js';
import { startOutboundGuard } from './outbound-guard.js';
import { startProviderProcess, type ProviderKind } from './provider-process.js';

export interface MachineSetSpec {
  /** Machine request set ID. */
  setId: string;
  /** MachineClass provider data (YAML). */
  providerData: string;
  /** Requests in this set. */
  count: number;
}

export interface WorkloadOptions {
  kind: ProviderKind;
  sets: MachineSetSpec[];
  /** Wall time per simulated time (0.25: a 20 s download takes 5 s). */
  timeScale: number;
  fixture?: PveFixture;
  talosVersion?: string;
  /** Give up waiting for PROVISIONED / teardown after this long (wall ms) each. */
  timeoutMs?: number;
  /** Skip the teardown phase (the differential only needs the creates). */
  teardown?: boolean;
  /**
   * `provisioned` (default): wait until every request is PROVISIONED. `create-attempted`: wait only until each
   * request's VM create call was made (any outcome) — enough for comparing create parameters, and it also ends
   * when a provider's create is refused by Proxmox.
   */
  waitFor?: 'provisioned' | 'create-attempted';
  /** Our provider's provider.concurrency (default: its own default). */
  concurrency?: number;
  /** Log level for our provider's child process. */
  logLevel?: string;
  /** Starts the Omni to run against (default: a fresh in-process Omni); the workload closes it. */
  omni?: (providerId: string) => Promise<OmniBackend>;
}

export interface CreateCall {
  request: string;
  node: string;
  /** HTTP status Proxmox answered (200 = accepted). */
  status: number;
  /** Proxmox's reason phrase when it refused the call. */
  refusal?: string;
  params: Record<string, string>;
}

export interface WorkloadResult {
  kind: ProviderKind;
  /** Which Omni served the run. */
  omni: string;
  n: number;
  ok: boolean;
  /** Why the run did not finish (timeout, provider exit, ...), with the provider's last output lines. */
  error?: string;
  provisionSeconds: number;
  teardownSeconds: number;
  proxmoxCalls: { provision: number; teardown: number; total: number; byRoute: Record<string, number> };
  omniRpcs: { provision: number; teardown: number; total: number; byMethod: Record<string, number> };
  /** CPU seconds of the provider process over its whole life (start-up included). */
  cpuSeconds: number;
  /** CPU seconds between the first machine request and the end of teardown (start-up excluded). */
  cpuSecondsWorkload: number;
  peakRssMb: number;
  vmsLeftAfterTeardown: number;
  outboundAttempts: string[];
  creates: CreateCall[];
  /** ISO downloads the provider asked Proxmox for (`POST .../download-url`). */
  downloads: Array<{ node: string; storage: string; filename: string; url: string }>;
  /** Schematics registered with the fake image factory (directly or through Omni), YAML as received. */
  schematics: Array<{ id: string; yaml: string; via: string }>;
  /** Status errors seen while provisioning (request -> last error). */
  statusErrors: Record<string, string>;
}

const PROVIDER_ID = 'proxmox';

function sumCounts(a: Record<string, number>, b: Record<string, number> = {}): { total: number; diff: Record<string, number> } {
  const diff: Record<string, number> = {};
  let total = 0;
  for (const [k, v] of Object.entries(a)) {
    const d = v - (b[k] ?? 0);
    if (d > 0) {
      diff[k] = d;
      total += d;
    }
  }
  return { total, diff };
}

function routeCounts(records: readonly RequestRecord[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of records) {
    const key = `${r.method} ${r.route ?? r.path}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

function createdNames(records: readonly RequestRecord[]): Set<string> {
  const names = new Set<string>();
  for (const r of records) if (r.method === 'POST' && /^\/nodes\/[^/]+\/qemu$/.test(r.path) && r.params.name) names.add(r.params.name);
  return names;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tail(text: string, lines = 15): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

export async function runWorkload(opts: WorkloadOptions): Promise<WorkloadResult> {
  const n = opts.sets.reduce((s, x) => s + x.count, 0);
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  const omni = await (opts.omni ?? startInProcessOmniBackend)(PROVIDER_ID);
  await omni.holdMachineRequestStatuses();
  const sim = new PveSim({ fixture: opts.fixture ?? benchFixture(), clock: new ScaledClock(opts.timeScale), logger: silentLogger });
  // Keep the reason phrases of refused VM creates (the request log has only the status).
  const refusals: Array<{ path: string; status: number; reason: string; used: boolean }> = [];
  const handle = sim.handle.bind(sim);
  sim.handle = async (req) => {
    const res = await handle(req);
    if (req.method === 'POST' && res.status >= 400 && /\/nodes\/[^/]+\/qemu$/.test(req.path)) {
      let detail = '';
      try {
        const errors = (JSON.parse(res.body.toString('utf8')) as { errors?: unknown }).errors;
        if (errors) detail = ` ${JSON.stringify(errors)}`;
      } catch {
        // no JSON body (auth-layer errors)
      }
      refusals.push({ path: req.path.replace(/^\/api2\/json/, ''), status: res.status, reason: `${res.reason}${detail}`, used: false });
    }
    return res;
  };
  const pve = await startPveSimServer(sim, { https: true });
  const guard = await startOutboundGuard({ factoryUrl: omni.factoryUrl });
  const key = await omni.createProviderKey(PROVIDER_ID);
  const proc = await startProviderProcess(
    opts.kind,
    {
      omniEndpoint: omni.endpoint,
      serviceAccountKey: key,
      providerId: PROVIDER_ID,
      proxmoxUrl: pve.url,
      tokenId: BENCH_TOKEN.tokenId,
      tokenSecret: BENCH_TOKEN.tokenSecret,
      proxmoxFingerprint: pve.fingerprint ?? '',
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    },
    { outbound: { proxyUrl: guard.url, caFile: guard.caFile }, ...(opts.logLevel ? { logLevel: opts.logLevel } : {}) },
  );

  const result: WorkloadResult = {
    kind: opts.kind,
    omni: omni.name,
    n,
    ok: false,
    provisionSeconds: Number.NaN,
    teardownSeconds: Number.NaN,
    proxmoxCalls: { provision: 0, teardown: 0, total: 0, byRoute: {} },
    omniRpcs: { provision: 0, teardown: 0, total: 0, byMethod: {} },
    cpuSeconds: 0,
    cpuSecondsWorkload: 0,
    peakRssMb: 0,
    vmsLeftAfterTeardown: 0,
    outboundAttempts: guard.attempts,
    creates: [],
    downloads: [],
    schematics: [],
    statusErrors: {},
  };
  const fail = (why: string) => {
    result.error = `${why}\n--- ${opts.kind} provider output (last lines) ---\n${tail(proc.output())}`;
  };

  try {
    // Wait for the provider to register (its first heartbeat) so start-up is not counted as provisioning.
    const upBy = Date.now() + 120_000;
    while (!(await omni.providerReported(PROVIDER_ID))) {
      if (proc.exited()) throw new Error('provider exited during start-up');
      if (Date.now() > upBy) throw new Error('provider did not report health to Omni within 120 s');
      await sleep(50);
    }
    const cpuAtStart = proc.figures().cpuSeconds;
    const simBefore = sim.requests.length;
    const omniBefore = await omni.callCounts();

    const ids: string[] = [];
    const t0 = performance.now();
    for (const set of opts.sets) {
      for (let i = 1; i <= set.count; i++) {
        const id = `${set.setId}-${String(i).padStart(2, '0')}`;
        await omni.createMachineRequest(set.setId, id, { talosVersion: opts.talosVersion ?? 'v1.11.5', providerData: set.providerData });
        ids.push(id);
      }
    }
    const provisionBy = Date.now() + timeoutMs;
    for (;;) {
      let done = 0;
      const attempted = opts.waitFor === 'create-attempted' ? createdNames(sim.requests.slice(simBefore)) : undefined;
      const stages = await omni.requestStages();
      for (const id of ids) {
        const st = stages.get(id);
        if (attempted ? attempted.has(id) : st?.stage === 'PROVISIONED') done++;
        if (st?.error) result.statusErrors[id] = st.error;
      }
      if (done === ids.length) break;
      if (proc.exited()) throw new Error(`provider exited while provisioning (${done}/${ids.length} provisioned)`);
      if (Date.now() > provisionBy) throw new Error(`timed out: ${done}/${ids.length} provisioned after ${timeoutMs / 1000} s`);
      await sleep(omni.pollMs);
    }
    result.provisionSeconds = (performance.now() - t0) / 1000;
    const simMid = sim.requests.length;
    const omniMid = await omni.callCounts();

    for (const r of sim.requests.slice(simBefore, simMid)) {
      const m = /^\/nodes\/([^/]+)\/qemu$/.exec(r.path);
      if (r.method === 'POST' && m) {
        const call: CreateCall = { request: r.params.name ?? '', node: m[1] ?? '', status: r.status, params: { ...r.params } };
        const refusal = r.status >= 400 ? refusals.find((x) => !x.used && x.path === r.path && x.status === r.status) : undefined;
        if (refusal) {
          refusal.used = true;
          call.refusal = refusal.reason;
        }
        result.creates.push(call);
      }
    }

    for (const r of sim.requests.slice(simBefore, simMid)) {
      const m = /^\/nodes\/([^/]+)\/storage\/([^/]+)\/download-url$/.exec(r.path);
      if (r.method === 'POST' && m && r.status === 200) {
        result.downloads.push({ node: m[1] ?? '', storage: m[2] ?? '', filename: r.params.filename ?? '', url: r.params.url ?? '' });
      }
    }
    result.schematics = omni.schematics();

    if (opts.teardown !== false) {
      const t1 = performance.now();
      await Promise.all(ids.map((id) => omni.deleteMachineRequest(id, timeoutMs)));
      result.teardownSeconds = (performance.now() - t1) / 1000;
      result.vmsLeftAfterTeardown = [...sim.state.vms.values()].length;
    }
    const simEnd = sim.requests.length;
    if (process.env.BENCH_DUMP_CALLS) {
      // Every Proxmox call of the measured window, one per line (for finding where calls go; not part of the figures).
      const lines = sim.requests.slice(simBefore, simEnd).map((r) => `${(r.atMs / 1000).toFixed(3)} ${r.method} ${r.path}${r.params.typefilter ? ` ${r.params.typefilter}` : ''}`);
      await writeFile(`${process.env.BENCH_DUMP_CALLS}.${opts.kind}.n${n}.txt`, `${lines.join('\n')}\n`);
      const tasks = sim.tasks().map((t) => `${(t.startedAtMs / 1000).toFixed(3)} ${(t.dueAtMs / 1000).toFixed(3)} ${t.node} ${t.type} ${t.id} ${t.upid}`);
      await writeFile(`${process.env.BENCH_DUMP_CALLS}.${opts.kind}.n${n}.tasks.txt`, `${tasks.join('\n')}\n`);
    }
    const provisionCounts = sumCounts(omniMid, omniBefore);
    const allCounts = sumCounts(await omni.callCounts(), omniBefore);
    result.proxmoxCalls = {
      provision: simMid - simBefore,
      teardown: simEnd - simMid,
      total: simEnd - simBefore,
      byRoute: routeCounts(sim.requests.slice(simBefore, simEnd)),
    };
    result.omniRpcs = { provision: provisionCounts.total, teardown: allCounts.total - provisionCounts.total, total: allCounts.total, byMethod: allCounts.diff };
    result.cpuSecondsWorkload = proc.figures().cpuSeconds - cpuAtStart;
    result.ok = opts.teardown === false || result.vmsLeftAfterTeardown === 0;
    if (!result.ok) fail(`${result.vmsLeftAfterTeardown} VM(s) left after teardown`);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  } finally {
    const figures = await proc.stop();
    result.cpuSeconds = figures.cpuSeconds;
    result.peakRssMb = figures.peakRssMb;
    await guard.close();
    await pve.close();
    await omni.close();
  }
  return result;
}
