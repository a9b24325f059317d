// Two daemons (in this process) with the same provider ID: /readyz and /metrics say which one leads. Both are ready
// (a standby that sees the lease and Proxmox can take over); only the leader heartbeats, so on the standby the
// heartbeat check does not apply. A clean stop of the leader releases the lease and the standby becomes the leader.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type DaemonSettings, type RunningDaemon } from '../../src/daemon.js';
import { silentLogger } from '../../src/log.js';
import { readiness } from '../../src/ops/health.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';
import { readLease } from '../../src/omni/lease.js';
import { providerToken, testFixture } from '../helpers/pveHarness.js';
import { storeChanges, waitFor } from '../helpers/wait.js';

let omni: InProcessOmni;
let server: PveSimServer;
let leader: RunningDaemon;
let standby: RunningDaemon;

async function get(url: string): Promise<{ status: number; text: string }> {
  const res = await fetch(url);
  return { status: res.status, text: await res.text() };
}

function metric(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

beforeAll(async () => {
  omni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger });
  const sim = new PveSim({ fixture: testFixture(), clock: new ScaledClock(0.01), logger: silentLogger });
  server = await startPveSimServer(sim, { https: true });
  const settings: DaemonSettings = {
    omni: { endpoint: omni.endpoint, serviceAccountKey: await omni.createProviderKey('proxmox'), serviceAccountName: 'infra-provider:proxmox', insecureSkipVerify: false },
    proxmox: { url: server.url, auth: providerToken, tls: { fingerprint: server.fingerprint! } },
    provider: {
      id: 'proxmox',
      name: 'Proxmox',
      description: 'standby test',
      concurrency: 1,
      tasksPerNode: 4,
      tasksPerStorage: 4,
      shutdownTimeoutSeconds: 0,
      hostname: 'none',
      healthListen: { host: '127.0.0.1', port: 0 },
      logLevel: 'silent',
      heartbeatIntervalSeconds: 1,
      leaseDurationSeconds: 15,
      leaseRenewDeadlineSeconds: 10,
      leaseRetryPeriodSeconds: 1,
    },
  };
  leader = await startDaemon(settings, silentLogger);
  standby = await startDaemon(settings, silentLogger);
}, 30_000);

afterAll(async () => {
  await standby?.stop();
  await leader?.stop();
  await server?.close();
  await omni?.close();
});

describe('leader and standby on /readyz and /metrics', () => {
  it('both ready, roles told apart; the heartbeat check does not apply to the standby', async ({ signal }) => {
    const ready = (d: RunningDaemon) => readiness(d.health()).ready;
    await waitFor(() => ready(leader) && ready(standby), {
      what: () => `both ready (leader ${JSON.stringify(leader.health())}, standby ${JSON.stringify(standby.health())})`,
      on: [storeChanges(omni.store)],
      signal,
    });
    const l = await get(`${leader.opsUrl!}/readyz`);
    const s = await get(`${standby.opsUrl!}/readyz`);
    expect(l.status).toBe(200);
    expect(s.status).toBe(200);
    const lb = JSON.parse(l.text) as { role: string; checks: Record<string, { ok: boolean; notApplicable?: string }> };
    const sb = JSON.parse(s.text) as typeof lb;
    expect(lb.role).toBe('leader');
    expect(sb.role).toBe('standby');
    expect(Object.keys(lb.checks).sort()).toEqual(['leaderLease', 'omniHeartbeat', 'proxmox']);
    expect(lb.checks.omniHeartbeat).toMatchObject({ ok: true });
    expect(lb.checks.omniHeartbeat?.notApplicable).toBeUndefined();
    expect(sb.checks.omniHeartbeat).toMatchObject({ ok: true, notApplicable: expect.stringMatching(/standby/) });
    expect(sb.checks.leaderLease).toMatchObject({ ok: true });
    expect(sb.checks.proxmox).toMatchObject({ ok: true });

    expect(metric((await get(`${leader.opsUrl!}/metrics`)).text, 'proxmox_provider_leader')).toBe(1);
    expect(metric((await get(`${standby.opsUrl!}/metrics`)).text, 'proxmox_provider_leader')).toBe(0);
    expect(metric((await get(`${leader.opsUrl!}/metrics`)).text, 'proxmox_provider_lease_acquisitions_total')).toBe(1);
    expect(() => standby.provider).toThrow(/standby/);
    expect((await readLease(standby.omni.state, 'proxmox'))?.holderInstance).toBe(leader.identity.instance);
  }, 30_000);

  it('a clean stop of the leader releases the lease: the standby leads at once', async ({ signal }) => {
    await leader.stop();
    await waitFor(() => standby.elector.status().role === 'leader' && standby.acting !== undefined, {
      what: () => `the standby to lead (${JSON.stringify(standby.elector.status())})`,
      on: [storeChanges(omni.store)],
      signal,
    });
    const lease = await readLease(standby.omni.state, 'proxmox');
    expect(lease).toMatchObject({ holderInstance: standby.identity.instance, transitions: 1 });
    await waitFor(() => standby.health().role === 'leader' && readiness(standby.health()).ready, {
      what: () => `the new leader ready (${JSON.stringify(standby.health())})`,
      on: [storeChanges(omni.store)],
      signal,
    });
  }, 30_000);
});
