// Static addresses end to end (the daemon as a child process, the in-process Omni, the Proxmox simulator):
// concurrent requests of one class get distinct addresses that survive a SIGKILL, the seed ISO Proxmox receives
// carries them as network-config for the MAC the VM has, an exhausted pool fails clearly, and a teardown frees an
// address for the next request (also across classes whose pools overlap).
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { fromBinary } from '@bufbuild/protobuf';
import { readJolietRoot } from '../../src/demo/machine.js';
import { ConfigPatchSpecSchema } from '../../src/gen/omni/specs/omni_pb.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { parsePropertyString, formats } from '../../src/proxmox/propertyString.js';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateStateOf,
  SMALL_VM,
  statusOf,
  vmsOf,
  waitForStage,
  waitUntil,
  withWorld,
  type World,
} from '../helpers/e2e.js';

const CLASS_A = `${SMALL_VM}address_pool:
  cidr: 10.0.0.0/24
  range: 10.0.0.10-10.0.0.13
  gateway: 10.0.0.1
  dns_servers: [1.1.1.1, 1.0.0.1]
  search_domains: [lan.example]
`;

function addressOf(world: World, id: string): string | undefined {
  return privateStateOf(world.omni, id)?.nicAddresses.find((a) => a.nic === 0)?.address;
}

/** What the seed ISO attached to the request's VM holds, read back with the ISO9660/Joliet reader. */
function seedOf(world: World, id: string): { networkConfig: any; mac: string } {
  const [vm] = vmsOf(world.sim, id);
  if (!vm) throw new Error(`no VM for ${id}`);
  const volid = (vm.config.get('ide0') ?? '').split(',')[0] ?? '';
  const files = readJolietRoot(world.sim.isoFile(volid, vm.node));
  const text = files.get('network-config')?.toString('utf8') ?? '';
  const mac = parsePropertyString(vm.config.get('net0') ?? '', formats.net).macaddr ?? '';
  return { networkConfig: parseYaml(text), mac };
}

