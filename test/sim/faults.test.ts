import { describe, expect, it } from 'vitest';
import { call, newSim, rootTicketHeaders, taskStatus } from './helpers.js';

describe('request faults', () => {
  it('latency holds the answer for simulated time', async () => {
    const { sim, clock } = newSim();
    sim.faults.onRequest({ route: '/nodes' }, { kind: 'latency', ms: 5000 });
    let done = false;
    const p = call(sim, 'GET', '/nodes').then((r) => ((done = true), r));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    clock.advance(5000);
    expect((await p).status).toBe(200);
  });

  it('httpError answers once with the given status and leaves state alone', async () => {
    const { sim } = newSim();
    sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'httpError', status: 503 });
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 300 });
    expect(r.status).toBe(503);
    expect(r.reason).toBe('Service Unavailable');
    expect(r.raw.body.length).toBe(0);
    expect(sim.vm(300)).toBeUndefined();
    expect((await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 300 })).status).toBe(200);
  });

  it('httpError with a message uses the PVE envelope; N times', async () => {
    const { sim } = newSim();
    sim.faults.onRequest({ route: '/cluster/resources' }, { kind: 'httpError', status: 500, message: 'got timeout' }, { times: 2 });
    expect((await call(sim, 'GET', '/cluster/resources')).json?.message).toBe('got timeout\n');
    expect((await call(sim, 'GET', '/cluster/resources')).reason).toBe('got timeout');
    expect((await call(sim, 'GET', '/cluster/resources')).status).toBe(200);
  });

  it('lostResponse applies the create and then fails the answer', async () => {
    const { sim } = newSim();
    sim.faults.onRequest({ route: '/nodes/{node}/qemu', method: 'POST' }, { kind: 'lostResponse', mode: 'error', status: 502 });
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 301, name: 'lost' });
    expect(r.status).toBe(502);
    await sim.settle();
    expect(sim.vm(301)?.config.name).toBe('lost');
    sim.faults.onRequest({ route: '/nodes/{node}/qemu/{vmid}', vmid: 301 }, { kind: 'lostResponse', mode: 'reset' });
    const del = await sim.handle({ method: 'DELETE', path: '/api2/json/nodes/pve1/qemu/301', headers: { authorization: 'PVEAPIToken=root@pam!omni=5ec7e7a0-0000-4000-8000-00000000cafe' } });
    expect(del.transport).toBe('reset');
    await sim.settle();
    expect(sim.vm(301)).toBeUndefined();
  });

  it('connReset and hang act before anything is applied; badBody breaks the JSON', async () => {
    const { sim } = newSim();
    sim.faults.onRequest({ route: '/nodes/{node}/qemu', method: 'POST', node: 'pve2' }, { kind: 'connReset' });
    expect((await call(sim, 'POST', '/nodes/pve2/qemu', { vmid: 302 })).raw.transport).toBe('reset');
    expect(sim.vm(302)).toBeUndefined();
    sim.faults.onRequest({ route: '/version' }, { kind: 'hang' });
    expect((await call(sim, 'GET', '/version')).raw.transport).toBe('hang');
    sim.faults.onRequest({ route: '/version' }, { kind: 'badBody', mode: 'invalidJson' });
    const bad = await call(sim, 'GET', '/version');
    expect(bad.status).toBe(200);
    expect(bad.json).toBeUndefined();
  });

  it('probability faults repeat exactly for the same seed', async () => {
    const pattern = async (seed: number) => {
      const { sim } = newSim({ seed });
      sim.faults.onRequest({ route: '/version' }, { kind: 'httpError', status: 500, message: 'flaky' }, { times: Infinity, probability: 0.5 });
      const out: number[] = [];
      for (let i = 0; i < 20; i++) out.push((await call(sim, 'GET', '/version')).status);
      return out.join(',');
    };
    const a = await pattern(11);
    expect(await pattern(11)).toBe(a);
    expect(a).toContain('500');
    expect(a).toContain('200');
  });

  it('a time window limits when a fault fires', async () => {
    const { sim, clock } = newSim();
    const t0 = clock.now();
    sim.faults.onRequest({ route: '/version' }, { kind: 'httpError', status: 502 }, { times: Infinity, window: { fromMs: t0 + 1000, toMs: t0 + 2000 } });
    expect((await call(sim, 'GET', '/version')).status).toBe(200);
    clock.advance(1500);
    expect((await call(sim, 'GET', '/version')).status).toBe(502);
    clock.advance(1000);
    expect((await call(sim, 'GET', '/version')).status).toBe(200);
  });
});

