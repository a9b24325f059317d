import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PveClient } from '../../src/proxmox/client.js';
import { parseUpid } from '../../src/proxmox/upid.js';
import { type RecordedRequest, ok, startPveServer, closeAfterEach } from './pveTestServer.js';

// The upload's task runs on the entry node (pve1 here), not necessarily the target node.
const UPLOAD_UPID = 'UPID:pve1:00001234:00ABCDEF:6700AABB:imgcopy::omni@pve!provider:';

const { servers, clients } = closeAfterEach();

interface Part {
  headerLines: string[];
  data: Buffer;
}

/** Splits a multipart body the strict way PVE does: exact boundary lines, CRLF, headers then a blank line. */
function parseMultipart(req: RecordedRequest): { parts: Part[]; boundary: string } {
  const ct = req.headers['content-type'] ?? '';
  const m = /^multipart\/form-data; boundary=(.+)$/.exec(ct);
  if (!m) throw new Error(`bad content-type ${ct}`);
  const boundary = m[1]!;
  const body = req.body;
  const delim = Buffer.from(`--${boundary}`);
  expect(body.subarray(0, delim.length).equals(delim)).toBe(true);
  const closing = Buffer.from(`\r\n--${boundary}--\r\n`);
  expect(body.subarray(body.length - closing.length).equals(closing)).toBe(true);
  const parts: Part[] = [];
  let pos = delim.length + 2; // after first boundary + CRLF
  const sep = Buffer.from(`\r\n--${boundary}`);
  for (;;) {
    const headEnd = body.indexOf('\r\n\r\n', pos);
    const headerLines = body.subarray(pos, headEnd).toString('latin1').split('\r\n');
    const next = body.indexOf(sep, headEnd + 4);
    parts.push({ headerLines, data: body.subarray(headEnd + 4, next) });
    pos = next + sep.length;
    if (body.subarray(pos, pos + 2).toString() === '--') break;
    pos += 2;
  }
  return { parts, boundary };
}

async function setup(auth: ConstructorParameters<typeof PveClient>[0]['auth']) {
  const server = await startPveServer((r) => {
    if (r.path === '/access/ticket') return ok({ username: 'omni@pve', ticket: 'PVE:omni@pve:67000001::sig', CSRFPreventionToken: '67000001:csrf' });
    return ok(UPLOAD_UPID);
  });
  servers.push(server);
  const client = new PveClient({ url: server.url, auth });
  clients.push(client);
  return { server, client };
}

// Binary content with CRLFs, a fake boundary and bytes that are not UTF-8.
const ISO = Buffer.concat([Buffer.from('CD001\r\n\r\n--not-a-boundary\r\n'), Buffer.from([0, 0xff, 0xfe, 0x80, 0x0d, 0x0a]), Buffer.alloc(4096, 7)]);

describe('uploadFile', () => {
  it('sends the multipart body exactly as PVE parses it: content, checksum fields, then the file part last', async () => {
    const { server, client } = await setup({ tokenId: 'omni@pve!provider', tokenSecret: 'tok' });
    const checksum = createHash('sha256').update(ISO).digest('hex');
    const upid = await client.uploadFile('pve2', 'local', {
      filename: 'user-data-105.iso',
      content: 'iso',
      data: ISO,
      checksum,
      checksumAlgorithm: 'sha256',
    });
    expect(upid).toBe(UPLOAD_UPID);
    expect(parseUpid(upid).node).toBe('pve1');

    const req = server.requests[0]!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/api2/json/nodes/pve2/storage/local/upload');
    expect(req.headers['transfer-encoding']).toBeUndefined();
    expect(req.headers['content-length']).toBe(String(req.body.length));

    const { parts } = parseMultipart(req);
    expect(parts.map((p) => p.headerLines[0])).toEqual([
      'Content-Disposition: form-data; name="content"',
      'Content-Disposition: form-data; name="checksum-algorithm"',
      'Content-Disposition: form-data; name="checksum"',
      'Content-Disposition: form-data; name="filename"; filename="user-data-105.iso"',
    ]);
    expect(parts[0]!.data.toString()).toBe('iso');
    expect(parts[1]!.data.toString()).toBe('sha256');
    expect(parts[2]!.data.toString()).toBe(checksum);
    expect(parts[3]!.data.equals(ISO)).toBe(true);
    expect(parts[3]!.headerLines.slice(1)).toEqual(['Content-Type: application/octet-stream']);
  });

  it('sends only content and the file part without a checksum', async () => {
    const { server, client } = await setup({ tokenId: 'omni@pve!provider', tokenSecret: 'tok' });
    await client.uploadFile('pve1', 'cephfs', { filename: 'x.iso', content: 'iso', data: new Uint8Array([1, 2, 3]) });
    const { parts } = parseMultipart(server.requests[0]!);
    expect(parts.map((p) => p.headerLines[0])).toEqual([
      'Content-Disposition: form-data; name="content"',
      'Content-Disposition: form-data; name="filename"; filename="x.iso"',
    ]);
    expect([...parts[1]!.data]).toEqual([1, 2, 3]);
  });

  it('authenticates uploads with a ticket too (cookie, harmless CSRF header)', async () => {
    const { server, client } = await setup({ username: 'omni@pve', password: 'pw' });
    await client.uploadFile('pve1', 'local', { filename: 'x.iso', content: 'iso', data: ISO });
    const up = server.requests.find((r) => r.path.endsWith('/upload'))!;
    expect(up.headers.cookie).toBe('PVEAuthCookie=PVE:omni@pve:67000001::sig');
    expect(up.headers.csrfpreventiontoken).toBe('67000001:csrf');
  });

  it('refuses file names that would break the part header, and a checksum without its algorithm', async () => {
    const { server, client } = await setup({ tokenId: 'omni@pve!provider', tokenSecret: 'tok' });
    await expect(client.uploadFile('pve1', 'local', { filename: 'a"b.iso', content: 'iso', data: ISO })).rejects.toThrow(TypeError);
    await expect(client.uploadFile('pve1', 'local', { filename: '../x.iso', content: 'iso', data: ISO })).rejects.toThrow(TypeError);
    await expect(
      client.uploadFile('pve1', 'local', { filename: 'x.iso', content: 'iso', data: ISO, checksum: 'abc' }),
    ).rejects.toThrow(/together/);
    expect(server.requests).toHaveLength(0);
  });
});
