// Issue 12: the seed is named and tagged the way go-proxmox names and tags the Go provider's (`user-data-<vmid>.iso`,
// VM tag `go-proxmox+cloud-init`), so that the Go provider's teardown removes it after a rollback; and a file of that
// name that is not this request's is never overwritten or removed.
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger, type Logger } from '../../src/log.js';
import type { MachineState } from '../../src/provision/machineState.js';
import { deleteOrphanedSeeds, listOurSeeds } from '../../src/provision/orphanSeeds.js';
import { basicData, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';
import { simChanges, waitFor } from '../helpers/wait.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const isos = (harness: PveHarness) => harness.sim.volumes('nfs-iso').map((v) => v.volid).sort();

/** A logger that keeps the messages of warn and info (with their objects). */
function recordingLogger(): { log: Logger; said: Array<{ msg: string; obj: unknown }> } {
  const said: Array<{ msg: string; obj: unknown }> = [];
  const keep = (obj: unknown, msg?: string) => void said.push({ msg: msg ?? String(obj), obj });
  const log = { ...silentLogger, warn: keep, info: keep, child: () => log } as unknown as Logger;
  return { log, said };
}

/** A `user-data-<vmid>.iso` someone else left on nfs-iso for every VMID the simulator may hand out next. */
function leaveStaleGoSeeds(harness: PveHarness, from: number, to: number): void {
  const nfs = harness.sim.state.storages.get('nfs-iso')!;
  for (let vmid = from; vmid <= to; vmid++) {
    harness.sim.state.addVolume(nfs, harness.sim.state.entryNode, { name: `iso/user-data-${vmid}.iso`, content: 'iso', format: 'iso', size: 4242, ctime: 1 });
  }
}

describe('the seed is named and tagged as go-proxmox does', () => {
  it('user-data-<vmid>.iso on the ISO storage, VM tagged go-proxmox+cloud-init next to its own tags, in one config update', async () => {
    h = await startPveHarness();
    const state = await runSteps(h.provisioner, request('req-name', basicData + 'tags: [talos]\n', 'workers'));
    expect(state.seedVolume).toBe(`nfs-iso:iso/user-data-${state.vmid}.iso`);
    const vm = h.sim.vm(state.vmid)!;
    expect(String(vm.config.tags).split(';').sort()).toEqual(['go-proxmox+cloud-init', 'machine-request.workers', 'talos']);
    expect(vm.config.ide0).toMatch(new RegExp(`^nfs-iso:iso/user-data-${state.vmid}\\.iso,media=cdrom`));
    const configWrites = h.sim.requests.filter((r) => r.method === 'PUT' && r.path.endsWith(`/qemu/${state.vmid}/config`));
    expect(configWrites).toHaveLength(1);
    expect(configWrites[0]!.params).toMatchObject({ ide0: expect.stringContaining('user-data-'), tags: expect.stringContaining('go-proxmox+cloud-init') });

    await h.provisioner.deprovision({ requestId: 'req-name', state, log: silentLogger });
    expect(isos(h).filter((v) => v.includes('user-data-'))).toEqual([]);
  });

  it('a token that may not set the tag still gets its seed attached, with a warning naming the consequence', async () => {
    h = await startPveHarness({ fixture: { datacenter: { 'user-tag-access': { 'user-allow': 'list', 'user-allow-list': [] } } } });
    const { log, said } = recordingLogger();
    const state = await runSteps(h.provisioner, request('req-no-tag', basicData), undefined, { log });
    const vm = h.sim.vm(state.vmid)!;
    expect(vm.running).toBe(true);
    expect(vm.config.ide0).toMatch(/^nfs-iso:iso\/user-data-\d+\.iso,media=cdrom/);
    expect(vm.config.tags ?? '').not.toContain('go-proxmox+cloud-init');
    expect(said.some((s) => /may not set the VM tag go-proxmox\+cloud-init.*seeds orphaned/.test(s.msg))).toBe(true);
  });
});

describe('a user-data-<vmid>.iso that is not this request\'s', () => {
  it('already on the storage: not overwritten; the seed is named after the request, and the teardown leaves that file', async () => {
    h = await startPveHarness();
    leaveStaleGoSeeds(h, 100, 199);
    const before = isos(h);
    const state = await runSteps(h.provisioner, request('req-stale', basicData));
    expect(state.seedVolume).toBe('nfs-iso:iso/omni-seed-req-stale.iso');
    expect(h.sim.vm(state.vmid)?.config.tags ?? '').not.toContain('go-proxmox+cloud-init');
    const stale = h.sim.volumes('nfs-iso').find((v) => v.volid === `nfs-iso:iso/user-data-${state.vmid}.iso`);
    expect(stale).toMatchObject({ size: 4242, ctime: 1 });
    expect(h.sim.requests.filter((r) => r.route === '/nodes/{node}/storage/{storage}/upload').map((r) => r.params?.['filename'])).toEqual([
      'omni-seed-req-stale.iso',
    ]);

    await h.provisioner.deprovision({ requestId: 'req-stale', state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    expect(isos(h).filter((v) => /user-data-|omni-seed-/.test(v))).toEqual(before.filter((v) => /user-data-|omni-seed-/.test(v)));
  });

  it('recorded, its VMID now held by a VM that uses that very file (the Go provider uploaded over it): left alone', async () => {
    h = await startPveHarness();
    const state = await runSteps(h.provisioner, request('req-reused', basicData));
    const seed = state.seedVolume;
    expect(seed).toBe(`nfs-iso:iso/user-data-${state.vmid}.iso`);
    // Our VM deleted by hand (its seed stays: PVE does not delete CD-ROM images), then the VMID reused by a VM whose
    // seed that file is now (go-proxmox uploads over a file of the same name and attaches it).
    h.sim.externalDeleteVm(state.vmid);
    h.sim.externalCreateVm({ vmid: state.vmid, node: state.node, name: 'someone-else' });
    h.sim.state.vms.get(state.vmid)!.config.set('ide0', `${seed},media=cdrom`);
    const { log, said } = recordingLogger();
    await h.provisioner.deprovision({ requestId: 'req-reused', state, log });
    expect(h.sim.vm(state.vmid)?.config.name).toBe('someone-else');
    expect(isos(h)).toContain(seed);
    expect(said.some((s) => /VMID now belongs to a VM that is not this request's and uses that file; its seed ISO is left alone/.test(s.msg))).toBe(true);
  });

  it('recorded, its VMID now held by another request of ours (which named its seed after itself): ours removed, its untouched', async () => {
    // Found by the chaos run (seed 33), where our VM was deleted and its seed not yet removed when the VMID was reused.
    h = await startPveHarness();
    const a = await runSteps(h.provisioner, request('req-a', basicData));
    h.sim.externalDeleteVm(a.vmid);
    const b = await runSteps(h.provisioner, request('req-b', basicData));
    expect(b.vmid).toBe(a.vmid);
    expect(b.seedVolume).toBe('nfs-iso:iso/omni-seed-req-b.iso');
    await h.provisioner.deprovision({ requestId: 'req-a', state: a, log: silentLogger });
    expect(isos(h)).not.toContain(a.seedVolume);
    expect(isos(h)).toContain(b.seedVolume);
    expect(h.sim.vm(b.vmid)?.running).toBe(true);
  });

  it('recorded, its VM gone and the VMID free: the teardown removes it (nothing else can be using it)', async () => {
    h = await startPveHarness();
    const state = await runSteps(h.provisioner, request('req-gone', basicData));
    h.sim.externalDeleteVm(state.vmid);
    expect(isos(h)).toContain(state.seedVolume);
    await h.provisioner.deprovision({ requestId: 'req-gone', state, log: silentLogger });
    expect(isos(h)).not.toContain(state.seedVolume);
  });
});

describe('the VM created again under a new VMID', () => {
  /**
   * A provisioned request whose VM disappears (deleted by hand) before the request is done with it, its VMID taken by
   * someone else's VM (so the new VM of this request gets another one): startVM finds the VM gone and clears the VMID.
   */
  async function vmGoneVmidTaken(id: string): Promise<{ harness: PveHarness; req: ReturnType<typeof request>; first: MachineState; state: MachineState }> {
    const harness = (h = await startPveHarness());
    const req = request(id, basicData);
    const first: MachineState = await runSteps(harness.provisioner, req);
    harness.sim.externalDeleteVm(first.vmid);
    harness.sim.externalCreateVm({ vmid: first.vmid, node: first.node, name: 'someone-else' });
    const state = structuredClone(first);
    state.vmStartTask = '';
    await expect(runSteps(harness.provisioner, req, state, { from: 'startVM', maxRetries: 0 })).rejects.toThrow(/VM is gone/);
    expect(state.vmid).toBe(0);
    return { harness, req, first, state };
  }

  it('the earlier seed (named after the old VMID, now another VM\'s that does not use it) is removed before the new one is uploaded', async () => {
    const { harness, req, first, state } = await vmGoneVmidTaken('req-again');
    const oldSeed = first.seedVolume;
    const again = await runSteps(harness.provisioner, req, state, { from: 'syncVM' });
    expect(again.vmid).not.toBe(first.vmid);
    expect(again.seedVolume).toBe(`nfs-iso:iso/user-data-${again.vmid}.iso`);
    // The old VMID belongs to another VM now, which does not use the file: it is ours to remove.
    expect(isos(harness)).not.toContain(oldSeed);
    expect(isos(harness)).toContain(again.seedVolume);
    await harness.provisioner.deprovision({ requestId: 'req-again', state: again, log: silentLogger });
    expect(isos(harness)).not.toContain(again.seedVolume);
  });

  it('the earlier seed is removed when its VMID is free', async () => {
    // The VM of someone else's holds the old VMID while this request's VM is created again, then goes: the old VMID
    // is free when the new seed is uploaded.
    const { harness, req, first, state } = await vmGoneVmidTaken('req-again-free');
    const oldSeed = first.seedVolume;
    await runSteps(harness.provisioner, req, state, { from: 'syncVM', until: 'syncVM' });
    expect(state.vmid).not.toBe(first.vmid);
    harness.sim.externalDeleteVm(first.vmid);
    const again = await runSteps(harness.provisioner, req, state, { from: 'startVM' });
    expect(again.seedVolume).toBe(`nfs-iso:iso/user-data-${again.vmid}.iso`);
    expect(isos(harness)).not.toContain(oldSeed);
    expect(isos(harness)).toContain(again.seedVolume);
  });
});

describe('seeds orphaned (the operator clean-up after a rollback)', () => {
  it('lists our request-named seeds and every user-data-<vmid>.iso whose VMID is free; removes only those no VM uses', async () => {
    h = await startPveHarness();
    const nfs = h.sim.state.storages.get('nfs-iso')!;
    const add = (name: string) => h!.sim.state.addVolume(nfs, h!.sim.state.entryNode, { name: `iso/${name}`, content: 'iso', format: 'iso', size: 10, ctime: 1 });
    add('omni-seed-req-old.iso'); // ours, from an earlier version: no VM uses it
    add('user-data-777.iso'); // no guest has VMID 777: its VM is gone, whoever made it
    add('user-data-100.iso'); // VMID 100 is a VM of the fixture: that VM's business, not listed
    const live = await runSteps(h.provisioner, request('req-live', basicData)); // its seed is in use
    const listed = await listOurSeeds(h.pve);
    expect(listed.map((s) => [s.volid, s.kind, s.usedBy]).sort()).toEqual(
      [
        ['nfs-iso:iso/omni-seed-req-old.iso', 'request', []],
        ['nfs-iso:iso/user-data-777.iso', 'vmid', []],
      ].sort(),
    );
    const { deleted } = await deleteOrphanedSeeds(h.pve, { minAgeSeconds: 0 });
    expect(deleted.map((s) => s.volid).sort()).toEqual(['nfs-iso:iso/omni-seed-req-old.iso', 'nfs-iso:iso/user-data-777.iso']);
    expect(isos(h)).toContain('nfs-iso:iso/user-data-100.iso');
    expect(isos(h)).toContain(live.seedVolume);
  });
});

describe('teardown while the seed is being uploaded again', () => {
  it('waits for the upload before removing any seed: the file the upload writes does not outlive the request', async () => {
    // startVM retried after its seed was attached (a start that timed out, a restart): the seed is uploaded again over
    // the attached file when the request is deleted. The seed must be removed after that upload ended, not before.
    h = await startPveHarness({ provisioner: { pendingCreateWaitMs: 600_000 } });
    const harness = h;
    const state = await runSteps(harness.provisioner, request('req-reupload', basicData));
    harness.sim.faults.onTask({ type: 'imgcopy' }, { kind: 'stuck' });
    const filename = state.seedVolume.replace(/^[^:]+:iso\//, '');
    const upid = await harness.pve.uploadFile(state.node, 'nfs-iso', { filename, content: 'iso', data: Buffer.from('again') });
    state.seedUploadTask = upid;
    const teardown = harness.provisioner.deprovision({ requestId: 'req-reupload', state, log: silentLogger });
    // The teardown waits for the upload (polls its task) before it removes or deletes anything: the upload ends now.
    const polled = () => harness.sim.requests.some((r) => r.method === 'GET' && decodeURIComponent(r.path).includes(`${upid}/status`));
    await waitFor(polled, { what: 'the teardown to wait for the upload', on: [simChanges(harness.sim)] });
    expect(harness.sim.vm(state.vmid)).toBeDefined();
    expect(harness.sim.releaseStuckTasks({ type: 'imgcopy' })).toBe(1);
    await teardown;
    await harness.sim.settle();
    expect(harness.sim.vm(state.vmid)).toBeUndefined();
    expect(isos(harness)).not.toContain(state.seedVolume);
  });
});
