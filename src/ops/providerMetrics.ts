// The daemon's metric families (names, help, labels) in one place, plus process metrics collected at scrape
// time. Labels never carry request IDs or VM IDs: they would grow without bound.
import type { ProviderObserver } from '../omni/provider.js';
import type { PveCallOutcome } from '../proxmox/client.js';
import type { TaskOutcome } from '../proxmox/tasks.js';
import type { HealthChecks } from './health.js';
import { type Counter, type Gauge, type Histogram, MetricsRegistry } from './metrics.js';

export const METRIC_PREFIX = 'proxmox_provider_';

export type StepResult = 'done' | 'retry' | 'failed';

export interface ProviderMetrics {
  readonly registry: MetricsRegistry;
  /** Always 1; carries the version labels. */
  readonly buildInfo: Gauge<'version' | 'node_version'>;
  /** Machine requests this provider is handling, by phase (provisioning, provisioned, failed, tearing_down). */
  readonly machineRequests: Gauge<'phase'>;
  /** Provision step runs by step name (pickNode, createSchematic, uploadISO, syncVM, startVM) and result. */
  readonly provisionSteps: Counter<'step' | 'result'>;
  readonly provisionStepDuration: Histogram<'step'>;
  /** Deprovision runs by result (done, retry, failed). */
  readonly deprovisions: Counter<'result'>;
  /** Proxmox API calls by HTTP method and status code (`error` when no answer came back). */
  readonly pveRequests: Counter<'method' | 'code'>;
  readonly pveRequestDuration: Histogram<'method'>;
  /** Proxmox tasks waited for, by task type (qmcreate, qmstart, download, ...) and result (ok, warnings, failed, vanished, timeout). */
  readonly pveTasks: Counter<'type' | 'result'>;
  /** Time spent waiting for a Proxmox task until its outcome was known, by task type. */
  readonly pveTaskDuration: Histogram<'type'>;
  /** Omni gRPC calls by method (`/cosi.resource.State/Get`, ...) and gRPC status code name (OK, UNAVAILABLE, ...). */
  readonly omniRpcs: Counter<'method' | 'code'>;
  /** Heartbeats written to Omni, by result (ok, failed). */
  readonly omniHeartbeats: Counter<'result'>;
  /** Unix time of the last heartbeat Omni accepted. */
  readonly omniHeartbeatLastSuccess: Gauge;
  /** Omni watch streams (re)opened, by resource type. */
  readonly omniWatchRestarts: Counter<'type'>;
  /** 1 when a readiness check currently passes, else 0. */
  readonly healthCheckUp: Gauge<'check'>;
  /** 1 while this instance holds the leader lease and may act, 0 while it stands by. */
  readonly leader: Gauge;
  /** Times this instance took the leader lease. */
  readonly leaseAcquisitions: Counter;
}

/** Tasks run from a second (qmconfig) to half an hour (a slow ISO download). */
const TASK_SECONDS_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1800] as const;

export interface ProviderMetricsOptions {
  version: string;
  /** Readiness checks mirrored into `proxmox_provider_health_check_up` at each scrape. */
  health?: HealthChecks;
  registry?: MetricsRegistry;
  /** Unix seconds the process started (default: from process.uptime()). */
  startTimeSeconds?: number;
}

