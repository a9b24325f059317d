// The one validation pass that decides a machine request before anything is written or downloaded: the provider
// data against its schema and PVE's own rules (validateProviderData: bounds, formats, cpu, vCPUs, selectors), then
// against the cluster wherever Proxmox can tell, with read-only GETs only: nodes, vCPUs and memory, PCI and USB mappings,
// bridges, the pool, tags and the CPU model. A refusal names the provider-data field and is permanent: nothing in
// the request can change until it is replaced.
import type { Logger } from '../log.js';
import { STEP_READ_MS, type PveClient } from '../proxmox/client.js';
import { isCustomCpuModel, knownCpuModels, vmCpuConfError } from '../proxmox/cpuModels.js';
import { PveConnectionError, PveError, isNodeUnreachable } from '../proxmox/errors.js';
import { formats, parsePropertyString, parseTagList } from '../proxmox/propertyString.js';
import type { NodeListEntry, PciMapping, UsbMapping } from '../proxmox/types.js';
import { pciMappingNodes } from './cluster.js';
import { checkHa } from './ha.js';
import { ProviderDataError } from './errors.js';
import { formatBytes } from './pickNode.js';
import { machineRequestTag } from './planVm.js';
import { validateProviderData, type ProviderData } from './providerData.js';
import { StepFailure, type ProvisionRequest } from './step.js';

/**
 * A request refused by validation: the message starts with `provider data: <field>:`. Not transient; `permanent`
 * tells the controller that retrying cannot help (the request's spec is immutable).
 */
export class RequestRefused extends StepFailure {
  readonly field: string | undefined;
  constructor(message: string, field?: string, cause?: unknown) {
    super(message, { permanent: true, ...(cause === undefined ? {} : { cause }) });
    this.field = field;
  }
}

/** What validation learned that placement uses: the bridges each node lists (undefined = the node could not tell). */
export interface ValidatedRequest {
  data: ProviderData;
  bridges: Map<string, ReadonlySet<string> | undefined>;
}

function refuse(field: string, text: string): never {
  throw new RequestRefused(`provider data: ${field}: ${text}`, field);
}

/** Errors that mean "Proxmox cannot tell us" (no privilege, endpoint missing on this version), not "invalid". */
function cannotTell(err: unknown): boolean {
  return err instanceof PveError && (err.status === 403 || err.status === 501 || err.status === 404 || err.status === 400);
}

/** Transport and node failures stay what they are (transient); everything else is "cannot tell". */
function rethrowTransport(err: unknown): void {
  if (err instanceof PveConnectionError || isNodeUnreachable(err)) throw err;
  if (err instanceof PveError && [401, 502, 503, 504].includes(err.status)) throw err;
}

/** The bridges a request attaches NICs to, each with the provider-data field that names it. */
export function requestBridges(data: ProviderData): Array<{ field: string; bridge: string }> {
  return [
    { field: 'network_bridge', bridge: data.network_bridge },
    ...data.additional_nics.map((n, i) => ({ field: `additional_nics[${i}].bridge`, bridge: n.bridge })),
  ];
}

/**
 * How long the rarely changing lists validation reads (bridges, datacenter tag rules, permissions, CPU models) are
 * shared between requests: a burst of requests validates against one read; a change made in Proxmox is seen within
 * this time.
 */
const SHARED_READ_MS = 30_000;

/**
 * Validates a request before any Proxmox write or download. Throws RequestRefused (permanent, names the field) for
 * invalid data; Proxmox connection problems surface as the client's own (transient) errors.
 */
export async function validateRequest(pve: PveClient, request: ProvisionRequest, log?: Logger): Promise<ValidatedRequest> {
  let data: ProviderData;
  try {
    data = validateProviderData(request.providerData);
  } catch (err) {
    if (err instanceof ProviderDataError) throw new RequestRefused(err.message, err.field, err);
    throw err;
  }
  // Proxmox lists nodes in hash order: sort them, so that messages and the node asked for CPU models are stable.
  const nodes = (await pve.nodes({ maxAgeMs: STEP_READ_MS })).sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  const eligible = eligibleNodes(nodes, data);
  checkCapacity(data, eligible);
  await checkPciMappings(pve, data, eligible.map((n) => n.node));
  await checkUsbMappings(pve, data, eligible.map((n) => n.node));
  const bridges = await checkBridges(pve, data, eligible, log);
  await checkPool(pve, data, log);
  await checkTags(pve, data, request.machineRequestSetId, log);
  await checkCpuModel(pve, data, eligible, log);
  await checkHa(pve, data, nodes.map((n) => n.node), request.machineRequestSetId, log);
  return { data, bridges };
}

