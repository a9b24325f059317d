// The boundary values of every provider-data field, enumerated from the published schema: each value past a bound
// (and each hostile string) is refused with a message that names the field, both where the controller parses the
// request and where the first step validates it, and Proxmox hears nothing: the simulator sees no call at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ProviderDataError } from '../../src/provision/errors.js';
import { POOL_LIMITS } from '../../src/provision/addresses.js';
import { LIMITS } from '../../src/provision/limits.js';
import { parseProviderData, providerDataSchema, validateProviderData, type ProviderData } from '../../src/provision/providerData.js';
import { emptyMachineState } from '../../src/provision/machineState.js';
import { RequestRefused } from '../../src/provision/validateRequest.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { silentLogger } from '../../src/log.js';
import { JOIN_CONFIG, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

interface Leaf {
  type?: string;
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  pattern?: string;
  enum?: readonly unknown[];
  maxItems?: number;
  items?: Leaf & { properties?: Record<string, Leaf> };
  properties?: Record<string, Leaf>;
}

const BASE = { cores: 2, memory: 4096, disk_size: 20, storage_selector: 'name == "local-lvm"' };

/** A valid value per field (list items included), so that a case changes exactly one thing. */
const EXAMPLE: Record<string, unknown> = {
  node: 'pve1',
  allowed_nodes: 'pve1',
  network_bridge: 'vmbr0',
  bridge: 'vmbr1',
  tags: 'talos',
  pool: 'omni',
  mapping: 'gpu-a100',
  mdev: 'nvidia-180',
  cpu_type: 'host',
  description: 'talos',
  vga: 'std',
  vmid_range: '1000-1099',
  storage_selector: 'true',
  additional_disks: { disk_size: 10, storage_selector: 'true' },
  additional_nics: { bridge: 'vmbr1' },
  pci_devices: { mapping: 'gpu-a100' },
  rules: 'omni-spread',
  node_affinity_nodes: 'pve1',
  comment: 'talos',
  usb_devices: { mapping: 'rtl-sdr' },
};

interface Case {
  name: string;
  field: string;
  data: Record<string, unknown>;
  /** How the message starts when it is not `provider data: <field>: ` (a missing or unknown key of a block). */
  prefix?: string;
}

/** Puts `value` at `field` (`additional_disks[0].disk_size`, or inside an object: `ha.rules[0]`) of a copy of BASE. */
function withValue(field: string, value: unknown): Record<string, unknown> {
  const inObject = /^([a-z_]+)\.(.+)$/.exec(field);
  if (inObject && !/^[a-z_]+\[/.test(field)) {
    const inner = withValue(inObject[2]!, value);
    const data: Record<string, unknown> = structuredClone(BASE);
    const key = /^[a-z_]+/.exec(inObject[2]!)![0];
    data[inObject[1]!] = { [key]: inner[key] };
    return data;
  }
  const data: Record<string, unknown> = structuredClone(BASE);
  const m = /^([a-z_]+)(?:\[0\](?:\.([a-z0-9_]+))?)?$/.exec(field);
  if (!m?.[1]) throw new Error(`bad field ${field}`);
  const [, top, sub] = m;
  if (field === top) data[top] = value;
  else if (sub === undefined) data[top] = [value];
  else data[top] = [{ ...(EXAMPLE[top] as object), [sub]: value }];
  return data;
}

const show = (v: unknown): string => {
  const s = typeof v === 'string' ? JSON.stringify(v) : String(v);
  return s.length > 30 ? `${s.slice(0, 30)}… (${typeof v === 'string' ? v.length : ''} chars)` : s;
};

/** Strings that try to leave their property string or carry control bytes. */
const HOSTILE = (ex: string): string[] => [`${ex},firewall=0`, `${ex}=x`, `${ex};x`, `${ex}\n`, `${ex}\0`, `${ex} x`, `${ex}/x`, ''];

function leafCases(field: string, key: string, s: Leaf): Case[] {
  const out: Case[] = [];
  const add = (label: string, value: unknown): void => {
    out.push({ name: `${field} = ${label}`, field, data: withValue(field, value) });
  };
  if (s.type === 'integer') {
    const values = new Set<number>([s.minimum! - 1, s.maximum! + 1, 2 ** 53 + 1, 2 ** 63, 2 ** 64, 1e300, -1e300, 1.5]);
    for (const v of values) add(show(v), v);
    add('"1" (a string)', '1');
  } else if (s.type === 'boolean') {
    add('"yes"', 'yes');
    add('1', 1);
  } else if (s.enum) {
    add('"bogus"', 'bogus');
    add('512', 512);
    add('"" (empty)', '');
  } else if (s.type === 'string') {
    add(`${s.maxLength! + 1} characters`, 'a'.repeat(s.maxLength! + 1));
    add('70000 characters', 'a'.repeat(70_000));
    const ex = String(EXAMPLE[key]);
    if (key === 'storage_selector') {
      // The evidence: each of these was compiled only at VM creation, after the ISO download.
      for (const v of [',', '=', '\n', '\0', `${'('.repeat(5000)}true${')'.repeat(5000)}`, `${'('.repeat(300)}true${')'.repeat(300)}`, 'name', 'name == 1', 'x'])
        add(show(v), v);
    } else if (key === 'description' || key === 'comment') {
      for (const v of [`${ex}\0`, `${ex}\x1b[31m`, `${ex}\r`]) add(show(v), v);
    } else if (key === 'cpu_type') {
      for (const v of ['host,flags=+avx2', 'host,flags=+vmx', 'host,reported-model=EPYC', 'host,args=-x', 'host,,', 'host\0', 'host\n', 'host flags']) add(show(v), v);
    } else {
      for (const v of HOSTILE(ex)) add(show(v), v);
    }
  }
  return out;
}

function arrayCases(field: string, s: Leaf): Case[] {
  const out: Case[] = [];
  const key = field.replace(/^.*\./, '');
  const ex = EXAMPLE[key];
  const items = Array.from({ length: s.maxItems! + 1 }, (_, i) => (key === 'allowed_nodes' ? `pve${i + 1}` : ex));
  out.push({ name: `${field} with ${s.maxItems! + 1} entries`, field, data: { ...BASE, [field]: items } });
  out.push({ name: `${field} not a list`, field, data: { ...BASE, [field]: 'x' } });
  return out;
}

function propertyCases(properties: Record<string, Leaf>, prefix: string): Case[] {
  const out: Case[] = [];
  for (const [key, s] of Object.entries(properties)) {
    const field = `${prefix}${key}`;
    // An address pool's keys depend on each other (range inside cidr, ...): addressPoolCases covers them.
    if (key === 'address_pool') continue;
    if (s.type === 'object' && s.properties) {
      out.push(...propertyCases(s.properties, `${field}.`));
      out.push({ name: `${field} not an object`, field, data: { ...BASE, [key]: 'x' } });
      out.push({ name: `${field} with an unknown key`, field: `${field}.nodes`, data: { ...BASE, [key]: { nodes: ['pve1'] } } });
    } else if (s.type === 'array') {
      out.push(...arrayCases(field, s).map((c) => ({ ...c, data: withValue(field, (c.data as Record<string, unknown>)[field]) })));
      const items = s.items!;
      if (items.properties) {
        for (const [sub, ss] of Object.entries(items.properties)) out.push(...leafCases(`${field}[0].${sub}`, sub, ss));
      } else {
        out.push(...leafCases(`${field}[0]`, key, items));
      }
    } else {
      out.push(...leafCases(field, key, s));
    }
  }
  return out;
}

function allCases(): Case[] {
  const out: Case[] = propertyCases(providerDataSchema.properties as Record<string, Leaf>, '');
  // Rules across fields.
  out.push({ name: 'cores 256 on the default machine (pc takes 255 vCPUs)', field: 'cores', data: { ...BASE, cores: 256 } });
  out.push({ name: 'cores 128 × sockets 2 on pc', field: 'sockets', data: { ...BASE, cores: 128, sockets: 2 } });
  out.push({ name: 'cores 4096 × sockets 2 on q35', field: 'sockets', data: { ...BASE, machine_type: 'q35', cores: 4096, sockets: 2 } });
  out.push({ name: 'hugepages without numa', field: 'hugepages', data: { ...BASE, hugepages: '1GB' } });
  out.push({ name: 'pcie without q35', field: 'pci_devices[0].pcie', data: { ...BASE, pci_devices: [{ mapping: 'gpu-a100', pcie: true }] } });
  out.push({ name: 'node outside allowed_nodes', field: 'node', data: { ...BASE, node: 'pve3', allowed_nodes: ['pve1'] } });
  out.push({ name: 'an unknown key', field: 'corse', data: { ...BASE, corse: 2 } });
  out.push({ name: 'usb_devices with 15 entries (upstream allows 15; PVE has usb0..usb13)', field: 'usb_devices', data: { ...BASE, usb_devices: Array.from({ length: 15 }, () => ({ mapping: 'rtl-sdr' })) } });
  // vmid_range: two PVE VMIDs (100..999999999), start <= end.
  for (const v of ['99-200', '100-1000000000', '200-100', '0100-200', '100', '100-', '-100', '100 - 200', '100..200', '100-200-300', '1e3-2e3', '+100-200']) {
    out.push({ name: `vmid_range = ${JSON.stringify(v)}`, field: 'vmid_range', data: { ...BASE, vmid_range: v } });
  }
  out.push({ name: 'vmid_range as a number', field: 'vmid_range', data: { ...BASE, vmid_range: 100 } });
  // vga against qemu-server's pve-qm-vga: type enum (case-sensitive), memory 4..512, clipboard only vnc, keys once.
  for (const v of ['STD', 'vga', 'std,memory=3', 'std,memory=513', 'std,memory=-4', 'std,memory=8.5', 'memory=0', 'std,clipboard=spice',
    'std,type=qxl', 'std,std', 'std,memory=8,memory=16', 'std,clipboard=vnc,clipboard=vnc', 'std,', ',std', 'std,foo=1', 'type=', 'memory=',
    'type=std,memory=512,clipboard=vnc,x', 'ｓｔｄ']) {
    out.push({ name: `vga = ${JSON.stringify(v)}`, field: 'vga', data: { ...BASE, vga: v } });
  }
  out.push(...addressPoolCases('address_pool'), ...addressPoolCases('additional_nics[0].address_pool'));
  return out;
}

/** A valid pool (IPv4), and a copy of BASE with `pool` at `at` (net0's block or the first additional NIC's). */
const POOL = { cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.20', gateway: '10.0.0.1', dns_servers: ['1.1.1.1', '1.0.0.1'] };
function withPool(at: string, pool: Record<string, unknown>): Record<string, unknown> {
  if (at === 'address_pool') return { ...structuredClone(BASE), address_pool: pool };
  return { ...structuredClone(BASE), additional_nics: [{ bridge: 'vmbr1', address_pool: pool }] };
}

/** Every bound of an address pool (schema and run-time rules), at one place it can be given. */
function addressPoolCases(at: string): Case[] {
  const out: Case[] = [];
  const add = (name: string, field: string, pool: Record<string, unknown>, prefix?: string): void => {
    out.push({ name: `${at}: ${name}`, field: field === '' ? at : `${at}.${field}`, data: withPool(at, pool), ...(prefix ? { prefix } : {}) });
  };
  const without = (k: string): Record<string, unknown> => Object.fromEntries(Object.entries(POOL).filter(([x]) => x !== k));
  add('no cidr', 'cidr', without('cidr'), `provider data: ${at}: missing required key "cidr"`);
  add('neither range nor addresses', '', without('range'));
  add('range and addresses', '', { ...POOL, addresses: ['10.0.0.30'] });
  add('an unknown key', 'nameservers', { ...POOL, nameservers: ['1.1.1.1'] }, `provider data: ${at}: unknown key "nameservers"`);
  add('not a mapping', '', 'x' as unknown as Record<string, unknown>);
  for (const v of ['10.0.0.0/33', '10.0.0.256/24', '10.0.0.5/24', '0.0.0.0/0', '10.0.0.0/24,x', `${'1'.repeat(50)}`, '10.0.0.0/24\n', '']) {
    add(`cidr ${show(v)}`, 'cidr', { ...POOL, cidr: v });
  }
  for (const v of ['10.0.0.10-10.0.1.20', '10.0.0.0-10.0.0.20', '10.0.0.10-10.0.0.255', '10.0.0.20-10.0.0.10', '10.0.0.10', '2001:db8::1-2001:db8::2', `10.0.0.10-${'1'.repeat(90)}`]) {
    add(`range ${show(v)}`, 'range', { ...POOL, range: v });
  }
  const list = without('range');
  add(`addresses with ${POOL_LIMITS.addresses.max + 1} entries`, 'addresses', {
    ...list,
    cidr: '10.0.0.0/16',
    gateway: '10.0.255.254',
    addresses: Array.from({ length: POOL_LIMITS.addresses.max + 1 }, (_, i) => `10.0.${1 + (i >> 8)}.${i & 255}`),
  });
  add('addresses empty', 'addresses', { ...list, addresses: [] });
  add('addresses[1] outside cidr', 'addresses[1]', { ...list, addresses: ['10.0.0.30', '10.0.1.30'] });
  add('addresses[0] the broadcast address', 'addresses[0]', { ...list, addresses: ['10.0.0.255'] });
  add('addresses[0] not an address', 'addresses[0]', { ...list, addresses: ['10.0.0.30;x'] });
  for (const v of ['10.0.1.1', '10.0.0.15', '10.0.0.0', 'gw', '10.0.0.1\n']) add(`gateway ${show(v)}`, 'gateway', { ...POOL, gateway: v });
  add(`dns_servers with ${POOL_LIMITS.dns_servers.max + 1} entries`, 'dns_servers', {
    ...POOL,
    dns_servers: Array.from({ length: POOL_LIMITS.dns_servers.max + 1 }, (_, i) => `192.0.2.${i + 1}`),
  });
  for (const v of ['1.1.1', '1.1.1.1 ', 'one.one.one.one', '1.1.1.1,8.8.8.8']) add(`dns_servers[0] ${show(v)}`, 'dns_servers[0]', { ...POOL, dns_servers: [v] });
  add(`search_domains with ${POOL_LIMITS.search_domains.max + 1} entries`, 'search_domains', {
    ...POOL,
    search_domains: Array.from({ length: POOL_LIMITS.search_domains.max + 1 }, (_, i) => `d${i}.example`),
  });
  for (const v of ['a'.repeat(POOL_LIMITS.domain.max + 1), 'lan example', '-lan.example', 'lan..example', '']) {
    add(`search_domains[0] ${show(v)}`, 'search_domains[0]', { ...POOL, search_domains: [v] });
  }
  for (const v of [575, 65536, 1.5, 2 ** 64, '1500']) add(`mtu ${show(v)}`, 'mtu', { ...POOL, mtu: v });
  add('mtu 1279 on IPv6', 'mtu', { cidr: '2001:db8::/64', range: '2001:db8::10-2001:db8::20', mtu: 1279 });
  add(`routes with ${POOL_LIMITS.routes.max + 1} entries`, 'routes', {
    ...POOL,
    routes: Array.from({ length: POOL_LIMITS.routes.max + 1 }, (_, i) => ({ to: `192.168.${i}.0/24`, via: '10.0.0.254' })),
  });
  add('routes[0] a default route', 'routes[0].to', { ...POOL, routes: [{ to: '0.0.0.0/0', via: '10.0.0.254' }] });
  add('routes[0].via outside cidr', 'routes[0].via', { ...POOL, routes: [{ to: '192.168.0.0/16', via: '10.9.0.1' }] });
  add('routes[0] without via', 'routes[0].via', { ...POOL, routes: [{ to: '192.168.0.0/16' }] }, `provider data: ${at}.routes[0]: missing required key "via"`);
  return out;
}

const CASES = allCases();

let h: PveHarness;
beforeAll(async () => {
  h = await startPveHarness();
});
afterAll(async () => {
  await h.close();
});

describe('every field is bounded in the published schema', () => {
  it('integers have a maximum, strings a maxLength or an enum, lists a maxItems', () => {
    const unbounded: string[] = [];
    const visit = (path: string, s: Leaf): void => {
      if (s.type === 'integer' && s.maximum === undefined) unbounded.push(path);
      if (s.type === 'string' && s.maxLength === undefined && s.enum === undefined) unbounded.push(path);
      if (s.type === 'array') {
        if (s.maxItems === undefined) unbounded.push(path);
        if (s.items?.properties) for (const [k, v] of Object.entries(s.items.properties)) visit(`${path}[].${k}`, v);
        else if (s.items) visit(`${path}[]`, s.items);
      }
      if (s.type === 'object' && s.properties) for (const [k, v] of Object.entries(s.properties)) visit(`${path}.${k}`, v);
    };
    for (const [k, v] of Object.entries(providerDataSchema.properties as Record<string, Leaf>)) visit(k, v);
    expect(unbounded).toEqual([]);
  });

  it('the largest valid values pass', () => {
    const max = (n: number) => 'a'.repeat(n);
    expect(() =>
      validateProviderData({
        ...BASE,
        machine_type: 'q35',
        cores: 4096,
        sockets: 1,
        memory: LIMITS.memory.max,
        disk_size: LIMITS.disk_size.max,
        vlan: 4094,
        node: max(LIMITS.node.max),
        network_bridge: max(LIMITS.bridge.max),
        tags: Array.from({ length: LIMITS.tags.max }, () => max(LIMITS.tag.max)),
        pool: max(LIMITS.pool.max),
        description: `${max(LIMITS.description.max - 2)}\n\t`,
        cpu_type: 'host,flags=+aes;+nested-virt',
        vga: 'type=virtio-gl,memory=512,clipboard=vnc',
        vmid_range: '100-999999999',
        storage_selector: `${' '.repeat(LIMITS.storage_selector.max - 4)}true`,
        additional_disks: Array.from({ length: LIMITS.additional_disks.max }, () => ({ disk_size: LIMITS.disk_size.max, storage_selector: 'true' })),
        additional_nics: Array.from({ length: LIMITS.additional_nics.max }, () => ({ bridge: 'vmbr1', vlan: 4094 })),
        pci_devices: Array.from({ length: LIMITS.pci_devices.max }, () => ({ mapping: max(LIMITS.mapping.max), mdev: max(LIMITS.mdev.max) })),
        ha: {
          state: 'ignored',
          comment: `${max(LIMITS.comment.max - 1)}\t`,
          max_restart: LIMITS.max_restart.max,
          max_relocate: LIMITS.max_relocate.max,
          failback: false,
          rules: Array.from({ length: LIMITS.rules.max }, (_, i) => `r${i}${max(LIMITS.ha_rule.max - 4)}`),
          node_affinity_nodes: Array.from({ length: LIMITS.node_affinity_nodes.max }, () => max(LIMITS.node.max)),
          node_affinity_strict: true,
          resource_affinity: 'positive',
        },
        usb_devices: Array.from({ length: LIMITS.usb_devices.max }, () => ({ mapping: max(LIMITS.mapping.max), usb3: true })),
      }),
    ).not.toThrow();
    expect(validateProviderData({ ...BASE, cores: 255 }).cores).toBe(255);
    for (const vga of ['std', 'none', 'serial0', 'qxl4', 'memory=4', 'clipboard=vnc,memory=512', 'memory=16,type=virtio,clipboard=vnc', 'vmware,memory=99']) {
      expect(validateProviderData({ ...BASE, vga }).vga).toBe(vga);
    }
    // The largest address pool: every list at its bound, the largest MTU.
    expect(() =>
      validateProviderData({
        ...BASE,
        address_pool: {
          cidr: '10.0.0.0/8',
          addresses: Array.from({ length: POOL_LIMITS.addresses.max }, (_, i) => `10.1.${i >> 8}.${i & 255}`),
          gateway: '10.0.0.1',
          dns_servers: Array.from({ length: POOL_LIMITS.dns_servers.max }, (_, i) => `192.0.2.${i + 1}`),
          search_domains: Array.from({ length: POOL_LIMITS.search_domains.max }, (_, i) => `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.d${i}x${'e'.repeat(56)}`),
          mtu: 65535,
          routes: Array.from({ length: POOL_LIMITS.routes.max }, (_, i) => ({ to: `192.168.${i}.0/24`, via: '10.0.0.254' })),
        },
      }),
    ).not.toThrow();
    expect(validateProviderData({ ...BASE, hugepages: 1024, numa: true }).hugepages).toBe('1024');
  });
});

describe(`${CASES.length} values past a bound: refused, naming the field, with no call to Proxmox`, () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    // Where the controller parses the MachineRequest (YAML as Omni stores it): stage FAILED, no step runs.
    let parsed: unknown;
    try {
      parsed = parseProviderData(stringify(c.data));
    } catch (err) {
      parsed = err;
    }
    expect(parsed).toBeInstanceOf(ProviderDataError);
    const pe = parsed as ProviderDataError;
    expect(pe.field).toBe(c.field);
    const unknownInside = /^(.+)\.([a-z_]+)$/.exec(c.field);
    expect(
      pe.message.startsWith(c.prefix ?? `provider data: ${c.field}: `) ||
        pe.message.startsWith(`provider data: unknown key "${c.field}"`) ||
        (unknownInside !== null && pe.message.startsWith(`provider data: ${unknownInside[1]}: unknown key "${unknownInside[2]}"`)),
      pe.message,
    ).toBe(true);
    expect(pe.message.length).toBeLessThan(1200);
    // eslint-disable-next-line no-control-regex
    expect(pe.message).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);

    // Where the first step validates a request built by any other caller: refused before the first GET.
    const before = h.sim.requests.length;
    const step = h.provisioner.steps[0]!;
    const err = await step
      .run({
        request: { id: 'req-bounds', talosVersion: 'v1.11.5', providerData: c.data as unknown as ProviderData },
        state: emptyMachineState(),
        joinConfig: JOIN_CONFIG,
        log: silentLogger,
        checkpoint: async () => {},
      } as Parameters<typeof step.run>[0])
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(RequestRefused);
    expect((err as RequestRefused).message).toBe(pe.message);
    expect((err as RequestRefused).field).toBe(c.field);
    expect(h.sim.requests.length).toBe(before);
    expect(writeCalls(h.sim)).toEqual([]);
  });
});
