// Proxmox HA for a machine request (the `ha` provider-data block): the steps registerHA and syncHARules (the Go
// provider's names, appended after startVM), the read-only checks that decide a request before any HA write, and the
// teardown that removes the HA resource before the VM is deleted.
//
// Which HA API is used follows the cluster's version (GET /version): Proxmox VE 9 has HA rules (/cluster/ha/rules:
// node-affinity and resource-affinity rules); Proxmox VE 8 has HA groups (/cluster/ha/groups: a node list, optionally
// restricted, that a resource names in its `group`). The Go provider always uses rules and fails on PVE 8.
import type { Logger } from '../log.js';
import type { PveClient } from '../proxmox/client.js';
import { PveError } from '../proxmox/errors.js';
import type { PveParams } from '../proxmox/types.js';
import { locateVm, readConfig, smbiosUuidOf } from './cluster.js';
import { haSetObjectName, isHaSetObjectName, type HaConfig } from './haData.js';
import type { MachineState } from './machineState.js';
import { machineRequestTag } from './planVm.js';
import type { ProviderData } from './providerData.js';
import { done, StepFailure, type StepContext, type StepResult } from './step.js';
import { RequestRefused } from './validateRequest.js';

/** `rules`: PVE 9's /cluster/ha/rules; `groups`: PVE 8's /cluster/ha/groups. */
export type HaApi = 'rules' | 'groups';

/** How many times a rule edit is retried when someone else changed the rules file meanwhile (digest conflict). */
const RULE_RETRIES = 10;

/** Proxmox VE 9 (pve-ha-manager 5) replaced HA groups by rules; 8 has only groups. */
export function haApiForVersion(version: string): HaApi {
  const major = Number(/^(\d+)/.exec(version)?.[1] ?? '0');
  return major >= 9 ? 'rules' : 'groups';
}

export async function haApiOf(pve: PveClient): Promise<HaApi> {
  const v = await pve.version();
  return haApiForVersion(v.version || v.release);
}

/** The HA resource id of a VM. */
export function haSid(vmid: number): string {
  return `vm:${vmid}`;
}

// pve-ha-manager's error texts (API2/HA/*.pm, HA/Config.pm), matched as the Go provider matches them.
const text = (err: unknown): string => (err instanceof PveError ? err.statusText : '');
export const haError = {
  notFound: (err: unknown) => /no such resource|no such ha rule|no such ha group|not HA managed|does not exist/.test(text(err)),
  alreadyDefined: (err: unknown) => /already defined/.test(text(err)),
  conflict: (err: unknown) => /detected modified configuration/.test(text(err)),
  /** A rule Proxmox finds infeasible: `Rule '<id>' is invalid.` */
  infeasible: (err: unknown) => /' is invalid/.test(text(err)),
  groupInUse: (err: unknown) => /ha group is used by service/.test(text(err)),
};

function refuse(field: string, why: string): never {
  throw new RequestRefused(`provider data: ${field}: ${why}`, field);
}

/**
 * Read-only checks of the `ha` block against the cluster, before any write (called by validateRequest in pickNode and
 * again at the start of both HA steps, which a resumed request reaches without pickNode): the HA API the cluster has,
 * `resource_affinity` and `rules` only on PVE 9, `node_affinity_nodes` must be nodes of the cluster, every `rules`
 * entry must exist (when the token may read rules). Returns the API to use, or undefined without `ha`.
 */
