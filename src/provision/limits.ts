// The bounds of provider data and where each comes from. Proxmox's API schema leaves most of them open (cores,
// sockets and memory are "1 - N", a new disk is any number of GiB), so each bound is the smallest real limit behind
// the API: what QEMU or qemu-server refuses later, what the kernel allows, or (marked "ours") a generous cap on a
// string Proxmox does not bound, so that absurd input is refused before anything is written.

export interface Bound {
  /** Largest value (numbers) or length in characters (strings), inclusive. */
  max: number;
  /** Why: the source of the bound, as shown after the value in a refusal. */
  source: string;
  /** Unit of a number, for messages. */
  unit?: string;
}

/** QEMU's vCPU limit per machine type: `q35` (QEMU 9.0+, hw/i386/pc_q35.c) and `pc`/i440fx (hw/i386/pc.c). */
export const MAX_VCPUS = { q35: 4096, pc: 255 } as const;

export const LIMITS = {
  cores: { max: MAX_VCPUS.q35, source: "QEMU's largest x86 machine (q35) takes 4096 vCPUs" },
  sockets: { max: MAX_VCPUS.q35, source: "QEMU's largest x86 machine (q35) takes 4096 vCPUs" },
  memory: { max: 4 * 1024 * 1024, unit: 'MiB', source: "4 TiB, the most qemu-server gives a VM (Memory.pm get_max_mem)" },
  disk_size: { max: 128 * 1024, unit: 'GiB', source: '128 TiB, the largest disk the Proxmox VE UI creates' },
  vlan: { max: 4094, source: 'the largest VLAN tag (net tag=1..4094)' },
  node: { max: 63, source: 'a Proxmox node name is a host name label, at most 63 characters' },
  bridge: { max: 15, source: 'a bridge is a Linux network interface, whose name has at most 15 characters' },
  tag: { max: 128, source: 'ours: Proxmox sets no length, 128 characters is far more than any tag needs' },
  pool: { max: 128, source: 'ours: Proxmox sets no length, 128 characters is far more than any pool name needs' },
  mapping: { max: 128, source: 'ours: Proxmox sets no length, 128 characters is far more than any mapping id needs' },
  mdev: { max: 255, source: 'a mediated device type is a sysfs directory name, at most 255 characters' },
  cpu_type: { max: 512, source: 'ours: the longest valid cpu value (model, all 13 flags, every option) is far shorter' },
  vga: { max: 64, source: 'ours: the longest valid vga value (type=virtio-gl,memory=512,clipboard=vnc) has 39 characters' },
  description: { max: 8192, source: "Proxmox's description maxLength" },
  storage_selector: { max: 4096, source: 'ours: selectors are short conditions; the CEL parser also stops at 250 levels of nesting' },
  tags: { max: 64, source: 'ours: more tags than any VM needs' },
  allowed_nodes: { max: 256, source: 'ours: more nodes than a Proxmox cluster has' },
  additional_disks: { max: 30, source: 'scsi1..scsi30: a VM has 31 SCSI slots and scsi0 is the system disk' },
  additional_nics: { max: 31, source: 'net1..net31: a VM has 32 NICs and net0 is the first' },
  pci_devices: { max: 16, source: 'hostpci0..hostpci15: a VM has 16 PCI passthrough slots' },
  comment: { max: 4096, source: "Proxmox's maxLength of an HA resource comment" },
  max_restart: { max: 1000, source: 'ours: Proxmox sets no maximum; each attempt is a VM start, 1000 is far more than any policy needs' },
  max_relocate: { max: 1000, source: 'ours: Proxmox sets no maximum; each attempt is a VM migration, 1000 is far more than any policy needs' },
  rules: { max: 64, source: 'ours: more HA rules than one VM needs' },
  ha_rule: { max: 64, source: "the Go provider's bound on an HA rule id" },
  node_affinity_nodes: { max: 256, source: 'ours: more nodes than a Proxmox cluster has' },
  vmid_range: { max: 19, source: "two VMIDs of at most 9 digits (PVE's largest is 999999999) and a dash" },
  usb_devices: { max: 14, source: 'usb0..usb13: qemu-server takes 14 USB devices (USB.pm $MAX_USB_DEVICES)' },
} as const satisfies Record<string, Bound>;

export type LimitedField = keyof typeof LIMITS;

/** The bound of the field a path ends in (`additional_disks[2].disk_size` → disk_size, `tags[0]` → tag). */
export function boundFor(path: string): Bound | undefined {
  const itemOf: Record<string, LimitedField> = { tags: 'tag', allowed_nodes: 'node', rules: 'ha_rule', node_affinity_nodes: 'node' };
  const m = /(?:^|\.)([a-z_]+)(\[\d+\])?$/.exec(path);
  if (!m?.[1]) return undefined;
  const key = m[1];
  if (m[2] !== undefined && itemOf[key]) return LIMITS[itemOf[key]];
  if (key === 'network_bridge') return LIMITS.bridge;
  return (LIMITS as Record<string, Bound>)[key];
}
