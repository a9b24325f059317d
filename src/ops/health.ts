// Readiness bookkeeping: the outcome of each periodic check (Omni heartbeat, Proxmox health), with staleness,
// turned into the report `/readyz` serves.

export interface CheckStatus {
  /** True when the last attempt succeeded and it is recent enough. */
  ok: boolean;
  /** What the check verifies, for people reading `/readyz`. */
  description: string;
  /** Why it is not ok (absent when ok). */
  reason?: string;
  /** ISO time of the last attempt, if any. */
  lastAttemptAt?: string;
  /** ISO time of the last success, if any. */
  lastSuccessAt?: string;
  /** Failed attempts since the last success. */
  consecutiveFailures: number;
  /** Why the check does not apply right now (it then counts as ok), e.g. the heartbeat on a standby. */
  notApplicable?: string;
}

/** leader: this instance holds the leader lease and acts; standby: another one does (or none yet). */
export type InstanceRole = 'leader' | 'standby';

export interface HealthReport {
  /** Set when the daemon runs a leader election. */
  role?: InstanceRole;
  checks: Record<string, CheckStatus>;
}

export interface Readiness {
  ready: boolean;
  failed: Array<{ check: string; reason: string }>;
}

/** Ready when there is at least one check and every check is ok. */
export function readiness(report: HealthReport): Readiness {
  const entries = Object.entries(report.checks);
  const failed = entries
    .filter(([, c]) => !c.ok)
    .map(([check, c]) => ({ check, reason: c.reason ?? 'failed' }));
  if (entries.length === 0) failed.push({ check: 'none', reason: 'no readiness checks are registered' });
  return { ready: failed.length === 0, failed };
}

export interface CheckDefinition {
  description: string;
  /** A success older than this no longer counts (the loop that runs the check may be stuck). */
  maxAgeMs?: number;
  /** Only the lease holder runs it: on a standby it reports ok with `notApplicable`. */
  leaderOnly?: boolean;
}

interface CheckRecord {
  def: CheckDefinition;
  lastAttemptAt?: number;
  lastSuccessAt?: number;
  lastError?: string;
  consecutiveFailures: number;
}

const MAX_REASON_CHARS = 300;

/** Records check outcomes as they happen and reports them on demand. */
export class HealthChecks {
  readonly #checks = new Map<string, CheckRecord>();
  readonly #now: () => number;
  #role: InstanceRole | undefined;

  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? Date.now;
  }

  /** Sets this instance's role (leader election); leader-only checks do not apply to a standby. */
  setRole(role: InstanceRole): void {
    this.#role = role;
  }

  define(name: string, def: CheckDefinition): void {
    if (this.#checks.has(name)) throw new Error(`health check ${name} is already defined`);
    this.#checks.set(name, { def, consecutiveFailures: 0 });
  }

  pass(name: string): void {
    const c = this.#record(name);
    const now = this.#now();
    c.lastAttemptAt = now;
    c.lastSuccessAt = now;
    c.consecutiveFailures = 0;
    delete c.lastError;
  }

  /** Records a failure. The message shown is the error's first line, shortened; keep secrets out of errors. */
  fail(name: string, error: unknown): void {
    const c = this.#record(name);
    c.lastAttemptAt = this.#now();
    c.consecutiveFailures += 1;
    c.lastError = describeError(error);
  }

  report(): HealthReport {
    const now = this.#now();
    const checks: Record<string, CheckStatus> = {};
    for (const [name, c] of this.#checks) {
      const status: CheckStatus = { ok: false, description: c.def.description, consecutiveFailures: c.consecutiveFailures };
      if (c.def.leaderOnly && this.#role === 'standby') {
        checks[name] = { ...status, ok: true, notApplicable: 'this instance is a standby: only the lease holder does this' };
        continue;
      }
      if (c.lastAttemptAt !== undefined) status.lastAttemptAt = new Date(c.lastAttemptAt).toISOString();
      if (c.lastSuccessAt !== undefined) status.lastSuccessAt = new Date(c.lastSuccessAt).toISOString();
      if (c.lastAttemptAt === undefined) {
        status.reason = 'not run yet';
      } else if (c.lastError !== undefined) {
        status.reason = c.lastError;
      } else if (c.def.maxAgeMs !== undefined && now - c.lastSuccessAt! > c.def.maxAgeMs) {
        const age = Math.round((now - c.lastSuccessAt!) / 1000);
        status.reason = `last success was ${age}s ago (limit ${Math.round(c.def.maxAgeMs / 1000)}s); the check loop may be stuck`;
      } else {
        status.ok = true;
      }
      checks[name] = status;
    }
    return this.#role !== undefined ? { role: this.#role, checks } : { checks };
  }

  #record(name: string): CheckRecord {
    const c = this.#checks.get(name);
    if (!c) throw new Error(`health check ${name} is not defined`);
    return c;
  }
}

function describeError(error: unknown): string {
  const text = error instanceof Error ? error.message : typeof error === 'string' ? error : String(error);
  const line = (text.split('\n')[0] ?? '').trim() || 'failed';
  return line.length > MAX_REASON_CHARS ? `${line.slice(0, MAX_REASON_CHARS - 1)}…` : line;
}

/** Names of the daemon's readiness checks. */
export const OMNI_HEARTBEAT_CHECK = 'omniHeartbeat';
export const PROXMOX_CHECK = 'proxmox';
export const LEADER_LEASE_CHECK = 'leaderLease';

/**
 * The daemon's checks: the heartbeat to Omni (stale after three missed intervals) and the Proxmox health check
 * (stale after three missed intervals of its own).
 */
export function createProviderHealthChecks(opts: {
  heartbeatIntervalSeconds: number;
  proxmoxCheckIntervalSeconds: number;
  /** With a leader election: the lease must have been read or renewed within this many seconds. */
  leaseMaxAgeSeconds?: number;
  now?: () => number;
}): HealthChecks {
  const checks = new HealthChecks(opts.now ? { now: opts.now } : {});
  checks.define(OMNI_HEARTBEAT_CHECK, {
    description: 'last heartbeat written to Omni (InfraProviderHealthStatus)',
    maxAgeMs: opts.heartbeatIntervalSeconds * 3 * 1000,
    leaderOnly: true,
  });
  if (opts.leaseMaxAgeSeconds !== undefined) {
    checks.define(LEADER_LEASE_CHECK, {
      description: 'last read or renewal of the leader lease in Omni (leader and standby alike)',
      maxAgeMs: opts.leaseMaxAgeSeconds * 1000,
    });
  }
  checks.define(PROXMOX_CHECK, {
    description: 'last Proxmox API health check',
    maxAgeMs: opts.proxmoxCheckIntervalSeconds * 3 * 1000,
  });
  return checks;
}
