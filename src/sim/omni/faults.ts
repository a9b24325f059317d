// Fault injection for the in-process Omni: outages, one-shot RPC failures and cut watch streams, driven by tests.
import { GrpcCode, OmniError } from './errors.js';

interface PlannedFailure {
  method: string;
  error: OmniError;
  remaining: number;
}

/** What happens to an open watch stream: it ends with an error, or gets an ERRORED event and then falls silent. */
export type WatchFault = { type: 'end'; error: OmniError } | { type: 'errored'; message: string };
export type WatchCutter = (fault: WatchFault) => void;

export class FaultInjector {
  private unavailableUntil = 0;
  private held = false;
  private readonly failures: PlannedFailure[] = [];
  private readonly cutters = new Map<WatchCutter, string>();
  private readonly staleTypes = new Map<string, number>();
  /** User-agent substrings of clients cut off from this Omni (see isolate). */
  private readonly isolated = new Set<string>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Every call fails with UNAVAILABLE for `ms` milliseconds (until `restore()` when omitted); open watches are cut. */
  makeUnavailable(ms?: number): void {
    if (ms === undefined) this.held = true;
    else this.unavailableUntil = Math.max(this.unavailableUntil, this.now() + ms);
    this.cutWatches();
  }

  restore(): void {
    this.held = false;
    this.unavailableUntil = 0;
  }

  isUnavailable(): boolean {
    return this.held || this.now() < this.unavailableUntil;
  }

  /** The next `times` calls of `method` (full path, or its last segment like `Update`) fail with `code`/`message`. */
  failNext(method: string, code: GrpcCode, message: string, times = 1): void {
    this.failures.push({ method, error: new OmniError('internal', message, code), remaining: times });
  }

  /**
   * Cuts one client off, as a network partition between it and Omni would: every call whose `user-agent` contains
   * `userAgentPart` fails with UNAVAILABLE and its open watches end; other clients are not affected. The provider puts
   * its instance ID in its user agent, so a test can cut one of two instances off. Undone by `rejoin`.
   */
  isolate(userAgentPart: string): number {
    this.isolated.add(userAgentPart);
    let cut = 0;
    const error = new OmniError('unavailable', 'connection to Omni lost (isolated by a test)');
    for (const [cutter, agent] of [...this.cutters]) {
      if (!agent.includes(userAgentPart)) continue;
      this.cutters.delete(cutter);
      cutter({ type: 'end', error });
      cut++;
    }
    return cut;
  }

  rejoin(userAgentPart: string): void {
    this.isolated.delete(userAgentPart);
  }

  private isIsolated(userAgent: string): boolean {
    for (const part of this.isolated) if (userAgent.includes(part)) return true;
    return false;
  }

  /** The error to answer `methodPath` from a client with `userAgent` with right now, if any (consumes a planned failure). */
  errorFor(methodPath: string, userAgent = ''): OmniError | undefined {
    if (this.isUnavailable()) return new OmniError('unavailable', 'service unavailable');
    if (this.isIsolated(userAgent)) return new OmniError('unavailable', 'connection to Omni lost (isolated by a test)');
    const name = methodPath.slice(methodPath.lastIndexOf('/') + 1);
    const planned = this.failures.find((f) => f.remaining > 0 && (f.method === methodPath || f.method === name));
    if (!planned) return undefined;
    planned.remaining--;
    if (planned.remaining === 0) this.failures.splice(this.failures.indexOf(planned), 1);
    return planned.error;
  }

  /**
   * The next `times` Get calls on `type` (default: until cleared) answer with the state from before the latest
   * write, to exercise conflict retries against Omni's cached types.
   */
  serveStaleReads(type: string, times = Number.POSITIVE_INFINITY): void {
    this.staleTypes.set(type, times);
  }

  clearStaleReads(): void {
    this.staleTypes.clear();
  }

  /** Whether this Get on `type` should be stale (consumes one planned stale read). */
  takeStaleRead(type: string): boolean {
    const left = this.staleTypes.get(type);
    if (left === undefined || left <= 0) return false;
    if (left === 1) this.staleTypes.delete(type);
    else this.staleTypes.set(type, left - 1);
    return true;
  }

  /** Ends every open watch stream with `code` (default UNAVAILABLE); returns how many were cut. */
  cutWatches(code: GrpcCode = GrpcCode.UNAVAILABLE, message = 'watch stream interrupted'): number {
    const error = new OmniError('unavailable', message, code);
    const cutters = [...this.cutters.keys()];
    this.cutters.clear();
    for (const cut of cutters) cut({ type: 'end', error });
    return cutters.length;
  }

  /** Sends an ERRORED event (like a server buffer overrun) on every open watch; the streams then stay open but silent. */
  injectErroredEvent(message = 'buffer overrun: injected fault'): number {
    const cutters = [...this.cutters.keys()];
    this.cutters.clear();
    for (const cut of cutters) cut({ type: 'errored', message });
    return cutters.length;
  }

  /** Registers an open watch stream of a client with `userAgent`; the returned function unregisters it. */
  onCut(cutter: WatchCutter, userAgent = ''): () => void {
    this.cutters.set(cutter, userAgent);
    return () => this.cutters.delete(cutter);
  }

  openWatchCount(): number {
    return this.cutters.size;
  }
}