describe('task faults', () => {
  it('fail, warnings, unexpected', async () => {
    const { sim } = newSim();
    sim.faults.onTask({ type: 'qmcreate', vmid: 310 }, { kind: 'fail', message: 'unable to create image: got lock timeout' });
    sim.faults.onTask({ type: 'qmstop' }, { kind: 'warnings', count: 2 });
    sim.faults.onTask({ type: 'qmstart' }, { kind: 'unexpected' });
    const create = (await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 310, scsi0: 'local-lvm:4' })).json?.data as string;
    const stop = (await call(sim, 'POST', '/nodes/pve1/qemu/100/status/stop')).json?.data as string;
    await sim.settle();
    const start = (await call(sim, 'POST', '/nodes/pve1/qemu/100/status/start')).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, create)).exitstatus).toBe('unable to create image: got lock timeout');
    expect(sim.vm(310)).toBeUndefined();
    expect((await taskStatus(sim, stop)).exitstatus).toBe('WARNINGS: 2');
    expect((await taskStatus(sim, start)).exitstatus).toBe('unexpected status');
    const log = (await call(sim, 'GET', `/nodes/pve1/tasks/${encodeURIComponent(create)}/log`)).json?.data as { t: string }[];
    expect(log.at(-1)?.t).toBe('TASK ERROR: unable to create image: got lock timeout');
  });

  it('stuck tasks never finish (settle ignores them) and can be interrupted', async () => {
    const { sim, clock } = newSim();
    sim.faults.onTask({ type: 'qmstart' }, { kind: 'stuck' });
    const upid = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data as string;
    await sim.settle();
    clock.advance(3600_000);
    expect((await taskStatus(sim, upid)).status).toBe('running');
    expect((await call(sim, 'DELETE', `/nodes/pve2/tasks/${encodeURIComponent(upid)}`)).status).toBe(200);
    expect(await taskStatus(sim, upid)).toMatchObject({ status: 'stopped', exitstatus: 'received interrupt' });
    expect(sim.vm(101)!.running).toBe(false);
  });

  it('vanished tasks apply their work but their status becomes no such task', async () => {
    const { sim } = newSim();
    sim.faults.onTask({ type: 'qmstart', node: 'pve2' }, { kind: 'vanish' });
    const upid = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data as string;
    await sim.settle();
    const r = await call(sim, 'GET', `/nodes/pve2/tasks/${encodeURIComponent(upid)}/status`);
    expect(r.status).toBe(400);
    expect(r.json?.errors).toEqual({ upid: 'no such task' });
    expect(sim.vm(101)!.running).toBe(true);
  });

  it('task endpoints reject malformed UPIDs and paginate logs', async () => {
    const { sim } = newSim();
    const bad = await call(sim, 'GET', '/nodes/pve1/tasks/UPID:nope/status');
    expect(bad.json?.errors).toEqual({ upid: 'unable to parse worker upid' });
    const upid = (await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 311, scsi0: 'local-lvm:1', scsi1: 'local-lvm:1' })).json?.data as string;
    const running = (await call(sim, 'GET', `/nodes/pve1/tasks/${encodeURIComponent(upid)}/log`)).json!;
    expect(running.data).toEqual([{ n: 1, t: 'no content' }]);
    await sim.settle();
    const page = (await call(sim, 'GET', `/nodes/pve1/tasks/${encodeURIComponent(upid)}/log`, { start: 1, limit: 1 })).json!;
    expect(page.total).toBe(3);
    expect(page.data).toEqual([{ n: 2, t: expect.any(String) }]);
  });
});

describe('cluster faults', () => {
  it('an offline node: /nodes offline without stats, 595 for proxied calls, VMs unknown, state intact when back', async () => {
    const { sim } = newSim();
    const upid = (await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data as string;
    sim.setNodeOnline('pve2', false);
    const nodes = (await call(sim, 'GET', '/nodes')).json?.data as Record<string, unknown>[];
    const pve2 = nodes.find((n) => n.node === 'pve2')!;
    expect(pve2.status).toBe('offline');
    expect(pve2).not.toHaveProperty('mem');
    const proxied = await call(sim, 'GET', '/nodes/pve2/qemu');
    expect(proxied.status).toBe(595);
    expect(proxied.raw.body.length).toBe(0);
    expect((await call(sim, 'GET', `/nodes/pve2/tasks/${encodeURIComponent(upid)}/status`)).status).toBe(595);
    const vms = (await call(sim, 'GET', '/cluster/resources', { type: 'vm' })).json?.data as Record<string, unknown>[];
    expect(vms.find((v) => v.vmid === 101)?.status).toBe('unknown');
    sim.setNodeOnline('pve2', true);
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe('OK');
  });

  it('inactive or full storage makes disk allocation fail in the task', async () => {
    const { sim } = newSim();
    sim.setStorageActive('local-lvm', 'pve3', false);
    const upid = (await call(sim, 'POST', '/nodes/pve3/qemu', { vmid: 320, scsi0: 'local-lvm:4' })).json?.data as string;
    sim.fillStorage('ceph-vm', 'pve1', 0);
    const full = (await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 321, scsi0: 'ceph-vm:4' })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe("storage 'local-lvm' is not online");
    expect((await taskStatus(sim, full)).exitstatus).toMatch(/^unable to create image: not enough free space on storage 'ceph-vm'/);
  });
});

