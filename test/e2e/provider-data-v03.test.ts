// The Go provider's v0.2/v0.3 provider-data keys, end to end: the daemon as a child process against the in-process
// Omni and the Proxmox simulator (which validates each VM option like PVE and checks USB mappings at start).
import { afterEach, describe, expect, it } from 'vitest';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import {
  deleteRequest,
  leftovers,
  NOTHING_LEFT,
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
