// Scriptable fault rules (per route, method, node, vmid; once, N times or with a seeded probability).
import type { SeededRandom } from '../rng.js';
import type { TaskOutcomeOverride } from './tasks.js';

/** Which requests a rule applies to. `route` is the route pattern (e.g. `/nodes/{node}/qemu`) or a regex on the path. */
export interface RequestMatch {
  method?: string;
  route?: string | RegExp;
  node?: string;
  vmid?: number;
}

export type RequestFault =
  /** Delay the response (simulated ms, plus up to `jitterMs` seeded jitter). */
  | { kind: 'latency'; ms: number; jitterMs?: number }
  /** Answer with this status without touching state (body empty for 59x unless `message` is given). */
  | { kind: 'httpError'; status: number; reason?: string; message?: string }
  /** Apply the request, then lose the answer: reset the connection or answer with a 5xx. */
  | { kind: 'lostResponse'; mode: 'reset' | 'error'; status?: number; reason?: string }
  /** Reset the connection before doing anything. */
  | { kind: 'connReset' }
  /** Never answer. */
  | { kind: 'hang' }
  /** Apply the request, then answer with a broken body. */
  | { kind: 'badBody'; mode: 'truncated' | 'invalidJson' | 'wrongContentType' };

export interface TaskMatch {
  type?: string;
  node?: string;
  vmid?: number;
}

export interface FaultTiming {
  /** How many times the rule fires (default 1; Infinity for always). */
  times?: number;
  /** Chance per matching request (seeded), default 1. */
  probability?: number;
  /** Only between these simulated times (ms since epoch). */
  window?: { fromMs?: number; toMs?: number };
}

interface Rule<M, A> {
  id: number;
  match: M;
  action: A;
  remaining: number;
  probability: number;
  window?: { fromMs?: number; toMs?: number };
}

export interface RequestFacts {
  method: string;
  route: string;
  path: string;
  node?: string;
  vmid?: number;
}

export class FaultPlan {
  private nextId = 1;
  private requestRules: Rule<RequestMatch, RequestFault>[] = [];
  private taskRules: Rule<TaskMatch, TaskOutcomeOverride>[] = [];

  constructor(
    private readonly rng: SeededRandom,
    private readonly now: () => number,
  ) {}

  /** Adds a request fault; returns its id for `remove`. */
  onRequest(match: RequestMatch, action: RequestFault, timing: FaultTiming = {}): number {
    return this.add(this.requestRules, match, action, timing);
  }

  /** Makes matching tasks fail, warn, hang, vanish or end oddly. */
  onTask(match: TaskMatch, outcome: TaskOutcomeOverride, timing: FaultTiming = {}): number {
    return this.add(this.taskRules, match, outcome, timing);
  }

  remove(id: number): void {
    this.requestRules = this.requestRules.filter((r) => r.id !== id);
    this.taskRules = this.taskRules.filter((r) => r.id !== id);
  }

  clear(): void {
    this.requestRules = [];
    this.taskRules = [];
  }

  /** Every request fault that fires for this request, in the order they were added (each consumes one use). */
  requestFaults(facts: RequestFacts): RequestFault[] {
    return this.fire(this.requestRules, (m) => matchesRequest(m, facts));
  }

  /** The first task outcome that fires for this task. */
  taskOutcome(facts: { type: string; node: string; vmid?: number }): TaskOutcomeOverride | undefined {
    const fired = this.fire(this.taskRules, (m) =>
      (m.type === undefined || m.type === facts.type) &&
      (m.node === undefined || m.node === facts.node) &&
      (m.vmid === undefined || m.vmid === facts.vmid), true);
    return fired[0];
  }

  private add<M, A>(rules: Rule<M, A>[], match: M, action: A, timing: FaultTiming): number {
    const id = this.nextId++;
    rules.push({
      id,
      match,
      action,
      remaining: timing.times ?? 1,
      probability: timing.probability ?? 1,
      ...(timing.window ? { window: timing.window } : {}),
    });
    return id;
  }

  private fire<M, A>(rules: Rule<M, A>[], matches: (m: M) => boolean, firstOnly = false): A[] {
    const out: A[] = [];
    const now = this.now();
    for (const rule of rules) {
      if (rule.remaining <= 0 || !matches(rule.match)) continue;
      if (rule.window?.fromMs !== undefined && now < rule.window.fromMs) continue;
      if (rule.window?.toMs !== undefined && now > rule.window.toMs) continue;
      if (rule.probability < 1 && this.rng.next() >= rule.probability) continue;
      rule.remaining--;
      out.push(rule.action);
      if (firstOnly) break;
    }
    return out;
  }
}

function matchesRequest(m: RequestMatch, f: RequestFacts): boolean {
  if (m.method !== undefined && m.method.toUpperCase() !== f.method) return false;
  if (m.route !== undefined) {
    if (typeof m.route === 'string' ? m.route !== f.route : !m.route.test(f.path)) return false;
  }
  if (m.node !== undefined && m.node !== f.node) return false;
  if (m.vmid !== undefined && m.vmid !== f.vmid) return false;
  return true;
}
