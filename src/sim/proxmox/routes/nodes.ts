// Routes: `/nodes`, node status, the node's network interfaces, and the task status/log/stop endpoints.
import { PVE_BUILTIN_CPU_MODELS, QEMU_CPU_MODELS } from '../../../proxmox/cpuModels.js';
import { paramError } from '../errors.js';
import type { Caller } from '../auth.js';
import type { PveSim } from '../sim.js';
import type { SimNode } from '../state.js';
import { WithTotal, type Route } from '../routing.js';
import type { SimTask } from '../tasks.js';
import { upidPattern } from '../tasks.js';
import { nodeSpec } from '../validate.js';
import { nodeEntry } from './views.js';

/** PVE 9's `type` filter values for the network list. */
const networkTypeFilters = [
  'bridge', 'bond', 'eth', 'alias', 'vlan', 'fabric', 'OVSBridge', 'OVSBond', 'OVSPort', 'OVSIntPort', 'vnet',
  'any_bridge', 'any_local_bridge', 'include_sdn',
] as const;

export const nodeRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/nodes',
    schema: {},
    handler: ({ sim, caller }) => sim.order([...sim.state.nodes.values()].map((n) => nodeEntry(sim, caller, n))),
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/status',
    schema: { node: nodeSpec },
    handler: ({ sim, caller, node }) => {
      const n = node!;
      sim.access.check(caller, `/nodes/${n.name}`, 'Sys.Audit');
      const used = sim.state.nodeMemUsed(n);
      const uptime = Math.floor((sim.clock.now() - n.bootedAtMs) / 1000);
      return {
        cpu: n.cpu,
        cpuinfo: { cpus: n.maxcpu, cores: Math.max(1, n.maxcpu / 2), sockets: 1, model: 'Simulated CPU @ 3.00GHz', mhz: '3000.000', hvm: '1', flags: 'fpu vme de pse' },
        memory: { total: n.maxmem, used, free: n.maxmem - used, available: n.maxmem - used },
        swap: { total: 8 * 1024 ** 3, used: 0, free: 8 * 1024 ** 3 },
        rootfs: { total: 100 * 1024 ** 3, used: 8 * 1024 ** 3, free: 92 * 1024 ** 3, avail: 87 * 1024 ** 3 },
        uptime,
        loadavg: ['0.12', '0.20', '0.18'],
        kversion: 'Linux 6.14.8-2-pve #1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2 (2025-07-22T10:04Z) x86_64',
        pveversion: `pve-manager/${sim.profile.version.version}/${sim.profile.version.repoid}`,
        'current-kernel': { sysname: 'Linux', release: '6.14.8-2-pve', version: '#1 SMP PREEMPT_DYNAMIC', machine: 'x86_64' },
        'boot-info': { mode: 'efi', secureboot: 0 },
        ksm: { shared: 0 },
        idle: 0,
        wait: 0,
      };
    },
  },
  {
    // qemu-server API2/Qemu/CPU.pm: the node's models (x86_64 here, with qemu-server's built-in list), custom ones
    // only to callers with Sys.Audit on /nodes.
    method: 'GET',
    pattern: '/nodes/{node}/capabilities/qemu/cpu',
    schema: { node: nodeSpec, arch: { type: 'string', optional: true, enum: ['x86_64', 'aarch64'] } },
    handler: ({ sim, caller, params }) => {
      const arch = params['arch'] === 'aarch64' ? 'aarch64' : 'x86_64';
      const models: Record<string, unknown>[] = QEMU_CPU_MODELS[arch].map((name) => ({ name, custom: 0, vendor: cpuVendor(name) }));
      if (arch === 'x86_64') {
        models.push({ name: 'host', custom: 0, vendor: 'default' });
        for (const name of PVE_BUILTIN_CPU_MODELS) models.push({ name, custom: 0, vendor: 'default' });
      }
      if (sim.access.has(caller, '/nodes', 'Sys.Audit')) {
        for (const name of sim.state.customCpuModels) models.push({ name: `custom-${name}`, custom: 1, vendor: 'default' });
      }
      return sim.order(models);
    },
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/network',
    schema: { node: nodeSpec, type: { type: 'string', optional: true, enum: networkTypeFilters } },
    handler: ({ sim, caller, node, params }) => {
      const filter = params['type'] === undefined ? undefined : String(params['type']);
      return sim.order(
        nodeInterfaces(node!).filter((i) => {
          const isBridge = i.type === 'bridge' || i.type === 'OVSBridge';
          if (filter !== undefined && filter !== 'include_sdn' && filter !== i.type && !(isBridge && /^any(_local)?_bridge$/.test(filter))) return false;
          return !isBridge || mayUseBridge(sim, caller, String(i.iface));
        }),
      );
    },
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/tasks/{upid}/status',
    schema: { node: nodeSpec, upid: { type: 'string' } },
    handler: ({ sim, caller, node, params }) => {
      const t = findTask(sim, caller, node!.name, String(params['upid']));
      const bang = t.user.indexOf('!');
      const out: Record<string, unknown> = {
        upid: t.upid,
        node: t.node,
        pid: t.pid,
        pstart: t.pstart,
        starttime: t.starttime,
        type: t.type,
        id: t.id,
        user: bang < 0 ? t.user : t.user.slice(0, bang),
        status: t.status,
      };
      if (bang >= 0) out['tokenid'] = t.user.slice(bang + 1);
      if (t.status === 'stopped') out['exitstatus'] = t.exitstatus;
      return out;
    },
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/tasks/{upid}/log',
    schema: {
      node: nodeSpec,
      upid: { type: 'string' },
      start: { type: 'integer', optional: true, minimum: 0 },
      limit: { type: 'integer', optional: true, minimum: 0 },
      download: { type: 'boolean', optional: true },
    },
    handler: ({ sim, caller, node, params }) => {
      const t = findTask(sim, caller, node!.name, String(params['upid']));
      const lines = t.log.length ? t.log : [];
      if (params['download'] === 1) {
        if (params['start'] !== undefined || params['limit'] !== undefined) {
          throw paramError({ download: "'download' is not compatible with 'start' or 'limit'" });
        }
        return lines.join('\n') + (lines.length ? '\n' : '');
      }
      const start = Number(params['start'] ?? 0);
      const limit = Number(params['limit'] ?? 50);
      if (lines.length === 0) return new WithTotal([{ n: 1, t: 'no content' }], 1);
      const page = lines.slice(start, start + limit).map((text, i) => ({ n: start + i + 1, t: text }));
      return new WithTotal(page, lines.length);
    },
  },
  {
    method: 'DELETE',
    pattern: '/nodes/{node}/tasks/{upid}',
    schema: { node: nodeSpec, upid: { type: 'string' } },
    handler: ({ sim, caller, node, params }) => {
      const t = findTask(sim, caller, node!.name, String(params['upid']), 'Sys.Modify');
      sim.taskBoard.interrupt(t);
      return null;
    },
  },
];

