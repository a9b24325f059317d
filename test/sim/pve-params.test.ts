// The simulator checks VM parameters the way PVE does, in both directions: it refuses what qemu-server refuses (cpu
// models and flags, startup order, missing pools, tag rules) and accepts what PVE accepts (numa0, ipconfig0, rng0,
// affinity, hotplug, watchdog, keyboard, `cores=+2`, ...). Texts are PVE's.
import { describe, expect, it } from 'vitest';
import { VM_CPU_FLAGS } from '../../src/proxmox/cpuModels.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { call, newSim, omniToken, rootTicketHeaders, taskStatus } from './helpers.js';

const base = { vmid: 300, name: 'p', memory: '2048', scsi0: 'local-lvm:8', net0: 'virtio,bridge=vmbr0' };
const FLAGS_TEXT = `invalid format - VM-specific CPU flags must be a subset of: ${VM_CPU_FLAGS.join(', ')}`;

async function create(params: Record<string, string | number>, auth?: string | Record<string, string>, overrides = {}) {
  const { sim, clock } = newSim(overrides);
  const r = await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, ...params }, auth);
  return { sim, clock, r };
}

describe('refuses what PVE refuses', () => {
  it.each([
    ['unknown model', 'Foo', "invalid format - Built-in cputype 'Foo' is not defined (missing 'custom-' prefix?)"],
    ['model names are case-sensitive', 'HOST', "invalid format - Built-in cputype 'HOST' is not defined (missing 'custom-' prefix?)"],
    ['reported-model in a VM config', 'host,reported-model=EPYC', "invalid format - Property 'reported-model' not allowed in VM-specific CPU config."],
    ['flag outside the VM list (+avx2)', 'host,flags=+avx2', FLAGS_TEXT],
    ['flag outside the VM list (+vmx)', 'x86-64-v2-AES,flags=+aes;+vmx', FLAGS_TEXT],
    ['unknown custom model', 'custom-nope', "invalid format - Custom cputype 'nope' not found"],
  ])('cpu: %s', async (_name, cpu, text) => {
    const { sim, r } = await create({ cpu });
    expect(r.status).toBe(400);
    expect(r.json?.errors).toEqual({ cpu: text });
    expect(sim.vm(300)).toBeUndefined();
  });

  it.each([
    ['startup', 'order=x', 'invalid format - unable to parse startup options'],
    ['startup', 'order=1,wait=3', 'invalid format - unable to parse startup options'],
    ['cores', '2.5', "type check ('integer') failed - got '2.5'"],
    ['cores', '0', 'value must have a minimum value of 1'],
    ['numa0', 'memory=1024', 'invalid format - format error\nnuma0.cpus: property is missing and it is not optional'],
    ['ipconfig0', 'gw=192.0.2.1', "invalid format - format error\nipconfig0.ip: missing property - 'gw' requires this property"],
    ['ipconfig0', 'ip=192.0.2.10', 'invalid format - format error\nipconfig0.ip: invalid format - value does not look like a valid ipv4 network configuration'],
    ['rng0', 'source=/dev/zero', "invalid format - format error\nrng0.source: value '/dev/zero' does not have a value in the enumeration '/dev/urandom, /dev/random, /dev/hwrng'"],
    ['hotplug', 'network,bogus', 'invalid format - unable to parse hotplug option'],
    ['watchdog', 'model=foo', "invalid format - format error\nwatchdog.model: value 'foo' does not have a value in the enumeration 'i6300esb, ib700'"],
    ['keyboard', 'xx', expect.stringMatching(/^value 'xx' does not have a value in the enumeration 'de, de-ch, /)],
    ['cpulimit', '129', 'value must have a maximum value of 128'],
    ['vga', 'STD', "invalid format - format error\nvga.type: value 'STD' does not have a value in the enumeration 'cirrus, qxl, qxl2, qxl3, qxl4, none, serial0, serial1, serial2, serial3, std, virtio, virtio-gl, vmware'"],
    ['vga', 'std,memory=513', 'invalid format - format error\nvga.memory: value must have a maximum value of 512'],
    ['vga', 'std,clipboard=spice', "invalid format - format error\nvga.clipboard: value 'spice' does not have a value in the enumeration 'vnc'"],
  ])('%s=%s', async (key, value, text) => {
    const { r } = await create({ [key]: value });
    expect(r.status).toBe(400);
    expect(r.json?.errors).toEqual({ [key]: text });
  });

  it('affinity: root@pam only (it is in none of qemu-server option groups), and parsed as a cpuset', async () => {
    const token = await create({ affinity: '0-3' });
    expect(token.r.status).toBe(500);
    expect(token.r.reason).toBe("only root can set 'affinity' config");
    const { sim } = newSim();
    const bad = await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, affinity: '3-1' }, await rootTicketHeaders(sim));
    expect(bad.status).toBe(400);
    expect(bad.json?.errors).toEqual({ affinity: 'invalid format - unable to parse cpuset option' });
  });

  it('startup needs Sys.Modify on / besides VM.Config.Options', async () => {
    const { r } = await create({ startup: 'order=1' }, omniToken);
    expect(r.status).toBe(403);
    expect(r.reason).toBe('Permission check failed (/, Sys.Modify)');
  });

  it('a pool that does not exist', async () => {
    const { sim, r } = await create({ pool: 'nope' }, omniToken, { pools: ['omni'] });
    expect(r.status).toBe(403);
    expect(r.reason).toBe("Permission check failed (pool 'nope' does not exist)");
    expect(sim.vm(300)).toBeUndefined();
  });

  it('tags the datacenter reserves or does not allow fail the create task (assert_tag_permissions)', async () => {
    for (const [datacenter, tags, tag] of [
      [{ 'registered-tags': ['prod'] }, 'ok;prod', 'prod'],
      [{ 'user-tag-access': { 'user-allow': 'none' as const, 'user-allow-list': ['ok'] } }, 'ok', 'ok'],
      [{ 'user-tag-access': { 'user-allow': 'list' as const, 'user-allow-list': ['ok'] } }, 'ok;team-a', 'team-a'],
    ] as const) {
      const { sim, clock, r } = await create({ tags }, omniToken, { datacenter });
      expect(r.status).toBe(200);
      clock.advance(5000);
      expect(await taskStatus(sim, r.json?.data as string)).toMatchObject({
        status: 'stopped',
        exitstatus: `Permission check failed (/, Sys.Modify for modifying tag '${tag}')`,
      });
      expect(sim.vm(300)).toBeUndefined();
    }
    // Sys.Modify on / (here root's token) may set any tag.
    const root = await create({ tags: 'prod' }, undefined, { datacenter: { 'registered-tags': ['prod'] } });
    root.clock.advance(5000);
    expect(await taskStatus(root.sim, root.r.json?.data as string)).toMatchObject({ exitstatus: 'OK' });
  });
});

