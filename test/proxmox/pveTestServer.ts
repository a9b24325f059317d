// Scripted HTTP(S) server on 127.0.0.1 for client tests: records every raw request and answers as the test says.
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import selfsigned from 'selfsigned';
import { afterEach } from 'vitest';
import { createLogger, type Logger } from '../../src/log.js';
import type { PveClient } from '../../src/proxmox/client.js';

export interface RecordedRequest {
  method: string;
  /** Raw request target as received (still percent-encoded). */
  url: string;
  /** Decoded path without the /api2/json prefix. */
  path: string;
  /** Raw (encoded) path without the /api2/json prefix and without the query. */
  rawPath: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Body parsed as x-www-form-urlencoded (empty for other content types). */
  form: URLSearchParams;
}

export interface Reply {
  status?: number;
  reason?: string;
  /** Sent as the JSON body. */
  json?: unknown;
  /** Sent as is. */
  raw?: string;
  /** Destroy the socket without answering (a lost response). */
  destroy?: boolean;
}

export type Route = (req: RecordedRequest) => Reply | Promise<Reply>;

export interface PveTestServer {
  url: string;
  port: number;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export function ok(data: unknown, extra: Record<string, unknown> = {}): Reply {
  return { json: { data, ...extra } };
}

export async function startPveServer(route: Route, tls?: { key: string; cert: string }): Promise<PveTestServer> {
  const requests: RecordedRequest[] = [];
  const listener: http.RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      const rawFull = q >= 0 ? url.slice(0, q) : url;
      const rawPath = rawFull.replace(/^\/api2\/json/, '');
      const body = Buffer.concat(chunks);
      const isForm = (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
      const rec: RecordedRequest = {
        method: req.method ?? '',
        url,
        rawPath,
        path: decodeURIComponent(rawPath),
        query: new URLSearchParams(q >= 0 ? url.slice(q + 1) : ''),
        headers: req.headers,
        body,
        form: new URLSearchParams(isForm ? body.toString('utf8') : ''),
      };
      requests.push(rec);
      Promise.resolve(route(rec))
        .then((reply) => {
          if (reply.destroy) {
            req.socket.destroy();
            return;
          }
          const status = reply.status ?? 200;
          const payload = reply.raw ?? (reply.json === undefined ? '' : JSON.stringify(reply.json));
          res.writeHead(status, reply.reason ?? http.STATUS_CODES[status] ?? '', {
            'content-type': 'application/json;charset=UTF-8',
            'content-length': Buffer.byteLength(payload),
          });
          res.end(payload);
        })
        .catch((err: unknown) => {
          res.writeHead(599, String(err));
          res.end();
        });
    });
  };
  const server = tls ? https.createServer({ key: tls.key, cert: tls.cert }, listener) : http.createServer(listener);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    port,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A port on 127.0.0.1 where nothing listens. */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A debug-level logger whose JSON lines are collected in `lines()`. */
export function capturedLogger(): { logger: Logger; text: () => string } {
  const out = new PassThrough();
  const chunks: string[] = [];
  out.on('data', (c: Buffer) => chunks.push(c.toString('utf8')));
  const logger = createLogger({ level: 'debug', destination: out });
  return { logger, text: () => chunks.join('') };
}

export interface TestPki {
  caCert: string;
  /** Leaf certificate for 127.0.0.1 signed by the CA, and its key. */
  leafCert: string;
  leafKey: string;
  /** A self-signed certificate for 127.0.0.1 (like a fresh PVE node's without its CA) and its key. */
  selfCert: string;
  selfKey: string;
  selfFingerprint256: string;
}

export async function makeTestPki(): Promise<TestPki> {
  const sans = {
    name: 'subjectAltName' as const,
    altNames: [
      { type: 7 as const, ip: '127.0.0.1' },
      { type: 2 as const, value: 'localhost' },
    ],
  };
  const ca = await selfsigned.generate([{ name: 'commonName', value: 'Test PVE Cluster CA' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
  const leaf = await selfsigned.generate([{ name: 'commonName', value: 'pve1' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    ca: { key: ca.private, cert: ca.cert },
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      sans,
    ],
  });
  const self = await selfsigned.generate([{ name: 'commonName', value: 'pve1' }], {
    keyType: 'ec',
    algorithm: 'sha256',
    extensions: [{ name: 'basicConstraints', cA: false }, { name: 'extKeyUsage', serverAuth: true }, sans],
  });
  const { X509Certificate } = await import('node:crypto');
  return {
    caCert: ca.cert,
    leafCert: leaf.cert,
    leafKey: leaf.private,
    selfCert: self.cert,
    selfKey: self.private,
    selfFingerprint256: new X509Certificate(self.cert).fingerprint256,
  };
}

/**
 * Servers and clients a test file opens, closed after each test. Call once at module level and push into the
 * returned arrays.
 */
export function closeAfterEach(): { servers: PveTestServer[]; clients: PveClient[] } {
  const servers: PveTestServer[] = [];
  const clients: PveClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return { servers, clients };
}
