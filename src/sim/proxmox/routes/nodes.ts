// Routes: `/nodes`, node status, and the task status/log/stop endpoints.
import { paramError } from '../errors.js';
import type { Caller } from '../auth.js';
import type { PveSim } from '../sim.js';
import { WithTotal, type Route } from '../routing.js';
import type { SimTask } from '../tasks.js';
import { upidPattern } from '../tasks.js';
import { nodeSpec } from '../validate.js';
import { nodeEntry } from './views.js';

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