describe('external actor', () => {
  it('grabs the VMID between nextid and create', async () => {
    const { sim } = newSim();
    sim.grabVmidAfterNextId('pve3');
    const id = (await call(sim, 'GET', '/cluster/nextid')).json?.data as string;
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: Number(id) });
    expect(r.status).toBe(500);
    expect(r.reason).toBe(`unable to create VM ${id} - VM ${id} already exists on node 'pve3'`);
  });

  it('migrates a VM with its local disk to another node', async () => {
    const { sim } = newSim();
    sim.externalMigrateVm(100, 'pve3');
    expect((await call(sim, 'GET', '/nodes/pve1/qemu/100/config')).reason).toBe("Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist");
    expect((await call(sim, 'GET', '/nodes/pve3/qemu/100/config')).status).toBe(200);
    expect(sim.volumes('local-lvm', 'pve3').map((v) => v.volid)).toEqual(['local-lvm:vm-100-disk-0']);
    const res = (await call(sim, 'GET', '/cluster/resources', { type: 'vm' })).json?.data as { vmid: number; node: string }[];
    expect(res.find((v) => v.vmid === 100)?.node).toBe('pve3');
  });

  it('creates VMs and deletes files behind the client\'s back', async () => {
    const { sim } = newSim();
    const vmid = sim.externalCreateVm({ node: 'pve2', name: 'other', tags: ['machine-request.set-a'] });
    expect(vmid).toBe(102);
    expect((await call(sim, 'GET', '/cluster/nextid')).json?.data).toBe('103');
    expect(sim.externalDeleteVolume('local:iso/debian-12.iso', 'pve1')).toBe(true);
    expect((await call(sim, 'GET', '/nodes/pve1/storage/local/content')).json?.data).toEqual([]);
  });
});

describe('more cluster and auth faults', () => {
  it('entry node down: every request gets its connection refused', async () => {
    const { sim } = newSim();
    sim.setNodeOnline('pve1', false);
    expect((await call(sim, 'GET', '/version')).raw.transport).toBe('reset');
    sim.setNodeOnline('pve1', true);
    expect((await call(sim, 'GET', '/version')).status).toBe(200);
  });

  it('csrf rejection once, then accepted', async () => {
    const { sim } = newSim();
    const headers = await rootTicketHeaders(sim);
    sim.rejectCsrf(1);
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 }, headers)).reason).toBe('Permission denied - invalid csrf token');
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 }, headers)).status).toBe(200);
  });

  it('HA-managed VMs use hastart and need purge to be destroyed', async () => {
    const { sim } = newSim();
    sim.setHaManaged(101, true);
    expect((await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).json?.data).toMatch(/:hastart:101:/);
    await sim.settle();
    await call(sim, 'POST', '/nodes/pve2/qemu/101/status/stop');
    await sim.settle();
    const r = await call(sim, 'DELETE', '/nodes/pve2/qemu/101');
    expect(r.reason).toBe('unable to remove VM 101 - used in HA resources and purge parameter not set.');
    expect((await call(sim, 'DELETE', '/nodes/pve2/qemu/101', { purge: 1 })).status).toBe(200);
  });

  it('quorum loss blocks writes but not reads', async () => {
    const { sim } = newSim();
    sim.setQuorate(false);
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 })).reason).toBe('cluster not ready - no quorum?');
    expect((await call(sim, 'POST', '/nodes/pve2/qemu/101/status/start')).reason).toBe('cluster not ready - no quorum?');
    expect((await call(sim, 'GET', '/nodes/pve1/qemu/100/config')).status).toBe(200);
  });
});

describe('locks and stats lag', () => {
  it('a held VM mutex makes config writes wait and then fail with got timeout; workers fail too', async () => {
    const { sim, clock } = newSim();
    sim.holdVmMutex(100, 60_000);
    let settled = false;
    const pending = call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 }).then((r) => ((settled = true), r));
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    clock.advance(10_000);
    const r = await pending;
    expect(r.status).toBe(500);
    expect(r.reason).toBe("can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout");
    const stop = (await call(sim, 'POST', '/nodes/pve1/qemu/100/status/stop')).json?.data as string;
    clock.advance(1000);
    expect((await taskStatus(sim, stop)).exitstatus).toBe("can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout");
    clock.advance(60_000);
    expect((await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 })).status).toBe(200);
  });

  it('a short hold only delays the write', async () => {
    const { sim, clock } = newSim();
    sim.holdVmMutex(100, 2000);
    const pending = call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 5 });
    await new Promise((r) => setImmediate(r));
    clock.advance(2000);
    expect((await pending).status).toBe(200);
    expect(sim.vm(100)!.config.cores).toBe('5');
  });

  it('new VMs show status unknown in /cluster/resources until the next RRD sample', async () => {
    const { sim, clock } = newSim();
    clock.advance(10_000 - (clock.now() % 10_000) + 1000);
    await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 330 });
    const status = async () =>
      ((await call(sim, 'GET', '/cluster/resources', { type: 'vm' })).json?.data as { vmid: number; status: string }[]).find((v) => v.vmid === 330)?.status;
    expect(await status()).toBe('unknown');
    clock.advance(9000);
    expect(await status()).toBe('stopped');
  });
});
