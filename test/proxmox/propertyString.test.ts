import { describe, expect, it } from 'vitest';
import {
  driveFormatFor,
  formatPropertyString,
  formats,
  formatTagList,
  isDriveKey,
  parsePropertyString,
  parseTagList,
  PropertyStringError,
  pveFormat,
} from '../../src/proxmox/propertyString.js';

function parseError(value: string, format: Parameters<typeof parsePropertyString>[1], path?: string): PropertyStringError {
  try {
    parsePropertyString(value, format, path);
  } catch (err) {
    expect(err).toBeInstanceOf(PropertyStringError);
    return err as PropertyStringError;
  }
  throw new Error(`expected "${value}" to be rejected`);
}

function formatError(fields: Record<string, string | number | boolean | undefined>, format: Parameters<typeof formatPropertyString>[1]): PropertyStringError {
  try {
    formatPropertyString(fields, format);
  } catch (err) {
    expect(err).toBeInstanceOf(PropertyStringError);
    return err as PropertyStringError;
  }
  throw new Error(`expected ${JSON.stringify(fields)} to be rejected`);
}

describe('parsePropertyString: valid values as PVE stores them', () => {
  it.each([
    ['drive: new disk', 'local-lvm:32,ssd=1', formats.drive, { file: 'local-lvm:32', ssd: '1' }],
    ['drive: explicit file=', 'file=local-lvm:vm-105-disk-0,iothread=1,size=32G', formats.scsi, { file: 'local-lvm:vm-105-disk-0', iothread: '1', size: '32G' }],
    ['drive: volume alias', 'volume=local:iso/x.iso,media=cdrom', formats.ide, { file: 'local:iso/x.iso', media: 'cdrom' }],
    ['drive: empty cdrom', 'none,media=cdrom', formats.ide, { file: 'none', media: 'cdrom' }],
    ['drive: all Go options', 'ceph:40,ssd=1,discard=on,iothread=1,cache=none,aio=io_uring', formats.scsi, { file: 'ceph:40', ssd: '1', discard: 'on', iothread: '1', cache: 'none', aio: 'io_uring' }],
    ['drive: lenient booleans', 'local:1,ssd=yes,backup=off,replicate=TRUE', formats.drive, { file: 'local:1', ssd: '1', backup: '0', replicate: '1' }],
    ['drive: throttle alias', 'local:1,bps_rd_length=5,mbps_rd=1.5', formats.drive, { file: 'local:1', bps_rd_max_length: '5', mbps_rd: '1.5' }],
    ['drive: empty parts ignored', 'local:1,,ssd=1, ', formats.drive, { file: 'local:1', ssd: '1' }],
    ['net: model carries MAC', 'virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1', formats.net, { model: 'virtio', macaddr: 'BC:24:11:00:00:01', bridge: 'vmbr0', firewall: '1' }],
    ['net: model alone', 'virtio,bridge=vmbr0,firewall=1,tag=20', formats.net, { model: 'virtio', bridge: 'vmbr0', firewall: '1', tag: '20' }],
    ['net: e1000 with trunks list', 'e1000=0A:00:00:00:00:01,bridge=vmbr1,trunks=10;20-30', formats.net, { model: 'e1000', macaddr: '0A:00:00:00:00:01', bridge: 'vmbr1', trunks: '10;20-30' }],
    ['net: explicit model= and macaddr=', 'model=virtio,macaddr=bc:24:11:aa:bb:cc', formats.net, { model: 'virtio', macaddr: 'bc:24:11:aa:bb:cc' }],
    ['hostpci: mapping', 'mapping=gpu-1,pcie=1,x-vga=1,rombar=0,mdev=nvidia-180', formats.hostpci, { mapping: 'gpu-1', pcie: '1', 'x-vga': '1', rombar: '0', mdev: 'nvidia-180' }],
    ['hostpci: raw host ids', '0000:01:00.0;0000:01:00.1,pcie=on', formats.hostpci, { host: '0000:01:00.0;0000:01:00.1', pcie: '1' }],
    ['cpu: model only', 'x86-64-v2-AES', formats.cpu, { cputype: 'x86-64-v2-AES' }],
    ['cpu: with flags', 'host,flags=+aes;-pcid,hidden=1', formats.cpu, { cputype: 'host', flags: '+aes;-pcid', hidden: '1' }],
    ['agent: Go form', 'enabled=true', formats.agent, { enabled: '1' }],
    ['agent: bare', '1,fstrim_cloned_disks=1', formats.agent, { enabled: '1', fstrim_cloned_disks: '1' }],
    ['agent: alias', 'enabled=1,freeze-fs-on-backup=0', formats.agent, { enabled: '1', 'freeze-fs': '0' }],
    ['memory: bare MiB', '8192', formats.memory, { current: '8192' }],
    ['smbios1', 'uuid=0b1e4f5a-0000-4000-8000-000000000001,serial=YWJj,base64=1', formats.smbios1, { uuid: '0b1e4f5a-0000-4000-8000-000000000001', serial: 'YWJj', base64: '1' }],
    ['efidisk', 'local-lvm:1,efitype=4m,pre-enrolled-keys=0', formats.efidisk, { file: 'local-lvm:1', efitype: '4m', 'pre-enrolled-keys': '0' }],
    ['machine: q35 + viommu', 'q35,viommu=intel', formats.machine, { type: 'q35', viommu: 'intel' }],
    ['machine: versioned', 'pc-i440fx-9.2+pve1', formats.machine, { type: 'pc-i440fx-9.2+pve1' }],
    ['boot order', 'order=scsi0;ide2;net0', formats.boot, { order: 'scsi0;ide2;net0' }],
    ['boot legacy', 'cdn', formats.boot, { legacy: 'cdn' }],
  ])('%s', (_name, value, format, expected) => {
    expect(parsePropertyString(value, format)).toEqual(expected);
  });
});