export async function checkHa(
  pve: PveClient,
  data: ProviderData,
  clusterNodes: readonly string[],
  setId: string | undefined,
  log?: Logger,
): Promise<HaApi | undefined> {
  const ha = data.ha;
  if (!ha) return undefined;
  const v = await pve.version();
  const api = haApiForVersion(v.version || v.release);
  ha.node_affinity_nodes.forEach((n, i) => {
    if (!clusterNodes.includes(n)) {
      refuse(`ha.node_affinity_nodes[${i}]`, `"${n}" is not a node of this Proxmox cluster (nodes: ${[...clusterNodes].sort().join(', ') || 'none'})`);
    }
  });
  if (api === 'groups') {
    const on = `this cluster runs Proxmox VE ${v.version}, whose HA groups`;
    if (ha.resource_affinity !== undefined) {
      refuse('ha.resource_affinity', `needs Proxmox VE 9 (HA resource-affinity rules); ${on} cannot keep VMs apart or together. Remove it, or upgrade the cluster`);
    }
    if (ha.rules.length > 0) {
      refuse('ha.rules', `needs Proxmox VE 9 (HA rules); ${on} have no rules. Use node_affinity_nodes (an HA group per machine set), or upgrade the cluster`);
    }
    return api;
  }
  for (const [i, name] of ha.rules.entries()) {
    let rule: Record<string, unknown> | null;
    try {
      rule = await pve.get<Record<string, unknown> | null>(`/cluster/ha/rules/${encodeURIComponent(name)}`);
    } catch (err) {
      if (haError.notFound(err)) refuse(`ha.rules[${i}]`, `no HA rule "${name}" in this cluster (Datacenter → HA → Rules)`);
      if (err instanceof PveError && err.status === 403) {
        log?.debug({ rule: name }, 'HA rules cannot be read (Sys.Audit on /); not checked');
        continue;
      }
      throw err;
    }
    if (rule?.['type'] === 'node-affinity' && ha.node_affinity_nodes.length > 0 && setId) {
      refuse(
        `ha.rules[${i}]`,
        `"${name}" is a node-affinity rule, and node_affinity_nodes puts the VM into the set's node-affinity rule ` +
          `${haSetObjectName(setId, 'naff')} too; Proxmox allows a resource in one node-affinity rule only`,
      );
    }
  }
  return api;
}

/** The HA resource's options from the block (only what is set; `failback` exists only on PVE 9 resources). */
export function haResourceParams(ha: HaConfig, api: HaApi): PveParams {
  const p: PveParams = {};
  if (ha.state !== undefined) p.state = ha.state;
  if (ha.comment !== undefined && ha.comment !== '') p.comment = ha.comment;
  if (ha.max_restart !== undefined) p.max_restart = ha.max_restart;
  if (ha.max_relocate !== undefined) p.max_relocate = ha.max_relocate;
  if (ha.failback !== undefined && api === 'rules') p.failback = ha.failback ? 1 : 0;
  return p;
}

/** The calls the HA steps make for a request, for `plan` (no call is made). */
export function haPlan(
  data: ProviderData,
  setId: string | undefined,
  api: HaApi,
  vmid?: number,
): Array<{ method: string; path: string; params: PveParams }> {
  const ha = data.ha;
  if (!ha) return [];
  const sid = vmid === undefined ? 'vm:<vmid>' : haSid(vmid);
  const out: Array<{ method: string; path: string; params: PveParams }> = [
    { method: 'POST', path: '/cluster/ha/resources', params: { sid, ...haResourceParams(ha, api) } },
  ];
  if (api === 'rules') {
    if (setId && ha.node_affinity_nodes.length > 0) {
      out.push({
        method: 'POST',
        path: '/cluster/ha/rules',
        params: { rule: haSetObjectName(setId, 'naff'), type: 'node-affinity', resources: sid, nodes: ha.node_affinity_nodes.join(','), strict: ha.node_affinity_strict ? 1 : 0 },
      });
    }
    if (setId && ha.resource_affinity) {
      out.push({
        method: 'POST',
        path: '/cluster/ha/rules',
        params: { rule: haSetObjectName(setId, 'raff'), type: 'resource-affinity', resources: `${sid},<the set's other HA VMs>`, affinity: ha.resource_affinity },
      });
    }
    for (const rule of ha.rules) out.push({ method: 'PUT', path: `/cluster/ha/rules/${rule}`, params: { resources: `<members>,${sid}` } });
  } else if (setId && ha.node_affinity_nodes.length > 0) {
    const group = haSetObjectName(setId, 'naff');
    const params: PveParams = { group, nodes: ha.node_affinity_nodes.join(','), restricted: ha.node_affinity_strict ? 1 : 0 };
    if (ha.failback === false) params.nofailback = 1;
    out.push({ method: 'POST', path: '/cluster/ha/groups', params });
    out.push({ method: 'PUT', path: `/cluster/ha/resources/${sid}`, params: { group } });
  }
  return out;
}

