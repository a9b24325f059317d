import { describe, expect, it } from 'vitest';
import { call, newSim, rootTicketHeaders, taskStatus } from './helpers.js';

const GiB = 1024 ** 3;
const talosCreate = {
  vmid: 200,
  name: 'talos-abc',
  cdrom: 'local:iso/debian-12.iso',
  cpu: 'x86-64-v2-AES',
  cores: 4,
  sockets: 1,
  memory: '8192',
  scsi0: 'local-lvm:32,ssd=1,discard=on,iothread=1',
  scsihw: 'virtio-scsi-single',
  onboot: 1,
  net0: 'virtio,bridge=vmbr0,firewall=1',
  agent: 'enabled=true',
  tags: 'machine-request.Set-B;Omni',
  smbios1: 'uuid=11111111-2222-4333-8444-555555555555',
};

describe('NIC MACs', () => {
  it('keeps a given MAC as given, and refuses a multicast one like pve_verify_mac_addr', async () => {
    const { sim, clock } = newSim();
    const net0 = 'virtio=7a:eb:f9:f0:b8:7e,bridge=vmbr0,firewall=1';
    expect((await call(sim, 'POST', '/nodes/pve1/qemu', { ...talosCreate, net0 })).status).toBe(200);
    clock.advance(3000);
    const cfg = (await call(sim, 'GET', '/nodes/pve1/qemu/200/config')).json?.data as Record<string, unknown>;
    expect(cfg.net0).toBe(net0);
    const multicast = await call(sim, 'POST', '/nodes/pve1/qemu', { ...talosCreate, vmid: 201, net0: 'virtio=7b:eb:f9:f0:b8:7e,bridge=vmbr0' });
    expect(multicast.status).toBe(400);
    expect(JSON.stringify(multicast.json)).toMatch(/unicast MAC/);
  });
});

