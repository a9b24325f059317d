import { describe, expect, it } from 'vitest';
import { PveSim, ManualClock, parseFixture } from '../../src/sim/proxmox/index.js';
import { call, loadTestFixture, newSim } from './helpers.js';

describe('envelope and routing', () => {
  it('answers /version in a data envelope with PVE content type', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/version');
    expect(r.status).toBe(200);
    expect(r.raw.headers['content-type']).toBe('application/json;charset=UTF-8');
    expect(r.json?.data).toMatchObject({ release: '9.1' });
  });

  it('answers unknown paths with 501 Method ... not implemented', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/nodes/pve1/lxc');
    expect(r.status).toBe(501);
    expect(r.reason).toBe("Method 'GET /nodes/pve1/lxc' not implemented");
    expect(r.json?.message).toBe("Method 'GET /nodes/pve1/lxc' not implemented\n");
  });

  it('drops the message field under the pve8.0 profile (reason phrase only)', async () => {
    const { sim } = newSim({ versionProfile: 'pve8.0' });
    const r = await call(sim, 'GET', '/nodes/pve1/qemu/555/config');
    expect(r.status).toBe(500);
    expect(r.reason).toBe("Configuration file 'nodes/pve1/qemu-server/555.conf' does not exist");
    expect(r.json).toEqual({ data: null });
  });

  it('rejects a path parameter repeated with a different value', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/nodes/pve1/qemu', { node: 'pve2' });
    expect(r.status).toBe(400);
    expect(r.json?.errors).toEqual({ node: 'duplicate parameter (already defined in URI) with conflicting values!' });
  });

  it('rejects oversized bodies per version profile', async () => {
    const { sim } = newSim({ versionProfile: 'pve8.0' });
    const r = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { description: 'x'.repeat(70 * 1024) });
    expect(r.status).toBe(501);
    expect(r.reason).toBe('for data too large');
  });

  it('resolves localhost to the entry node and fails unknown nodes like a DNS lookup', async () => {
    const { sim } = newSim();
    const local = await call(sim, 'GET', '/nodes/localhost/qemu');
    expect((local.json?.data as { vmid: number }[]).map((v) => v.vmid)).toEqual([100]);
    const unknown = await call(sim, 'GET', '/nodes/pve9/qemu');
    expect(unknown.status).toBe(500);
    expect(unknown.reason).toMatch(/^hostname lookup 'pve9' failed/);
  });

  it('records every request with decoded params and status', async () => {
    const { sim } = newSim();
    await call(sim, 'GET', '/cluster/resources', { type: 'vm' });
    expect(sim.requests.at(-1)).toMatchObject({ method: 'GET', path: '/cluster/resources', params: { type: 'vm' }, status: 200, authid: 'root@pam!omni' });
  });
});