export function createProviderMetrics(opts: ProviderMetricsOptions): ProviderMetrics {
  const registry = opts.registry ?? new MetricsRegistry();
  const p = METRIC_PREFIX;

  const buildInfo = registry.gauge<'version' | 'node_version'>({
    name: `${p}build_info`,
    help: 'Build information of the running provider; always 1.',
    labelNames: ['version', 'node_version'],
  });
  buildInfo.set({ version: opts.version, node_version: process.version }, 1);

  const metrics: ProviderMetrics = {
    registry,
    buildInfo,
    machineRequests: registry.gauge({
      name: `${p}machine_requests`,
      help: 'Machine requests handled by this provider, by phase.',
      labelNames: ['phase'],
    }),
    provisionSteps: registry.counter({
      name: `${p}provision_steps_total`,
      help: 'Provision step runs, by step and result.',
      labelNames: ['step', 'result'],
    }),
    provisionStepDuration: registry.histogram({
      name: `${p}provision_step_duration_seconds`,
      help: 'Time one provision step run took, in seconds.',
      labelNames: ['step'],
    }),
    deprovisions: registry.counter({
      name: `${p}deprovisions_total`,
      help: 'Deprovision runs, by result.',
      labelNames: ['result'],
    }),
    pveRequests: registry.counter({
      name: `${p}pve_requests_total`,
      help: 'Proxmox VE API requests, by HTTP method and status code ("error" when no answer arrived).',
      labelNames: ['method', 'code'],
    }),
    pveRequestDuration: registry.histogram({
      name: `${p}pve_request_duration_seconds`,
      help: 'Proxmox VE API request latency, in seconds.',
      labelNames: ['method'],
    }),
    pveTasks: registry.counter({
      name: `${p}pve_tasks_total`,
      help: 'Proxmox VE tasks waited for, by task type and result (ok, warnings, failed, vanished, timeout).',
      labelNames: ['type', 'result'],
    }),
    pveTaskDuration: registry.histogram({
      name: `${p}pve_task_duration_seconds`,
      help: 'Time from starting to wait for a Proxmox VE task until its outcome was known, in seconds.',
      labelNames: ['type'],
      buckets: TASK_SECONDS_BUCKETS,
    }),
    omniRpcs: registry.counter({
      name: `${p}omni_rpcs_total`,
      help: 'Omni gRPC calls, by method and gRPC status code.',
      labelNames: ['method', 'code'],
    }),
    omniHeartbeats: registry.counter({
      name: `${p}omni_heartbeats_total`,
      help: 'Heartbeats written to Omni, by result.',
      labelNames: ['result'],
    }),
    omniHeartbeatLastSuccess: registry.gauge({
      name: `${p}omni_heartbeat_last_success_timestamp_seconds`,
      help: 'Unix time of the last heartbeat Omni accepted.',
    }),
    omniWatchRestarts: registry.counter({
      name: `${p}omni_watch_restarts_total`,
      help: 'Omni watch streams opened again after a failure, by resource type.',
      labelNames: ['type'],
    }),
    healthCheckUp: registry.gauge({
      name: `${p}health_check_up`,
      help: 'Whether a readiness check currently passes (1) or not (0).',
      labelNames: ['check'],
    }),
    leader: registry.gauge({
      name: `${p}leader`,
      help: 'Whether this instance holds the leader lease and acts (1) or stands by (0).',
    }),
    leaseAcquisitions: registry.counter({
      name: `${p}lease_acquisitions_total`,
      help: 'Times this instance took the leader lease.',
    }),
  };

  if (opts.health) {
    const health = opts.health;
    registry.onCollect(() => {
      for (const [check, status] of Object.entries(health.report().checks)) {
        metrics.healthCheckUp.set({ check }, status.ok ? 1 : 0);
      }
    });
  }
  registerProcessMetrics(registry, opts.startTimeSeconds);
  return metrics;
}

/** Standard `process_*` metrics plus the V8 heap, read at scrape time. */
export function registerProcessMetrics(registry: MetricsRegistry, startTimeSeconds?: number): void {
  const start = startTimeSeconds ?? Math.round(Date.now() / 1000 - process.uptime());
  const startTime = registry.gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.' });
  const cpu = registry.counter({ name: 'process_cpu_seconds_total', help: 'Total user and system CPU time spent in seconds.' });
  const rss = registry.gauge({ name: 'process_resident_memory_bytes', help: 'Resident memory size in bytes.' });
  const heap = registry.gauge({ name: 'nodejs_heap_used_bytes', help: 'V8 heap in use, in bytes.' });
  startTime.set(undefined, start);
  registry.onCollect(() => {
    const usage = process.cpuUsage();
    const seconds = (usage.user + usage.system) / 1e6;
    cpu.inc(undefined, Math.max(0, seconds - cpu.get()));
    const mem = process.memoryUsage();
    rss.set(undefined, mem.rss);
    heap.set(undefined, mem.heapUsed);
  });
}

