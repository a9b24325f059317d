// Static addresses for networks without DHCP (provider data `address_pool`, per NIC): the schema block, its
// validation, the MAC the provider gives a NIC so Talos can find it, the allocation of one address per NIC from
// the pool (kept in the private state in Omni, fields 110-119), and the NoCloud network-config Talos reads.
import { createHash } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import { stringify as stringifyYaml } from 'yaml';
import { providerMachineKind } from '../cosi/resources.js';
import type { CosiState } from '../cosi/state.js';
import { NicAddressSchema, type NicAddress } from '../gen/proxmox/specs/specs_pb.js';
import { ProviderDataError } from './errors.js';
import {
  canonicalIp,
  formatIp,
  formatPrefix,
  parseIp,
  parsePrefix,
  prefixBounds,
  prefixContains,
  usableInPrefix,
  type Family,
  type Ip,
  type Prefix,
} from './ip.js';
import type { MachineState } from './machineState.js';

export interface PoolRoute {
  /** Destination prefix, e.g. `192.168.0.0/16`. */
  to: string;
  /** Next hop inside the pool's CIDR. */
  via: string;
}

/** A NIC's static configuration: the pool one address is taken from, and what goes with it. */
export interface AddressPool {
  /** The network, e.g. `10.0.0.0/24`; addresses are written with its prefix length. */
  cidr: string;
  /** `first-last`, inclusive (exactly one of range and addresses). */
  range?: string;
  /** The addresses to hand out, in this order. */
  addresses?: string[];
  gateway?: string;
  dns_servers: string[];
  search_domains: string[];
  mtu?: number;
  routes: PoolRoute[];
}

/** Bounds of the block (messages cite the source). */
export const POOL_LIMITS = {
  addresses: { max: 4096, source: 'ours: more addresses than a machine class needs; use range for larger pools' },
  dns_servers: { max: 8, source: 'ours: resolvers use the first few (the C library reads 3)' },
  search_domains: { max: 6, source: 'the classic resolv.conf limit of 6 search domains (MAXDNSRCH)' },
  routes: { max: 32, source: 'ours: more static routes than a NIC needs' },
  domain: { max: 253, source: 'a DNS name has at most 253 characters' },
  mtu: { min: 576, minV6: 1280, max: 65535 },
} as const;

// RE2 and JavaScript read these the same way (explicit classes, no lookaround); the exact rules (octets ≤ 255, the
// address inside the CIDR, ...) are checked at run time by checkAddressPools.
const V4 = '([0-9]{1,3}[.]){3}[0-9]{1,3}';
const V6 = '[0-9a-fA-F.]*:[0-9a-fA-F:.]*';
const IP_PATTERN = `^(${V4}|${V6})$`;
const CIDR_PATTERN = `^(${V4}/[0-9]{1,2}|${V6}/[0-9]{1,3})$`;
const RANGE_PATTERN = `^(${V4}-${V4}|${V6}-${V6})$`;
const LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const DOMAIN_PATTERN = `^(${LABEL}[.])*${LABEL}[.]?$`;

const ipSchema = (description: string) => ({ type: 'string', maxLength: 45, pattern: IP_PATTERN, description }) as const;
const cidrSchema = (description: string) => ({ type: 'string', maxLength: 49, pattern: CIDR_PATTERN, description }) as const;

