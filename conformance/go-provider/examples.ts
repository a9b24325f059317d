// MachineClass provider data used for the differential run: each example is one machine set that both providers
// must turn into a VM. Only keys the upstream Go provider (0d9fd58) knows are used, so both read the same intent.

export interface MachineClassExample {
  /** Also the machine request set ID. */
  name: string;
  covers: string;
  providerData: string;
}

export const MACHINE_CLASS_EXAMPLES: readonly MachineClassExample[] = [
  {
    name: 'minimal',
    covers: 'required keys only (defaults for bridge, CPU type, sockets)',
    providerData: `cores: 2
memory: 4096
disk_size: 20
storage_selector: name == "local-lvm"
`,
  },
  {
    name: 'disks',
    covers: 'system disk options, two additional disks on two storages (CEL on type and name)',
    providerData: `cores: 4
sockets: 1
memory: 8192
disk_size: 40
storage_selector: storageType == "rbd"
disk_ssd: true
disk_discard: true
disk_iothread: true
disk_cache: writeback
disk_aio: io_uring
additional_disks:
  - disk_size: 100
    storage_selector: name == "local-lvm"
    disk_ssd: true
    disk_iothread: true
  - disk_size: 50
    storage_selector: storageType == "rbd"
    disk_discard: true
    disk_cache: none
    disk_aio: native
`,
  },
  {
    name: 'nics-vlan',
    covers: 'bridge + VLAN on net0, additional NICs with and without VLAN/firewall',
    providerData: `cores: 2
sockets: 1
memory: 4096
disk_size: 20
storage_selector: name == "local-lvm"
network_bridge: vmbr1
vlan: 20
additional_nics:
  - bridge: vmbr1
    vlan: 30
    firewall: true
  - bridge: vmbr0
`,
  },
  {
    name: 'pci-q35',
    covers: 'PCI mapping passthrough (pcie, x-vga, rombar), q35, NUMA, balloon off, host CPU, 2 sockets',
    providerData: `cores: 8
sockets: 2
memory: 16384
disk_size: 60
storage_selector: name == "local-lvm"
machine_type: q35
cpu_type: host
numa: true
balloon: false
pci_devices:
  - mapping: gpu-a
    pcie: true
    primary_gpu: true
    rombar: true
`,
  },
  {
    name: 'hugepages-i440fx',
    covers: 'hugepages, machine_type i440fx, rombar false',
    providerData: `cores: 2
sockets: 1
memory: 4096
disk_size: 20
storage_selector: name == "local-lvm"
hugepages: "2"
numa: true
machine_type: i440fx
pci_devices:
  - mapping: gpu-a
    rombar: false
`,
  },
];
