// The Go provider's v0.2/v0.3 provider-data keys, end to end: the daemon as a child process against the in-process
// Omni and the Proxmox simulator (which validates each VM option like PVE and checks USB mappings at start).
import { afterEach, describe, expect, it } from 'vitest';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { GO_PROVIDER_POOL_COMMENT } from '../../src/provision/pools.js';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
  privateStateOf,
  PROVIDER_TOKEN,
  SMALL_VM,
  startDaemonProcess,
  startWorld,
  vmsOf,
  waitForStage,
  type DaemonProcess,
  type World,
} from '../helpers/e2e.js';

let world: World | undefined;
let daemon: DaemonProcess | undefined;
afterEach(async () => {
  await daemon?.crash();
  await world?.close();
  daemon = undefined;
  world = undefined;
});

describe('usb_devices and vga (upstream v0.2/v0.3)', () => {
  it('creates and starts VMs with their USB devices on nodes that have the mappings, and tears them down', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni, sim } = world;
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    // rtl-sdr has entries on pve1 and pve2, zigbee only on pve3 (test/fixtures/pve-3node.json).
    const sdr = omni.controllers.createMachineRequest('usb', {
      talosVersion: 'v1.11.5',
      providerData: `${SMALL_VM}vga: "qxl,memory=32"\nusb_devices:\n  - mapping: rtl-sdr\n    usb3: true\n`,
    }, 'usb-1').metadata.id;
    const zigbee = omni.controllers.createMachineRequest('usb', {
      talosVersion: 'v1.11.5',
      providerData: `${SMALL_VM}usb_devices:\n  - mapping: zigbee\n`,
    }, 'usb-2').metadata.id;
    await waitForStage(omni, sdr, 'PROVISIONED');
    await waitForStage(omni, zigbee, 'PROVISIONED');

    const [a] = vmsOf(sim, sdr);
    expect(a?.running).toBe(true);
    expect(['pve1', 'pve2']).toContain(a?.node);
    expect(a?.config.get('usb0')).toBe('mapping=rtl-sdr,usb3=1');
    expect(a?.config.get('vga')).toBe('qxl,memory=32');
    const [b] = vmsOf(sim, zigbee);
    expect(b?.running).toBe(true);
    expect(b?.node).toBe('pve3');
    expect(b?.config.get('usb0')).toBe('mapping=zigbee');
    expect(b?.config.has('vga')).toBe(false);

    await deleteRequest(world, sdr);
    await deleteRequest(world, zigbee);
    expect(leftovers(world)).toEqual(NOTHING_LEFT);
  }, 120_000);

  it('an unknown USB mapping: FAILED naming usb_devices[0].mapping, and Proxmox received no write', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni, sim } = world;
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    const id = omni.controllers.createMachineRequest('usb', {
      talosVersion: 'v1.11.5',
      providerData: `${SMALL_VM}usb_devices:\n  - mapping: no-such-dongle\n`,
    }, 'usb-bad').metadata.id;
    const status = await waitForStage(omni, id, 'FAILED');
    expect(status.error).toBe(
      'provider data: usb_devices[0].mapping: no USB resource mapping "no-such-dongle" in the cluster (mappings the token can see: ' +
        'rtl-sdr, zigbee; the token needs Mapping.Use on /mapping/usb/no-such-dongle)',
    );
    expect(writeCalls(sim)).toEqual([]);
    expect(sim.tasks({})).toEqual([]);
  }, 120_000);
});

describe('vmid_range (upstream PR #81)', () => {
  it('a machine set takes the lowest free IDs of its range, skipping a foreign VM; an exhausted range fails naming vmid_range, with no VM', async ({ signal }) => {
    world = await startWorld({ signal });
    const { omni, sim } = world;
    sim.externalCreateVm({ vmid: 5001, node: 'pve1', name: 'foreign' });
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    const data = `${SMALL_VM}vmid_range: "5000-5003"\n`;
    const ids = ['r-1', 'r-2', 'r-3'].map((n) => omni.controllers.createMachineRequest('ranged', { talosVersion: 'v1.11.5', providerData: data }, n).metadata.id);
    for (const id of ids) await waitForStage(omni, id, 'PROVISIONED');
    const vmids = ids.map((id) => vmsOf(sim, id)[0]?.vmid).sort();
    expect(vmids).toEqual([5000, 5002, 5003]);
    expect(sim.vm(5001)?.config.name).toBe('foreign');

    const full = omni.controllers.createMachineRequest('ranged', { talosVersion: 'v1.11.5', providerData: data }, 'r-4').metadata.id;
    const status = await waitForStage(omni, full, 'FAILED');
    expect(status.error).toMatch(/^pickNode: provider data: vmid_range: no free VMID in 5000-5003 \(all 4 in use: 5000: VM r-\d; 5001: VM foreign; /);
    expect(vmsOf(sim, full)).toEqual([]);
    // (A freed ID is taken on the failed request's retry, 60 s later: test/provision/vmidRange.test.ts shows it.)
    for (const id of [...ids, full]) await deleteRequest(world, id);
    expect(leftovers(world)).toEqual({ ...NOTHING_LEFT, vms: [5001] }); // the foreign VM stays, untouched
  }, 180_000);
});

describe('pool unset: the machine set\'s pool the Go provider made (private-state field 12)', () => {
  it('VMs of a set moved from the Go provider join its pool, record it, and the last teardown removes the empty pool', async ({ signal }) => {
    world = await startWorld({ signal, fixture: { pools: [{ poolid: 'moved', comment: GO_PROVIDER_POOL_COMMENT }, { poolid: 'fresh-other', comment: 'ops' }] } });
    const { omni, sim } = world;
    for (const ugid of ['omni@pve', PROVIDER_TOKEN.tokenId]) sim.access.grant('/pool', ugid, { privs: ['Pool.Allocate', 'Pool.Audit'] });
    daemon = startDaemonProcess(world);
    await daemon.waitForLog('infra provider started');
    const moved = ['m-1', 'm-2'].map((n) => omni.controllers.createMachineRequest('moved', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, n).metadata.id);
    const fresh = omni.controllers.createMachineRequest('fresh', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'f-1').metadata.id;
    for (const id of [...moved, fresh]) await waitForStage(omni, id, 'PROVISIONED');
    for (const id of moved) {
      expect(privateStateOf(omni, id)?.pool).toBe('moved');
      expect(sim.state.vms.get(vmsOf(sim, id)[0]!.vmid)?.pool).toBe('moved');
    }
    // A new set gets no pool (none is created).
    expect(privateStateOf(omni, fresh)?.pool).toBe('');
    expect(sim.state.vms.get(vmsOf(sim, fresh)[0]!.vmid)?.pool).toBeUndefined();

    await deleteRequest(world, moved[0]!);
    expect(sim.state.pools.has('moved')).toBe(true);
    await deleteRequest(world, moved[1]!);
    expect(sim.state.pools.has('moved')).toBe(false);
    await deleteRequest(world, fresh);
    expect([...sim.state.pools.keys()]).toEqual(['fresh-other']);
    expect(writeCalls(sim).filter((r) => r.path.startsWith('/pools'))).toHaveLength(1);
    expect(leftovers(world)).toEqual(NOTHING_LEFT);
  }, 180_000);
});