/** A task of this node the caller may see: its own (a user sees its tokens' too), otherwise with `priv` on the node. */
function findTask(sim: PveSim, caller: Caller, node: string, upid: string, priv = 'Sys.Audit'): SimTask {
  if (!upidPattern.test(upid)) throw paramError({ upid: 'unable to parse worker upid' });
  const t = sim.taskBoard.find(node, upid);
  if (!t) throw paramError({ upid: 'no such task' });
  const own = t.user === caller.authid || (caller.tokenid === undefined && t.user.startsWith(`${caller.userid}!`));
  if (!own) sim.access.check(caller, `/nodes/${node}`, priv);
  return t;
}

/**
 * The node's /etc/network/interfaces as the API lists it (loopback left out): one physical port `enoN` per
 * bridge, enslaved to it; the node's address sits on vmbr0 (or the first bridge).
 */
function nodeInterfaces(n: SimNode): Array<Record<string, unknown>> {
  const bridges = [...n.bridges].sort();
  const addressed = bridges.includes('vmbr0') ? 'vmbr0' : bridges[0];
  const gateway = n.ip.replace(/\.\d+$/, '.1');
  const ports = bridges.map((_, i) => ({
    iface: `eno${i + 1}`,
    type: 'eth',
    method: 'manual',
    method6: 'manual',
    families: ['inet'],
    exists: 1,
    active: 1,
    priority: i + 1,
  }));
  const bridgeEntries = bridges.map((b, i) => ({
    iface: b,
    type: 'bridge',
    method: b === addressed ? 'static' : 'manual',
    method6: 'manual',
    families: ['inet'],
    autostart: 1,
    active: 1,
    bridge_ports: `eno${i + 1}`,
    bridge_stp: 'off',
    bridge_fd: '0',
    priority: bridges.length + i + 1,
    ...(b === addressed ? { address: n.ip, netmask: '24', cidr: `${n.ip}/24`, gateway } : {}),
  }));
  return [...ports, ...bridgeEntries];
}

/** PVE lists a bridge only to root@pam or with SDN.Audit or SDN.Use on the bridge (or on one of its VLANs). */
function mayUseBridge(sim: PveSim, caller: Caller, bridge: string): boolean {
  if (caller.authid === 'root@pam') return true;
  const base = `/sdn/zones/localnetwork/${bridge}`;
  const allowed = (path: string) => sim.access.has(caller, path, 'SDN.Audit') || sim.access.has(caller, path, 'SDN.Use');
  if (allowed(base)) return true;
  const vlans = new Set(sim.access.acl.map((e) => e.path).filter((p) => p.startsWith(`${base}/`) && !p.slice(base.length + 1).includes('/')));
  return [...vlans].some(allowed);
}

/** The vendor qemu-server reports for a model: Intel or AMD for named x86 models, the host's for generic ones. */
function cpuVendor(name: string): string {
  if (/^(kvm|qemu)(32|64)$|^max$|^host$/.test(name)) return 'default';
  if (/^(athlon|phenom|Opteron|EPYC)/.test(name)) return 'AuthenticAMD';
  if (/^(cortex|neoverse|a64fx)/.test(name)) return 'ARM';
  return 'GenuineIntel';
}
