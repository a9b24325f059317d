// The long-running provider: connects Omni and Proxmox from a LiveConfig, serves the ops endpoint, runs until
// SIGTERM/SIGINT, then stops taking work and lets in-flight steps finish or checkpoint within a bound.
import { readFileSync } from 'node:fs';
import type { LiveConfig } from './config/index.js';
import { connectOmni, type OmniClient } from './cosi/omni-client.js';
import { decodeServiceAccountKey } from './cosi/signing.js';
import type { Logger } from './log.js';
import { OmniImageService } from './omni/images.js';
import { startProvider, type RunningProvider } from './omni/provider.js';
import {
  createProviderHealthChecks,
  createProviderMetrics,
  recordOmniRpcs,
  recordProviderEvents,
  recordPveCalls,
  recordPveTasks,
  startOpsServer,
  trackRequestPhases,
  type ProviderMetrics,
} from './ops/index.js';
import { Housekeeper } from './ops/housekeeping.js';
import { createHousekeepingMetrics } from './ops/providerMetrics.js';
import { PveClient } from './proxmox/client.js';
import { omniAddressBook } from './provision/addresses.js';
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
  provider: RunningProvider;
  provisioner: ProxmoxProvisioner;
  pve: PveClient;
  omni: OmniClient;
  /** The metrics served on /metrics. */
  metrics: ProviderMetrics;
  /** URL of the ops endpoint, when it is on. */
  opsUrl?: string;
  /** Orphaned VMs and unused ISOs (src/ops/housekeeping.ts); present when housekeeping is configured and on. */
  housekeeper?: Housekeeper;
  stop(): Promise<void>;
}

/** What the daemon needs of a configuration (a LiveConfig, or the demo's own: no housekeeping there). */
export type DaemonSettings = Pick<LiveConfig, 'omni' | 'proxmox' | 'provider'> & Partial<Pick<LiveConfig, 'housekeeping'>>;

/** Starts the provider for a live configuration. Rejects on configuration errors (bad key, wrong ID). */
export async function startDaemon(cfg: DaemonSettings, log: Logger, opts: { signal?: AbortSignal } = {}): Promise<RunningDaemon> {
  const key = await decodeServiceAccountKey(cfg.omni.serviceAccountKey, { providerId: cfg.provider.id });
  const version = packageVersion();
  const checks = createProviderHealthChecks({
    heartbeatIntervalSeconds: cfg.provider.heartbeatIntervalSeconds,
    proxmoxCheckIntervalSeconds: cfg.provider.heartbeatIntervalSeconds,
  });
  const metrics = createProviderMetrics({ version, health: checks });
  const omni = connectOmni({
    endpoint: cfg.omni.endpoint,
    key,
    providerId: cfg.provider.id,
    insecureSkipVerify: cfg.omni.insecureSkipVerify,
    ...(cfg.omni.caFile !== undefined ? { caCertificates: readFileSync(cfg.omni.caFile) } : {}),
    logger: log.child({ component: 'omni' }),
    onRpc: recordOmniRpcs(metrics),
  });
  const pve = new PveClient({ ...cfg.proxmox, logger: log.child({ component: 'proxmox' }), onResponse: recordPveCalls(metrics) });
  const images = new OmniImageService({ state: omni.state, management: omni.management, logger: log.child({ component: 'images' }) });
  const provisioner = new ProxmoxProvisioner({
    pve,
    images,
    log: log.child({ component: 'steps' }),
    hostname: cfg.provider.hostname,
    taskWait: { onFinished: recordPveTasks(metrics) },
    taskSlots: new TaskSlots({ perNode: cfg.provider.tasksPerNode, perStorage: cfg.provider.tasksPerStorage }),
    // Static addresses: what every request holds is read from the private states in Omni.
    addressBook: omniAddressBook(omni.state, cfg.provider.id),
  });

  let provider: RunningProvider;
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
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  } catch (err) {
    omni.close();
    await pve.close();
    throw err;
  }

  const controller = provider.controller;
  trackRequestPhases(metrics, () => controller.requestPhases());

  // Health follows the provider's own view: heartbeat reached Omni, Proxmox health check passed.
  const healthTimer = setInterval(() => {
    const h = provider.health();
    if (h.omniOk) checks.pass('omniHeartbeat');
    else checks.fail('omniHeartbeat', h.lastError || 'no heartbeat reached Omni yet');
    if (h.proxmoxOk) checks.pass('proxmox');
    else checks.fail('proxmox', h.lastError || 'Proxmox health check has not passed yet');
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
      // LEASE HOOK (issue 11, part 1): mayWrite: () => <this process holds the lease>,
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

  return {
    provider,
    provisioner,
    pve,
    omni,
    metrics,
    ...(ops ? { opsUrl: ops.url } : {}),
    ...(housekeeper ? { housekeeper } : {}),
    async stop() {
      clearInterval(healthTimer);
      await housekeeper?.stop();
      await provider.stop();
      await ops?.close();
      omni.close();
      await pve.close();
    },
  };
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
