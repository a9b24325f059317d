import { afterEach, describe, expect, it } from 'vitest';
import { HealthChecks } from '../../src/ops/health.js';
import { parseListenAddress, formatListenAddress } from '../../src/ops/listen.js';
import { MetricsRegistry } from '../../src/ops/metrics.js';
import { probe, probeUrl } from '../../src/ops/probe.js';
import { type OpsServer, startOpsServer } from '../../src/ops/server.js';

const servers: OpsServer[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.close();
});

async function start(health: HealthChecks, registry = new MetricsRegistry()): Promise<OpsServer> {
  const s = await startOpsServer({ listen: '127.0.0.1:0', health: () => health.report(), metrics: registry });
  servers.push(s);
  return s;
}

function twoChecks(): HealthChecks {
  const h = new HealthChecks({ now: () => Date.parse('2026-03-01T12:00:00Z') });
  h.define('omniHeartbeat', { description: 'heartbeat to Omni' });
  h.define('proxmox', { description: 'Proxmox API' });
  return h;
}

describe('ops HTTP server', () => {
  it('answers /healthz with 200 while the process runs, whatever readiness says', async () => {
    const s = await start(twoChecks());
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${s.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
  });

  it('answers /readyz 503 naming the failing check and why, then 200 once both checks pass', async () => {
    const h = twoChecks();
    const s = await start(h);
    h.pass('omniHeartbeat');
    h.fail('proxmox', new Error('connect ECONNREFUSED 10.0.0.5:8006'));
    let res = await fetch(`${s.url}/readyz`);
    expect(res.status).toBe(503);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const body = (await res.json()) as { status: string; failed: unknown; checks: Record<string, { ok: boolean }> };
    expect(body.status).toBe('not ready');
    expect(body.failed).toEqual([{ check: 'proxmox', reason: 'connect ECONNREFUSED 10.0.0.5:8006' }]);
    expect(body.checks.omniHeartbeat!.ok).toBe(true);

    h.pass('proxmox');
    res = await fetch(`${s.url}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ready', checks: { proxmox: { ok: true }, omniHeartbeat: { ok: true } } });
  });

  it('serves /metrics in the Prometheus text format', async () => {
    const registry = new MetricsRegistry();
    registry.counter({ name: 'scrapes_total', help: 'n', labelNames: ['k'] }).inc({ k: 'v' });
    const s = await start(twoChecks(), registry);
    const res = await fetch(`${s.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(await res.text()).toBe('# HELP scrapes_total n\n# TYPE scrapes_total counter\nscrapes_total{k="v"} 1\n');
  });

  it('answers 404 for unknown paths, 405 for other methods, and HEAD without a body', async () => {
    const s = await start(twoChecks());
    expect((await fetch(`${s.url}/`)).status).toBe(404);
    const post = await fetch(`${s.url}/healthz`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(`${s.url}/healthz?x=1`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('answers 500 when a health source throws, and keeps serving', async () => {
    const s = await startOpsServer({
      listen: { host: '127.0.0.1', port: 0 },
      health: () => {
        throw new Error('boom');
      },
      metrics: () => 'x 1\n',
    });
    servers.push(s);
    expect((await fetch(`${s.url}/readyz`)).status).toBe(500);
    expect(await (await fetch(`${s.url}/metrics`)).text()).toBe('x 1\n');
  });

  it('rejects when the port is taken and refuses "off"', async () => {
    const a = await start(twoChecks());
    await expect(startOpsServer({ listen: `127.0.0.1:${a.port}`, health: () => ({ checks: {} }), metrics: () => '' })).rejects.toThrow(
      /EADDRINUSE/,
    );
    await expect(startOpsServer({ listen: 'off', health: () => ({ checks: {} }), metrics: () => '' })).rejects.toThrow(/disabled/);
  });

  it('the container probe exits 0 against a live endpoint and 1 when nothing listens', async () => {
    const s = await start(twoChecks());
    expect(await probe(`127.0.0.1:${s.port}`)).toBe(0);
    const port = s.port;
    await servers.pop()!.close();
    const stderr = process.stderr.write;
    process.stderr.write = () => true;
    try {
      expect(await probe(`127.0.0.1:${port}`, 1000)).toBe(1);
      expect(await probe('off')).toBe(1);
      expect(await probe('nonsense')).toBe(1);
    } finally {
      process.stderr.write = stderr;
    }
  });
});

describe('listen addresses', () => {
  it('parses the accepted forms', () => {
    expect(parseListenAddress(':8080')).toEqual({ host: undefined, port: 8080 });
    expect(parseListenAddress('9090')).toEqual({ host: undefined, port: 9090 });
    expect(parseListenAddress('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListenAddress('[::1]:8080')).toEqual({ host: '::1', port: 8080 });
    expect(parseListenAddress('OFF')).toBeNull();
    for (const bad of ['', 'localhost', ':99999', '::1:80', '[::1]80', 'a b:1', ':-1']) {
      expect(() => parseListenAddress(bad), bad).toThrow(/not valid/);
    }
    for (const s of [':8080', '127.0.0.1:1', '[::1]:2', 'off']) expect(formatListenAddress(parseListenAddress(s))).toBe(s);
  });

  it('derives the probe URL: wildcard binds are probed on loopback', () => {
    expect(probeUrl(':8080')).toBe('http://127.0.0.1:8080/healthz');
    expect(probeUrl('0.0.0.0:81')).toBe('http://127.0.0.1:81/healthz');
    expect(probeUrl('[::1]:82')).toBe('http://[::1]:82/healthz');
    expect(probeUrl('off')).toBeNull();
  });
});
