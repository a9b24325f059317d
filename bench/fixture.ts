// The simulated Proxmox cluster every benchmark and differential run uses: three nodes, local ISO storage, a
// local LVM-thin pool and shared Ceph, two bridges, one PCI mapping; realistic task durations (simulated ms).
import type { PveFixture } from '../src/sim/proxmox/index.js';
import { defaultTaskDurations } from '../src/sim/proxmox/tasks.js';

const GiB = 1024 ** 3;

export const BENCH_TOKEN = { tokenId: 'root@pam!omni', tokenSecret: '5ec7e7a0-0000-4000-8000-00000000cafe' } as const;

/**
 * Task durations in simulated milliseconds. They follow what a small PVE 8/9 cluster with SSD-backed LVM-thin
 * and Ceph shows for these tasks (qmcreate of a 1-3 disk VM 2-4 s, a ~100 MiB Talos ISO over a 100 Mbit/s
 * uplink ~10-20 s, qmstart 1-3 s, hard stop ~1 s, ACPI shutdown of Talos 3-8 s, qmdestroy with disk removal
 * 2-4 s, async config change ~0.2 s). The bench runs the simulated clock `1/timeScale` times faster.
 */
export const BENCH_TASK_DURATIONS_MS = defaultTaskDurations;

/**
 * What limits the bench cluster under parallel load (docs/simulator.md, Contention): each disk allocation of a create
 * holds its storage's lock for 0.3 s (an LVM-thin `lvcreate`), and a node runs 4 tasks at full speed (PVE's own
 * default parallelism for bulk guest tasks, datacenter.cfg `max_workers`); above that, tasks stretch.
 */
export const BENCH_CONTENTION = { storageAllocMs: 300, storageLockTimeoutMs: 10_000, nodeTaskCapacity: 4 } as const;

/** Nodes of the bench cluster. */
export const BENCH_NODES = 3;

export function benchFixture(seed = 11): PveFixture {
  return {
    seed,
    clusterName: 'bench',
    entryNode: 'pve1',
    authFailDelayMs: 0,
    // Stats cadence off: both providers see a VM's status as soon as it exists.
    statsCadenceMs: 0,
    taskDurations: { ...BENCH_TASK_DURATIONS_MS },
    contention: { ...BENCH_CONTENTION },
    downloadSizeBytes: 1024 * 1024,
    nodes: [
      { name: 'pve1', status: 'online', maxcpu: 32, maxmem: 256 * GiB, mem: 6 * GiB },
      { name: 'pve2', status: 'online', maxcpu: 32, maxmem: 256 * GiB, mem: 9 * GiB },
      { name: 'pve3', status: 'online', maxcpu: 32, maxmem: 256 * GiB, mem: 3 * GiB },
    ],
    storages: [
      { name: 'local', type: 'dir', content: ['iso', 'vztmpl', 'backup'], shared: false, total: 200 * GiB, used: 12 * GiB },
      { name: 'local-lvm', type: 'lvmthin', content: ['images', 'rootdir'], shared: false, total: 4096 * GiB, used: 40 * GiB },
      { name: 'ceph-vm', type: 'rbd', content: ['images'], shared: true, total: 16384 * GiB, used: 900 * GiB },
    ],
    bridges: { pve1: ['vmbr0', 'vmbr1'], pve2: ['vmbr0', 'vmbr1'], pve3: ['vmbr0', 'vmbr1'] },
    pciMappings: [{ id: 'gpu-a', description: 'bench GPU', nodes: ['pve1', 'pve2', 'pve3'] }],
    vms: [],
    users: [{ userid: 'root@pam', password: 'bench-only-password' }],
    tokens: [{ id: BENCH_TOKEN.tokenId, secret: BENCH_TOKEN.tokenSecret, privsep: false }],
  };
}

/** The MachineClass provider data of the benchmark's machine set (fields both providers understand). */
export const BENCH_PROVIDER_DATA = `cores: 2
sockets: 1
memory: 4096
disk_size: 20
storage_selector: name == "local-lvm"
network_bridge: vmbr0
`;
