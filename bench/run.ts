// `npm run bench`: the same machine-set workloads against our provider and the upstream Go provider, one after the
// other on identical simulated clusters; prints a table of medians and writes bench/results/latest.json.
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BENCH_CONTENTION, BENCH_NODES, BENCH_PROVIDER_DATA, BENCH_TASK_DURATIONS_MS } from './fixture.js';
import { REPO_ROOT, upstreamUnavailableReason, upstreamVersionLabel, type ProviderKind } from './provider-process.js';
import { runWorkload, type WorkloadResult } from './workload.js';
import { IMAGE_ENV } from '../test/helpers/daemon-command.js';

export interface BenchArgs {
  sizes: number[];
  runs: number;
  timeScale: number;
  smoke: boolean;
  /** Keep cases of latest.json whose size was not measured in this invocation. */
  merge: boolean;
  out: string;
  providers: ProviderKind[];
}

export interface ProviderCaseFigures {
  provision_s: number;
  teardown_s: number;
  api_calls_per_vm: number;
  /** Proxmox calls per VM while provisioning / while tearing down (medians). */
  api_calls_provision_per_vm: number;
  api_calls_teardown_per_vm: number;
  /** Proxmox calls per VM by route (`METHOD /route`, median over runs), to see where the calls go. */
  api_calls_by_route_per_vm: Record<string, number>;
  omni_rpcs_per_vm: number;
  rss_mb: number;
  cpu_s: number;
  cpu_workload_s: number;
  runs_ok: number;
  runs_failed: number;
  errors: string[];
}

export interface BenchCase {
  n: number;
  runs: number;
  time_scale: number;
  lower_bound_s: number;
  teardown_lower_bound_s: number;
  ours_provision_s: number | null;
  upstream_provision_s: number | null;
  ours_teardown_s: number | null;
  upstream_teardown_s: number | null;
  ours_api_calls_per_vm: number | null;
  upstream_api_calls_per_vm: number | null;
  ours_omni_rpcs_per_vm: number | null;
  upstream_omni_rpcs_per_vm: number | null;
  ours_rss_mb: number | null;
  upstream_rss_mb: number | null;
  ours_cpu_s: number | null;
  upstream_cpu_s: number | null;
  ours_cpu_workload_s: number | null;
  upstream_cpu_workload_s: number | null;
  ratio_provision_ours_upstream: number | null;
  ratio_teardown_ours_upstream: number | null;
  ratio_provision_ours_lower_bound: number | null;
  upstream_skipped_reason: string | null;
  detail: Partial<Record<ProviderKind, ProviderCaseFigures>>;
}

/**
 * The critical path of the bench's contention model for `n` VMs (docs/performance.md, "What is measured"): each
 * node downloads the ISO first, then each VM needs create, seed upload and start in sequence; a node does at most
 * `nodeTaskCapacity` task-seconds per second; creates queue on the node's storage lock. Every seed upload runs on the
 * entry node (the one the API URL points at: PVE runs an upload's worker where the request arrived), so the bound
 * takes the best split of VMs between the entry node (its VMs' create + start, and all n uploads) and the others
 * (create + start each).
 */
export function provisionLowerBoundSeconds(timeScale: number, n = 1): number {
  const d = BENCH_TASK_DURATIONS_MS;
  const vms = Math.max(1, n);
  const chain = d.qmcreate + d.imgcopy + d.qmstart;
  const own = d.qmcreate + d.qmstart;
  const { nodeTaskCapacity: capacity, storageAllocMs: alloc } = BENCH_CONTENTION;
  let best = Infinity;
  for (let onEntry = 0; onEntry <= vms; onEntry++) {
    const perOther = Math.ceil((vms - onEntry) / (BENCH_NODES - 1));
    const entry = (onEntry * own + vms * d.imgcopy) / capacity;
    const other = (perOther * own) / capacity;
    const lock = (Math.max(onEntry, perOther) - 1) * alloc + chain;
    best = Math.min(best, Math.max(chain, entry, other, lock));
  }
  return ((d.download + best) * timeScale) / 1000;
}

/**
 * Teardown of `n` VMs: a hard stop and the destroy per VM (a graceful ACPI shutdown is a choice on top of that), at
 * most `nodeTaskCapacity` task-seconds per second per node.
 */