describe('accepts what PVE accepts', () => {
  it.each([
    ['numa0', 'cpus=0-1;4,hostnodes=0,memory=1024,policy=bind'],
    ['numa7', 'cpus=0'],
    ['ipconfig0', 'ip=dhcp'],
    ['ipconfig31', 'ip=192.0.2.10/24,gw=192.0.2.1,ip6=auto'],
    ['ipconfig1', 'ip6=2001:db8::10/64,gw6=2001:db8::1'],
    ['rng0', 'source=/dev/urandom,max_bytes=1024,period=1000'],
    ['rng0', '/dev/random'],
    ['hotplug', 'network,disk,usb'],
    ['hotplug', '0'],
    ['watchdog', 'model=i6300esb,action=reset'],
    ['watchdog', 'ib700'],
    ['keyboard', 'de'],
    ['startup', 'order=1,up=30,down=60'],
    ['startup', '2'],
    ['cores', '+2'],
    ['sockets', '+1'],
    ['vga', 'qxl,memory=32'],
    ['cpulimit', '1.5'],
    ['cpu', 'host,flags=+aes;-pcid;+nested-virt,hidden=1,phys-bits=host'],
    ['cpu', 'x86-64-v3'],
    ['cpu', 'cortex-a72'],
  ])('%s=%s', async (key, value) => {
    // root@pam, as startup needs Sys.Modify on /
    const { sim, clock } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, [key]: value }, await rootTicketHeaders(sim));
    expect(r.json?.errors).toBeUndefined();
    expect(r.status).toBe(200);
    clock.advance(5000);
    expect(await taskStatus(sim, r.json?.data as string)).toMatchObject({ exitstatus: 'OK' });
    expect(sim.vm(300)?.config[key]).toBe(key === 'cores' || key === 'sockets' ? String(Number(value)) : value);
  });

  it('affinity as root@pam', async () => {
    const { sim, clock } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, affinity: '0-3,8' }, await rootTicketHeaders(sim));
    expect(r.status).toBe(200);
    clock.advance(5000);
    expect(sim.vm(300)?.config.affinity).toBe('0-3,8');
  });

  it('an existing pool; a custom CPU model that exists', async () => {
    const { sim, clock, r } = await create({ pool: 'omni', cpu: 'custom-epyc-lite' }, undefined, { pools: ['omni'], customCpuModels: ['epyc-lite'] });
    expect(r.status).toBe(200);
    clock.advance(5000);
    expect(sim.vm(300)?.config.cpu).toBe('custom-epyc-lite');
    const pool = await call(sim, 'GET', '/pools', { poolid: 'omni' });
    expect(pool.json?.data).toEqual([{ poolid: 'omni', members: [{ id: 'qemu/300', type: 'qemu', vmid: 300, node: 'pve1' }] }]);
  });
});

