// The simulator's contention model: the storage allocation lock of VM creates, the node slowdown under parallel
// tasks, and overlapping downloads of one file (docs/simulator.md, Contention).
import { describe, expect, it } from 'vitest';
import { call, newSim, taskStatus } from './helpers.js';

function create(vmid: number, disk: string) {
  return { vmid, name: `vm-${vmid}`, cores: 1, memory: '1024', scsi0: `${disk}:8` };
}

async function startCreate(sim: ReturnType<typeof newSim>['sim'], node: string, vmid: number, disk: string): Promise<string> {
  const r = await call(sim, 'POST', `/nodes/${node}/qemu`, create(vmid, disk));
  expect(r.status, JSON.stringify(r.json)).toBe(200);
  return r.json?.data as string;
}

describe('storage allocation lock', () => {
  it('serialises the allocations of creates on one local storage of one node, not across nodes', async () => {
    const { sim } = newSim({ contention: { storageAllocMs: 1000 } });
    await startCreate(sim, 'pve1', 301, 'local-lvm');
    await startCreate(sim, 'pve1', 302, 'local-lvm');
    await startCreate(sim, 'pve2', 303, 'local-lvm');
    const took = (vmid: number) => {
      const t = sim.tasks({ vmid })[0]!;
      return t.dueAtMs - t.startedAtMs;
    };
    // 3 s create; the second on pve1/local-lvm waits 1 s for the first one's allocation.
    expect([took(301), took(302), took(303)]).toEqual([3000, 4000, 3000]);
  });

  it('takes a shared storage lock cluster-wide', async () => {
    const { sim } = newSim({ contention: { storageAllocMs: 1000 } });
    await startCreate(sim, 'pve1', 311, 'ceph-vm');
    await startCreate(sim, 'pve2', 312, 'ceph-vm');
    await startCreate(sim, 'pve3', 313, 'ceph-vm');
    expect([311, 312, 313].map((vmid) => sim.tasks({ vmid })[0]!).map((t) => t.dueAtMs - t.startedAtMs)).toEqual([3000, 4000, 5000]);
  });

  it('fails a create whose allocation waits past the lock timeout, as PVE does, and removes the half-created VM', async () => {
    const { sim, clock } = newSim({ contention: { storageAllocMs: 6000, storageLockTimeoutMs: 10_000 } });
    await startCreate(sim, 'pve1', 321, 'local-lvm');
    await startCreate(sim, 'pve1', 322, 'local-lvm');
    const late = await startCreate(sim, 'pve1', 323, 'local-lvm');
    const shared = [await startCreate(sim, 'pve1', 324, 'ceph-vm'), await startCreate(sim, 'pve2', 325, 'ceph-vm'), await startCreate(sim, 'pve3', 326, 'ceph-vm')];
    clock.advance(20_000);
    await sim.settle();
    expect((await taskStatus(sim, late)).exitstatus).toBe("can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout");
    expect((await taskStatus(sim, shared[2]!)).exitstatus).toBe("cfs-lock 'storage-ceph-vm' error: got lock request timeout");
    expect((await taskStatus(sim, shared[1]!)).exitstatus).toBe('OK');
    expect(sim.vm(323)).toBeUndefined();
    expect(sim.vm(322)?.config['scsi0']).toMatch(/^local-lvm:vm-322-disk-0/);
  });

  it('is off with storageAllocMs 0', async () => {
    const { sim } = newSim({ contention: { storageAllocMs: 0 } });
    await startCreate(sim, 'pve1', 331, 'local-lvm');
    await startCreate(sim, 'pve1', 332, 'local-lvm');
    expect(sim.tasks({ vmid: 332 })[0]!.dueAtMs - sim.tasks({ vmid: 332 })[0]!.startedAtMs).toBe(3000);
  });
});

describe('node slowdown', () => {
  it('stretches a task started above the node capacity by load / capacity; other nodes are not affected', async () => {
    const { sim } = newSim({ contention: { nodeTaskCapacity: 2, storageAllocMs: 0 } });
    for (const vmid of [341, 342, 343, 344]) await startCreate(sim, 'pve1', vmid, 'local-lvm');
    await startCreate(sim, 'pve2', 345, 'local-lvm');
    const took = [341, 342, 343, 344, 345].map((vmid) => sim.tasks({ vmid })[0]!).map((t) => t.dueAtMs - t.startedAtMs);
    expect(took).toEqual([3000, 3000, 4500, 6000, 3000]);
  });

  it('does not count or slow a graceful shutdown (it waits for the guest)', async () => {
    const { sim, clock } = newSim({ contention: { nodeTaskCapacity: 1, storageAllocMs: 0 } });
    for (const vmid of [361, 362]) await startCreate(sim, 'pve1', vmid, 'local-lvm');
    clock.advance(10_000);
    await sim.settle();
    for (const vmid of [361, 362]) expect((await call(sim, 'POST', `/nodes/pve1/qemu/${vmid}/status/start`)).status).toBe(200);
    clock.advance(10_000);
    await sim.settle();
    for (const vmid of [361, 362]) expect((await call(sim, 'POST', `/nodes/pve1/qemu/${vmid}/status/shutdown`)).status).toBe(200);
    await startCreate(sim, 'pve1', 363, 'local-lvm');
    const took = (t: { dueAtMs: number; startedAtMs: number }) => t.dueAtMs - t.startedAtMs;
    expect(sim.tasks({ type: 'qmshutdown' }).map(took)).toEqual([5000, 5000]);
    expect(took(sim.tasks({ vmid: 363 })[0]!)).toBe(3000);
    // The second start ran while the first one did: stretched by 2 / 1.
    expect(sim.tasks({ type: 'qmstart' }).map(took)).toEqual([2000, 4000]);
  });

  it('is off by default', async () => {
    const { sim } = newSim({ contention: { storageAllocMs: 0 } });
    for (const vmid of [351, 352, 353, 354, 355, 356]) await startCreate(sim, 'pve1', vmid, 'local-lvm');
    expect(new Set(sim.tasks({ type: 'qmcreate' }).map((t) => t.dueAtMs - t.startedAtMs))).toEqual(new Set([3000]));
  });
});

describe('overlapping downloads of one file to one storage', () => {
  const url = 'https://factory.talos.dev/image/abc/v1.11.5/nocloud-amd64.iso';
  const dl = { content: 'iso', filename: 'talos.iso', url };

  it('both succeed (each writes its own temporary file, the later rename wins); one started after the file exists fails at once', async () => {
    const { sim, clock } = newSim({ downloadSizeBytes: 1000 });
    const first = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', dl)).json?.data as string;
    clock.advance(5_000);
    const second = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', dl)).json?.data as string;
    clock.advance(20_000);
    await sim.settle();
    expect((await taskStatus(sim, first)).exitstatus).toBe('OK');
    expect((await taskStatus(sim, second)).exitstatus).toBe('OK');
    expect(sim.volumes('local', 'pve1').filter((v) => v.volid === 'local:iso/talos.iso')).toHaveLength(1);
    const third = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', dl)).json?.data as string;
    await sim.settle();
    const status = await taskStatus(sim, third);
    expect(status['status']).toBe('stopped');
    expect(status['exitstatus']).toBe("refusing to override existing file '/var/lib/vz/template/iso/talos.iso'");
  });
});