describe('parsePropertyString: rejects what PVE rejects, with PVE text', () => {
  it.each([
    ['bad boolean', 'virtio,bridge=vmbr0,firewall=x', formats.net, "invalid format - format error\nfirewall: type check ('boolean') failed - got 'x'"],
    ['unknown key', 'virtio,foo=1', formats.net, 'invalid format - invalid key in comma-separated list property: foo'],
    ['duplicate key', 'virtio,bridge=a,bridge=b', formats.net, 'invalid format - duplicate key in comma-separated list property: bridge'],
    ['two default values', 'virtio,e1000', formats.net, 'invalid format - duplicate key in comma-separated list property: model'],
    ['model twice via key alias', 'model=virtio,e1000=0A:00:00:00:00:01', formats.net, "invalid format - key alias 'model' is already defined"],
    ['mac twice via alias', 'macaddr=0A:00:00:00:00:01,virtio=0A:00:00:00:00:02', formats.net, "invalid format - key 'macaddr' is already defined (via alias)"],
    ['missing model', 'bridge=vmbr0', formats.net, 'invalid format - format error\nmodel: property is missing and it is not optional'],
    ['enum', 'virtio2,bridge=vmbr0', formats.net, "invalid format - format error\nmodel: value 'virtio2' does not have a value in the enumeration 'e1000, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e, i82551, i82557b, i82559er, ne2k_isa, ne2k_pci, pcnet, rtl8139, virtio, vmxnet3'"],
    ['vlan tag too big', 'virtio,tag=4095', formats.net, 'invalid format - format error\ntag: value must have a maximum value of 4094'],
    ['vlan tag zero', 'virtio,tag=0', formats.net, 'invalid format - format error\ntag: value must have a minimum value of 1'],
    ['vlan tag not int', 'virtio,tag=1.5', formats.net, "invalid format - format error\ntag: type check ('integer') failed - got '1.5'"],
    ['multicast MAC', 'virtio=01:00:00:00:00:01', formats.net, 'invalid format - format error\nmacaddr: invalid format - value does not look like a valid unicast MAC address'],
    ['bad bridge', 'virtio,bridge=vm br0', formats.net, "invalid format - format error\nbridge: invalid format - invalid bridge ID 'vm br0'"],
    ['missing key', 'virtio,=1', formats.net, 'invalid format - missing key in comma-separated list property'],
    ['empty value', 'virtio,bridge=', formats.net, 'invalid format - missing key in comma-separated list property'],
    ['no default key', 'abc', formats.smbios1, 'invalid format - value without key, but schema does not define a default key'],
    ['bad storage in volume', '1local:32', formats.drive, "invalid format - format error\nfile: invalid format - unable to parse volume ID '1local:32'"],
    ['drive cache enum', 'local:1,cache=fast', formats.drive, "invalid format - format error\ncache: value 'fast' does not have a value in the enumeration 'none, writethrough, writeback, unsafe, directsync'"],
    ['drive size', 'local:1,size=32X', formats.drive, 'invalid format - format error\nsize: invalid format - value does not look like a valid disk size: 32X'],
    ['iothread not on ide', 'local:1,iothread=1', formats.ide, 'invalid format - invalid key in comma-separated list property: iothread'],
    ['memory minimum', '8', formats.memory, 'invalid format - format error\ncurrent: value must have a minimum value of 16'],
    ['agent required', 'type=isa', formats.agent, 'invalid format - format error\nenabled: property is missing and it is not optional'],
    ['boot device', 'order=scsi0;ide9', formats.boot, "invalid format - format error\norder: invalid format - invalid boot device 'ide9'"],
    ['machine pattern', 'i440fx', formats.machine, 'invalid format - format error\ntype: value does not match the regex pattern'],
    ['mapping id', 'mapping=1gpu', formats.hostpci, "invalid format - format error\nmapping: invalid format - invalid configuration ID '1gpu'"],
    ['mdev pattern', 'mapping=gpu,mdev=a/b', formats.hostpci, 'invalid format - format error\nmdev: value does not match the regex pattern'],
    ['smbios uuid', 'uuid=nope', formats.smbios1, 'invalid format - format error\nuuid: value does not match the regex pattern'],
  ])('%s', (_name, value, format, message) => {
    const err = parseError(value, format);
    expect(err.message).toBe(message);
  });

  it('names the key and prefixes the parameter path like PVE does', () => {
    const err = parseError('virtio,firewall=maybe', formats.net, 'net0');
    expect(err.key).toBe('net0.firewall');
    expect(err.errors).toEqual({ 'net0.firewall': "type check ('boolean') failed - got 'maybe'" });
    expect(err.detail).toBe("format error\nnet0.firewall: type check ('boolean') failed - got 'maybe'");
  });

  it('collects every bad key in one error', () => {
    const err = parseError('virtio,tag=0,firewall=x', formats.net);
    expect(Object.keys(err.errors).sort()).toEqual(['firewall', 'tag']);
  });
});

