// The upstream Go provider and ours, each driven through a full machine-request lifecycle by upstream's own COSI
// State server (conformance/omni-harness, with Omni's resource types, signatures and access rules) instead of the
// in-process Omni. Skipped, loudly, without Go (either the provider binary or the harness build).
import { beforeAll, describe, expect, it } from 'vitest';
import { stageFromSpec, type OmniBackend, type RequestStage } from '../../bench/omni-backend.js';
import { BENCH_PROVIDER_DATA } from '../../bench/fixture.js';
import { upstreamUnavailableReason } from '../../bench/provider-process.js';
import { runWorkload, type WorkloadResult } from '../../bench/workload.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { ensureHarness, startUpstreamServer, warnUpstreamSkipped, type ConformanceOmni } from './servers.js';

function harnessBackend(server: ConformanceOmni): OmniBackend {
  return {
    name: 'upstream COSI server (omni-harness)',
    endpoint: server.endpoint,
    factoryUrl: server.factory.url,
    pollMs: 200,
    createProviderKey: async (providerId) => (await server.createProviderKey({ providerId })).keyString,
    holdMachineRequestStatuses: () => server.holdMachineRequestStatuses(true),
    createMachineRequest: async (setId, id, spec) => {
      await server.createMachineRequest(setId, id, spec);
    },
    requestStages: async () => {
      const out = new Map<string, RequestStage>();
      for (const r of await server.list(NS.infraProvider, TYPES.machineRequestStatus)) {
        if (r.metadata && r.spec) out.set(r.metadata.id, stageFromSpec(r.spec.protoSpec));
      }
      return out;
    },
    providerReported: async (providerId) => (await server.get(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, providerId)) !== undefined,
    deleteMachineRequest: (id, timeoutMs) => server.deleteMachineRequest(id, timeoutMs),
    callCounts: () => server.callCounts(),
    schematics: () => [],
    close: () => server.close(),
  };
}

const WORKLOAD_BOUND_MS = 5 * 60_000;
const providerMissing = upstreamUnavailableReason();
let harnessMissing: string | undefined;

beforeAll(async () => {
  if (providerMissing) {
    process.stderr.write(
      `\n${'#'.repeat(100)}\n## SKIPPED go-provider against the omni-harness: ${providerMissing}\n## install it with: bash scripts/install-go-provider.sh\n${'#'.repeat(100)}\n\n`,
    );
    return;
  }
  const h = await ensureHarness();
  if (!h.available) {
    harnessMissing = h.reason;
    warnUpstreamSkipped(h.reason);
  }
}, 15 * 60_000);

describe('both providers against upstream COSI server', () => {
  it('provision one machine, report it PROVISIONED, and tear it down leaving no VM, over the harness', async (ctx) => {
    if (providerMissing || harnessMissing) ctx.skip();
    const run = (kind: 'ours' | 'upstream') =>
      runWorkload({
        kind,
        sets: [{ setId: 'harness', providerData: BENCH_PROVIDER_DATA, count: 1 }],
        timeScale: 0.05,
        // bench/workload.ts bounds provisioning and teardown by this each; the test's timeout lies above both, so a
        // run that cannot finish is ended by the workload, which stops what it started. Generous: a busy machine is
        // slow, not broken.
        timeoutMs: WORKLOAD_BOUND_MS,
        omni: async () => harnessBackend(await startUpstreamServer()),
      });
    const results: WorkloadResult[] = await Promise.all([run('upstream'), run('ours')]);
    for (const r of results) {
      expect(r.error, `${r.kind}: ${r.error ?? ''}`).toBeUndefined();
      expect(r.ok).toBe(true);
      expect(r.omni).toContain('omni-harness');
      expect(r.creates.filter((c) => c.status === 200)).toHaveLength(1);
      expect(r.vmsLeftAfterTeardown).toBe(0);
      expect(r.outboundAttempts).toEqual([]);
    }
  }, 2 * WORKLOAD_BOUND_MS + 60_000);
});
