// VM configuration semantics: the config parameter schema, per-key privileges, drive/net normalisation, boot order.
import {
  driveFormatFor,
  formats,
  NEW_DISK_RE,
  parsePropertyString,
  PropertyStringError,
  type PropertyStringFormat,
} from '../../proxmox/propertyString.js';
import { isCustomCpuModel, knownCpuModels, vmCpuConfError } from '../../proxmox/cpuModels.js';
import type { Caller } from './auth.js';
import { paramError, PveApiError, serverError } from './errors.js';
import { generateMac, normaliseTags } from './seed.js';
import type { PveSim } from './sim.js';
import { fileBasedTypes, formatSize, type SimVm } from './state.js';
import { formatChecks, splitTagList, type FormatCheck, type ParamSchema, type ParamSpec, type SchemaOptions } from './validate.js';

const GiB = 1024 ** 3;

function propertyString(format: PropertyStringFormat): FormatCheck {
  return (value, key) => {
    try {
      parsePropertyString(value, format, key);
      return undefined;
    } catch (err) {
      if (err instanceof PropertyStringError) return err.detail;
      throw err;
    }
  };
}

const bool: ParamSpec = { type: 'boolean', optional: true };
const opt = (spec: ParamSpec): ParamSpec => ({ ...spec, optional: true });

/** `pve-vm-cpu-conf`: the property string, then qemu-server's validate_vm_cpu_conf (custom models: checkConfigKeys). */
const vmCpuConf: FormatCheck = (value, key) => {
  const parseError = propertyString(formats.cpu)(value, key);
  if (parseError) return parseError;
  const cpu = parsePropertyString(value, formats.cpu);
  return vmCpuConfError(cpu, knownCpuModels(), undefined);
};

/** pve-common `pve-startup-order`: `[order=]N`, `up=N`, `down=N`, comma-separated. */
const startupOrder: FormatCheck = (value) => {
  if (value === '') return 'unable to parse startup options';
  for (const part of value.split(',')) {
    if (/^\s*$/.test(part)) continue;
    if (!/^(?:(?:order=)?\d+|up=\d+|down=\d+)$/.test(part)) return 'unable to parse startup options';
  }
  return undefined;
};

/** qemu-server `pve-cpuset` (PVE::CpuSet::parse_cpuset): `N[-M]` ranges separated by commas, M ≥ N. */
const cpuset: FormatCheck = (value) => {
  for (const part of value.split(',')) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) return 'unable to parse cpuset option';
  }
  return undefined;
};

/** qemu-server `pve-hotplug-features`: 0, 1, or a list of network, disk, cpu, memory, usb, cloudinit. */
const hotplugFeatures: FormatCheck = (value) => {
  if (value === '0' || value === '1') return undefined;
  const features = value.split(/[;,\s]+/).filter((f) => f !== '');
  return features.every((f) => /^(network|disk|cpu|memory|usb|cloudinit)$/.test(f)) ? undefined : 'unable to parse hotplug option';
};

/** `pve-qm-ipconfig`, with its `requires` (gw needs ip, gw6 needs ip6). */
const ipconfig: FormatCheck = (value, key) => {
  const parseError = propertyString(formats.ipconfig)(value, key);
  if (parseError) return parseError;
  const c = parsePropertyString(value, formats.ipconfig);
  if (c['gw'] !== undefined && c['ip'] === undefined) return `format error\n${key}.ip: missing property - 'gw' requires this property`;
  if (c['gw6'] !== undefined && c['ip6'] === undefined) return `format error\n${key}.ip6: missing property - 'gw6' requires this property`;
  return undefined;
};

const KEYBOARDS = [
  'de', 'de-ch', 'da', 'en-gb', 'en-us', 'es', 'fi', 'fr', 'fr-be', 'fr-ca', 'fr-ch', 'hu', 'is', 'it', 'ja', 'lt', 'mk', 'nl', 'no',
  'pl', 'pt', 'pt-br', 'sv', 'sl', 'tr',
];