/** Nodes the request may use by its own rules (pinned node, allowed_nodes), whatever their state. */
function eligibleNodes(nodes: readonly NodeListEntry[], data: ProviderData): NodeListEntry[] {
  const names = nodes.map((n) => n.node).sort();
  const list = names.join(', ') || 'none';
  if (data.node !== undefined) {
    const pinned = nodes.find((n) => n.node === data.node);
    if (!pinned) refuse('node', `"${data.node}" is not a node of this Proxmox cluster (nodes: ${list})`);
    return [pinned];
  }
  if (data.allowed_nodes.length > 0) {
    const allowed = new Set(data.allowed_nodes);
    const found = nodes.filter((n) => allowed.has(n.node));
    if (found.length === 0) refuse('allowed_nodes', `none of ${data.allowed_nodes.join(', ')} is a node of this Proxmox cluster (nodes: ${list})`);
    return found;
  }
  return [...nodes];
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** vCPUs and memory against what the nodes have, when every node the request may use reports it. */
function checkCapacity(data: ProviderData, eligible: readonly NodeListEntry[]): void {
  const where = data.node !== undefined ? `node ${data.node} has` : 'the largest node this VM may use has';
  const vcpus = data.cores * data.sockets;
  const cpus = eligible.map((n) => n.maxcpu);
  if (cpus.length > 0 && cpus.every((c): c is number => typeof c === 'number' && c > 0)) {
    const most = Math.max(...cpus);
    if (vcpus > most) {
      const field = data.sockets > 1 ? 'sockets' : 'cores';
      refuse(
        field,
        `${plural(data.cores, 'core')} × ${plural(data.sockets, 'socket')} = ${vcpus} vCPUs, but ${where} ${most} CPUs; ` +
          `Proxmox refuses to start it ("MAX ${most} vcpus allowed per VM on this node")`,
      );
    }
  }
  const mems = eligible.map((n) => n.maxmem);
  if (mems.length > 0 && mems.every((m): m is number => typeof m === 'number' && m > 0)) {
    const most = Math.max(...mems);
    const want = data.memory * 1024 * 1024;
    if (want > most) refuse('memory', `${data.memory} MiB (${formatBytes(want)}) is more memory than ${where} (${formatBytes(most)})`);
  }
}

async function checkPciMappings(pve: PveClient, data: ProviderData, eligible: readonly string[]): Promise<void> {
  await checkMappings('PCI', 'pci_devices', data.pci_devices, () => pve.pciMappings(), eligible);
}

/**
 * USB mappings (`GET /cluster/mapping/usb`, listed to holders of Mapping.Audit, .Use or .Modify on
 * /mapping/usb/<id>): each must exist and have an entry for a node the VM may use. qemu-server finds the device on
 * the node the VM starts on (`USB device mapping not found for '<id>'` otherwise), so placement then keeps only nodes
 * with an entry for every requested mapping.
 */
async function checkUsbMappings(pve: PveClient, data: ProviderData, eligible: readonly string[]): Promise<void> {
  await checkMappings('USB', 'usb_devices', data.usb_devices, () => pve.usbMappings(), eligible);
}

/** Each device's resource mapping exists (as far as the token can see) and has an entry on a node the VM may use. */
async function checkMappings(
  kind: 'PCI' | 'USB',
  key: 'pci_devices' | 'usb_devices',
  devices: ReadonlyArray<{ mapping: string }>,
  list: () => Promise<PciMapping[] | UsbMapping[]>,
  eligible: readonly string[],
): Promise<void> {
  if (devices.length === 0) return;
  let mappings: PciMapping[] | UsbMapping[];
  try {
    mappings = await list();
  } catch (err) {
    rethrowTransport(err);
    if (cannotTell(err)) return;
    throw err;
  }
  const byId = pciMappingNodes(mappings);
  const visible = [...byId.keys()].sort().join(', ') || 'none';
  devices.forEach((dev, i) => {
    const field = `${key}[${i}].mapping`;
    const nodes = byId.get(dev.mapping);
    if (nodes === undefined) {
      refuse(
        field,
        `no ${kind} resource mapping "${dev.mapping}" in the cluster (mappings the token can see: ${visible}; ` +
          `the token needs Mapping.Use on /mapping/${kind.toLowerCase()}/${dev.mapping})`,
      );
    }
    if (!eligible.some((n) => nodes.has(n))) {
      const has = [...nodes].sort().join(', ') || 'no node';
      refuse(field, `${kind} mapping "${dev.mapping}" has devices on ${has}, none of them a node this VM may use (${eligible.join(', ')})`);
    }
  });
}

/**
 * The bridges of every online node the request may use (`GET /nodes/{node}/network?type=any_bridge`, which also
 * lists SDN VNets). A bridge that no node lists is refused; Proxmox lists a bridge only to callers that may use it
 * (SDN.Use), so "not listed" also means "the VM could not be created with it". Nodes that cannot list are unknown.
 */
async function checkBridges(
  pve: PveClient,
  data: ProviderData,
  eligible: readonly NodeListEntry[],
  log?: Logger,
): Promise<Map<string, ReadonlySet<string> | undefined>> {
  const out = new Map<string, ReadonlySet<string> | undefined>();
  for (const n of eligible) {
    if (n.status !== 'online') continue;
    try {
      const list = await pve.getShared<unknown>(`/nodes/${encodeURIComponent(n.node)}/network`, { type: 'any_bridge' }, SHARED_READ_MS);
      const names = Array.isArray(list)
        ? list
            .map((e) => (e !== null && typeof e === 'object' ? (e as Record<string, unknown>).iface : undefined))
            .filter((x): x is string => typeof x === 'string')
        : [];
      out.set(n.node, new Set(names));
    } catch (err) {
      if (err instanceof PveConnectionError) throw err;
      if (!(err instanceof PveError)) throw err;
      log?.debug({ node: n.node, err: err.message }, 'bridges could not be listed; not checked on this node');
      out.set(n.node, undefined);
    }
  }
  const known = [...out].filter((e): e is [string, ReadonlySet<string>] => e[1] !== undefined);
  if (known.length === 0 || known.length < out.size) return out;
  for (const { field, bridge } of requestBridges(data)) {
    if (known.some(([, set]) => set.has(bridge))) continue;
    const seen = known.map(([node, set]) => `${node}: ${[...set].sort().join(', ') || 'none'}`).join('; ');
    refuse(
      field,
      `no bridge "${bridge}" on any node this VM may use (${seen}); Proxmox lists only bridges the token may use ` +
        `(SDN.Use on /sdn/zones/localnetwork/${bridge})`,
    );
  }
  return out;
}

/** `GET /pools?poolid=<id>` answers "pool '<id>' does not exist" to anyone (PVE 8.1+); older versions cannot tell. */
async function checkPool(pve: PveClient, data: ProviderData, log?: Logger): Promise<void> {
  if (data.pool === undefined) return;
  try {
    await pve.get('/pools', { poolid: data.pool });
  } catch (err) {
    rethrowTransport(err);
    if (err instanceof PveError && /does not exist/i.test(err.statusText)) {
      refuse('pool', `pool "${data.pool}" does not exist in Proxmox (create it under Datacenter → Permissions → Pools)`);
    }
    if (err instanceof PveError) {
      log?.debug({ pool: data.pool, err: err.message }, 'pool could not be checked');
      return;
    }
    throw err;
  }
}

/** The datacenter's tag rules (`GET /cluster/options`, Sys.Audit on /): who may set which tag (GuestHelpers.pm). */
async function checkTags(pve: PveClient, data: ProviderData, setId: string | undefined, log?: Logger): Promise<void> {
  const tags: Array<{ field: string; tag: string; ours: boolean }> = data.tags.map((tag, i) => ({ field: `tags[${i}]`, tag, ours: false }));
  if (setId !== undefined && setId !== '') tags.push({ field: 'tags', tag: machineRequestTag(setId), ours: true });
  if (tags.length === 0) return;
  let options: Record<string, unknown>;
  let privileged: boolean;
  try {
    options = ((await pve.getShared<Record<string, unknown> | null>('/cluster/options', undefined, SHARED_READ_MS)) ?? {}) as Record<string, unknown>;
    const perms = await pve.getShared<Record<string, Record<string, unknown>> | null>('/access/permissions', { path: '/' }, SHARED_READ_MS);
    privileged = perms?.['/']?.['Sys.Modify'] !== undefined;
  } catch (err) {
    rethrowTransport(err);
    if (err instanceof PveError) {
      log?.debug({ err: err.message }, 'tag rules could not be read; tags not checked');
      return;
    }
    throw err;
  }
  if (privileged) return;
  const registered = new Set(listOption(options['registered-tags']));
  const access = objectOption(options['user-tag-access'], 'user-allow');
  const userAllow = typeof access['user-allow'] === 'string' ? access['user-allow'] : 'free';
  const allowList = new Set(listOption(access['user-allow-list']));
  let existing: Set<string> | undefined;
  if (userAllow === 'existing') {
    existing = new Set((await pve.clusterResources('vm')).flatMap((v) => parseTagList(v.tags ?? '')));
  }
  for (const { field, tag, ours } of tags) {
    const what = ours ? `the provider's tag "${tag}" (every VM of a machine set carries it)` : `"${tag}"`;
    if (registered.has(tag)) {
      refuse(field, `${what} is a registered tag (Datacenter → Options → Tag Style); only Sys.Modify on / may set it, which the token lacks`);
    }
    const allowed =
      userAllow === 'free' || (userAllow !== 'none' && (allowList.has(tag) || (existing?.has(tag) ?? false)));
    if (!allowed) {
      refuse(
        field,
        `${what} may not be set by the token: the datacenter allows users ${userAllow === 'none' ? 'no tags' : `only ${userAllow === 'list' ? 'listed' : 'listed or existing'} tags`} ` +
          '(Datacenter → Options → User Tag Access); grant Sys.Modify on / or allow the tag',
      );
    }
  }
}

/** A datacenter.cfg list as /cluster/options returns it: an array, or a `;`/`,`-separated string. */
function listOption(v: unknown): string[] {
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  if (typeof v === 'string') return parseTagList(v);
  return [];
}

/** A datacenter.cfg property string as /cluster/options returns it: parsed (object) or raw (`k=v,...`). */
function objectOption(v: unknown, defaultKey: string): Record<string, unknown> {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  if (typeof v !== 'string') return {};
  const out: Record<string, unknown> = {};
  for (const part of v.split(',')) {
    const kv = /^([^=]+)=(.*)$/.exec(part.trim());
    if (kv?.[1]) out[kv[1]] = kv[2];
    else if (part.trim() !== '') out[defaultKey] = part.trim();
  }
  return out;
}

/**
 * The model against the list the node itself knows (`GET /nodes/{node}/capabilities/qemu/cpu`, which follows the
 * installed QEMU and includes custom models the token may see); without it, qemu-server's built-in list.
 */
async function checkCpuModel(pve: PveClient, data: ProviderData, eligible: readonly NodeListEntry[], log?: Logger): Promise<void> {
  const cpu = parsePropertyString(data.cpu_type, formats.cpu);
  const cputype = cpu['cputype'] ?? '';
  const node = eligible.filter((n) => n.status === 'online').map((n) => n.node).sort()[0];
  let models: Set<string> | undefined;
  let custom: Set<string> | undefined;
  let source = "qemu-server's built-in list";
  if (node !== undefined) {
    try {
      const list = await pve.getShared<unknown>(`/nodes/${encodeURIComponent(node)}/capabilities/qemu/cpu`, undefined, SHARED_READ_MS);
      if (Array.isArray(list)) {
        const entries = list.filter((e): e is Record<string, unknown> => e !== null && typeof e === 'object');
        models = new Set(entries.map((e) => e.name).filter((x): x is string => typeof x === 'string'));
        const customs = [...models].filter(isCustomCpuModel);
        custom = customs.length > 0 ? new Set(customs) : undefined;
        source = `node ${node}`;
      }
    } catch (err) {
      rethrowTransport(err);
      if (!(err instanceof PveError)) throw err;
      log?.debug({ node, err: err.message }, 'CPU models could not be listed; using the built-in list');
    }
  }
  const err = vmCpuConfError(cpu, models ?? knownCpuModels(), custom);
  if (err !== undefined) {
    refuse('cpu_type', `"${cputype}" is not a CPU model Proxmox knows (${source}): ${err}`);
  }
}
