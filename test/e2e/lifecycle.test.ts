// The daemon as a child process against the in-process Omni and the Proxmox simulator: one request from creation
// to PROVISIONED, the machine joining with the token from its seed, and a teardown that leaves nothing behind.
import { afterEach, describe, expect, it } from 'vitest';
import {
  bootAndJoin,
  CONTROLLER,
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateResource,
  privateStateOf,
  PROVIDER_ID,
  PROVIDER_TOKEN,
  requestResource,
  SMALL_VM,
  startDaemonProcess,
  startWorld,
  STEP_ANNOTATION,
  statusOf,
  vmsOf,
  waitForStage,
  waitUntil,
  type DaemonProcess,
  type World,
} from '../helpers/e2e.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { smbiosUuidOf } from '../../src/provision/cluster.js';
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { encodeSpec } from '../../src/sim/omni/index.js';

let world: World | undefined;
let daemon: DaemonProcess | undefined;
afterEach(async () => {
  const d = daemon;
  await daemon?.crash();
  await world?.close();
  daemon = undefined;
  world = undefined;
  // Every line the daemon logged is one JSON object with unique keys.
  expect(d?.badLines ?? []).toEqual([]);
});

describe('daemon lifecycle (child process)', () => {
  it('provisions a request to PROVISIONED, the machine joins with the seed token, and teardown leaves nothing', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni, sim } = world;
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');

    const req = omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'workers-1');
    const id = req.metadata.id;
    const status = await waitForStage(omni, id, 'PROVISIONED');
    expect(status.status).toBe('Provision Complete');
    expect(status.error).toBe('');
    // Labels copied from the request (Omni matches statuses to sets by them).
    expect(status.labels['omni.sidero.dev/machine-request-set']).toBe('workers');
    expect(requestResource(omni, id)?.metadata.finalizers).toContain(CONTROLLER);
    expect(privateResource(omni, id)?.metadata.annotations[STEP_ANNOTATION]).toBe('syncHARules');

    // Exactly one VM, running, and MRS.id is its SMBIOS UUID (what Omni matches the joining machine by).
    const vms = vmsOf(sim, id);
    expect(vms).toHaveLength(1);
    const vm = sim.vm(vms[0]!.vmid)!;
    expect(vm.running).toBe(true);
    const uuid = smbiosUuidOf(vm.config);
    expect(uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(status.id).toBe(uuid);
    expect(privateStateOf(omni, id)?.vmid).toBe(vm.vmid);

    // The machine boots, reads the join token from its seed and joins: Omni records the registration.
    const machine = bootAndJoin(world, id);
    expect(machine.uuid).toBe(uuid);
    expect(machine.token.startsWith('v2:')).toBe(true);
    const reg = omni.store.find(NS.infraProvider, TYPES.infraMachineRegistration, machine.uuid);
    expect(reg?.metadata.labels['omni.sidero.dev/machine-request']).toBe(id);
    expect(statusOf(omni, id)?.id).toBe(uuid);

    // Teardown: Omni removes the request; the provider deletes the VM and the seed and releases its finalizer.
    await deleteRequest(world, id);
    expect(leftovers(world)).toEqual(NOTHING_LEFT);
    expect(sim.events.filter((e) => e.kind === 'vm-destroyed')).toHaveLength(1);
    await daemon.waitForLog('machine deprovisioned');
    // No secret reached the log.
    expect(daemon.stdout + daemon.stderr).not.toContain(PROVIDER_TOKEN.tokenSecret);
    expect(daemon.stdout).not.toContain(omni.controllers.providerJoinToken);
    expect(daemon.stdout).not.toContain(machine.token);
  }, 120_000);

  it('links MRS.id through the InfraMachineRegistration when a machine joins with the request token', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni } = world;
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    const id = omni.controllers.createMachineRequest('cp', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'cp-1').metadata.id;
    await waitForStage(omni, id, 'PROVISIONED');
    // A status without a UUID (as a provider that never sets one leaves it): the registration created by the
    // join is what links the request to the machine.
    omni.store.mutate(NS.infraProvider, TYPES.machineRequestStatus, id, (res) => {
      const spec = fromBinary(MachineRequestStatusSpecSchema, res.spec.protoSpec);
      spec.id = '';
      res.spec = encodeSpec(MachineRequestStatusSpecSchema, spec);
    });
    expect(statusOf(omni, id)?.id).toBe('');
    const machine = bootAndJoin(world, id);
    await waitUntil(world, () => statusOf(omni, id)?.id === machine.uuid, { what: 'MRS.id to equal the joined machine' });
    expect(daemon.logs('machine registered; recording its UUID')).toHaveLength(1);
    expect(statusOf(omni, id)?.stage).toBe('PROVISIONED');
  }, 120_000);

  it('stays quiet once settled: no writes to Omni while idle, not even after the machine joins (no event storm)', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni } = world;
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    const id = omni.controllers.createMachineRequest('quiet', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'quiet-1').metadata.id;
    await waitForStage(omni, id, 'PROVISIONED');
    bootAndJoin(world, id);
    // Every write reaching Omni from now on, except the heartbeat's own and the leader lease's renewals.
    const writes: string[] = [];
    const stopCounting = omni.store.onChange((e) => {
      const md = e.resource?.metadata;
      if (md?.type !== TYPES.infraProviderHealthStatus && md?.type !== `Lease.${PROVIDER_ID}.infraprovider.sidero.dev`) {
        writes.push(`${e.type} ${md?.type ?? '?'}/${md?.id ?? '?'}`);
      }
    });
    // The window is measured on the daemon's own clock (three heartbeats, 1 s apart), not on the test's: a busy
    // machine slows the daemon's reaction to the join and its heartbeats alike.
    const beat = () => omni.store.find(NS.infraProviderEphemeral, TYPES.infraProviderHealthStatus, PROVIDER_ID)?.metadata.version ?? 0;
    const firstBeat = beat();
    await waitUntil(world, () => beat() >= firstBeat + 3, { what: () => `three heartbeats after the join (${beat() - firstBeat} so far)` });
    stopCounting();
    expect(writes).toEqual([]);
    expect(statusOf(omni, id)?.stage).toBe('PROVISIONED');
  }, 120_000);
});
