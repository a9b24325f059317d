import { describe, expect, it } from 'vitest';
import { formats, parsePropertyString } from '../../src/proxmox/propertyString.js';
import { VmPlanError } from '../../src/provision/errors.js';
import { planVm, type PlanContext } from '../../src/provision/planVm.js';
import { parseProviderData, validateProviderData, type ProviderData } from '../../src/provision/providerData.js';

const BASE = 'cores: 4\nmemory: 8192\ndisk_size: 40\nstorage_selector: name == "local-lvm"\n';
const UUID = '0b1e4f5a-1111-4222-8333-444455556666';

function ctx(over: Partial<PlanContext> = {}): PlanContext {
  return {
    requestId: 'talos-abc12',
    vmid: 105,
    machineRequestSetId: 'workers',
    smbiosUuid: UUID,
    isoVolid: 'local:iso/0a1b2c.iso',
    diskStorages: { primary: 'local-lvm', additional: [] },
    ...over,
  };
}

const plan = (yamlExtra: string, over: Partial<PlanContext> = {}): Record<string, string | number> =>
  planVm(parseProviderData(BASE + yamlExtra), ctx(over));

describe('planVm: the Go provider\'s create parameters for the same input', () => {
  it('minimal provider data', () => {
    expect(plan('')).toEqual({
      vmid: 105,
      smbios1: `uuid=${UUID}`,
      name: 'talos-abc12',
      ide2: 'local:iso/0a1b2c.iso,media=cdrom',
      cpu: 'x86-64-v2-AES',
      cores: 4,
      sockets: 1,
      memory: 8192,
      scsi0: 'local-lvm:40',
      scsihw: 'virtio-scsi-single',
      onboot: 1,
      net0: 'virtio,bridge=vmbr0,firewall=1',
      agent: 'enabled=1',
      tags: 'machine-request.workers',
      boot: 'order=scsi0;ide2;net0',
    });
  });

  it('no set → no tags parameter', () => {
    const p = planVm(parseProviderData(BASE), { ...ctx(), machineRequestSetId: undefined } as PlanContext);
    expect(p).not.toHaveProperty('tags');
  });

  it.each([
    ['vlan', 'vlan: 20\n', 'net0', 'virtio,bridge=vmbr0,firewall=1,tag=20'],
    ['bridge', 'network_bridge: vmbr7\n', 'net0', 'virtio,bridge=vmbr7,firewall=1'],
    ['firewall off', 'network_firewall: false\n', 'net0', 'virtio,bridge=vmbr0,firewall=0'],
    ['all disk flags in Go order', 'disk_aio: io_uring\ndisk_cache: writeback\ndisk_iothread: true\ndisk_discard: true\ndisk_ssd: true\n', 'scsi0', 'local-lvm:40,ssd=1,discard=on,iothread=1,cache=writeback,aio=io_uring'],
    ['cpu type', 'cpu_type: host\n', 'cpu', 'host'],
    ['cpu options', 'cpu_type: "host,flags=+aes"\n', 'cpu', 'host,flags=+aes'],
    ['machine q35', 'machine_type: q35\n', 'machine', 'q35'],
    ['machine i440fx means pc', 'machine_type: i440fx\n', 'machine', 'pc'],
    ['numa', 'numa: true\n', 'numa', 1],
    ['hugepages 2MB', 'numa: true\nhugepages: 2MB\n', 'hugepages', '2'],
    ['hugepages 1GB', 'numa: true\nhugepages: 1GB\n', 'hugepages', '1024'],
    ['hugepages any', 'numa: true\nhugepages: any\n', 'hugepages', 'any'],
    ['balloon off', 'balloon: false\n', 'balloon', 0],
    ['sockets', 'sockets: 2\n', 'sockets', 2],
    ['pool', 'pool: omni\n', 'pool', 'omni'],
    ['description', 'description: "Talos worker\\nmanaged by Omni"\n', 'description', 'Talos worker\nmanaged by Omni'],
    ['bios seabios', 'bios: seabios\n', 'bios', 'seabios'],
    ['ovmf adds efidisk0 on the system disk storage', 'bios: ovmf\n', 'efidisk0', 'local-lvm:1,efitype=4m,pre-enrolled-keys=0'],
    ['user tags merged with the set tag', 'tags: [prod, Team-A]\n', 'tags', 'prod;Team-A;machine-request.workers'],
    ['duplicate tags collapse (PVE lowercases)', 'tags: [PROD, prod, machine-request.workers]\n', 'tags', 'PROD;machine-request.workers'],
  ])('%s', (_name, extra, key, value) => {
    expect(plan(extra)[key]).toEqual(value);
  });

  it.each([
    ['balloon true', 'balloon: true\n', 'balloon'],
    ['numa false', 'numa: false\n', 'numa'],
    ['no bios', '', 'bios'],
    ['seabios has no efidisk', 'bios: seabios\n', 'efidisk0'],
    ['no machine', '', 'machine'],
    ['no hugepages', '', 'hugepages'],
    ['no pool', '', 'pool'],
    ['empty description', 'description: ""\n', 'description'],
    ['seed slot stays free', '', 'ide0'],
  ])('%s → parameter absent', (_name, extra, key) => {
    expect(plan(extra)).not.toHaveProperty(key);
  });

  it('additional disks, NICs and PCI devices', () => {
    const p = plan(
      [
        'machine_type: q35',
        'additional_disks:',
        '  - {disk_size: 100, storage_selector: \'name == "ceph-ssd"\', disk_ssd: true, disk_cache: none}',
        '  - {disk_size: 5, storage_selector: \'name == "nfs-bulk"\'}',
        'additional_nics:',
        '  - {bridge: vmbr1}',
        '  - {bridge: vmbr2, vlan: 30, firewall: true, model: e1000}',
        'pci_devices:',
        '  - {mapping: gpu-1, pcie: true, primary_gpu: true, rombar: true}',
        '  - {mapping: gpu-2, rombar: false, mdev: nvidia-180}',
        '',
      ].join('\n'),
      { diskStorages: { primary: 'local-lvm', additional: ['ceph-ssd', 'nfs-bulk'] } },
    );
    expect(p.scsi1).toBe('ceph-ssd:100,ssd=1,cache=none');
    expect(p.scsi2).toBe('nfs-bulk:5');
    expect(p.net1).toBe('virtio,bridge=vmbr1,firewall=0');
    expect(p.net2).toBe('e1000,bridge=vmbr2,firewall=1,tag=30');
    expect(p.hostpci0).toBe('mapping=gpu-1,pcie=1,x-vga=1,rombar=1');
    expect(p.hostpci1).toBe('mapping=gpu-2,rombar=0,mdev=nvidia-180');
    expect(p).not.toHaveProperty('scsi3');
    expect(p).not.toHaveProperty('net3');
    expect(p).not.toHaveProperty('hostpci2');
  });

  it('every property-string parameter reads back with PVE\'s own format', () => {
    const p = plan(
      'bios: ovmf\nmachine_type: q35\nvlan: 5\nadditional_nics: [{bridge: vmbr1, vlan: 9}]\npci_devices: [{mapping: gpu, pcie: true}]\n',
    );
    expect(parsePropertyString(String(p.scsi0), formats.scsi)).toEqual({ file: 'local-lvm:40' });
    expect(parsePropertyString(String(p.ide2), formats.ide)).toEqual({ file: 'local:iso/0a1b2c.iso', media: 'cdrom' });
    expect(parsePropertyString(String(p.net0), formats.net)).toEqual({ model: 'virtio', bridge: 'vmbr0', firewall: '1', tag: '5' });
    expect(parsePropertyString(String(p.net1), formats.net)).toMatchObject({ bridge: 'vmbr1', tag: '9' });
    expect(parsePropertyString(String(p.hostpci0), formats.hostpci)).toEqual({ mapping: 'gpu', pcie: '1' });
    expect(parsePropertyString(String(p.agent), formats.agent)).toEqual({ enabled: '1' });
    expect(parsePropertyString(String(p.efidisk0), formats.efidisk)).toMatchObject({ efitype: '4m' });
    expect(parsePropertyString(String(p.boot), formats.boot)).toEqual({ order: 'scsi0;ide2;net0' });
    expect(parsePropertyString(String(p.smbios1), formats.smbios1)).toEqual({ uuid: UUID });
  });

  it.each([
    ['std', 'std'],
    ['none', 'none'],
    ['type=qxl,memory=32', 'qxl,memory=32'],
    ['memory=16,virtio-gl,clipboard=vnc', 'virtio-gl,memory=16,clipboard=vnc'],
  ])('vga %s → vga=%s (upstream passes it as the VM\'s vga option)', (value, sent) => {
    const p = plan(`vga: "${value}"\n`);
    expect(p.vga).toBe(sent);
    expect(parsePropertyString(String(p.vga), formats.vga)).toEqual(parsePropertyString(value, formats.vga));
  });

  it('vga unset → no vga parameter (PVE default)', () => {
    expect(plan('')).not.toHaveProperty('vga');
  });

  it('usb_devices → usb<i>=mapping=<m>[,usb3=1] in list order (upstream v0.3), no ostype up to 5 devices', () => {
    const p = plan('usb_devices:\n  - {mapping: rtl-sdr, usb3: true}\n  - {mapping: zigbee-controller}\n  - {mapping: ups, usb3: false}\n');
    expect(p.usb0).toBe('mapping=rtl-sdr,usb3=1');
    expect(p.usb1).toBe('mapping=zigbee-controller');
    expect(p.usb2).toBe('mapping=ups');
    expect(p).not.toHaveProperty('usb3');
    expect(p).not.toHaveProperty('ostype');
    expect(parsePropertyString(String(p.usb0), formats.usb)).toEqual({ mapping: 'rtl-sdr', usb3: '1' });
    const five = plan(`usb_devices: [${Array.from({ length: 5 }, (_, i) => `{mapping: d${i}}`).join(', ')}]\n`);
    expect(five).toHaveProperty('usb4');
    expect(five).not.toHaveProperty('ostype');
  });

  it('more than 5 usb devices → ostype=l26 (qemu-server plugs usb5..13 only into qemu-xhci, used for l26)', () => {
    const p = plan(`usb_devices: [${Array.from({ length: 14 }, (_, i) => `{mapping: d${i}}`).join(', ')}]\n`);
    expect(p.usb13).toBe('mapping=d13');
    expect(p.ostype).toBe('l26');
  });

  it('boot order: disk first (empty on first boot, so the ISO boots), then the Talos ISO', () => {
    const order = String(plan('').boot).replace('order=', '').split(';');
    expect(order.indexOf('scsi0')).toBeLessThan(order.indexOf('ide2'));
    expect(order).not.toContain('ide0');
  });

  it('is pure: same input, same output, input untouched', () => {
    const data = parseProviderData(`${BASE}tags: [a]\n`);
    const frozen = structuredClone(data);
    expect(planVm(data, ctx())).toEqual(planVm(data, ctx()));
    expect(data).toEqual(frozen);
  });
});