describe('formatPropertyString', () => {
  it.each([
    ['Go net0', { model: 'virtio', bridge: 'vmbr0', firewall: true }, formats.net, 'virtio,bridge=vmbr0,firewall=1'],
    ['Go net0 with VLAN', { model: 'virtio', bridge: 'vmbr0', firewall: 1, tag: 20 }, formats.net, 'virtio,bridge=vmbr0,firewall=1,tag=20'],
    ['net with MAC', { model: 'virtio', macaddr: 'BC:24:11:00:00:01', bridge: 'vmbr0' }, formats.net, 'virtio=BC:24:11:00:00:01,bridge=vmbr0'],
    ['default key first whatever the order', { ssd: 1, file: 'local-lvm:32' }, formats.scsi, 'local-lvm:32,ssd=1'],
    ['Go scsi0 option order kept', { file: 'local-lvm:32', ssd: 1, discard: 'on', iothread: 1, cache: 'none', aio: 'native' }, formats.scsi, 'local-lvm:32,ssd=1,discard=on,iothread=1,cache=none,aio=native'],
    ['undefined skipped', { mapping: 'gpu', pcie: undefined, 'x-vga': true }, formats.hostpci, 'mapping=gpu,x-vga=1'],
    ['boolean words normalised', { enabled: 'true' }, formats.agent, '1'],
    ['boot order keeps ;', { order: 'scsi0;ide2;net0' }, formats.boot, 'order=scsi0;ide2;net0'],
    ['efidisk', { file: 'local-lvm:1', efitype: '4m', 'pre-enrolled-keys': false }, formats.efidisk, 'local-lvm:1,efitype=4m,pre-enrolled-keys=0'],
  ])('%s', (_name, fields, format, expected) => {
    const out = formatPropertyString(fields, format);
    expect(out).toBe(expected);
  });

  it('can write the default key with its name', () => {
    expect(formatPropertyString({ enabled: 1 }, formats.agent, { bareDefaultKey: false })).toBe('enabled=1');
  });

  it('round-trips through the parser', () => {
    const fields = { model: 'virtio', macaddr: 'BC:24:11:00:00:01', bridge: 'vmbr0', firewall: '1', tag: '7', trunks: '1;2-3' };
    expect(parsePropertyString(formatPropertyString(fields, formats.net), formats.net)).toEqual(fields);
  });

  describe('refuses smuggling attempts', () => {
    it.each([
      ['bridge with extra property', { model: 'virtio', bridge: 'vmbr0,firewall=0' }, formats.net, 'bridge', "value must not contain ','"],
      ['bridge with ;', { model: 'virtio', bridge: 'vmbr0;x' }, formats.net, 'bridge', "value must not contain ';'"],
      ['bridge with newline (config injection)', { model: 'virtio', bridge: 'vmbr0\nhookscript: local:snippets/x' }, formats.net, 'bridge', 'control characters'],
      ['storage with extra option', { file: 'local-lvm:32,cache=unsafe' }, formats.scsi, 'file', "value must not contain ','"],
      ['default key with =', { file: 'import-from=/etc/shadow' }, formats.scsi, 'file', "value must not contain '='"],
      ['mapping with extra', { mapping: 'gpu,host=0000:01:00.0' }, formats.hostpci, 'mapping', "value must not contain ','"],
      ['cpu with args', { cputype: 'host,args=-x' }, formats.cpu, 'cputype', "value must not contain ','"],
      ['boot order with a second key', { order: 'scsi0,legacy=c' }, formats.boot, 'order', "value must not contain ','"],
      ['mdev with separator', { mapping: 'gpu', mdev: 'a;b' }, formats.hostpci, 'mdev', "value must not contain ';'"],
      ['unknown key', { model: 'virtio', hookscript: 'x' }, formats.net, 'hookscript', 'unknown key'],
      ['alias key', { model: 'virtio', virtio: 'BC:24:11:00:00:01' }, formats.net, 'virtio', 'alias'],
      ['bad value type', { model: 'virtio', tag: 5000 }, formats.net, 'tag', 'maximum value of 4094'],
      ['boolean for int', { model: 'virtio', tag: true }, formats.net, 'tag', 'boolean given'],
      ['non-finite', { model: 'virtio', tag: Number.NaN }, formats.net, 'tag', 'finite'],
      ['empty string', { model: 'virtio', bridge: '' }, formats.net, 'bridge', 'empty value'],
      ['padded value', { model: 'virtio', bridge: ' vmbr0' }, formats.net, 'bridge', 'whitespace'],
      ['missing required', { bridge: 'vmbr0' }, formats.net, 'model', 'property is missing'],
    ])('%s', (_name, fields, format, key, fragment) => {
      const err = formatError(fields, format);
      expect(err.key).toBe(key);
      expect(err.message).toContain(fragment);
    });
  });
});

