// Simulated time for the Proxmox simulator: a scaled real-time clock and a manual clock that tests advance.

/** Milliseconds of simulated time. `sleep` resolves once that much simulated time has passed. */
export interface SimClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/**
 * Real time, optionally sped up: with `timeScale` 0.01 a simulated 3 s task takes 30 ms of wall time, and the
 * simulated clock runs 100 times faster than the wall clock.
 */
export class ScaledClock implements SimClock {
  private readonly wallStart = Date.now();
  private readonly monoStart = performance.now();
  constructor(readonly timeScale = 1) {
    if (!(timeScale > 0)) throw new RangeError('timeScale must be > 0');
  }
  now(): number {
    return Math.floor(this.wallStart + (performance.now() - this.monoStart) / this.timeScale);
  }
  /** Resolves once `now()` has advanced by at least `ms` (a timer alone can fire up to 1 ms of wall time early). */
  async sleep(ms: number): Promise<void> {
    if (ms <= 0) return;
    const until = this.now() + ms;
    for (let left = ms; left > 0; left = until - this.now()) {
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, left * this.timeScale)));
    }
  }
}

interface Sleeper {
  at: number;
  resolve: () => void;
}

/** A clock that only moves when `advance` is called; sleepers wake in due order. */
export class ManualClock implements SimClock {
  private current: number;
  private sleepers: Sleeper[] = [];
  constructor(startMs = Date.UTC(2026, 0, 1, 12, 0, 0)) {
    this.current = startMs;
  }
  now(): number {
    return this.current;
  }
  sleep(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.sleepers.push({ at: this.current + ms, resolve });
    });
  }
  /** Moves time forward and wakes every sleeper that is due. */
  advance(ms: number): void {
    this.current += Math.max(0, ms);
    const due = this.sleepers.filter((s) => s.at <= this.current).sort((a, b) => a.at - b.at);
    this.sleepers = this.sleepers.filter((s) => s.at > this.current);
    for (const s of due) s.resolve();
  }
}
