import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { ProviderDataError } from '../../src/provision/errors.js';
import {
  parseProviderData,
  providerDataSchema,
  providerDataSchemaJson,
  validateProviderData,
  type ProviderData,
} from '../../src/provision/providerData.js';

const BASE = 'cores: 2\nmemory: 4096\ndisk_size: 20\nstorage_selector: name == "local-lvm"\n';

function rejects(yamlText: string): ProviderDataError {
  try {
    parseProviderData(yamlText);
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderDataError);
    return err as ProviderDataError;
  }
  throw new Error(`expected rejection of:\n${yamlText}`);
}

/** Every key set, so the compiler forces this object to cover the whole ProviderData type. */
const everything: Required<ProviderData> = {
  cores: 4,
  sockets: 2,
  memory: 8192,
  disk_size: 40,
  storage_selector: 'name == "local-lvm"',
  node: 'pve1',
  allowed_nodes: ['pve1', 'pve2'],
  placement_strategy: 'binpack',
  network_bridge: 'vmbr1',
  vlan: 20,
  network_firewall: false,
  disk_ssd: true,
  disk_discard: true,
  disk_iothread: true,
  disk_cache: 'none',
  disk_aio: 'io_uring',
  cpu_type: 'host',
  machine_type: 'q35',
  numa: true,
  hugepages: '1GB',
  balloon: false,
  bios: 'ovmf',
  vga: 'qxl,memory=32',
  description: 'talos worker',
  hostname: 'request-id',
  tags: ['prod'],
  pool: 'omni',
  additional_disks: [
    { disk_size: 100, storage_selector: 'true', disk_ssd: true, disk_discard: false, disk_iothread: true, disk_cache: 'writeback', disk_aio: 'native' },
  ],
  additional_nics: [
    {
      bridge: 'vmbr2',
      vlan: 30,
      firewall: true,
      model: 'e1000',
      address_pool: { cidr: '192.168.5.0/24', addresses: ['192.168.5.20', '192.168.5.21'], dns_servers: [], search_domains: [], routes: [] },
    },
  ],
  pci_devices: [{ mapping: 'gpu-1', pcie: true, primary_gpu: true, rombar: false, mdev: 'nvidia-180' }],
  ha: {
    state: 'started',
    comment: 'talos',
    max_restart: 2,
    max_relocate: 1,
    failback: true,
    rules: ['keep-apart'],
    node_affinity_nodes: ['pve1', 'pve2'],
    node_affinity_strict: true,
    resource_affinity: 'negative',
  },
  usb_devices: [{ mapping: 'rtl-sdr', usb3: true }],
  vmid_range: '1000-1099',
  address_pool: {
    cidr: '10.0.0.0/24',
    range: '10.0.0.10-10.0.0.50',
    gateway: '10.0.0.1',
    dns_servers: ['1.1.1.1', '1.0.0.1'],
    search_domains: ['lan.example'],
    mtu: 1500,
    routes: [{ to: '192.168.0.0/16', via: '10.0.0.254' }],
  },
};

