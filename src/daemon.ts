// The long-running provider: connects Omni and Proxmox from a LiveConfig, serves the ops endpoint, runs until
// SIGTERM/SIGINT, then stops taking work and lets in-flight steps finish or checkpoint within a bound.
import { readFileSync } from 'node:fs';
import type { LiveConfig } from './config/index.js';
import { connectOmni, type OmniClient } from './cosi/omni-client.js';
import { providerLeaseKind } from './cosi/resources.js';
import { toCosiError } from './cosi/state.js';
import { decodeServiceAccountKey } from './cosi/signing.js';
import type { Logger } from './log.js';
import { OmniImageService } from './omni/images.js';
import { LeaderElector, newLeaseIdentity, NotLeaderError, type LeaseIdentity } from './omni/lease.js';
import { startProvider, type RunningProvider } from './omni/provider.js';
import {
  createProviderHealthChecks,
  createProviderMetrics,
  LEADER_LEASE_CHECK,
  recordOmniRpcs,
  recordProviderEvents,
  recordPveCalls,
  recordPveTasks,
  startOpsServer,
  trackRequestPhases,
  type HealthReport,
  type ProviderMetrics,
} from './ops/index.js';
import { Housekeeper } from './ops/housekeeping.js';
import { createHousekeepingMetrics } from './ops/providerMetrics.js';
import { PveClient } from './proxmox/client.js';
import { omniAddressBook } from './provision/addresses.js';
import { REQUEST_PHASES, type RequestPhase } from './provision/controller.js';
import { ProxmoxProvisioner } from './provision/proxmoxProvisioner.js';
import { TaskSlots } from './provision/taskSlots.js';

export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '';
  } catch {
    return '';
  }
}

