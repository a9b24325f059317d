// What Omni shows about this provider: the InfraProviderStatus (name, description, icon, provider-data schema,
// version) written at startup, and the periodic InfraProviderHealthStatus heartbeat carrying the health-check error.
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { InfraProviderStatusSpecSchema } from '../gen/omni/specs/infra_pb.js';
import { InfraProviderHealthStatusKind, InfraProviderStatusKind, type TypedResource } from '../cosi/resources.js';
import type { CosiState } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';

/** Proxmox-style mark (our own drawing): two crossing strokes in Proxmox orange on a dark tile. */
export const PROVIDER_ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">
<rect width="64" height="64" rx="10" fill="#1f1f1f"/>
<path d="M14 14 L32 32 L14 50" fill="none" stroke="#e57000" stroke-width="7" stroke-linecap="round" stroke-linejoin="round"/>
<path d="M50 14 L32 32 L50 50" fill="none" stroke="#ffffff" stroke-width="7" stroke-linecap="round" stroke-linejoin="round"/>
</svg>
`;

/** Icon as InfraProviderStatus.icon wants it: base64 of the SVG bytes, without padding (like the Go provider). */
export function encodeIcon(svg: string): string {
  return Buffer.from(svg, 'utf8').toString('base64').replace(/=+$/, '');
}

export interface ProviderStatusInfo {
  providerId: string;
  name: string;
  description: string;
  /** Base64 (unpadded) SVG; default: our icon. */
  icon?: string;
  /** JSON schema of provider_data. */
  schema: string;
  version: string;
}

/**
 * Creates or updates `infra-provider/InfraProviderStatuses/<id>` (owner ""). Nothing is written when Omni already has
 * exactly this content.
 */
export async function publishProviderStatus(
  state: CosiState,
  info: ProviderStatusInfo,
): Promise<TypedResource<typeof InfraProviderStatusSpecSchema>> {
  const spec = create(InfraProviderStatusSpecSchema, {
    schema: info.schema,
    name: info.name,
    description: info.description,
    icon: info.icon ?? encodeIcon(PROVIDER_ICON_SVG),
    version: info.version,
  });
  return state.modify(
    InfraProviderStatusKind,
    info.providerId,
    (res) => {
      res.spec = create(InfraProviderStatusSpecSchema, spec);
    },
    { owner: '', expectedPhase: null },
  );
}

/** Owner of the health status resource: `<id>.ProviderHealthStatusController`. */
export function healthStatusOwner(providerId: string): string {
  return `${providerId}.ProviderHealthStatusController`;
}

export interface HeartbeatOptions {
  state: CosiState;
  providerId: string;
  /** Throws with an operator-readable message when the infrastructure is unusable. */
  healthCheck: () => Promise<void>;
  /** Default 10 s (Omni shows "disconnected" after 31 s without a heartbeat). */
  intervalMs?: number;
  /** A health check taking longer than this counts as failed. Default: the interval. */
  healthCheckTimeoutMs?: number;
  /** First delay after a failed write; doubles up to the interval. Default 1 s. */
  retryInitialMs?: number;
  logger?: Logger;
  now?: () => Date;
  /** Called after each heartbeat write attempt (metrics). Exceptions it throws are ignored. */
  onBeat?: (ok: boolean) => void;
}

export interface HeartbeatStatus {
  /** The last heartbeat write reached Omni. */
  omniOk: boolean;
  /** The last health check passed. */
  infrastructureOk: boolean;
  /** The last health-check error or heartbeat write error, '' when all is well. */
  lastError: string;
  beats: number;
}

/**
 * Writes `infra-provider-ephemeral/InfraProviderHealthStatuses/<id>` now and then every interval with the
 * current time and the health-check error. The resource is ephemeral in Omni: after an Omni restart the next
 * beat creates it again. Write failures are retried sooner with backoff; nothing here throws.
 */
export class Heartbeat {
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly checkTimeoutMs: number;
  private readonly retryInitialMs: number;
  private readonly now: () => Date;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failures = 0;
  private readonly current: HeartbeatStatus = { omniOk: false, infrastructureOk: false, lastError: '', beats: 0 };

  constructor(private readonly opts: HeartbeatOptions) {
    this.log = (opts.logger ?? silentLogger).child({ component: 'heartbeat' });
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.checkTimeoutMs = opts.healthCheckTimeoutMs ?? this.intervalMs;
    this.retryInitialMs = opts.retryInitialMs ?? 1000;
    this.now = opts.now ?? (() => new Date());
  }

  start(): void {
    if (this.running || this.stopped) return;
    this.schedule(0);
  }

  status(): HeartbeatStatus {
    return { ...this.current };
  }

  /** Stops beating; waits for a beat in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.beat().finally(() => {
        this.running = undefined;
      });
    }, ms);
  }

  /** One heartbeat: health check, then the write. Schedules the next one. */
  async beat(): Promise<void> {
    const checkError = await this.runHealthCheck();
    this.current.infrastructureOk = checkError === '';
    try {
      await this.opts.state.modify(
        InfraProviderHealthStatusKind,
        this.opts.providerId,
        (res) => {
          res.spec.lastHeartbeatTimestamp = timestampFromDate(this.now());
          res.spec.error = checkError;
        },
        { owner: healthStatusOwner(this.opts.providerId) },
      );
      this.current.omniOk = true;
      this.current.lastError = checkError;
      this.current.beats++;
      this.failures = 0;
      this.reportBeat(true);
      this.schedule(this.intervalMs);
    } catch (err) {
      this.failures++;
      const message = err instanceof Error ? err.message : String(err);
      this.current.omniOk = false;
      this.current.lastError = `writing the heartbeat to Omni failed: ${message}`;
      const delay = Math.min(this.intervalMs, this.retryInitialMs * 2 ** (this.failures - 1));
      this.log.warn({ err: message, retryInMs: delay }, 'heartbeat write failed');
      this.reportBeat(false);
      this.schedule(delay);
    }
  }

  private reportBeat(ok: boolean): void {
    try {
      this.opts.onBeat?.(ok);
    } catch {
      // metrics must not break the heartbeat
    }
  }

  private async runHealthCheck(): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.opts.healthCheck(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`health check did not answer within ${this.checkTimeoutMs} ms`)), this.checkTimeoutMs);
        }),
      ]);
      return '';
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.log.warn({ err: message }, 'health check failed');
      return message === '' ? 'health check failed' : message;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }
}
