// The daemon as a process against the in-process Omni over TLS at https://127.0.0.1 with a self-signed certificate:
// trusted through OMNI_CA_FILE it provisions and tears down a machine; without it, it says the certificate was not
// accepted and how to fix it. Either way: no Node DEP0123 warning on stderr, every log line one JSON object with
// unique keys (withWorld checks), each outcome logged once.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteRequest, leftovers, NOTHING_LEFT, SMALL_VM, waitForStage, withWorld } from '../helpers/e2e.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'e2e-omni-ca-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('Omni over TLS (child process)', () => {
  it('with OMNI_CA_FILE: provisions and tears down; one "machine deprovisioned", one "ops endpoint listening", no DEP0123', async () => {
    await withWorld({ omni: { tls: true } }, async (world, spawnDaemon) => {
      expect(world.omni.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const caFile = join(dir, 'omni-ca.pem');
      writeFileSync(caFile, world.omni.tlsCertificate!);
      const daemon = spawnDaemon({ OMNI_CA_FILE: caFile, PROVIDER_HEALTH_LISTEN: '127.0.0.1:0' });
      await daemon.waitForLog('infra provider started');
      const id = world.omni.controllers.createMachineRequest('tls', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'tls-1').metadata.id;
      await waitForStage(world.omni, id, 'PROVISIONED');
      await deleteRequest(world, id);
      await daemon.waitForLog('machine deprovisioned');
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
      const exit = await daemon.terminate();
      expect(exit.code).toBe(0);
      expect(daemon.logs('machine deprovisioned')).toHaveLength(1);
      expect(daemon.logs(/^ops endpoint listening/)).toHaveLength(1);
      expect(daemon.logs(/^ops endpoint listening/)[0]).toMatchObject({ component: 'ops', address: '127.0.0.1' });
      expect(daemon.stderr).not.toMatch(/DEP0123|ServerName to an IP address/);
      expect(daemon.logs(/failed; retrying/)).toEqual([]);
    });
  }, 90_000);

  it('without OMNI_CA_FILE: a log line says the certificate was not accepted and names OMNI_CA_FILE; no DEP0123', async () => {
    await withWorld({ omni: { tls: true } }, async (_world, spawnDaemon) => {
      const daemon = spawnDaemon();
      // The first call to Omni is the leader lease's read: it fails, and is retried every retry period.
      const line = await daemon.waitForLog('leader lease call failed');
      expect(line.level).toBe('warn');
      expect(String(line.err)).toMatch(
        /the TLS certificate of Omni at 127\.0\.0\.1 was not accepted: self-signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\); if a private CA issued it, trust that CA with OMNI_CA_FILE/,
      );
      await daemon.terminate();
      expect(daemon.stderr).not.toMatch(/DEP0123|ServerName to an IP address/);
    });
  }, 60_000);
});
