// IPv4/IPv6 addresses and prefixes as numbers, for address pools: parse strictly (what Go's netip.ParseAddr and
// ParsePrefix accept, which is what Talos uses on network-config), compare, step and print canonically.

export type Family = 4 | 6;

export interface Ip {
  family: Family;
  /** The address as an unsigned number (32 or 128 bits). */
  value: bigint;
}

export interface Prefix {
  /** The address as written (host bits may be set: `10.0.0.7/24`). */
  ip: Ip;
  bits: number;
}

const V4_OCTET = /^(0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseV4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    // No leading zeros: Go's netip refuses them (they once meant octal).
    if (!V4_OCTET.test(p) || Number(p) > 255) return undefined;
    v = (v << 8n) | BigInt(Number(p));
  }
  return v;
}

function parseV6(text: string): bigint | undefined {
  if (text.includes('%')) return undefined; // zones are not addresses of a pool
  let head = text;
  let tailV4: bigint | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tailV4 = parseV4(text.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const split = (s: string): string[] | undefined => {
    if (s === '') return [];
    const groups = s.split(':');
    return groups.every((g) => V6_GROUP.test(g)) ? groups : undefined;
  };
  const left = split(halves[0] ?? '');
  const right = halves.length === 2 ? split(halves[1] ?? '') : [];
  if (left === undefined || right === undefined) return undefined;
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...right];
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4;
  return v;
}

/** Parses an IPv4 or IPv6 address; undefined when it is not one. */
export function parseIp(text: string): Ip | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  if (text.includes(':')) {
    const v = parseV6(text);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseV4(text);
  return v === undefined ? undefined : { family: 4, value: v };
}

/** Parses `address/bits`; undefined when it is not a prefix. */
export function parsePrefix(text: string): Prefix | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(bitsText)) return undefined;
  const bits = Number(bitsText);
  if (bits > bitLength(ip.family)) return undefined;
  return { ip, bits };
}

export function bitLength(family: Family): number {
  return family === 4 ? 32 : 128;
}

/** First and last address of the prefix's network. */
export function prefixBounds(p: Prefix): { first: bigint; last: bigint } {
  const hostBits = BigInt(bitLength(p.ip.family) - p.bits);
  const size = 1n << hostBits;
  const first = (p.ip.value >> hostBits) << hostBits;
  return { first, last: first + size - 1n };
}

export function prefixContains(p: Prefix, ip: Ip): boolean {
  if (ip.family !== p.ip.family) return false;
  const { first, last } = prefixBounds(p);
  return ip.value >= first && ip.value <= last;
}

/** Whether a host may take `ip` in `p`: not the IPv4 network or broadcast address (except in /31 and /32). */
export function usableInPrefix(p: Prefix, ip: Ip): boolean {
  if (!prefixContains(p, ip)) return false;
  if (p.ip.family === 6 || p.bits >= 31) return true;
  const { first, last } = prefixBounds(p);
  return ip.value !== first && ip.value !== last;
}

/** Canonical text: dotted quad, or RFC 5952 (lower case, longest run of zero groups as `::`). */
export function formatIp(ip: Ip): string {
  if (ip.family === 4) {
    const v = Number(ip.value);
    return [24, 16, 8, 0].map((s) => (v >>> s) & 255).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatPrefix(p: Prefix): string {
  return `${formatIp(p.ip)}/${p.bits}`;
}

/** Canonical text of an address written in any accepted form, or the text itself when it is not an address. */
export function canonicalIp(text: string): string {
  const ip = parseIp(text);
  return ip ? formatIp(ip) : text;
}
