// The operational HTTP endpoint: `/healthz` (process alive), `/readyz` (Omni heartbeat and Proxmox check
// healthy, else 503 with the failing checks) and `/metrics` (Prometheus text format).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { type HealthReport, readiness } from './health.js';
import { type ListenAddress, parseListenAddress } from './listen.js';
import { PROMETHEUS_CONTENT_TYPE } from './metrics.js';

export interface OpsServerOptions {
  /** Where to listen: a parsed address or its text form (`:8080`, `127.0.0.1:0`). `off` is refused here. */
  listen: ListenAddress | string;
  /** Current readiness inputs; called on every `/readyz`. */
  health: () => HealthReport;
  /** Something that renders the Prometheus text (a MetricsRegistry), or a function returning it. */
  metrics: { render(): string } | (() => string);
  logger?: Logger;
}

export interface OpsServer {
  /** Bound host (as reported by the OS) and port. */
  readonly host: string;
  readonly port: number;
  /** Base URL for a client on this machine, e.g. `http://127.0.0.1:8080`. */
  readonly url: string;
  close(): Promise<void>;
}

const ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** Starts the server; resolves once it is listening (rejects if the address cannot be bound). */
export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const logger = opts.logger ?? silentLogger;
  const listen = typeof opts.listen === 'string' ? parseListenAddress(opts.listen) : opts.listen;
  if (listen === null) throw new Error('the ops server is disabled (healthListen is "off"); do not start it');
  const render = typeof opts.metrics === 'function' ? opts.metrics : () => (opts.metrics as { render(): string }).render();

  const server: Server = createServer((req, res) => {
    try {
      handle(req, res, opts.health, render);
    } catch (err) {
      logger.error({ err, path: req.url }, 'ops endpoint failed');
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    }
  });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'ops server error'));

  const addr = server.address() as AddressInfo;
  const url = `http://${clientHost(listen.host, addr)}:${addr.port}`;
  logger.info({ address: addr.address, port: addr.port, url }, 'ops endpoint listening (/healthz, /readyz, /metrics)');
  return {
    host: addr.address,
    port: addr.port,
    url,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function handle(
  req: IncomingMessage,
  res: ServerResponse,
  health: () => HealthReport,
  render: () => string,
): void {
  const path = (req.url ?? '/').split('?')[0]!;
  if (!ROUTES.has(path)) {
    send(res, 404, 'text/plain; charset=utf-8', 'not found; try /healthz, /readyz or /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  if (path === '/healthz') {
    send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
  } else if (path === '/readyz') {
    const report = health();
    const r = readiness(report);
    const role = report.role !== undefined ? { role: report.role } : {};
    const body = r.ready
      ? { status: 'ready', ...role, checks: report.checks }
      : { status: 'not ready', ...role, failed: r.failed, checks: report.checks };
    send(res, r.ready ? 200 : 503, 'application/json; charset=utf-8', `${JSON.stringify(body, null, 2)}\n`);
  } else {
    send(res, 200, PROMETHEUS_CONTENT_TYPE, render());
  }
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** A host a local client can connect to: the wildcard addresses become loopback. */
function clientHost(requested: string | undefined, addr: AddressInfo): string {
  if (requested === undefined || addr.address === '::' || addr.address === '0.0.0.0') {
    return addr.family === 'IPv6' && requested !== undefined && requested !== '0.0.0.0' ? '[::1]' : '127.0.0.1';
  }
  return addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
}
