// Tests for the omni-protocol.md §7 traps that no other test pins down directly (see docs/traps.md for the full
// matrix): binary detached signatures, lower-case fingerprints, kind watches without an ID, messages above grpc-js's
// 4 MiB default, Omni's local (unsigned) mode, and the heartbeat interval cap.
import * as grpc from '@grpc/grpc-js';
import * as openpgp from 'openpgp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import { MachineRequestKind } from '../../src/cosi/resources.js';
import { decodeServiceAccountKey, HEADER_SIGNATURE, signMetadata } from '../../src/cosi/signing.js';
import { isUnauthenticated, type WatchEvent } from '../../src/cosi/state.js';
import type { MachineRequestSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';

describe('request signing traps', () => {
  it('#5/#6: the signature is a binary (not text-mode, not armored) detached signature; the fingerprint is lower-case hex', async () => {
    const omni = await startInProcessOmni({ providerId: 'proxmox' });
    try {
      const key = await decodeServiceAccountKey(await omni.createProviderKey('proxmox'), { providerId: 'proxmox' });
      const md = new grpc.Metadata();
      md.set('providerid', 'proxmox');
      await signMetadata(key, '/cosi.resource.State/Get', md);
      const [version, identity, fingerprint, sigB64, ...rest] = String(md.get(HEADER_SIGNATURE)[0]).split(' ');
      expect(rest).toEqual([]);
      expect(version).toBe('siderov1');
      expect(identity).toBe('infra-provider:proxmox');
      expect(fingerprint).toMatch(/^[0-9a-f]{40}$/);
      const bytes = Buffer.from(sigB64!, 'base64');
      expect(bytes.toString('latin1')).not.toContain('-----BEGIN');
      const signature = await openpgp.readSignature({ binarySignature: bytes });
      const packet = signature.packets[0]!;
      expect(packet.signatureType).toBe(openpgp.enums.signature.binary);
      // Detached over the exact payload header bytes.
      const payload = String(md.get('x-sidero-payload')[0]);
      const verified = await openpgp.verify({
        message: await openpgp.createMessage({ binary: new TextEncoder().encode(payload) }),
        signature,
        verificationKeys: key.privateKey.toPublic(),
        expectSigned: true,
      });
      expect(verified.data).toBeDefined();
    } finally {
      await omni.close();
    }
  });
});

describe('wire traps against the in-process Omni', () => {
  let omni: InProcessOmni;
  let client: OmniClient;
  beforeAll(async () => {
    omni = await startInProcessOmni({ providerId: 'proxmox' });
    const key = await decodeServiceAccountKey(await omni.createProviderKey('proxmox'), { providerId: 'proxmox' });
    client = connectOmni({ endpoint: omni.endpoint, key, providerId: 'proxmox' });
  });
  afterAll(async () => {
    client.close();
    await omni.close();
  });

  it('#8: a kind watch sends no ID (an empty ID would watch the single resource "" and miss every request)', async () => {
    const watch = client.state.watch(MachineRequestKind, { labels: { 'omni.sidero.dev/infra-provider-id': 'proxmox' } });
    const seen: string[] = [];
    const done = (async () => {
      for await (const e of watch as AsyncIterable<WatchEvent<typeof MachineRequestSpecSchema>>) {
        if (e.type === 'created') seen.push(e.resource.metadata.id);
        if (seen.length === 2) break;
      }
    })();
    omni.controllers.createMachineRequest('set', { talosVersion: 'v1.9.5' }, 'kind-watch-1');
    omni.controllers.createMachineRequest('set', { talosVersion: 'v1.9.5' }, 'kind-watch-2');
    await done;
    watch.close();
    expect(seen).toEqual(['kind-watch-1', 'kind-watch-2']);
  });

  it('#23: reads a resource larger than grpc-js\'s 4 MiB default receive limit (Omni allows 32 MiB)', async () => {
    const providerData = `notes: "${'x'.repeat(5 * 1024 * 1024)}"\n`;
    omni.controllers.createMachineRequest('big', { talosVersion: 'v1.9.5', providerData }, 'big-1');
    const got = await client.state.get(MachineRequestKind, 'big-1');
    expect(got.spec.providerData.length).toBe(providerData.length);
  });
});

describe('Omni local mode (#15)', () => {
  it('unsigned calls carrying providerid work against a local resource server and are refused by the signed API', async () => {
    const local = await startInProcessOmni({ providerId: 'proxmox', localMode: true });
    const signedOnly = await startInProcessOmni({ providerId: 'proxmox' });
    const a = connectOmni({ endpoint: local.endpoint, providerId: 'proxmox' });
    const b = connectOmni({ endpoint: signedOnly.endpoint, providerId: 'proxmox' });
    try {
      local.controllers.createMachineRequest('set', { talosVersion: 'v1.9.5' }, 'local-1');
      expect((await a.state.list(MachineRequestKind)).map((r) => r.metadata.id)).toEqual(['local-1']);
      const err = await b.state.list(MachineRequestKind).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isUnauthenticated(err)).toBe(true);
    } finally {
      a.close();
      b.close();
      await local.close();
      await signedOnly.close();
    }
  });
});

describe('heartbeat interval (#25)', () => {
  it('defaults well below Omni\'s 30 s disconnect threshold and refuses intervals at or above it', () => {
    expect(loadConfig([], {}).provider.heartbeatIntervalSeconds).toBe(10);
    expect(loadConfig(['--heartbeat-interval-seconds', '25'], {}).provider.heartbeatIntervalSeconds).toBe(25);
    expect(() => loadConfig(['--heartbeat-interval-seconds', '30'], {})).toThrow(ConfigError);
    expect(() => loadConfig(['--heartbeat-interval-seconds', '26'], {})).toThrow(/heartbeat.*25|25.*heartbeat/is);
  });
});
