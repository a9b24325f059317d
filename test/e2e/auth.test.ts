// Authentication failures surfaced by the daemon as a child process: it exits 2 at once with a message that names
// the problem (on stderr and as an error log line) instead of retrying forever, and never prints the key.
import { describe, expect, it } from 'vitest';
import { startInProcessOmni } from '../../src/sim/omni/index.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { startDaemonProcess, startWorld, type DaemonProcess, type World } from '../helpers/e2e.js';
import { whenAborted } from '../helpers/wait.js';

/** Runs the daemon until it exits by itself (killed if the test times out first). */
async function runToExit(world: World, env: Record<string, string | undefined>): Promise<DaemonProcess & { code: number | null }> {
  const d = startDaemonProcess(world, env);
  const exit = await Promise.race([d.exited, whenAborted(world.signal, 'the daemon to exit')]).finally(() => d.kill('SIGKILL'));
  return Object.assign(d, { code: exit.code });
}

function expectStartFailure(d: DaemonProcess & { code: number | null }, reason: RegExp, key: string): void {
  expect(d.code).toBe(2);
  expect(d.stderr).toMatch(/^error: /m);
  expect(d.stderr).toMatch(reason);
  const line = d.logs('the provider could not start')[0];
  expect(line?.level).toBe('error');
  expect(String(line?.err)).toMatch(reason);
  // It gave up at once: no retry loop, no controller started.
  expect(d.logs('infra provider started')).toHaveLength(0);
  const keyBody = JSON.parse(Buffer.from(key, 'base64').toString('utf8')) as { pgp_key: string };
  expect(d.stdout + d.stderr).not.toContain(keyBody.pgp_key.split('\n')[3] ?? 'no key line');
}

// Six daemons start at once: on a busy machine each start takes many seconds.
describe.concurrent('authentication failures (child process)', { timeout: 90_000 }, () => {
  it('a key Omni does not know (issued by another Omni for the same ID): exit 2, "invalid signature" explained', async ({ signal }) => {
    const world = await startWorld({ signal });
    const elsewhere = await startInProcessOmni({ providerId: 'proxmox' });
    try {
      const foreignKey = await elsewhere.createProviderKey('proxmox');
      const d = await runToExit(world, { OMNI_SERVICE_ACCOUNT_KEY: foreignKey });
      expectStartFailure(d, /invalid signature/, foreignKey);
      expect(d.stderr).toMatch(/key/i);
    } finally {
      await elsewhere.close();
      await world.close();
    }
  });

  it('a key for another provider ID than --id: exit 2 naming both IDs, before any call to Omni', async ({ signal }) => {
    const world = await startWorld({ signal });
    try {
      const otherKey = await world.omni.createProviderKey('vsphere');
      const d = await runToExit(world, { OMNI_SERVICE_ACCOUNT_KEY: otherKey });
      expectStartFailure(d, /"vsphere".*"proxmox"/, otherKey);
      expect(world.omni.callCounts()).toEqual({});
    } finally {
      await world.close();
    }
  });

  it('Omni\'s clock 10 minutes ahead (skew > 5 min): exit 2 and the message points at the clock', async ({ signal }) => {
    const world = await startWorld({ signal });
    try {
      world.omni.keys.skewClock(10 * 60_000);
      const d = await runToExit(world, {});
      expectStartFailure(d, /invalid signature/, world.key);
      expect(d.stderr).toMatch(/clock/i);
    } finally {
      await world.close();
    }
  });

  it('a provider ID Omni has no InfraProvider for: exit 2 and the message says to register it', async ({ signal }) => {
    const world = await startWorld({ signal });
    try {
      const ghostKey = await world.omni.createProviderKey('ghost');
      expect(world.omni.store.find(NS.infraProvider, TYPES.infraProvider, 'ghost')).toBeUndefined();
      const d = await runToExit(world, { OMNI_SERVICE_ACCOUNT_KEY: ghostKey, PROVIDER_ID: 'ghost' });
      expectStartFailure(d, /ghost/, ghostKey);
      expect(d.stderr).toMatch(/not registered.*omnictl infraprovider create ghost/);
    } finally {
      await world.close();
    }
  });

  it('a key Omni marked expired: exit 2, not a retry loop', async ({ signal }) => {
    const world = await startWorld({ signal });
    try {
      const key = await world.omni.keys.createProviderKey('proxmox');
      world.omni.keys.expire(key.fingerprint);
      const d = await runToExit(world, { OMNI_SERVICE_ACCOUNT_KEY: key.keyString });
      expectStartFailure(d, /invalid signature/, key.keyString);
    } finally {
      await world.close();
    }
  });

  it('a key past its own expiry date: exit 2 with the date and how to renew it', async ({ signal }) => {
    const world = await startWorld({ signal });
    try {
      const old = await world.omni.keys.createProviderKey('proxmox', { lifetimeSeconds: 3600, created: new Date(Date.now() - 2 * 3600_000) });
      const d = await runToExit(world, { OMNI_SERVICE_ACCOUNT_KEY: old.keyString });
      expectStartFailure(d, /expired on \d{4}-\d\d-\d\dT.*renew/, old.keyString);
    } finally {
      await world.close();
    }
  });
});
