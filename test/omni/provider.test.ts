import { describe, expect, it } from 'vitest';
import { fromBinary } from '@bufbuild/protobuf';
import { InfraProviderStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { startProvider } from '../../src/omni/provider.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { ScriptedProvisioner, isProvisioned, privateState } from './controller-harness.js';
import { Changes } from '../helpers/wait.js';
import { startOmniFixture } from './omni-fixture.js';

const SPEC = { talosVersion: '1.9.5', providerData: 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\n' };

describe('startProvider', () => {
  it('publishes the status, beats, provisions and tears down; health() reflects Proxmox health', async ({ signal }) => {
    const f = await startOmniFixture({}, { signal });
    const p = new ScriptedProvisioner();
    p.healthError = 'Proxmox API unreachable';
    // health() changes when a beat's answer comes back, after Omni stored the write.
    const beats = new Changes();
    const provider = await startProvider({
      observer: { heartbeat: beats.notify },
      omni: f.client,
      providerId: 'proxmox',
      name: 'Proxmox',
      description: 'Proxmox infrastructure provider',
      provisioner: p,
      heartbeatIntervalMs: 30,
      version: 'v0.1.0',
    });
    try {
      expect(provider.joinMode).toBe('v2');
      const status = fromBinary(InfraProviderStatusSpecSchema, f.omni.store.get(NS.infraProvider, TYPES.infraProviderStatus, 'proxmox').spec.protoSpec);
      expect(status).toMatchObject({ name: 'Proxmox', version: 'v0.1.0' });
      await f.eventually(() => f.omni.controllers.connected(), 'connected');
      await f.eventually(() => provider.health().omniOk, 'omniOk', [beats.trigger]);
      expect(provider.health()).toMatchObject({ proxmoxOk: false, lastError: 'Proxmox API unreachable' });
      p.healthError = undefined;
      await f.eventually(() => provider.health().proxmoxOk, 'proxmoxOk', [beats.trigger]);

      f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
      const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
      await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
      await f.omni.controllers.deleteMachineRequest(id, signal);
      expect(p.deprovisions.map((d) => d.requestId)).toEqual([id]);
      expect(privateState(f.omni.store, id)).toBeUndefined();
    } finally {
      await provider.stop();
      await f.close();
    }
  });

  it('works against a legacy Omni (ConnectionParams, v1 tokens, no Teardown RPC)', async ({ signal }) => {
    const f = await startOmniFixture({ legacy: true, capabilities: { teardownRpc: false } }, { signal });
    const p = new ScriptedProvisioner();
    const provider = await startProvider({ omni: f.client, providerId: 'proxmox', name: 'Proxmox', description: 'd', provisioner: p, heartbeatIntervalMs: 30 });
    try {
      expect(provider.joinMode).toBe('legacy');
      f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
      const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
      await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
      expect(p.calls[0]?.joinConfig).toMatch(/jointoken=v1%3A/);
      await f.omni.controllers.deleteMachineRequest(id, signal);
      expect(p.deprovisions).toHaveLength(1);
    } finally {
      await provider.stop();
      await f.close();
    }
  });

  it('fails fast on a configuration error (provider ID not matching the key)', async () => {
    const f = await startOmniFixture();
    try {
      await expect(
        startProvider({ omni: f.client, providerId: 'other', name: 'x', description: 'x', provisioner: new ScriptedProvisioner() }),
      ).rejects.toThrow(/PERMISSION_DENIED|INVALID_ARGUMENT/);
    } finally {
      await f.close();
    }
  });
});
