// The HA manager's configuration API: /cluster/ha/resources (every version), /cluster/ha/rules (PVE 9) and
// /cluster/ha/groups (PVE 8), with pve-ha-manager's checks and wording (API2/HA/*.pm, HA/Config.pm, HA/Rules/*.pm),
// and what the HA stack does to a VM: the requested state (started/stopped) and node affinity (the VM is moved to a
// node of its rule or group). Sources per fact in docs/simulator.md.
import { createHash } from 'node:crypto';
import type { Caller } from './auth.js';
import { paramError, serverError } from './errors.js';
import type { Route, RouteContext } from './routing.js';
import type { PveSim } from './sim.js';
import type { ParamSchema, ParamSpec } from './validate.js';

export interface HaResourceConf {
  state?: string;
  comment?: string;
  max_restart?: number;
  max_relocate?: number;
  /** PVE 9 only. */
  failback?: number;
  /** PVE 8 only: the HA group. */
  group?: string;
}

export interface HaRuleConf {
  type: 'node-affinity' | 'resource-affinity';
  resources: Set<string>;
  /** `node[:priority]` entries (node-affinity). */
  nodes?: string[];
  strict?: number;
  affinity?: string;
  comment?: string;
  disable?: number;
  order: number;
}

export interface HaGroupConf {
  nodes: string[];
  restricted?: number;
  nofailback?: number;
  comment?: string;
}

const root: Caller = { authid: 'root@pam', userid: 'root@pam', via: 'ticket' };

/** The three HA config files (/etc/pve/ha/resources.cfg, rules.cfg, groups.cfg) of the simulated cluster. */
export class SimHa {
  readonly resources = new Map<string, HaResourceConf>();
  readonly rules = new Map<string, HaRuleConf>();
  readonly groups = new Map<string, HaGroupConf>();

  /** A file's digest (SectionConfig: sha1 of the file), here of a canonical rendering of its content. */
  digest(file: 'resources' | 'rules' | 'groups'): string {
    const map = file === 'resources' ? this.resources : file === 'rules' ? this.rules : this.groups;
    const text = JSON.stringify([...map].map(([id, c]) => [id, { ...c, ...('resources' in c ? { resources: [...c.resources].sort() } : {}) }]));
    return createHash('sha1').update(text).digest('hex');
  }

  /**
   * HA/Config.pm delete_service_from_config: removes the resource; with `purge` (PVE 9) also from every rule, and a
   * rule left without resources is deleted.
   */
  removeResource(sim: PveSim, sid: string, purge: boolean): boolean {
    const had = this.resources.delete(sid);
    if (had && purge) {
      for (const [id, rule] of this.rules) {
        rule.resources.delete(sid);
        if (rule.resources.size === 0) this.rules.delete(id);
      }
    }
    syncVmFlag(sim, sid);
    return had;
  }

  addResource(sim: PveSim, sid: string, conf: HaResourceConf): void {
    this.resources.set(sid, conf);
    syncVmFlag(sim, sid);
  }
}

function vmidOf(sid: string): number | undefined {
  const m = /^vm:(\d+)$/.exec(sid);
  return m ? Number(m[1]) : undefined;
}

/** The VM's own flag (start/stop as hastart/hastop, destroy needs purge) follows resources.cfg. */
function syncVmFlag(sim: PveSim, sid: string): void {
  const vmid = vmidOf(sid);
  const vm = vmid === undefined ? undefined : sim.state.vms.get(vmid);
  if (vm) vm.haManaged = sim.ha.resources.has(sid);
}

/** PVE 9 has the rules API; PVE 8 has groups (pve-ha-manager 5.0 replaced groups by rules). */
export function haHasRules(sim: PveSim): boolean {
  return !sim.profile.name.startsWith('pve8');
}

/** pve-ha-manager 5.x: groups count as migrated once groups.cfg holds none (Config.pm have_groups_been_migrated). */
function groupsMigrated(sim: PveSim): boolean {
  return haHasRules(sim) && sim.ha.groups.size === 0;
}

// ---- formats (pve-ha-manager Tools.pm, pve-common JSONSchema.pm) ----

