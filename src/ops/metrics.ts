// A small Prometheus metrics registry: counters, gauges and histograms with labels, rendered in the text
// exposition format 0.0.4 (`# HELP`, `# TYPE`, escaped label values, cumulative histogram buckets).

/** Content-Type of the rendered text. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels<L extends string> = { readonly [K in L]: string | number };

type MetricType = 'counter' | 'gauge' | 'histogram';

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Seconds buckets suited to HTTP calls and provisioning steps (5 ms .. 10 min). */
export const DEFAULT_SECONDS_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

export interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

export interface HistogramOptions<L extends string> extends MetricOptions<L> {
  /** Upper bounds, strictly increasing and finite; `+Inf` is added. Default DEFAULT_SECONDS_BUCKETS. */
  buckets?: readonly number[];
}

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  render(out: string[]): void;
}

/** Escapes a `# HELP` text: backslash and line feed. */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Formats a sample value: integers plainly, `+Inf`, `-Inf`, `NaN`. */
export function formatSampleValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function renderLabels(pairs: ReadonlyArray<readonly [string, string]>): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

abstract class LabelledMetric<L extends string, S> implements Family {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  protected readonly labelNames: readonly L[];
  protected readonly series = new Map<string, { pairs: Array<readonly [string, string]>; state: S }>();

  constructor(opts: MetricOptions<L>, reserved: readonly string[] = []) {
    if (!METRIC_NAME_RE.test(opts.name)) throw new Error(`metric name ${JSON.stringify(opts.name)} is not valid`);
    const names = opts.labelNames ?? [];
    for (const l of names) {
      if (!LABEL_NAME_RE.test(l) || l.startsWith('__') || reserved.includes(l)) {
        throw new Error(`label name ${JSON.stringify(l)} of metric ${opts.name} is not valid`);
      }
    }
    if (new Set(names).size !== names.length) throw new Error(`metric ${opts.name} repeats a label name`);
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = names;
  }

  protected abstract initial(): S;

  /** The state of the series with these label values, created on first use. */
  protected seriesFor(labels: Labels<L> | undefined): S {
    const given = labels ?? ({} as Labels<L>);
    const keys = Object.keys(given);
    if (keys.length !== this.labelNames.length || this.labelNames.some((l) => !(l in given))) {
      throw new Error(
        `metric ${this.name} takes labels [${this.labelNames.join(', ')}], got [${keys.join(', ')}]`,
      );
    }
    const pairs = this.labelNames.map((l) => [l, String(given[l])] as const);
    const key = pairs.map(([, v]) => v).join('\u0000');
    let entry = this.series.get(key);
    if (!entry) {
      entry = { pairs, state: this.initial() };
      this.series.set(key, entry);
    }
    return entry.state;
  }

  /** Forgets every series (e.g. a gauge recomputed from scratch at each collection). */
  reset(): void {
    this.series.clear();
  }

  abstract render(out: string[]): void;
}

export class Counter<L extends string = never> extends LabelledMetric<L, { value: number }> {
  readonly type = 'counter';

  protected initial(): { value: number } {
    return { value: 0 };
  }