/** The VM config keys of POST /nodes/{node}/qemu and .../config, with their types and formats (PVE's API schema). */
export const vmConfigSchema: ParamSchema = {
  name: opt({ type: 'string', format: formatChecks.dnsName }),
  cores: opt({ type: 'integer', minimum: 1 }),
  sockets: opt({ type: 'integer', minimum: 1 }),
  vcpus: opt({ type: 'integer', minimum: 1 }),
  cpulimit: opt({ type: 'number', minimum: 0, maximum: 128 }),
  cpuunits: opt({ type: 'integer', minimum: 1, maximum: 262144 }),
  affinity: opt({ type: 'string', format: cpuset }),
  memory: opt({ type: 'string', format: propertyString(formats.memory) }),
  balloon: opt({ type: 'integer', minimum: 0 }),
  shares: opt({ type: 'integer', minimum: 0, maximum: 50000 }),
  'allow-ksm': bool,
  cpu: opt({ type: 'string', format: vmCpuConf }),
  numa: bool,
  hugepages: opt({ type: 'string', enum: ['any', '2', '1024'] }),
  keephugepages: bool,
  machine: opt({ type: 'string', format: propertyString(formats.machine) }),
  scsihw: opt({ type: 'string', enum: ['lsi', 'lsi53c810', 'virtio-scsi-pci', 'virtio-scsi-single', 'megasas', 'pvscsi'] }),
  ostype: opt({ type: 'string', enum: ['other', 'wxp', 'w2k', 'w2k3', 'w2k8', 'wvista', 'win7', 'win8', 'win10', 'win11', 'l24', 'l26', 'solaris'] }),
  bios: opt({ type: 'string', enum: ['seabios', 'ovmf'] }),
  boot: opt({ type: 'string', format: propertyString(formats.boot) }),
  tags: opt({ type: 'string', format: formatChecks.tagList }),
  smbios1: opt({ type: 'string', maxLength: 512, format: propertyString(formats.smbios1) }),
  description: opt({ type: 'string', maxLength: 8192 }),
  vmgenid: opt({ type: 'string', pattern: /^(?:1|0|[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12})$/ }),
  cdrom: opt({ type: 'string', format: propertyString(formats.drive) }),
  efidisk0: opt({ type: 'string', format: propertyString(formats.efidisk) }),
  agent: opt({ type: 'string', format: propertyString(formats.agent) }),
  onboot: bool,
  autostart: bool,
  protection: bool,
  template: bool,
  kvm: bool,
  acpi: bool,
  tablet: bool,
  localtime: bool,
  freeze: bool,
  reboot: bool,
  tdf: bool,
  args: opt({ type: 'string' }),
  vga: opt({ type: 'string', format: propertyString(formats.vga) }),
  startup: opt({ type: 'string', format: startupOrder }),
  startdate: opt({ type: 'string', pattern: /^(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)$/ }),
  migrate_speed: opt({ type: 'integer', minimum: 0 }),
  migrate_downtime: opt({ type: 'number', minimum: 0 }),
  hotplug: opt({ type: 'string', format: hotplugFeatures }),
  watchdog: opt({ type: 'string', format: propertyString(formats.watchdog) }),
  keyboard: opt({ type: 'string', enum: KEYBOARDS }),
  rng0: opt({ type: 'string', format: propertyString(formats.rng) }),
  ciuser: opt({ type: 'string' }),
  cipassword: opt({ type: 'string' }),
  citype: opt({ type: 'string', enum: ['configdrive2', 'nocloud', 'opennebula'] }),
  ciupgrade: bool,
  searchdomain: opt({ type: 'string' }),
};

