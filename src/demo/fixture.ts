// The simulated Proxmox cluster the embedded demo runs on: three nodes, local and shared storage, two bridges.
import type { PveFixture } from '../sim/proxmox/fixture.js';
import { defaultTaskDurations } from '../sim/proxmox/tasks.js';

const GiB = 1024 ** 3;

export const DEMO_TOKEN = { tokenId: 'root@pam!omni', tokenSecret: '5ec7e7a0-0000-4000-8000-00000000cafe' };

export function demoFixture(): PveFixture {
  return {
    seed: 7,
    clusterName: 'demo',
    entryNode: 'pve1',
    authFailDelayMs: 0,
    // Realistic task durations (ms of simulated time, see docs/performance.md); the demo runs the clock faster.
    taskDurations: { ...defaultTaskDurations },
    downloadSizeBytes: 1024 * 1024,
    nodes: [
      { name: 'pve1', status: 'online', maxcpu: 16, maxmem: 64 * GiB, mem: 6 * GiB },
      { name: 'pve2', status: 'online', maxcpu: 16, maxmem: 64 * GiB, mem: 9 * GiB },
      { name: 'pve3', status: 'online', maxcpu: 8, maxmem: 32 * GiB, mem: 3 * GiB },
    ],
    storages: [
      { name: 'local', type: 'dir', content: ['iso', 'vztmpl', 'backup'], shared: false, total: 100 * GiB, used: 12 * GiB },
      { name: 'local-lvm', type: 'lvmthin', content: ['images', 'rootdir'], shared: false, total: 500 * GiB, used: 40 * GiB },
      { name: 'ceph-vm', type: 'rbd', content: ['images'], shared: true, total: 4096 * GiB, used: 900 * GiB },
    ],
    bridges: { pve1: ['vmbr0', 'vmbr1'], pve2: ['vmbr0', 'vmbr1'], pve3: ['vmbr0', 'vmbr1'] },
    pciMappings: [],
    vms: [{ vmid: 100, node: 'pve1', name: 'pihole', tags: ['infra'], maxmem: 2 * GiB, status: 'running' }],
    users: [{ userid: 'root@pam', password: 'demo-only-password' }],
    tokens: [{ id: DEMO_TOKEN.tokenId, secret: DEMO_TOKEN.tokenSecret, privsep: false }],
  };
}

// A network without DHCP: every machine takes a static address from its class's pool, and a local resolver first
// (split-horizon: Omni's name resolves to its internal address there), public ones after it.
export const CONTROL_PLANE_DATA = `cores: 2
memory: 4096
disk_size: 20
storage_selector: type == "rbd"
tags: [demo]
address_pool:
  cidr: 10.20.0.0/24
  range: 10.20.0.11-10.20.0.13
  gateway: 10.20.0.1
  dns_servers: [10.20.0.53, 1.1.1.1, 1.0.0.1]
  search_domains: [lab.example.net]
`;

export const WORKER_DATA = `cores: 4
memory: 8192
disk_size: 40
storage_selector: name == "local-lvm"
network_bridge: vmbr1
vlan: 20
tags: [demo]
address_pool:
  cidr: 10.30.0.0/24
  range: 10.30.0.21-10.30.0.29
  gateway: 10.30.0.1
  dns_servers: [10.20.0.53, 1.1.1.1, 1.0.0.1]
  search_domains: [lab.example.net]
`;
