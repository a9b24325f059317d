// Pure VM planning: provider data + the facts decided by earlier steps → the exact parameters of
// POST /nodes/{node}/qemu. Every property string goes through the typed serialiser.
import { formatPropertyString, formats, parsePropertyString, PropertyStringError, pveFormat } from '../proxmox/propertyString.js';
import { VmPlanError } from './errors.js';
import type { ProviderData } from './providerData.js';

/** Tag that marks every VM of one machine request set (the Go provider's prefix; keep it). */
export const MACHINE_REQUEST_TAG_PREFIX = 'machine-request.';
/** The Talos ISO's CD-ROM slot (PVE's `cdrom` alias). */
export const TALOS_ISO_SLOT = 'ide2';
/** The NoCloud seed ISO's slot; attached by a later step, so the plan leaves it free. */
export const SEED_ISO_SLOT = 'ide0';
/**
 * Boot order: the empty system disk is skipped by the firmware on first boot, so the Talos ISO
 * boots and installs to scsi0; every later boot finds the installed system on scsi0 first.
 * net0 last is PVE's own default (PXE fallback), kept so the config matches the Go provider's.
 */
export const BOOT_DEVICES = ['scsi0', TALOS_ISO_SLOT, 'net0'] as const;
export const DEFAULT_CPU_TYPE = 'x86-64-v2-AES';
/** USB slots usable without the qemu-xhci controller (qemu-server USB.pm `$OLD_MAX_USB`). */
export const USB_LEGACY_SLOTS = 5;

export interface PlanContext {
  /** The MachineRequest id; becomes the VM name. */
  requestId: string;
  /** VMID the VM is created with. */
  vmid: number;
  /** MachineRequestSet id, when the request belongs to one (→ tag machine-request.<id>). */
  machineRequestSetId?: string;
  /** SMBIOS UUID (the Talos machine UUID Omni will see). */
  smbiosUuid: string;
  /** Volume id of the Talos ISO, e.g. `local:iso/<sha256>.iso`. */
  isoVolid: string;
  /** Storage ids chosen by the storage selectors: the system disk's and one per additional disk. */
  diskStorages: { primary: string; additional: readonly string[] };
  /** Resource pool of the VM when not the provider data's `pool` (the machine set's existing pool). */
  pool?: string | undefined;
  /** MACs the provider sets itself, by NIC index (static addresses: network-config matches the NIC by it). */
  nicMacs?: Readonly<Record<number, string>>;
}

/** Flat POST /nodes/{node}/qemu parameters. */
export type VmCreateParams = Record<string, string | number>;

export function machineRequestTag(setId: string): string {
  return `${MACHINE_REQUEST_TAG_PREFIX}${setId}`;
}

function hugepagesValue(v: NonNullable<ProviderData['hugepages']>): string {
  switch (v) {
    case '2MB':
    case '2':
      return '2';
    case '1GB':
    case '1024':
      return '1024';
    case 'any':
      return 'any';
  }
}

/** Runs a property-string serialisation, turning its error into a VmPlanError naming the VM parameter. */
function serialise(param: string, build: () => string): string {
  try {
    return build();
  } catch (err) {
    if (err instanceof PropertyStringError) {
      throw new VmPlanError(`VM parameter ${param}: ${err.detail.replace(/^format error\n/, '').replace(/\n/g, '; ')}`, param);
    }
    throw err;
  }
}

interface DiskOptions {
  disk_ssd: boolean;
  disk_discard: boolean;
  disk_iothread: boolean;
  disk_cache?: string | undefined;
  disk_aio?: string | undefined;
}

/** `<sid>:<GiB>[,ssd=1][,discard=on][,iothread=1][,cache=..][,aio=..]` — the Go provider's option order. */
function diskValue(param: string, storage: string, sizeGiB: number, o: DiskOptions): string {
  if (!pveFormat.storageId(storage)) {
    throw new VmPlanError(`VM parameter ${param}: "${storage}" is not a valid storage id`, param);
  }
  return serialise(param, () =>
    formatPropertyString(
      {
        file: `${storage}:${sizeGiB}`,
        ssd: o.disk_ssd ? 1 : undefined,
        discard: o.disk_discard ? 'on' : undefined,
        iothread: o.disk_iothread ? 1 : undefined,
        cache: o.disk_cache,
        aio: o.disk_aio,
      },
      formats.scsi,
    ),
  );
}

function nicValue(param: string, model: string, bridge: string, firewall: boolean, vlan: number, macaddr?: string): string {
  return serialise(param, () =>
    formatPropertyString(
      { model, macaddr, bridge, firewall: firewall ? 1 : 0, tag: vlan === 0 ? undefined : vlan },
      formats.net,
    ),
  );
}

function checkContext(data: ProviderData, ctx: PlanContext): void {
  if (!pveFormat.vmid(ctx.vmid)) throw new VmPlanError(`vmid ${ctx.vmid} is not a valid Proxmox VM id`, 'vmid');
  if (!pveFormat.dnsName(ctx.requestId)) {
    throw new VmPlanError(`machine request id "${ctx.requestId}" is not a valid Proxmox VM name (dns-name)`, 'name');
  }
  if (!pveFormat.uuid(ctx.smbiosUuid)) throw new VmPlanError(`SMBIOS UUID "${ctx.smbiosUuid}" is not a UUID`, 'smbios1');
  if (!pveFormat.volumeId(ctx.isoVolid)) throw new VmPlanError(`ISO volume "${ctx.isoVolid}" is not a volume id`, TALOS_ISO_SLOT);
  if (ctx.diskStorages.additional.length !== data.additional_disks.length) {
    throw new VmPlanError(
      `${data.additional_disks.length} additional disk(s) configured but ${ctx.diskStorages.additional.length} storage(s) chosen`,
      'additional_disks',
    );
  }
}

