// Routes below /cluster: status, nextid, resources, PCI and USB mappings.
import { paramError, serverError } from '../errors.js';
import type { Route } from '../routing.js';
import type { PveSim } from '../sim.js';
import { nodeSpec, vmidSpec } from '../validate.js';
import { nodeEntry, storageStatus } from './views.js';

export const clusterRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/cluster/status',
    schema: {},
    handler: ({ sim, caller }) => {
      sim.access.check(caller, '/', 'Sys.Audit');
      const st = sim.state;
      const nodes = [...st.nodes.values()];
      return [
        { type: 'cluster', id: 'cluster', name: st.clusterName, version: nodes.length + 2, quorate: st.quorate ? 1 : 0, nodes: nodes.length },
        ...nodes.map((n) => ({
          type: 'node',
          id: `node/${n.name}`,
          name: n.name,
          nodeid: n.nodeid,
          ip: n.ip,
          online: n.online ? 1 : 0,
          local: n.name === st.entryNode ? 1 : 0,
          level: '',
        })),
      ];
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/nextid',
    schema: { vmid: { ...vmidSpec, optional: true } },
    handler: ({ sim, params }) => {
      const st = sim.state;
      const wanted = params['vmid'];
      if (wanted !== undefined) {
        if (st.vms.has(Number(wanted))) throw paramError({ vmid: `VM ${wanted} already exists` });
        // A free answer reserves nothing either: the external actor may take the ID right after.
        for (const h of sim.afterNextId.splice(0)) h(Number(wanted));
        return String(wanted);
      }
      const { lower, upper } = st.nextId;
      let id: number | undefined;
      for (let i = lower; i < upper; i++) {
        if (!st.vms.has(i)) {
          id = i;
          break;
        }
      }
      if (id === undefined) throw serverError(`unable to get any free VMID in range [${lower}, ${upper}]`);
      const hooks = sim.afterNextId.splice(0);
      for (const h of hooks) h(id);
      return String(id);
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/resources',
    schema: { type: { type: 'string', optional: true, enum: ['vm', 'storage', 'node', 'sdn', 'pool', 'network'] } },
    handler: ({ sim, params, caller }) => {
      const st = sim.state;
      const type = params['type'];
      const out: Record<string, unknown>[] = [];
      if (type === undefined || type === 'vm') {
        for (const vm of st.vms.values()) {
          if (!sim.access.has(caller, `/vms/${vm.vmid}`, 'VM.Audit')) continue;
          const host = st.nodes.get(vm.node);
          const entry: Record<string, unknown> = {
            id: `qemu/${vm.vmid}`,
            type: 'qemu',
            vmid: vm.vmid,
            node: vm.node,
            name: vm.config.get('name') ?? `VM ${vm.vmid}`,
            status: host?.online === false || noSampleYet(sim, vm.createdAtMs) ? 'unknown' : vm.running ? 'running' : 'stopped',
            maxmem: st.vmMemoryBytes(vm),
            mem: st.vmMemUsed(vm),
            maxcpu: st.vmCpus(vm),
            cpu: vm.running ? 0.02 : 0,
            maxdisk: st.vmMaxDisk(vm),
            disk: 0,
            uptime: vm.running && vm.startedAtMs !== undefined ? Math.floor((sim.clock.now() - vm.startedAtMs) / 1000) : 0,
            template: vm.config.get('template') === '1' ? 1 : 0,
            netin: 0,
            netout: 0,
            diskread: 0,
            diskwrite: 0,
          };
          const tags = vm.config.get('tags');
          if (tags) entry['tags'] = tags;
          const lock = vm.config.get('lock');
          if (lock) entry['lock'] = lock;
          if (vm.haManaged) entry['hastate'] = vm.running ? 'started' : 'stopped';
          out.push(entry);
        }
      }
      if (type === undefined || type === 'node') {
        for (const n of st.nodes.values()) {
          out.push({ ...nodeEntry(sim, caller, n), 'cgroup-mode': 2, 'host-arch': 'x86_64', hastate: n.online ? 'online' : 'unknown' });
        }
      }
      if (type === undefined || type === 'storage') {
        for (const s of st.storages.values()) {
          if (!sim.access.has(caller, `/storage/${s.id}`, 'Datastore.Audit') && !sim.access.has(caller, `/storage/${s.id}`, 'Datastore.AllocateSpace')) continue;
          for (const n of st.nodes.values()) {
            if (!st.enabledOn(s, n.name)) continue;
            const active = st.activeOn(s, n.name);
            const u = st.usage(s, n.name);
            out.push({
              id: `storage/${n.name}/${s.id}`,
              type: 'storage',
              storage: s.id,
              node: n.name,
              plugintype: s.type,
              status: active ? 'available' : 'unknown',
              shared: s.shared ? 1 : 0,
              content: storageStatus(s).content,
              disk: active ? u.used : 0,
              maxdisk: active ? u.total : 0,
            });
          }
        }
      }
      return sim.order(out);
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/mapping/pci',
    schema: { 'check-node': { ...nodeSpec, optional: true } },
    handler: ({ sim, params, caller }) => {
      const checkNode = params['check-node'];
      const out: Record<string, unknown>[] = [];
      for (const m of sim.state.pciMappings.values()) {
        const path = `/mapping/pci/${m.id}`;
        if (!['Mapping.Audit', 'Mapping.Use', 'Mapping.Modify'].some((p) => sim.access.has(caller, path, p))) continue;
        const entry: Record<string, unknown> = {
          id: m.id,
          map: m.map.map((e, i) => `node=${e.node},path=${e.path},id=${e.id},iommugroup=${10 + i}`),
          digest: sim.rng.hex(20),
        };
        if (m.description !== undefined) entry['description'] = m.description;
        if (checkNode !== undefined) {
          entry['checks'] = m.map.some((e) => e.node === checkNode)
            ? []
            : [{ severity: 'warning', message: `No mapping for node '${checkNode}'` }];
        }
        out.push(entry);
      }
      return sim.order(out);
    },
  },
  {
    // pve-manager API2/Cluster/Mapping/USB.pm index: the mappings the caller holds Mapping.Audit, .Use or .Modify on;
    // `check-node` adds the checks for that node (an entry missing there is a warning).
    method: 'GET',
    pattern: '/cluster/mapping/usb',
    schema: { 'check-node': { ...nodeSpec, optional: true } },
    handler: ({ sim, params, caller }) => {
      const checkNode = params['check-node'];
      const out: Record<string, unknown>[] = [];
      for (const m of sim.state.usbMappings.values()) {
        const path = `/mapping/usb/${m.id}`;
        if (!['Mapping.Audit', 'Mapping.Use', 'Mapping.Modify'].some((p) => sim.access.has(caller, path, p))) continue;
        const entry: Record<string, unknown> = {
          id: m.id,
          map: m.map.map((e) => `node=${e.node},id=${e.id}${e.path ? `,path=${e.path}` : ''}`),
          digest: sim.rng.hex(20),
        };
        if (m.description !== undefined) entry['description'] = m.description;
        if (checkNode !== undefined) {
          entry['checks'] = m.map.some((e) => e.node === checkNode)
            ? []
            : [{ severity: 'warning', message: `No mapping for node '${checkNode}'` }];
        }
        out.push(entry);
      }
      return sim.order(out);
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/options',
    schema: {},
    handler: ({ sim, caller }) => {
      sim.access.check(caller, '/', 'Sys.Audit');
      return structuredClone(sim.state.datacenter);
    },
  },
  {
    // pve-manager API2/Pool.pm index: with `poolid` (PVE 8.1+) the one pool, or "pool '<id>' does not exist" (its
    // Pool.Audit check result is ignored); without, the pools the caller holds Pool.Audit on.
    method: 'GET',
    pattern: '/pools',
    schema: {
      poolid: { type: 'string', optional: true, pattern: /^[A-Za-z0-9.\-_]+$/ },
      type: { type: 'string', optional: true, enum: ['qemu', 'lxc', 'storage'] },
    },
    handler: ({ sim, params, caller }) => {
      const poolid = params['poolid'] === undefined ? undefined : String(params['poolid']);
      if (poolid !== undefined && sim.profile.name === 'pve8.0') {
        throw paramError({ poolid: 'property is not defined in schema and the schema does not allow additional properties' });
      }
      if (poolid !== undefined) {
        const pool = sim.state.pools.get(poolid);
        if (!pool) throw serverError(`pool '${poolid}' does not exist`);
        const type = params['type'];
        const members =
          type === undefined || type === 'qemu'
            ? [...sim.state.vms.values()].filter((vm) => vm.pool === poolid).map((vm) => ({ id: `qemu/${vm.vmid}`, type: 'qemu', vmid: vm.vmid, node: vm.node }))
            : [];
        return [{ poolid, members, ...(pool.comment !== undefined ? { comment: pool.comment } : {}) }];
      }
      return sim.order(
        [...sim.state.pools]
          .filter(([id]) => sim.access.has(caller, `/pool/${id}`, 'Pool.Audit'))
          .map(([id, p]) => ({ poolid: id, ...(p.comment !== undefined ? { comment: p.comment } : {}) })),
      );
    },
  },
  {
    // pve-manager API2/Pool.pm delete_pool: Pool.Allocate on /pool/<id>; only an empty pool (no VM, no storage
    // member), else "pool '<id>' is not empty (contains VM <vmid>)"; errors carry lock_user_config's "delete pool
    // failed: " prefix.
    method: 'DELETE',
    pattern: '/pools/{poolid}',
    schema: { poolid: { type: 'string', pattern: /^[A-Za-z0-9.\-_]+$/ } },
    handler: ({ sim, params, caller }) => {
      const poolid = String(params['poolid']);
      sim.access.check(caller, `/pool/${poolid}`, 'Pool.Allocate');
      if (!sim.state.quorate) throw serverError('cluster not ready - no quorum?');
      if (!sim.state.pools.has(poolid)) throw serverError(`delete pool failed: pool '${poolid}' does not exist`);
      const member = [...sim.state.vms.values()].find((vm) => vm.pool === poolid);
      if (member) throw serverError(`delete pool failed: pool '${poolid}' is not empty (contains VM ${member.vmid})`);
      sim.state.pools.delete(poolid);
      sim.event('pool-deleted', { poolid });
      return null;
    },
  },
];

/** pvestatd has not sampled a VM created within the current RRD interval yet. */
function noSampleYet(sim: PveSim, createdAtMs: number | undefined): boolean {
  const cadence = sim.statsCadenceMs;
  if (createdAtMs === undefined || cadence <= 0) return false;
  return Math.floor(sim.clock.now() / cadence) === Math.floor(createdAtMs / cadence);
}
