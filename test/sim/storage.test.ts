import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { downloadedBytes } from '../../src/sim/proxmox/index.js';
import { call, newSim, rootToken, taskStatus } from './helpers.js';

type Sim = ReturnType<typeof newSim>['sim'];

function multipart(parts: Array<{ name: string; value: string | Buffer; filename?: string }>, boundary = 'XyZzY123') {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disp = `Content-Disposition: form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    const type = p.filename !== undefined ? '\r\nContent-Type: application/octet-stream' : '';
    chunks.push(Buffer.from(`--${boundary}\r\n${disp}${type}\r\n\r\n`), Buffer.from(p.value), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

async function upload(sim: Sim, node: string, storage: string, body: Buffer, headers: Record<string, string>) {
  const res = await sim.handle({
    method: 'POST',
    path: `/api2/json/nodes/${node}/storage/${storage}/upload`,
    headers: { authorization: rootToken, ...headers },
    body,
  });
  return { status: res.status, reason: res.reason, json: JSON.parse(res.body.toString() || 'null') as { data: unknown; errors?: Record<string, string> } | null };
}

describe('storage listing', () => {
  it('lists every storage with enabled/active/shared and capacity, filtered by content and enabled', async () => {
    const { sim } = newSim();
    const all = (await call(sim, 'GET', '/nodes/pve2/storage')).json?.data as Record<string, unknown>[];
    expect(all.map((s) => s.storage).sort()).toEqual(['ceph-vm', 'local', 'local-lvm', 'nfs-iso']);
    expect(all.find((s) => s.storage === 'local')).toMatchObject({ type: 'dir', content: 'backup,iso,vztmpl', enabled: 1, active: 1, shared: 0, total: 100 * 1024 ** 3, used: 10 * 1024 ** 3, avail: 90 * 1024 ** 3 });
    const iso = (await call(sim, 'GET', '/nodes/pve2/storage', { content: 'iso', enabled: 1 })).json?.data as { storage: string }[];
    expect(iso.map((s) => s.storage).sort()).toEqual(['local', 'nfs-iso']);
  });

  it('shows disabled and inactive storages with zero sizes', async () => {
    const { sim } = newSim();
    sim.setStorageActive('nfs-iso', 'pve1', false);
    sim.setStorageDisabled('ceph-vm', true);
    const all = (await call(sim, 'GET', '/nodes/pve1/storage')).json?.data as Record<string, unknown>[];
    expect(all.find((s) => s.storage === 'nfs-iso')).toMatchObject({ enabled: 1, active: 0, total: 0, avail: 0 });
    expect(all.find((s) => s.storage === 'ceph-vm')).toMatchObject({ enabled: 0, active: 0 });
    const images = (await call(sim, 'GET', '/nodes/pve1/storage', { content: 'images' })).json?.data as { storage: string }[];
    expect(images.map((s) => s.storage).sort()).toEqual(['local-lvm', 'nfs-iso']);
  });

  it('lists, inspects and deletes content', async () => {
    const { sim } = newSim();
    const list = (await call(sim, 'GET', '/nodes/pve1/storage/local/content', { content: 'iso' })).json?.data as Record<string, unknown>[];
    expect(list).toEqual([{ volid: 'local:iso/debian-12.iso', content: 'iso', format: 'iso', size: 657457152, ctime: expect.any(Number) }]);
    expect((await call(sim, 'GET', '/nodes/pve2/storage/local/content')).json?.data).toEqual([]);
    const info = await call(sim, 'GET', '/nodes/pve1/storage/local/content/local:iso/debian-12.iso');
    expect(info.json?.data).toMatchObject({ path: '/var/lib/vz/template/iso/debian-12.iso', size: 657457152, format: 'iso' });
    const rel = await call(sim, 'GET', '/nodes/pve1/storage/local/content/iso/debian-12.iso');
    expect(rel.status).toBe(200);
    const missing = await call(sim, 'GET', '/nodes/pve1/storage/local/content/local:iso/nope.iso');
    expect(missing.status).toBe(500);
    expect(missing.reason).toBe("volume_size_info on 'local:iso/nope.iso' failed - no format");
    const del = await call(sim, 'DELETE', '/nodes/pve1/storage/local/content/local:iso/debian-12.iso');
    expect(del.json?.data).toMatch(/^UPID:pve1:.*:imgdel:local:root@pam!omni:$/);
    expect(sim.volumes('local', 'pve1')).toHaveLength(1);
    await sim.settle();
    expect(sim.volumes('local', 'pve1')).toHaveLength(0);
    const images = (await call(sim, 'GET', '/nodes/pve1/storage/local-lvm/content', { vmid: 100 })).json?.data as Record<string, unknown>[];
    expect(images[0]).toMatchObject({ volid: 'local-lvm:vm-100-disk-0', vmid: 100, format: 'raw' });
  });

  it('content of unknown or disabled storages fails like PVE', async () => {
    const { sim } = newSim();
    expect((await call(sim, 'GET', '/nodes/pve1/storage/nope/content')).reason).toBe("storage 'nope' does not exist");
    sim.setStorageDisabled('local', true);
    expect((await call(sim, 'GET', '/nodes/pve1/storage/local/content')).reason).toBe("storage 'local' is disabled");
  });

  it('DELETE with delay waits for the task and returns null', async () => {
    const { sim } = newSim();
    const r = await call(sim, 'DELETE', '/nodes/pve1/storage/local/content/local:iso/debian-12.iso', { delay: 5 });
    expect(r.json?.data).toBeNull();
    expect(sim.volumes('local', 'pve1')).toHaveLength(0);
  });
});

describe('download-url', () => {
  const url = 'https://factory.talos.dev/image/abc/v1.9.0/nocloud-amd64.iso';

  it('downloads into a file that appears atomically when the task ends', async () => {
    const { sim, clock } = newSim({ downloadSizeBytes: 4096 });
    const r = await call(sim, 'POST', '/nodes/pve2/storage/nfs-iso/download-url', { content: 'iso', filename: 'talos.iso', url });
    const upid = r.json?.data as string;
    expect(upid).toMatch(/^UPID:pve2:.*:download:talos\.iso:root@pam!omni:$/);
    clock.advance(19_999);
    expect(sim.volumes('nfs-iso').map((v) => v.volid)).not.toContain('nfs-iso:iso/talos.iso');
    clock.advance(1);
    expect(sim.volumes('nfs-iso').find((v) => v.volid === 'nfs-iso:iso/talos.iso')?.size).toBe(4096);
    expect((await taskStatus(sim, upid)).exitstatus).toBe('OK');
  });

  it('refuses to overwrite an existing file without checksum; verifies a given checksum', async () => {
    const { sim } = newSim({ downloadSizeBytes: 1000 });
    const again = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 'debian-12.iso', url })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, again)).exitstatus).toBe("refusing to override existing file '/var/lib/vz/template/iso/debian-12.iso'");
    const good = createHash('sha256').update(downloadedBytes(url, 1000)).digest('hex');
    const ok = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 'debian-12.iso', url, checksum: good, 'checksum-algorithm': 'sha256' })).json?.data as string;
    const bad = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 'x.iso', url, checksum: 'ab', 'checksum-algorithm': 'sha256' })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, ok)).exitstatus).toBe('OK');
    expect((await taskStatus(sim, bad)).exitstatus).toBe(`checksum mismatch: got '${good}' != expect 'ab'`);
  });

  it('normalises the filename and checks extension, content type and storage type', async () => {
    const { sim } = newSim();
    const odd = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: '../a b:c.iso', url })).json?.data as string;
    expect(odd).toContain(':download:a_b_c.iso:');
    const ext = await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 'talos.raw', url });
    expect(ext.json?.errors).toEqual({ filename: 'wrong file extension' });
    const lvm = await call(sim, 'POST', '/nodes/pve1/storage/local-lvm/download-url', { content: 'iso', filename: 't.iso', url });
    expect(lvm.reason).toBe("storage 'local-lvm' is not configured for content-type 'iso'");
    const scheme = await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 't.iso', url: 'ftp://x/t.iso' });
    expect(scheme.json?.errors).toEqual({ url: 'value does not match the regex pattern' });
    const missing = await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', url });
    expect(missing.json?.errors).toEqual({ filename: 'property is missing and it is not optional' });
  });

  it('an injected download failure fails the task and leaves no file', async () => {
    const { sim } = newSim();
    sim.failDownloads('500 Internal Server Error');
    const upid = (await call(sim, 'POST', '/nodes/pve1/storage/local/download-url', { content: 'iso', filename: 't.iso', url })).json?.data as string;
    await sim.settle();
    expect((await taskStatus(sim, upid)).exitstatus).toBe('download failed: 500 Internal Server Error');
    expect(sim.volumes('local', 'pve1').map((v) => v.volid)).not.toContain('local:iso/t.iso');
  });
});

describe('upload', () => {
  const iso = Buffer.from('CD001-fake-iso-bytes'.repeat(100));

  it('runs imgcopy on the entry node with an empty id; the file appears when the task ends', async () => {
    const { sim, clock } = newSim();
    const { body, contentType } = multipart([{ name: 'content', value: 'iso' }, { name: 'filename', value: iso, filename: 'user-data-200.iso' }]);
    const r = await upload(sim, 'pve3', 'local', body, { 'content-type': contentType, 'content-length': String(body.length) });
    expect(r.status).toBe(200);
    const upid = r.json?.data as string;
    expect(upid).toMatch(/^UPID:pve1:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:imgcopy::root@pam!omni:$/);
    expect(sim.volumes('local', 'pve3')).toHaveLength(0);
    clock.advance(1000);
    expect(sim.isoFile('local:iso/user-data-200.iso', 'pve3').equals(iso)).toBe(true);
    // The task lives on the entry node only.
    const wrongNode = await call(sim, 'GET', `/nodes/pve3/tasks/${encodeURIComponent(upid)}/status`);
    expect(wrongNode.json?.errors).toEqual({ upid: 'no such task' });
    expect((await taskStatus(sim, upid)).exitstatus).toBe('OK');
  });

  it('needs Content-Length, multipart, and a file part named filename', async () => {
    const { sim } = newSim();
    const { body, contentType } = multipart([{ name: 'content', value: 'iso' }, { name: 'file', value: iso, filename: 'a.iso' }]);
    const noLen = await upload(sim, 'pve1', 'local', body, { 'content-type': contentType });
    expect(noLen.reason).toBe('upload without content length header not supported');
    const wrongName = await upload(sim, 'pve1', 'local', body, { 'content-type': contentType, 'content-length': String(body.length) });
    expect(wrongName.reason).toBe("wrong field name 'file' for file upload, expected 'filename'");
    const notMultipart = await upload(sim, 'pve1', 'local', body, { 'content-type': 'application/json', 'content-length': '10' });
    expect(notMultipart.reason).toBe("upload 'Content-Type 'application/json' not implemented");
  });

  it('only recognises its text fields before the file part, checks extension, storage and checksum', async () => {
    const { sim } = newSim();
    const fileLast = multipart([{ name: 'filename', value: iso, filename: 'a.iso' }, { name: 'content', value: 'iso' }]);
    const r1 = await upload(sim, 'pve1', 'local', fileLast.body, { 'content-type': fileLast.contentType, 'content-length': String(fileLast.body.length) });
    expect(r1.json?.errors).toEqual({ content: 'property is missing and it is not optional' });
    const ext = multipart([{ name: 'content', value: 'iso' }, { name: 'filename', value: iso, filename: 'a.txt' }]);
    const r2 = await upload(sim, 'pve1', 'local', ext.body, { 'content-type': ext.contentType, 'content-length': String(ext.body.length) });
    expect(r2.json?.errors).toEqual({ filename: 'wrong file extension' });
    const lvm = multipart([{ name: 'content', value: 'iso' }, { name: 'filename', value: iso, filename: 'a.iso' }]);
    const r3 = await upload(sim, 'pve1', 'local-lvm', lvm.body, { 'content-type': lvm.contentType, 'content-length': String(lvm.body.length) });
    expect(r3.reason).toBe("storage 'local-lvm' does not support 'iso' content");
    const sum = multipart([
      { name: 'content', value: 'iso' },
      { name: 'checksum-algorithm', value: 'sha256' },
      { name: 'checksum', value: '00' },
      { name: 'filename', value: iso, filename: 'a.iso' },
    ]);
    const r4 = await upload(sim, 'pve1', 'local', sum.body, { 'content-type': sum.contentType, 'content-length': String(sum.body.length) });
    await sim.settle();
    const want = createHash('sha256').update(iso).digest('hex');
    expect((await taskStatus(sim, r4.json?.data as string)).exitstatus).toBe(`checksum mismatch: got '${want}' != expect '00'`);
  });

  it('does not check CSRF for ticket uploads', async () => {
    const { sim } = newSim();
    const login = await call(sim, 'POST', '/access/ticket', { username: 'root@pam', password: 'pve-sim-root' }, {});
    const ticket = (login.json?.data as { ticket: string }).ticket;
    const { body, contentType } = multipart([{ name: 'content', value: 'iso' }, { name: 'filename', value: iso, filename: 'a.iso' }]);
    const res = await sim.handle({
      method: 'POST',
      path: '/api2/json/nodes/pve1/storage/local/upload',
      headers: { cookie: `PVEAuthCookie=${ticket}`, 'content-type': contentType, 'content-length': String(body.length) },
      body,
    });
    expect(res.status).toBe(200);
  });
});
