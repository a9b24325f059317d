// Pure placement: which Proxmox node a new VM goes to, from a cluster snapshot, the in-flight
// ledger of VMs being created right now, and the request's constraints and strategy.
import { PlacementError, type PlacementCandidate } from './errors.js';
import type { PlacementStrategy, ProviderData } from './providerData.js';

export type { PlacementCandidate } from './errors.js';

export interface NodeSnapshot {
  name: string;
  /** `/nodes` status: online | offline | unknown. */
  status: string;
  /** Node RAM in bytes; undefined when the token lacks Sys.Audit (then capacity is not checked). */
  maxmem?: number | undefined;
  /** Sum of `maxmem` of the VMs on the node (bytes) — committed, not host usage. */
  committedMemory: number;
  /** VMs on the node tagged machine-request.<set of this request> (tags compared case-insensitively). */
  setVmCount: number;
  /** All VMs on the node (for 'fewer-vms'). */
  vmCount?: number;
  /** PCI mapping ids that have an entry for this node. */
  pciMappings?: readonly string[];
  /** USB mapping ids that have an entry for this node. */
  usbMappings?: readonly string[];
  /** Names of the VMs on the node (= request ids); ledger entries already here are not counted twice. */
  vmNames?: readonly string[];
  /** Logical CPUs of the node (`maxcpu`); undefined when not reported (then vCPUs are not checked). */
  maxcpu?: number | undefined;
  /** Bridges the node lists to the token; undefined when it could not tell (then bridges are not checked). */
  bridges?: ReadonlySet<string> | undefined;
}

export interface InFlightEntry {
  requestId: string;
  setId: string | undefined;
  node: string;
  memBytes: number;
}

export interface PlacementRequest {
  requestId: string;
  memoryBytes: number;
  /** Pinned node (provider data `node`). */
  node?: string | undefined;
  allowedNodes?: readonly string[] | undefined;
  strategy?: PlacementStrategy | undefined;
  pciMappings?: readonly string[] | undefined;
  usbMappings?: readonly string[] | undefined;
  setId?: string | undefined;
  /** cores × sockets: Proxmox refuses to start a VM with more vCPUs than its node has CPUs. */
  vcpus?: number | undefined;
  /** Bridges the VM's NICs attach to. */
  bridges?: readonly string[] | undefined;
}

/** The placement request for provider data (pinned node, allowed nodes, strategy, memory, PCI mappings, set). */
export function placementRequest(requestId: string, data: ProviderData, setId: string | undefined): PlacementRequest {
  return {
    requestId,
    memoryBytes: data.memory * 1024 * 1024,
    node: data.node,
    allowedNodes: data.allowed_nodes,
    strategy: data.placement_strategy,
    pciMappings: data.pci_devices.map((d) => d.mapping),
    usbMappings: data.usb_devices.map((d) => d.mapping),
    setId,
    vcpus: data.cores * data.sockets,
    bridges: [...new Set([data.network_bridge, ...data.additional_nics.map((n) => n.bridge)])],
  };
}

export interface PlacementInput {
  nodes: readonly NodeSnapshot[];
  inFlight?: readonly InFlightEntry[];
  request: PlacementRequest;
}

export interface Placement {
  node: string;
  candidates: PlacementCandidate[];
}

/** In-memory record of placements whose VM does not exist yet (one entry per request id). */
export class InFlightLedger {
  readonly #entries = new Map<string, InFlightEntry>();

  reserve(requestId: string, setId: string | undefined, node: string, memBytes: number): void {
    this.#entries.set(requestId, { requestId, setId, node, memBytes });
  }

  release(requestId: string): boolean {
    return this.#entries.delete(requestId);
  }