/** A PveClient `onResponse` hook counting calls by method and status and timing them. */
export function recordPveCalls(m: ProviderMetrics): (outcome: PveCallOutcome) => void {
  return (o) => {
    m.pveRequests.inc({ method: o.method, code: String(o.status) });
    m.pveRequestDuration.observe({ method: o.method }, o.seconds);
  };
}

/** A `waitForTask` `onFinished` hook counting task outcomes by type and timing the waits. */
export function recordPveTasks(m: ProviderMetrics): (type: string, outcome: TaskOutcome, seconds: number) => void {
  return (type, outcome, seconds) => {
    m.pveTasks.inc({ type, result: outcome });
    m.pveTaskDuration.observe({ type }, seconds);
  };
}

/** An Omni client `onRpc` hook counting calls by method and gRPC status code name. */
export function recordOmniRpcs(m: ProviderMetrics): (method: string, code: string, seconds: number) => void {
  return (method, code) => {
    m.omniRpcs.inc({ method, code });
  };
}

/** Provider hooks feeding step runs, deprovisions, watch restarts and heartbeats into the metrics. */
export function recordProviderEvents(m: ProviderMetrics, now: () => number = Date.now): ProviderObserver {
  return {
    stepRun(step, result, seconds) {
      m.provisionSteps.inc({ step, result });
      m.provisionStepDuration.observe({ step }, seconds);
    },
    deprovision(result) {
      m.deprovisions.inc({ result });
    },
    watchRestarted(watch) {
      m.omniWatchRestarts.inc({ type: watch });
    },
    heartbeat(ok) {
      m.omniHeartbeats.inc({ result: ok ? 'ok' : 'failed' });
      if (ok) m.omniHeartbeatLastSuccess.set(undefined, Math.round(now() / 1000));
    },
  };
}

/** Sets `machine_requests{phase}` from `counts` at every scrape (every phase it returns, zeros included). */
export function trackRequestPhases(m: ProviderMetrics, counts: () => Readonly<Record<string, number>>): void {
  m.registry.onCollect(() => {
    for (const [phase, n] of Object.entries(counts())) m.machineRequests.set({ phase }, n);
  });
}

/** Housekeeping (src/ops/housekeeping.ts): what it finds each pass and what it removes. */
export interface HousekeepingMetrics {
  /** VMs with this provider's identity that no machine request and no private state account for. */
  readonly orphanVms: Gauge;
  /** Our ISOs no VM and no private state names, by kind (`talos`, `seed`). */
  readonly unusedIsos: Gauge<'kind'>;
  readonly unusedIsoBytes: Gauge<'kind'>;
  /** Removals by kind (`vm`, `talos`, `seed`) and result (`done`, `failed`). */
  readonly removals: Counter<'kind' | 'result'>;
  /** Passes by result (`ok`, `failed`). */
  readonly runs: Counter<'result'>;
  /** Unix time of the last pass that completed. */
  readonly lastSuccess: Gauge;
}

export function createHousekeepingMetrics(registry: MetricsRegistry): HousekeepingMetrics {
  const p = METRIC_PREFIX;
  return {
    orphanVms: registry.gauge({ name: `${p}orphan_vms`, help: "VMs with this provider's identity that no machine request and no private state account for." }),
    unusedIsos: registry.gauge({ name: `${p}unused_isos`, help: 'Talos and seed ISOs of this provider that no VM and no private state uses, by kind.', labelNames: ['kind'] }),
    unusedIsoBytes: registry.gauge({ name: `${p}unused_iso_bytes`, help: 'Size of the unused ISOs, by kind.', labelNames: ['kind'] }),
    removals: registry.counter({ name: `${p}housekeeping_removals_total`, help: 'Orphaned VMs and unused ISOs removed by housekeeping, by kind and result.', labelNames: ['kind', 'result'] }),
    runs: registry.counter({ name: `${p}housekeeping_runs_total`, help: 'Housekeeping passes, by result.', labelNames: ['result'] }),
    lastSuccess: registry.gauge({ name: `${p}housekeeping_last_success_timestamp_seconds`, help: 'Unix time of the last housekeeping pass that completed.' }),
  };
}
