import { describe, expect, it } from 'vitest';
import { OMNI_HEARTBEAT_CHECK, PROXMOX_CHECK, createProviderHealthChecks, readiness } from '../../src/ops/health.js';

describe('readiness checks', () => {
  const setup = () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const checks = createProviderHealthChecks({ heartbeatIntervalSeconds: 10, proxmoxCheckIntervalSeconds: 30, now: () => now });
    return { checks, advance: (ms: number) => (now += ms) };
  };

  it('is not ready before the first heartbeat and Proxmox check', () => {
    const { checks } = setup();
    const r = readiness(checks.report());
    expect(r.ready).toBe(false);
    expect(r.failed).toEqual([
      { check: OMNI_HEARTBEAT_CHECK, reason: 'not run yet' },
      { check: PROXMOX_CHECK, reason: 'not run yet' },
    ]);
  });

  it('is ready when both last attempts succeeded, and says which check failed and why otherwise', () => {
    const { checks, advance } = setup();
    checks.pass(OMNI_HEARTBEAT_CHECK);
    checks.pass(PROXMOX_CHECK);
    expect(readiness(checks.report()).ready).toBe(true);
    advance(1000);
    checks.fail(PROXMOX_CHECK, new Error('GET /version: 401 authentication failure\nstack...'));
    checks.fail(PROXMOX_CHECK, new Error('GET /version: 401 authentication failure'));
    const report = checks.report();
    expect(readiness(report)).toEqual({
      ready: false,
      failed: [{ check: PROXMOX_CHECK, reason: 'GET /version: 401 authentication failure' }],
    });
    expect(report.checks[PROXMOX_CHECK]).toMatchObject({
      ok: false,
      consecutiveFailures: 2,
      lastAttemptAt: '2026-01-01T00:00:01.000Z',
      lastSuccessAt: '2026-01-01T00:00:00.000Z',
    });
    checks.pass(PROXMOX_CHECK);
    expect(readiness(checks.report()).ready).toBe(true);
  });

  it('turns not ready when a success is older than three intervals (a stuck loop)', () => {
    const { checks, advance } = setup();
    checks.pass(OMNI_HEARTBEAT_CHECK);
    checks.pass(PROXMOX_CHECK);
    advance(30_000);
    expect(readiness(checks.report()).ready).toBe(true);
    advance(1_000);
    const r = readiness(checks.report());
    expect(r.failed).toEqual([
      { check: OMNI_HEARTBEAT_CHECK, reason: 'last success was 31s ago (limit 30s); the check loop may be stuck' },
    ]);
  });

  it('shortens long error texts and refuses unknown checks', () => {
    const { checks } = setup();
    checks.fail(OMNI_HEARTBEAT_CHECK, 'x'.repeat(1000));
    expect(checks.report().checks[OMNI_HEARTBEAT_CHECK]!.reason!.length).toBe(300);
    expect(() => checks.pass('nope')).toThrow(/not defined/);
    expect(readiness({ checks: {} }).ready).toBe(false);
  });
});
