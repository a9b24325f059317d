// Routes below /nodes/{node}/qemu: list, create (two-phase, lock=create), config, status, power, destroy.
import { formats, parsePropertyString } from '../../../proxmox/propertyString.js';
import type { Caller } from '../auth.js';
import { paramError, PveApiError, serverError } from '../errors.js';
import type { Route, RouteContext } from '../routing.js';
import type { PveSim } from '../sim.js';
import type { SimVm } from '../state.js';
import type { TaskAllocation } from '../tasks.js';
import { nodeSpec, storageSpec, vmidSpec, type CheckedParams, type ParamSchema } from '../validate.js';
import {
  agentEnabled,
  assertTagPermissions,
  applyCdromAlias,
  checkBootOrder,
  checkConfigKeys,
  defaultBoot,
  isDrive,
  isRoot,
  printNet,
  printTags,
  realiseDrive,
  typedConfig,
  vmConfigPatterns,
  vmConfigSchema,
  type DrivePlan,
} from '../vmconfig.js';
import { waitForTask } from './storage.js';
import { vmListEntry } from './views.js';

const vmPath = { node: nodeSpec, vmid: vmidSpec };
const skiplock = { type: 'boolean', optional: true } as const;
const createOnly = new Set(['node', 'vmid', 'start', 'pool', 'storage', 'unique', 'force', 'archive']);
const updateOnly = new Set(['node', 'vmid', 'delete', 'revert', 'digest', 'skiplock', 'force', 'background_delay']);

const createSchema: ParamSchema = {
  ...vmConfigSchema,
  node: nodeSpec,
  vmid: vmidSpec,
  start: { type: 'boolean', optional: true },
  pool: { type: 'string', optional: true, pattern: /^[A-Za-z0-9.\-_]+$/ },
  storage: { ...storageSpec, optional: true },
  unique: { type: 'boolean', optional: true },
  force: { type: 'boolean', optional: true },
};

const updateSchema: ParamSchema = {
  ...vmConfigSchema,
  ...vmPath,
  delete: { type: 'string', optional: true },
  revert: { type: 'string', optional: true },
  digest: { type: 'string', optional: true, maxLength: 40 },
  skiplock,
  force: { type: 'boolean', optional: true },
};

export const qemuRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/nodes/{node}/qemu',
    schema: { node: nodeSpec, full: { type: 'boolean', optional: true } },
    handler: ({ sim, caller, node }) => {
      const vms = [...sim.state.vms.values()].filter((vm) => vm.node === node!.name && sim.access.has(caller, `/vms/${vm.vmid}`, 'VM.Audit'));
      return sim.order(vms.map((vm) => vmListEntry(sim, vm)));
    },
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/qemu',
    schema: createSchema,
    schemaOptions: { patternProperties: vmConfigPatterns },
    handler: (ctx) => createVm(ctx),
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/qemu/{vmid}/config',
    schema: { ...vmPath, current: { type: 'boolean', optional: true }, snapshot: { type: 'string', optional: true } },
    handler: ({ sim, caller, node, params }) => {
      const vm = sim.state.vmOn(node!.name, Number(params['vmid']));
      sim.access.check(caller, `/vms/${vm.vmid}`, 'VM.Audit');
      return typedConfig(vm, sim.state.digest(vm));
    },
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/qemu/{vmid}/config',
    schema: { ...updateSchema, background_delay: { type: 'integer', optional: true, minimum: 1, maximum: 30 } },
    schemaOptions: { patternProperties: vmConfigPatterns },
    handler: (ctx) => updateVm(ctx, 'async'),
  },
  {
    method: 'PUT',
    pattern: '/nodes/{node}/qemu/{vmid}/config',
    schema: updateSchema,
    schemaOptions: { patternProperties: vmConfigPatterns },
    handler: (ctx) => updateVm(ctx, 'sync'),
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/qemu/{vmid}/status/current',
    schema: vmPath,
    handler: ({ sim, caller, node, params }) => {
      const vm = sim.state.vmOn(node!.name, Number(params['vmid']));
      sim.access.check(caller, `/vms/${vm.vmid}`, 'VM.Audit');
      const out: Record<string, unknown> = {
        ...vmListEntry(sim, vm),
        qmpstatus: vm.paused ? 'paused' : vm.running ? 'running' : 'stopped',
        ha: vm.haManaged ? { managed: 1, state: vm.running ? 'started' : 'stopped' } : { managed: 0 },
      };
      if (vm.running) Object.assign(out, { 'running-machine': 'pc-i440fx-9.2+pve1', 'running-qemu': '9.2.0' });
      if (agentEnabled(vm)) out['agent'] = 1;
      return out;
    },
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/qemu/{vmid}/status/start',
    schema: {
      ...vmPath,
      skiplock,
      timeout: { type: 'integer', optional: true, minimum: 0, maximum: 86400 },
      machine: { type: 'string', optional: true },
      migratedfrom: { ...nodeSpec, optional: true },
      'force-cpu': { type: 'string', optional: true },
    },
    handler: (ctx) => power(ctx, 'start'),
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/qemu/{vmid}/status/stop',
    schema: {
      ...vmPath,
      skiplock,
      timeout: { type: 'integer', optional: true, minimum: 0 },
      keepActive: { type: 'boolean', optional: true },
      'overrule-shutdown': { type: 'boolean', optional: true },
      migratedfrom: { ...nodeSpec, optional: true },
    },
    handler: (ctx) => power(ctx, 'stop'),
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/qemu/{vmid}/status/shutdown',
    schema: {
      ...vmPath,
      skiplock,
      timeout: { type: 'integer', optional: true, minimum: 0 },
      forceStop: { type: 'boolean', optional: true },
      keepActive: { type: 'boolean', optional: true },
    },
    handler: (ctx) => power(ctx, 'shutdown'),
  },
  {
    method: 'DELETE',
    pattern: '/nodes/{node}/qemu/{vmid}',
    schema: { ...vmPath, skiplock, purge: { type: 'boolean', optional: true }, 'destroy-unreferenced-disks': { type: 'boolean', optional: true } },
    handler: (ctx) => destroyVm(ctx),
  },
];

