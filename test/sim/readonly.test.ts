// The read endpoints `doctor` relies on: effective permissions per ACL path and the node's network interfaces.
import { describe, expect, it } from 'vitest';
import { call, newSim, omniToken, rootToken } from './helpers.js';

type PermTree = Record<string, Record<string, number>>;
type Iface = Record<string, unknown> & { iface: string; type: string };

describe('GET /access/permissions', () => {
  it("shows a privsep token its role's privileges on every listed path, values being propagate flags", async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/access/permissions', {}, omniToken);
    expect(r.status).toBe(200);
    const tree = r.json!.data as PermTree;
    expect(Object.keys(tree).sort()).toEqual(['/', '/access', '/access/groups', '/nodes', '/pool', '/sdn', '/storage', '/vms']);
    expect(tree['/']).toMatchObject({ 'VM.Allocate': 1, 'Sys.Audit': 1, 'Datastore.AllocateTemplate': 1, 'SDN.Use': 1 });
    expect(tree['/']!['Sys.Modify']).toBeUndefined();
    expect(tree['/vms']).toEqual(tree['/']);
  });

  it('gives root@pam every privilege; a non-privsep root token is root', async () => {
    const { sim } = newSim();
    const tree = (await call(sim, 'GET', '/access/permissions', { path: '/' }, rootToken)).json!.data as PermTree;
    expect(Object.keys(tree)).toEqual(['/']);
    for (const p of ['Sys.Modify', 'Permissions.Modify', 'VM.Allocate', 'Realm.Allocate']) expect(tree['/']![p]).toBe(1);
  });

  it('intersects a privsep token with its user and drops paths where nothing is held', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/vms/100', 'omni@pve!provider', { privs: ['VM.Audit', 'VM.Backup'], propagate: false });
    const tree = (await call(sim, 'GET', '/access/permissions', {}, omniToken)).json!.data as PermTree;
    // VM.Backup is not in the user's role, so the token does not hold it; propagate 0 as the ACL says.
    expect(tree).toEqual({ '/vms/100': { 'VM.Audit': 0 } });
  });

  it('with path answers that path alone, even when nothing is held there', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    const r = await call(sim, 'GET', '/access/permissions', { path: '/storage/local' }, omniToken);
    expect(r.json!.data).toEqual({ '/storage/local': {} });
  });

  it("lets a user read its own token's permissions but not another user's without Sys.Audit on /access", async () => {
    const { sim } = newSim();
    const login = await call(sim, 'POST', '/access/ticket', { username: 'omni@pve', password: 'omni-sim-password' }, {});
    const { ticket } = login.json!.data as { ticket: string };
    const asUser = { cookie: `PVEAuthCookie=${encodeURIComponent(ticket)}` };
    const own = await call(sim, 'GET', '/access/permissions', { userid: 'omni@pve!provider', path: '/' }, asUser);
    expect(own.status).toBe(200);
    expect((own.json!.data as PermTree)['/']!['VM.PowerMgmt']).toBe(1);
    // The role holds Sys.Audit on / (and so on /access); without it the token may not look at root@pam.
    expect((await call(sim, 'GET', '/access/permissions', { userid: 'root@pam' }, omniToken)).status).toBe(200);
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['VM.Audit'] });
    const other = await call(sim, 'GET', '/access/permissions', { userid: 'root@pam' }, omniToken);
    expect(other.status).toBe(403);
    expect(other.reason).toBe('Permission check failed (/access, Sys.Audit)');
    const bad = await call(sim, 'GET', '/access/permissions', { userid: 'no-realm' }, rootToken);
    expect(bad.status).toBe(400);
    expect(bad.json!.errors).toEqual({ userid: 'value does not match the regex pattern' });
  });
});

describe('GET /nodes/{node}/network', () => {
  it("lists the fixture's bridges with their ports; any_bridge keeps only bridges", async () => {
    const { sim } = newSim();
    const all = (await call(sim, 'GET', '/nodes/pve2/network', {}, omniToken)).json!.data as Iface[];
    expect(all.map((i) => i.iface).sort()).toEqual(['eno1', 'eno2', 'vmbr0', 'vmbr1']);
    const vmbr0 = all.find((i) => i.iface === 'vmbr0')!;
    expect(vmbr0).toMatchObject({ type: 'bridge', active: 1, autostart: 1, families: ['inet'], method: 'static', bridge_ports: 'eno1' });
    expect(vmbr0['cidr']).toMatch(/^\d+\.\d+\.\d+\.\d+\/24$/);
    expect(all.find((i) => i.iface === 'eno2')).toMatchObject({ type: 'eth', exists: 1 });

    const bridges = (await call(sim, 'GET', '/nodes/pve2/network', { type: 'any_bridge' }, omniToken)).json!.data as Iface[];
    expect(bridges.map((i) => i.iface).sort()).toEqual(['vmbr0', 'vmbr1']);
    const eth = (await call(sim, 'GET', '/nodes/pve2/network', { type: 'eth' }, omniToken)).json!.data as Iface[];
    expect(eth.every((i) => i.type === 'eth')).toBe(true);
  });

  it('follows setNodeBridges, rejects unknown type filters, and answers 595 for an offline node', async () => {
    const { sim } = newSim();
    sim.setNodeBridges('pve3', ['vmbr1']);
    const bridges = (await call(sim, 'GET', '/nodes/pve3/network', { type: 'bridge' }, omniToken)).json!.data as Iface[];
    expect(bridges.map((i) => i.iface)).toEqual(['vmbr1']);
    expect(bridges[0]!['address']).toBeDefined();
    const bad = await call(sim, 'GET', '/nodes/pve3/network', { type: 'wifi' }, omniToken);
    expect(bad.status).toBe(400);
    expect(bad.json!.errors?.['type']).toMatch(/enumeration/);
    sim.setNodeOnline('pve3', false);
    expect((await call(sim, 'GET', '/nodes/pve3/network', {}, omniToken)).status).toBe(595);
  });

  it('hides bridges the caller holds neither SDN.Audit nor SDN.Use on, as PVE does', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['Sys.Audit', 'VM.Audit'] });
    sim.access.grant('/sdn/zones/localnetwork/vmbr1/20', 'omni@pve!provider', { privs: ['SDN.Use'] });
    const seen = (await call(sim, 'GET', '/nodes/pve1/network', { type: 'any_bridge' }, omniToken)).json!.data as Iface[];
    // vmbr1 stays visible through the VLAN 20 ACL; vmbr0 is hidden; root sees both.
    expect(seen.map((i) => i.iface)).toEqual(['vmbr1']);
    const root = (await call(sim, 'GET', '/nodes/pve1/network', { type: 'any_bridge' }, rootToken)).json!.data as Iface[];
    expect(root.map((i) => i.iface).sort()).toEqual(['vmbr0', 'vmbr1']);
  });
});