describe('what the provider reads before it writes', () => {
  it('GET /pools?poolid= tells whether a pool exists; without poolid, the pools the caller may audit', async () => {
    const { sim } = newSim({ pools: ['omni', { poolid: 'lab', comment: 'test' }] });
    const missing = await call(sim, 'GET', '/pools', { poolid: 'nope' }, omniToken);
    expect(missing.status).toBe(500);
    expect(missing.reason).toBe("pool 'nope' does not exist");
    expect((await call(sim, 'GET', '/pools', {}, omniToken)).json?.data).toEqual([]); // no Pool.Audit
    const all = (await call(sim, 'GET', '/pools')).json?.data as Array<{ poolid: string }>;
    expect(all.map((p) => p.poolid).sort()).toEqual(['lab', 'omni']);
    sim.setVersionProfile('pve8.0');
    expect((await call(sim, 'GET', '/pools', { poolid: 'omni' })).status).toBe(400);
  });

  it('GET /cluster/options needs Sys.Audit on / and returns the tag rules', async () => {
    const { sim } = newSim({ datacenter: { 'registered-tags': ['prod'], 'user-tag-access': { 'user-allow': 'list', 'user-allow-list': ['a'] } } });
    const r = await call(sim, 'GET', '/cluster/options', {}, omniToken);
    expect(r.json?.data).toEqual({ 'registered-tags': ['prod'], 'user-tag-access': { 'user-allow': 'list', 'user-allow-list': ['a'] } });
  });

  it('GET /nodes/{node}/capabilities/qemu/cpu lists the node models, custom ones only with Sys.Audit on /nodes', async () => {
    const { sim } = newSim({ customCpuModels: ['mine'] });
    const names = ((await call(sim, 'GET', '/nodes/pve1/capabilities/qemu/cpu')).json?.data as Array<{ name: string; custom: number }>).map((m) => m.name);
    expect(names).toEqual(expect.arrayContaining(['host', 'x86-64-v2-AES', 'EPYC-Genoa', 'qemu64', 'custom-mine']));
    expect(names).not.toContain('cortex-a72');
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/vms', 'omni@pve!provider', { privs: ['VM.Audit'] });
    const unprivileged = ((await call(sim, 'GET', '/nodes/pve1/capabilities/qemu/cpu', {}, omniToken)).json?.data as Array<{ name: string }>).map((m) => m.name);
    expect(unprivileged).not.toContain('custom-mine');
  });

  it('counts write calls (not GETs, not logins)', async () => {
    const { sim } = newSim();
    await rootTicketHeaders(sim);
    await call(sim, 'GET', '/nodes');
    expect(writeCalls(sim)).toEqual([]);
    await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, cpu: 'Foo' });
    expect(writeCalls(sim).map((r) => `${r.method} ${r.path} ${r.status}`)).toEqual(['POST /nodes/pve1/qemu 400']);
  });
});