const drivePattern = /^(ide[0-3]|scsi([0-9]|[12][0-9]|30)|sata[0-5]|virtio([0-9]|1[0-5]))$/;
export const vmConfigPatterns: SchemaOptions['patternProperties'] = [
  [drivePattern, opt({ type: 'string', format: (v, key) => propertyString(driveFormatFor(key)!)(v, key) })],
  [/^net([0-9]|[12][0-9]|3[01])$/, opt({ type: 'string', format: propertyString(formats.net) })],
  [/^ipconfig([0-9]|[12][0-9]|3[01])$/, opt({ type: 'string', format: ipconfig })],
  [/^numa[0-7]$/, opt({ type: 'string', format: propertyString(formats.numa) })],
  [/^hostpci([0-9]|1[0-5])$/, opt({ type: 'string', format: propertyString(formats.hostpci) })],
  // usb0..usb13 (USB.pm $MAX_USB_DEVICES = 14); usb14 is not in the schema.
  [/^usb([0-9]|1[0-3])$/, opt({ type: 'string', format: propertyString(formats.usb) })],
  [/^serial[0-3]$/, opt({ type: 'string', pattern: /^(\/dev\/.+|socket)$/ })],
  [/^unused\d+$/, opt({ type: 'string' })],
];

export function isDrive(key: string): boolean {
  return drivePattern.test(key) || key === 'efidisk0';
}

// qemu-server API2/Qemu.pm's option groups and the privilege each needs ($check_vm_modify_config_perm).
const CPU_OPTIONS = new Set(['cores', 'cpu', 'cpulimit', 'cpuunits', 'numa', 'smp', 'sockets', 'vcpus']);
const MEMORY_OPTIONS = new Set(['memory', 'balloon', 'shares', 'allow-ksm']);
const HWTYPE_OPTIONS = new Set(['acpi', 'hotplug', 'kvm', 'machine', 'scsihw', 'smbios1', 'tablet', 'vga', 'watchdog', 'audio0', 'rng0']);
const GENERAL_OPTIONS = new Set([
  'agent', 'autostart', 'bios', 'description', 'keyboard', 'localtime', 'migrate_downtime', 'migrate_speed', 'name', 'onboot',
  'ostype', 'protection', 'reboot', 'startdate', 'startup', 'tdf', 'template', 'tags',
]);
const CLOUDINIT_OPTIONS = new Set(['cicustom', 'cipassword', 'citype', 'ciuser', 'ciupgrade', 'nameserver', 'searchdomain', 'sshkeys']);

/**
 * Which privilege a key needs (qemu-server's key groups). `root` = only root@pam; an array = any one of them.
 * Keys in no group (args, hugepages, affinity, ...) are root-only, as in qemu-server.
 */
export function privilegeFor(key: string, value: string | undefined): string | string[] {
  if (drivePattern.test(key)) return value !== undefined && /(^|,)media=cdrom(,|$)/.test(value) ? 'VM.Config.CDROM' : 'VM.Config.Disk';
  if (key === 'efidisk0' || key === 'boot' || key === 'bootdisk' || key === 'vmstatestorage' || /^unused\d+$/.test(key)) return 'VM.Config.Disk';
  if (/^net\d+$/.test(key)) return 'VM.Config.Network';
  if (CPU_OPTIONS.has(key) || /^numa\d+$/.test(key)) return 'VM.Config.CPU';
  if (MEMORY_OPTIONS.has(key)) return 'VM.Config.Memory';
  if (HWTYPE_OPTIONS.has(key) || /^(hostpci|serial|usb)\d+$/.test(key)) return 'VM.Config.HWType';
  if (GENERAL_OPTIONS.has(key)) return 'VM.Config.Options';
  if (key === 'freeze') return 'VM.PowerMgmt';
  if (CLOUDINIT_OPTIONS.has(key) || /^ipconfig\d+$/.test(key)) return ['VM.Config.Cloudinit', 'VM.Config.Network'];
  if (key === 'cdrom') return 'VM.Config.CDROM';
  return 'root';
}

/**
 * pve-guest-common GuestHelpers.pm `assert_tag_permissions`: without Sys.Modify on /, a tag that changes must not be
 * registered and must be allowed by `user-tag-access` (free: any; existing: listed or on a VM the caller can see;
 * list: listed; none: no tag).
 */