function requireQuorum(sim: PveSim): void {
  if (!sim.state.quorate) throw serverError('cluster not ready - no quorum?');
}

function rootOnly(caller: Caller, params: CheckedParams, keys: string[]): void {
  for (const k of keys) {
    if (params[k] !== undefined && !isRoot(caller)) throw paramError({ [k]: 'Only root may use this option.' });
  }
}

function configValues(params: CheckedParams, exclude: Set<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) if (!exclude.has(k)) out[k] = String(v);
  return out;
}

async function createVm({ sim, caller, node, params }: RouteContext): Promise<string> {
  const n = node!.name;
  const vmid = Number(params['vmid']);
  requireQuorum(sim);
  const pool = params['pool'] === undefined ? undefined : String(params['pool']);
  // qemu-server create_vm: the pool must exist; VM.Allocate on the VM or on its pool.
  if (pool !== undefined && !sim.state.pools.has(pool)) throw new PveApiError(403, `Permission check failed (pool '${pool}' does not exist)`);
  if (!sim.access.has(caller, `/vms/${vmid}`, 'VM.Allocate') && !(pool !== undefined && sim.access.has(caller, `/pool/${pool}`, 'VM.Allocate'))) {
    sim.access.check(caller, `/vms/${vmid}`, 'VM.Allocate');
  }
  const values = configValues(params, createOnly);
  applyCdromAlias(values);
  const defaultStorage = params['storage'] === undefined ? undefined : String(params['storage']);
  const plans = checkConfigKeys(sim, caller, n, vmid, values, defaultStorage);
  if (values['balloon'] !== undefined && memoryMiB(values['memory'] ?? '512') < Number(values['balloon'])) {
    throw serverError('balloon value too large (must be smaller than assigned memory)');
  }
  await sim.acquireVmMutex(vmid, 5_000);
  const existing = sim.state.vms.get(vmid);
  if (existing) {
    const lock = existing.config.get('lock');
    if (lock && existing.node === n) throw serverError(`unable to create VM ${vmid} - VM is locked (${lock})`);
    throw serverError(`unable to create VM ${vmid} - VM ${vmid} already exists on node '${existing.node}'`);
  }
  const vm: SimVm = {
    vmid,
    node: n,
    config: new Map([['lock', 'create']]),
    running: false,
    paused: false,
    haManaged: false,
    createdAtMs: sim.clock.now(),
    ...(pool !== undefined ? { pool } : {}),
  };
  sim.state.vms.set(vmid, vm);
  sim.event('vm-create-started', { vmid, node: n });
  const allocated: string[] = [];
  const start = params['start'] === 1;
  const task = sim.taskBoard.start({
    node: n,
    type: 'qmcreate',
    id: String(vmid),
    vmid,
    caller,
    allocations: storageAllocations(sim, n, plans),
    work: (log) => {
      // As qemu-server's create worker: tag rules first (assert_tag_permissions), then the config is written.
      if (values['tags'] !== undefined) assertTagPermissions(sim, caller, values['tags']);
      const config = buildConfig(sim, vm, values, plans, allocated);
      for (const id of allocated) log(`  ${id.split(':')[1]}: created`);
      vm.config = config;
      sim.event('vm-created', { vmid, node: n });
      if (start) startVm(sim, vmid, n, false);
    },
    onFailure: () => {
      for (const volid of allocated) sim.state.removeVolume(volid, vm.node);
      if (sim.state.vms.get(vmid) === vm) sim.state.vms.delete(vmid);
      sim.event('vm-create-failed', { vmid, node: n });
    },
  });
  return task.upid;
}