/** JSON Schema of `address_pool` (top level: net0; `additional_nics[].address_pool`: that NIC). */
export const addressPoolSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['cidr'],
  description:
    'Static addresses instead of DHCP for this NIC: one address per VM from range or addresses, written to the ' +
    'NoCloud network-config (matched by the MAC the provider sets). Unset = DHCP.',
  properties: {
    cidr: cidrSchema('The network, e.g. 10.0.0.0/24 (or an IPv6 prefix).'),
    range: {
      type: 'string',
      maxLength: 91,
      pattern: RANGE_PATTERN,
      description: 'Addresses to hand out, first-last inclusive, e.g. 10.0.0.10-10.0.0.50 (or use addresses).',
    },
    addresses: {
      type: 'array',
      items: ipSchema('An address to hand out.'),
      uniqueItems: true,
      minItems: 1,
      maxItems: POOL_LIMITS.addresses.max,
      description: 'Addresses to hand out, in this order (or use range).',
    },
    gateway: ipSchema('Default gateway, inside cidr.'),
    dns_servers: {
      type: 'array',
      items: ipSchema('A DNS server.'),
      uniqueItems: true,
      maxItems: POOL_LIMITS.dns_servers.max,
      default: [],
      description: 'DNS servers, e.g. [1.1.1.1, 1.0.0.1]; they replace the defaults Talos would use.',
    },
    search_domains: {
      type: 'array',
      items: { type: 'string', maxLength: POOL_LIMITS.domain.max, pattern: DOMAIN_PATTERN },
      uniqueItems: true,
      maxItems: POOL_LIMITS.search_domains.max,
      default: [],
      description: 'DNS search domains (written to network-config; Talos itself ignores them there, see docs).',
    },
    mtu: {
      type: 'integer',
      minimum: POOL_LIMITS.mtu.min,
      maximum: POOL_LIMITS.mtu.max,
      description: 'Link MTU (576-65535; at least 1280 for IPv6).',
    },
    routes: {
      type: 'array',
      maxItems: POOL_LIMITS.routes.max,
      default: [],
      description: 'Static routes on this NIC.',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['to', 'via'],
        properties: {
          to: cidrSchema('Destination, e.g. 192.168.0.0/16.'),
          via: ipSchema('Next hop, inside cidr.'),
        },
      },
    },
  },
} as const;

/** What a pattern-checked key of the block holds, for "... is not a valid <noun>" messages. */
export const ADDRESS_POOL_NOUNS: Record<string, string> = {
  cidr: 'CIDR (address/prefix length)',
  range: 'address range (first-last)',
  addresses: 'IP address',
  gateway: 'IP address',
  dns_servers: 'IP address',
  search_domains: 'DNS name',
  to: 'CIDR (address/prefix length)',
  via: 'IP address',
};

/** A NIC with a static pool: its index (net<nic>), the provider-data field of its pool, and the pool. */
export interface StaticNic {
  nic: number;
  field: string;
  pool: AddressPool;
}

interface WithPools {
  address_pool?: AddressPool | undefined;
  additional_nics: ReadonlyArray<{ address_pool?: AddressPool | undefined }>;
}

/** The NICs that take a static address, net0 first. */
export function staticNics(data: WithPools): StaticNic[] {
  const out: StaticNic[] = [];
  if (data.address_pool) out.push({ nic: 0, field: 'address_pool', pool: data.address_pool });
  data.additional_nics.forEach((n, i) => {
    if (n.address_pool) out.push({ nic: i + 1, field: `additional_nics[${i}].address_pool`, pool: n.address_pool });
  });
  return out;
}

/** A pool after validation: parsed once, what allocation and rendering need. */
interface ParsedPool {
  family: Family;
  cidr: Prefix;
  /** Inclusive range, or the explicit list in order. */
  range?: { first: bigint; last: bigint };
  list?: Ip[];
}

function refuse(field: string, message: string): ProviderDataError {
  return new ProviderDataError(`provider data: ${field}: ${message}`, field);
}

function familyName(f: Family): string {
  return f === 4 ? 'IPv4' : 'IPv6';
}

/** An address of the pool's family that a host may use in its CIDR (not the IPv4 network or broadcast address). */
function hostAddress(field: string, text: string, cidr: Prefix): Ip {
  const ip = parseIp(text);
  if (!ip) throw refuse(field, `${JSON.stringify(text)} is not a valid IP address`);
  if (ip.family !== cidr.ip.family) {
    throw refuse(field, `${text} is ${familyName(ip.family)} but cidr ${formatPrefix(cidr)} is ${familyName(cidr.ip.family)}`);
  }
  if (!prefixContains(cidr, ip)) throw refuse(field, `${text} is outside cidr ${formatPrefix(cidr)}`);
  if (!usableInPrefix(cidr, ip)) {
    const { first } = prefixBounds(cidr);
    throw refuse(field, `${text} is the ${ip.value === first ? 'network' : 'broadcast'} address of ${formatPrefix(cidr)}`);
  }
  return ip;
}

