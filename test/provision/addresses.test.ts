// Static addresses: IP parsing, pool validation, the MAC a static NIC gets, allocation (lowest free, shared across
// pools, kept on retry, serialised under concurrency, exhaustion) and the network-config Talos reads.
import { readFileSync } from 'node:fs';
import { create } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { NicAddressSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import {
  AddressAllocator,
  heldAddresses,
  nicMac,
  nicNetworks,
  PoolExhaustedError,
  renderNetworkConfig,
  searchDomainsPatch,
  staticNics,
  vmConfigAddresses,
  type AddressBook,
  type AddressPool,
} from '../../src/provision/addresses.js';
import { ProviderDataError } from '../../src/provision/errors.js';
import { formatIp, parseIp, parsePrefix } from '../../src/provision/ip.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { parseProviderData } from '../../src/provision/providerData.js';
import { pveFormat } from '../../src/proxmox/propertyString.js';

const BASE = 'cores: 2\nmemory: 4096\ndisk_size: 20\nstorage_selector: name == "local-lvm"\n';

function refusal(yamlText: string): ProviderDataError {
  try {
    parseProviderData(BASE + yamlText);
  } catch (err) {
    expect(err).toBeInstanceOf(ProviderDataError);
    return err as ProviderDataError;
  }
  throw new Error(`expected a refusal of:\n${yamlText}`);
}

function pool(p: Partial<AddressPool> & { cidr: string }): AddressPool {
  return { dns_servers: [], search_domains: [], routes: [], ...p };
}

describe('IP addresses', () => {
  it('parses and prints IPv4 and IPv6 canonically', () => {
    expect(formatIp(parseIp('10.0.0.1')!)).toBe('10.0.0.1');
    expect(formatIp(parseIp('2001:DB8:0:0:0:0:0:1')!)).toBe('2001:db8::1');
    expect(formatIp(parseIp('2001:db8:0:1:0:0:0:0')!)).toBe('2001:db8:0:1::');
    expect(formatIp(parseIp('::ffff:10.0.0.1')!)).toBe('::ffff:a00:1');
    expect(formatIp(parseIp('::')!)).toBe('::');
    expect(formatIp(parseIp('1:0:0:2:0:0:0:3')!)).toBe('1:0:0:2::3');
  });

  it('refuses what Go netip refuses', () => {
    for (const bad of ['10.0.0', '10.0.0.256', '010.0.0.1', '10.0.0.1.2', '1::2::3', '1:2:3:4:5:6:7:8:9', 'fe80::1%eth0', '12345::', '', ' 10.0.0.1']) {
      expect(parseIp(bad), bad).toBeUndefined();
    }
    for (const bad of ['10.0.0.0', '10.0.0.0/33', '10.0.0.0/024', '2001:db8::/129', '10.0.0.0/']) {
      expect(parsePrefix(bad), bad).toBeUndefined();
    }
  });
});

describe('provider data: address_pool', () => {
  it('accepts a pool on net0 and one on an additional NIC, with defaults', () => {
    const d = parseProviderData(
      `${BASE}address_pool:\n  cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  gateway: 10.0.0.1\n  dns_servers: [1.1.1.1, 1.0.0.1]\n` +
        'additional_nics:\n  - bridge: vmbr1\n    address_pool:\n      cidr: 2001:db8:5::/64\n      addresses: ["2001:db8:5::10"]\n      mtu: 9000\n',
    );
    expect(staticNics(d).map((n) => [n.nic, n.field])).toEqual([
      [0, 'address_pool'],
      [1, 'additional_nics[0].address_pool'],
    ]);
    expect(d.address_pool?.search_domains).toEqual([]);
    expect(d.address_pool?.routes).toEqual([]);
  });

  it('DHCP stays the default: no pool, no static NIC', () => {
    expect(staticNics(parseProviderData(BASE))).toEqual([]);
  });

  const cases: Array<[string, string, RegExp]> = [
    ['cidr: 10.0.0.0/33\n  range: 10.0.0.10-10.0.0.12', 'address_pool.cidr', /not a valid CIDR/],
    ['cidr: 10.0.0.5/24\n  range: 10.0.0.10-10.0.0.12', 'address_pool.cidr', /host bits set \(did you mean 10\.0\.0\.0\/24\?\)/],
    ['cidr: 10.0.0.0/24', 'address_pool', /range or addresses/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  addresses: [10.0.0.20]', 'address_pool', /not both/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.1.12', 'address_pool.range', /10\.0\.1\.12 is outside cidr 10\.0\.0\.0\/24/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.0-10.0.0.12', 'address_pool.range', /network address/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.255', 'address_pool.range', /broadcast address/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.12-10.0.0.10', 'address_pool.range', /comes after/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.300-10.0.0.310', 'address_pool.range', /not a valid IP address/],
    ['cidr: 10.0.0.0/24\n  range: 2001:db8::1-2001:db8::2', 'address_pool.range', /IPv6 but cidr/],
    ['cidr: 10.0.0.0/24\n  addresses: [10.0.0.10, 10.0.1.10]', 'address_pool.addresses[1]', /outside cidr/],
    ['cidr: 2001:db8::/64\n  addresses: ["2001:db8::a", "2001:db8:0::a"]', 'address_pool.addresses[1]', /same address as addresses\[0\]/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  gateway: 10.0.1.1', 'address_pool.gateway', /outside cidr/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  gateway: 10.0.0.11', 'address_pool.gateway', /pool's own addresses/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  dns_servers: [1.1.1.1, 1.1.1]', 'address_pool.dns_servers[1]', /not a valid IP address/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  dns_servers: ["1.1.1.1,8.8.8.8"]', 'address_pool.dns_servers[0]', /not a valid IP address/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  mtu: 575', 'address_pool.mtu', /must be >= 576/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  mtu: 65536', 'address_pool.mtu', /65535/],
    ['cidr: 2001:db8::/64\n  range: 2001:db8::10-2001:db8::20\n  mtu: 1279', 'address_pool.mtu', /1280, the smallest MTU IPv6 allows/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  search_domains: ["lan example"]', 'address_pool.search_domains[0]', /not a valid DNS name/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  routes: [{to: 0.0.0.0/0, via: 10.0.0.1}]', 'address_pool.routes[0].to', /set gateway instead/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  routes: [{to: 192.168.0.0/16, via: 10.9.0.1}]', 'address_pool.routes[0].via', /outside cidr/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  routes: [{to: 192.168.0.1/16, via: 10.0.0.1}]', 'address_pool.routes[0].to', /host bits/],
    ['cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  nameservers: [1.1.1.1]', 'address_pool', /: unknown key "nameservers"/],
  ];
  for (const [block, field, message] of cases) {
    it(`refuses ${block.replace(/\n\s*/g, '; ')} naming ${field}`, () => {
      const err = refusal(`address_pool:\n  ${block}\n`);
      expect(err.message).toContain(`provider data: ${field}`);
      expect(err.message).toMatch(message);
    });
  }

  it('refuses a default gateway on two NICs of one family', () => {
    const err = refusal(
      'address_pool:\n  cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  gateway: 10.0.0.1\n' +
        'additional_nics:\n  - bridge: vmbr1\n    address_pool:\n      cidr: 10.1.0.0/24\n      range: 10.1.0.10-10.1.0.12\n      gateway: 10.1.0.1\n',
    );
    expect(err.message).toMatch(/^provider data: additional_nics\[0\]\.address_pool\.gateway: address_pool\.gateway already sets the IPv4 default gateway/);
  });
});

describe('nicMac', () => {
  it('is a locally administered unicast MAC Proxmox accepts, stable per request and NIC', () => {
    const macs = new Set<string>();
    for (let r = 0; r < 200; r++) {
      for (let nic = 0; nic < 3; nic++) {
        const mac = nicMac(`req-${r}`, nic);
        expect(mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
        const first = parseInt(mac.slice(0, 2), 16);
        expect(first & 0x02).toBe(2);
        expect(first & 0x01).toBe(0);
        expect(pveFormat.macAddress(mac)).toBe(true);
        macs.add(mac);
      }
    }
    expect(macs.size).toBe(600);
    expect(nicMac('req-1', 0)).toBe(nicMac('req-1', 0));
  });
});

/** An Omni stand-in: private states by request; `persist` stores a copy, `list` reads what was stored. */
class FakeOmni implements AddressBook {
  readonly states = new Map<string, MachineState>();
  lists = 0;
  async list() {
    this.lists++;
    // Yield like an RPC would, so concurrent allocations interleave if nothing serialises them.
    await new Promise((r) => setImmediate(r));
    return [...this.states].map(([requestId, s]) => ({ requestId, addresses: heldAddresses(s) }));
  }
  persist(id: string, state: MachineState): () => Promise<void> {
    return async () => {
      await new Promise((r) => setImmediate(r));
      this.states.set(id, structuredClone(state));
    };
  }
}

const net0 = (p: AddressPool) => staticNics({ address_pool: p, additional_nics: [] });

describe('AddressAllocator', () => {
  it('hands out the lowest free address, records address/bits and the MAC, and keeps it on retry', async () => {
    const omni = new FakeOmni();
    const alloc = new AddressAllocator(omni);
    const nics = net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' }));
    const a = emptyMachineState();
    await alloc.ensure('a', nics, a, omni.persist('a', a));
    expect(a.nicAddresses.map((x) => [x.nic, x.address, x.mac])).toEqual([[0, '10.0.0.10/24', nicMac('a', 0)]]);
    expect(omni.states.get('a')?.nicAddresses[0]?.address).toBe('10.0.0.10/24');
    const lists = omni.lists;
    await alloc.ensure('a', nics, a, omni.persist('a', a));
    expect(a.nicAddresses[0]?.address).toBe('10.0.0.10/24');
    expect(omni.lists).toBe(lists); // nothing to choose: no listing
  });

  it('skips what any other private state holds, also from another (overlapping) pool, and reuses released ones', async () => {
    const omni = new FakeOmni();
    const other = emptyMachineState();
    other.nicAddresses = [create(NicAddressSchema, { nic: 1, address: '10.0.0.10/16', mac: nicMac('x', 1) })];
    omni.states.set('x', other);
    const alloc = new AddressAllocator(omni);
    const b = emptyMachineState();
    await alloc.ensure('b', net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' })), b, omni.persist('b', b));
    expect(b.nicAddresses[0]?.address).toBe('10.0.0.11/24');
    // A listed pool overlapping the range: 10.0.0.11 is taken by b, 10.0.0.10 by x.
    const c = emptyMachineState();
    await alloc.ensure('c', net0(pool({ cidr: '10.0.0.0/24', addresses: ['10.0.0.11', '10.0.0.10', '10.0.0.40'] })), c, omni.persist('c', c));
    expect(c.nicAddresses[0]?.address).toBe('10.0.0.40/24');
    // x's teardown finished: its private state is gone, and its address is handed out again.
    omni.states.delete('x');
    alloc.release('x');
    const d = emptyMachineState();
    await alloc.ensure('d', net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' })), d, omni.persist('d', d));
    expect(d.nicAddresses[0]?.address).toBe('10.0.0.10/24');
  });

  it('gives concurrent requests distinct addresses (allocation and write are serialised)', async () => {
    const omni = new FakeOmni();
    const alloc = new AddressAllocator(omni);
    const nics = staticNics({
      address_pool: pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.40' }),
      additional_nics: [{ address_pool: pool({ cidr: '10.0.0.0/16', range: '10.0.0.10-10.0.0.60' }) }],
    });
    const ids = Array.from({ length: 12 }, (_, i) => `r${i}`);
    const states = ids.map(() => emptyMachineState());
    await Promise.all(ids.map((id, i) => alloc.ensure(id, nics, states[i]!, omni.persist(id, states[i]!))));
    const all = states.flatMap((s) => heldAddresses(s));
    expect(all).toHaveLength(24);
    expect(new Set(all).size).toBe(24);
  });

  it('does not hand out what this process reserved when the listing lags behind (stale read)', async () => {
    const omni = new FakeOmni();
    const alloc = new AddressAllocator(omni);
    const nics = net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' }));
    const a = emptyMachineState();
    await alloc.ensure('a', nics, a, async () => undefined); // written, but the listing does not show it yet
    const b = emptyMachineState();
    await alloc.ensure('b', nics, b, async () => undefined);
    expect([a.nicAddresses[0]?.address, b.nicAddresses[0]?.address]).toEqual(['10.0.0.10/24', '10.0.0.11/24']);
  });

  it('fails clearly when the pool has no free address, naming the field and the holders', async () => {
    const omni = new FakeOmni();
    const alloc = new AddressAllocator(omni);
    const nics = staticNics({
      address_pool: undefined,
      additional_nics: [{}, { address_pool: pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' }) }],
    });
    for (const id of ['p', 'q', 's']) {
      const st = emptyMachineState();
      await alloc.ensure(id, nics, st, omni.persist(id, st));
      expect(st.nicAddresses[0]?.nic).toBe(2);
    }
    const last = emptyMachineState();
    const err = await alloc.ensure('t', nics, last, omni.persist('t', last)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PoolExhaustedError);
    expect((err as Error).message).toBe(
      'provider data: additional_nics[1].address_pool: pool 10.0.0.10-10.0.0.12 has no free address (3 in use by p, q, s)',
    );
    expect(last.nicAddresses).toEqual([]);
    expect(omni.states.has('t')).toBe(false);
  });

  it('refuses to allocate without an address book', async () => {
    const alloc = new AddressAllocator(undefined);
    const st = emptyMachineState();
    await expect(alloc.ensure('a', net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' })), st, async () => undefined)).rejects.toThrow(
      /no address book/,
    );
  });

  it('walks a huge IPv6 range in steps of the used addresses only', async () => {
    const omni = new FakeOmni();
    const alloc = new AddressAllocator(omni);
    const nics = net0(pool({ cidr: '2001:db8::/64', range: '2001:db8::1-2001:db8::ffff:ffff:ffff:fffe' }));
    const states = [0, 1, 2].map(() => emptyMachineState());
    for (const [i, s] of states.entries()) await alloc.ensure(`v${i}`, nics, s, omni.persist(`v${i}`, s));
    expect(states.map((s) => s.nicAddresses[0]?.address)).toEqual(['2001:db8::1/64', '2001:db8::2/64', '2001:db8::3/64']);
  });
});

/**
 * What Talos's nocloud parser does with a network-config (internal/app/machined/pkg/runtime/v1alpha1/platform/
 * nocloud/metadata.go at ad8823176, applyNetworkConfigV2 / applyNetworkConfigV2Ethernet): the field types of its Go
 * structs (one type mismatch rejects the whole file), netip.ParsePrefix on addresses and route destinations,
 * netip.ParseAddr on gateways, DNS servers and route next hops (an empty `via` is an error), and the MAC compared
 * with Go's lower-case form (exactly before v1.9.0, case-insensitively since).
 */
function talosReadsV2(text: string): string[] {
  const problems: string[] = [];
  const doc = parseYaml(text, { version: '1.1' }) as Record<string, unknown>;
  const isUint = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 2 ** 32;
  const isStrList = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (doc.version !== 2) problems.push('version must be the integer 2');
  const eths = doc.ethernets as Record<string, Record<string, unknown>>;
  for (const [name, eth] of Object.entries(eths ?? {})) {
    const match = eth.match as Record<string, unknown> | undefined;
    const mac = match?.macaddress;
    if (typeof mac !== 'string' || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) problems.push(`${name}: macaddress must be a lower-case MAC string`);
    if (!isStrList(eth.addresses)) problems.push(`${name}: addresses must be a list of strings`);
    for (const a of isStrList(eth.addresses) ? (eth.addresses as string[]) : []) if (!parsePrefix(a)) problems.push(`${name}: ${a} is not a prefix`);
    for (const g of ['gateway4', 'gateway6']) if (eth[g] !== undefined && (typeof eth[g] !== 'string' || !parseIp(eth[g] as string))) problems.push(`${name}: ${g}`);
    if (eth.mtu !== undefined && !isUint(eth.mtu)) problems.push(`${name}: mtu must be an unsigned integer`);
    const ns = eth.nameservers as Record<string, unknown> | undefined;
    if (ns?.addresses !== undefined) {
      if (!isStrList(ns.addresses)) problems.push(`${name}: nameservers.addresses must be strings`);
      for (const a of isStrList(ns.addresses) ? (ns.addresses as string[]) : []) if (!parseIp(a)) problems.push(`${name}: DNS ${a}`);
    }
    for (const r of Array.isArray(eth.routes) ? (eth.routes as Array<Record<string, unknown>>) : []) {
      if (typeof r.via !== 'string' || !parseIp(r.via)) problems.push(`${name}: route via`);
      if (typeof r.to !== 'string' || !parsePrefix(r.to)) problems.push(`${name}: route to (a prefix; 'default' only from v1.12)`);
      if (r.table !== undefined && !isUint(r.table)) problems.push(`${name}: route table`);
    }
    for (const k of Object.keys(eth)) {
      if (!['match', 'dhcp4', 'dhcp6', 'addresses', 'gateway4', 'gateway6', 'mtu', 'nameservers', 'routes'].includes(k)) problems.push(`${name}: ${k} is not read`);
    }
  }
  return problems;
}

describe('renderNetworkConfig', () => {
  const data = parseProviderData(
    `${BASE}address_pool:\n  cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.12\n  gateway: 10.0.0.1\n  dns_servers: [1.1.1.1, 1.0.0.1]\n` +
      '  search_domains: [lan.example]\n  mtu: 1500\n  routes: [{to: 192.168.0.0/16, via: 10.0.0.254}]\n' +
      'additional_nics:\n  - bridge: vmbr1\n  - bridge: vmbr2\n    address_pool:\n      cidr: 2001:DB8:5::/64\n      addresses: ["2001:db8:5:0::10"]\n' +
      '      gateway: 2001:db8:5::1\n      dns_servers: [1.1.1.1, "2606:4700:4700::1111"]\n',
  );
  const nics = staticNics(data);
  const allocated = [
    create(NicAddressSchema, { nic: 0, address: '10.0.0.10/24', mac: '02:12:34:56:78:90' }),
    create(NicAddressSchema, { nic: 2, address: '2001:db8:5::10/64', mac: '0a:bb:cc:dd:ee:ff' }),
  ];

  it('writes version 2, one ethernet per static NIC matched by MAC, with what Talos applies', () => {
    const text = renderNetworkConfig(nicNetworks(nics, allocated));
    expect(talosReadsV2(text)).toEqual([]);
    expect(parseYaml(text)).toEqual({
      version: 2,
      ethernets: {
        eth0: {
          match: { macaddress: '02:12:34:56:78:90' },
          addresses: ['10.0.0.10/24'],
          gateway4: '10.0.0.1',
          mtu: 1500,
          nameservers: { addresses: ['1.1.1.1', '1.0.0.1'], search: ['lan.example'] },
          routes: [{ to: '192.168.0.0/16', via: '10.0.0.254', table: 254 }],
        },
        eth2: {
          match: { macaddress: '0a:bb:cc:dd:ee:ff' },
          addresses: ['2001:db8:5::10/64'],
          gateway6: '2001:db8:5::1',
          // Talos concatenates every ethernet's servers: 1.1.1.1 is written once.
          nameservers: { addresses: ['2606:4700:4700::1111'] },
        },
      },
    });
    // A MAC of digits only stays a string for a YAML 1.1 reader (go-yaml v2, cloud-init), and version stays an int.
    expect(text).toContain('macaddress: "02:12:34:56:78:90"');
    expect(text).toMatch(/^version: 2$/m);
  });

  it('uses the MAC the VM actually has when given, lower-cased', () => {
    const text = renderNetworkConfig(nicNetworks(nics, allocated, (nic) => (nic === 0 ? 'BC:24:11:AA:BB:CC' : undefined)));
    expect(parseYaml(text).ethernets.eth0.match.macaddress).toBe('bc:24:11:aa:bb:cc');
    expect(talosReadsV2(text)).toEqual([]);
  });

  it('the checker itself catches what Talos would reject', () => {
    expect(talosReadsV2('version: "2"\nethernets:\n  eth0:\n    match: {macaddress: "AA:BB:CC:DD:EE:FF"}\n    addresses: 10.0.0.1\n    routes: [{to: default}]\n'))
      .toHaveLength(5);
  });
});

describe('the documented examples', () => {
  const doc = (name: string) => readFileSync(new URL(`../../docs/${name}`, import.meta.url), 'utf8');
  const firstYamlAfter = (text: string, heading: string): string => {
    const at = text.indexOf(heading);
    const m = /```yaml\n([\s\S]*?)```/.exec(text.slice(at));
    if (at < 0 || !m?.[1]) throw new Error(`no yaml block after ${heading}`);
    return m[1];
  };

  it('docs/provider-data.md: the no-DHCP example is valid provider data with two static NICs', () => {
    const d = parseProviderData(firstYamlAfter(doc('provider-data.md'), '## Static addresses'));
    expect(staticNics(d).map((n) => n.nic)).toEqual([0, 1]);
    expect(d.address_pool?.dns_servers).toEqual(['1.1.1.1', '1.0.0.1']);
  });

  it('docs/nocloud.md: the network-config example is what we render for it, and what Talos reads', () => {
    const text = firstYamlAfter(doc('nocloud.md'), '## Static addresses');
    expect(talosReadsV2(text)).toEqual([]);
    const d = parseProviderData(firstYamlAfter(doc('provider-data.md'), '## Static addresses'));
    const [n0] = staticNics(d);
    const rendered = renderNetworkConfig(nicNetworks([n0!], [create(NicAddressSchema, { nic: 0, address: '10.20.0.100/24', mac: '7a:eb:f9:f0:b8:7e' })]));
    expect(parseYaml(rendered)).toEqual(parseYaml(text));
  });
});

describe('searchDomainsPatch', () => {
  const nics = staticNics({
    address_pool: pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12', search_domains: ['lan.example', 'corp.example.'] }),
    additional_nics: [{ address_pool: pool({ cidr: '10.1.0.0/24', range: '10.1.0.10-10.1.0.12', search_domains: ['lan.example'] }) }],
  });

  it('is a machine.network.searchDomains patch, each domain once, for Talos 1.9 and later', () => {
    for (const v of ['v1.9.0', '1.11.5', 'v1.14.0-beta.1', 'v2.0.0']) {
      const patch = searchDomainsPatch(nics, v);
      expect(patch, v).not.toBe('tooOld');
      expect(parseYaml((patch as { data: string }).data)).toEqual({ machine: { network: { searchDomains: ['lan.example', 'corp.example'] } } });
    }
  });

  it('is refused for Talos before 1.9 (the key is unknown there) and absent without search domains', () => {
    expect(searchDomainsPatch(nics, 'v1.8.4')).toBe('tooOld');
    expect(searchDomainsPatch(nics, 'garbage')).toBe('tooOld');
    expect(searchDomainsPatch(net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.10-10.0.0.12' })), 'v1.11.5')).toBeUndefined();
  });
});

describe('vmConfigAddresses', () => {
  it('reads the static cloud-init addresses of a VM config, nothing else', () => {
    expect(
      vmConfigAddresses({
        ipconfig0: 'ip=10.0.0.5/24,gw=10.0.0.1',
        ipconfig1: 'ip=dhcp,ip6=2001:DB8::5/64',
        ipconfig2: 'ip6=auto',
        net0: 'virtio=BC:24:11:00:00:01,bridge=vmbr0',
        description: 'ip=10.9.9.9/24',
      }),
    ).toEqual([
      { address: '10.0.0.5', key: 'ipconfig0' },
      { address: '2001:db8::5', key: 'ipconfig1' },
    ]);
  });

  it('an external holder is never handed out and is named when the pool runs out', async () => {
    const alloc = new AddressAllocator(new FakeOmni());
    const nics = net0(pool({ cidr: '10.0.0.0/24', range: '10.0.0.5-10.0.0.6' }));
    const a = emptyMachineState();
    await alloc.ensure('a', nics, a, async () => undefined, new Map([['10.0.0.5', 'VM 150 (dns) ipconfig0']]));
    expect(a.nicAddresses[0]?.address).toBe('10.0.0.6/24');
    expect(alloc.needsAllocation(nics, a)).toBe(false);
    expect(alloc.needsAllocation(nics, emptyMachineState())).toBe(true);
    await expect(alloc.ensure('b', nics, emptyMachineState(), async () => undefined, new Map([['10.0.0.5', 'VM 150 (dns) ipconfig0']]))).rejects.toThrow(
      '(2 in use by a, VM 150 (dns) ipconfig0)',
    );
  });
});
