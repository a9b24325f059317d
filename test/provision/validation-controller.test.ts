// End to end through the controller: the in-process Omni, the real ProxmoxProvisioner and the Proxmox simulator.
// A request the validation refuses ends FAILED with the refusal in MachineRequestStatus.error, Proxmox received no
// write (no download, no create), and the refusal is not retried.
import { setTimeout as sleep } from 'node:timers/promises';
import { fromBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MachineRequestStatusSpecSchema, MachineRequestStatusSpec_Stage as Stage } from '../../src/gen/omni/specs/infra_pb.js';
import type { ProvisionController } from '../../src/provision/controller.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { mrs, startController } from '../omni/controller-harness.js';
import { startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';
import { startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

const DATA = 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\n';

let f: OmniFixture;
let h: PveHarness;
let controller: ProvisionController | undefined;

beforeEach(async (ctx) => {
  f = await startOmniFixture({}, { signal: ctx.signal });
  h = await startPveHarness();
  controller = undefined;
});

afterEach(async () => {
  await controller?.stop();
  await h.close();
  await f.close();
});

/** How often the MRS was written FAILED, counted from the store's watch. */
function failedWrites(): { count: number } {
  const seen = { count: 0 };
  f.omni.store.watchKind(NS.infraProvider, TYPES.machineRequestStatus, {}, (events) => {
    for (const e of events) {
      if (!e.resource || (e.type !== 'created' && e.type !== 'updated')) continue;
      if (fromBinary(MachineRequestStatusSpecSchema, e.resource.spec.protoSpec).stage === Stage.FAILED) seen.count++;
    }
  });
  return seen;
}

async function failedStatus(id: string) {
  return f.eventually(() => (mrs(f.omni.store, id)?.spec.stage === Stage.FAILED ? mrs(f.omni.store, id) : undefined), 'FAILED');
}

describe('a refused request', () => {
  it('absurd provider data: FAILED at parse time, naming the field, and Proxmox hears nothing', async () => {
    const req = f.omni.controllers.createMachineRequest('workers', { talosVersion: '1.9.5', providerData: DATA.replace('memory: 4096', 'memory: 1e300') });
    controller = startController(f, h.provisioner, { failedRetryMs: 20 });
    const status = await failedStatus(req.metadata.id);
    expect(status.spec.error).toBe(
      'provider data: memory: 1e+300 exceeds the largest value Proxmox accepts (4194304 MiB: 4 TiB, the most qemu-server gives a VM (Memory.pm get_max_mem))',
    );
    expect(h.sim.requests).toEqual([]);
  });

  it('a bridge no node has: FAILED from the first step, no write, no download, not retried', async () => {
    const writes = failedWrites();
    const req = f.omni.controllers.createMachineRequest('workers', { talosVersion: '1.9.5', providerData: `${DATA}network_bridge: vmbr9\n` });
    controller = startController(f, h.provisioner, { failedRetryMs: 20 });
    const status = await failedStatus(req.metadata.id);
    expect(status.spec.error).toMatch(/^provider data: network_bridge: no bridge "vmbr9" on any node this VM may use \(pve1: vmbr0, vmbr1; /);
    expect(status.spec.status).toBe('Running Step: "pickNode" (1/7)');
    expect(writeCalls(h.sim)).toEqual([]);
    expect(h.sim.tasks({})).toEqual([]);
    const reads = h.sim.requests.length;
    await sleep(300); // 15 × failedRetryMs: a retried failure would have run pickNode again
    expect(h.sim.requests.length).toBe(reads);
    expect(writes.count).toBe(1);
  });

  it('a failure that is not a refusal is still retried', async () => {
    h.sim.faults.onRequest({ method: 'GET', route: '/nodes' }, { kind: 'httpError', status: 500, reason: 'something broke' }, { times: 2 });
    const req = f.omni.controllers.createMachineRequest('workers', { talosVersion: '1.9.5', providerData: DATA });
    controller = startController(f, h.provisioner, { failedRetryMs: 20 });
    await failedStatus(req.metadata.id);
    await f.eventually(() => mrs(f.omni.store, req.metadata.id)?.spec.stage === Stage.PROVISIONED, 'PROVISIONED after the retry');
  });
});