describe.concurrent('static addresses (child process)', () => {
  it('concurrent requests get distinct addresses, kept across a SIGKILL; the seed carries them for the NIC the VM has', { timeout: 150_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      // The Talos ISO download does not end until released: every request has taken its address (pickNode) and
      // waits in uploadISO when the daemon is killed.
      sim.faults.onTask({ type: 'download' }, { kind: 'stuck' });
      const first = spawnDaemon();
      await first.waitForLog('infra provider started');
      const ids = ['static-1', 'static-2', 'static-3'];
      for (const id of ids) omni.controllers.createMachineRequest('static', { talosVersion: 'v1.11.5', providerData: CLASS_A }, id);
      await waitUntil(world, () => ids.every((id) => addressOf(world, id) !== undefined) && sim.tasks({ type: 'download' }).length === 1, {
        what: () => `every request to hold an address (${JSON.stringify(ids.map((id) => addressOf(world, id)))}) and the download to run`,
      });
      const taken = ids.map((id) => addressOf(world, id)!);
      expect(new Set(taken).size).toBe(3);
      for (const a of taken) expect(['10.0.0.10/24', '10.0.0.11/24', '10.0.0.12/24', '10.0.0.13/24']).toContain(a);
      // Logged once each (the line follows the write to Omni, so it may come a moment later).
      await waitUntil(world, () => first.logs(/^static addresses allocated: net0 10\.0\.0\.1[0-3]\/24$/).length === 3, {
        what: 'three "static addresses allocated" log lines',
      });
      await first.crash();

      const second = spawnDaemon();
      await second.waitForLog('infra provider started');
      expect(sim.releaseStuckTasks({ type: 'download' })).toBe(1);
      for (const [i, id] of ids.entries()) {
        const status = await waitForStage(omni, id, 'PROVISIONED');
        // Kept across the restart, shown where Omni shows the request's progress.
        expect(addressOf(world, id)).toBe(taken[i]);
        expect(status.status).toBe(`Provision Complete (net0 ${taken[i]})`);
      }
      expect(second.logs(/^static addresses allocated/)).toHaveLength(0);
      for (const [i, id] of ids.entries()) {
        const state = privateStateOf(omni, id)!;
        const { networkConfig, mac } = seedOf(world, id);
        // The VM's net0 carries the MAC the provider chose (locally administered), and the network-config matches it.
        expect(mac.toLowerCase()).toBe(state.nicAddresses[0]!.mac);
        expect(parseInt(mac.slice(0, 2), 16) & 0x03).toBe(0x02);
        expect(networkConfig).toEqual({
          version: 2,
          ethernets: {
            eth0: {
              match: { macaddress: mac.toLowerCase() },
              addresses: [taken[i]],
              gateway4: '10.0.0.1',
              nameservers: { addresses: ['1.1.1.1', '1.0.0.1'], search: ['lan.example'] },
            },
          },
        });
      }
      // Talos ignores search domains in network-config: they come as a machine-config patch requested from Omni.
      for (const id of ids) {
        const patch = omni.store.find(NS.infraProvider, TYPES.configPatchRequest, `${id}-search-domains`);
        expect(patch?.metadata.labels).toMatchObject({ 'omni.sidero.dev/infra-provider-id': 'proxmox', 'omni.sidero.dev/machine-request': id });
        expect(parseYaml(fromBinary(ConfigPatchSpecSchema, patch!.spec.protoSpec).data)).toEqual({ machine: { network: { searchDomains: ['lan.example'] } } });
      }
      for (const id of ids) await deleteRequest(world, id);
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
      expect(omni.store.list(NS.infraProvider, TYPES.configPatchRequest)).toEqual([]);
    });
  });

  it('an exhausted pool fails the request clearly; a teardown frees its address for the next request, also from an overlapping pool', { timeout: 150_000 }, async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const classA = `${SMALL_VM}address_pool:\n  cidr: 10.0.0.0/24\n  addresses: [10.0.0.20, 10.0.0.21]\n  gateway: 10.0.0.1\n`;
      // Another machine class whose pool overlaps class A's: allocation is by address, across every request.
      const classB = `${SMALL_VM}address_pool:\n  cidr: 10.0.0.0/24\n  addresses: [10.0.0.21, 10.0.0.22]\n`;
      const daemon = spawnDaemon();
      await daemon.waitForLog('infra provider started');
      const create = (set: string, id: string, data: string) => omni.controllers.createMachineRequest(set, { talosVersion: 'v1.11.5', providerData: data }, id);
      create('a', 'a-1', classA);
      await waitForStage(omni, 'a-1', 'PROVISIONED');
      create('a', 'a-2', classA);
      await waitForStage(omni, 'a-2', 'PROVISIONED');
      create('b', 'b-1', classB);
      await waitForStage(omni, 'b-1', 'PROVISIONED');
      expect(['a-1', 'a-2', 'b-1'].map((id) => addressOf(world, id))).toEqual(['10.0.0.20/24', '10.0.0.21/24', '10.0.0.22/24']);

      const creates = sim.tasks({ type: 'qmcreate' }).length;
      create('a', 'a-3', classA);
      const failed = await waitForStage(omni, 'a-3', 'FAILED');
      expect(failed.error).toBe('pickNode: provider data: address_pool: pool [10.0.0.20 … 10.0.0.21] (2 addresses) has no free address (2 in use by a-1, a-2)');
      expect(vmsOf(sim, 'a-3')).toEqual([]);
      expect(sim.tasks({ type: 'qmcreate' })).toHaveLength(creates);
      expect(addressOf(world, 'a-3')).toBeUndefined();
      await deleteRequest(world, 'a-3');

      // a-1's teardown finishes (VM deleted, private state destroyed): its address is handed out again.
      await deleteRequest(world, 'a-1');
      expect(vmsOf(sim, 'a-1')).toEqual([]);
      create('a', 'a-4', classA);
      const status = await waitForStage(omni, 'a-4', 'PROVISIONED');
      expect(addressOf(world, 'a-4')).toBe('10.0.0.20/24');
      expect(status.status).toBe('Provision Complete (net0 10.0.0.20/24)');
      expect(seedOf(world, 'a-4').networkConfig.ethernets.eth0.addresses).toEqual(['10.0.0.20/24']);
      expect(daemon.logs('static addresses released with the VM').map((l) => l.request)).toEqual(['a-1']);

      for (const id of ['a-2', 'b-1', 'a-4']) await deleteRequest(world, id);
      expect(statusOf(omni, 'a-4')).toBeUndefined();
      expect(leftovers(world)).toEqual(NOTHING_LEFT);
    });
  });
});