/**
 * The storage locks a create's new disks take (pve-storage vdisk_alloc → cluster_lock_storage): a lock file on the
 * node for local storage, the cluster-wide cfs lock `storage-<id>` for shared storage; 10 s to get it.
 */
function storageAllocations(sim: PveSim, node: string, plans: DrivePlan[]): TaskAllocation[] {
  return plans.flatMap((p) => {
    if (p.kind !== 'new') return [];
    const shared = sim.state.storages.get(p.sid)?.shared === true;
    return [
      shared
        ? { lock: p.sid, timeoutMessage: `cfs-lock 'storage-${p.sid}' error: got lock request timeout` }
        : { lock: `${node}/${p.sid}`, timeoutMessage: `can't lock file '/var/lock/pve-manager/pve-storage-${p.sid}' - got timeout` },
    ];
  });
}

function buildConfig(sim: PveSim, vm: SimVm, values: Record<string, string>, plans: DrivePlan[], allocated: string[]): Map<string, string> {
  const config = new Map<string, string>();
  for (const [k, v] of Object.entries(values)) {
    if (isDrive(k)) continue;
    if (/^net\d+$/.test(k)) config.set(k, printNet(sim, v));
    else if (k === 'tags') {
      const tags = printTags(v);
      if (tags) config.set(k, tags);
    } else config.set(k, v);
  }
  for (const plan of plans) config.set(plan.key, realiseDrive(sim, vm.node, vm.vmid, plan, allocated));
  if (!config.has('smbios1')) config.set('smbios1', `uuid=${sim.rng.uuid()}`);
  const genid = config.get('vmgenid');
  if (genid === undefined || genid === '1') config.set('vmgenid', sim.rng.uuid());
  else if (genid === '0') config.delete('vmgenid');
  config.set('meta', `creation-qemu=9.2.0,ctime=${Math.floor(sim.clock.now() / 1000)}`);
  if (!config.has('boot')) {
    const boot = defaultBoot(config);
    if (boot) config.set('boot', boot);
  } else checkBootOrder(config.get('boot')!, new Set(config.keys()));
  return new Map([...config].sort(([a], [b]) => a.localeCompare(b)));
}

function memoryMiB(value: string): number {
  return Number(parsePropertyString(value, formats.memory)['current'] ?? 512);
}