export function assertTagPermissions(sim: PveSim, caller: Caller, newTags: string, oldTags = ''): void {
  if (sim.access.has(caller, '/', 'Sys.Modify')) return;
  const dc = sim.state.datacenter;
  const registered = new Set(dc['registered-tags'] ?? []);
  const access = dc['user-tag-access'] ?? {};
  const userAllow = access['user-allow'] ?? 'free';
  const allowed = new Set<string>();
  if (userAllow !== 'none') for (const t of access['user-allow-list'] ?? []) allowed.add(t);
  if (userAllow === 'free' || userAllow === 'existing') {
    for (const vm of sim.state.vms.values()) {
      if (!sim.access.has(caller, `/vms/${vm.vmid}`, 'VM.Audit')) continue;
      for (const t of splitTagList(vm.config.get('tags') ?? '')) allowed.add(t);
    }
  }
  const count = (list: string): Map<string, number> => {
    const m = new Map<string, number>();
    for (const t of splitTagList(list)) m.set(t, (m.get(t) ?? 0) + 1);
    return m;
  };
  const before = count(oldTags);
  const after = count(newTags);
  for (const tag of new Set([...before.keys(), ...after.keys()])) {
    if ((before.get(tag) ?? 0) === (after.get(tag) ?? 0)) continue;
    if ((!allowed.has(tag) && userAllow !== 'free') || registered.has(tag)) {
      throw new PveApiError(403, `Permission check failed (/, Sys.Modify for modifying tag '${tag}')`);
    }
  }
}

export function isRoot(caller: Caller): boolean {
  return caller.authid === 'root@pam';
}

/** A parsed drive request: a new disk to allocate, an existing volume, or no media. */
export type DrivePlan =
  | { kind: 'new'; key: string; sid: string; sizeBytes: number; fields: Record<string, string> }
  | { kind: 'volume'; key: string; volid: string; sid: string; fields: Record<string, string> }
  | { kind: 'none'; key: string; fields: Record<string, string> };

/** Moves `cdrom` to `ide2` with `media=cdrom`, as PVE's alias does. */
export function applyCdromAlias(values: Record<string, string>): void {
  const cd = values['cdrom'];
  if (cd === undefined) return;
  delete values['cdrom'];
  values['ide2'] = /(^|,)media=/.test(cd) ? cd : `${cd},media=cdrom`;
}

/**
 * Checks the config keys (privileges, root-only keys, storages, ISO media rules) and returns the drive plans.
 * Throws 403, 400 and 500 the way qemu-server does before it forks the worker.
 */
