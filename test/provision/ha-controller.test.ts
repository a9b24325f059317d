// A machine the Go provider (v0.2+) made an HA resource, taken over through the controller: the in-process Omni with
// the Go provider's private state (field 13 ha_registered, step annotation at an HA step), the real ProxmoxProvisioner
// and the simulator. The request resumes at the recorded HA step, and its teardown removes the HA resource before
// the VM.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MachineRequestStatusSpec_Stage as Stage } from '../../src/gen/omni/specs/infra_pb.js';
import type { ProvisionController } from '../../src/provision/controller.js';
import { writeCalls, type PveFixture } from '../../src/sim/proxmox/index.js';
import { mrs, seedPrivateState, startController } from '../omni/controller-harness.js';
import { startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';
import { startPveHarness, testFixture, type PveHarness } from '../helpers/pveHarness.js';

const UUID = '3f1c2b9e-5d6a-4c1b-9e2f-0a1b2c3d4e5f';

function haFixture(): Partial<PveFixture> {
  const roles = testFixture().roles ?? {};
  return { roles: { ...roles, OmniProvider: [...(roles['OmniProvider'] ?? []), 'Sys.Console'] } };
}

let f: OmniFixture;
let h: PveHarness;
let controller: ProvisionController | undefined;

beforeEach(async (ctx) => {
  f = await startOmniFixture({}, { signal: ctx.signal });
  h = await startPveHarness({ fixture: haFixture() });
  controller = undefined;
});

afterEach(async () => {
  await controller?.stop();
  await h.close();
  await f.close();
});

describe.each(['registerHA', 'syncHARules'])('a Go v0.2 HA machine with the step annotation at %s', (step) => {
  it('resumes there (no new VM, the VM joins the set rule), and its teardown removes the HA resource before the VM', async () => {
    const id = `go-ha-${step.toLowerCase()}`;
    // What the Go provider left: its VM (our SMBIOS UUID, the set tag), registered in HA, field 13 set.
    const vmid = h.sim.externalCreateVm({ vmid: 150, node: 'pve2', name: id, tags: ['machine-request.goset'] });
    h.sim.state.vms.get(vmid)!.config.set('smbios1', `uuid=${UUID}`);
    h.sim.setHaManaged(vmid, true);
    seedPrivateState(
      f.omni.store,
      id,
      { uuid: UUID, node: 'pve2', vmid, haRegistered: true, schematic: 'f'.repeat(64), talosVersion: 'v1.11.5', vmStartTask: 'UPID:pve2:00001:00002:00003:qmstart:150:root@pam:' },
      { 'infra.omni.sidero.dev/step': step },
    );
    const providerData = 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\nha:\n  max_restart: 2\n  node_affinity_nodes: [pve2, pve3]\n';
    f.omni.controllers.createMachineRequest('goset', { talosVersion: 'v1.11.5', providerData }, id);
    controller = startController(f, h.provisioner);
    await f.eventually(() => mrs(f.omni.store, id)?.spec.stage === Stage.PROVISIONED, 'PROVISIONED');

    const writes = writeCalls(h.sim).map((r) => `${r.method} ${r.path}`);
    expect(writes.filter((w) => /^POST \/nodes\/[^/]+\/qemu$/.test(w))).toEqual([]);
    // registerHA found the Go provider's resource (already defined) and brought it to the block.
    if (step === 'registerHA') expect(writes).toEqual(expect.arrayContaining(['POST /cluster/ha/resources', `PUT /cluster/ha/resources/vm:${vmid}`]));
    else expect(writes).not.toContain('POST /cluster/ha/resources');
    expect([...h.sim.ha.rules.get('omni-goset-naff')!.resources]).toEqual([`vm:${vmid}`]);

    const before = h.sim.requests.length;
    await f.omni.controllers.deleteMachineRequest(id);
    expect(h.sim.vm(vmid)).toBeUndefined();
    expect(h.sim.ha.resources.size + h.sim.ha.rules.size).toBe(0);
    const teardown = h.sim.requests.slice(before).filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`);
    expect(teardown.indexOf(`DELETE /cluster/ha/resources/vm:${vmid}`)).toBeGreaterThanOrEqual(0);
    expect(teardown.indexOf(`DELETE /cluster/ha/resources/vm:${vmid}`)).toBeLessThan(teardown.indexOf(`DELETE /nodes/pve2/qemu/${vmid}`));
  });
});