describe('schema and type agree', () => {
  it('every schema property is a ProviderData key and vice versa (top level and nested)', () => {
    expect(Object.keys(providerDataSchema.properties).sort()).toEqual(Object.keys(everything).sort());
    const items = providerDataSchema.properties;
    expect(Object.keys(items.additional_disks.items.properties).sort()).toEqual(Object.keys(everything.additional_disks[0] ?? {}).sort());
    expect(Object.keys(items.additional_nics.items.properties).sort()).toEqual(Object.keys(everything.additional_nics[0] ?? {}).sort());
    expect(Object.keys(items.pci_devices.items.properties).sort()).toEqual(Object.keys(everything.pci_devices[0] ?? {}).sort());
    expect(Object.keys(items.usb_devices.items.properties).sort()).toEqual(Object.keys(everything.usb_devices[0] ?? {}).sort());
    expect(Object.keys(items.ha.properties).sort()).toEqual(Object.keys(everything.ha).sort());
  });

  it('ha: the Go provider README and PR #72 blocks parse; defaults fill in; unknown keys and PVE-invalid ids are named', () => {
    const readme = parseProviderData(
      'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: "true"\nha:\n  state: started\n  resource_affinity: negative # spread\n' +
        '  node_affinity_nodes:\n    - pve1\n    - pve2\n',
    );
    expect(readme.ha).toEqual({ state: 'started', resource_affinity: 'negative', node_affinity_nodes: ['pve1', 'pve2'], node_affinity_strict: false, rules: [] });
    const pr72 = parseProviderData(
      'cores: 1\nsockets: 1\nmemory: 2048\ndisk_size: 8\nstorage_selector: name == \'local\'\nnetwork_bridge: vmbr2\nha:\n  rules: []\n' +
        '  node_affinity_nodes:\n    - pve-1\n    - pve-2\n    - pve-3\n  resource_affinity: negative\n  state: started\n',
    );
    expect(pr72.ha?.node_affinity_nodes).toEqual(['pve-1', 'pve-2', 'pve-3']);
    expect(parseProviderData('cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: "true"\n').ha).toBeUndefined();
    expect(rejects('cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: "true"\nha:\n  stat: started\n').message).toBe(
      'provider data: ha: unknown key "stat" (did you mean "state"?)',
    );
    // PVE's rule ids start with a letter (pve-configid); the Go provider's pattern let `1rule` through to a PVE error.
    expect(rejects('cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: "true"\nha:\n  rules: [1rule]\n').message).toBe(
      'provider data: ha.rules[0]: "1rule" is not a valid HA rule id (a letter, then letters, digits, - or _)',
    );
    expect(rejects('cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: "true"\nha:\n  max_restart: -1\n').field).toBe('ha.max_restart');
  });

  it('a fully populated value validates and comes back unchanged', () => {
    expect(validateProviderData(everything)).toEqual(everything);
  });

  it('the published JSON is a valid draft-07 schema that a separate ajv accepts', () => {
    const schema = JSON.parse(providerDataSchemaJson()) as Record<string, unknown>;
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    const validate = new Ajv({ strict: true }).compile(schema);
    expect(validate({ cores: 1, memory: 2048, disk_size: 5, storage_selector: 'true' })).toBe(true);
    expect(validate({ cores: 1, memory: 2048, disk_size: 5, storage_selector: 'true', corse: 1 })).toBe(false);
  });
});

describe('parseProviderData: defaults (the Go provider\'s)', () => {
  it('fills every default for the minimal provider data', () => {
    expect(parseProviderData(BASE)).toEqual({
      cores: 2,
      memory: 4096,
      disk_size: 20,
      storage_selector: 'name == "local-lvm"',
      sockets: 1,
      allowed_nodes: [],
      placement_strategy: 'spread',
      network_bridge: 'vmbr0',
      vlan: 0,
      network_firewall: true,
      disk_ssd: false,
      disk_discard: false,
      disk_iothread: false,
      cpu_type: 'x86-64-v2-AES',
      numa: false,
      hostname: 'none',
      tags: [],
      additional_disks: [],
      additional_nics: [],
      pci_devices: [],
      usb_devices: [],
    });
  });

  it('fills defaults inside list items', () => {
    const d = parseProviderData(
      `${BASE}additional_nics:\n  - bridge: vmbr1\npci_devices:\n  - mapping: gpu\nadditional_disks:\n  - {disk_size: 5, storage_selector: "true"}\n`,
    );
    expect(d.additional_nics).toEqual([{ bridge: 'vmbr1', vlan: 0, firewall: false, model: 'virtio' }]);
    expect(d.pci_devices).toEqual([{ mapping: 'gpu', pcie: false, primary_gpu: false }]);
    expect(d.additional_disks).toEqual([
      { disk_size: 5, storage_selector: 'true', disk_ssd: false, disk_discard: false, disk_iothread: false },
    ]);
  });

  it('storage_selector, cores, memory and disk_size are required as in the Go schema', () => {
    expect(rejects('').message).toBe('provider data: missing required keys "cores", "memory", "disk_size", "storage_selector"');
    expect(rejects('cores: 2\nmemory: 4096\ndisk_size: 20\n').message).toBe('provider data: missing required key "storage_selector"');
    expect(rejects('cores: 2\nmemory: 4096\ndisk_size: 20\n').field).toBe('storage_selector');
  });
});

