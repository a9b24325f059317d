// The provider's life on the Omni side: join-mode detection, ProviderStatus, heartbeat, dangling-state cleanup
// and the provisioning controller, started together and stopped together.
import * as grpc from '@grpc/grpc-js';
import type { OmniClient } from '../cosi/omni-client.js';
import { toCosiError } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';
import { ProvisionController, type ControllerObserver } from '../provision/controller.js';
import { providerDataSchemaJson } from '../provision/providerData.js';
import type { Provisioner } from '../provision/step.js';
import { detectJoinMode, type JoinMode } from './join.js';
import { Heartbeat, publishProviderStatus } from './providerStatus.js';

export interface StartProviderOptions {
  /** Result of connectOmni(). */
  omni: Pick<OmniClient, 'state'>;
  /** `--id`; must equal the service account's provider ID. */
  providerId: string;
  name: string;
  description: string;
  provisioner: Provisioner;
  /** Requests reconciled in parallel. Default 1. */
  concurrency?: number;
  /** Default 10 s. */
  heartbeatIntervalMs?: number;
  /** Shown by Omni (InfraProviderStatus.version). */
  version?: string;
  /** Base64 SVG icon; default ours. */
  icon?: string;
  encodeRequestIdsIntoTokens?: boolean;
  /** Bound for stop() waiting on in-flight reconciles. Default 30 s. */
  shutdownTimeoutMs?: number;
  /** Retry delay after a step failed hard. Default 60 s. */
  failedRetryMs?: number;
  logger?: Logger;
  /** Aborts the start-up retries (e.g. on SIGTERM while Omni is unreachable). */
  signal?: AbortSignal;
  /** Hooks for metrics: the controller's, plus each heartbeat write. */
  observer?: ProviderObserver;
}

export interface ProviderObserver extends ControllerObserver {
  /** A heartbeat write to Omni succeeded (true) or failed (false). */
  heartbeat?(ok: boolean): void;
}

export interface ProviderHealth {
  /** The last heartbeat reached Omni and the controller's watches are open. */
  omniOk: boolean;
  /** The last Proxmox health check passed. */
  proxmoxOk: boolean;
  lastError: string;
}

export interface RunningProvider {
  readonly joinMode: JoinMode;
  readonly controller: ProvisionController;
  health(): ProviderHealth;
  stop(): Promise<void>;
}

/** Errors that retrying cannot fix: wrong key, wrong --id, provider not registered in Omni. */
const CONFIGURATION_ERRORS = new Set<grpc.status>([
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNIMPLEMENTED,
]);

async function withStartupRetry<T>(what: string, run: () => Promise<T>, log: Logger, signal?: AbortSignal): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (err) {
      const cosi = toCosiError(err, what);
      if (CONFIGURATION_ERRORS.has(cosi.code) || signal?.aborted) throw cosi;
      const delay = Math.min(30_000, 500 * 2 ** (attempt - 1));
      log.warn({ err: cosi.message, attempt, retryInMs: delay }, `${what} failed; retrying`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, delay);
        signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            resolve();
          },
          { once: true },
        );
      });
    }
  }
}

/**
 * Starts everything the provider does against Omni. Resolves once the join mode is known and ProviderStatus is
 * written (retrying while Omni is unreachable); rejects on configuration errors (bad key, wrong ID).
 */
export async function startProvider(opts: StartProviderOptions): Promise<RunningProvider> {
  const log = (opts.logger ?? silentLogger).child({ provider: opts.providerId });
  const state = opts.omni.state;
  const joinMode = await withStartupRetry('listing Omni resource definitions', () => detectJoinMode(state), log, opts.signal);
  log.info({ joinMode }, joinMode === 'v2' ? 'Omni has provider join configs (v2 tokens)' : 'legacy Omni: using ConnectionParams and v1 tokens');
  const statusInfo = {
    providerId: opts.providerId,
    name: opts.name,
    description: opts.description,
    schema: providerDataSchemaJson(),
    version: opts.version ?? '',
    ...(opts.icon !== undefined ? { icon: opts.icon } : {}),
  };
  await withStartupRetry('writing the provider status to Omni', () => publishProviderStatus(state, statusInfo), log, opts.signal);

  const heartbeat = new Heartbeat({
    state,
    providerId: opts.providerId,
    healthCheck: () => opts.provisioner.healthCheck(),
    ...(opts.heartbeatIntervalMs !== undefined ? { intervalMs: opts.heartbeatIntervalMs } : {}),
    ...(opts.observer?.heartbeat ? { onBeat: (ok: boolean) => opts.observer?.heartbeat?.(ok) } : {}),
    logger: log,
  });
  const controller = new ProvisionController({
    state,
    providerId: opts.providerId,
    provisioner: opts.provisioner,
    joinMode,
    concurrency: opts.concurrency ?? 1,
    ...(opts.encodeRequestIdsIntoTokens !== undefined ? { encodeRequestIdsIntoTokens: opts.encodeRequestIdsIntoTokens } : {}),
    ...(opts.shutdownTimeoutMs !== undefined ? { shutdownTimeoutMs: opts.shutdownTimeoutMs } : {}),
    ...(opts.failedRetryMs !== undefined ? { failedRetryMs: opts.failedRetryMs } : {}),
    ...(opts.observer ? { observer: opts.observer } : {}),
    logger: log,
  });
  heartbeat.start();
  controller.start();
  log.info('infra provider started');

  let stopping: Promise<void> | undefined;
  return {
    joinMode,
    controller,
    health: () => {
      const beat = heartbeat.status();
      const ctrl = controller.status();
      return {
        omniOk: beat.omniOk && ctrl.watching,
        proxmoxOk: beat.infrastructureOk,
        lastError: beat.lastError !== '' ? beat.lastError : ctrl.lastError,
      };
    },
    stop: () => {
      stopping ??= (async () => {
        await controller.stop();
        await heartbeat.stop();
        log.info('infra provider stopped');
      })();
      return stopping;
    },
  };
}