describe('pveFormat', () => {
  it.each([
    ['storageId', 'local-lvm', true],
    ['storageId', 'Ceph_Pool.1', true],
    ['storageId', 'a', false],
    ['storageId', '1local', false],
    ['storageId', 'local-', false],
    ['storageId', 'local lvm', false],
    ['bridgeId', 'vmbr0', true],
    ['bridgeId', 'vnet_10.a-b', true],
    ['bridgeId', 'vmbr0,firewall=0', false],
    ['bridgeId', '', false],
    ['dnsName', 'req-1.example', true],
    ['dnsName', '-bad', false],
    ['dnsName', 'under_score', false],
    ['tag', 'machine-request.set-1', true],
    ['tag', 'a+b', true],
    ['tag', '-x', false],
    ['tag', 'a;b', false],
    ['tagList', 'a;b c,d', true],
    ['tagList', '', true],
    ['tagList', 'a;-b', false],
    ['mappingId', 'gpu-1', true],
    ['mappingId', 'g', false],
    ['mappingId', '1gpu', false],
    ['macAddress', 'BC:24:11:00:00:01', true],
    ['macAddress', '01:24:11:00:00:01', false],
    ['poolId', 'team.a-1_x', true],
    ['poolId', 'a/b', false],
    ['pciId', '0000:01:00.0', true],
    ['pciId', '01:00.0;01:00.1', true],
    ['pciId', '1:0.0', false],
    ['nodeName', 'pve1', true],
    ['nodeName', 'pve_1', false],
    ['volumeId', 'local:iso/a.iso', true],
    ['volumeId', 'iso/a.iso', false],
  ] as const)('%s(%j) = %s', (fn, value, expected) => {
    expect((pveFormat[fn] as (s: string) => boolean)(value)).toBe(expected);
  });

  it.each([
    [100, true],
    [999999999, true],
    [99, false],
    [1000000000, false],
    ['0100', false],
  ])('vmid(%j) = %s', (v, expected) => {
    expect(pveFormat.vmid(v)).toBe(expected);
  });
});

describe('drive keys and tags', () => {
  it.each([
    ['scsi0', formats.scsi],
    ['scsi30', formats.scsi],
    ['ide3', formats.ide],
    ['sata5', formats.sata],
    ['virtio15', formats.virtio],
    ['efidisk0', formats.efidisk],
    ['scsi31', undefined],
    ['ide4', undefined],
    ['scsi01', undefined],
    ['net0', undefined],
  ])('%s', (key, format) => {
    expect(driveFormatFor(key)).toBe(format);
  });

  it('efidisk0 is not a bootable drive key', () => {
    expect(isDriveKey('efidisk0')).toBe(false);
    expect(isDriveKey('scsi0')).toBe(true);
  });

  it('tag lists split on every PVE separator and reject bad tags', () => {
    expect(parseTagList('b;a, c d')).toEqual(['b', 'a', 'c', 'd']);
    expect(formatTagList(['x', 'machine-request.s1'])).toBe('x;machine-request.s1');
    expect(() => formatTagList(['ok', 'no;pe'])).toThrow(PropertyStringError);
  });
});