/** Validates one pool (everything Proxmox and Talos would otherwise find out only at boot); returns it parsed. */
export function parsePool(field: string, pool: AddressPool): ParsedPool {
  const cidr = parsePrefix(pool.cidr);
  if (!cidr) throw refuse(`${field}.cidr`, `${JSON.stringify(pool.cidr)} is not a valid CIDR (address/prefix length)`);
  const { first } = prefixBounds(cidr);
  if (cidr.ip.value !== first) {
    const network = formatPrefix({ ip: { family: cidr.ip.family, value: first }, bits: cidr.bits });
    throw refuse(`${field}.cidr`, `${pool.cidr} has host bits set (did you mean ${network}?)`);
  }
  if (cidr.bits === 0) throw refuse(`${field}.cidr`, `${pool.cidr} is the whole address space, not a network`);
  const family = cidr.ip.family;
  const parsed: ParsedPool = { family, cidr };
  if ((pool.range === undefined) === (pool.addresses === undefined)) {
    throw refuse(field, pool.range === undefined ? 'give the addresses to hand out: range or addresses' : 'give either range or addresses, not both');
  }
  if (pool.range !== undefined) {
    const dash = pool.range.indexOf('-');
    const [a, b] = [pool.range.slice(0, dash), pool.range.slice(dash + 1)];
    const start = hostAddress(`${field}.range`, a, cidr);
    const end = hostAddress(`${field}.range`, b, cidr);
    if (start.value > end.value) throw refuse(`${field}.range`, `${a} comes after ${b}; write first-last`);
    parsed.range = { first: start.value, last: end.value };
  } else {
    const seen = new Map<string, number>();
    parsed.list = (pool.addresses ?? []).map((text, i) => {
      const ip = hostAddress(`${field}.addresses[${i}]`, text, cidr);
      const key = formatIp(ip);
      const dup = seen.get(key);
      if (dup !== undefined) throw refuse(`${field}.addresses[${i}]`, `${text} is the same address as addresses[${dup}]`);
      seen.set(key, i);
      return ip;
    });
  }
  if (pool.gateway !== undefined) {
    const gw = hostAddress(`${field}.gateway`, pool.gateway, cidr);
    if (inPool(parsed, gw)) throw refuse(`${field}.gateway`, `${pool.gateway} is one of the pool's own addresses; a VM would get it`);
  }
  const dns = new Map<string, number>();
  pool.dns_servers.forEach((text, i) => {
    const ip = parseIp(text);
    if (!ip) throw refuse(`${field}.dns_servers[${i}]`, `${JSON.stringify(text)} is not a valid IP address`);
    const dup = dns.get(formatIp(ip));
    if (dup !== undefined) throw refuse(`${field}.dns_servers[${i}]`, `${text} is the same server as dns_servers[${dup}]`);
    dns.set(formatIp(ip), i);
  });
  if (pool.mtu !== undefined && family === 6 && pool.mtu < POOL_LIMITS.mtu.minV6) {
    throw refuse(`${field}.mtu`, `${pool.mtu} is below ${POOL_LIMITS.mtu.minV6}, the smallest MTU IPv6 allows (RFC 8200)`);
  }
  pool.routes.forEach((r, i) => {
    const where = `${field}.routes[${i}]`;
    const to = parsePrefix(r.to);
    if (!to) throw refuse(`${where}.to`, `${JSON.stringify(r.to)} is not a valid CIDR (address/prefix length)`);
    if (to.ip.family !== family) throw refuse(`${where}.to`, `${r.to} is ${familyName(to.ip.family)} but cidr is ${familyName(family)}`);
    if (to.bits === 0) throw refuse(`${where}.to`, `${r.to} is a default route; set gateway instead`);
    if (to.ip.value !== prefixBounds(to).first) throw refuse(`${where}.to`, `${r.to} has host bits set`);
    hostAddress(`${where}.via`, r.via, cidr);
  });
  return parsed;
}

/** Every pool of the request, and the rules between NICs (one default gateway per address family). */
export function checkAddressPools(data: WithPools): void {
  const gateways = new Map<Family, string>();
  for (const { field, pool } of staticNics(data)) {
    const parsed = parsePool(field, pool);
    if (pool.gateway !== undefined) {
      const other = gateways.get(parsed.family);
      if (other !== undefined) {
        throw refuse(`${field}.gateway`, `${other} already sets the ${familyName(parsed.family)} default gateway; only one NIC may have one`);
      }
      gateways.set(parsed.family, `${field}.gateway`);
    }
  }
}

function inPool(p: ParsedPool, ip: Ip): boolean {
  if (ip.family !== p.family) return false;
  if (p.range) return ip.value >= p.range.first && ip.value <= p.range.last;
  return (p.list ?? []).some((x) => x.value === ip.value);
}

/** How a pool is named in messages: its range, or its first and last listed address. */
function poolLabel(pool: AddressPool): string {
  if (pool.range !== undefined) return pool.range;
  const list = pool.addresses ?? [];
  return list.length === 1 ? (list[0] ?? '') : `[${list[0] ?? ''} … ${list[list.length - 1] ?? ''}] (${list.length} addresses)`;
}