  entries(): InFlightEntry[] {
    return [...this.#entries.values()].map((e) => ({ ...e }));
  }
}

const GiB = 1024 ** 3;

/** Human size: "8 GiB", "1.5 GiB", "512 MiB". */
export function formatBytes(n: number): string {
  if (Math.abs(n) >= GiB) {
    const v = n / GiB;
    return `${Number.isInteger(v) ? v : v.toFixed(1)} GiB`;
  }
  return `${Math.round(n / 1024 ** 2)} MiB`;
}

interface Scored {
  node: string;
  setCount: number;
  vmCount: number;
  /** Uncommitted memory after in-flight reservations; -Infinity when unknown. */
  free: number;
}

function compare(strategy: PlacementStrategy, a: Scored, b: Scored): number {
  const byName = a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
  const freeDesc = b.free - a.free;
  switch (strategy) {
    case 'spread':
      return a.setCount - b.setCount || freeDesc || byName;
    case 'fewer-vms':
      return a.vmCount - b.vmCount || freeDesc || byName;
    case 'round-robin':
      return a.setCount - b.setCount || byName;
    case 'binpack': {
      // Least uncommitted memory that still fits (non-fitting nodes are already excluded); unknown last.
      const ak = Number.isFinite(a.free) ? a.free : Number.POSITIVE_INFINITY;
      const bk = Number.isFinite(b.free) ? b.free : Number.POSITIVE_INFINITY;
      return (ak < bk ? -1 : ak > bk ? 1 : 0) || byName;
    }
  }
}

/**
 * Picks the node for a new VM. Rules, in order: a pinned node must exist and be online; otherwise
 * only online nodes (and only `allowedNodes` when given); a node without a requested PCI mapping or
 * without the memory the VM needs (maxmem − committed VM memory − in-flight reservations) is
 * excluded; then the strategy ranks what is left ('spread': fewest VMs of the same set counting
 * in-flight ones, then most uncommitted memory, then name). Throws PlacementError listing every node.
 */
export function pickNode(input: PlacementInput): Placement {
  const { request } = input;
  const strategy: PlacementStrategy = request.strategy ?? 'spread';
  const inFlight = (input.inFlight ?? []).filter((e) => e.requestId !== request.requestId);
  const nodes = [...input.nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const allowed = request.allowedNodes && request.allowedNodes.length > 0 ? new Set(request.allowedNodes) : undefined;
  const wantedPci = request.pciMappings ?? [];
  const wantedUsb = request.usbMappings ?? [];

  if (request.node !== undefined && !nodes.some((n) => n.name === request.node)) {
    const known = nodes.map((n) => n.name).join(', ') || 'none';
    throw new PlacementError(`pinned node "${request.node}" is not in the cluster (nodes: ${known})`, [
      { node: request.node, accepted: false, reason: 'not in cluster' },
    ]);
  }

  const candidates: PlacementCandidate[] = [];
  const scored: Scored[] = [];
  for (const n of nodes) {
    const reject = (reason: string): void => {
      candidates.push({ node: n.name, accepted: false, reason });
    };
    if (request.node !== undefined && n.name !== request.node) {
      reject(`not the pinned node ${request.node}`);
      continue;
    }
    if (allowed && !allowed.has(n.name)) {
      reject('not in allowed_nodes');
      continue;
    }
    if (n.status !== 'online') {
      reject(n.status === 'offline' ? 'offline' : `status ${n.status}`);
      continue;
    }
    const have = new Set(n.pciMappings ?? []);
    const missing = wantedPci.filter((m) => !have.has(m));
    if (missing.length > 0) {
      reject(`no PCI mapping ${missing.join(', ')} on this node`);
      continue;
    }
    const haveUsb = new Set(n.usbMappings ?? []);
    const missingUsb = wantedUsb.filter((m) => !haveUsb.has(m));
    if (missingUsb.length > 0) {
      reject(`no USB mapping ${missingUsb.join(', ')} on this node`);
      continue;
    }
    const noBridge = n.bridges === undefined ? [] : (request.bridges ?? []).filter((b) => !n.bridges?.has(b));
    if (noBridge.length > 0) {
      reject(`no bridge ${noBridge.join(', ')} (or the token may not use it)`);
      continue;
    }
    if (request.vcpus !== undefined && n.maxcpu !== undefined && n.maxcpu > 0 && request.vcpus > n.maxcpu) {
      reject(`needs ${request.vcpus} vCPUs, has ${n.maxcpu} CPUs`);
      continue;
    }
    const present = new Set((n.vmNames ?? []).map((s) => s.toLowerCase()));
    const pending = inFlight.filter((e) => e.node === n.name && !present.has(e.requestId.toLowerCase()));
    const reserved = pending.reduce((sum, e) => sum + e.memBytes, 0);
    const setPending =
      request.setId === undefined ? 0 : pending.filter((e) => e.setId === request.setId).length;
    let free = Number.NEGATIVE_INFINITY;
    let memNote = 'memory not reported (needs Sys.Audit), capacity not checked';
    if (n.maxmem !== undefined && Number.isFinite(n.maxmem) && n.maxmem > 0) {
      free = n.maxmem - n.committedMemory - reserved;
      if (free < request.memoryBytes) {
        reject(`needs ${formatBytes(request.memoryBytes)}, ${formatBytes(Math.max(0, free))} uncommitted`);
        continue;
      }
      memNote = `${formatBytes(free)} uncommitted`;
    }
    const setCount = request.setId === undefined ? 0 : n.setVmCount + setPending;
    const vmCount = (n.vmCount ?? 0) + pending.length;
    scored.push({ node: n.name, setCount, vmCount, free });
    const setNote = request.setId === undefined ? '' : `, ${setCount} VM(s) of this set`;
    candidates.push({ node: n.name, accepted: true, reason: `${memNote}${setNote}` });
  }

  if (allowed) {
    for (const name of [...allowed].sort()) {
      if (!nodes.some((n) => n.name === name)) candidates.push({ node: name, accepted: false, reason: 'not in cluster' });
    }
  }

  scored.sort((a, b) => compare(strategy, a, b));
  const best = scored[0];
  if (!best) {
    const pinned = request.node === undefined ? undefined : candidates.find((c) => c.node === request.node);
    if (pinned) throw new PlacementError(`pinned node ${pinned.node} cannot take this VM: ${pinned.reason}`, candidates);
    const detail = candidates.map((c) => `${c.node}: ${c.reason}`).join('; ') || 'the cluster reports no nodes';
    throw new PlacementError(`no Proxmox node can take this VM: ${detail}`, candidates);
  }
  return { node: best.node, candidates };
}