describe('parseProviderData: rejections name the field', () => {
  it.each([
    ['unknown key with suggestion', `${BASE}corse: 4\n`, 'provider data: unknown key "corse" (did you mean "cores"?)', 'corse'],
    ['unknown key without suggestion', `${BASE}wibble: 1\n`, 'provider data: unknown key "wibble"', 'wibble'],
    ['unknown key in a disk', `${BASE}additional_disks:\n  - {disk_size: 5, storage_selector: x, disk_sizee: 1}\n`, 'provider data: additional_disks[0]: unknown key "disk_sizee" (did you mean "disk_size"?)', 'additional_disks[0].disk_sizee'],
    ['unknown key in a nic', `${BASE}additional_nics:\n  - {bridge: vmbr1, tag: 5}\n`, 'provider data: additional_nics[0]: unknown key "tag"', 'additional_nics[0].tag'],
    ['usb device without mapping', `${BASE}usb_devices:\n  - {usb3: true}\n`, 'provider data: usb_devices[0]: missing required key "mapping"', 'usb_devices[0].mapping'],
    ['usb device by host id (root-only in PVE; upstream has no such key)', `${BASE}usb_devices:\n  - {mapping: sdr, host: "0bda:2838"}\n`, 'provider data: usb_devices[0]: unknown key "host"', 'usb_devices[0].host'],
    ['usb mapping id that is not a PVE config id', `${BASE}usb_devices:\n  - {mapping: "1sdr"}\n`, 'provider data: usb_devices[0].mapping: "1sdr" is not a valid USB mapping id', 'usb_devices[0].mapping'],
    ['unknown key in a pci device', `${BASE}pci_devices:\n  - {mapping: gpu, x_vga: true}\n`, 'provider data: pci_devices[0]: unknown key "x_vga"', 'pci_devices[0].x_vga'],
    ['missing key in an item', `${BASE}additional_disks:\n  - {disk_size: 5}\n`, 'provider data: additional_disks[0]: missing required key "storage_selector"', 'additional_disks[0].storage_selector'],
    ['bridge smuggling a property', `${BASE}network_bridge: "vmbr0,firewall=0"\n`, 'provider data: network_bridge: "vmbr0,firewall=0" is not a valid bridge name', 'network_bridge'],
    ['nic bridge smuggling', `${BASE}additional_nics:\n  - bridge: "vmbr1,tag=5"\n`, 'provider data: additional_nics[0].bridge: "vmbr1,tag=5" is not a valid bridge name', 'additional_nics[0].bridge'],
    ['bad node', `${BASE}node: "pve_1"\n`, 'provider data: node: "pve_1" is not a valid node name', 'node'],
    ['bad allowed node', `${BASE}allowed_nodes: [pve1, "x y"]\n`, 'provider data: allowed_nodes[1]: "x y" is not a valid node name', 'allowed_nodes[1]'],
    ['bad tag', `${BASE}tags: ["a;b"]\n`, 'provider data: tags[0]: "a;b" is not a valid Proxmox tag', 'tags[0]'],
    ['bad pool', `${BASE}pool: "a/b"\n`, 'provider data: pool: "a/b" is not a valid pool name', 'pool'],
    ['bad mapping', `${BASE}pci_devices:\n  - mapping: "gpu,host=01:00.0"\n`, 'provider data: pci_devices[0].mapping: "gpu,host=01:00.0" is not a valid PCI mapping id', 'pci_devices[0].mapping'],
    ['bad mdev', `${BASE}pci_devices:\n  - {mapping: gpu, mdev: "a,b"}\n`, 'provider data: pci_devices[0].mdev: "a,b" is not a valid mediated device type', 'pci_devices[0].mdev'],
    ['memory below Go minimum', `cores: 2\nmemory: 1024\ndisk_size: 20\nstorage_selector: x\n`, 'provider data: memory: 1024 must be >= 2048', 'memory'],
    ['vlan above 4094', `${BASE}vlan: 4095\n`, 'provider data: vlan: 4095 exceeds the largest value Proxmox accepts (4094: the largest VLAN tag', 'vlan'],
    ['wrong type', `${BASE}numa: "yes"\n`, 'provider data: numa: "yes" is not a boolean', 'numa'],
    ['quoted integer', `cores: "2"\nmemory: 4096\ndisk_size: 20\nstorage_selector: x\n`, 'provider data: cores: "2" is not an integer', 'cores'],
    ['enum', `${BASE}disk_cache: fast\n`, 'provider data: disk_cache: "fast" is not one of "none", "writethrough", "writeback", "directsync", "unsafe"', 'disk_cache'],
    ['strategy enum', `${BASE}placement_strategy: random\n`, 'provider data: placement_strategy: "random" is not one of "spread", "fewer-vms", "round-robin", "binpack"', 'placement_strategy'],
    ['cpu options smuggling', `${BASE}cpu_type: "host,args=-foo"\n`, 'provider data: cpu_type: "host,args=-foo" is not a valid Proxmox cpu value (invalid key in comma-separated list property: args)', 'cpu_type'],
    ['pcie without q35', `${BASE}pci_devices:\n  - {mapping: gpu, pcie: true}\n`, 'provider data: pci_devices[0].pcie: PCIe passthrough needs machine_type: q35 (Proxmox refuses to start the VM otherwise)', 'pci_devices[0].pcie'],
    ['pinned node outside allowed_nodes', `${BASE}node: pve3\nallowed_nodes: [pve1, pve2]\n`, 'provider data: node: "pve3" is not in allowed_nodes (pve1, pve2)', 'node'],
    ['not a mapping', '- cores: 2\n', 'provider data: must be a YAML mapping of keys to values', undefined],
    ['duplicate YAML key', `${BASE}cores: 3\n`, 'provider data: invalid YAML: Map keys must be unique', undefined],
  ])('%s', (_name, text, message, field) => {
    const err = rejects(text);
    expect(err.message.startsWith(message)).toBe(true);
    expect(err.field).toBe(field);
  });

  it('accepts cpu options PVE allows', () => {
    expect(parseProviderData(`${BASE}cpu_type: "host,flags=+aes;-pcid"\n`).cpu_type).toBe('host,flags=+aes;-pcid');
  });

  it('does not mutate the caller object when applying defaults', () => {
    const input = { cores: 1, memory: 2048, disk_size: 5, storage_selector: 'true' };
    validateProviderData(input);
    expect(input).toEqual({ cores: 1, memory: 2048, disk_size: 5, storage_selector: 'true' });
  });
});