/**
 * The MAC the provider gives net<nic> of a request's VM: locally administered, unicast, derived from the request
 * ID, so the VM's config and the network-config name the same NIC without asking Proxmox, and a retried create
 * gets the same MAC.
 */
export function nicMac(requestId: string, nic: number): string {
  const h = createHash('sha256').update(`omni-infra-provider-proxmox/nic-mac\0${requestId}\0${nic}`, 'utf8').digest();
  // 0x02 set: locally administered; 0x01 clear: unicast (PVE refuses multicast MACs).
  const bytes = [((h[0] ?? 0) & 0xfc) | 0x02, ...h.subarray(1, 6)];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Addresses held by one private state (any request of this provider). */
export interface HeldAddresses {
  requestId: string;
  /** Canonical addresses (no prefix length). */
  addresses: string[];
}

/** Lists the addresses every private state of this provider holds (the source of truth, in Omni). */
export interface AddressBook {
  list(): Promise<HeldAddresses[]>;
}

export function heldAddresses(state: Pick<MachineState, 'nicAddresses'>): string[] {
  return state.nicAddresses.map((a) => canonicalIp(a.address.replace(/\/\d+$/, '')));
}

/** The address book of a running provider: every private state of kind Machine.<id>... in infra-provider:<id>. */
export function omniAddressBook(state: CosiState, providerId: string): AddressBook {
  const kind = providerMachineKind(providerId);
  return {
    async list() {
      const states = await state.list(kind);
      return states.map((s) => ({ requestId: s.metadata.id, addresses: heldAddresses(s.spec) }));
    },
  };
}

/**
 * Addresses a VM's config gives its NICs through Proxmox cloud-init (`ipconfigN: ip=<addr>/<bits>`, `ip6=...`): held
 * by that VM even though no private state lists it. `dhcp`, `auto` and `manual` hold nothing.
 */
export function vmConfigAddresses(config: Readonly<Record<string, unknown>>): Array<{ address: string; key: string }> {
  const out: Array<{ address: string; key: string }> = [];
  for (const [key, value] of Object.entries(config)) {
    if (!/^ipconfig\d+$/.test(key) || typeof value !== 'string') continue;
    for (const part of value.split(',')) {
      const m = /^(ip|ip6)=(.+)$/.exec(part.trim());
      const prefix = m?.[2] ? parsePrefix(m[2]) : undefined;
      if (prefix) out.push({ address: formatIp(prefix.ip), key });
    }
  }
  return out;
}

/** The pool has no address left. Not transient: the request is FAILED and retried later (an address may free up). */
export class PoolExhaustedError extends ProviderDataError {}

/** The lowest free address of the pool (range order, or list order); undefined when all are taken. */
function firstFree(p: ParsedPool, used: ReadonlySet<string>): Ip | undefined {
  if (p.list) return p.list.find((ip) => !used.has(formatIp(ip)));
  const range = p.range!;
  // Only the used addresses can be skipped, so this ends after at most used.size + 1 steps.
  for (let v = range.first; v <= range.last; v++) {
    const ip = { family: p.family, value: v };
    if (!used.has(formatIp(ip))) return ip;
  }
  return undefined;
}

/**
 * Allocates one address per static NIC, serialised inside the process: each allocation lists what every private
 * state holds (plus what this process handed out and may not see listed yet), chooses, records it in the request's
 * state and lets `persist` write that state to Omni before the next allocation starts. Addresses already recorded
 * in the state (a retry, a restart) are kept.
 */
export class AddressAllocator {
  readonly #book: AddressBook | undefined;
  /** Handed out by this process, by request, until the request is deprovisioned. */
  readonly #reserved = new Map<string, string[]>();
  #chain: Promise<unknown> = Promise.resolve();

  constructor(book: AddressBook | undefined) {
    this.#book = book;
  }

  /**
   * Makes sure `state.nicAddresses` holds an address for every static NIC of the request (and nothing else), written
   * through `persist` before it resolves. Throws PoolExhaustedError (naming the field) when a pool has none free.
   */
  async ensure(
    requestId: string,
    nics: readonly StaticNic[],
    state: MachineState,
    persist: () => Promise<void>,
    external?: ReadonlyMap<string, string>,
  ): Promise<NicAddress[]> {
    if (nics.length === 0 && state.nicAddresses.length === 0) return [];
    const run = this.#chain.then(() => this.#allocate(requestId, nics, state, persist, external));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Whether `ensure` would have to choose an address (a NIC without a valid recorded one, or a stale record). */
  needsAllocation(nics: readonly StaticNic[], state: MachineState): boolean {
    if (nics.length !== state.nicAddresses.length) return true;
    return nics.some((n) => {
      const mine = state.nicAddresses.find((a) => a.nic === n.nic);
      const ip = mine ? parseIp(mine.address.replace(/\/\d+$/, '')) : undefined;
      return !ip || !inPool(parsePool(n.field, n.pool), ip);
    });
  }

  async #allocate(
    requestId: string,
    nics: readonly StaticNic[],
    state: MachineState,
    persist: () => Promise<void>,
    external: ReadonlyMap<string, string> | undefined,
  ): Promise<NicAddress[]> {
    const kept: NicAddress[] = [];
    const missing: Array<StaticNic & { parsed: ParsedPool }> = [];
    for (const n of nics) {
      const parsed = parsePool(n.field, n.pool);
      const mine = state.nicAddresses.find((a) => a.nic === n.nic);
      const ip = mine ? parseIp(mine.address.replace(/\/\d+$/, '')) : undefined;
      if (mine && ip && inPool(parsed, ip)) kept.push(mine);
      else missing.push({ ...n, parsed });
    }
    const unchanged = missing.length === 0 && kept.length === state.nicAddresses.length;
    if (unchanged) {
      this.#reserved.set(requestId, heldAddresses(state));
      return state.nicAddresses;
    }
    if (this.#book === undefined) {
      throw new Error('address pools need the private state of every request (no address book configured)');
    }
    const holders = new Map<string, string>();
    for (const held of await this.#book.list()) {
      if (held.requestId === requestId) continue;
      for (const a of held.addresses) holders.set(a, held.requestId);
    }
    for (const [id, addresses] of this.#reserved) {
      if (id === requestId) continue;
      for (const a of addresses) if (!holders.has(a)) holders.set(a, id);
    }
    for (const [a, who] of external ?? []) if (!holders.has(a)) holders.set(a, who);
    const used = new Set(holders.keys());
    for (const k of kept) used.add(canonicalIp(k.address.replace(/\/\d+$/, '')));
    const result = [...kept];
    for (const n of missing) {
      const ip = firstFree(n.parsed, used);
      if (!ip) {
        const inUse = [...holders].filter(([a]) => {
          const x = parseIp(a);
          return x !== undefined && inPool(n.parsed, x);
        });
        const who = [...new Set(inUse.map(([, id]) => id))];
        const shown = who.slice(0, 5).join(', ') + (who.length > 5 ? `, and ${who.length - 5} more` : '');
        throw new PoolExhaustedError(
          `provider data: ${n.field}: pool ${poolLabel(n.pool)} has no free address (${inUse.length} in use by ${shown || 'no request'})`,
          n.field,
        );
      }
      used.add(formatIp(ip));
      result.push(
        create(NicAddressSchema, {
          nic: n.nic,
          address: `${formatIp(ip)}/${n.parsed.cidr.bits}`,
          mac: nicMac(requestId, n.nic),
        }),
      );
    }
    result.sort((a, b) => a.nic - b.nic);
    state.nicAddresses = result;
    // Reserved before the write: if the write's answer is lost, the address stays taken in this process too.
    this.#reserved.set(requestId, heldAddresses(state));
    await persist();
    return result;
  }

  /** Forgets this process's reservation of a request (its private state is about to be destroyed). */
  release(requestId: string): void {
    this.#reserved.delete(requestId);
  }
}

/**
 * What a request would get if no other request held an address (`plan`, which does not read Omni): the first
 * address of each pool and the MAC the provider would set.
 */
export function previewAddresses(requestId: string, nics: readonly StaticNic[]): NicAddress[] {
  return nics.map((n) => {
    const parsed = parsePool(n.field, n.pool);
    const ip = firstFree(parsed, new Set())!;
    return create(NicAddressSchema, { nic: n.nic, address: `${formatIp(ip)}/${parsed.cidr.bits}`, mac: nicMac(requestId, n.nic) });
  });
}

/** One static NIC as the network-config describes it. */
export interface NicNetwork {
  nic: number;
  mac: string;
  /** `address/bits`. */
  address: string;
  pool: AddressPool;
}

/** Pairs each static NIC with its allocated address (and the MAC it has); throws when one is missing. */
export function nicNetworks(nics: readonly StaticNic[], allocated: readonly NicAddress[], macOf?: (nic: number) => string | undefined): NicNetwork[] {
  return nics.map((n) => {
    const a = allocated.find((x) => x.nic === n.nic);
    if (!a) throw new Error(`net${n.nic} has no address allocated`);
    return { nic: n.nic, mac: (macOf?.(n.nic) ?? a.mac).toLowerCase(), address: a.address, pool: n.pool };
  });
}

/**
 * NoCloud network-config (version 2) for the static NICs; DHCP NICs are left out (Talos runs DHCP on them).
 * Each NIC is matched by its MAC (key `eth<N>` is Talos's fallback name: nocloud boots with net.ifnames=0). Only
 * fields Talos's nocloud parser reads are written, plus `nameservers.search` (parsed, not applied by Talos).
 */
export function renderNetworkConfig(nics: readonly NicNetwork[]): string {
  const ethernets: Record<string, unknown> = {};
  const dnsWritten = new Set<string>();
  // Talos concatenates the DNS servers of every ethernet, in key order: each server is written once.
  const ordered = [...nics].sort((a, b) => (`eth${a.nic}` < `eth${b.nic}` ? -1 : 1));
  for (const n of ordered) {
    const family = parsePrefix(n.address)?.ip.family ?? 4;
    const eth: Record<string, unknown> = { match: { macaddress: n.mac } };
    eth.addresses = [n.address];
    if (n.pool.gateway !== undefined) eth[family === 4 ? 'gateway4' : 'gateway6'] = canonicalIp(n.pool.gateway);
    if (n.pool.mtu !== undefined) eth.mtu = n.pool.mtu;
    const dns = n.pool.dns_servers.map(canonicalIp).filter((d) => !dnsWritten.has(d));
    dns.forEach((d) => dnsWritten.add(d));
    if (dns.length > 0 || n.pool.search_domains.length > 0) {
      eth.nameservers = {
        ...(dns.length > 0 ? { addresses: dns } : {}),
        ...(n.pool.search_domains.length > 0 ? { search: [...n.pool.search_domains] } : {}),
      };
    }
    if (n.pool.routes.length > 0) {
      // table 254 (main) spelled out: Talos before v1.9 took an unset table as 0.
      eth.routes = n.pool.routes.map((r) => ({ to: formatPrefix(parsePrefix(r.to)!), via: canonicalIp(r.via), table: 254 }));
    }
    ethernets[`eth${n.nic}`] = eth;
  }
  // Strings double-quoted (a MAC of digits only is a number to YAML 1.1 readers); numbers plain (Talos rejects a
  // quoted version or mtu).
  return stringifyYaml({ version: 2, ethernets }, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });
}