export function checkConfigKeys(
  sim: PveSim,
  caller: Caller,
  node: string,
  vmid: number,
  values: Record<string, string>,
  defaultStorage: string | undefined,
): DrivePlan[] {
  const plans: DrivePlan[] = [];
  for (const [key, value] of Object.entries(values)) {
    const priv = privilegeFor(key, value);
    if (priv === 'root') {
      if (!isRoot(caller)) throw serverError(`only root can set '${key}' config`);
    } else if (Array.isArray(priv)) {
      sim.access.checkAny(caller, `/vms/${vmid}`, priv);
    } else {
      sim.access.check(caller, `/vms/${vmid}`, priv);
    }
    // startup changes how the host boots: it also needs Sys.Modify on / (qemu-server).
    if (key === 'startup') sim.access.check(caller, '/', 'Sys.Modify');
    if (key === 'rng0' && !isRoot(caller) && parsePropertyString(value, formats.rng)['source'] === '/dev/hwrng') {
      sim.access.check(caller, '/mapping/hwrng', 'Mapping.Use');
    }
    if (key === 'cpu') {
      // validate_vm_cpu_conf dies on an unknown custom model; using one needs Mapping.Use on /mapping/cpu/<name>.
      const cputype = parsePropertyString(value, formats.cpu)['cputype'] ?? '';
      if (isCustomCpuModel(cputype)) {
        const name = cputype.slice('custom-'.length);
        if (!sim.state.customCpuModels.has(name)) throw paramError({ cpu: `invalid format - Custom cputype '${name}' not found` });
        sim.access.check(caller, `/mapping/cpu/${name}`, 'Mapping.Use');
      }
    }
    if (/^net\d+$/.test(key)) {
      const net = parsePropertyString(value, formats.net);
      const bridge = net['bridge'];
      if (bridge !== undefined) {
        const tag = net['tag'];
        const base = `/sdn/zones/localnetwork/${bridge}`;
        if (!sim.access.has(caller, base, 'SDN.Use') && !(tag !== undefined && sim.access.has(caller, `${base}/${tag}`, 'SDN.Use'))) {
          sim.access.check(caller, tag !== undefined ? `${base}/${tag}` : base, 'SDN.Use');
        }
      }
    }
    if (/^hostpci\d+$/.test(key)) {
      const pci = parsePropertyString(value, formats.hostpci);
      if (pci['mapping'] !== undefined) sim.access.check(caller, `/mapping/pci/${pci['mapping']}`, 'Mapping.Use');
      else if (!isRoot(caller)) throw serverError(`only root can set '${key}' config for non-mapped devices`);
      if (pci['romfile'] !== undefined && !isRoot(caller)) throw serverError(`only root can set '${key}' config for romfile`);
    }
    if (/^usb\d+$/.test(key) && !isRoot(caller)) {
      // qemu-server API2/Qemu.pm check_usb_perm: a real host device is root's; a mapping needs Mapping.Use on it.
      const usb = parsePropertyString(value, formats.usb);
      if (usb['host'] !== undefined && !/^spice$/i.test(usb['host'])) throw serverError(`only root can set '${key}' config for real devices`);
      if (usb['mapping'] !== undefined) sim.access.check(caller, `/mapping/usb/${usb['mapping']}`, 'Mapping.Use');
      else throw serverError("either 'host' or 'mapping' must be set.");
    }
    if (isDrive(key)) plans.push(planDrive(sim, caller, node, key, value, defaultStorage));
  }
  return plans;
}

function planDrive(sim: PveSim, caller: Caller, node: string, key: string, value: string, defaultStorage: string | undefined): DrivePlan {
  const format = key === 'efidisk0' ? formats.efidisk : driveFormatFor(key)!;
  const fields = parsePropertyString(value, format);
  const file = fields['file'] ?? '';
  delete fields['file'];
  const cdrom = fields['media'] === 'cdrom';
  if (file === 'none' || file === 'cdrom') {
    if (!cdrom && key !== 'efidisk0') throw paramError({ [key]: `drive '${file}' needs media=cdrom` });
    return { kind: 'none', key, fields };
  }
  const m = NEW_DISK_RE.exec(file);
  if (m) {
    const sid = m[2] ?? defaultStorage;
    if (sid === undefined) throw paramError({ [key]: `missing storage for new disk '${file}'` });
    const s = sim.state.storageOn(sid, node);
    if (!s.content.has('images')) throw paramError({ storage: `storage '${sid}' does not support vm images` });
    sim.access.check(caller, `/storage/${sid}`, 'Datastore.AllocateSpace');
    const sizeBytes = key === 'efidisk0' ? (fileBasedTypes.has(s.type) ? 528 * 1024 : 4 * 1024 * 1024) : Number(m[3]) * GiB;
    return { kind: 'new', key, sid, sizeBytes, fields };
  }
  const { sid, name } = sim.state.parseVolid(file);
  sim.state.storageOn(sid, node);
  if (name.startsWith('iso/') && !cdrom) throw paramError({ [key]: "explicit 'media=cdrom' is required for iso images" });
  sim.access.checkAny(caller, `/storage/${sid}`, ['Datastore.AllocateSpace', 'Datastore.Audit']);
  return { kind: 'volume', key, volid: file, sid, fields };
}

/** `<file>,<k=v sorted>` — how PVE prints drives. */
export function printDrive(file: string, fields: Record<string, string>): string {
  const rest = Object.keys(fields).sort().map((k) => `${k}=${fields[k]}`);
  return [file, ...rest].join(',');
}