describe('parameter validation', () => {
  it('reports every bad parameter with PVE wording', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', {
      vmid: 'abc',
      name: 'bad_name',
      cores: 0,
      onboot: 'true',
      scsihw: 'virtio',
      net0: 'virtio,bridge=vmbr0,firewall=x',
      tags: 'ok;not!ok',
      bogus: 1,
    });
    expect(r.status).toBe(400);
    expect(r.reason).toBe('Parameter verification failed.');
    expect(r.json?.message).toBe('Parameter verification failed.\n');
    expect(r.json?.errors).toMatchObject({
      vmid: "type check ('integer') failed - got 'abc'",
      name: 'invalid format - value does not look like a valid DNS name',
      cores: 'value must have a minimum value of 1',
      onboot: "type check ('boolean') failed - got 'true'",
      scsihw: "value 'virtio' does not have a value in the enumeration 'lsi, lsi53c810, virtio-scsi-pci, virtio-scsi-single, megasas, pvscsi'",
      tags: 'invalid format - invalid characters in tag',
      bogus: 'property is not defined in schema and the schema does not allow additional properties',
    });
    expect(r.json?.errors?.['net0']).toMatch(/^invalid format - .*net0\.firewall: type check \('boolean'\) failed - got 'x'/s);
  });

  it('checks the vmid pattern and a missing vmid', async () => {
    const { sim } = newSim();
    const low = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 99 });
    expect(low.json?.errors).toEqual({ vmid: 'invalid format - value does not look like a valid VM ID' });
    const missing = await call(sim, 'POST', '/nodes/pve1/qemu', { name: 'x' });
    expect(missing.json?.errors).toEqual({ vmid: 'property is missing and it is not optional' });
  });

  it('validates drive, hostpci, agent, memory, smbios1, efidisk0 and boot property strings', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', {
      vmid: 150,
      scsi0: 'local-lvm:32,cache=fast',
      hostpci0: 'mapping=gpu-a100,pcie=maybe',
      agent: 'enabled=1,bogus=1',
      memory: '8',
      smbios1: 'uuid=not-a-uuid',
      efidisk0: 'local-lvm:1,efitype=8m',
      boot: 'order=scsi0;floppy0',
    });
    expect(r.status).toBe(400);
    expect(Object.keys(r.json?.errors ?? {}).sort()).toEqual(['agent', 'boot', 'efidisk0', 'hostpci0', 'memory', 'scsi0', 'smbios1']);
    for (const msg of Object.values(r.json?.errors ?? {})) expect(msg).toMatch(/^invalid format - /);
  });

  it('accepts JSON booleans and numbers and form-encoded 0/1', async () => {
    const { sim } = newSim();
    const json = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { onboot: true, cores: 4 });
    expect(json.status).toBe(200);
    const form = await sim.handle({
      method: 'PUT',
      path: '/api2/json/nodes/pve1/qemu/100/config',
      headers: { authorization: 'PVEAPIToken=root@pam!omni=5ec7e7a0-0000-4000-8000-00000000cafe', 'content-type': 'application/x-www-form-urlencoded' },
      body: Buffer.from('numa=1&sockets=2'),
    });
    expect(form.status).toBe(200);
    expect(sim.vm(100)?.config).toMatchObject({ onboot: '1', cores: '4', numa: '1', sockets: '2' });
  });
});

describe('cluster endpoints', () => {
  it('nextid returns the lowest free id as a JSON string without reserving it', async () => {
    const { sim } = newSim();
    const a = await call(sim, 'GET', '/cluster/nextid');
    const b = await call(sim, 'GET', '/cluster/nextid');
    expect(a.json?.data).toBe('102');
    expect(b.json?.data).toBe('102');
    const taken = await call(sim, 'GET', '/cluster/nextid', { vmid: 101 });
    expect(taken.status).toBe(400);
    expect(taken.json?.errors).toEqual({ vmid: 'VM 101 already exists' });
    expect((await call(sim, 'GET', '/cluster/nextid', { vmid: 500 })).json?.data).toBe('500');
  });

  it('nextid fails when the range is exhausted', async () => {
    const { sim } = newSim({ nextId: { lower: 100, upper: 102 } });
    const r = await call(sim, 'GET', '/cluster/nextid');
    expect(r.status).toBe(500);
    expect(r.reason).toBe('unable to get any free VMID in range [100, 102]');
  });

  it('cluster status lists the cluster and its nodes', async () => {
    const { sim } = newSim();
    const data = (await call(sim, 'GET', '/cluster/status')).json?.data as Record<string, unknown>[];
    expect(data[0]).toMatchObject({ type: 'cluster', name: 'sim-cluster', quorate: 1, nodes: 3 });
    expect(data.filter((e) => e.type === 'node').map((e) => e.name)).toEqual(['pve1', 'pve2', 'pve3']);
    expect(data.find((e) => e.name === 'pve1')).toMatchObject({ local: 1, online: 1 });
  });

  it('cluster resources lists VMs, nodes and one storage entry per node', async () => {
    const { sim } = newSim();
    const vms = (await call(sim, 'GET', '/cluster/resources', { type: 'vm' })).json?.data as Record<string, unknown>[];
    expect(vms.map((v) => v.id).sort()).toEqual(['qemu/100', 'qemu/101']);
    expect(vms.find((v) => v.vmid === 101)).toMatchObject({ node: 'pve2', tags: 'machine-request.set-a', maxmem: 8 * 1024 ** 3, status: 'stopped' });
    const storages = (await call(sim, 'GET', '/cluster/resources', { type: 'storage' })).json?.data as Record<string, unknown>[];
    expect(storages.filter((s) => s.storage === 'ceph-vm')).toHaveLength(3);
    expect(storages.find((s) => s.id === 'storage/pve2/local')).toMatchObject({ plugintype: 'dir', shared: 0, status: 'available' });
    const nodes = (await call(sim, 'GET', '/cluster/resources', { type: 'node' })).json?.data as Record<string, unknown>[];
    expect(nodes).toHaveLength(3);
    const bad = await call(sim, 'GET', '/cluster/resources', { type: 'lxc' });
    expect(bad.status).toBe(400);
  });

  it('lists PCI mappings with node checks', async () => {
    const { sim } = newSim();
    const data = (await call(sim, 'GET', '/cluster/mapping/pci', { 'check-node': 'pve1' })).json?.data as Record<string, unknown>[];
    expect(data).toHaveLength(1);
    expect(data[0]).toMatchObject({ id: 'gpu-a100', map: ['node=pve2,path=0000:41:00.0,id=10de:20b0,iommugroup=10'] });
    expect((data[0]!.checks as unknown[]).length).toBe(1);
  });
});

