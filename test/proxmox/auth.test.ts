import { afterEach, describe, expect, it } from 'vitest';
import { PveClient } from '../../src/proxmox/client.js';
import { PveConnectionError, PveError, isAuthError } from '../../src/proxmox/errors.js';
import { type PveTestServer, type RecordedRequest, type Reply, capturedLogger, ok, startPveServer } from './pveTestServer.js';

const PASSWORD = 'correct horse battery staple';
const UPID = 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105:omni@pve:';

/** Ticket-issuing Proxmox stand-in: validates cookie and CSRF like pveproxy, and can expire every ticket. */
class TicketServer {
  valid = new Map<string, string>(); // ticket -> csrf
  issued = 0;
  loginDelayMs = 0;
  /** The answer to a path waits for its gate (orders concurrent answers by events rather than by delays). */
  pathGate: Record<string, Promise<void>> = {};
  /** Sees every request that carries a valid ticket, before it is answered. */
  onValidTicket: ((r: RecordedRequest) => void) | undefined;
  server!: PveTestServer;
  /** Answers for authenticated calls; default: ok(UPID) for writes, ok([]) for reads. */
  handler: (r: RecordedRequest) => Reply = (r) => (r.method === 'GET' ? ok([]) : ok(UPID));

  async start(): Promise<this> {
    this.server = await startPveServer((r) => this.route(r));
    return this;
  }

  get requests(): RecordedRequest[] {
    return this.server.requests;
  }

  logins(): RecordedRequest[] {
    return this.requests.filter((r) => r.path === '/access/ticket');
  }

  expireAll(): void {
    this.valid.clear();
  }

  private async route(r: RecordedRequest): Promise<Reply> {
    if (r.path === '/access/ticket') {
      if (this.loginDelayMs) await new Promise((res) => setTimeout(res, this.loginDelayMs));
      const user = r.form.get('username');
      const pw = r.form.get('password') ?? '';
      if (user !== 'omni@pve' || (pw !== PASSWORD && !this.valid.has(pw))) {
        return { status: 401, reason: 'authentication failure', json: { data: null } };
      }
      const n = ++this.issued;
      const ticket = `PVE:omni@pve:6700000${n}::c2lnbmF0dXJl${n}+/=`;
      const csrf = `6700000${n}:Y3NyZg${n}`;
      this.valid.set(ticket, csrf);
      return ok({ username: 'omni@pve', ticket, CSRFPreventionToken: csrf, cap: {} });
    }
    const gate = this.pathGate[r.path];
    if (gate) await gate;
    const m = /PVEAuthCookie=([^;]*)/.exec(r.headers.cookie ?? '');
    if (!m) return { status: 401, reason: 'No ticket' };
    const csrf = this.valid.get(m[1]!);
    if (csrf === undefined) return { status: 401, reason: 'Authentication failed!' };
    if (r.method !== 'GET' && r.headers.csrfpreventiontoken !== csrf) {
      return { status: 401, reason: 'Permission denied - invalid csrf token' };
    }
    this.onValidTicket?.(r);
    return this.handler(r);
  }
}

let servers: TicketServer[] = [];
let clients: PveClient[] = [];
afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.server.close()));
  servers = [];
  clients = [];
});

async function setup(extra: Partial<ConstructorParameters<typeof PveClient>[0]> = {}) {
  const pve = await new TicketServer().start();
  servers.push(pve);
  const client = new PveClient({ url: pve.server.url, auth: { username: 'omni', realm: 'pve', password: PASSWORD }, ...extra });
  clients.push(client);
  return { pve, client };
}