/** The first Talos version that reads `machine.network.searchDomains` (v1alpha1 machine config, 60e4561b4). */
export const SEARCH_DOMAINS_MIN_TALOS = [1, 9] as const;

/**
 * Talos never applies search domains from network-config: they reach the machine as a machine-config patch
 * (`machine.network.searchDomains`, Talos ≥ 1.9). Returns the patch for the request's search domains (every pool's,
 * in order, once each), undefined when there are none, or `tooOld` when the Talos version cannot take it.
 */
export function searchDomainsPatch(nics: readonly StaticNic[], talosVersion: string): { name: string; data: string } | 'tooOld' | undefined {
  const domains = [...new Set(nics.flatMap((n) => n.pool.search_domains.map((d) => d.replace(/\.$/, ''))))];
  if (domains.length === 0) return undefined;
  const m = /^v?(\d+)\.(\d+)/.exec(talosVersion);
  const [major, minor] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (major < SEARCH_DOMAINS_MIN_TALOS[0] || (major === SEARCH_DOMAINS_MIN_TALOS[0] && minor < SEARCH_DOMAINS_MIN_TALOS[1])) return 'tooOld';
  return {
    name: 'search-domains',
    data: stringifyYaml({ machine: { network: { searchDomains: domains } } }, { lineWidth: 0 }),
  };
}

/** `net0 10.0.0.11/24, net1 192.168.5.20/24`: the request's static addresses, for status and logs. */
export function describeAddresses(addresses: readonly NicAddress[]): string {
  return addresses.map((a) => `net${a.nic} ${a.address}`).join(', ');
}
