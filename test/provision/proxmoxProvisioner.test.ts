// The Proxmox half of every step, end to end against the simulator over HTTPS: what Proxmox ends up with.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { emptyMachineState } from '../../src/provision/machineState.js';
import { StepFailure } from '../../src/provision/step.js';
import { basicData, JOIN_CONFIG, request, runSteps, startPveHarness, testFixture, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

function qemuVms(sim: PveHarness['sim']) {
  return [...sim.state.vms.keys()].map((id) => sim.vm(id)!);
}

function readIsoFile(iso: Buffer, path: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'seed-'));
  try {
    const f = join(dir, 'seed.iso');
    writeFileSync(f, iso);
    return execFileSync('isoinfo', ['-J', '-x', path, '-i', f], { encoding: 'utf8' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('provisioning against the simulator', () => {
  it('creates, seeds and starts a VM, then deprovision removes exactly it', async () => {
    h = await startPveHarness();
    const before = new Set(h.sim.state.vms.keys());
    const req = request('req-happy-1', basicData + 'hostname: request-id\n');
    const state = await runSteps(h.provisioner, req);

    expect(state.vmid).toBeGreaterThanOrEqual(100);
    expect(before.has(state.vmid)).toBe(false);
    const vm = h.sim.vm(state.vmid)!;
    expect(vm.node).toBe(state.node);
    expect(vm.running).toBe(true);
    expect(vm.config.name).toBe('req-happy-1');
    expect(vm.config.smbios1).toContain(`uuid=${state.uuid}`);
    expect(vm.config.scsi0).toMatch(/^local-lvm:vm-\d+-disk-0/);
    expect(vm.config.ide2).toMatch(new RegExp(`^nfs-iso:iso/${state.volumeId},media=cdrom(,size=\\w+)?$`));
    expect(vm.config.ide0).toMatch(new RegExp(`^${state.seedVolume},media=cdrom(,size=\\w+)?$`));
    expect(vm.config.boot).toBe('order=scsi0;ide2;net0');
    // Field 4 is the bare file name, as the Go provider writes it; the storage is field 100 (shared preferred).
    expect(state.volumeId).toMatch(/^[0-9a-f]{64}\.iso$/);
    expect(state.isoStorage).toBe('nfs-iso');
    // Named and tagged as go-proxmox does (user-data-<vmid>.iso, go-proxmox+cloud-init): the Go provider's VM delete
    // removes it with the VM after a rollback.
    expect(state.seedVolume).toBe(`nfs-iso:iso/user-data-${state.vmid}.iso`);
    expect(String(vm.config.tags).split(';')).toContain('go-proxmox+cloud-init');

    const seed = h.sim.isoFile(state.seedVolume, state.node);
    expect(readIsoFile(seed, '/user-data')).toBe(JOIN_CONFIG);
    const meta = readIsoFile(seed, '/meta-data');
    expect(meta).toContain(state.uuid);
    expect(meta).toContain('hostname: "req-happy-1"');

    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    expect(h.sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain(state.seedVolume);
    expect(h.sim.volumes('nfs-iso').map((v) => v.volid)).toContain(`nfs-iso:iso/${state.volumeId}`); // Talos ISO cache stays
    expect(new Set(h.sim.state.vms.keys())).toEqual(before);
  });

  it('announces no hostname unless asked to', async () => {
    h = await startPveHarness();
    const state = await runSteps(h.provisioner, request('req-nohost', basicData));
    const meta = readIsoFile(h.sim.isoFile(state.seedVolume, state.node), '/meta-data');
    expect(meta).not.toMatch(/hostname/);
  });

  it('spreads the members of one machine set over the nodes, even when created concurrently', async () => {
    h = await startPveHarness();
    const reqs = ['cp-1', 'cp-2', 'cp-3'].map((id) => request(id, basicData, 'set-cp'));
    const states = await Promise.all(reqs.map((r) => runSteps(h!.provisioner, r)));
    expect(new Set(states.map((s) => s.node)).size).toBe(3);
    expect(new Set(states.map((s) => s.vmid)).size).toBe(3);
    for (const s of states) expect(h.sim.vm(s.vmid)!.config.tags).toContain('machine-request.set-cp');
  });

  it('downloads the Talos ISO once for concurrent requests', async () => {
    h = await startPveHarness();
    await Promise.all(['a-1', 'a-2', 'a-3', 'a-4'].map((id) => runSteps(h!.provisioner, request(id, basicData))));
    expect(h.sim.tasks({ type: 'download' })).toHaveLength(1);
  });

  it('adopts the VM when the answer to the create call was lost (no duplicate)', async () => {
    h = await startPveHarness();
    h.sim.faults.onRequest({ method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'lostResponse', mode: 'reset' });
    const req = request('req-lost', basicData);
    const state = await runSteps(h.provisioner, req);
    const mine = qemuVms(h.sim).filter((v) => v.config.name === 'req-lost');
    expect(mine).toHaveLength(1);
    expect(mine[0]!.vmid).toBe(state.vmid);
    expect(h.sim.tasks({ type: 'qmcreate' })).toHaveLength(1);
  });

  it('retries with a fresh VMID when someone else takes the one nextid returned', async () => {
    h = await startPveHarness();
    h.sim.grabVmidAfterNextId();
    const state = await runSteps(h.provisioner, request('req-race', basicData));
    const vm = h.sim.vm(state.vmid)!;
    expect(vm.config.name).toBe('req-race');
  });

  it('surfaces a failed create task with Proxmox exit status, and succeeds on the next run', async () => {
    h = await startPveHarness();
    h.sim.faults.onTask({ type: 'qmcreate' }, { kind: 'fail', message: 'lvcreate failed: not enough space' });
    const req = request('req-failcreate', basicData);
    const state = emptyMachineState();
    await expect(runSteps(h.provisioner, req, state)).rejects.toThrow(/syncVM: .*lvcreate failed: not enough space/);
    expect(state.vmid).toBe(0);
    const again = await runSteps(h.provisioner, req, state, { from: 'syncVM' });
    expect(h.sim.vm(again.vmid)!.config.name).toBe('req-failcreate');
  });

  it('retries a failed ISO download', async () => {
    h = await startPveHarness();
    h.sim.failDownloads('download failed: 502 Bad Gateway', 2);
    const state = await runSteps(h.provisioner, request('req-dl', basicData));
    expect(h.sim.tasks({ type: 'download' })).toHaveLength(3);
    expect(h.sim.vm(state.vmid)!.running).toBe(true);
  });

  it('gives up on a download that keeps failing with the Proxmox message', async () => {
    h = await startPveHarness();
    h.sim.failDownloads('download failed: 404 Not Found', 5);
    await expect(runSteps(h.provisioner, request('req-dl404', basicData))).rejects.toThrow(
      /uploadISO: downloading the Talos ISO to nfs-iso failed 3 times: .*download failed: 404 Not Found/,
    );
  });

  it('explains a storage selector that matches nothing, listing the candidates', async () => {
    h = await startPveHarness();
    const data = basicData.replace('name == "local-lvm"', 'type == "zfspool"');
    const err = await runSteps(h.provisioner, request('req-nostorage', data)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StepFailure);
    expect((err as Error).message).toMatch(/storage_selector: storage selector `type == "zfspool"` matched no storage on node pve\d/);
    expect((err as Error).message).toMatch(/local-lvm \(type=lvmthin/);
    expect((err as Error).message).toMatch(/ceph-vm \(type=rbd/);
    expect(qemuVms(h.sim).some((v) => v.config.name === 'req-nostorage')).toBe(false);
  });

  it('the health check trusts recent Proxmox traffic, else asks for the node list once, and fails with no node online', async () => {
    h = await startPveHarness();
    const calls = () => h!.sim.requests.length;
    const before = calls();
    await h.provisioner.healthCheck();
    expect(calls() - before).toBe(1); // nothing seen yet: GET /nodes
    await h.provisioner.healthCheck();
    expect(calls() - before).toBe(1); // Proxmox just answered and the node list is fresh: no call
    await h.provisioner.healthCheck(0);
    expect(calls() - before).toBe(2); // freshness 0: asks again
    for (const n of ['pve2', 'pve3']) h.sim.setNodeOnline(n, false);
    await h.provisioner.healthCheck(0); // one node online is enough
    h.sim.setNodeOnline('pve1', false);
    await expect(h.provisioner.healthCheck(0)).rejects.toThrow(/^Proxmox: /);
    // After a failed call the recent successes are not trusted: it asks (and fails) again.
    const failedAt = calls();
    await expect(h.provisioner.healthCheck()).rejects.toThrow(/^Proxmox: /);
    expect(calls()).toBeGreaterThan(failedAt);
  });

  it('never places on an offline node, and says why a pinned offline node cannot be used', async () => {
    h = await startPveHarness();
    h.sim.setNodeOnline('pve2', false);
    const states = await Promise.all(['o-1', 'o-2'].map((id) => runSteps(h!.provisioner, request(id, basicData, 'set-o'))));
    expect(states.map((s) => s.node).sort()).toEqual(['pve1', 'pve3']);
    await expect(runSteps(h.provisioner, request('o-pinned', basicData + 'node: pve2\n'))).rejects.toThrow(/pinned node pve2 cannot take this VM: offline/);
  });
});

describe('deprovision', () => {
  it('finds a VM that migrated to another node and deletes it there', async () => {
    h = await startPveHarness();
    const req = request('req-migrated', basicData);
    const state = await runSteps(h.provisioner, req);
    const other = ['pve1', 'pve2', 'pve3'].find((n) => n !== state.node)!;
    h.sim.externalMigrateVm(state.vmid, other);
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
  });

  it('does not touch a VM that reuses our recorded VMID but is not ours', async () => {
    h = await startPveHarness();
    const req = request('req-reused', basicData);
    const state = await runSteps(h.provisioner, req);
    h.sim.externalDeleteVm(state.vmid);
    await h.sim.settle();
    const stranger = h.sim.externalCreateVm({ vmid: state.vmid, node: state.node, name: 'someone-else' });
    await h.sim.settle();
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(stranger)!.config.name).toBe('someone-else');
  });

  it('counts a VM that is already gone as success', async () => {
    h = await startPveHarness();
    const req = request('req-gone', basicData);
    const state = await runSteps(h.provisioner, req);
    h.sim.externalDeleteVm(state.vmid);
    await h.sim.settle();
    await expect(h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger })).resolves.toBeUndefined();
  });

  it('deletes a VM whose VMID was never recorded (crash right after create), found by name and SMBIOS UUID', async () => {
    h = await startPveHarness();
    const req = request('req-unrecorded', basicData);
    const state = await runSteps(h.provisioner, req);
    const vmid = state.vmid;
    await h.provisioner.deprovision({ requestId: req.id, state: { ...state, vmid: 0 }, log: silentLogger });
    expect(h.sim.vm(vmid)).toBeUndefined();
  });

  it('fails while the seed ISO cannot be removed (the finalizer stays), and the retry removes it', async () => {
    // Found by the chaos run (seed 9): the DELETE of the seed was reset, the teardown logged it and released the
    // request, and the seed stayed on the storage for good.
    h = await startPveHarness();
    const req = request('req-seed-stays', basicData);
    const state = await runSteps(h.provisioner, req);
    const seedRoute = '/nodes/{node}/storage/{storage}/content/{volume*}';
    h.sim.faults.onRequest({ method: 'DELETE', route: seedRoute }, { kind: 'connReset' }, { times: Infinity });
    await expect(h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger })).rejects.toThrow(
      /could not remove seed ISO nfs-iso:iso\/user-data-\d+\.iso.*released once its seed ISO is removed/,
    );
    // The seed goes before the VM (which holds the VMID the seed is named after): the VM is stopped, not deleted.
    expect(h.sim.vm(state.vmid)?.running).toBe(false);
    expect(h.sim.volumes('nfs-iso').map((v) => v.volid)).toContain(state.seedVolume);

    h.sim.faults.clear();
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    expect(h.sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain(state.seedVolume);
  });

  it('fails while the ISO storage cannot be listed to remove the seed', async () => {
    h = await startPveHarness();
    const req = request('req-seed-unlisted', basicData);
    const state = await runSteps(h.provisioner, req);
    h.sim.faults.onRequest({ method: 'GET', route: '/nodes/{node}/storage/{storage}/content' }, { kind: 'httpError', status: 503 }, { times: Infinity });
    await expect(h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger })).rejects.toThrow(/listing ISO storage nfs-iso .* failed/);
    h.sim.faults.clear();
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain(state.seedVolume);
  });

  it('stops a guest that ignores the shutdown request, then deletes it with purge', async () => {
    h = await startPveHarness();
    const req = request('req-stubborn', basicData);
    const state = await runSteps(h.provisioner, req);
    h.sim.shutdownIgnored.add(state.vmid);
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    const del = h.sim.requests.find((r) => r.method === 'DELETE' && r.path.endsWith(`/qemu/${state.vmid}`));
    expect(del?.params).toMatchObject({ purge: '1', 'destroy-unreferenced-disks': '1' });
    expect(h.sim.tasks({ type: 'qmstop', vmid: state.vmid })).toHaveLength(1);
  });

  it('stops a running VM hard, without a shutdown request, when no shutdown timeout is set (the default)', async () => {
    h = await startPveHarness({ provisioner: { shutdownTimeoutSec: 0 } });
    const req = request('req-hard-stop', basicData);
    const state = await runSteps(h.provisioner, req);
    expect(h.sim.vm(state.vmid)?.running).toBe(true);
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    expect(h.sim.tasks({ type: 'qmshutdown', vmid: state.vmid })).toHaveLength(0);
    expect(h.sim.tasks({ type: 'qmstop', vmid: state.vmid })).toHaveLength(1);
  });
});