describe('start refuses what qemu-server refuses at start', () => {
  it.each([
    [{ cores: 17 }, 'MAX 16 vcpus allowed per VM on this node'],
    [{ cores: 4, sockets: 5 }, 'MAX 16 vcpus allowed per VM on this node'],
    [{ hugepages: '2' }, 'numa needs to be enabled to use hugepages'],
  ])('%j on pve3 (16 CPUs)', async (params, text) => {
    const { sim, clock } = newSim();
    const auth = await rootTicketHeaders(sim);
    const created = await call(sim, 'POST', '/nodes/pve3/qemu', { ...base, ...params }, auth);
    expect(created.status).toBe(200);
    clock.advance(5000);
    const start = await call(sim, 'POST', '/nodes/pve3/qemu/300/status/start', {}, auth);
    clock.advance(5000);
    expect(await taskStatus(sim, start.json?.data as string)).toMatchObject({ status: 'stopped', exitstatus: text });
    expect(sim.vm(300)?.running).toBe(false);
  });
});

describe('usb[n] as qemu-server takes it (USB.pm pve-qm-usb, API2/Qemu.pm check_usb_perm)', () => {
  it('a mapping, by the least-privilege token (Mapping.Use on /mapping/usb/<id>), in usb0..usb13', async () => {
    const { sim, clock, r } = await create({ usb0: 'mapping=rtl-sdr,usb3=1', usb13: 'mapping=zigbee' }, omniToken);
    expect(r.json?.errors).toBeUndefined();
    expect(r.status).toBe(200);
    clock.advance(5000);
    expect(sim.vm(300)?.config).toMatchObject({ usb0: 'mapping=rtl-sdr,usb3=1', usb13: 'mapping=zigbee' });
  });

  it.each([
    ['usb14 is no parameter (14 slots)', { usb14: 'mapping=rtl-sdr' }, 400, 'usb14', 'property is not defined in schema and the schema does not allow additional properties'],
    ['a mapping id that is not a config id', { usb0: 'mapping=1sdr' }, 400, 'usb0', "invalid format - format error\nusb0.mapping: invalid format - invalid configuration ID '1sdr'"],
    ['an unknown option', { usb0: 'mapping=rtl-sdr,usb4=1' }, 400, 'usb0', 'invalid format - invalid key in comma-separated list property: usb4'],
  ])('%s', async (_name, params, status, key, text) => {
    const { sim, r } = await create(params, omniToken);
    expect(r.status).toBe(status);
    expect(r.json?.errors).toEqual({ [key]: text });
    expect(writeCalls(sim).length).toBe(1); // the refused POST itself
    expect(sim.vm(300)).toBeUndefined();
  });

  it('a real host device is root\'s; neither host nor mapping is refused; a mapping needs Mapping.Use on it', async () => {
    const host = await create({ usb0: '0bda:2838' }, omniToken);
    expect(host.r.status).toBe(500);
    expect(host.r.reason).toBe("only root can set 'usb0' config for real devices");
    const neither = await create({ usb0: 'usb3=1' }, omniToken);
    expect(neither.r.status).toBe(500);
    expect(neither.r.reason).toBe("either 'host' or 'mapping' must be set.");
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['VM.Allocate', 'VM.Config.HWType', 'VM.Config.Disk', 'VM.Config.Network', 'VM.Config.Memory', 'VM.Config.Options', 'Datastore.AllocateSpace', 'SDN.Use'] });
    const noUse = await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, usb0: 'mapping=rtl-sdr' }, omniToken);
    expect(noUse.status).toBe(403);
    expect(noUse.reason).toBe('Permission check failed (/mapping/usb/rtl-sdr, Mapping.Use)');
  });

  it('GET /cluster/mapping/usb lists the mappings the caller may audit or use, one map entry per node', async () => {
    const { sim } = newSim();
    const list = (await call(sim, 'GET', '/cluster/mapping/usb', {}, omniToken)).json?.data as Array<{ id: string; map: string[] }>;
    expect(list.find((m) => m.id === 'rtl-sdr')?.map).toEqual(['node=pve1,id=0bda:2838', 'node=pve2,id=0bda:2838,path=1-2']);
    expect(list.map((m) => m.id).sort()).toEqual(['rtl-sdr', 'zigbee']);
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/vms', 'omni@pve!provider', { privs: ['VM.Audit'] });
    expect((await call(sim, 'GET', '/cluster/mapping/usb', {}, omniToken)).json?.data).toEqual([]);
  });

  it.each([
    ['a mapping without an entry for the node', 'pve1', { usb0: 'mapping=zigbee' }, "USB device mapping not found for 'zigbee'"],
    ['usb5 without ostype l26', 'pve1', { usb5: 'mapping=rtl-sdr' }, 'using usb5 is only possible with machine type >= 7.1 and ostype l26 or windows > 7'],
  ])('start fails: %s', async (_name, node, params, text) => {
    const { sim, clock } = newSim();
    const auth = await rootTicketHeaders(sim);
    expect((await call(sim, 'POST', `/nodes/${node}/qemu`, { ...base, ...params }, auth)).status).toBe(200);
    clock.advance(5000);
    const start = await call(sim, 'POST', `/nodes/${node}/qemu/300/status/start`, {}, auth);
    clock.advance(5000);
    expect(await taskStatus(sim, start.json?.data as string)).toMatchObject({ status: 'stopped', exitstatus: text });
  });

  it('usb5 starts with ostype l26', async () => {
    const { sim, clock } = newSim();
    const auth = await rootTicketHeaders(sim);
    expect((await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, usb5: 'mapping=rtl-sdr', ostype: 'l26' }, auth)).status).toBe(200);
    clock.advance(5000);
    const start = await call(sim, 'POST', '/nodes/pve1/qemu/300/status/start', {}, auth);
    clock.advance(5000);
    expect(await taskStatus(sim, start.json?.data as string)).toMatchObject({ exitstatus: 'OK' });
  });
});