describe('nodes', () => {
  it('lists nodes with stats and reports node status', async () => {
    const { sim } = newSim();
    const nodes = (await call(sim, 'GET', '/nodes')).json?.data as Record<string, unknown>[];
    expect(nodes.map((n) => n.node).sort()).toEqual(['pve1', 'pve2', 'pve3']);
    const pve3 = nodes.find((n) => n.node === 'pve3')!;
    expect(pve3).toMatchObject({ status: 'online', maxmem: 64 * 1024 ** 3, mem: 4 * 1024 ** 3, maxcpu: 16 });
    const status = (await call(sim, 'GET', '/nodes/pve2/status')).json?.data as { memory: { total: number }; pveversion: string };
    expect(status.memory.total).toBe(128 * 1024 ** 3);
    expect(status.pveversion).toMatch(/^pve-manager\/9\./);
  });

  it('list order is random per request but repeats for the same seed, and can be made stable', async () => {
    const orders = async (seed: number, shuffleLists = true) => {
      const sim = new PveSim({ fixture: loadTestFixture({ seed, shuffleLists }), clock: new ManualClock() });
      const out: string[] = [];
      for (let i = 0; i < 6; i++) out.push(((await call(sim, 'GET', '/nodes')).json?.data as { node: string }[]).map((n) => n.node).join(','));
      return out;
    };
    const a = await orders(7);
    expect(await orders(7)).toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(1);
    expect(new Set(await orders(7, false))).toEqual(new Set(['pve1,pve2,pve3']));
  });
});

describe('fixtures', () => {
  it('accepts YAML and rejects VMs on unknown nodes', () => {
    const f = parseFixture('nodes:\n  - name: a1\nstorages:\n  - {name: local, type: dir, content: [iso]}\n', 'x.yaml');
    expect(f.nodes[0]!.name).toBe('a1');
    expect(() => parseFixture('{"nodes":[{"name":"a"}],"storages":[],"vms":[{"vmid":100,"node":"b"}]}', 'x.json')).toThrow(/unknown node b/);
    const sim = new PveSim({ fixture: f, clock: new ManualClock() });
    expect(sim.state.entryNode).toBe('a1');
    expect(sim.access.tokens.has('root@pam!omni')).toBe(true);
  });
});
