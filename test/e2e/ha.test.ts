// The `ha` block through the daemon as a child process, the in-process Omni and the Proxmox simulator: a PVE 9 set
// with node affinity and resource affinity, a PVE 8 set with node affinity (an HA group), a PVE 8 request asking for
// resource affinity (refused before any write), and teardowns that leave no HA resource, rule or group behind.
import { describe, expect, it } from 'vitest';
import { writeCalls, type PveFixture } from '../../src/sim/proxmox/index.js';
import {
  deleteRequest,
  e2eFixture,
  leftovers,
  NOTHING_LEFT,
  privateStateOf,
  SMALL_VM,
  vmsOf,
  waitForStage,
  withWorld,
} from '../helpers/e2e.js';

/** The provider's role with Sys.Console on / added, as docs/configuration.md tells operators who use `ha`. */
function haFixture(versionProfile: PveFixture['versionProfile']): Partial<PveFixture> {
  const roles = e2eFixture().roles ?? {};
  return { versionProfile, roles: { ...roles, OmniProvider: [...(roles['OmniProvider'] ?? []), 'Sys.Console'] } };
}

describe.concurrent('ha (child process)', () => {
  it('PVE 9: a set of two with node affinity and negative resource affinity; teardown leaves no HA resource or rule', { timeout: 120_000 }, async ({ signal }) => {
    await withWorld({ signal, fixture: haFixture('pve9') }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const providerData = `${SMALL_VM}ha:\n  state: started\n  node_affinity_nodes: [pve1, pve2]\n  resource_affinity: negative\n`;
      const ids = ['ha9-a', 'ha9-b'];
      for (const id of ids) omni.controllers.createMachineRequest('ha9', { talosVersion: 'v1.11.5', providerData }, id);
      for (const id of ids) expect((await waitForStage(omni, id, 'PROVISIONED')).error).toBe('');
      const sids = ids.map((id) => `vm:${vmsOf(sim, id)[0]!.vmid}`).sort();
      expect([...sim.ha.resources.keys()].filter((s) => sids.includes(s)).sort()).toEqual(sids);
      expect([...sim.ha.rules.get('omni-ha9-naff')!.resources].sort()).toEqual(sids);
      expect(sim.ha.rules.get('omni-ha9-naff')!.nodes).toEqual(['pve1', 'pve2']);
      expect([...sim.ha.rules.get('omni-ha9-raff')!.resources].sort()).toEqual(sids);
      expect(sim.ha.rules.get('omni-ha9-raff')!.affinity).toBe('negative');
      for (const id of ids) expect(privateStateOf(omni, id)?.haRegistered).toBe(true);
      expect(daemon.logs('running provision step').map((l) => l.step)).toContain('syncHARules');

      for (const id of ids) await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
      expect(sim.ha.resources.size).toBe(0);
      expect(sim.ha.rules.size).toBe(0);
    });
  });

  it('PVE 8: node affinity becomes an HA group; teardown removes resource and group', { timeout: 120_000 }, async ({ signal }) => {
    await withWorld({ signal, fixture: haFixture('pve8.4') }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const providerData = `${SMALL_VM}ha:\n  node_affinity_nodes: [pve3]\n  node_affinity_strict: true\n`;
      omni.controllers.createMachineRequest('ha8', { talosVersion: 'v1.11.5', providerData }, 'ha8-a');
      expect((await waitForStage(omni, 'ha8-a', 'PROVISIONED')).error).toBe('');
      const vmid = vmsOf(sim, 'ha8-a')[0]!.vmid;
      expect(sim.ha.groups.get('omni-ha8-naff')).toEqual({ nodes: ['pve3'], restricted: 1 });
      expect(sim.ha.resources.get(`vm:${vmid}`)?.group).toBe('omni-ha8-naff');
      expect(sim.vm(vmid)?.node).toBe('pve3');
      await deleteRequest(world, 'ha8-a');
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
      expect(sim.ha.resources.size + sim.ha.groups.size).toBe(0);
    });
  });

  it('PVE 8: resource_affinity is refused (FAILED, naming the field) with no Proxmox write', { timeout: 120_000 }, async ({ signal }) => {
    await withWorld({ signal, fixture: haFixture('pve8.4') }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const providerData = `${SMALL_VM}ha:\n  resource_affinity: negative\n`;
      omni.controllers.createMachineRequest('ha8r', { talosVersion: 'v1.11.5', providerData }, 'ha8r-a');
      const status = await waitForStage(omni, 'ha8r-a', 'FAILED');
      expect(status.error).toMatch(/^provider data: ha\.resource_affinity: needs Proxmox VE 9/);
      expect(writeCalls(sim)).toEqual([]);
      await deleteRequest(world, 'ha8r-a');
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  });
});