async function updateVm({ sim, caller, node, params }: RouteContext, mode: 'sync' | 'async'): Promise<string | null> {
  const n = node!.name;
  const vmid = Number(params['vmid']);
  sim.state.vmOn(n, vmid);
  requireQuorum(sim);
  rootOnly(caller, params, ['skiplock']);
  await sim.acquireVmMutex(vmid);
  const vm = sim.state.vmOn(n, vmid);
  const values = configValues(params, updateOnly);
  applyCdromAlias(values);
  const deletes = params['delete'] === undefined ? [] : String(params['delete']).split(/[,;\s]+/).filter(Boolean);
  if (Object.keys(values).length === 0 && deletes.length === 0 && params['revert'] === undefined) throw serverError('no options specified');
  if (params['digest'] !== undefined && params['digest'] !== sim.state.digest(vm)) {
    throw serverError('checksum mismatch (file change by other user?)');
  }
  const lock = vm.config.get('lock');
  if (lock && params['skiplock'] !== 1) throw serverError(`VM is locked (${lock})`);
  for (const k of deletes) {
    const priv = isDrive(k) ? 'VM.Config.Disk' : undefined;
    if (priv) sim.access.check(caller, `/vms/${vmid}`, priv);
    else checkConfigKeys(sim, caller, n, vmid, { [k]: vm.config.get(k) ?? '' }, undefined);
  }
  const plans = checkConfigKeys(sim, caller, n, vmid, values, undefined);
  const memory = values['memory'] ?? vm.config.get('memory') ?? '512';
  const balloon = values['balloon'] ?? vm.config.get('balloon');
  if (balloon !== undefined && Number(balloon) > memoryMiB(memory)) {
    throw serverError('balloon value too large (must be smaller than assigned memory)');
  }
  const apply = () => {
    if (values['tags'] !== undefined) assertTagPermissions(sim, caller, values['tags'], vm.config.get('tags') ?? '');
    const allocated: string[] = [];
    const next = new Map(vm.config);
    for (const k of deletes) {
      const old = next.get(k);
      next.delete(k);
      if (old !== undefined && isDrive(k) && !/(^|,)media=cdrom(,|$)/.test(old)) {
        const file = old.split(',')[0]!;
        let i = 0;
        while (next.has(`unused${i}`)) i++;
        next.set(`unused${i}`, file);
      }
    }
    for (const [k, v] of Object.entries(values)) {
      if (isDrive(k)) continue;
      if (/^net\d+$/.test(k)) next.set(k, printNet(sim, v, vm.config.get(k)));
      else if (k === 'tags') {
        const tags = printTags(v);
        if (tags) next.set(k, tags);
        else next.delete(k);
      } else next.set(k, v);
    }
    try {
      for (const plan of plans) next.set(plan.key, realiseDrive(sim, n, vmid, plan, allocated));
      const boot = next.get('boot');
      if (boot !== undefined && (values['boot'] !== undefined || deletes.length > 0)) checkBootOrder(boot, new Set(next.keys()));
    } catch (err) {
      for (const volid of allocated) sim.state.removeVolume(volid, n);
      throw err;
    }
    vm.config = new Map([...next].sort(([a], [b]) => a.localeCompare(b)));
  };
  if (mode === 'sync') {
    try {
      apply();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (message.startsWith('invalid bootorder')) throw paramError({ boot: message });
      throw serverError(message);
    }
    return null;
  }
  const task = sim.taskBoard.start({ node: n, type: 'qmconfig', id: String(vmid), vmid, caller, work: () => apply() });
  const delay = params['background_delay'];
  if (delay !== undefined && (await waitForTask(sim, task.upid, n, Number(delay) * 1000))) return null;
  return task.upid;
}

