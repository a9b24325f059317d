// HTTP(S) adapter: serves a PveSim on 127.0.0.1 with real sockets, PVE reason phrases and a self-signed certificate.
import { X509Certificate } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { generate } from 'selfsigned';
import type { PveSim } from './sim.js';

export interface PveSimServerOptions {
  https?: boolean;
  /** 0 (default) picks a free port. */
  port?: number;
  host?: '127.0.0.1';
}

export interface PveSimServer {
  /** e.g. `https://127.0.0.1:PORT` (append `/api2/json`). */
  url: string;
  /** The server certificate (self-signed, so it is its own CA). */
  caPem?: string;
  /** SHA-256 fingerprint of the certificate, `AA:BB:...`. */
  fingerprint?: string;
  close(): Promise<void>;
}

export async function startPveSimServer(sim: PveSim, opts: PveSimServerOptions = {}): Promise<PveSimServer> {
  const host = opts.host ?? '127.0.0.1';
  if (host !== '127.0.0.1') throw new Error('the simulator only listens on 127.0.0.1');
  const sockets = new Set<Socket>();
  const listener = (req: IncomingMessage, res: ServerResponse) => void serve(sim, req, res);
  let server: Server;
  let caPem: string | undefined;
  let fingerprint: string | undefined;
  if (opts.https) {
    const pems = await generate([{ name: 'commonName', value: 'pve-sim.localdomain' }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notAfterDate: new Date(Date.now() + 365 * 86400_000),
      extensions: [
        { name: 'basicConstraints', cA: true },
        { name: 'keyUsage', digitalSignature: true, keyCertSign: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }, { type: 2, value: 'localhost' }] },
      ],
    });
    caPem = pems.cert;
    fingerprint = new X509Certificate(pems.cert).fingerprint256;
    server = createHttpsServer({ key: pems.private, cert: pems.cert }, listener);
    server.on('secureConnection', (s: Socket) => track(sockets, s));
  } else {
    server = createHttpServer(listener);
  }
  server.on('connection', (s: Socket) => track(sockets, s));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${opts.https ? 'https' : 'http'}://${host}:${port}`,
    ...(caPem !== undefined ? { caPem } : {}),
    ...(fingerprint !== undefined ? { fingerprint } : {}),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

function track(sockets: Set<Socket>, s: Socket): void {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
}

async function serve(sim: PveSim, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of req) chunks.push(c as Buffer);
  } catch {
    return;
  }
  if (!req.httpVersion.startsWith('1.')) {
    res.writeHead(506, 'Variant Also Negotiates');
    res.end();
    return;
  }
  const response = await sim.handle({
    method: req.method ?? 'GET',
    path: req.url ?? '/',
    headers: req.headers,
    body: Buffer.concat(chunks),
  });
  if (response.transport === 'reset') {
    // A TLS socket cannot send a TCP RST from Node (ERR_INVALID_HANDLE_TYPE): close it abruptly instead.
    try {
      req.socket.resetAndDestroy();
    } catch {
      req.socket.destroy();
    }
    return;
  }
  if (response.transport === 'hang') return;
  res.statusCode = response.status;
  // The reason phrase may only hold visible ASCII and spaces.
  res.statusMessage = response.reason.replace(/[^\x20-\x7e]/g, '?');
  for (const [k, v] of Object.entries(response.headers)) res.setHeader(k, v);
  let body = response.body;
  // Like pveproxy: bodies over 1 KiB are gzipped when the client accepts it.
  if (body.length > 1024 && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
    body = gzipSync(body);
    res.setHeader('content-encoding', 'gzip');
  }
  res.setHeader('content-length', body.length);
  res.setHeader('server', 'pve-api-daemon/3.0');
  res.end(body);
}
