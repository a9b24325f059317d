// Test fixture: an in-process Omni on 127.0.0.1 plus a signed client connected to it as provider `proxmox`.
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import { decodeServiceAccountKey } from '../../src/cosi/signing.js';
import { startInProcessOmni, type InProcessOmni, type InProcessOmniOptions } from '../../src/sim/omni/server.js';

export interface OmniFixture {
  omni: InProcessOmni;
  client: OmniClient;
  close(): Promise<void>;
}

export async function startOmniFixture(opts: InProcessOmniOptions = {}): Promise<OmniFixture> {
  const providerId = opts.providerId ?? 'proxmox';
  const omni = await startInProcessOmni({ seed: 7, ...opts, providerId });
  const key = await decodeServiceAccountKey(await omni.createProviderKey(providerId), { providerId });
  const client = connectOmni({
    endpoint: omni.endpoint,
    key,
    providerId,
    state: { conflictRetry: { initialMs: 5, maxMs: 50 }, watchBackoff: { initialMs: 20, maxMs: 200 } },
  });
  return {
    omni,
    client,
    close: async () => {
      client.close();
      await omni.close();
    },
  };
}

/** Writes (Create/Update/Destroy/Teardown) the provider made so far, by method name. */
export function writeCounts(omni: InProcessOmni): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [path, n] of Object.entries(omni.callCounts())) {
    const method = path.slice(path.lastIndexOf('/') + 1);
    if (['Create', 'Update', 'Destroy', 'Teardown', 'TeardownAndDestroy'].includes(method)) out[method] = n;
  }
  return out;
}

/** Polls `check` (no timing assertions: only a generous upper bound so a broken build fails instead of hanging). */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 8000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