const configIdRe = /^[a-z][a-z0-9_-]+$/i;
const haNodeRe = /^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(:\d+)?$/;
const sidSpec: ParamSpec = {
  type: 'string',
  format: (v) => (/^([a-z]+:\S+|\d+)$/.test(v) ? undefined : 'value does not look like a valid ha resource id'),
};
const configIdSpec: ParamSpec = { type: 'string', format: (v) => (configIdRe.test(v) ? undefined : `invalid configuration ID '${v}'`) };
const resourceListSpec: ParamSpec = {
  type: 'string',
  format: (v) => (splitList(v).every((s) => /^[a-z]+:\S+$/.test(s)) ? undefined : 'value does not look like a valid ha resource id'),
};
const nodeListSpec: ParamSpec = {
  type: 'string',
  format: (v) => (splitList(v).every((n) => haNodeRe.test(n)) ? undefined : 'value does not look like a valid ha node'),
};
const bool: ParamSpec = { type: 'boolean', optional: true };
const comment: ParamSpec = { type: 'string', optional: true, maxLength: 4096 };

/** PVE::Tools::split_list: `,`, `;`, spaces and NULs separate entries. */
function splitList(v: string): string[] {
  return v.split(/[,;\s\0]+/).filter((x) => x !== '');
}

const resourceProps: ParamSchema = {
  state: { type: 'string', optional: true, enum: ['started', 'stopped', 'enabled', 'disabled', 'ignored'] },
  group: { ...configIdSpec, optional: true },
  failback: bool,
  max_restart: { type: 'integer', optional: true, minimum: 0 },
  max_relocate: { type: 'integer', optional: true, minimum: 0 },
  comment,
  type: { type: 'string', optional: true, enum: ['ct', 'vm'] },
};

/** Parameters that the PVE 8 schema does not know (failback on a resource, purge on delete). */
function refuseUnknown(sim: PveSim, params: Record<string, unknown>, keys: string[]): void {
  if (haHasRules(sim)) return;
  const errors: Record<string, string> = {};
  for (const k of keys) if (params[k] !== undefined) errors[k] = 'property is not defined in schema and the schema does not allow additional properties';
  if (Object.keys(errors).length > 0) throw paramError(errors);
}

function requireQuorum(sim: PveSim): void {
  if (!sim.state.quorate) throw serverError('cluster not ready - no quorum?');
}

/** Config.pm parse_sid: `vm:100`, `ct:100`, or a bare VMID looked up in the VM list. */
function parseSid(sim: PveSim, raw: string): { sid: string; type: string; name: string } {
  if (/^\d+$/.test(raw)) {
    if (!sim.state.vms.has(Number(raw))) throw serverError(`unable to detect SID from VMID - VM/CT ${raw} does not exist`);
    return { sid: `vm:${raw}`, type: 'vm', name: raw };
  }
  const m = /^(\S+):(\S+)$/.exec(raw);
  if (!m) throw serverError(`unable to parse service id '${raw}'`);
  return { sid: raw, type: m[1]!, name: m[2]! };
}

/** Resources/PVEVM.pm verify_name and exists (containers are not simulated). */
function assertVmResource(sim: PveSim, type: string, name: string): void {
  if (type !== 'vm' && type !== 'ct') throw serverError(`unknown resource type '${type}'`);
  if (!/^[1-9][0-9]+$/.test(name)) throw serverError('invalid VMID');
  if (type === 'ct' || !sim.state.vms.has(Number(name))) throw serverError(`resource '${type}:${name}' does not exist in cluster`);
}

function assertDigest(sim: PveSim, file: 'resources' | 'rules' | 'groups', digest: unknown): void {
  // PVE::Tools::assert_if_modified
  if (typeof digest === 'string' && digest !== '' && digest !== sim.ha.digest(file)) {
    throw new Error('detected modified configuration - file changed by other user? Try again.');
  }
}

function resourceView(sim: PveSim, sid: string, conf: HaResourceConf): Record<string, unknown> {
  const out: Record<string, unknown> = { sid, type: sid.split(':')[0], digest: sim.ha.digest('resources') };
  for (const [k, v] of Object.entries(conf)) if (v !== undefined) out[k] = v;
  if (conf.group !== undefined && !sim.ha.groups.has(conf.group)) out['errors'] = { group: `group '${conf.group}' does not exist` };
  return out;
}