/** Start checks PVE makes in the worker; throws the task's error text. */
function startVm(sim: PveSim, vmid: number, node: string, checkLock: boolean): void {
  const vm = sim.state.vms.get(vmid);
  if (!vm || vm.node !== node) throw new Error(`unable to find configuration file for VM ${vmid} on node '${node}'`);
  const lock = vm.config.get('lock');
  if (checkLock && lock) throw new Error(`VM is locked (${lock})`);
  if (vm.running) throw new Error(`VM ${vmid} already running`);
  if (vm.config.get('template') === '1') throw new Error("you can't start a vm if it's a template");
  const host = sim.state.nodes.get(node)!;
  // qemu-server config_to_command: no more vCPUs than the host has CPUs; Memory.pm: hugepages need numa.
  const vcpus = Number(vm.config.get('sockets') ?? 1) * Number(vm.config.get('cores') ?? 1);
  if (vcpus > host.maxcpu) throw new Error(`MAX ${host.maxcpu} vcpus allowed per VM on this node`);
  if (vm.config.get('hugepages') !== undefined && vm.config.get('numa') !== '1') throw new Error('numa needs to be enabled to use hugepages');
  for (const [k, v] of vm.config) {
    if (/^net\d+$/.test(k)) {
      const bridge = parsePropertyString(v, formats.net)['bridge'];
      if (bridge !== undefined && !host.bridges.has(bridge)) throw new Error(`bridge '${bridge}' does not exist`);
    }
    if (/^hostpci\d+$/.test(k)) {
      const pci = parsePropertyString(v, formats.hostpci);
      const id = pci['mapping'];
      if (id !== undefined) {
        const m = sim.state.pciMappings.get(id);
        if (!m || !m.map.some((e) => e.node === node)) throw new Error(`PCI device mapping not found for '${id}'`);
      }
      if (pci['pcie'] === '1' && !/q35/.test(vm.config.get('machine') ?? '')) throw new Error('q35 machine model is not enabled');
    }
    const usbIndex = /^usb(\d+)$/.exec(k)?.[1];
    if (usbIndex !== undefined) {
      // qemu-server USB.pm: usb5 and up only on the qemu-xhci controller (machine >= 7.1, which every unpinned
      // machine is here, and ostype l26 or Windows > 7); a mapping must have exactly one entry for this node.
      const ostype = vm.config.get('ostype') ?? '';
      if (Number(usbIndex) >= 5 && !['l26', 'win8', 'win10', 'win11'].includes(ostype)) {
        throw new Error(`using usb${usbIndex} is only possible with machine type >= 7.1 and ostype l26 or windows > 7`);
      }
      const id = parsePropertyString(v, formats.usb)['mapping'];
      if (id !== undefined) {
        const here = sim.state.usbMappings.get(id)?.map.filter((e) => e.node === node) ?? [];
        if (here.length === 0) throw new Error(`USB device mapping not found for '${id}'`);
        if (here.length > 1) throw new Error('More than one USB mapping per host not supported');
      }
    }
  }
  for (const volid of sim.state.referencedVolids(vm, true)) {
    if (!sim.state.findVolume(volid, node)) throw new Error(`volume '${volid}' does not exist`);
  }
  vm.running = true;
  vm.paused = false;
  vm.startedAtMs = sim.clock.now();
  vm.pid = 20_000 + sim.rng.int(100_000);
  sim.event('vm-started', { vmid, node });
}

function power({ sim, caller, node, params }: RouteContext, action: 'start' | 'stop' | 'shutdown'): string {
  const n = node!.name;
  const vmid = Number(params['vmid']);
  requireQuorum(sim);
  rootOnly(caller, params, ['skiplock', 'migratedfrom', 'keepActive', 'machine', 'force-cpu']);
  sim.access.check(caller, `/vms/${vmid}`, 'VM.PowerMgmt');
  const skip = params['skiplock'] === 1;
  const existing = sim.state.vms.get(vmid);
  const ha = existing?.node === n && existing.haManaged;
  if (action === 'start') {
    const task = sim.taskBoard.start({
      node: n, type: ha ? 'hastart' : 'qmstart', id: String(vmid), vmid, caller,
      work: (log) => {
        sim.assertVmMutexFree(vmid);
        startVm(sim, vmid, n, !skip);
        log(`VM ${vmid} started`);
      },
    });
    return task.upid;
  }
  if (action === 'stop') {
    if (params['overrule-shutdown'] === 1) {
      for (const t of sim.taskBoard.list({ type: 'qmshutdown', vmid, status: 'running' })) sim.taskBoard.interrupt(t);
    }
    const task = sim.taskBoard.start({
      node: n, type: ha ? 'hastop' : 'qmstop', id: String(vmid), vmid, caller,
      work: () => {
        const vm = sim.state.vms.get(vmid);
        if (!vm || vm.node !== n) throw new Error(`unable to find configuration file for VM ${vmid} on node '${n}'`);
        sim.assertVmMutexFree(vmid);
        const lock = vm.config.get('lock');
        if (lock && !skip) throw new Error(`VM is locked (${lock})`);
        stopVm(sim, vm);
      },
    });
    return task.upid;
  }
  const vm = sim.state.vmOn(n, vmid);
  if (vm.paused && params['forceStop'] !== 1) throw serverError('VM is paused - cannot shutdown');
  const task = sim.taskBoard.start({
    node: n, type: 'qmshutdown', id: String(vmid), vmid, caller,
    work: () => {
      const current = sim.state.vms.get(vmid);
      if (!current || current.node !== n) throw new Error(`unable to find configuration file for VM ${vmid} on node '${n}'`);
      const lock = current.config.get('lock');
      if (lock && !skip) throw new Error(`VM is locked (${lock})`);
      if (!current.running) return;
      if (sim.shutdownIgnored.has(vmid) && params['forceStop'] !== 1) throw new Error('VM quit/powerdown failed - got timeout');
      stopVm(sim, current);
    },
  });
  return task.upid;
}