describe('two-phase create', () => {
  it('holds only lock=create while qmcreate runs, then writes the full config', async () => {
    const { sim, clock } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', talosCreate);
    expect(r.status).toBe(200);
    const upid = r.json?.data as string;
    expect(upid).toMatch(/^UPID:pve1:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:qmcreate:200:root@pam!omni:$/);
    expect(sim.vm(200)?.config).toEqual({ lock: 'create' });
    const listed = (await call(sim, 'GET', '/nodes/pve1/qemu')).json?.data as Record<string, unknown>[];
    expect(listed.find((v) => v.vmid === 200)).toMatchObject({ name: 'VM 200', lock: 'create', maxmem: 512 * 1024 * 1024 });
    expect(listed.find((v) => v.vmid === 200)).not.toHaveProperty('tags');
    expect(await taskStatus(sim, upid)).toMatchObject({ status: 'running', type: 'qmcreate', user: 'root@pam', tokenid: 'omni' });
    clock.advance(2999);
    expect(sim.vm(200)?.config).toEqual({ lock: 'create' });
    clock.advance(1);
    expect(await taskStatus(sim, upid)).toMatchObject({ status: 'stopped', exitstatus: 'OK' });
    const cfg = (await call(sim, 'GET', '/nodes/pve1/qemu/200/config')).json?.data as Record<string, unknown>;
    expect(cfg).toMatchObject({
      name: 'talos-abc',
      boot: 'order=scsi0;ide2;net0',
      cores: 4,
      memory: '8192',
      onboot: 1,
      ide2: 'local:iso/debian-12.iso,media=cdrom,size=627M',
      scsi0: 'local-lvm:vm-200-disk-0,discard=on,iothread=1,size=32G,ssd=1',
      tags: 'machine-request.set-b;omni',
      smbios1: 'uuid=11111111-2222-4333-8444-555555555555',
      agent: 'enabled=true',
    });
    expect(cfg).not.toHaveProperty('lock');
    expect(cfg.net0).toMatch(/^virtio=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},bridge=vmbr0,firewall=1$/);
    expect(cfg.vmgenid).toMatch(/^[0-9a-f-]{36}$/);
    expect(cfg.meta).toMatch(/^creation-qemu=[\d.]+,ctime=\d+$/);
    expect(cfg.digest).toMatch(/^[0-9a-f]{40}$/);
    expect(sim.volumes('local-lvm', 'pve1').map((v) => v.volid)).toContain('local-lvm:vm-200-disk-0');
    const log = (await call(sim, 'GET', `/nodes/pve1/tasks/${encodeURIComponent(upid)}/log`)).json!;
    expect(log.data).toEqual(expect.arrayContaining([{ n: expect.any(Number), t: 'TASK OK' }]));
    expect(log.total).toBe((log.data as unknown[]).length);
  });

  it('generates an smbios1 uuid when missing and names file-based disks <id>/vm-<id>-disk-<n>.qcow2', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 201, scsi0: 'nfs-iso:10', scsi1: 'nfs-iso:5', efidisk0: 'local-lvm:1,efitype=4m', bios: 'ovmf' });
    await sim.settle();
    const cfg = sim.vm(201)!.config;
    expect(cfg.smbios1).toMatch(/^uuid=[0-9a-f-]{36}$/);
    expect(cfg.scsi0).toBe('nfs-iso:201/vm-201-disk-0.qcow2,size=10G');
    expect(cfg.scsi1).toBe('nfs-iso:201/vm-201-disk-1.qcow2,size=5G');
    expect(cfg.efidisk0).toBe('local-lvm:vm-201-disk-0,efitype=4m,size=4M');
    expect(cfg.boot).toBe('order=scsi0');
  });

  it('rejects synchronously: existing vmid, iso without media=cdrom, storage without images, missing storage', async () => {
    const { sim } = newSim();
    const exists = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 101 });
    expect(exists.reason).toBe("unable to create VM 101 - VM 101 already exists on node 'pve2'");
    const iso = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 202, ide2: 'local:iso/debian-12.iso' });
    expect(iso.json?.errors).toEqual({ ide2: "explicit 'media=cdrom' is required for iso images" });
    const noImages = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 202, scsi0: 'local:32' });
    expect(noImages.json?.errors).toEqual({ storage: "storage 'local' does not support vm images" });
    const missing = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 202, scsi0: 'fast:32' });
    expect(missing.reason).toBe("storage 'fast' does not exist");
    sim.setQuorate(false);
    expect((await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 202 })).reason).toBe('cluster not ready - no quorum?');
    expect(sim.vm(202)).toBeUndefined();
  });

  it('a create on a locked (creating) vmid fails with the lock message', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 203 });
    const again = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 203 });
    expect(again.reason).toBe('unable to create VM 203 - VM is locked (create)');
  });

  it('when disk allocation fails the task fails, the VM vanishes and its disks are freed', async () => {
    const { sim } = newSim();
    sim.fillStorage('local-lvm', 'pve1', 40 * GiB);
    const upid = (await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 204, scsi0: 'local-lvm:32', scsi1: 'local-lvm:32' })).json?.data as string;
    await sim.settle();
    const st = await taskStatus(sim, upid);
    expect(st.status).toBe('stopped');
    expect(st.exitstatus).toMatch(/not enough free space on storage 'local-lvm'/);
    expect(sim.vm(204)).toBeUndefined();
    expect(sim.volumes('local-lvm', 'pve1').some((v) => v.vmid === 204)).toBe(false);
    const r = await call(sim, 'GET', '/nodes/pve1/qemu/204/status/current');
    expect(r.reason).toBe("Configuration file 'nodes/pve1/qemu-server/204.conf' does not exist");
  });

  it('accounts disk sizes against storage capacity', async () => {
    const { sim } = newSim();
    const before = ((await call(sim, 'GET', '/nodes/pve1/storage', { storage: 'ceph-vm' })).json?.data as { avail: number }[])[0]!.avail;
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 205, scsi0: 'ceph-vm:100' });
    await sim.settle();
    const after = ((await call(sim, 'GET', '/nodes/pve3/storage', { storage: 'ceph-vm' })).json?.data as { avail: number }[])[0]!.avail;
    expect(before - after).toBe(100 * GiB);
  });
});

