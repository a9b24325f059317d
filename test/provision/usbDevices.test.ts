// usb_devices against the simulator over HTTPS, through every step to a running VM: the slots qemu-server starts
// (usb5 and up need ostype l26, which the plan adds), and placement on the node that has the mappings.
import { afterEach, describe, expect, it } from 'vitest';
import { basicData, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const six = Array.from({ length: 6 }, (_, i) => ({ id: `dongle-${i}`, nodes: ['pve2'] }));

describe('usb_devices through to a running VM', () => {
  it('six USB devices: usb0..usb5 with ostype l26, on the one node with the mappings, and the VM starts', async () => {
    h = await startPveHarness({ fixture: { usbMappings: six } });
    const data = `${basicData}usb_devices:\n${six.map((m, i) => `  - {mapping: ${m.id}${i === 0 ? ', usb3: true' : ''}}`).join('\n')}\n`;
    const state = await runSteps(h.provisioner, request('usb-six', data));
    const vm = h.sim.vm(state.vmid)!;
    expect(state.node).toBe('pve2');
    expect(vm.running).toBe(true);
    expect(vm.config).toMatchObject({ usb0: 'mapping=dongle-0,usb3=1', usb5: 'mapping=dongle-5', ostype: 'l26' });
  });

  it('five USB devices: no ostype, and the VM starts', async () => {
    h = await startPveHarness({ fixture: { usbMappings: six } });
    const data = `${basicData}usb_devices:\n${six.slice(0, 5).map((m) => `  - {mapping: ${m.id}}`).join('\n')}\n`;
    const state = await runSteps(h.provisioner, request('usb-five', data));
    const vm = h.sim.vm(state.vmid)!;
    expect(vm.running).toBe(true);
    expect(vm.config.usb4).toBe('mapping=dongle-4');
    expect(vm.config.ostype).toBeUndefined();
  });
});
