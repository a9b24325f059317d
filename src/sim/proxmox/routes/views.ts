// JSON views shared by several routes: node entries, VM list entries, storage content strings.
import type { Caller } from '../auth.js';
import type { PveSim } from '../sim.js';
import type { SimNode, SimStorage, SimVm } from '../state.js';

export function storageStatus(s: SimStorage): { content: string } {
  return { content: [...s.content].sort().join(',') };
}

/** A `/nodes` (and `/cluster/resources` node) entry; stats only with Sys.Audit and while the node is online. */
export function nodeEntry(sim: PveSim, caller: Caller, n: SimNode): Record<string, unknown> {
  const entry: Record<string, unknown> = {
    id: `node/${n.name}`,
    type: 'node',
    node: n.name,
    status: n.online ? 'online' : 'offline',
    level: '',
    ssl_fingerprint: n.sslFingerprint,
  };
  if (n.online && sim.access.has(caller, `/nodes/${n.name}`, 'Sys.Audit')) {
    Object.assign(entry, {
      cpu: n.cpu,
      maxcpu: n.maxcpu,
      mem: sim.state.nodeMemUsed(n),
      maxmem: n.maxmem,
      disk: 8 * 1024 ** 3,
      maxdisk: 100 * 1024 ** 3,
      uptime: Math.floor((sim.clock.now() - n.bootedAtMs) / 1000),
    });
  }
  return entry;
}

export function vmListEntry(sim: PveSim, vm: SimVm): Record<string, unknown> {
  const st = sim.state;
  const entry: Record<string, unknown> = {
    vmid: vm.vmid,
    name: vm.config.get('name') ?? `VM ${vm.vmid}`,
    status: vm.running ? 'running' : 'stopped',
    maxmem: st.vmMemoryBytes(vm),
    mem: st.vmMemUsed(vm),
    memhost: st.vmMemUsed(vm),
    cpus: st.vmCpus(vm),
    cpu: vm.running ? 0.02 : 0,
    maxdisk: st.vmMaxDisk(vm),
    disk: 0,
    uptime: vm.running && vm.startedAtMs !== undefined ? Math.floor((sim.clock.now() - vm.startedAtMs) / 1000) : 0,
    netin: 0,
    netout: 0,
    diskread: 0,
    diskwrite: 0,
  };
  if (vm.running && vm.pid !== undefined) entry['pid'] = vm.pid;
  const lock = vm.config.get('lock');
  if (lock) entry['lock'] = lock;
  const tags = vm.config.get('tags');
  if (tags) entry['tags'] = tags;
  if (vm.config.get('template') === '1') entry['template'] = 1;
  return entry;
}