function resourceConf(params: Record<string, string | number>, base: HaResourceConf = {}): HaResourceConf {
  const conf: HaResourceConf = { ...base };
  if (params['state'] !== undefined) conf.state = params['state'] === 'enabled' ? 'started' : String(params['state']);
  if (params['comment'] !== undefined) conf.comment = String(params['comment']);
  if (params['max_restart'] !== undefined) conf.max_restart = Number(params['max_restart']);
  if (params['max_relocate'] !== undefined) conf.max_relocate = Number(params['max_relocate']);
  if (params['failback'] !== undefined) conf.failback = Number(params['failback']);
  if (params['group'] !== undefined) conf.group = String(params['group']);
  return conf;
}

// ---- rules (PVE 9) ----

/** Rules.pm check_feasibility, restricted to the checks the provider's rules can hit. Errors per property. */
function ruleErrors(sim: PveSim, id: string): Record<string, string> | undefined {
  const rule = sim.ha.rules.get(id);
  if (!rule) return undefined;
  const errors: string[] = [];
  if (rule.type === 'resource-affinity') {
    if (rule.resources.size < 2) errors.push('rule is ineffective as there are less than two resources');
    if (rule.affinity === 'negative' && rule.resources.size > sim.state.nodes.size) errors.push('rule defines more resources than available nodes');
  } else {
    for (const sid of rule.resources) {
      const other = [...sim.ha.rules].some(([oid, o]) => oid !== id && o.type === 'node-affinity' && o.resources.has(sid));
      if (other) errors.push(`resource '${sid}' is already used in another node affinity rule`);
    }
  }
  return errors.length > 0 ? { resources: errors.join(', ') } : undefined;
}

function ruleView(sim: PveSim, id: string, rule: HaRuleConf): Record<string, unknown> {
  const out: Record<string, unknown> = { rule: id, type: rule.type, digest: sim.ha.digest('rules'), order: rule.order };
  out['resources'] = [...rule.resources].sort().join(',');
  if (rule.nodes) out['nodes'] = rule.nodes.join(',');
  for (const k of ['strict', 'affinity', 'comment', 'disable'] as const) if (rule[k] !== undefined) out[k] = rule[k];
  const errors = ruleErrors(sim, id);
  if (errors) out['errors'] = errors;
  return out;
}

const ruleTypeOptions: Record<HaRuleConf['type'], readonly string[]> = {
  'node-affinity': ['resources', 'nodes', 'strict', 'disable', 'comment'],
  'resource-affinity': ['resources', 'affinity', 'disable', 'comment'],
};

/** SectionConfig check_config for one rule type: no option of the other type, required ones present on create. */
function checkRuleOptions(type: HaRuleConf['type'], params: Record<string, string | number>, create: boolean): void {
  const allowed = ruleTypeOptions[type];
  for (const k of ['nodes', 'strict', 'affinity']) {
    if (params[k] !== undefined && !allowed.includes(k)) throw serverError(`unexpected property '${k}'`);
  }
  if (create) {
    const required = type === 'node-affinity' ? ['resources', 'nodes'] : ['resources', 'affinity'];
    for (const k of required) if (params[k] === undefined) throw serverError(`missing value for required option '${k}'`);
  }
}

/** API2/HA/Rules.pm: every resource must be HA-managed, every node must exist. */
function assertRuleMembers(sim: PveSim, resources: Set<string> | undefined, nodes: string[] | undefined): void {
  if (resources) {
    if (resources.size === 0) throw new Error('no resources were specified');
    const unmanaged = [...resources].filter((sid) => !sim.ha.resources.has(sid)).sort();
    if (unmanaged.length > 0) throw new Error(`cannot use unmanaged resource(s) ${unmanaged.join(', ')}.`);
  }
  if (nodes) {
    if (nodes.length === 0) throw new Error('no nodes were specified');
    const missing = nodes.map((n) => n.split(':')[0]!).filter((n) => !sim.state.nodes.has(n)).sort();
    if (missing.length > 0) throw new Error(`cannot use non-existent node(s) ${missing.join(', ')}.`);
  }
}