describe('issue 8 evidence: hostile or absurd values are refused when the data is parsed, naming the field', () => {
  const BASE_OBJ = { cores: 2, memory: 4096, disk_size: 20, storage_selector: 'true' };
  const refused = (extra: Record<string, unknown>): ProviderDataError => {
    try {
      validateProviderData({ ...BASE_OBJ, ...extra });
    } catch (err) {
      expect(err).toBeInstanceOf(ProviderDataError);
      return err as ProviderDataError;
    }
    throw new Error(`accepted ${JSON.stringify(extra)}`);
  };

  it.each([
    [{ memory: 1e300 }, 'memory', "provider data: memory: 1e+300 exceeds the largest value Proxmox accepts (4194304 MiB: 4 TiB, the most qemu-server gives a VM (Memory.pm get_max_mem))"],
    [{ cores: 2 ** 53 + 1 }, 'cores', "provider data: cores: 9007199254740992 exceeds the largest value Proxmox accepts (4096: QEMU's largest x86 machine (q35) takes 4096 vCPUs)"],
    [{ sockets: 2 ** 63 }, 'sockets', 'provider data: sockets: 9223372036854776000 exceeds the largest value Proxmox accepts (4096: '],
    [{ disk_size: 2 ** 64 }, 'disk_size', 'provider data: disk_size: 18446744073709552000 exceeds the largest value Proxmox accepts (131072 GiB: 128 TiB'],
    [{ storage_selector: ',' }, 'storage_selector', 'provider data: storage_selector: storage selector `,` is not valid CEL at line 1, column 1'],
    [{ storage_selector: '=' }, 'storage_selector', 'provider data: storage_selector: storage selector `=` is not valid CEL at line 1, column 1: Unexpected character: =; compare with =='],
    [{ storage_selector: '\n' }, 'storage_selector', 'provider data: storage_selector: storage selector is empty'],
    [{ storage_selector: '\0' }, 'storage_selector', 'provider data: storage_selector: "\\u0000" is not a valid storage selector'],
    [{ storage_selector: `${'('.repeat(5000)}true${')'.repeat(5000)}` }, 'storage_selector', 'provider data: storage_selector: "(((((((((((((((((((((((((((((((((((((((("… is 10004 characters long; at most 4096 are allowed'],
    [{ storage_selector: `${'('.repeat(251)}true${')'.repeat(251)}` }, 'storage_selector', 'provider data: storage_selector: storage selector `((((('],
    [{ additional_disks: [{ disk_size: 5, storage_selector: 'name' }] }, 'additional_disks[0].storage_selector', 'provider data: additional_disks[0].storage_selector: storage selector `name` returns string, not bool'],
    [{ pci_devices: [{ mapping: 'gpu', mdev: 'nvidia\u0000180' }] }, 'pci_devices[0].mdev', 'provider data: pci_devices[0].mdev: "nvidia\\u0000180" is not a valid mediated device type'],
    [{ network_bridge: 'v'.repeat(70_000) }, 'network_bridge', 'provider data: network_bridge: "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"… is 70000 characters long; at most 15 are allowed (a bridge is a Linux network interface'],
    [{ cpu_type: 'host,reported-model=EPYC' }, 'cpu_type', "provider data: cpu_type: \"host,reported-model=EPYC\" is not a valid Proxmox cpu value (Property 'reported-model' not allowed in VM-specific CPU config.)"],
    [{ cpu_type: 'host,flags=+avx2' }, 'cpu_type', 'provider data: cpu_type: "host,flags=+avx2" is not a valid Proxmox cpu value (VM-specific CPU flags must be a subset of: aes, amd-no-ssb, amd-ssbd, hv-evmcs, hv-tlbflush, ibpb, md-clear, nested-virt, pcid, pdpe1gb, spec-ctrl, ssbd, virt-ssbd)'],
    [{ cpu_type: 'host,flags=+vmx' }, 'cpu_type', 'provider data: cpu_type: "host,flags=+vmx" is not a valid Proxmox cpu value (VM-specific CPU flags must be a subset of:'],
    [{ cores: 256 }, 'cores', "provider data: cores: 256 cores × 1 socket = 256 vCPUs; QEMU's pc (i440fx, the default) machine takes at most 255 (machine_type: q35 takes up to 4096)"],
    [{ hugepages: '2MB' }, 'hugepages', 'provider data: hugepages: needs numa: true'],
  ])('%j', (extra, field, message) => {
    const err = refused(extra);
    expect(err.field).toBe(field);
    expect(err.message.startsWith(message), err.message).toBe(true);
  });

  it('a cpu model name is checked against the node (validateRequest), not here: unknown names pass the parse', () => {
    expect(validateProviderData({ ...BASE_OBJ, cpu_type: 'Denverton' }).cpu_type).toBe('Denverton');
  });

  it('hugepages written without quotes (a YAML number) is accepted, by us and by the published schema', () => {
    expect(parseProviderData(`${BASE}numa: true\nhugepages: 1024\n`).hugepages).toBe('1024');
    expect(parseProviderData(`${BASE}numa: true\nhugepages: 2\n`).hugepages).toBe('2');
    const published = new Ajv({ strict: true }).compile(JSON.parse(providerDataSchemaJson()) as Record<string, unknown>);
    expect(published({ ...BASE_OBJ, hugepages: 1024 })).toBe(true);
    expect(published({ ...BASE_OBJ, hugepages: 512 })).toBe(false);
    expect(published({ ...BASE_OBJ, memory: 1e300 })).toBe(false);
    expect(published({ ...BASE_OBJ, cpu_type: 'host,flags=+avx2' })).toBe(false);
    expect(published({ ...BASE_OBJ, network_bridge: 'v'.repeat(16) })).toBe(false);
  });
});

describe('the Go provider\'s published v0.3 examples parse unchanged', () => {
  it.each([
    // README v0.3.0 (USB passthrough)
    ['README usb_devices', 'usb_devices:\n  - mapping: rtl-sdr\n    usb3: true\n  - mapping: zigbee-controller\n', [{ mapping: 'rtl-sdr', usb3: true }, { mapping: 'zigbee-controller', usb3: false }]],
    // PR #82 description
    ['PR #82 usb_devices', 'usb_devices:\n  - mapping: SDR1\n    usb3: true\n  - mapping: SDR-BLOGv4\n    usb3: true\n', [{ mapping: 'SDR1', usb3: true }, { mapping: 'SDR-BLOGv4', usb3: true }]],
  ])('%s', (_name, yaml, usb) => {
    expect(parseProviderData(BASE + yaml).usb_devices).toEqual(usb);
  });

  it('vga as the schema describes it ("std" or "none") and PR #81\'s vmid_range', () => {
    expect(parseProviderData(`${BASE}vga: std\n`).vga).toBe('std');
    expect(parseProviderData(`${BASE}vga: none\n`).vga).toBe('none');
    expect(parseProviderData(`${BASE}vmid_range: 102101-102110\n`).vmid_range).toBe('102101-102110');
  });
});

