// Older Omni releases end to end with the daemon as a child process: pre-1.0 (no ProviderJoinConfigs: legacy
// ConnectionParams and v1 join tokens) and pre-1.8 (no Teardown RPCs, no CreateSchematicFromRaw: the schematic
// goes straight to the image factory, teardown falls back to Get+Update).
import { describe, expect, it } from 'vitest';
import { methodPath } from '../../src/cosi/grpc.js';
import { State } from '../../src/gen/cosi/v1alpha1/state_pb.js';
import { ManagementService } from '../../src/gen/omni/management/management_pb.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import {
  bootAndJoin,
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateStateOf,
  SMALL_VM,
  statusOf,
  vmsOf,
  waitForStage,
  withWorld,
  type DaemonProcess,
  type World,
} from '../helpers/e2e.js';

const PRE_1_8 = { teardownRpc: false, createSchematicFromRaw: false, schematicTalosVersion: false, getBootAssetUrl: false };

/** Provision one request, join its machine, tear it down; returns the token the machine joined with. */
async function fullCycle(world: World, spawnDaemon: () => DaemonProcess, id: string) {
  const { omni, sim } = world;
  const daemon = spawnDaemon();
  await daemon.waitForLog('infra provider started');
  omni.controllers.createMachineRequest('compat', { talosVersion: 'v1.9.5', providerData: SMALL_VM }, id);
  const status = await waitForStage(omni, id, 'PROVISIONED');
  expect(status.error).toBe('');
  expect(vmsOf(sim, id)).toHaveLength(1);
  const machine = bootAndJoin(world, id);
  expect(status.id).toBe(machine.uuid);
  const reg = omni.store.find(NS.infraProvider, TYPES.infraMachineRegistration, machine.uuid);
  expect(reg?.metadata.labels['omni.sidero.dev/machine-request']).toBe(id);
  // The schematic ID the provider stored is the one the server computed.
  const schematics = omni.factory.registry.all();
  expect(schematics).toHaveLength(1);
  expect(privateStateOf(omni, id)?.schematic).toBe(schematics[0]!.id);
  // The cacheable schematic never carries the per-request join token (it travels in the NoCloud seed).
  expect(schematics[0]!.yaml).not.toMatch(/jointoken|siderolink/);
  expect(schematics[0]!.yaml).toContain('siderolabs/qemu-guest-agent');
  await deleteRequest(world, id);
  expect(leftovers(world)).toEqual(NOTHING_LEFT);
  return { daemon, machine, schematic: schematics[0]! };
}

describe.concurrent('older Omni releases (child process)', () => {
  it('Omni < 1.0 (legacy): ConnectionParams + v1 tokens; also pre-1.8 RPCs; full cycle leaves nothing', async ({ signal }) => {
    await withWorld({ signal, omni: { legacy: true, capabilities: PRE_1_8 } }, async (world, spawnDaemon) => {
      const { daemon, machine, schematic } = await fullCycle(world, spawnDaemon, 'legacy-1');
      expect(daemon.logs('legacy Omni: using ConnectionParams and v1 tokens')).toHaveLength(1);
      expect(machine.token.startsWith('v1:')).toBe(true);
      expect(schematic.via).toBe('factory');
      expect(world.omni.factory.requests.filter((r) => r.method === 'POST' && r.path === '/schematics' && r.status === 201)).toHaveLength(1);
      // Teardown used the Get+Update fallback: the RPC was tried, refused, and nothing was left behind.
      const calls = world.omni.callCounts();
      expect((calls[methodPath(State.method.teardown)] ?? 0) + (calls[methodPath(State.method.teardownAndDestroy)] ?? 0)).toBeGreaterThan(0);
      expect(statusOf(world.omni, 'legacy-1')).toBeUndefined();
    });
  }, 120_000);

  it('Omni 1.0-1.7: v2 tokens, schematic POSTed to the factory, teardown without the Teardown RPC', async ({ signal }) => {
    await withWorld({ signal, omni: { capabilities: PRE_1_8 } }, async (world, spawnDaemon) => {
      const { daemon, machine, schematic } = await fullCycle(world, spawnDaemon, 'pre18-1');
      expect(daemon.logs('Omni has provider join configs (v2 tokens)')).toHaveLength(1);
      expect(machine.token.startsWith('v2:')).toBe(true);
      expect(schematic.via).toBe('factory');
      // The ISO Proxmox downloaded comes from the factory FeaturesConfig names, with a v-prefixed version.
      const downloads = world.sim.requests.filter((r) => r.path.endsWith('/download-url'));
      expect(downloads.length).toBeGreaterThan(0);
      expect(String(downloads[0]!.params.url)).toBe(`${world.omni.factoryUrl}/image/${schematic.id}/v1.9.5/nocloud-amd64.iso`);
    });
  }, 120_000);

  it('current Omni: the schematic goes through CreateSchematicFromRaw with the Talos version, never to the factory directly', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { schematic } = await fullCycle(world, spawnDaemon, 'current-1');
      expect(schematic.via).toBe('omni');
      expect(schematic.talosVersion).toBe('v1.9.5');
      expect(world.omni.factory.requests.filter((r) => r.method === 'POST')).toHaveLength(0);
      expect(world.omni.callCounts()[methodPath(ManagementService.method.createSchematicFromRaw)]).toBe(1);
    });
  }, 120_000);
});
