import { describe, expect, it } from 'vitest';
import { MetricsRegistry, escapeLabelValue, formatSampleValue } from '../../src/ops/metrics.js';
import { createProviderMetrics } from '../../src/ops/providerMetrics.js';
import { HealthChecks } from '../../src/ops/health.js';

describe('MetricsRegistry text format', () => {
  it('renders counters and gauges with HELP, TYPE and labels in registration order', () => {
    const r = new MetricsRegistry();
    const steps = r.counter({ name: 'steps_total', help: 'Step runs.', labelNames: ['step', 'result'] });
    const up = r.gauge({ name: 'up', help: 'Up.' });
    steps.inc({ step: 'syncVM', result: 'done' });
    steps.inc({ step: 'syncVM', result: 'done' }, 2);
    steps.inc({ step: 'startVM', result: 'retry' });
    up.set(undefined, 1);
    expect(r.render()).toBe(
      [
        '# HELP steps_total Step runs.',
        '# TYPE steps_total counter',
        'steps_total{step="syncVM",result="done"} 3',
        'steps_total{step="startVM",result="retry"} 1',
        '# HELP up Up.',
        '# TYPE up gauge',
        'up 1',
        '',
      ].join('\n'),
    );
  });

  it('escapes label values and help text as the exposition format requires', () => {
    const r = new MetricsRegistry();
    const g = r.gauge({ name: 'odd', help: 'back\\slash and\nnewline', labelNames: ['v'] });
    g.set({ v: 'a"b\\c\nd' }, -2.5);
    expect(r.render()).toBe(
      '# HELP odd back\\\\slash and\\nnewline\n# TYPE odd gauge\nodd{v="a\\"b\\\\c\\nd"} -2.5\n',
    );
    expect(escapeLabelValue('x')).toBe('x');
  });

  it('formats special values', () => {
    expect(formatSampleValue(Infinity)).toBe('+Inf');
    expect(formatSampleValue(-Infinity)).toBe('-Inf');
    expect(formatSampleValue(NaN)).toBe('NaN');
    expect(formatSampleValue(0.25)).toBe('0.25');
  });

  it('renders histograms with cumulative buckets, +Inf, _sum and _count', () => {
    const r = new MetricsRegistry();
    const h = r.histogram({ name: 'step_seconds', help: 'Step time.', labelNames: ['step'], buckets: [0.5, 1, 5] });
    for (const v of [0.1, 0.5, 0.7, 3, 9]) h.observe({ step: 'uploadISO' }, v);
    expect(r.render()).toBe(
      [
        '# HELP step_seconds Step time.',
        '# TYPE step_seconds histogram',
        'step_seconds_bucket{step="uploadISO",le="0.5"} 2',
        'step_seconds_bucket{step="uploadISO",le="1"} 3',
        'step_seconds_bucket{step="uploadISO",le="5"} 4',
        'step_seconds_bucket{step="uploadISO",le="+Inf"} 5',
        'step_seconds_sum{step="uploadISO"} 13.3',
        'step_seconds_count{step="uploadISO"} 5',
        '',
      ].join('\n'),
    );
  });

  it('times with an injected clock', () => {
    const r = new MetricsRegistry();
    const h = r.histogram({ name: 't', help: 't', buckets: [1, 2] });
    let now = 1000;
    const stop = h.startTimer(undefined, () => now);
    now = 2500;
    expect(stop()).toBe(1.5);
    expect(r.render()).toContain('t_bucket{le="2"} 1\n');
  });

  it('omits families without series and refreshes collected values at each render', () => {
    const r = new MetricsRegistry();
    r.counter({ name: 'never_total', help: 'unused' });
    const g = r.gauge({ name: 'queue', help: 'q' });
    let depth = 3;
    r.onCollect(() => g.set(undefined, depth));
    expect(r.render()).toBe('# HELP queue q\n# TYPE queue gauge\nqueue 3\n');
    depth = 7;
    expect(r.render()).toContain('queue 7\n');
  });

  it('rejects misuse: bad names, wrong labels, decreasing counters, duplicate or colliding names, bad buckets', () => {
    const r = new MetricsRegistry();
    expect(() => r.counter({ name: '1bad', help: '' })).toThrow(/not valid/);
    expect(() => r.counter({ name: 'ok_total', help: '', labelNames: ['__x'] })).toThrow(/label name/);
    expect(() => r.histogram({ name: 'h', help: '', labelNames: ['le'] })).toThrow(/label name/);
    const c = r.counter({ name: 'c_total', help: '', labelNames: ['a'] });
    expect(() => c.inc({} as { a: string })).toThrow(/takes labels \[a\]/);
    expect(() => c.inc({ a: 'x', b: 'y' } as { a: string })).toThrow(/takes labels/);
    expect(() => c.inc({ a: 'x' }, -1)).toThrow(/only increase/);
    expect(() => r.gauge({ name: 'c_total', help: '' })).toThrow(/already registered/);
    r.histogram({ name: 'lat', help: '' });
    expect(() => r.gauge({ name: 'lat_count', help: '' })).toThrow(/already registered/);
    expect(() => r.histogram({ name: 'h2', help: '', buckets: [1, 1] })).toThrow(/strictly increasing/);
  });
});

describe('provider metrics', () => {
  it('exposes build info, health check state and process metrics', () => {
    let now = 0;
    const health = new HealthChecks({ now: () => now });
    health.define('omniHeartbeat', { description: 'hb' });
    health.define('proxmox', { description: 'pve' });
    health.pass('omniHeartbeat');
    health.fail('proxmox', new Error('connect ECONNREFUSED'));
    now = 10;
    const m = createProviderMetrics({ version: '1.2.3', health, startTimeSeconds: 1700000000 });
    m.provisionSteps.inc({ step: 'pickNode', result: 'done' });
    const text = m.registry.render();
    expect(text).toMatch(/^proxmox_provider_build_info\{version="1\.2\.3",node_version="v\d+\.\d+\.\d+"\} 1$/m);
    expect(text).toContain('proxmox_provider_health_check_up{check="omniHeartbeat"} 1\n');
    expect(text).toContain('proxmox_provider_health_check_up{check="proxmox"} 0\n');
    expect(text).toContain('proxmox_provider_provision_steps_total{step="pickNode",result="done"} 1\n');
    expect(text).toContain('process_start_time_seconds 1700000000\n');
    expect(text).toContain('# TYPE process_cpu_seconds_total counter\n');
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    // Families nobody has touched yet are not rendered.
    expect(text).not.toContain('proxmox_provider_deprovisions_total');
  });
});