/** The two HA steps and the HA part of a teardown. */
export class HaSteps {
  readonly #pve: PveClient;
  constructor(pve: PveClient) {
    this.#pve = pve;
  }

  /**
   * The `ha` block, or undefined when the request has none. A machine whose state says it is an HA resource but whose
   * provider data no longer has `ha` fails, as in the Go provider: dropping the block must not orphan the resource.
   */
  #config(ctx: StepContext, step: 'registerHA' | 'syncHARules'): HaConfig | undefined {
    const ha = ctx.request.providerData.ha;
    if (!ha && ctx.state.haRegistered) {
      throw new StepFailure(
        `${step}: ha config removed from an HA-registered machine; re-add ha: or deprovision it ` +
          `(the VM ${ctx.state.vmid} stays an HA resource until the machine is deprovisioned, which removes it)`,
        { permanent: true },
      );
    }
    if (ha && !ctx.state.vmid) throw new StepFailure(`${step}: no VM recorded for this request; syncVM must run first`);
    return ha;
  }

  /** Read-only: the request's `ha` against the cluster (refusals name the field). */
  async #check(ctx: StepContext): Promise<HaApi> {
    const nodes = (await this.#pve.nodes()).map((n) => n.node);
    const api = await checkHa(this.#pve, ctx.request.providerData, nodes, ctx.request.machineRequestSetId, ctx.log);
    return api ?? 'rules';
  }

  /** The recorded VM still exists and is ours (our SMBIOS UUID): its HA resource may be created or changed. */
  async #assertOurs(ctx: StepContext): Promise<void> {
    const { state } = ctx;
    const located = await locateVm(this.#pve, state.vmid);
    const node = located?.node ?? state.node;
    const config = await readConfig(this.#pve, node, state.vmid);
    const ours = config && (state.uuid ? smbiosUuidOf(config) === state.uuid.toLowerCase() : config.name === ctx.request.id);
    if (!ours) {
      throw new StepFailure(`VM ${state.vmid} is gone from Proxmox or no longer ours; it will be created again`, { transient: true });
    }
    state.node = node;
  }

  /** Makes the VM an HA resource (`vm:<vmid>`), or brings an existing one to the block's options. */
  async registerHA(ctx: StepContext): Promise<StepResult> {
    const ha = this.#config(ctx, 'registerHA');
    if (!ha) return done;
    const api = await this.#check(ctx);
    await this.#assertOurs(ctx);
    const sid = haSid(ctx.state.vmid);
    const params = haResourceParams(ha, api);
    // Write-ahead: recorded before the create call, so that a lost answer or a crash cannot leave an HA resource
    // that no teardown removes (removing one that was never created is a no-op).
    if (!ctx.state.haRegistered) {
      ctx.state.haRegistered = true;
      await ctx.checkpoint();
    }
    try {
      await this.#pve.post('/cluster/ha/resources', { sid, ...params });
      ctx.log.info({ sid, api }, 'VM registered as a Proxmox HA resource');
    } catch (err) {
      if (!haError.alreadyDefined(err)) throw err;
      // A retry, a resumed Go state, or an operator who added it: its options follow the block.
      if (Object.keys(params).length > 0) await this.#pve.put(`/cluster/ha/resources/${sid}`, params);
      ctx.log.info({ sid }, 'VM already an HA resource; options updated');
    }
    return done;
  }

  /** Puts the VM into the set's node-affinity and resource-affinity rules (PVE 9) or HA group (PVE 8), and `rules`. */
  async syncHARules(ctx: StepContext): Promise<StepResult> {
    const ha = this.#config(ctx, 'syncHARules');
    if (!ha) return done;
    const api = await this.#check(ctx);
    const sid = haSid(ctx.state.vmid);
    const set = ctx.request.machineRequestSetId || undefined;
    if (api === 'groups') {
      if (set && ha.node_affinity_nodes.length > 0) await this.#ensureGroup(ctx, set, ha, sid);
      return done;
    }
    if (set && ha.node_affinity_nodes.length > 0) await this.#ensureNodeAffinity(ctx, set, ha, sid);
    if (set && ha.resource_affinity !== undefined) await this.#ensureResourceAffinity(ctx, set, ha.resource_affinity, sid);
    for (const rule of ha.rules) await this.#addToRule(rule, sid);
    return done;
  }

  async #ensureNodeAffinity(ctx: StepContext, set: string, ha: HaConfig, sid: string): Promise<void> {
    const rule = haSetObjectName(set, 'naff');
    const nodes = ha.node_affinity_nodes.join(',');
    try {
      await this.#pve.post('/cluster/ha/rules', { rule, type: 'node-affinity', resources: sid, nodes, strict: ha.node_affinity_strict ? 1 : 0 });
      ctx.log.info({ rule, nodes }, 'HA node-affinity rule created');
      return;
    } catch (err) {
      if (!haError.alreadyDefined(err)) throw err;
    }
    const existing = await this.#pve.get<Record<string, unknown>>(`/cluster/ha/rules/${rule}`);
    if (existing['nodes'] !== nodes) {
      ctx.log.warn(
        { rule, want: nodes, has: existing['nodes'] },
        'the set node-affinity rule lists other nodes than the machine class; it is created once, change it in Proxmox',
      );
    }
    await this.#addToRule(rule, sid);
  }

  async #ensureResourceAffinity(ctx: StepContext, set: string, affinity: string, sid: string): Promise<void> {
    const rule = haSetObjectName(set, 'raff');
    try {
      await this.#addToRule(rule, sid);
      return;
    } catch (err) {
      if (haError.infeasible(err)) return this.#infeasible(ctx, rule, err);
      if (!haError.notFound(err)) throw err;
    }
    const members = await this.#setMembers(set, sid);
    // A resource-affinity rule needs two resources (ResourceAffinity.pm); the second member of the set creates it.
    if (members.length < 2) {
      ctx.log.info({ rule }, 'first HA VM of the set; the resource-affinity rule is created with the second');
      return;
    }
    try {
      await this.#pve.post('/cluster/ha/rules', { rule, type: 'resource-affinity', resources: members.join(','), affinity });
      ctx.log.info({ rule, members }, 'HA resource-affinity rule created');
    } catch (err) {
      if (haError.infeasible(err)) return this.#infeasible(ctx, rule, err);
      if (!haError.alreadyDefined(err)) throw err;
      try {
        await this.#addToRule(rule, sid);
      } catch (again) {
        if (haError.infeasible(again)) return this.#infeasible(ctx, rule, again);
        throw again;
      }
    }
  }

  /** Proxmox refuses a rule it cannot satisfy (e.g. more VMs kept apart than nodes): logged, as the Go provider does. */
  #infeasible(ctx: StepContext, rule: string, err: unknown): void {
    ctx.log.warn({ rule, err: err instanceof Error ? err.message : String(err) }, 'Proxmox refused the resource-affinity rule as infeasible; the VM is not in it');
  }

  /** HA resources of the set (VMs tagged `machine-request.<set>` on the online nodes) plus this one, sorted. */
  async #setMembers(set: string, self: string): Promise<string[]> {
    const resources = await this.#pve.get<Array<Record<string, unknown>>>('/cluster/ha/resources');
    const registered = new Set(resources.map((r) => r['sid']).filter((s): s is string => typeof s === 'string'));
    const tag = machineRequestTag(set);
    const members = new Set<string>();
    if (registered.has(self)) members.add(self);
    for (const n of await this.#pve.nodes()) {
      if (n.status !== 'online') continue;
      for (const vm of await this.#pve.qemuList(n.node)) {
        const sid = haSid(vm.vmid);
        if (registered.has(sid) && (vm.tags ?? '').split(/[;,\s]+/).includes(tag)) members.add(sid);
      }
    }
    return [...members].sort();
  }

  /** Adds the sid to an existing rule: read, then write with the digest, retried when someone else wrote meanwhile. */
  async #addToRule(rule: string, sid: string): Promise<void> {
    for (let attempt = 1; attempt <= RULE_RETRIES; attempt++) {
      const current = await this.#pve.get<Record<string, unknown>>(`/cluster/ha/rules/${encodeURIComponent(rule)}`);
      const members = String(current['resources'] ?? '').split(',').filter((s) => s !== '');
      if (members.includes(sid)) return;
      const params: PveParams = { type: String(current['type']), resources: [...members, sid].join(',') };
      if (typeof current['digest'] === 'string') params.digest = current['digest'];
      try {
        await this.#pve.put(`/cluster/ha/rules/${encodeURIComponent(rule)}`, params);
        return;
      } catch (err) {
        if (!haError.conflict(err) || attempt === RULE_RETRIES) throw err;
      }
    }
  }

  /** PVE 8: the set's group (created once with the block's nodes), then the resource's `group`. */
  async #ensureGroup(ctx: StepContext, set: string, ha: HaConfig, sid: string): Promise<void> {
    const group = haSetObjectName(set, 'naff');
    const nodes = ha.node_affinity_nodes.join(',');
    const params: PveParams = { group, nodes, restricted: ha.node_affinity_strict ? 1 : 0 };
    if (ha.failback === false) params.nofailback = 1;
    try {
      await this.#pve.post('/cluster/ha/groups', params);
      ctx.log.info({ group, nodes }, 'HA group created');
    } catch (err) {
      if (!haError.alreadyDefined(err)) throw err;
      const existing = await this.#pve.get<Record<string, unknown>>(`/cluster/ha/groups/${group}`);
      if (existing['nodes'] !== nodes) {
        ctx.log.warn({ group, want: nodes, has: existing['nodes'] }, 'the set HA group lists other nodes than the machine class; it is created once, change it in Proxmox');
      }
    }
    const resource = await this.#pve.get<Record<string, unknown>>(`/cluster/ha/resources/${sid}`);
    if (resource['group'] !== group) await this.#pve.put(`/cluster/ha/resources/${sid}`, { group });
  }

  /**
   * Teardown, before the VM is stopped and deleted: removes the VM's HA resource (PVE 9: `purge=1`, which takes it
   * out of every rule and deletes rules left empty), and on PVE 8 the set's group once no resource uses it. A
   * resource that is already gone is fine. Only called for a VM that is ours.
   */
  async teardown(vmid: number, log: Logger): Promise<void> {
    const sid = haSid(vmid);
    const api = await haApiOf(this.#pve);
    let group: string | undefined;
    if (api === 'groups') {
      try {
        const r = await this.#pve.get<Record<string, unknown>>(`/cluster/ha/resources/${sid}`);
        if (typeof r['group'] === 'string') group = r['group'];
      } catch (err) {
        if (!haError.notFound(err)) throw err;
      }
    }
    try {
      await this.#pve.delete(`/cluster/ha/resources/${sid}`, api === 'rules' ? { purge: 1 } : undefined);
      log.info({ sid }, 'HA resource removed');
    } catch (err) {
      if (!haError.notFound(err)) throw err;
    }
    if (group !== undefined && isHaSetObjectName(group)) {
      try {
        await this.#pve.delete(`/cluster/ha/groups/${group}`);
        log.info({ group }, 'HA group removed (no VM uses it any more)');
      } catch (err) {
        if (!haError.groupInUse(err) && !haError.notFound(err)) throw err;
      }
    }
  }
}

/** Whether a teardown has HA work to do for this state. */
export function haTeardownNeeded(state: MachineState): boolean {
  return state.haRegistered;
}