/** Tags: the user's, then machine-request.<set>; de-duplicated case-insensitively (PVE lowercases them). */
function tagList(data: ProviderData, ctx: PlanContext): string[] {
  const tags = [...data.tags];
  if (ctx.machineRequestSetId !== undefined && ctx.machineRequestSetId !== '') {
    tags.push(machineRequestTag(ctx.machineRequestSetId));
  }
  const seen = new Set<string>();
  const out: string[] = [];
  for (const t of tags) {
    if (!pveFormat.tag(t)) throw new VmPlanError(`tag "${t}" is not a valid Proxmox tag`, 'tags');
    const k = t.toLowerCase();
    if (!seen.has(k)) {
      seen.add(k);
      out.push(t);
    }
  }
  return out;
}

/** The exact POST /nodes/{node}/qemu parameters for this request. Pure; throws VmPlanError. */
export function planVm(data: ProviderData, ctx: PlanContext): VmCreateParams {
  checkContext(data, ctx);
  const p: VmCreateParams = {};
  p.vmid = ctx.vmid;
  p.smbios1 = serialise('smbios1', () => formatPropertyString({ uuid: ctx.smbiosUuid }, formats.smbios1));
  p.name = ctx.requestId;
  p[TALOS_ISO_SLOT] = serialise(TALOS_ISO_SLOT, () =>
    formatPropertyString({ file: ctx.isoVolid, media: 'cdrom' }, formats.ide),
  );
  // cpu_type may carry cpu options ("host,flags=+aes"): read it with PVE's cpu format and write it back.
  p.cpu = serialise('cpu', () => formatPropertyString(parsePropertyString(data.cpu_type, formats.cpu), formats.cpu));
  p.cores = data.cores;
  p.sockets = data.sockets;
  p.memory = data.memory;
  p.scsi0 = diskValue('scsi0', ctx.diskStorages.primary, data.disk_size, data);
  p.scsihw = 'virtio-scsi-single';
  p.onboot = 1;
  p.net0 = nicValue('net0', 'virtio', data.network_bridge, data.network_firewall, data.vlan, ctx.nicMacs?.[0]);
  p.agent = serialise('agent', () => formatPropertyString({ enabled: 1 }, formats.agent, { bareDefaultKey: false }));
  const tags = tagList(data, ctx);
  if (tags.length > 0) p.tags = tags.join(';');
  const pool = ctx.pool ?? data.pool;
  if (pool !== undefined) {
    if (!pveFormat.poolId(pool)) throw new VmPlanError(`pool "${pool}" is not a valid pool name`, 'pool');
    p.pool = pool;
  }
  data.additional_disks.forEach((disk, i) => {
    const param = `scsi${i + 1}`;
    p[param] = diskValue(param, ctx.diskStorages.additional[i] as string, disk.disk_size, disk);
  });
  if (data.bios !== undefined) {
    p.bios = data.bios;
    if (data.bios === 'ovmf') {
      p.efidisk0 = serialise('efidisk0', () =>
        formatPropertyString(
          { file: `${ctx.diskStorages.primary}:1`, efitype: '4m', 'pre-enrolled-keys': 0 },
          formats.efidisk,
        ),
      );
    }
  }
  if (data.vga !== undefined) {
    // Read with PVE's vga format and written back (the Go provider passes it verbatim; the value is the same).
    p.vga = serialise('vga', () => formatPropertyString(parsePropertyString(data.vga as string, formats.vga), formats.vga));
  }
  if (data.machine_type !== undefined) {
    const type = data.machine_type === 'i440fx' ? 'pc' : data.machine_type;
    p.machine = serialise('machine', () => formatPropertyString({ type }, formats.machine));
  }
  if (data.numa) p.numa = 1;
  if (data.hugepages !== undefined) p.hugepages = hugepagesValue(data.hugepages);
  if (data.balloon === false) p.balloon = 0;
  data.additional_nics.forEach((nic, i) => {
    const param = `net${i + 1}`;
    p[param] = nicValue(param, nic.model, nic.bridge, nic.firewall, nic.vlan, ctx.nicMacs?.[i + 1]);
  });
  data.pci_devices.forEach((dev, i) => {
    const param = `hostpci${i}`;
    p[param] = serialise(param, () =>
      formatPropertyString(
        {
          mapping: dev.mapping,
          pcie: dev.pcie ? 1 : undefined,
          'x-vga': dev.primary_gpu ? 1 : undefined,
          rombar: dev.rombar === undefined ? undefined : dev.rombar ? 1 : 0,
          mdev: dev.mdev,
        },
        formats.hostpci,
      ),
    );
  });
  data.usb_devices.forEach((dev, i) => {
    const param = `usb${i}`;
    p[param] = serialise(param, () => formatPropertyString({ mapping: dev.mapping, usb3: dev.usb3 ? 1 : undefined }, formats.usb));
  });
  // qemu-server plugs usb5..usb13 only into the qemu-xhci controller, which it uses for ostype l26 (or Windows > 7);
  // without it the start fails ("using usb5 is only possible with machine type >= 7.1 and ostype l26 ..."). Talos is
  // Linux, so l26 is its right type; it is sent only when needed, so that other VMs keep the Go provider's parameters.
  if (data.usb_devices.length > USB_LEGACY_SLOTS) p.ostype = 'l26';
  if (data.description !== undefined && data.description !== '') p.description = data.description;
  p.boot = serialise('boot', () => formatPropertyString({ order: BOOT_DEVICES.join(';') }, formats.boot));
  return p;
}
