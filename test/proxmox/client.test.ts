import { describe, expect, it } from 'vitest';
import { PveClient, encodePveParams, pvePath } from '../../src/proxmox/client.js';
import {
  PveConfigError,
  PveConnectionError,
  PveError,
  isAuthError,
  isNodeUnreachable,
  isNotFound,
} from '../../src/proxmox/errors.js';
import { type Route, capturedLogger, closedPort, ok, startPveServer, closeAfterEach } from './pveTestServer.js';

const TOKEN_SECRET = '0a1b2c3d-1111-2222-3333-444455556666';
const UPID_CREATE = 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105:omni@pve!provider:';

const { servers, clients } = closeAfterEach();

async function setup(route: Route, extra: Partial<ConstructorParameters<typeof PveClient>[0]> = {}) {
  const server = await startPveServer(route);
  servers.push(server);
  const client = new PveClient({
    url: server.url,
    auth: { tokenId: 'omni@pve!provider', tokenSecret: TOKEN_SECRET },
    ...extra,
  });
  clients.push(client);
  return { server, client };
}

describe('PveClient requests', () => {
  it('sends the API token header and talks to /api2/json', async () => {
    const { server, client } = await setup(() => ok({ version: '9.1.3', release: '9.1', repoid: 'abcdef' }));
    await expect(client.version()).resolves.toEqual({ version: '9.1.3', release: '9.1', repoid: 'abcdef' });
    const req = server.requests[0]!;
    expect(req.headers.authorization).toBe(`PVEAPIToken=omni@pve!provider=${TOKEN_SECRET}`);
    expect(req.url).toBe('/api2/json/version');
    expect(req.headers.cookie).toBeUndefined();
  });

  it('accepts a base URL that already ends in /api2/json', async () => {
    const server = await startPveServer(() => ok([]));
    servers.push(server);
    const client = new PveClient({ url: `${server.url}/api2/json/`, auth: { tokenId: 'a@pam!b', tokenSecret: 'x' } });
    clients.push(client);
    await client.nodes();
    expect(server.requests[0]!.url).toBe('/api2/json/nodes');
  });

  it('rejects malformed configuration before any request, without echoing the secret', () => {
    expect(() => new PveClient({ url: 'ftp://x', auth: { tokenId: 'a@pam!b', tokenSecret: 's' } })).toThrow(PveConfigError);
    expect(() => new PveClient({ url: 'https://u:p@x:8006', auth: { tokenId: 'a@pam!b', tokenSecret: 's' } })).toThrow(
      PveConfigError,
    );
    let err: unknown;
    try {
      new PveClient({ url: 'https://x:8006', auth: { tokenId: 'no-realm', tokenSecret: TOKEN_SECRET } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PveConfigError);
    expect(String((err as Error).message)).not.toContain(TOKEN_SECRET);
  });

  it('encodes POST bodies as form data with booleans as 1/0 and skips undefined', async () => {
    const { server, client } = await setup(() => ok(UPID_CREATE));
    const upid = await client.createVm('pve1', {
      vmid: 105,
      name: 'talos-a b',
      onboot: true,
      numa: false,
      net0: 'virtio,bridge=vmbr0,firewall=1',
      agent: 'enabled=1',
      hugepages: undefined,
    });
    expect(upid).toBe(UPID_CREATE);
    const req = server.requests[0]!;
    expect(req.method).toBe('POST');
    expect(req.path).toBe('/nodes/pve1/qemu');
    expect(req.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(Number(req.headers['content-length'])).toBe(req.body.length);
    expect(Object.fromEntries(req.form)).toEqual({
      vmid: '105',
      name: 'talos-a b',
      onboot: '1',
      numa: '0',
      net0: 'virtio,bridge=vmbr0,firewall=1',
      agent: 'enabled=1',
    });
  });

  it('refuses list or object parameter values', async () => {
    const { server, client } = await setup(() => ok(null));
    await expect(client.post('/x', { a: ['b'] as unknown as string })).rejects.toThrow(/no lists or objects/);
    expect(server.requests).toHaveLength(0);
  });

  it('puts GET and DELETE parameters in the query string', async () => {
    const { server, client } = await setup((r) =>
      r.method === 'DELETE' ? ok('UPID:pve1:0000AAAA:0000BBBB:6500CCCC:qmdestroy:105:root@pam:') : ok([]),
    );
    await client.storageList('pve1', { content: 'iso', enabled: true });
    await client.deleteVm('pve1', 105, { purge: true, destroyUnreferencedDisks: true });
    const [list, del] = server.requests;
    expect(list!.path).toBe('/nodes/pve1/storage');
    expect(Object.fromEntries(list!.query)).toEqual({ content: 'iso', enabled: '1' });
    expect(list!.body.length).toBe(0);
    expect(del!.method).toBe('DELETE');
    expect(del!.path).toBe('/nodes/pve1/qemu/105');
    expect(Object.fromEntries(del!.query)).toEqual({ purge: '1', 'destroy-unreferenced-disks': '1' });
  });

  it('URL-encodes UPIDs in task paths and routes to the node named in the UPID', async () => {
    const upid = 'UPID:pve2:00001234:123456789:6700AABB:imgcopy::omni@pve!provider:';
    const { server, client } = await setup(() =>
      ok({ upid, node: 'pve2', pid: '4660', starttime: 1728096955, type: 'imgcopy', id: '', user: 'omni@pve', tokenid: 'provider', status: 'stopped', exitstatus: 'OK' }),
    );
    const st = await client.taskStatus(upid);
    expect(st.status).toBe('stopped');
    expect(st.pid).toBe(4660);
    const req = server.requests[0]!;
    expect(req.rawPath).toBe(`/nodes/pve2/tasks/${encodeURIComponent(upid).replace("!", "%21")}/status`);
    expect(req.rawPath).not.toContain('!');
    expect(req.path).toBe(`/nodes/pve2/tasks/${upid}/status`);
  });

  it('keeps the slash of a volume id in storage content paths', async () => {
    const { server, client } = await setup(() => ok('UPID:pve1:0000AAAA:0000BBBB:6500CCCC:imgdel:local:root@pam:'));
    await client.deleteVolume('pve1', 'local', 'local:iso/user-data 105.iso');
    expect(server.requests[0]!.rawPath).toBe('/nodes/pve1/storage/local/content/local%3Aiso/user-data%20105.iso');
  });

  it('parses numbers that Proxmox returns as strings', async () => {
    const { client } = await setup((r) => {
      if (r.path === '/cluster/nextid') return ok('100');
      if (r.path === '/nodes') {
        return ok([{ node: 'pve1', status: 'online', maxmem: '68719476736', mem: 1024, maxcpu: '16', cpu: '0.25' }]);
      }
      if (r.path === '/nodes/pve1/storage') {
        return ok([{ storage: 'local-lvm', type: 'lvmthin', content: 'images,rootdir', enabled: '1', active: 1, shared: 0, total: '1000', used: '400', avail: '600' }]);
      }
      if (r.path === '/nodes/pve1/qemu') return ok([{ vmid: '105', status: 'running', maxmem: '8589934592', tags: 'a;b', template: '' }]);
      if (r.path === '/cluster/resources') return ok([{ id: 'qemu/105', type: 'qemu', vmid: '105', node: 'pve1', maxmem: '1024', template: 0 }]);
      return { status: 501, reason: `Method 'GET ${r.path}' not implemented` };
    });
    expect(await client.nextId()).toBe(100);
    expect(await client.nodes()).toEqual([
      { node: 'pve1', status: 'online', maxmem: 68719476736, mem: 1024, maxcpu: 16, cpu: 0.25 },
    ]);
    const [st] = await client.storageList('pve1');
    expect(st).toMatchObject({ enabled: true, active: true, shared: false, total: 1000, used: 400, avail: 600 });
    const [vm] = await client.qemuList('pve1');
    expect(vm).toMatchObject({ vmid: 105, maxmem: 8589934592, tags: 'a;b', template: false });
    const [res] = await client.clusterResources('vm');
    expect(res).toMatchObject({ vmid: 105, maxmem: 1024, template: false });
  });

  it('gets a VMID from nextid whether it comes as a string or a number', async () => {
    const { server, client } = await setup((r) => (r.query.get('vmid') === '200' ? ok(200) : ok('101')));
    expect(await client.nextId()).toBe(101);
    expect(await client.nextId(200)).toBe(200);
    expect(server.requests[1]!.query.get('vmid')).toBe('200');
  });

  it('calls the documented method and path for each endpoint', async () => {
    const upid = (type: string) => `UPID:pve1:0000AAAA:0000BBBB:6500CCCC:${type}:105:root@pam:`;
    const { server, client } = await setup((r) => {
      if (r.method !== 'GET') {
        if (r.method === 'PUT') return ok(null);
        const t = r.path.split('/').pop()!;
        return ok(upid(t));
      }
      if (r.path.endsWith('/config')) return ok({ memory: '8192', cores: 4, digest: 'abc' });
      if (r.path.endsWith('/status/current')) return ok({ vmid: 105, status: 'running', agent: 1, ha: { managed: 0 } });
      if (r.path.endsWith('/log')) return ok([{ n: 1, t: 'TASK OK' }], { total: 1 });
      if (r.path === '/cluster/mapping/pci') return ok([{ id: 'gpu', map: ['node=pve1,path=0000:01:00.0'], mdev: 0 }]);
      if (r.path === '/nodes/pve1/status') return ok({ cpuinfo: { cpus: '16' }, memory: { total: '100', used: 40, free: 60 } });
      if (r.path === '/cluster/status') return ok([{ type: 'cluster', id: 'cluster', name: 'c', quorate: 1, nodes: 3, version: 7 }]);
      if (r.path.includes('/content/')) return ok({ size: '2048', format: 'iso', path: '/var/lib/vz/template/iso/x.iso' });
      return ok([]);
    });
    await client.nodeStatus('pve1');
    await client.clusterStatus();
    await client.vmStatus('pve1', 105);
    await client.vmConfig('pve1', 105);
    await client.setVmConfig('pve1', 105, { tags: 'a;b' });
    await client.setVmConfigAsync('pve1', 105, { ide0: 'local:iso/x.iso,media=cdrom' });
    await client.startVm('pve1', 105);
    await client.stopVm('pve1', 105, { overruleShutdown: true });
    await client.shutdownVm('pve1', 105, { timeout: 60, forceStop: true });
    await client.storageContent('pve1', 'local', { content: 'iso' });
    await client.volumeInfo('pve1', 'local', 'local:iso/x.iso');
    await client.downloadUrl('pve1', 'local', {
      url: 'https://factory.talos.dev/image/abc/v1.9.0/nocloud-amd64.iso',
      filename: 'abc.iso',
      content: 'iso',
      verifyCertificates: false,
    });
    await client.taskLog(upid('qmstart'), { start: 0, limit: 50 });
    await client.stopTask(upid('qmstart'));
    await client.pciMappings();
    await client.clusterResources();
    expect(server.requests.map((r) => `${r.method} ${r.path}${r.query.size ? `?${r.query}` : ''}`)).toEqual([
      'GET /nodes/pve1/status',
      'GET /cluster/status',
      'GET /nodes/pve1/qemu/105/status/current',
      'GET /nodes/pve1/qemu/105/config',
      'PUT /nodes/pve1/qemu/105/config',
      'POST /nodes/pve1/qemu/105/config',
      'POST /nodes/pve1/qemu/105/status/start',
      'POST /nodes/pve1/qemu/105/status/stop',
      'POST /nodes/pve1/qemu/105/status/shutdown',
      'GET /nodes/pve1/storage/local/content?content=iso',
      'GET /nodes/pve1/storage/local/content/local:iso/x.iso',
      'POST /nodes/pve1/storage/local/download-url',
      `GET /nodes/pve1/tasks/${upid('qmstart')}/log?start=0&limit=50`,
      `DELETE /nodes/pve1/tasks/${upid('qmstart')}`,
      'GET /cluster/mapping/pci',
      'GET /cluster/resources',
    ]);
    const byPath = (m: string, p: string) => server.requests.find((r) => r.method === m && r.path === p)!;
    expect(Object.fromEntries(byPath('POST', '/nodes/pve1/qemu/105/status/stop').form)).toEqual({ 'overrule-shutdown': '1' });
    expect(Object.fromEntries(byPath('POST', '/nodes/pve1/qemu/105/status/shutdown').form)).toEqual({ timeout: '60', forceStop: '1' });
    expect(Object.fromEntries(byPath('POST', '/nodes/pve1/storage/local/download-url').form)).toEqual({
      url: 'https://factory.talos.dev/image/abc/v1.9.0/nocloud-amd64.iso',
      content: 'iso',
      filename: 'abc.iso',
      'verify-certificates': '0',
    });
    expect(Object.fromEntries(byPath('PUT', '/nodes/pve1/qemu/105/config').form)).toEqual({ tags: 'a;b' });
  });

  it('decodes status, config, log and mapping answers', async () => {
    const upid = 'UPID:pve1:0000AAAA:0000BBBB:6500CCCC:qmstart:105:root@pam:';
    const { client } = await setup((r) => {
      if (r.path.endsWith('/config')) return ok({ memory: '8192', cores: 4, numa: true, digest: 'abc' });
      if (r.path.endsWith('/status/current')) return ok({ vmid: 105, status: 'running', agent: 1, ha: { managed: '1' } });
      if (r.path.endsWith('/log')) return ok([{ n: 1, t: 'starting' }, { n: '2', t: 'TASK OK' }], { total: '2' });
      if (r.path === '/cluster/mapping/pci') return ok([{ id: 'gpu', map: ['node=pve1,path=0000:01:00.0'], mdev: 0 }]);
      if (r.path === '/nodes/pve1/status') return ok({ cpuinfo: { cpus: '16' }, memory: { total: '100', used: 40 } });
      return ok(null);
    });
    expect(await client.vmConfig('pve1', 105)).toEqual({ memory: '8192', cores: 4, numa: 1, digest: 'abc' });
    expect(await client.vmStatus('pve1', 105)).toMatchObject({ vmid: 105, status: 'running', agent: true, ha: { managed: 1 } });
    expect(await client.taskLog(upid)).toEqual({ lines: [{ n: 1, t: 'starting' }, { n: 2, t: 'TASK OK' }], total: 2 });
    expect(await client.pciMappings()).toEqual([{ id: 'gpu', map: ['node=pve1,path=0000:01:00.0'], mdev: false }]);
    expect(await client.nodeStatus('pve1')).toMatchObject({ cpuinfo: { cpus: 16 }, memory: { total: 100, used: 40 } });
  });

  it('returns null from deleteVolume when Proxmox finished within the delay', async () => {
    const { server, client } = await setup(() => ok(null));
    expect(await client.deleteVolume('pve1', 'local', 'local:iso/x.iso', { delay: 5 })).toBeNull();
    expect(server.requests[0]!.query.get('delay')).toBe('5');
  });

  it('builds encoded paths with pvePath and form bodies with encodePveParams', () => {
    expect(pvePath`/nodes/${'a/b'}/qemu/${105}`).toBe('/nodes/a%2Fb/qemu/105');
    expect(encodePveParams({ a: 'x y&z', b: true, c: 0, d: undefined })).toBe('a=x%20y%26z&b=1&c=0');
  });
});

describe('PveClient errors', () => {
  it('takes the message from the reason phrase when the body has none (PVE < 8.3)', async () => {
    const { client } = await setup(() => ({
      status: 500,
      reason: "Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist",
      json: { data: null },
    }));
    const err = await client.vmStatus('pve1', 105).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PveError);
    const e = err as PveError;
    expect(e.status).toBe(500);
    expect(e.statusText).toBe("Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist");
    expect(e.method).toBe('GET');
    expect(e.path).toBe('/nodes/pve1/qemu/105/status/current');
    expect(e.message).toBe(
      "GET /nodes/pve1/qemu/105/status/current: 500 Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist",
    );
    expect(isNotFound(e)).toBe(true);
    expect(isNodeUnreachable(e)).toBe(false);
  });

  it('falls back to the body message when the reason phrase is generic', async () => {
    const { client } = await setup(() => ({
      status: 500,
      reason: 'Internal Server Error',
      json: { data: null, message: "storage 'nvme' does not exist\n" },
    }));
    const e = (await client.storageContent('pve1', 'nvme').catch((x: unknown) => x)) as PveError;
    expect(e.statusText).toBe("storage 'nvme' does not exist");
    expect(e.message).toBe("GET /nodes/pve1/storage/nvme/content: 500 storage 'nvme' does not exist");
    expect(isNotFound(e)).toBe(true);
  });

  it('reports the 400 parameter errors map', async () => {
    const { client } = await setup(() => ({
      status: 400,
      reason: 'Parameter verification failed.',
      json: {
        data: null,
        errors: { net0: 'invalid format - format error\nnet0.bridge: invalid format\n', cores: 'value must have a minimum value of 1' },
        message: 'Parameter verification failed.\n',
      },
    }));
    const e = (await client.createVm('pve1', { vmid: 105, cores: 0, net0: 'x' }).catch((x: unknown) => x)) as PveError;
    expect(e.status).toBe(400);
    expect(e.errors).toEqual({
      net0: 'invalid format - format error\nnet0.bridge: invalid format\n',
      cores: 'value must have a minimum value of 1',
    });
    expect(e.message).toContain('POST /nodes/pve1/qemu: 400 Parameter verification failed. (net0: invalid format');
    expect(e.message).toContain('cores: value must have a minimum value of 1)');
  });

  it('recognises node-unreachable pseudo-statuses with empty bodies', async () => {
    const { client } = await setup(() => ({ status: 595, reason: 'Connection refused' }));
    const e = (await client.qemuList('pve3').catch((x: unknown) => x)) as PveError;
    expect(e.status).toBe(595);
    expect(e.statusText).toBe('Connection refused');
    expect(isNodeUnreachable(e)).toBe(true);
  });

  it('does not retry a 401 with a token and reports an auth error without the secret', async () => {
    const { server, client } = await setup(() => ({ status: 401, reason: 'Authentication failed!' }));
    const e = (await client.nodes().catch((x: unknown) => x)) as PveError;
    expect(isAuthError(e)).toBe(true);
    expect(server.requests).toHaveLength(1);
    expect(e.message).toBe('GET /nodes: 401 Authentication failed!');
    expect(JSON.stringify(e)).not.toContain(TOKEN_SECRET);
    expect(String(e.stack)).not.toContain(TOKEN_SECRET);
  });

  it('turns a refused connection into a PveConnectionError that certainly did not execute', async () => {
    const port = await closedPort();
    const client = new PveClient({ url: `http://127.0.0.1:${port}`, auth: { tokenId: 'a@pam!b', tokenSecret: TOKEN_SECRET } });
    clients.push(client);
    const e = (await client.createVm('pve1', { vmid: 105 }).catch((x: unknown) => x)) as PveConnectionError;
    expect(e).toBeInstanceOf(PveConnectionError);
    expect(e.code).toBe('ECONNREFUSED');
    expect(e.mayHaveExecuted).toBe(false);
    expect(e.message).toContain('POST /nodes/pve1/qemu');
    expect(e.message).not.toContain(TOKEN_SECRET);
  });

  it('does not retry a POST whose response was lost, and says it may have executed', async () => {
    const { server, client } = await setup(() => ({ destroy: true }));
    const e = (await client.createVm('pve1', { vmid: 105 }).catch((x: unknown) => x)) as PveConnectionError;
    expect(e).toBeInstanceOf(PveConnectionError);
    expect(e.mayHaveExecuted).toBe(true);
    expect(server.requests).toHaveLength(1);
  });

  it('retries a GET once when the connection drops, then gives up', async () => {
    let n = 0;
    const { server, client } = await setup(() => (n++ === 0 ? { destroy: true } : ok([{ node: 'pve1', status: 'online' }])));
    await expect(client.nodes()).resolves.toEqual([{ node: 'pve1', status: 'online' }]);
    expect(server.requests).toHaveLength(2);

    const dead = await setup(() => ({ destroy: true }));
    await expect(dead.client.nodes()).rejects.toBeInstanceOf(PveConnectionError);
    expect(dead.server.requests).toHaveLength(2);
  });

  it('times out a call that gets no answer', async () => {
    const { client } = await setup(() => new Promise(() => {}), { requestTimeoutMs: 150 });
    const e = (await client.nodes().catch((x: unknown) => x)) as PveConnectionError;
    expect(e).toBeInstanceOf(PveConnectionError);
    expect(e.code).toBe('UND_ERR_HEADERS_TIMEOUT');
    expect(e.mayHaveExecuted).toBe(true);
  });

  it('logs calls without secrets', async () => {
    const cap = capturedLogger();
    const { client } = await setup((r) => (r.path === '/nodes' ? ok([]) : { status: 401, reason: 'Authentication failed!' }), {
      logger: cap.logger,
    });
    await client.nodes();
    await client.post('/nodes/pve1/qemu', { vmid: 1, cipassword: 'hunter2' }).catch(() => undefined);
    const text = cap.text();
    expect(text).toContain('/nodes');
    expect(text).not.toContain(TOKEN_SECRET);
    expect(text).not.toContain('hunter2');
  });

  it('shares a read within its time (concurrent and repeated, each caller its own copy), keeps no failure, and asks again after', async () => {
    let fail = true;
    const { server, client } = await setup((r) => {
      if (r.path === '/cluster/options' && fail) return { status: 500, reason: 'boom' };
      if (r.path === '/nodes') return ok([{ node: 'pve1', status: 'online' }]);
      return ok({ tags: ['a'], at: server.requests.length });
    });
    await expect(client.getShared('/cluster/options', undefined, 60_000)).rejects.toThrow(/500/);
    fail = false;
    const [a, b] = await Promise.all([client.getShared<{ tags: string[] }>('/cluster/options', undefined, 60_000), client.getShared('/cluster/options', undefined, 60_000)]);
    expect(server.requests).toHaveLength(2); // the failed read was not kept; the two concurrent reads made one call
    expect(a).toEqual(b);
    a.tags.push('changed');
    expect(await client.getShared('/cluster/options', undefined, 60_000)).toEqual({ tags: ['a'], at: 2 });
    // Another query is another read; a read past its time asks again; a plain get always asks.
    await client.getShared('/cluster/options', { x: 1 }, 60_000);
    await client.getShared('/cluster/options', undefined, 0);
    await client.get('/cluster/options');
    expect(server.requests).toHaveLength(5);
    // nodes() asks every time unless the caller accepts an age.
    await client.nodes();
    await client.nodes();
    await client.nodes({ maxAgeMs: 60_000 });
    await client.nodes({ maxAgeMs: 60_000 });
    expect(server.requests.filter((r) => r.path === '/nodes')).toHaveLength(3);
  });

  it('rejects an answer that is not a Proxmox envelope', async () => {
    const { client } = await setup(() => ({ raw: '<html>proxy</html>' }));
    await expect(client.nodes()).rejects.toThrow(/not a Proxmox JSON envelope/);
  });
});