describe('DELETE /pools/{poolid} as pve-manager API2/Pool.pm delete_pool', () => {
  it('needs Pool.Allocate on /pool/<id>, refuses a missing or non-empty pool, removes an empty one', async () => {
    const { sim, clock } = newSim({ pools: [{ poolid: 'set-a', comment: 'managed by omni-infra-provider-proxmox' }] });
    const denied = await call(sim, 'DELETE', '/pools/set-a', {}, omniToken);
    expect(denied.status).toBe(403);
    expect(denied.reason).toBe('Permission check failed (/pool/set-a, Pool.Allocate)');
    const auth = await rootTicketHeaders(sim);
    expect((await call(sim, 'POST', '/nodes/pve1/qemu', { ...base, pool: 'set-a' }, auth)).status).toBe(200);
    clock.advance(5000);
    const busy = await call(sim, 'DELETE', '/pools/set-a', {}, auth);
    expect(busy.status).toBe(500);
    expect(busy.reason).toBe("delete pool failed: pool 'set-a' is not empty (contains VM 300)");
    sim.externalDeleteVm(300);
    expect((await call(sim, 'DELETE', '/pools/set-a', {}, auth)).status).toBe(200);
    expect(sim.state.pools.has('set-a')).toBe(false);
    const missing = await call(sim, 'DELETE', '/pools/set-a', {}, auth);
    expect(missing.status).toBe(500);
    expect(missing.reason).toBe("delete pool failed: pool 'set-a' does not exist");
  });
});
