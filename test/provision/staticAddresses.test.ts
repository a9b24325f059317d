// Static addresses through the steps against the Proxmox simulator: the MAC the provider sets in netN, the seed's
// network-config read back from what Proxmox stored, DHCP NICs untouched, the allocation written before the create.
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { readJolietRoot } from '../../src/demo/machine.js';
import { heldAddresses, type AddressBook } from '../../src/provision/addresses.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { formats, parsePropertyString } from '../../src/proxmox/propertyString.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { basicData, request, runSteps, startPveHarness, testFixture } from '../helpers/pveHarness.js';

/** The private states as Omni would hold them: what each request last checkpointed. */
function fakeOmni(): { book: AddressBook; stored: Map<string, MachineState>; persist: (id: string) => (s: MachineState) => void } {
  const stored = new Map<string, MachineState>();
  return {
    stored,
    book: { list: async () => [...stored].map(([requestId, s]) => ({ requestId, addresses: heldAddresses(s) })) },
    persist: (id) => (s) => void stored.set(id, structuredClone(s)),
  };
}

const POOLED = `${basicData}address_pool:
  cidr: 10.0.0.0/24
  range: 10.0.0.10-10.0.0.11
  gateway: 10.0.0.1
  dns_servers: [1.1.1.1, 1.0.0.1]
additional_nics:
  - bridge: vmbr0
  - bridge: vmbr0
    model: e1000
    address_pool:
      cidr: 192.168.7.0/24
      addresses: [192.168.7.5]
      mtu: 9000
`;

describe('static addresses against the simulator', () => {
  it('sets the MAC of each static NIC, leaves DHCP NICs alone, and seeds network-config for exactly those MACs', async () => {
    const omni = fakeOmni();
    const h = await startPveHarness({ provisioner: { addressBook: omni.book } });
    try {
      let addressesAtCreate: string[] | undefined;
      const state = await runSteps(h.provisioner, request('st-1', POOLED), emptyMachineState(), {
        checkpoint: (s) => {
          omni.persist('st-1')(s);
          // Write-ahead: when the create intent is recorded, the addresses already are.
          if (s.createVmid && addressesAtCreate === undefined) addressesAtCreate = heldAddresses(s);
        },
      });
      expect(addressesAtCreate).toEqual(['10.0.0.10', '192.168.7.5']);
      expect(state.nicAddresses.map((a) => [a.nic, a.address])).toEqual([
        [0, '10.0.0.10/24'],
        [2, '192.168.7.5/24'],
      ]);
      const vm = h.sim.vm(state.vmid)!;
      const nic = (k: string) => parsePropertyString(String(vm.config[k]), formats.net);
      expect(nic('net0').macaddr?.toLowerCase()).toBe(state.nicAddresses[0]!.mac);
      expect(nic('net2')).toMatchObject({ model: 'e1000' });
      expect(nic('net2').macaddr?.toLowerCase()).toBe(state.nicAddresses[1]!.mac);
      // net1 has no pool: created as before, Proxmox picks its MAC.
      expect(h.sim.requests.find((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')?.params.net1).toBe('virtio,bridge=vmbr0,firewall=0');

      const files = readJolietRoot(h.sim.isoFile(state.seedVolume, state.node));
      expect(parseYaml(files.get('network-config')!.toString('utf8'))).toEqual({
        version: 2,
        ethernets: {
          eth0: {
            match: { macaddress: state.nicAddresses[0]!.mac },
            addresses: ['10.0.0.10/24'],
            gateway4: '10.0.0.1',
            nameservers: { addresses: ['1.1.1.1', '1.0.0.1'] },
          },
          eth2: { match: { macaddress: state.nicAddresses[1]!.mac }, addresses: ['192.168.7.5/24'], mtu: 9000 },
        },
      });

      // A second request gets the other net0 address; the list pool of net2 is exhausted: refused before any write.
      const second = await runSteps(h.provisioner, request('st-2', POOLED.replace('addresses: [192.168.7.5]', 'addresses: [192.168.7.5, 192.168.7.6]')), emptyMachineState(), {
        checkpoint: omni.persist('st-2'),
      });
      expect(heldAddresses(second)).toEqual(['10.0.0.11', '192.168.7.6']);
      const writes = writeCalls(h.sim).length;
      await expect(runSteps(h.provisioner, request('st-3', POOLED), emptyMachineState(), { checkpoint: omni.persist('st-3') })).rejects.toThrow(
        'pickNode: provider data: address_pool: pool 10.0.0.10-10.0.0.11 has no free address (2 in use by st-1, st-2)',
      );
      expect(writeCalls(h.sim)).toHaveLength(writes);
    } finally {
      await h.close();
    }
  });

  it('skips addresses other VMs hold by their own config (cloud-init ipconfigN), and names them when the pool runs out', async () => {
    const omni = fakeOmni();
    const vms = [
      ...(testFixture().vms ?? []),
      { vmid: 150, node: 'pve2', name: 'legacy-dns', config: { ipconfig0: 'ip=10.0.0.10/24,gw=10.0.0.1', ipconfig1: 'ip=dhcp,ip6=auto' } },
    ];
    const h = await startPveHarness({ fixture: { vms }, provisioner: { addressBook: omni.book } });
    try {
      const data = `${basicData}address_pool:\n  cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.11\n`;
      const first = await runSteps(h.provisioner, request('ext-1', data), emptyMachineState(), { checkpoint: omni.persist('ext-1') });
      expect(heldAddresses(first)).toEqual(['10.0.0.11']);
      await expect(runSteps(h.provisioner, request('ext-2', data), emptyMachineState(), { checkpoint: omni.persist('ext-2') })).rejects.toThrow(
        'pickNode: provider data: address_pool: pool 10.0.0.10-10.0.0.11 has no free address (2 in use by ext-1, VM 150 (legacy-dns) ipconfig0)',
      );
    } finally {
      await h.close();
    }
  });

  it('a request without address_pool is created exactly as before: no MAC, default network-config', async () => {
    const h = await startPveHarness();
    try {
      const state = await runSteps(h.provisioner, request('dhcp-1', basicData));
      expect(state.nicAddresses).toEqual([]);
      expect(h.sim.requests.find((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu')?.params.net0).toBe('virtio,bridge=vmbr0,firewall=1');
      const files = readJolietRoot(h.sim.isoFile(state.seedVolume, state.node));
      expect(files.get('network-config')!.toString('utf8')).toBe('version: 1\n');
    } finally {
      await h.close();
    }
  });
});