describe('faults', () => {
  it('works through latency and transient 5xx answers', async () => {
    h = await startPveHarness();
    h.sim.faults.onRequest({}, { kind: 'latency', ms: 200, jitterMs: 100 }, { times: Infinity });
    h.sim.faults.onRequest({ method: 'GET', route: '/cluster/resources' }, { kind: 'httpError', status: 503, reason: 'Service Unavailable' }, { times: 2 });
    const state = await runSteps(h.provisioner, request('req-flaky', basicData));
    expect(h.sim.vm(state.vmid)!.running).toBe(true);
    expect(h.sim.requests.filter((r) => r.status === 503)).toHaveLength(2);
  });

  it('fails the step with the task message when the storage is full, and leaks nothing', async () => {
    h = await startPveHarness();
    h.sim.fillStorage('local-lvm', 'pve1', 1024 ** 3); // 1 GiB left, the disk wants 20
    const before = h.sim.state.vms.size;
    const err = await runSteps(h.provisioner, request('req-full', basicData + 'node: pve1\n')).then(
      () => new Error('provisioning unexpectedly succeeded'),
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(StepFailure);
    expect((err as Error).message).toMatch(/^syncVM: task qmcreate on node pve1 failed: .+/);
    expect(h.sim.state.vms.size).toBe(before);
  });

  it('reports a task that never finishes once its deadline passes (transient), without recording a VMID', async () => {
    h = await startPveHarness();
    h.sim.faults.onTask({ type: 'qmstart' }, { kind: 'stuck' });
    const state = emptyMachineState();
    const err = await runSteps(h.provisioner, request('req-stuck', basicData), state, { maxRetries: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StepFailure);
    expect((err as StepFailure).transient).toBe(true);
    expect((err as Error).message).toMatch(/startVM: task qmstart on node pve\d did not finish within 120 s/);
  });

  it('keeps working with password auth across ticket expiry', async () => {
    h = await startPveHarness({ auth: { username: 'omni', realm: 'pve', password: 'omni-sim-password' } });
    // Every ticket stops being valid after each task-starting call (the download, the create, the start): several
    // expiries during the run, at points that do not depend on timing. (A 10 s simulated lifetime was 20 ms of
    // wall time: on a busy machine a fresh ticket expired before its retry used it.)
    const sim = h.sim;
    let revoked = 0;
    sim.onChange((r) => {
      if (r?.method === 'POST' && r.status === 200 && r.authid !== undefined && !r.path.startsWith('/access/')) {
        sim.access.revokeTickets();
        revoked++;
      }
    });
    const state = await runSteps(h.provisioner, request('req-ticket', basicData));
    expect(h.sim.vm(state.vmid)!.running).toBe(true);
    expect(revoked).toBeGreaterThanOrEqual(3);
    expect(h.sim.requests.filter((r) => r.path.endsWith('/access/ticket')).length).toBeGreaterThan(revoked);
  });

  it('surfaces a missing privilege with the path and privilege Proxmox named', async () => {
    h = await startPveHarness();
    const role = testFixture().roles!.OmniProvider!;
    h.sim.access.revokeAll('omni@pve!provider');
    h.sim.access.grant('/', 'omni@pve!provider', { privs: role.filter((p) => p !== 'VM.PowerMgmt') });
    const err = await runSteps(h.provisioner, request('req-noperm', basicData)).then(
      () => new Error('provisioning unexpectedly succeeded'),
      (e: unknown) => e as Error,
    );
    expect(err.message).toMatch(/^startVM: Permission check failed \(\/vms\/\d+, VM\.PowerMgmt\): grant this privilege/);
  });

  it('retries when the proxy cannot reach the node (595) and creates exactly one VM', async () => {
    h = await startPveHarness();
    h.sim.faults.onRequest({ node: 'pve3', method: 'POST', route: '/nodes/{node}/qemu' }, { kind: 'httpError', status: 595, reason: 'No route to host' });
    const state = await runSteps(h.provisioner, request('req-node-blip', basicData + 'node: pve3\n'));
    expect(h.sim.vm(state.vmid)!.node).toBe('pve3');
    expect(h.sim.requests.filter((r) => r.status === 595)).toHaveLength(1);
    expect(qemuVms(h.sim).filter((v) => v.config.name === 'req-node-blip')).toHaveLength(1);
  });
});

describe('placement inputs read from the cluster', () => {
  it('does not count VM templates as committed memory', async () => {
    const GiB = 1024 ** 3;
    const nodes = testFixture().nodes.map((n) => ({ ...n, maxmem: 16 * GiB, mem: 2 * GiB }));
    // pve1 holds a 14 GiB template and nothing else; every other node is full with running VMs.
    h = await startPveHarness({
      fixture: {
        nodes,
        vms: [
          { vmid: 900, node: 'pve1', name: 'talos-template', maxmem: 14 * GiB, status: 'stopped', config: { template: '1' } },
          { vmid: 901, node: 'pve2', name: 'big-a', maxmem: 15 * GiB, status: 'running' },
          { vmid: 902, node: 'pve3', name: 'big-b', maxmem: 15 * GiB, status: 'running' },
        ],
      },
    });
    const state = await runSteps(h.provisioner, request('req-template', basicData)); // needs 4 GiB
    expect(state.node).toBe('pve1');
  });
});
