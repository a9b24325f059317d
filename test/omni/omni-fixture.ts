// Test fixture: an in-process Omni on 127.0.0.1 plus a signed client connected to it as provider `proxmox`.
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import { decodeServiceAccountKey } from '../../src/cosi/signing.js';
import { startInProcessOmni, type InProcessOmni, type InProcessOmniOptions } from '../../src/sim/omni/server.js';
import { storeChanges, waitFor, type Trigger } from '../helpers/wait.js';

export interface OmniFixture {
  omni: InProcessOmni;
  client: OmniClient;
  /** Every call Omni receives and every write to its store (what most conditions in these tests depend on). */
  readonly changes: Trigger[];
  /**
   * Resolves with the first truthy value of `check`, re-checked on every call Omni receives, every store write and
   * every trigger in `on` (for conditions on other state: a test double, a heartbeat). No deadline: the test's
   * timeout is the bound, and the fixture's signal ends the wait with `what` in the message.
   */
  eventually<T>(check: () => T | undefined | false, what: string | (() => string), on?: Trigger[]): Promise<T>;
  close(): Promise<void>;
}

/** Every call the in-process Omni receives (reads included, which change nothing in the store). */
export function omniCalls(omni: InProcessOmni): Trigger {
  return (wake) => omni.onCall(() => wake());
}

/**
 * `signal`: the test context's (`beforeEach(async ({ signal }) => …)` or `it(…, async ({ signal }) => …)`), aborted
 * when vitest's per-test timeout fires; waits then fail with what they were waiting for.
 */
export async function startOmniFixture(opts: InProcessOmniOptions = {}, ctx: { signal?: AbortSignal } = {}): Promise<OmniFixture> {
  const providerId = opts.providerId ?? 'proxmox';
  const omni = await startInProcessOmni({ seed: 7, ...opts, providerId });
  const key = await decodeServiceAccountKey(await omni.createProviderKey(providerId), { providerId });
  const client = connectOmni({
    endpoint: omni.endpoint,
    key,
    providerId,
    state: { conflictRetry: { initialMs: 5, maxMs: 50 }, watchBackoff: { initialMs: 20, maxMs: 200 } },
  });
  const changes = [storeChanges(omni.store), omniCalls(omni)];
  const fixture: OmniFixture = {
    omni,
    client,
    changes,
    eventually: (check, what, on = []) => waitFor(check, { what, on: [...changes, ...on], signal: ctx.signal }),
    close: async () => {
      live.delete(fixture);
      client.close();
      await omni.close();
    },
  };
  live.add(fixture);
  return fixture;
}

/** Fixtures started and not yet closed in this test process. */
const live = new Set<OmniFixture>();

/**
 * Like `f.eventually` for code that has no fixture at hand: re-checks on the changes of every open fixture. No
 * deadline (the test's timeout is the bound).
 */
export function eventually<T>(check: () => T | undefined | false, what: string | (() => string), on: Trigger[] = []): Promise<T> {
  return waitFor(check, { what, on: [...[...live].flatMap((f) => f.changes), ...on] });
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
