import { describe, expect, it } from 'vitest';
import { call, newSim, omniToken, rootToken } from './helpers.js';

async function login(sim: Parameters<typeof call>[0], username = 'root@pam', password = 'pve-sim-root') {
  const r = await call(sim, 'POST', '/access/ticket', { username, password }, {});
  return r;
}

function ticketAuth(ticket: string, csrf?: string): Record<string, string> {
  return { cookie: `PVEAuthCookie=${encodeURIComponent(ticket)}`, ...(csrf ? { csrfpreventiontoken: csrf } : {}) };
}

describe('tickets', () => {
  it('logs in with a password and uses the ticket plus CSRF token', async () => {
    const { sim } = newSim();
    const r = await login(sim);
    expect(r.status).toBe(200);
    const data = r.json?.data as { username: string; ticket: string; CSRFPreventionToken: string };
    expect(data.username).toBe('root@pam');
    expect(data.ticket).toMatch(/^PVE:root@pam:[0-9A-F]{8}::/);
    expect(data.CSRFPreventionToken).toMatch(/^[0-9A-F]{8}:\S+$/);
    expect((await call(sim, 'GET', '/nodes', {}, ticketAuth(data.ticket))).status).toBe(200);
    const put = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 }, ticketAuth(data.ticket, data.CSRFPreventionToken));
    expect(put.status).toBe(200);
  });

  it('accepts username plus realm and renewal with the ticket as password', async () => {
    const { sim } = newSim();
    const first = await call(sim, 'POST', '/access/ticket', { username: 'omni', realm: 'pve', password: 'omni-sim-password' }, {});
    expect(first.status).toBe(200);
    const ticket = (first.json?.data as { ticket: string }).ticket;
    const renewed = await call(sim, 'POST', '/access/ticket', { username: 'omni@pve', password: ticket }, {});
    expect(renewed.status).toBe(200);
  });

  it('rejects a wrong password with 401 authentication failure after the configured delay', async () => {
    const { sim, clock } = newSim({ authFailDelayMs: 3000 });
    const pending = login(sim, 'root@pam', 'wrong');
    let settled = false;
    void pending.then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    clock.advance(3000);
    const r = await pending;
    expect(r.status).toBe(401);
    expect(r.reason).toBe('authentication failure');
  });

  it('demands a CSRF token on non-GET ticket calls', async () => {
    const { sim } = newSim();
    const { ticket } = (await login(sim)).json?.data as { ticket: string };
    const r = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 3 }, ticketAuth(ticket));
    expect(r.status).toBe(401);
    expect(r.reason).toBe('Permission denied - invalid csrf token');
    expect(r.raw.body.length).toBe(0);
  });

  it('expires tickets after the configured lifetime', async () => {
    const { sim, clock } = newSim({ ticketLifetimeMs: 2000 });
    const { ticket } = (await login(sim)).json?.data as { ticket: string };
    expect((await call(sim, 'GET', '/nodes', {}, ticketAuth(ticket))).status).toBe(200);
    clock.advance(2500);
    const r = await call(sim, 'GET', '/nodes', {}, ticketAuth(ticket));
    expect(r.status).toBe(401);
    expect(r.reason).toBe('Authentication failed!');
  });

  it('gives the detailed pre-9.1.5 reason under the pve8.4 profile', async () => {
    const { sim } = newSim({ versionProfile: 'pve8.4' });
    const bad = await call(sim, 'GET', '/nodes', {}, ticketAuth('PVE:root@pam:00000000::forged'));
    expect(bad.reason).toBe('permission denied - invalid PVE ticket');
    const tok = await call(sim, 'GET', '/nodes', {}, 'PVEAPIToken=root@pam!omni=00000000-0000-4000-8000-000000000000');
    expect(tok.reason).toBe('invalid token value!');
    const none = await call(sim, 'GET', '/nodes', {}, 'PVEAPIToken=root@pam!nope=00000000-0000-4000-8000-000000000000');
    expect(none.reason).toBe("no such token 'nope' for user 'root@pam'");
  });

  it('answers 401 No ticket without credentials', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'GET', '/nodes', {}, {});
    expect(r.status).toBe(401);
    expect(r.reason).toBe('No ticket');
  });
});