/** Allocates a planned drive (worker time) and returns the config value. */
export function realiseDrive(sim: PveSim, node: string, vmid: number, plan: DrivePlan, allocated: string[]): string {
  if (plan.kind === 'none') return printDrive('none', plan.fields);
  if (plan.kind === 'volume') {
    const vol = sim.state.findVolume(plan.volid, node);
    const fields = { ...plan.fields };
    if (vol && fields['media'] === 'cdrom') fields['size'] = formatSize(vol.size);
    return printDrive(plan.volid, fields);
  }
  const vol = sim.state.allocateDisk(plan.sid, node, vmid, plan.sizeBytes);
  vol.ctime = Math.floor(sim.clock.now() / 1000);
  allocated.push(vol.volid);
  return printDrive(vol.volid, { ...plan.fields, size: formatSize(plan.sizeBytes) });
}

/**
 * `virtio=<MAC>,bridge=..,...` with a generated (or kept) MAC. A MAC given by the caller is stored as given (qemu-server
 * Network.pm `print_net` prints the parsed property string back; pve-common JSONSchema.pm `pve_verify_mac_addr`
 * accepts either case); a generated one is upper case, like pve-common Tools.pm `random_ether_addr`.
 */
export function printNet(sim: PveSim, value: string, previous?: string): string {
  const net = parsePropertyString(value, formats.net);
  const model = net['model'] ?? 'virtio';
  let mac = net['macaddr'];
  if (mac === undefined && previous !== undefined) {
    const old = parsePropertyString(previous, formats.net);
    if (old['model'] === model) mac = old['macaddr'];
  }
  mac ??= generateMac(sim);
  const rest = Object.keys(net).filter((k) => k !== 'model' && k !== 'macaddr').sort().map((k) => `${k}=${net[k]}`);
  return [`${model}=${mac}`, ...rest].join(',');
}

export function printTags(value: string): string {
  return normaliseTags(splitTagList(value));
}

/** PVE's default boot order: first disk, first cdrom, first NIC (ide, sata, scsi, virtio order). */
export function defaultBoot(config: ReadonlyMap<string, string>): string {
  const buses = ['ide', 'sata', 'scsi', 'virtio'];
  const drives = [...config.keys()]
    .filter((k) => drivePattern.test(k))
    .sort((a, b) => busRank(a, buses) - busRank(b, buses));
  const disk = drives.find((k) => !/(^|,)media=cdrom(,|$)/.test(config.get(k)!));
  const cd = drives.find((k) => /(^|,)media=cdrom(,|$)/.test(config.get(k)!));
  const net = [...config.keys()].filter((k) => /^net\d+$/.test(k)).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)))[0];
  const order = [disk, cd, net].filter((x): x is string => x !== undefined);
  return order.length ? `order=${order.join(';')}` : '';
}

function busRank(key: string, buses: string[]): number {
  const m = /^([a-z]+)(\d+)$/.exec(key)!;
  return buses.indexOf(m[1]!) * 100 + Number(m[2]);
}

/** Throws `invalid bootorder: device 'x' does not exist'` when `boot` names a device the config lacks. */
export function checkBootOrder(boot: string, keys: ReadonlySet<string>): void {
  const fields = parsePropertyString(boot, formats.boot);
  for (const dev of (fields['order'] ?? '').split(/[;,\s]+/).filter(Boolean)) {
    if (!keys.has(dev)) throw new Error(`invalid bootorder: device '${dev}' does not exist'`);
  }
}

/** Config keys PVE returns as JSON numbers. */
const numericKeys = new Set(['cores', 'sockets', 'vcpus', 'balloon', 'onboot', 'numa', 'protection', 'template', 'kvm', 'acpi', 'tablet', 'cpuunits', 'shares']);

export function typedConfig(vm: SimVm, digest: string): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of vm.config) out[k] = numericKeys.has(k) && /^-?\d+$/.test(v) ? Number(v) : v;
  out['digest'] = digest;
  return out;
}

export function agentEnabled(vm: SimVm): boolean {
  const a = vm.config.get('agent');
  if (a === undefined) return false;
  try {
    return parsePropertyString(a, formats.agent)['enabled'] === '1';
  } catch {
    return false;
  }
}
