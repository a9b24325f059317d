import { fromBinary } from '@bufbuild/protobuf';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { InfraProviderHealthStatusSpecSchema, InfraProviderStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { Heartbeat, PROVIDER_ICON_SVG, encodeIcon, healthStatusOwner, publishProviderStatus } from '../../src/omni/providerStatus.js';
import { providerDataSchemaJson } from '../../src/provision/providerData.js';
import { GrpcCode } from '../../src/sim/omni/errors.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { Changes } from '../helpers/wait.js';
import { startOmniFixture, writeCounts } from './omni-fixture.js';

describe('provider status', () => {
  it('creates the status with schema and unpadded base64 icon, then writes nothing when unchanged', async () => {
    const f = await startOmniFixture();
    try {
      const info = { providerId: 'proxmox', name: 'Proxmox', description: 'Proxmox infrastructure provider', schema: providerDataSchemaJson(), version: 'v0.1.0' };
      await publishProviderStatus(f.client.state, info);
      const stored = f.omni.store.get(NS.infraProvider, TYPES.infraProviderStatus, 'proxmox');
      const spec = fromBinary(InfraProviderStatusSpecSchema, stored.spec.protoSpec);
      expect(spec).toMatchObject({ name: 'Proxmox', description: 'Proxmox infrastructure provider', version: 'v0.1.0' });
      expect(JSON.parse(spec.schema)).toHaveProperty('properties');
      expect(spec.icon).not.toMatch(/=$/);
      expect(Buffer.from(spec.icon, 'base64').toString('utf8')).toBe(PROVIDER_ICON_SVG);
      expect(stored.metadata.owner).toBe('');
      const before = writeCounts(f.omni);
      await publishProviderStatus(f.client.state, info);
      expect(writeCounts(f.omni)).toEqual(before);
      await publishProviderStatus(f.client.state, { ...info, version: 'v0.2.0' });
      const updated = fromBinary(InfraProviderStatusSpecSchema, f.omni.store.get(NS.infraProvider, TYPES.infraProviderStatus, 'proxmox').spec.protoSpec);
      expect(updated.version).toBe('v0.2.0');
    } finally {
      await f.close();
    }
  });

  it('encodeIcon drops base64 padding', () => {
    expect(encodeIcon('a')).toBe('YQ');
  });
});

describe('heartbeat', () => {
  it('beats with the health-check error, survives Omni outages and re-creates the status after an Omni restart', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    let healthError: string | undefined = 'Proxmox API https://pve:8006 unreachable';
    // Each beat as the Heartbeat itself saw it: its status is only updated once Omni's answer came back.
    const beats = new Changes();
    const hb = new Heartbeat({
      state: f.client.state,
      providerId: 'proxmox',
      intervalMs: 40,
      retryInitialMs: 10,
      healthCheck: async () => {
        if (healthError !== undefined) throw new Error(healthError);
      },
      onBeat: beats.notify,
    });
    const health = () => {
      const res = f.omni.store.find(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, 'proxmox');
      return res ? { res, spec: fromBinary(InfraProviderHealthStatusSpecSchema, res.spec.protoSpec) } : undefined;
    };
    try {
      hb.start();
      // The first beat completed on the provider's side (Omni stores the write before the provider has its answer:
      // waiting for the stored resource and then reading hb.status() raced the answer).
      await f.eventually(() => hb.status().beats >= 1, 'first heartbeat', [beats.trigger]);
      const first = health()!;
      expect(first.res.metadata.owner).toBe(healthStatusOwner('proxmox'));
      expect(first.spec.error).toBe('Proxmox API https://pve:8006 unreachable');
      expect(f.omni.controllers.connected()).toBe(true);
      expect(hb.status()).toMatchObject({ omniOk: true, infrastructureOk: false });

      healthError = undefined;
      await f.eventually(() => health()?.spec.error === '', 'healthy heartbeat');
      expect(hb.status().infrastructureOk).toBe(true);

      // Omni unreachable: writes fail, the loop keeps going and reports it.
      f.omni.controllers.makeUnavailable();
      await f.eventually(() => !hb.status().omniOk, 'heartbeat failure reported', [beats.trigger]);
      expect(hb.status().lastError).toMatch(/writing the heartbeat to Omni failed/);
      f.omni.controllers.restoreService();
      await f.eventually(() => hb.status().omniOk, 'heartbeat recovered', [beats.trigger]);

      // Omni restarted: ephemeral resources are gone; the next beat creates it again.
      f.omni.store.destroy(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, 'proxmox', { owner: healthStatusOwner('proxmox') });
      const again = await f.eventually(() => health(), 're-created heartbeat');
      const ts = again.spec.lastHeartbeatTimestamp;
      expect(ts && timestampDate(ts).getTime()).toBeGreaterThan(0);
    } finally {
      await hb.stop();
      await f.close();
    }
  });

  it('retries a single failed write sooner than the interval', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const beats = new Changes();
    const hb = new Heartbeat({
      state: f.client.state,
      providerId: 'proxmox',
      intervalMs: 60_000,
      retryInitialMs: 5,
      healthCheck: async () => {},
      onBeat: beats.notify,
    });
    try {
      f.omni.faults.failNext('Get', GrpcCode.UNAVAILABLE, 'connection reset');
      hb.start();
      // With a 60 s interval, only the backoff retry can produce the beat before the test times out.
      await f.eventually(() => hb.status().beats === 1, 'beat after retry', [beats.trigger]);
      expect(f.omni.store.find(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, 'proxmox')).toBeDefined();
      expect(hb.status().omniOk).toBe(true);
    } finally {
      await hb.stop();
      await f.close();
    }
  });
});