describe('tokens and ACLs', () => {
  it('revoked and expired tokens get 401', async () => {
    const { sim } = newSim();
    sim.expireToken('omni@pve!provider');
    expect((await call(sim, 'GET', '/nodes', {}, omniToken)).status).toBe(401);
    sim.revokeToken('root@pam!omni');
    const r = await call(sim, 'GET', '/nodes', {}, rootToken);
    expect(r.status).toBe(401);
    expect(r.reason).toBe('Authentication failed!');
  });

  it('403 names the path and privilege the caller lacks', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['VM.Audit', 'Sys.Audit'] });
    const r = await call(sim, 'DELETE', '/nodes/pve1/qemu/100', {}, omniToken);
    expect(r.status).toBe(403);
    expect(r.reason).toBe('Permission check failed (/vms/100, VM.Allocate)');
    expect(r.json?.message).toBe('Permission check failed (/vms/100, VM.Allocate)\n');
  });

  it('a privilege-separated token gets the intersection of its own and its user ACL', async () => {
    const { sim } = newSim();
    // The user loses VM.PowerMgmt; the token still has it but the intersection does not.
    sim.access.revokeAll('omni@pve');
    sim.access.grant('/', 'omni@pve', { privs: ['VM.Audit', 'Sys.Audit'] });
    const r = await call(sim, 'POST', '/nodes/pve1/qemu/100/status/stop', {}, omniToken);
    expect(r.status).toBe(403);
    expect(r.reason).toBe('Permission check failed (/vms/100, VM.PowerMgmt)');
    sim.access.grant('/vms/100', 'omni@pve', { privs: ['VM.PowerMgmt'] });
    expect((await call(sim, 'POST', '/nodes/pve1/qemu/100/status/stop', {}, omniToken)).status).toBe(200);
  });

  it('a deeper ACL replaces what is inherited', async () => {
    const { sim } = newSim();
    sim.access.grant('/vms/100', 'omni@pve!provider', { roles: ['NoAccess'] });
    const list = (await call(sim, 'GET', '/nodes/pve1/qemu', {}, omniToken)).json?.data as unknown[];
    expect(list).toHaveLength(0);
    const all = (await call(sim, 'GET', '/cluster/resources', { type: 'vm' }, omniToken)).json?.data as { vmid: number }[];
    expect(all.map((v) => v.vmid)).toEqual([101]);
  });

  it('/nodes omits stats without Sys.Audit and node status is forbidden', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['VM.Audit'] });
    const nodes = (await call(sim, 'GET', '/nodes', {}, omniToken)).json?.data as Record<string, unknown>[];
    expect(nodes[0]).not.toHaveProperty('maxmem');
    expect(nodes[0]).toHaveProperty('status', 'online');
    const st = await call(sim, 'GET', '/nodes/pve1/status', {}, omniToken);
    expect(st.reason).toBe('Permission check failed (/nodes/pve1, Sys.Audit)');
  });

  it('hugepages is root-only even for a token of root@pam', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'POST', '/nodes/pve1/qemu', { vmid: 300, hugepages: '2' }, rootToken);
    expect(r.status).toBe(500);
    expect(r.reason).toBe("only root can set 'hugepages' config");
    const skip = await call(sim, 'PUT', '/nodes/pve1/qemu/100/config', { cores: 2, skiplock: 1 }, omniToken);
    expect(skip.json?.errors).toEqual({ skiplock: 'Only root may use this option.' });
  });

  it('download-url needs Sys.AccessNetwork (or Sys.Audit+Sys.Modify on /)', async () => {
    const { sim } = newSim();
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['Datastore.AllocateTemplate', 'Sys.Audit'] });
    const params = { content: 'iso', filename: 'talos.iso', url: 'https://factory.example/talos.iso' };
    const r = await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', params, omniToken);
    expect(r.reason).toBe('Permission check failed (/nodes/pve1, Sys.AccessNetwork)');
    sim.access.grant('/nodes/pve1', 'omni@pve!provider', { privs: ['Sys.AccessNetwork'] });
    sim.access.grant('/nodes/pve1', 'omni@pve', { privs: ['Sys.AccessNetwork'] });
    expect((await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', params, omniToken)).status).toBe(200);
  });

  it('tasks are visible to their owner; others need Sys.Audit on the node', async () => {
    const { sim } = newSim();
    const upid = (await call(sim, 'POST', '/nodes/pve1/qemu/100/status/stop', {}, rootToken)).json?.data as string;
    sim.access.revokeAll('omni@pve!provider');
    sim.access.grant('/', 'omni@pve!provider', { privs: ['VM.Audit'] });
    const r = await call(sim, 'GET', `/nodes/pve1/tasks/${encodeURIComponent(upid)}/status`, {}, omniToken);
    expect(r.status).toBe(403);
  });
});