/** lock_ha_domain: a failure inside the locked section becomes `<errmsg>: <error>` (a plain 500). */
function locked<T>(errmsg: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Error && err.name !== 'PveApiError') throw serverError(`${errmsg}: ${err.message}`);
    throw err;
  }
}

function assertRulesApi(sim: PveSim, what: 'create' | 'update'): void {
  if (sim.ha.groups.size > 0) throw serverError(`cannot ${what} ha rule: ha groups have not been migrated yet`);
}

// ---- what the HA stack does to the VM ----

/**
 * The CRM/LRM acting on a resource: a VM of state `started` is started, one of `stopped`/`disabled` shut down, and a
 * VM outside its node-affinity rule's (PVE 9) or group's (PVE 8) nodes is moved to the first online one. `ignored`
 * resources are left alone.
 */
export function haReconcile(sim: PveSim, sid: string): void {
  const conf = sim.ha.resources.get(sid);
  const vmid = vmidOf(sid);
  const vm = vmid === undefined ? undefined : sim.state.vms.get(vmid);
  if (!conf || !vm || vm.config.get('lock') !== undefined) return;
  const state = conf.state ?? 'started';
  if (state === 'ignored') return;
  let nodes: string[] | undefined;
  if (haHasRules(sim)) {
    const rule = [...sim.ha.rules.values()].find((r) => r.type === 'node-affinity' && r.disable !== 1 && r.resources.has(sid));
    nodes = rule?.nodes?.map((n) => n.split(':')[0]!);
  } else if (conf.group !== undefined) {
    nodes = sim.ha.groups.get(conf.group)?.nodes.map((n) => n.split(':')[0]!);
  }
  if (nodes && !nodes.includes(vm.node)) {
    const target = nodes.find((n) => sim.state.nodes.get(n)?.online === true);
    if (target) {
      sim.externalMigrateVm(vm.vmid, target);
      sim.event('ha-migrate', { sid, to: target });
    }
  }
  if (state === 'started' && !vm.running) {
    sim.taskBoard.start({ node: vm.node, type: 'qmstart', id: String(vm.vmid), vmid: vm.vmid, caller: root, work: () => sim.haStartVm(vm.vmid) });
  } else if ((state === 'stopped' || state === 'disabled') && vm.running) {
    sim.taskBoard.start({ node: vm.node, type: 'qmshutdown', id: String(vm.vmid), vmid: vm.vmid, caller: root, work: () => sim.haStopVm(vm.vmid) });
  }
}

function reconcileAll(sim: PveSim): void {
  for (const sid of [...sim.ha.resources.keys()]) haReconcile(sim, sid);
}

// ---- routes ----

const audit = ({ sim, caller }: RouteContext): void => sim.access.check(caller, '/', 'Sys.Audit');
const consoleWrite = ({ sim, caller }: RouteContext): void => {
  sim.access.check(caller, '/', 'Sys.Console');
};
const onlyRules = (sim: PveSim): boolean => haHasRules(sim);
/** pve-ha-manager 5.x API2/HA/Groups.pm: every group call refuses once groups are migrated. */
function groupsApi(sim: PveSim, what: string): void {
  if (groupsMigrated(sim)) throw serverError(`cannot ${what}: ha groups have been migrated to rules`);
}