describe('config updates', () => {
  it('PUT applies synchronously; POST runs a qmconfig task; digest and lock are enforced', async () => {
    const { sim } = newSim();
    const digest = ((await call(sim, 'GET', '/nodes/pve1/qemu/100/config')).json?.data as { digest: string }).digest;
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 8, digest })).status).toBe(200);
    expect(sim.vm(100)!.config.cores).toBe('8');
    const stale = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 2, digest });
    expect(stale.reason).toBe('checksum mismatch (file change by other user?)');
    const upid = (await call(sim, 'POST', '/nodes/pve1/qemu/100/config', { tags: 'b;A', ide0: 'local:iso/debian-12.iso,media=cdrom' })).json?.data as string;
    expect(upid).toMatch(/:qmconfig:100:/);
    expect(sim.vm(100)!.config.tags).toBe('infra');
    await sim.settle();
    expect(sim.vm(100)!.config).toMatchObject({ tags: 'a;b', ide0: 'local:iso/debian-12.iso,media=cdrom,size=627M' });
    sim.injectLock(100, 'backup');
    const locked = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 2 });
    expect(locked.reason).toBe('VM is locked (backup)');
    // skiplock is for root@pam itself, not for its tokens.
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 2, skiplock: 1 })).json?.errors).toEqual({
      skiplock: 'Only root may use this option.',
    });
    const root = await rootTicketHeaders(sim);
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 2, skiplock: 1 }, root)).status).toBe(200);
  });

  it('reports no options, bad boot order and a balloon above memory', async () => {
    const { sim } = newSim();
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', {})).reason).toBe('no options specified');
    const boot = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { boot: 'order=scsi0;ide3' });
    expect(boot.json?.errors).toEqual({ boot: "invalid bootorder: device 'ide3' does not exist'" });
    const upid = (await call(sim, 'POST', '/nodes/pve1/qemu/100/config', { boot: 'order=virtio0' })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe("invalid bootorder: device 'virtio0' does not exist'");
    const balloon = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { balloon: 4096 });
    expect(balloon.reason).toBe('balloon value too large (must be smaller than assigned memory)');
  });

  it('background_delay returns null when the task finishes in time', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu/100/config', { description: 'hi', background_delay: 5 });
    expect(r.json?.data).toBeNull();
    expect(sim.vm(100)!.config.description).toBe('hi');
  });
});