export interface RunningDaemon {
  /** The provider while this instance holds the leader lease; throws on a standby. */
  readonly provider: RunningProvider;
  /** The provider while this instance acts, else undefined. */
  readonly acting: RunningProvider | undefined;
  /** The leader election (role, lease, fence). */
  elector: LeaderElector;
  /** This process in the lease and in its user agent. */
  identity: LeaseIdentity;
  provisioner: ProxmoxProvisioner;
  pve: PveClient;
  omni: OmniClient;
  /** The metrics served on /metrics. */
  metrics: ProviderMetrics;
  /** URL of the ops endpoint, when it is on. */
  opsUrl?: string;
  /** Orphaned VMs and unused ISOs (src/ops/housekeeping.ts); present when housekeeping is configured and on. */
  housekeeper?: Housekeeper;
  /** What `/readyz` reports (role and checks). */
  health(): HealthReport;
  /** Resolves when the provider could not start after taking the lease for a reason no retry fixes (bad key, ...). */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

/** What the daemon needs of a configuration (a LiveConfig, or the demo's own: no housekeeping there). */
export type DaemonSettings = Pick<LiveConfig, 'omni' | 'proxmox' | 'provider'> & Partial<Pick<LiveConfig, 'housekeeping'>>;

/** User agent of both clients: names this process so that Omni's and Proxmox's logs tell instances apart. */
export function userAgent(version: string, instance: string): string {
  return `omni-infra-provider-proxmox/${version || 'dev'} instance/${instance}`;
}

/**
 * Starts the daemon for a live configuration: the leader election first, then, while this instance holds the lease,
 * the provider (status, heartbeat, controller). Rejects on configuration errors (bad key, wrong ID) seen at start.
 */
export async function startDaemon(cfg: DaemonSettings, log: Logger, opts: { signal?: AbortSignal } = {}): Promise<RunningDaemon> {
  const key = await decodeServiceAccountKey(cfg.omni.serviceAccountKey, { providerId: cfg.provider.id });
  const version = packageVersion();
  const identity = newLeaseIdentity(version);
  const agent = userAgent(version, identity.instance);
  const timing = {
    durationMs: cfg.provider.leaseDurationSeconds * 1000,
    renewDeadlineMs: cfg.provider.leaseRenewDeadlineSeconds * 1000,
    retryPeriodMs: cfg.provider.leaseRetryPeriodSeconds * 1000,
  };
  const checks = createProviderHealthChecks({
    heartbeatIntervalSeconds: cfg.provider.heartbeatIntervalSeconds,
    proxmoxCheckIntervalSeconds: cfg.provider.heartbeatIntervalSeconds,
    leaseMaxAgeSeconds: cfg.provider.leaseDurationSeconds,
  });
  checks.setRole('standby');
  const metrics = createProviderMetrics({ version, health: checks });
  // The fence: every write to Omni (but the lease itself) and to Proxmox is refused unless this instance holds the
  // lease and its renew deadline has not passed (src/omni/lease.ts).
  let elector: LeaderElector | undefined;
  const fence = (what: string) => {
    if (!elector) throw new NotLeaderError(`refusing ${what}: the leader election has not started`);
    elector.assertCanAct(what);
  };
  const leaseType = providerLeaseKind(cfg.provider.id).type;
  const omni = connectOmni({
    endpoint: cfg.omni.endpoint,
    key,
    providerId: cfg.provider.id,
    insecureSkipVerify: cfg.omni.insecureSkipVerify,
    ...(cfg.omni.caFile !== undefined ? { caCertificates: readFileSync(cfg.omni.caFile) } : {}),
    userAgent: agent,
    logger: log.child({ component: 'omni' }),
    onRpc: recordOmniRpcs(metrics),
    state: { writeGuard: (op, type) => (type === leaseType ? undefined : fence(op)) },
  });
  const pve = new PveClient({
    ...cfg.proxmox,
    userAgent: agent,
    writeGuard: (method, path) => fence(`${method} ${path}`),
    logger: log.child({ component: 'proxmox' }),
    onResponse: recordPveCalls(metrics),
  });
  const images = new OmniImageService({
    state: omni.state,
    management: omni.management,
    logger: log.child({ component: 'images' }),
    writeGuard: fence,
  });
  const provisioner = new ProxmoxProvisioner({
    pve,
    images,
    log: log.child({ component: 'steps' }),
    hostname: cfg.provider.hostname,
    taskWait: { onFinished: recordPveTasks(metrics) },
    taskSlots: new TaskSlots({ perNode: cfg.provider.tasksPerNode, perStorage: cfg.provider.tasksPerStorage }),
    shutdownTimeoutSec: cfg.provider.shutdownTimeoutSeconds,
    // Static addresses: what every request holds is read from the private states in Omni.
    addressBook: omniAddressBook(omni.state, cfg.provider.id),
  });

  // The provider runs while this instance holds the lease: started on acquisition, stopped on loss. Starts and stops
  // run one after the other (a new term waits until the previous term's provider has stopped).
  let provider: RunningProvider | undefined;
  let term: AbortController | undefined;
  let transitions: Promise<void> = Promise.resolve();
  let stopping = false;
  let failure: Error | undefined;
  let resolveFailed: (err: Error) => void = () => undefined;
  const failed = new Promise<Error>((resolve) => (resolveFailed = resolve));
  const reportFailure = (err: Error) => {
    failure ??= err;
    resolveFailed(err);
  };
  opts.signal?.addEventListener('abort', () => term?.abort(), { once: true });
  const startActing = () => {
    const abort = new AbortController();
    term = abort;
    transitions = transitions.then(async () => {
      if (abort.signal.aborted || stopping) return;
      try {
        provider = await startProvider({
          omni,
          providerId: cfg.provider.id,
          name: cfg.provider.name,
          description: cfg.provider.description,
          provisioner,
          concurrency: cfg.provider.concurrency,
          heartbeatIntervalMs: cfg.provider.heartbeatIntervalSeconds * 1000,
          version,
          logger: log,
          observer: recordProviderEvents(metrics),
          signal: abort.signal,
        });
        if (abort.signal.aborted) await stopProvider();
      } catch (err) {
        if (abort.signal.aborted) return;
        const cosi = toCosiError(err, 'starting the provider');
        log.error({ err: cosi.message }, 'the provider could not start after taking the leader lease');
        reportFailure(cosi);
      }
    });
  };
  const stopProvider = async () => {
    const p = provider;
    provider = undefined;
    await p?.stop();
  };
  const stopActing = () => {
    term?.abort();
    transitions = transitions.then(stopProvider);
  };

  elector = new LeaderElector({
    state: omni.state,
    providerId: cfg.provider.id,
    identity,
    timing,
    logger: log,
    onStartedLeading: startActing,
    onStoppedLeading: stopActing,
    onStatus: (st) => {
      checks.setRole(st.role);
      metrics.leader.set(undefined, st.role === 'leader' ? 1 : 0);
    },
  });
  let acquisitionsSeen = 0;

  const closeClients = async () => {
    omni.close();
    await pve.close();
  };
  try {
    log.info({ instance: identity.instance, ...timing }, 'joining the leader election');
    await elector.start();
    // Taken at start (the usual single-instance case): wait for the provider, so start-up errors reject as before.
    await transitions;
    if (failure) throw failure;
  } catch (err) {
    stopping = true;
    await elector.stop().catch(() => undefined);
    await transitions;
    await closeClients();
    throw err;
  }
  if (opts.signal?.aborted) log.info('start-up interrupted');

  trackRequestPhases(metrics, () => provider?.controller.requestPhases() ?? emptyPhases());

  // Health follows the provider's own view while leading (heartbeat reached Omni, Proxmox health check passed); a
  // standby checks the lease and Proxmox (read-only) so that it is known to be ready to take over.
  let standbyCheck: Promise<void> | undefined;
  let standbyCheckedAt = 0;
  const healthTimer = setInterval(() => {
    const lease = elector.status();
    checks.setRole(lease.role);
    metrics.leader.set(undefined, lease.role === 'leader' ? 1 : 0);
    if (lease.acquisitions > acquisitionsSeen) {
      metrics.leaseAcquisitions.inc({}, lease.acquisitions - acquisitionsSeen);
      acquisitionsSeen = lease.acquisitions;
    }
    if (lease.omniOk) checks.pass(LEADER_LEASE_CHECK);
    else checks.fail(LEADER_LEASE_CHECK, lease.lastError || 'the leader lease has not been read yet');
    const p = provider;
    if (p && lease.role === 'leader') {
      const h = p.health();
      if (h.omniOk) checks.pass('omniHeartbeat');
      else checks.fail('omniHeartbeat', h.lastError || 'no heartbeat reached Omni yet');
      if (h.proxmoxOk) checks.pass('proxmox');
      else checks.fail('proxmox', h.lastError || 'Proxmox health check has not passed yet');
    } else if (!standbyCheck && Date.now() - standbyCheckedAt >= cfg.provider.heartbeatIntervalSeconds * 1000) {
      standbyCheckedAt = Date.now();
      standbyCheck = provisioner
        .healthCheck()
        .then(
          () => checks.pass('proxmox'),
          (err: unknown) => checks.fail('proxmox', err),
        )
        .finally(() => (standbyCheck = undefined));
    }
  }, 1000);
  healthTimer.unref();

  // Housekeeping: reports orphaned VMs and unused ISOs; removes them only when the settings say so.
  let housekeeper: Housekeeper | undefined;
  if (cfg.housekeeping && cfg.housekeeping.intervalSeconds > 0) {
    housekeeper = new Housekeeper({
      pve,
      state: omni.state,
      providerId: cfg.provider.id,
      settings: cfg.housekeeping,
      log: log.child({ component: 'housekeeping' }),
      deprovision: (ctx) => provisioner.deprovision(ctx),
      metrics: createHousekeepingMetrics(metrics.registry),
      // Only the lease holder removes anything (every instance reports what it finds).
      mayWrite: () => elector.canAct(),
      busy: () => provisioner.slots.busy(),
    });
    housekeeper.start();
  }

  let ops: { url: string; close(): Promise<void> } | undefined;
  if (cfg.provider.healthListen) {
    ops = await startOpsServer({
      listen: cfg.provider.healthListen,
      health: () => checks.report(),
      metrics: metrics.registry,
      // startOpsServer logs "ops endpoint listening" itself, once.
      logger: log.child({ component: 'ops' }),
    });
  }

  const electorRef = elector;
  let stopped: Promise<void> | undefined;
  return {
    get provider(): RunningProvider {
      if (!provider) throw new Error('this instance is a standby: another instance holds the leader lease');
      return provider;
    },
    get acting() {
      return provider;
    },
    elector: electorRef,
    identity,
    provisioner,
    pve,
    omni,
    metrics,
    failed,
    health: () => checks.report(),
    ...(ops ? { opsUrl: ops.url } : {}),
    ...(housekeeper ? { housekeeper } : {}),
    stop() {
      stopped ??= (async () => {
        stopping = true;
        clearInterval(healthTimer);
        // The provider stops first, while the lease is still renewed, so in-flight steps may finish or checkpoint;
        // then the election stops and the lease is released for a standby to take at once.
        term?.abort();
        await transitions;
        await housekeeper?.stop();
        await stopProvider();
        await electorRef.stop();
        await transitions;
        await standbyCheck;
        await ops?.close();
        await closeClients();
      })();
      return stopped;
    },
  };
}

function emptyPhases(): Record<RequestPhase, number> {
  return Object.fromEntries(REQUEST_PHASES.map((p) => [p, 0])) as Record<RequestPhase, number>;
}

/** Resolves on the first SIGTERM or SIGINT. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
