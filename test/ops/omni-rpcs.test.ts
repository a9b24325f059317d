// connectOmni's onRpc hook (what feeds proxmox_provider_omni_rpcs_total), against the in-process Omni on 127.0.0.1:
// each unary call and each watch stream is reported once, when it ends, with its gRPC status name.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectOmni } from '../../src/cosi/omni-client.js';
import { InfraProviderKind, MachineRequestKind } from '../../src/cosi/resources.js';
import { decodeServiceAccountKey, type ServiceAccountKey } from '../../src/cosi/signing.js';
import { isNotFound } from '../../src/cosi/state.js';
import { silentLogger } from '../../src/log.js';
import { createProviderMetrics, recordOmniRpcs } from '../../src/ops/providerMetrics.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';
import { Changes, waitFor } from '../helpers/wait.js';

let omni: InProcessOmni;
let key: ServiceAccountKey;

beforeAll(async () => {
  omni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger });
  key = await decodeServiceAccountKey(await omni.createProviderKey('proxmox'), { providerId: 'proxmox' });
}, 20_000);

afterAll(async () => {
  await omni?.close();
});

describe('Omni RPC observer', () => {
  it('reports unary calls with their code, a cancelled watch as CANCELLED, and feeds omni_rpcs_total', async ({ signal }) => {
    const seen: Array<[string, string]> = [];
    const reported = new Changes();
    const metrics = createProviderMetrics({ version: 'test' });
    const count = recordOmniRpcs(metrics);
    const client = connectOmni({
      endpoint: omni.endpoint,
      key,
      providerId: 'proxmox',
      onRpc: (method, code, seconds) => {
        expect(seconds).toBeGreaterThanOrEqual(0);
        seen.push([method, code]);
        count(method, code, seconds);
        reported.notify();
      },
    });
    try {
      await client.state.get(InfraProviderKind, 'proxmox');
      const missing = await client.state.get(MachineRequestKind, 'no-such-request').catch((e: unknown) => e);
      expect(isNotFound(missing)).toBe(true);

      const watch = client.state.watch(MachineRequestKind);
      const consumed = (async () => {
        for await (const ev of watch) if (ev.type === 'bootstrapped') watch.close();
      })();
      await consumed;
      // The closed stream is reported once grpc-js has ended the call.
      await waitFor(() => seen.some(([m]) => m.endsWith('/Watch')), { what: 'the watch to be reported', on: [reported.trigger], signal });
    } finally {
      client.close();
    }
    expect(seen).toEqual([
      ['/cosi.resource.State/Get', 'OK'],
      ['/cosi.resource.State/Get', 'NOT_FOUND'],
      ['/cosi.resource.State/Watch', 'CANCELLED'],
    ]);
    const text = metrics.registry.render();
    expect(text).toContain('proxmox_provider_omni_rpcs_total{method="/cosi.resource.State/Get",code="NOT_FOUND"} 1');
    expect(text).toContain('proxmox_provider_omni_rpcs_total{method="/cosi.resource.State/Watch",code="CANCELLED"} 1');
  }, 20_000);

  it('keeps a call working when the observer throws', async () => {
    const client = connectOmni({
      endpoint: omni.endpoint,
      key,
      providerId: 'proxmox',
      onRpc: () => {
        throw new Error('observer broke');
      },
    });
    try {
      const provider = await client.state.get(InfraProviderKind, 'proxmox');
      expect(provider.metadata.id).toBe('proxmox');
    } finally {
      client.close();
    }
  }, 20_000);
});