export function teardownLowerBoundSeconds(timeScale: number, n = 1): number {
  const d = BENCH_TASK_DURATIONS_MS;
  const k = Math.ceil(Math.max(1, n) / BENCH_NODES);
  const chain = d.qmstop + d.qmdestroy;
  return (Math.max(chain, (k * chain) / BENCH_CONTENTION.nodeTaskCapacity) * timeScale) / 1000;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  const args: BenchArgs = {
    sizes: [1, 10, 30],
    runs: 3,
    timeScale: 1,
    smoke: false,
    merge: false,
    out: join(REPO_ROOT, 'bench', 'results', 'latest.json'),
    providers: ['ours', 'upstream'],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--sizes':
        args.sizes = value()
          .split(',')
          .map((s) => Number.parseInt(s.trim(), 10));
        if (args.sizes.some((n) => !(n >= 1 && n <= 200))) throw new Error('--sizes: comma-separated integers 1..200');
        break;
      case '--runs':
        args.runs = Number.parseInt(value(), 10);
        if (!(args.runs >= 1 && args.runs <= 20)) throw new Error('--runs: 1..20');
        break;
      case '--time-scale':
        args.timeScale = Number(value());
        if (!(args.timeScale > 0 && args.timeScale <= 1)) throw new Error('--time-scale: a number in (0, 1]');
        break;
      case '--smoke':
        args.smoke = true;
        break;
      case '--merge':
        args.merge = true;
        break;
      case '--out':
        args.out = value();
        break;
      case '--only':
        args.providers = [value() as ProviderKind];
        if (!['ours', 'upstream'].includes(args.providers[0] ?? '')) throw new Error('--only: ours | upstream');
        break;
      case '--help':
      case '-h':
        throw new Error(
          'usage: npm run bench -- [--sizes 1,10,30] [--runs 3] [--time-scale 1] [--smoke] [--only ours|upstream] [--merge] [--out FILE]',
        );
      default:
        throw new Error(`unknown argument ${a} (see --help)`);
    }
  }
  if (args.smoke) {
    args.sizes = [2];
    args.runs = 1;
    // A smoke run checks that the bench works, it measures nothing: a faster simulated clock is fine there.
    if (!argv.some((a) => a.startsWith('--time-scale'))) args.timeScale = 0.25;
  }
  return args;
}

function figuresOf(results: WorkloadResult[]): ProviderCaseFigures {
  const ok = results.filter((r) => r.ok);
  const perVm = (f: (r: WorkloadResult) => number) => median(ok.map((r) => f(r) / r.n));
  return {
    provision_s: median(ok.map((r) => r.provisionSeconds)),
    teardown_s: median(ok.map((r) => r.teardownSeconds)),
    api_calls_per_vm: perVm((r) => r.proxmoxCalls.total),
    api_calls_provision_per_vm: perVm((r) => r.proxmoxCalls.provision),
    api_calls_teardown_per_vm: perVm((r) => r.proxmoxCalls.teardown),
    api_calls_by_route_per_vm: Object.fromEntries(
      [...new Set(ok.flatMap((r) => Object.keys(r.proxmoxCalls.byRoute)))]
        .sort()
        .map((route) => [route, Math.round(perVm((r) => r.proxmoxCalls.byRoute[route] ?? 0) * 100) / 100]),
    ),
    omni_rpcs_per_vm: perVm((r) => r.omniRpcs.total),
    rss_mb: median(ok.map((r) => r.peakRssMb)),
    cpu_s: median(ok.map((r) => r.cpuSeconds)),
    cpu_workload_s: median(ok.map((r) => r.cpuSecondsWorkload)),
    runs_ok: ok.length,
    runs_failed: results.length - ok.length,
    errors: results.filter((r) => !r.ok).map((r) => r.error ?? 'failed'),
  };
}

const num = (x: number | undefined): number | null => (x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000);
const ratio = (a: number | null, b: number | null): number | null => (a === null || b === null || b === 0 ? null : Math.round((a / b) * 100) / 100);

/**
 * Ours is measured as it ships: the compiled daemon of a production layout (scripts/assemble-prod.sh, the
 * Dockerfile's own script). Uses TEST_DAEMON_LAYOUT when set (.ci/run assembles once), else assembles .tmp/prod.
 */
