// The children's only way out: a loopback CONNECT proxy (given to them as HTTP(S)_PROXY) that maps the public
// image factory (factory.talos.dev:443) onto the in-process fake factory behind a TLS endpoint signed by a test CA
// (given as SSL_CERT_FILE), and refuses and records every other destination. Nothing leaves 127.0.0.1.
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';

export const PUBLIC_FACTORY_HOST = 'factory.talos.dev';

export interface OutboundGuard {
  /** http://127.0.0.1:PORT, for HTTPS_PROXY / HTTP_PROXY. */
  url: string;
  /** PEM file of the test CA that signed the stand-in factory.talos.dev certificate, for SSL_CERT_FILE. */
  caFile: string;
  /** Destinations refused (`host:port` for CONNECT, absolute URLs for plain proxy requests). */
  attempts: string[];
  /** Requests relayed to the fake factory (`METHOD path`). */
  factoryRequests: string[];
  close(): Promise<void>;
}

/** `factoryUrl`: the in-process fake image factory (http://127.0.0.1:PORT); without it the factory is refused too. */
export async function startOutboundGuard(opts: { factoryUrl?: string } = {}): Promise<OutboundGuard> {
  const attempts: string[] = [];
  const factoryRequests: string[] = [];
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };

  const pems = await generate([{ name: 'commonName', value: PUBLIC_FACTORY_HOST }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notAfterDate: new Date(Date.now() + 7 * 86400_000),
    extensions: [
      { name: 'basicConstraints', cA: true },
      { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: PUBLIC_FACTORY_HOST }] },
    ],
  });
  new X509Certificate(pems.cert); // fail early on a malformed certificate
  const dir = await mkdtemp(join(tmpdir(), 'bench-ca-'));
  const caFile = join(dir, 'ca.pem');
  await writeFile(caFile, pems.cert);

  // TLS endpoint that impersonates factory.talos.dev and relays to the fake factory.
  const factoryTarget = opts.factoryUrl ? new URL(opts.factoryUrl) : undefined;
  const tlsFront = createHttpsServer({ key: pems.private, cert: pems.cert }, (req, res) => {
    factoryRequests.push(`${req.method ?? '?'} ${req.url ?? ''}`);
    if (!factoryTarget) {
      res.writeHead(502).end();
      return;
    }
    const upstream = httpRequest(
      { host: factoryTarget.hostname, port: factoryTarget.port, method: req.method, path: req.url, headers: { ...req.headers, host: factoryTarget.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  tlsFront.on('connection', track);
  await new Promise<void>((res) => tlsFront.listen(0, '127.0.0.1', res));
  const tlsPort = (tlsFront.address() as AddressInfo).port;

  const proxy: Server = createServer((req, res) => {
    attempts.push(req.url ?? '?');
    res.writeHead(403, 'outbound traffic is not allowed in this test').end();
  });
  proxy.on('connection', track);
  proxy.on('connect', (req, socket: Socket, head: Buffer) => {
    const target = req.url ?? '?';
    if (target !== `${PUBLIC_FACTORY_HOST}:443` || !factoryTarget) {
      attempts.push(target);
      socket.end('HTTP/1.1 403 outbound traffic is not allowed in this test\r\n\r\n');
      return;
    }
    const inner = connect(tlsPort, '127.0.0.1', () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) inner.write(head);
      inner.pipe(socket);
      socket.pipe(inner);
    });
    track(inner);
    inner.on('error', () => socket.destroy());
    socket.on('error', () => inner.destroy());
  });
  await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', res));
  const { port } = proxy.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    caFile,
    attempts,
    factoryRequests,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise<void>((r) => proxy.close(() => r())), new Promise<void>((r) => tlsFront.close(() => r()))]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
