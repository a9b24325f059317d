import { X509Certificate } from 'node:crypto';
import { Readable } from 'node:stream';
import { connect } from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { Agent, FormData, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { PveSim, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { loadTestFixture, rootToken } from './helpers.js';

const opened: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) await o.close();
});

async function serve(https: boolean, timeScale = 0.001): Promise<{ sim: PveSim; server: PveSimServer; agent: Agent }> {
  const sim = new PveSim({ fixture: loadTestFixture({ timeScale }) });
  const server = await startPveSimServer(sim, { https });
  const agent = new Agent({ connect: server.caPem ? { ca: server.caPem } : {} });
  opened.push(server, agent);
  return { sim, server, agent };
}

describe('HTTP(S) adapter', () => {
  it('serves over HTTPS trusted via the returned CA, with the PVE reason phrase', async () => {
    const { server, agent } = await serve(true);
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ok = await request(`${server.url}/api2/json/version`, { dispatcher: agent, headers: { authorization: rootToken } });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['content-type']).toBe('application/json;charset=UTF-8');
    expect(((await ok.body.json()) as { data: { release: string } }).data.release).toBe('9.1');
    const missing = await request(`${server.url}/api2/json/nodes/pve1/qemu/777/status/current`, { dispatcher: agent, headers: { authorization: rootToken } });
    expect(missing.statusCode).toBe(500);
    expect(missing.statusText).toBe("Configuration file 'nodes/pve1/qemu-server/777.conf' does not exist");
    await missing.body.dump();
  });

  it('gzips bodies over 1 KiB only when the client accepts gzip', async () => {
    const { server, agent } = await serve(false);
    const plain = await request(`${server.url}/api2/json/cluster/resources`, { dispatcher: agent, headers: { authorization: rootToken } });
    expect(plain.headers['content-encoding']).toBeUndefined();
    await plain.body.dump();
    const zipped = await request(`${server.url}/api2/json/cluster/resources`, { dispatcher: agent, headers: { authorization: rootToken, 'accept-encoding': 'gzip' } });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    const data = JSON.parse(gunzipSync(Buffer.from(await zipped.body.arrayBuffer())).toString()) as { data: unknown[] };
    expect(data.data.length).toBeGreaterThan(10);
  });

  it('reports the SHA-256 fingerprint of the certificate it serves', async () => {
    const { server } = await serve(true);
    const port = Number(new URL(server.url).port);
    const served = await new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
        resolve(new X509Certificate(s.getPeerCertificate(true).raw).fingerprint256);
        s.end();
      });
      s.on('error', reject);
    });
    expect(served).toBe(server.fingerprint);
    expect(server.fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it('accepts an undici FormData upload and refuses a chunked one', async () => {
    const { sim, server, agent } = await serve(false);
    const form = new FormData();
    form.append('content', 'iso');
    form.append('filename', new Blob([Buffer.from('iso-bytes')]), 'seed.iso');
    const res = await request(`${server.url}/api2/json/nodes/pve1/storage/local/upload`, {
      method: 'POST', dispatcher: agent, headers: { authorization: rootToken }, body: form,
    });
    expect(res.statusCode).toBe(200);
    const upid = ((await res.body.json()) as { data: string }).data;
    expect(upid).toContain(':imgcopy::');
    await sim.settle();
    expect(sim.isoFile('local:iso/seed.iso', 'pve1').toString()).toBe('iso-bytes');
    const chunked = await request(`${server.url}/api2/json/nodes/pve1/storage/local/upload`, {
      method: 'POST',
      dispatcher: agent,
      headers: { authorization: rootToken, 'content-type': 'multipart/form-data; boundary=b' },
      body: Readable.from([Buffer.from('--b\r\nContent-Disposition: form-data; name="content"\r\n\r\niso\r\n--b--\r\n')]),
    });
    expect(chunked.statusCode).toBe(500);
    expect(chunked.statusText).toBe('upload without content length header not supported');
    await chunked.body.dump();
  });

  it('resets the connection for connReset and for a lost response after the change was applied', async () => {
    const { sim, server, agent } = await serve(false);
    sim.faults.onRequest({ route: '/nodes/{node}/qemu', method: 'POST' }, { kind: 'lostResponse', mode: 'reset' });
    const attempt = request(`${server.url}/api2/json/nodes/pve1/qemu`, {
      method: 'POST', dispatcher: agent,
      headers: { authorization: rootToken, 'content-type': 'application/json' },
      body: JSON.stringify({ vmid: 400, name: 'lost' }),
    });
    await expect(attempt).rejects.toThrow();
    await sim.settle();
    expect(sim.vm(400)?.config.name).toBe('lost');
    sim.faults.onRequest({ route: '/version' }, { kind: 'connReset' });
    await expect(request(`${server.url}/api2/json/version`, { dispatcher: agent, headers: { authorization: rootToken } })).rejects.toThrow();
  });

  it('runs task durations on a scaled real clock', async () => {
    const { sim, server, agent } = await serve(false, 0.001);
    const res = await request(`${server.url}/api2/json/nodes/pve1/qemu`, {
      method: 'POST', dispatcher: agent,
      headers: { authorization: rootToken, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'vmid=401&scsi0=local-lvm%3A2',
    });
    const upid = ((await res.body.json()) as { data: string }).data;
    // Once the create's duration has passed on the simulated clock (3 ms of wall time here), the task has ended.
    await sim.clock.sleep(sim.taskBoard.durations.qmcreate!);
    const st = await request(`${server.url}/api2/json/nodes/pve1/tasks/${encodeURIComponent(upid)}/status`, { dispatcher: agent, headers: { authorization: rootToken } });
    expect(((await st.body.json()) as { data: { status: string } }).data.status).toBe('stopped');
    expect(sim.vm(401)?.config.scsi0).toBe('local-lvm:vm-401-disk-0,size=2G');
  });
});