export function ensureProductionLayout(say: (line: string) => void): string {
  const given = process.env.TEST_DAEMON_LAYOUT;
  if (given && given !== 'tsx') return given;
  say('bench: assembling the production layout in .tmp/prod (scripts/assemble-prod.sh)');
  const r = spawnSync('sh', [join(REPO_ROOT, 'scripts', 'assemble-prod.sh'), join(REPO_ROOT, '.tmp', 'prod')], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('bench: scripts/assemble-prod.sh failed');
  process.env.TEST_DAEMON_LAYOUT = join(REPO_ROOT, '.tmp', 'prod');
  return process.env.TEST_DAEMON_LAYOUT;
}

export async function runBench(args: BenchArgs, say: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<BenchCase[]> {
  const layout = args.providers.includes('ours') ? ensureProductionLayout(say) : undefined;
  const skipReason = args.providers.includes('upstream') ? upstreamUnavailableReason() : 'not requested (--only ours)';
  const kinds = args.providers.filter((k) => k !== 'upstream' || skipReason === undefined);
  if (skipReason && args.providers.includes('upstream')) {
    say('#'.repeat(100));
    say(`## UPSTREAM GO PROVIDER NOT MEASURED: ${skipReason}`);
    say('#'.repeat(100));
  }
  const cases: BenchCase[] = [];
  for (const n of args.sizes) {
    const byKind: Record<ProviderKind, WorkloadResult[]> = { ours: [], upstream: [] };
    for (let run = 1; run <= args.runs; run++) {
      for (const kind of kinds) {
        const t = Date.now();
        const r = await runWorkload({
          kind,
          sets: [{ setId: 'bench', providerData: BENCH_PROVIDER_DATA, count: n }],
          timeScale: args.timeScale,
          timeoutMs: Math.max(120_000, n * 60_000),
        });
        byKind[kind].push(r);
        say(
          `n=${n} run ${run}/${args.runs} ${kind.padEnd(8)} ${r.ok ? 'ok    ' : 'FAILED'} provision ${r.provisionSeconds.toFixed(1)} s, teardown ${r.teardownSeconds.toFixed(1)} s, ` +
            `${r.proxmoxCalls.total} PVE calls, ${r.omniRpcs.total} Omni RPCs, ${r.cpuSeconds.toFixed(2)} CPU s, ${r.peakRssMb.toFixed(0)} MiB (${((Date.now() - t) / 1000).toFixed(0)} s wall)`,
        );
        if (!r.ok) say(`  ${(r.error ?? '').split('\n').join('\n  ')}`);
        if (r.outboundAttempts.length > 0) say(`  refused outbound attempts: ${r.outboundAttempts.join(', ')}`);
      }
    }
    const ours = byKind.ours.length ? figuresOf(byKind.ours) : undefined;
    const up = byKind.upstream.length ? figuresOf(byKind.upstream) : undefined;
    const lb = provisionLowerBoundSeconds(args.timeScale, n);
    const c: BenchCase = {
      n,
      runs: args.runs,
      time_scale: args.timeScale,
      lower_bound_s: num(lb) ?? 0,
      teardown_lower_bound_s: num(teardownLowerBoundSeconds(args.timeScale, n)) ?? 0,
      ours_provision_s: num(ours?.provision_s),
      upstream_provision_s: num(up?.provision_s),
      ours_teardown_s: num(ours?.teardown_s),
      upstream_teardown_s: num(up?.teardown_s),
      ours_api_calls_per_vm: num(ours?.api_calls_per_vm),
      upstream_api_calls_per_vm: num(up?.api_calls_per_vm),
      ours_omni_rpcs_per_vm: num(ours?.omni_rpcs_per_vm),
      upstream_omni_rpcs_per_vm: num(up?.omni_rpcs_per_vm),
      ours_rss_mb: num(ours?.rss_mb),
      upstream_rss_mb: num(up?.rss_mb),
      ours_cpu_s: num(ours?.cpu_s),
      upstream_cpu_s: num(up?.cpu_s),
      ours_cpu_workload_s: num(ours?.cpu_workload_s),
      upstream_cpu_workload_s: num(up?.cpu_workload_s),
      ratio_provision_ours_upstream: null,
      ratio_teardown_ours_upstream: null,
      ratio_provision_ours_lower_bound: null,
      upstream_skipped_reason: skipReason ?? null,
      detail: { ...(ours ? { ours } : {}), ...(up ? { upstream: up } : {}) },
    };
    c.ratio_provision_ours_upstream = ratio(c.ours_provision_s, c.upstream_provision_s);
    c.ratio_teardown_ours_upstream = ratio(c.ours_teardown_s, c.upstream_teardown_s);
    c.ratio_provision_ours_lower_bound = ratio(c.ours_provision_s, c.lower_bound_s);
    cases.push(c);
  }

  let all = cases;
  let prevUpstream: unknown;
  if (args.merge) {
    try {
      const prev = JSON.parse(await readFile(args.out, 'utf8')) as { cases?: BenchCase[]; upstream?: unknown };
      const kept = (prev.cases ?? []).filter((p) => !cases.some((c) => c.n === p.n));
      // A size run again for one provider only keeps the other provider's figures from the file (both were measured
      // against the same model; the JSON says which invocation each came from).
      const merged = cases.map((c) => {
        const old = (prev.cases ?? []).find((p) => p.n === c.n);
        return old ? mergeProviders(c, old, args.providers) : c;
      });
      all = [...kept, ...merged].sort((a, b) => a.n - b.n);
      prevUpstream = prev.upstream;
    } catch {
      // nothing to merge with
    }
  }
  const upstreamMeta = all.some((c) => c.upstream_provision_s !== null)
    ? skipReason
      ? prevUpstream
      : { measured: true, version: upstreamVersionLabel() }
    : { measured: false, reason: skipReason };
  for (const line of renderTable(all, all.some((c) => c.upstream_provision_s !== null) ? undefined : skipReason)) say(line);
  await mkdir(join(args.out, '..'), { recursive: true });
  await writeFile(
    args.out,
    `${JSON.stringify(
      {
        generated_at: new Date().toISOString(),
        ours: layout ? { daemon: `compiled (node dist/main.js with the image's environment ${Object.entries(IMAGE_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}, production dependencies only)` } : { measured: false },
        upstream: upstreamMeta,
        time_scale: args.timeScale,
        task_durations_ms: BENCH_TASK_DURATIONS_MS,
        machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
        cases: all,
      },
      null,
      2,
    )}\n`,
  );
  say(`wrote ${args.out}`);
  return all;
}

const PROVIDER_FIELDS = {
  ours: ['ours_provision_s', 'ours_teardown_s', 'ours_api_calls_per_vm', 'ours_omni_rpcs_per_vm', 'ours_rss_mb', 'ours_cpu_s', 'ours_cpu_workload_s'],
  upstream: ['upstream_provision_s', 'upstream_teardown_s', 'upstream_api_calls_per_vm', 'upstream_omni_rpcs_per_vm', 'upstream_rss_mb', 'upstream_cpu_s', 'upstream_cpu_workload_s'],
} as const;

/** `fresh` with the figures of the provider it did not measure taken from `old` (same n), ratios recomputed. */
export function mergeProviders(fresh: BenchCase, old: BenchCase, measured: readonly ProviderKind[]): BenchCase {
  const c: BenchCase = { ...fresh, detail: { ...fresh.detail } };
  for (const kind of ['ours', 'upstream'] as const) {
    if (measured.includes(kind)) continue;
    for (const f of PROVIDER_FIELDS[kind]) (c as unknown as Record<string, unknown>)[f] = old[f];
    if (old.detail[kind]) c.detail[kind] = { ...old.detail[kind], merged_from: 'an earlier invocation (--merge)' } as ProviderCaseFigures;
    if (kind === 'upstream') c.upstream_skipped_reason = old.upstream_skipped_reason;
  }
  c.ratio_provision_ours_upstream = ratio(c.ours_provision_s, c.upstream_provision_s);
  c.ratio_teardown_ours_upstream = ratio(c.ours_teardown_s, c.upstream_teardown_s);
  c.ratio_provision_ours_lower_bound = ratio(c.ours_provision_s, c.lower_bound_s);
  return c;
}

export function renderTable(cases: readonly BenchCase[], skipReason: string | undefined): string[] {
  const f = (x: number | null, digits = 1) => (x === null ? '—' : x.toFixed(digits));
  const head = [
    'n',
    'runs',
    'lower bound s',
    'ours prov s',
    'upstream prov s',
    'ours/upstream',
    'ours/lower bound',
    'ours teardown s',
    'upstream teardown s',
    'PVE calls/VM ours',
    'PVE calls/VM upstream',
    'Omni RPCs/VM ours',
    'Omni RPCs/VM upstream',
    'peak RSS MiB ours',
    'peak RSS MiB upstream',
    'CPU s ours (workload)',
    'CPU s upstream (workload)',
  ];
  const rows = cases.map((c) => [
    String(c.n),
    String(c.runs),
    f(c.lower_bound_s),
    f(c.ours_provision_s),
    c.upstream_provision_s === null && c.upstream_skipped_reason ? 'NOT RUN' : f(c.upstream_provision_s),
    f(c.ratio_provision_ours_upstream, 2),
    f(c.ratio_provision_ours_lower_bound, 2),
    f(c.ours_teardown_s),
    f(c.upstream_teardown_s),
    f(c.ours_api_calls_per_vm),
    f(c.upstream_api_calls_per_vm),
    f(c.ours_omni_rpcs_per_vm),
    f(c.upstream_omni_rpcs_per_vm),
    f(c.ours_rss_mb, 0),
    f(c.upstream_rss_mb, 0),
    `${f(c.ours_cpu_s, 2)} (${f(c.ours_cpu_workload_s, 2)})`,
    `${f(c.upstream_cpu_s, 2)} (${f(c.upstream_cpu_workload_s, 2)})`,
  ]);
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
  if (skipReason) lines.push(`**UPSTREAM NOT MEASURED**: ${skipReason}`);
  const failed = cases.flatMap((c) => Object.entries(c.detail).filter(([, d]) => d.runs_failed > 0).map(([k, d]) => `n=${c.n} ${k}: ${d.runs_failed} run(s) failed`));
  for (const l of failed) lines.push(`**FAILED RUNS**: ${l}`);
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const cases = await runBench(parseBenchArgs(process.argv.slice(2)));
    const failed = cases.some((c) => Object.values(c.detail).some((d) => d.runs_failed > 0));
    process.exitCode = failed ? 1 : 0;
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  }
}