function stopVm(sim: PveSim, vm: SimVm): void {
  if (!vm.running) return;
  vm.running = false;
  vm.paused = false;
  delete vm.startedAtMs;
  delete vm.pid;
  sim.event('vm-stopped', { vmid: vm.vmid, node: vm.node });
}

async function destroyVm({ sim, caller, node, params }: RouteContext): Promise<string> {
  const n = node!.name;
  const vmid = Number(params['vmid']);
  rootOnly(caller, params, ['skiplock']);
  sim.state.vmOn(n, vmid);
  sim.access.check(caller, `/vms/${vmid}`, 'VM.Allocate');
  await sim.acquireVmMutex(vmid);
  const vm = sim.state.vmOn(n, vmid);
  requireQuorum(sim);
  if (vm.config.get('protection') === '1') throw serverError(`can't remove VM ${vmid} - protection mode enabled`);
  if (vm.haManaged && params['purge'] !== 1) {
    throw serverError(`unable to remove VM ${vmid} - used in HA resources and purge parameter not set.`);
  }
  if (vm.running) throw serverError(`VM ${vmid} is running - destroy failed`);
  const lock = vm.config.get('lock');
  const lockedBefore = lock !== undefined && params['skiplock'] !== 1 ? lock : undefined;
  if (lockedBefore === undefined) vm.config.set('lock', 'destroyed');
  const task = sim.taskBoard.start({
    node: n, type: 'qmdestroy', id: String(vmid), vmid, caller,
    work: (log) => {
      sim.assertVmMutexFree(vmid);
      if (lockedBefore !== undefined) throw new Error(`VM is locked (${lockedBefore})`);
      const owned = new Set<string>();
      for (const volid of sim.state.referencedVolids(vm)) {
        const v = sim.state.findVolume(volid, n);
        if (v?.vmid === vmid) owned.add(volid);
      }
      for (const [k, v] of vm.config) if (/^unused\d+$/.test(k)) owned.add(v);
      if (params['destroy-unreferenced-disks'] === 1) {
        for (const s of sim.state.storages.values()) {
          if (!sim.state.enabledOn(s, n) || !s.content.has('images')) continue;
          for (const v of sim.state.volumeMap(s, n).values()) if (v.vmid === vmid) owned.add(v.volid);
        }
      }
      for (const volid of owned) {
        if (sim.state.removeVolume(volid, n)) log(`  Logical volume "${volid.split(':')[1]}" successfully removed.`);
      }
      // qemu-server: with purge, delete_service_from_config("vm:<id>", purge) (PVE 9 also strips it from rules).
      if (params['purge'] === 1) sim.ha.removeResource(sim, `vm:${vmid}`, true);
      sim.state.vms.delete(vmid);
      sim.event('vm-destroyed', { vmid, node: n });
    },
    onFailure: () => {
      if (vm.config.get('lock') === 'destroyed') vm.config.delete('lock');
    },
  });
  return task.upid;
}

/** The HA LRM starting a VM (its `started` request state). */
export function haStartVm(sim: PveSim, vmid: number): void {
  const vm = sim.state.vms.get(vmid);
  if (!vm) throw new Error(`unable to find configuration file for VM ${vmid}`);
  if (vm.running) return;
  startVm(sim, vmid, vm.node, true);
}

/** The HA LRM shutting a VM down (its `stopped`/`disabled` request state). */
export function haStopVm(sim: PveSim, vmid: number): void {
  const vm = sim.state.vms.get(vmid);
  if (vm) stopVm(sim, vm);
}