describe('power and destroy', () => {
  it('start, status/current, shutdown, stop', async () => {
    const { sim } = newSim();
    const start = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data as string;
    expect(start).toMatch(/^UPID:pve2:.*:qmstart:101:/);
    await sim.settle();
    const cur = (await call(sim, 'GET', '/nodes/pve2/qemu/101/status/current')).json?.data as Record<string, unknown>;
    expect(cur).toMatchObject({ status: 'running', qmpstatus: 'running', ha: { managed: 0 } });
    const again = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, again)).exitstatus).toBe('VM 101 already running');
    sim.shutdownIgnored.add(101);
    const sd = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/shutdown')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, sd)).exitstatus).toBe('VM quit/powerdown failed - got timeout');
    const forced = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/shutdown', { forceStop: 1 })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, forced)).exitstatus).toBe('OK');
    expect(sim.vm(101)!.running).toBe(false);
    const stop = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/stop')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, stop)).exitstatus).toBe('OK');
  });

  it('start fails in the task for a missing bridge, a mapping not on the node, pcie without q35, a missing ISO', async () => {
    const { sim } = newSim();
    const cases: Array<[Record<string, string | number>, string]> = [
      [{ net0: 'virtio,bridge=vmbr9' }, "bridge 'vmbr9' does not exist"],
      [{ hostpci0: 'mapping=gpu-a100' }, "PCI device mapping not found for 'gpu-a100'"],
      [{ ide2: 'nfs-iso:iso/gone.iso,media=cdrom' }, "volume 'nfs-iso:iso/gone.iso' does not exist"],
    ];
    let vmid = 210;
    for (const [extra, error] of cases) {
      await call(sim, 'POST', '/nodes/pve1/qemu', { vmid, ...extra });
      await sim.settle();
      const upid = (await call(sim, 'POST', `/nodes/pve1/qemu/${vmid}/status/start`)).json?.data as string;
      await sim.settle();
      expect((await taskStatus(sim, upid)).exitstatus).toBe(error);
      vmid++;
    }
    await call(sim, 'POST', '/nodes/pve2/qemu', { vmid: 220, hostpci0: 'mapping=gpu-a100,pcie=1' });
    await sim.settle();
    const upid = (await call(sim, 'POST', '/nodes/pve2/qemu/220/status/start')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe('q35 machine model is not enabled');
  });

  it('start and stop during create fail with VM is locked (create); stop of a missing VM still gets a UPID', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 230 });
    const start = (await call(sim, 'POST', '/nodes/pve1/qemu/230/status/start')).json?.data as string;
    const stop = (await call(sim, 'POST', '/nodes/pve1/qemu/999/status/stop')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, start)).exitstatus).toBe('VM is locked (create)');
    expect((await taskStatus(sim, stop)).exitstatus).toBe("unable to find configuration file for VM 999 on node 'pve1'");
  });

  it('start=1 on create boots the VM when the task ends', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 231, start: 1, scsi0: 'local-lvm:4' });
    await sim.settle();
    expect(sim.vm(231)!.running).toBe(true);
  });

  it('destroy refuses a running or protected VM and removes only its own disks, never ISOs', async () => {
    const { sim } = newSim();
    expect((await call(sim, 'DELETE', '/nodes/pve1/qemu/100')).reason).toBe('VM 100 is running - destroy failed');
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 240, scsi0: 'local-lvm:8', cdrom: 'local:iso/debian-12.iso' });
    await sim.settle();
    await call(sim, 'PUT', '/nodes/pve1/qemu/240/config', { protection: 1 });
    expect((await call(sim, 'DELETE', '/nodes/pve1/qemu/240')).reason).toBe("can't remove VM 240 - protection mode enabled");
    await call(sim, 'PUT', '/nodes/pve1/qemu/240/config', { delete: 'protection' });
    // An orphan disk carrying the vmid, not referenced by the config.
    sim.state.allocateDisk('local-lvm', 'pve1', 240, GiB);
    const upid = (await call(sim, 'DELETE', '/nodes/pve1/qemu/240', { purge: 1 })).json?.data as string;
    expect(sim.vm(240)!.config.lock).toBe('destroyed');
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe('OK');
    expect(sim.vm(240)).toBeUndefined();
    expect(sim.volumes('local-lvm', 'pve1').map((v) => v.volid)).toEqual(['local-lvm:vm-100-disk-0', 'local-lvm:vm-240-disk-1']);
    expect(sim.volumes('local', 'pve1').map((v) => v.volid)).toContain('local:iso/debian-12.iso');
  });

  it('destroy-unreferenced-disks also removes orphans; a locked VM fails in the task', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 241, scsi0: 'local-lvm:8' });
    await sim.settle();
    sim.state.allocateDisk('local-lvm', 'pve1', 241, GiB);
    sim.injectLock(241, 'migrate');
    const locked = (await call(sim, 'DELETE', '/nodes/pve1/qemu/241')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, locked)).exitstatus).toBe('VM is locked (migrate)');
    expect(sim.vm(241)).toBeDefined();
    sim.injectLock(241, undefined);
    await call(sim, 'DELETE', '/nodes/pve1/qemu/241', { 'destroy-unreferenced-disks': 1 });
    await sim.settle();
    expect(sim.volumes('local-lvm', 'pve1').some((v) => v.vmid === 241)).toBe(false);
  });

  it('status of a VM on another node says does not exist', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/nodes/pve1/qemu/101/status/current');
    expect(r.status).toBe(500);
    expect(r.reason).toBe("Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist");
  });
});