describe('ticket authentication', () => {
  it('logs in once, sends the ticket cookie, and the CSRF token only on writes', async () => {
    const { pve, client } = await setup();
    await client.nodes();
    await client.createVm('pve1', { vmid: 105 });
    await client.deleteVm('pve1', 105);
    expect(pve.logins()).toHaveLength(1);
    const login = pve.logins()[0]!;
    expect(Object.fromEntries(login.form)).toEqual({ username: 'omni@pve', password: PASSWORD });
    expect(login.headers.cookie).toBeUndefined();
    const [, get, post, del] = pve.requests;
    const ticket = [...pve.valid.keys()][0]!;
    expect(get!.headers.cookie).toBe(`PVEAuthCookie=${ticket}`);
    expect(get!.headers.csrfpreventiontoken).toBeUndefined();
    expect(post!.headers.csrfpreventiontoken).toBe(pve.valid.get(ticket));
    expect(del!.headers.csrfpreventiontoken).toBe(pve.valid.get(ticket));
    expect(get!.headers.authorization).toBeUndefined();
  });

  it('sends user@realm as given and never appends the realm twice', async () => {
    const pve = await new TicketServer().start();
    servers.push(pve);
    const client = new PveClient({ url: pve.server.url, auth: { username: 'omni@pve', realm: 'pve', password: PASSWORD } });
    clients.push(client);
    await client.nodes();
    expect(Object.fromEntries(pve.logins()[0]!.form)).toEqual({ username: 'omni@pve', password: PASSWORD });
  });

  it('shares one login between concurrent calls', async () => {
    const { pve, client } = await setup();
    pve.loginDelayMs = 50;
    await Promise.all([client.nodes(), client.nodes(), client.createVm('pve1', { vmid: 105 }), client.clusterStatus(), client.nextId().catch(() => 0)]);
    expect(pve.logins()).toHaveLength(1);
  });

  it('renews the ticket with the ticket itself before it expires', async () => {
    let now = 1_000_000;
    const { pve, client } = await setup({ now: () => now });
    await client.nodes();
    const first = [...pve.valid.keys()][0]!;
    now += 89 * 60_000;
    await client.nodes();
    expect(pve.logins()).toHaveLength(1);
    now += 2 * 60_000; // 91 min old
    await client.createVm('pve1', { vmid: 105 });
    const logins = pve.logins();
    expect(logins).toHaveLength(2);
    expect(Object.fromEntries(logins[1]!.form)).toEqual({ username: 'omni@pve', password: first });
    const last = pve.requests.at(-1)!;
    const second = [...pve.valid.keys()][1]!;
    expect(last.headers.cookie).toBe(`PVEAuthCookie=${second}`);
    expect(last.headers.csrfpreventiontoken).toBe(pve.valid.get(second));
  });

  it('logs in with the password when renewal is refused', async () => {
    let now = 0;
    const { pve, client } = await setup({ now: () => now });
    await client.nodes();
    pve.expireAll();
    now += 100 * 60_000;
    await client.nodes();
    const logins = pve.logins();
    expect(logins).toHaveLength(3);
    expect(logins[1]!.form.get('password')).not.toBe(PASSWORD); // renewal attempt with the old ticket
    expect(logins[2]!.form.get('password')).toBe(PASSWORD);
  });

  it('logs in again after a 401 and retries the call once, POST included', async () => {
    const { pve, client } = await setup();
    await client.nodes();
    pve.expireAll();
    await expect(client.createVm('pve1', { vmid: 105, name: 'a' })).resolves.toBe(UPID);
    const creates = pve.requests.filter((r) => r.path === '/nodes/pve1/qemu');
    expect(creates).toHaveLength(2);
    expect(Object.fromEntries(creates[1]!.form)).toEqual({ vmid: '105', name: 'a' });
    expect(pve.logins()).toHaveLength(2);
  });

  it('gives up after one re-login when Proxmox keeps answering 401', async () => {
    const { pve, client } = await setup();
    pve.handler = () => ({ status: 401, reason: 'Authentication failed!' });
    const err = await client.nodes().catch((e: unknown) => e);
    expect(isAuthError(err)).toBe(true);
    expect(pve.requests.filter((r) => r.path === '/nodes')).toHaveLength(2);
    expect(pve.logins()).toHaveLength(2);
  });

  it('one 401 burst from concurrent calls causes a single re-login', async () => {
    const { pve, client } = await setup();
    await client.nodes();
    pve.expireAll();
    pve.loginDelayMs = 30;
    await Promise.all([client.nodes(), client.nodes(), client.nodes()]);
    expect(pve.logins()).toHaveLength(2);
  });

  it('a late 401 for an old ticket does not throw away the newer session', async () => {
    const { pve, client } = await setup();
    await client.nodes();
    pve.expireAll();
    // Both calls use the expired ticket; the slow one's 401 is held until the fast one has logged in again and come
    // back with the new ticket.
    let release = () => {};
    pve.pathGate['/cluster/status'] = new Promise<void>((resolve) => (release = resolve));
    pve.onValidTicket = (r) => {
      if (r.path === '/nodes') release();
    };
    await Promise.all([client.clusterStatus(), client.nodes()]);
    expect(pve.logins()).toHaveLength(2);
  });

  it('does not retry a POST whose response was lost', async () => {
    const { pve, client } = await setup();
    pve.handler = (r) => (r.method === 'POST' ? { destroy: true } : ok([]));
    const err = await client.createVm('pve1', { vmid: 105 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveConnectionError);
    expect((err as PveConnectionError).mayHaveExecuted).toBe(true);
    expect(pve.requests.filter((r) => r.path === '/nodes/pve1/qemu')).toHaveLength(1);
  });

  it('reports a failed login without the password, ticket or CSRF token in errors or logs', async () => {
    const cap = capturedLogger();
    const pve = await new TicketServer().start();
    servers.push(pve);
    const bad = new PveClient({ url: pve.server.url, auth: { username: 'omni@pve', password: 'wrong-secret-pw' }, logger: cap.logger });
    clients.push(bad);
    const err = (await bad.nodes().catch((e: unknown) => e)) as PveError;
    expect(err).toBeInstanceOf(PveError);
    expect(err.message).toBe('POST /access/ticket: 401 authentication failure');
    expect(JSON.stringify({ ...err, m: err.message, s: err.stack })).not.toContain('wrong-secret-pw');

    const good = new PveClient({ url: pve.server.url, auth: { username: 'omni@pve', password: PASSWORD }, logger: cap.logger });
    clients.push(good);
    await good.nodes();
    pve.expireAll();
    await good.createVm('pve1', { vmid: 105 });
    const text = cap.text();
    expect(text.length).toBeGreaterThan(0);
    expect(text).not.toContain('wrong-secret-pw');
    expect(text).not.toContain(PASSWORD);
    for (const [ticket, csrf] of pve.valid) {
      expect(text).not.toContain(ticket);
      expect(text).not.toContain(csrf);
    }
    expect(text).not.toContain('c2lnbmF0dXJl'); // any ticket signature
  });
});
