// Builds the simulator's starting state from a fixture: nodes, storages, volumes, VMs, PCI mappings, users, ACLs.
import type { FixtureVm, PveFixture } from './fixture.js';
import type { PveSim } from './sim.js';
import { formatSize, type SimVm } from './state.js';

const GiB = 1024 ** 3;

export function seedFixture(sim: PveSim, f: PveFixture): void {
  const st = sim.state;
  const now = sim.clock.now();
  st.clusterName = f.clusterName ?? 'pve-sim';
  st.quorate = f.quorate ?? true;
  st.nextId = { lower: f.nextId?.lower ?? 100, upper: f.nextId?.upper ?? 1_000_000 };
  f.nodes.forEach((n, i) => {
    st.nodes.set(n.name, {
      name: n.name,
      online: (n.status ?? 'online') === 'online',
      nodeid: i + 1,
      ip: n.ip ?? `192.0.2.${10 + i}`,
      maxcpu: n.maxcpu ?? 16,
      maxmem: n.maxmem ?? 64 * GiB,
      baseMem: n.mem ?? 4 * GiB,
      cpu: n.cpu ?? 0.03,
      bootedAtMs: now - (3 * 86400_000 + i * 3600_000),
      sslFingerprint: sim.rng.hex(32).toUpperCase().match(/../g)!.join(':'),
      bridges: new Set(f.bridges?.[n.name] ?? ['vmbr0']),
    });
  });
  st.entryNode = f.entryNode ?? f.nodes[0]!.name;
  if (!st.nodes.has(st.entryNode)) throw new Error(`entryNode ${st.entryNode} is not a node`);
  for (const s of f.storages) {
    st.storages.set(s.name, {
      id: s.name,
      type: s.type,
      content: new Set(s.content),
      shared: s.shared ?? false,
      disabled: s.disabled ?? false,
      ...(s.nodes ? { nodes: new Set(s.nodes) } : {}),
      total: s.total ?? 500 * GiB,
      baseUsed: s.used ?? 0,
      inactiveOn: new Set(),
      ...(s.path ? { path: s.path } : {}),
    });
  }
  for (const m of f.pciMappings ?? []) {
    st.pciMappings.set(m.id, {
      id: m.id,
      ...(m.description !== undefined ? { description: m.description } : {}),
      map: m.nodes.map((e, i) =>
        typeof e === 'string'
          ? { node: e, path: `0000:0${i + 1}:00.0`, id: '10de:2204' }
          : { node: e.node, path: e.path ?? `0000:0${i + 1}:00.0`, id: e.id ?? '10de:2204' },
      ),
    });
  }
  for (const m of f.usbMappings ?? []) {
    st.usbMappings.set(m.id, {
      id: m.id,
      ...(m.description !== undefined ? { description: m.description } : {}),
      map: m.nodes.map((e) =>
        typeof e === 'string' ? { node: e, id: '0bda:2838' } : { node: e.node, id: e.id ?? '0bda:2838', ...(e.path ? { path: e.path } : {}) },
      ),
    });
  }
  for (const p of f.pools ?? []) {
    const pool = typeof p === 'string' ? { poolid: p } : p;
    st.pools.set(pool.poolid, pool.comment !== undefined ? { comment: pool.comment } : {});
  }
  for (const name of f.customCpuModels ?? []) st.customCpuModels.add(name);
  st.datacenter = structuredClone(f.datacenter ?? {});
  for (const v of f.volumes ?? []) {
    const s = st.storages.get(v.storage);
    if (!s) throw new Error(`volume ${v.name}: unknown storage ${v.storage}`);
    const node = v.node ?? st.entryNode;
    const content = v.name.startsWith('iso/') ? 'iso' : v.name.startsWith('vztmpl/') ? 'vztmpl' : 'images';
    st.addVolume(s, node, {
      name: v.name,
      content,
      format: content === 'iso' ? 'iso' : 'raw',
      size: v.size ?? 100 * 1024 * 1024,
      ctime: Math.floor(now / 1000) - 86400,
    });
  }
  for (const vm of f.vms ?? []) createFixtureVm(sim, vm);

  for (const [name, privs] of Object.entries(f.roles ?? {})) sim.access.roles.set(name, new Set(privs));
  for (const u of f.users ?? []) {
    sim.access.addUser({ userid: u.userid, enabled: u.enabled ?? true, ...(u.password !== undefined ? { password: u.password } : {}) });
  }
  for (const t of f.tokens ?? []) {
    const bang = t.id.indexOf('!');
    if (bang < 0) throw new Error(`token id ${t.id} must look like user@realm!name`);
    sim.access.addToken({ fullid: t.id, userid: t.id.slice(0, bang), secret: t.secret, privsep: t.privsep ?? true, expire: t.expire ?? 0 });
  }
  for (const a of f.acl ?? []) {
    sim.access.grant(a.path, a.ugid, {
      ...(a.roles ? { roles: a.roles } : {}),
      ...(a.privs ? { privs: a.privs } : {}),
      ...(a.propagate !== undefined ? { propagate: a.propagate } : {}),
    });
  }
}