describe('planVm: refuses inputs Proxmox would reject or that could smuggle options', () => {
  const data = parseProviderData(BASE);
  it.each([
    ['vmid too small', { vmid: 99 }, 'vmid', 'vmid 99 is not a valid Proxmox VM id'],
    ['request id not a dns name', { requestId: 'bad_name' }, 'name', 'machine request id "bad_name" is not a valid Proxmox VM name (dns-name)'],
    ['uuid', { smbiosUuid: 'x' }, 'smbios1', 'SMBIOS UUID "x" is not a UUID'],
    ['iso volid', { isoVolid: 'x.iso' }, 'ide2', 'ISO volume "x.iso" is not a volume id'],
    ['iso volid with an option', { isoVolid: 'local:iso/x.iso,media=disk' }, 'ide2', "VM parameter ide2: file: value must not contain ',' - got 'local:iso/x.iso,media=disk'"],
    ['storage id smuggling', { diskStorages: { primary: 'local-lvm:32,cache=unsafe', additional: [] } }, 'scsi0', 'VM parameter scsi0: "local-lvm:32,cache=unsafe" is not a valid storage id'],
    ['set id that is not a tag', { machineRequestSetId: 'a;b' }, 'tags', 'tag "machine-request.a;b" is not a valid Proxmox tag'],
    ['storage count mismatch', { diskStorages: { primary: 'local-lvm', additional: ['x'] } }, 'additional_disks', '0 additional disk(s) configured but 1 storage(s) chosen'],
  ])('%s', (_name, over, field, message) => {
    let caught: unknown;
    try {
      planVm(data, ctx(over as Partial<PlanContext>));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(VmPlanError);
    expect((caught as VmPlanError).field).toBe(field);
    expect((caught as VmPlanError).message).toBe(message);
  });

  it('re-checks hand-built provider data (not only parsed YAML)', () => {
    const bad: ProviderData = { ...validateProviderData({ cores: 1, memory: 2048, disk_size: 5, storage_selector: 'true' }), network_bridge: 'vmbr0,firewall=0' };
    expect(() => planVm(bad, ctx())).toThrow(/VM parameter net0: bridge: value must not contain ','/);
    const badCpu: ProviderData = { ...bad, network_bridge: 'vmbr0', cpu_type: 'host,args=-x' };
    expect(() => planVm(badCpu, ctx())).toThrow(/VM parameter cpu: invalid key in comma-separated list property: args/);
  });
});
