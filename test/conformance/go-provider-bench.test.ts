// The benchmark's command line, statistics and table: what `npm run bench` accepts and reports.
import { describe, expect, it } from 'vitest';
import { median, mergeProviders, parseBenchArgs, provisionLowerBoundSeconds, renderTable, teardownLowerBoundSeconds, type BenchCase } from '../../bench/run.js';

describe('npm run bench arguments', () => {
  it('defaults to sizes 1,10,30 with 3 runs each at real task durations; --smoke means n=2 once, 4x faster', () => {
    const d = parseBenchArgs([]);
    expect(d.sizes).toEqual([1, 10, 30]);
    expect(d.runs).toBe(3);
    expect(d.timeScale).toBe(1);
    expect(d.providers).toEqual(['ours', 'upstream']);
    const s = parseBenchArgs(['--smoke']);
    expect([s.sizes, s.runs, s.timeScale]).toEqual([[2], 1, 0.25]);
    expect(parseBenchArgs(['--smoke', '--time-scale', '1']).timeScale).toBe(1);
  });

  it('takes --sizes/--runs/--time-scale in both spellings and rejects nonsense', () => {
    const a = parseBenchArgs(['--sizes', '1,5', '--runs=5', '--time-scale', '0.5', '--only', 'ours']);
    expect([a.sizes, a.runs, a.timeScale, a.providers]).toEqual([[1, 5], 5, 0.5, ['ours']]);
    expect(() => parseBenchArgs(['--sizes', '0'])).toThrow(/--sizes/);
    expect(() => parseBenchArgs(['--runs', 'x'])).toThrow(/--runs/);
    expect(() => parseBenchArgs(['--time-scale', '2'])).toThrow(/--time-scale/);
    expect(() => parseBenchArgs(['--bogus'])).toThrow(/unknown argument --bogus/);
  });
});

describe('bench statistics', () => {
  it('takes medians of odd and even samples and ignores failed (NaN) runs', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([Number.NaN, 5, 7])).toBe(6);
    expect(median([])).toBeNaN();
  });

  it('derives the lower bounds from the simulated task durations and the time factor', () => {
    // download 20 s + qmcreate 3 s + seed upload 1 s + qmstart 2 s = 26 s simulated
    expect(provisionLowerBoundSeconds(1)).toBeCloseTo(26);
    expect(provisionLowerBoundSeconds(0.25)).toBeCloseTo(6.5);
    // n = 10: 4 VMs on a node: 3 allocation locks of 0.3 s before the last chain of 6 s.
    expect(provisionLowerBoundSeconds(1, 10)).toBeCloseTo(26.9);
    // n = 30: every seed upload runs on the entry node; best split 6 VMs there (6 × 5 + 30 × 1 = 60 task-seconds)
    // and 12 on each other node (12 × 5 = 60): 15 s at 4 task-seconds per second.
    expect(provisionLowerBoundSeconds(1, 30)).toBeCloseTo(35);
    // n = 100: 20 on the entry node (100 + 100 = 200 task-seconds), 40 on each other node (200): 50 s.
    expect(provisionLowerBoundSeconds(1, 100)).toBeCloseTo(70);
    // qmstop 1 s + qmdestroy 3 s; 10 VMs per node at n = 30: 40 task-seconds / 4
    expect(teardownLowerBoundSeconds(0.5)).toBeCloseTo(2);
    expect(teardownLowerBoundSeconds(1, 30)).toBeCloseTo(10);
  });

  it('says loudly in the table when the upstream provider was not measured', () => {
    const c: BenchCase = {
      n: 2,
      runs: 1,
      time_scale: 0.25,
      lower_bound_s: 6.5,
      teardown_lower_bound_s: 1,
      ours_provision_s: 9,
      upstream_provision_s: null,
      ours_teardown_s: 3,
      upstream_teardown_s: null,
      ours_api_calls_per_vm: 58,
      upstream_api_calls_per_vm: null,
      ours_omni_rpcs_per_vm: 49,
      upstream_omni_rpcs_per_vm: null,
      ours_rss_mb: 190,
      upstream_rss_mb: null,
      ours_cpu_s: 1.7,
      upstream_cpu_s: null,
      ours_cpu_workload_s: 0.4,
      upstream_cpu_workload_s: null,
      ratio_provision_ours_upstream: null,
      ratio_teardown_ours_upstream: null,
      ratio_provision_ours_lower_bound: 1.38,
      upstream_skipped_reason: 'no upstream binary',
      detail: {},
    };
    const table = renderTable([c], 'no upstream binary').join('\n');
    expect(table).toContain('NOT RUN');
    expect(table).toContain('**UPSTREAM NOT MEASURED**: no upstream binary');

    // --merge: a size run for ours only keeps upstream's figures of that size from the file, ratios recomputed.
    const earlier: BenchCase = { ...c, ours_provision_s: 99, upstream_provision_s: 18, upstream_teardown_s: 6, upstream_api_calls_per_vm: 40, upstream_skipped_reason: null };
    const merged = mergeProviders(c, earlier, ['ours']);
    expect(merged.ours_provision_s).toBe(9);
    expect(merged.upstream_provision_s).toBe(18);
    expect(merged.upstream_api_calls_per_vm).toBe(40);
    expect(merged.ratio_provision_ours_upstream).toBe(0.5);
    expect(merged.ratio_teardown_ours_upstream).toBe(0.5);
    expect(merged.upstream_skipped_reason).toBeNull();
    expect(mergeProviders(c, earlier, ['ours', 'upstream']).upstream_provision_s).toBeNull();
    expect(table).toContain('| 2 | 1 | 6.5 | 9.0 | NOT RUN |');
  });
});