  /** Adds `by` (default 1; must not be negative). */
  inc(labels?: Labels<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only increase (got ${by})`);
    this.seriesFor(labels).value += by;
  }

  /** Current value of one series (0 if never incremented). */
  get(labels?: Labels<L>): number {
    return this.seriesFor(labels).value;
  }

  render(out: string[]): void {
    for (const { pairs, state } of this.series.values()) {
      out.push(`${this.name}${renderLabels(pairs)} ${formatSampleValue(state.value)}`);
    }
  }
}

export class Gauge<L extends string = never> extends LabelledMetric<L, { value: number }> {
  readonly type = 'gauge';

  protected initial(): { value: number } {
    return { value: 0 };
  }

  set(labels: Labels<L> | undefined, value: number): void {
    this.seriesFor(labels).value = value;
  }

  inc(labels?: Labels<L>, by = 1): void {
    this.seriesFor(labels).value += by;
  }

  dec(labels?: Labels<L>, by = 1): void {
    this.seriesFor(labels).value -= by;
  }

  get(labels?: Labels<L>): number {
    return this.seriesFor(labels).value;
  }

  render(out: string[]): void {
    for (const { pairs, state } of this.series.values()) {
      out.push(`${this.name}${renderLabels(pairs)} ${formatSampleValue(state.value)}`);
    }
  }
}

interface HistogramState {
  /** Non-cumulative count per finite bucket. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends LabelledMetric<L, HistogramState> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(opts: HistogramOptions<L>) {
    super(opts, ['le']);
    const buckets = opts.buckets ?? DEFAULT_SECONDS_BUCKETS;
    if (buckets.length === 0) throw new Error(`histogram ${opts.name} needs at least one bucket`);
    for (let i = 0; i < buckets.length; i++) {
      const b = buckets[i]!;
      if (!Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]!)) {
        throw new Error(`histogram ${opts.name} buckets must be finite and strictly increasing`);
      }
    }
    this.buckets = [...buckets];
  }

  protected initial(): HistogramState {
    return { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
  }

  observe(labels: Labels<L> | undefined, value: number): void {
    if (Number.isNaN(value)) return;
    const state = this.seriesFor(labels);
    const i = this.buckets.findIndex((b) => value <= b);
    if (i !== -1) state.counts[i]! += 1;
    state.sum += value;
    state.count += 1;
  }

  /** Starts a timer; calling the result observes the elapsed seconds and returns them. */
  startTimer(labels?: Labels<L>, now: () => number = () => performance.now()): () => number {
    const start = now();
    return () => {
      const seconds = (now() - start) / 1000;
      this.observe(labels, seconds);
      return seconds;
    };
  }

  render(out: string[]): void {
    for (const { pairs, state } of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += state.counts[i]!;
        out.push(`${this.name}_bucket${renderLabels([...pairs, ['le', formatSampleValue(b)]])} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${renderLabels([...pairs, ['le', '+Inf']])} ${state.count}`);
      out.push(`${this.name}_sum${renderLabels(pairs)} ${formatSampleValue(state.sum)}`);
      out.push(`${this.name}_count${renderLabels(pairs)} ${state.count}`);
    }
  }
}

/** Holds metric families and renders them; collectors run before each rendering to refresh computed values. */
export class MetricsRegistry {
  readonly #families = new Map<string, Family>();
  readonly #collectors: Array<() => void> = [];

  counter<L extends string = never>(opts: MetricOptions<L>): Counter<L> {
    return this.#register(new Counter<L>(opts));
  }

  gauge<L extends string = never>(opts: MetricOptions<L>): Gauge<L> {
    return this.#register(new Gauge<L>(opts));
  }

  histogram<L extends string = never>(opts: HistogramOptions<L>): Histogram<L> {
    return this.#register(new Histogram<L>(opts));
  }

  /** Runs `fn` before every rendering (e.g. to set gauges from current state). */
  onCollect(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /** The text exposition of every family with at least one series. */
  render(): string {
    for (const fn of this.#collectors) fn();
    const out: string[] = [];
    for (const family of this.#families.values()) {
      const samples: string[] = [];
      family.render(samples);
      if (samples.length === 0) continue;
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.type}`);
      out.push(...samples);
    }
    return out.length === 0 ? '' : `${out.join('\n')}\n`;
  }

  #register<F extends Family>(family: F): F {
    const clash = [...this.#families.values()].find((f) => familyNames(f).some((n) => familyNames(family).includes(n)));
    if (clash) throw new Error(`metric ${family.name} is already registered (as ${clash.name})`);
    this.#families.set(family.name, family);
    return family;
  }
}

/** Every sample name a family writes, so `x_count` and a histogram `x` cannot collide. */
function familyNames(f: Family): string[] {
  return f.type === 'histogram' ? [f.name, `${f.name}_bucket`, `${f.name}_sum`, `${f.name}_count`] : [f.name];
}