/** Adds a finished VM (fixture or external actor), with a disk on scsi0 when asked. */
export function createFixtureVm(sim: PveSim, f: FixtureVm): SimVm {
  const st = sim.state;
  if (st.vms.has(f.vmid)) throw new Error(`VM ${f.vmid} already exists`);
  const config = new Map<string, string>();
  const memoryMiB = Math.max(16, Math.round((f.maxmem ?? 2 * GiB) / (1024 * 1024)));
  config.set('boot', 'order=scsi0;net0');
  config.set('cores', String(f.cores ?? 2));
  config.set('memory', String(memoryMiB));
  config.set('meta', `creation-qemu=9.2.0,ctime=${Math.floor(sim.clock.now() / 1000)}`);
  config.set('name', f.name ?? `vm${f.vmid}`);
  config.set('net0', `virtio=${generateMac(sim)},bridge=vmbr0,firewall=1`);
  config.set('scsihw', 'virtio-scsi-single');
  if (f.disk) {
    const s = st.storageOn(f.disk.storage, f.node);
    const vol = st.allocateDisk(s.id, f.node, f.vmid, f.disk.sizeGiB * GiB);
    vol.ctime = Math.floor(sim.clock.now() / 1000);
    config.set('scsi0', `${vol.volid},iothread=1,size=${formatSize(vol.size)}`);
  }
  config.set('smbios1', `uuid=${f.smbiosUuid ?? sim.rng.uuid()}`);
  config.set('sockets', '1');
  if (f.tags?.length) config.set('tags', normaliseTags(f.tags));
  config.set('vmgenid', sim.rng.uuid());
  for (const [k, v] of Object.entries(f.config ?? {})) config.set(k, v);
  const running = f.status === 'running';
  const vm: SimVm = {
    vmid: f.vmid,
    node: f.node,
    config: new Map([...config].sort(([a], [b]) => a.localeCompare(b))),
    running,
    paused: false,
    haManaged: f.haManaged ?? false,
    ...(running ? { startedAtMs: sim.clock.now() - 3600_000, pid: 10_000 + f.vmid } : {}),
  };
  st.vms.set(f.vmid, vm);
  return vm;
}

/** PVE's default: the Proxmox OUI BC:24:11 plus three random bytes. */
export function generateMac(sim: PveSim): string {
  return ['BC', '24', '11', ...sim.rng.hex(3).toUpperCase().match(/../g)!].join(':');
}

/** Tags as PVE stores them by default: lowercased, sorted, unique, `;`-separated. */
export function normaliseTags(tags: readonly string[]): string {
  return [...new Set(tags.map((t) => t.toLowerCase()))].sort().join(';');
}