export const haRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/cluster/ha/resources',
    schema: { type: { type: 'string', optional: true, enum: ['ct', 'vm'] } },
    handler: (ctx) => {
      audit(ctx);
      const type = ctx.params['type'];
      return ctx.sim.order(
        [...ctx.sim.ha.resources]
          .filter(([sid]) => type === undefined || sid.startsWith(`${type}:`))
          .map(([sid, c]) => resourceView(ctx.sim, sid, c)),
      );
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/ha/resources/{sid}',
    schema: { sid: sidSpec },
    handler: (ctx) => {
      audit(ctx);
      const { sid } = parseSid(ctx.sim, String(ctx.params['sid']));
      const conf = ctx.sim.ha.resources.get(sid);
      if (!conf) throw serverError(`no such resource '${sid}'`);
      return resourceView(ctx.sim, sid, conf);
    },
  },
  {
    method: 'POST',
    pattern: '/cluster/ha/resources',
    schema: { sid: sidSpec, ...resourceProps },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      refuseUnknown(sim, params, ['failback']);
      requireQuorum(sim);
      const { sid, type, name } = parseSid(sim, String(params['sid']));
      if (params['type'] !== undefined && params['type'] !== type) throw serverError('types does not match');
      if (params['group'] !== undefined && groupsMigrated(sim)) throw serverError("invalid parameter 'group': ha groups have been migrated to rules");
      assertVmResource(sim, type, name);
      locked('create resource failed', () => {
        if (sim.ha.resources.has(sid)) throw new Error(`resource ID '${sid}' already defined`);
        sim.ha.addResource(sim, sid, resourceConf(params));
      });
      haReconcile(sim, sid);
      return null;
    },
  },
  {
    method: 'PUT',
    pattern: '/cluster/ha/resources/{sid}',
    schema: { sid: sidSpec, ...resourceProps, delete: { type: 'string', optional: true, maxLength: 4096 }, digest: { type: 'string', optional: true, maxLength: 64 } },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      refuseUnknown(sim, params, ['failback']);
      const { sid, type } = parseSid(sim, String(params['sid']));
      if (params['type'] !== undefined && params['type'] !== type) throw serverError('types does not match');
      const group = params['group'];
      if (group !== undefined && group !== '') {
        if (groupsMigrated(sim)) throw serverError("invalid parameter 'group': ha groups have been migrated to rules");
        if (!sim.ha.groups.has(String(group))) throw serverError(`HA group '${String(group)}' does not exist`);
      }
      locked('update resources config failed', () => {
        assertDigest(sim, 'resources', params['digest']);
        const conf = sim.ha.resources.get(sid);
        if (!conf) throw new Error(`no such resource '${sid}'`);
        const next = resourceConf(params, conf);
        for (const k of splitList(String(params['delete'] ?? ''))) {
          if (!(k in resourceProps) || k === 'type') throw new Error(`no such option '${k}'`);
          delete (next as Record<string, unknown>)[k];
        }
        sim.ha.resources.set(sid, next);
      });
      haReconcile(sim, sid);
      return null;
    },
  },
  {
    method: 'DELETE',
    pattern: '/cluster/ha/resources/{sid}',
    schema: { sid: sidSpec, purge: bool },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      refuseUnknown(sim, params, ['purge']);
      const { sid } = parseSid(sim, String(params['sid']));
      if (!sim.ha.resources.has(sid)) throw serverError(`cannot delete service '${sid}', not HA managed!`);
      // PVE 9: purge defaults to 1; PVE 8 has no rules to purge.
      locked('delete resource failed', () => sim.ha.removeResource(sim, sid, haHasRules(sim) && params['purge'] !== 0));
      return null;
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/ha/rules',
    available: onlyRules,
    schema: { type: { type: 'string', optional: true, enum: ['node-affinity', 'resource-affinity'] }, resource: { type: 'string', optional: true } },
    handler: (ctx) => {
      audit(ctx);
      const { type, resource } = ctx.params;
      return [...ctx.sim.ha.rules]
        .filter(([, r]) => (type === undefined || r.type === type) && (resource === undefined || r.resources.has(String(resource))))
        .sort(([, a], [, b]) => a.order - b.order)
        .map(([id, r]) => ruleView(ctx.sim, id, r));
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/ha/rules/{rule}',
    available: onlyRules,
    schema: { rule: configIdSpec },
    handler: (ctx) => {
      audit(ctx);
      const id = String(ctx.params['rule']);
      const rule = ctx.sim.ha.rules.get(id);
      if (!rule) throw serverError(`no such ha rule '${id}'`);
      return ruleView(ctx.sim, id, rule);
    },
  },
  {
    method: 'POST',
    pattern: '/cluster/ha/rules',
    available: onlyRules,
    schema: {
      rule: configIdSpec,
      type: { type: 'string', enum: ['node-affinity', 'resource-affinity'] },
      resources: resourceListSpec,
      nodes: { ...nodeListSpec, optional: true },
      strict: bool,
      affinity: { type: 'string', optional: true, enum: ['positive', 'negative'] },
      comment,
      disable: bool,
    },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      requireQuorum(sim);
      assertRulesApi(sim, 'create');
      const type = String(params['type']) as HaRuleConf['type'];
      const id = String(params['rule']);
      checkRuleOptions(type, params, true);
      locked('create ha rule failed', () => {
        if (sim.ha.rules.has(id)) throw new Error(`HA rule '${id}' already defined`);
        const resources = new Set(splitList(String(params['resources'])));
        const nodes = params['nodes'] === undefined ? undefined : splitList(String(params['nodes']));
        assertRuleMembers(sim, resources, nodes);
        const order = Math.max(0, ...[...sim.ha.rules.values()].map((r) => r.order)) + 1;
        const rule: HaRuleConf = { type, resources, order };
        if (nodes) rule.nodes = nodes;
        if (params['strict'] !== undefined) rule.strict = Number(params['strict']);
        if (params['affinity'] !== undefined) rule.affinity = String(params['affinity']);
        if (params['comment'] !== undefined) rule.comment = String(params['comment']);
        if (params['disable'] === 1) rule.disable = 1;
        sim.ha.rules.set(id, rule);
        if (ruleErrors(sim, id)) {
          sim.ha.rules.delete(id);
          throw new Error(`Rule '${id}' is invalid.`);
        }
      });
      reconcileAll(sim);
      return null;
    },
  },
  {
    method: 'PUT',
    pattern: '/cluster/ha/rules/{rule}',
    available: onlyRules,
    schema: {
      rule: configIdSpec,
      type: { type: 'string', optional: true, enum: ['node-affinity', 'resource-affinity'] },
      resources: { ...resourceListSpec, optional: true },
      nodes: { ...nodeListSpec, optional: true },
      strict: bool,
      affinity: { type: 'string', optional: true, enum: ['positive', 'negative'] },
      comment,
      disable: bool,
      delete: { type: 'string', optional: true, maxLength: 4096 },
      digest: { type: 'string', optional: true, maxLength: 64 },
    },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      assertRulesApi(sim, 'update');
      const id = String(params['rule']);
      locked('update HA rules failed', () => {
        assertDigest(sim, 'rules', params['digest']);
        const rule = sim.ha.rules.get(id);
        if (!rule) throw new Error(`HA rule '${id}' does not exist`);
        if (params['type'] !== undefined && params['type'] !== rule.type) throw new Error('types does not match');
        checkRuleOptions(rule.type, params, false);
        const resources = params['resources'] === undefined ? undefined : new Set(splitList(String(params['resources'])));
        const nodes = params['nodes'] === undefined ? undefined : splitList(String(params['nodes']));
        assertRuleMembers(sim, resources, nodes);
        const before = { ...rule, resources: new Set(rule.resources) };
        for (const k of splitList(String(params['delete'] ?? ''))) {
          if (!ruleTypeOptions[rule.type].includes(k) || k === 'resources' || k === 'nodes' || k === 'affinity') throw new Error(`no such option '${k}'`);
          delete (rule as unknown as Record<string, unknown>)[k];
        }
        if (resources) rule.resources = resources;
        if (nodes) rule.nodes = nodes;
        if (params['strict'] !== undefined) rule.strict = Number(params['strict']);
        if (params['affinity'] !== undefined) rule.affinity = String(params['affinity']);
        if (params['comment'] !== undefined) rule.comment = String(params['comment']);
        if (params['disable'] !== undefined) {
          if (params['disable'] === 1) rule.disable = 1;
          else delete rule.disable;
        }
        if (ruleErrors(sim, id)) {
          sim.ha.rules.set(id, before);
          throw new Error(`Rule '${id}' is invalid.`);
        }
      });
      reconcileAll(sim);
      return null;
    },
  },
  {
    method: 'DELETE',
    pattern: '/cluster/ha/rules/{rule}',
    available: onlyRules,
    schema: { rule: configIdSpec },
    handler: (ctx) => {
      consoleWrite(ctx);
      locked('delete ha rule failed', () => ctx.sim.ha.rules.delete(String(ctx.params['rule'])));
      return null;
    },
  },
  // PVE 8: groups. PVE 9 keeps the endpoints but refuses them once groups were migrated to rules (API2/HA/Groups.pm).
  {
    method: 'GET',
    pattern: '/cluster/ha/groups',
    schema: {},
    handler: (ctx) => {
      audit(ctx);
      groupsApi(ctx.sim, 'index groups');
      return ctx.sim.order([...ctx.sim.ha.groups].map(([id, g]) => groupView(ctx.sim, id, g)));
    },
  },
  {
    method: 'GET',
    pattern: '/cluster/ha/groups/{group}',
    schema: { group: configIdSpec },
    handler: (ctx) => {
      audit(ctx);
      groupsApi(ctx.sim, 'read group');
      const id = String(ctx.params['group']);
      const g = ctx.sim.ha.groups.get(id);
      if (!g) throw serverError(`no such ha group '${id}'`);
      return groupView(ctx.sim, id, g);
    },
  },
  {
    method: 'POST',
    pattern: '/cluster/ha/groups',
    schema: { group: configIdSpec, nodes: nodeListSpec, restricted: bool, nofailback: bool, comment, type: { type: 'string', optional: true, enum: ['group'] } },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      groupsApi(sim, 'create group');
      requireQuorum(sim);
      const id = String(params['group']);
      locked('create ha group failed', () => {
        if (sim.ha.groups.has(id)) throw new Error(`ha group ID '${id}' already defined`);
        const g: HaGroupConf = { nodes: splitList(String(params['nodes'])) };
        if (params['restricted'] !== undefined) g.restricted = Number(params['restricted']);
        if (params['nofailback'] !== undefined) g.nofailback = Number(params['nofailback']);
        if (params['comment'] !== undefined) g.comment = String(params['comment']);
        sim.ha.groups.set(id, g);
      });
      return null;
    },
  },
  {
    method: 'PUT',
    pattern: '/cluster/ha/groups/{group}',
    schema: {
      group: configIdSpec,
      nodes: { ...nodeListSpec, optional: true },
      restricted: bool,
      nofailback: bool,
      comment,
      type: { type: 'string', optional: true, enum: ['group'] },
      delete: { type: 'string', optional: true, maxLength: 4096 },
      digest: { type: 'string', optional: true, maxLength: 64 },
    },
    handler: (ctx) => {
      const { sim, params } = ctx;
      consoleWrite(ctx);
      groupsApi(sim, 'update group');
      const id = String(params['group']);
      locked('update ha group failed', () => {
        assertDigest(sim, 'groups', params['digest']);
        const g = sim.ha.groups.get(id);
        if (!g) throw new Error(`no such ha group '${id}'`);
        if (params['nodes'] !== undefined) g.nodes = splitList(String(params['nodes']));
        if (params['restricted'] !== undefined) g.restricted = Number(params['restricted']);
        if (params['nofailback'] !== undefined) g.nofailback = Number(params['nofailback']);
        if (params['comment'] !== undefined) g.comment = String(params['comment']);
      });
      reconcileAll(sim);
      return null;
    },
  },
  {
    method: 'DELETE',
    pattern: '/cluster/ha/groups/{group}',
    schema: { group: configIdSpec },
    handler: (ctx) => {
      const { sim } = ctx;
      consoleWrite(ctx);
      groupsApi(sim, 'delete group');
      const id = String(ctx.params['group']);
      locked('delete ha group failed', () => {
        for (const [sid, r] of sim.ha.resources) if (r.group === id) throw new Error(`ha group is used by service '${sid}'`);
        sim.ha.groups.delete(id);
      });
      return null;
    },
  },
];

function groupView(sim: PveSim, id: string, g: HaGroupConf): Record<string, unknown> {
  const out: Record<string, unknown> = { group: id, type: 'group', nodes: g.nodes.join(','), digest: sim.ha.digest('groups') };
  for (const k of ['restricted', 'nofailback', 'comment'] as const) if (g[k] !== undefined) out[k] = g[k];
  return out;
}
