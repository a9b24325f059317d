// Typed Proxmox VE REST client on undici: request encoding, authentication and retry rules, error mapping,
// and one method per endpoint the provider uses (proxmox-api.md §1.1).
import { Agent, FormData, Response } from 'undici';
import type { Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import {
  type PveAuthenticator,
  type PveCredentials,
  TicketAuthenticator,
  TokenAuthenticator,
  isTokenCredentials,
} from './auth.js';
import { PveConfigError, PveConnectionError, PveError, PveResponseShapeError } from './errors.js';
import { type PveTlsOptions, TLS_PIN_MISMATCH, buildPveConnector, tlsMode } from './tls.js';
import {
  type ClusterResource,
  type ClusterResourceType,
  type ClusterStatusEntry,
  type NodeListEntry,
  type NodeStatus,
  type PciMapping,
  type PveParamValue,
  type PveParams,
  type PveVersion,
  type QemuListEntry,
  type StorageContentEntry,
  type StorageEntry,
  type TaskLog,
  type TaskStatus,
  type TicketResponse,
  type UsbMapping,
  type VmConfig,
  type VmStatus,
  type VolumeInfo,
  decodeClusterResources,
  decodeClusterStatus,
  decodeNextId,
  decodeNodeList,
  decodeNodeStatus,
  decodePciMappings,
  decodeQemuList,
  decodeStorageContent,
  decodeStorageList,
  decodeTaskLog,
  decodeTaskStatus,
  decodeTicket,
  decodeUsbMappings,
  decodeVersion,
  decodeVmConfig,
  decodeVmStatus,
  decodeVolumeInfo,
  isRecord,
} from './types.js';
import { isUpid, parseUpid } from './upid.js';

export interface PveClientOptions {
  /** `https://host:8006`, with or without `/api2/json`. */
  url: string;
  auth: PveCredentials;
  tls?: PveTlsOptions;
  logger?: Logger;
  /** Time allowed for the answer headers and for gaps in the answer body (default 60 s). */
  requestTimeoutMs?: number;
  /** Same, for file uploads (default 10 min). */
  uploadTimeoutMs?: number;
  /** TCP + TLS connect timeout (default 10 s). */
  connectTimeoutMs?: number;
  /** Ticket sessions: renew once the ticket is this old (default 90 min). */
  ticketRenewAfterMs?: number;
  /** Clock for ticket ageing; for tests. */
  now?: () => number;
  /** Called after every HTTP attempt (metrics, diagnostics). Exceptions it throws are ignored. */
  onResponse?: (outcome: PveCallOutcome) => void;
  /** `User-Agent` of every request, e.g. `omni-infra-provider-proxmox/1.2.3 instance/<id>` (default: undici's). */
  userAgent?: string;
  /**
   * Called right before each attempt of a call that may change the cluster (any method but GET, the login
   * excepted); throwing refuses the call before anything is sent. The leader lease's fencing (src/omni/lease.ts).
   */
  writeGuard?: (method: string, path: string) => void;
}

/** One HTTP attempt against the Proxmox API, as seen by an onResponse hook. Carries nothing secret. */
export interface PveCallOutcome {
  method: string;
  /** HTTP status code, or 'error' when no answer arrived (connection, TLS, timeout). */
  status: number | 'error';
  /** Wall time of the attempt. */
  seconds: number;
  /** The server's Date header, when it sent one. */
  date?: string | undefined;
}

export type UploadContentType = 'iso' | 'vztmpl' | 'import';
export type ChecksumAlgorithm = 'md5' | 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512';

/**
 * Builds an API path from a template, URL-encoding every interpolated value as one path segment:
 * pvePath`/nodes/${node}/tasks/${upid}/status`.
 */
export function pvePath(strings: TemplateStringsArray, ...values: Array<string | number>): string {
  let out = strings[0] ?? '';
  values.forEach((v, i) => {
    out += encodePathSegment(String(v)) + (strings[i + 1] ?? '');
  });
  return out;
}

/** encodeURIComponent, plus the sub-delimiters it leaves alone (`!` appears in token UPIDs). */
export function encodePathSegment(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** A volume id (`local:iso/x.iso`) as a path tail: encoded, but with its `/` kept as PVE's own clients send it. */
function volumePath(volid: string): string {
  return encodePathSegment(volid).replace(/%2F/gi, '/');
}

function encodeParamValue(key: string, v: Exclude<PveParamValue, undefined>): string {
  if (typeof v === 'boolean') return v ? '1' : '0';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`parameter '${key}' is not a finite number`);
    return String(v);
  }
  if (typeof v === 'string') return v;
  throw new TypeError(`parameter '${key}' must be a string, number or boolean (Proxmox takes no lists or objects)`);
}

/** `application/x-www-form-urlencoded` / query-string encoding; booleans become 1/0, undefined is left out. */
export function encodePveParams(params: PveParams | undefined): string {
  if (!params) return '';
  const parts: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(encodeParamValue(k, v))}`);
  }
  return parts.join('&');
}

function safeDecode(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

interface RawAnswer {
  status: number;
  reasonPhrase: string;
  body: Buffer;
  date?: string | undefined;
}

interface CallOptions {
  query?: PveParams | undefined;
  form?: PveParams | undefined;
  multipart?: { body: Buffer; contentType: string } | undefined;
  timeoutMs?: number;
  /** Skip authentication (the login call itself). */
  anonymous?: boolean;
}

interface Envelope {
  data: unknown;
  total?: unknown;
}

const TLS_VERIFY_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Socket errors after which a GET is worth one more try (typically a kept-alive connection the server closed). */
const STALE_SOCKET_CODES = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE']);

/**
 * How long the node and storage lists are shared between the reads of one step (validation, placement, ISO storage
 * choice) and between requests started together: a step sees the cluster as it was at most this long ago.
 */
export const STEP_READ_MS = 2_000;

export class PveClient {
  /** Base URL including `/api2/json`, without a trailing slash. */
  readonly baseUrl: string;
  readonly #origin: string;
  readonly #basePath: string;
  readonly #agent: Agent;
  readonly #auth: PveAuthenticator;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #uploadTimeoutMs: number;
  readonly #onResponse: ((outcome: PveCallOutcome) => void) | undefined;
  readonly #userAgent: string | undefined;
  readonly #writeGuard: ((method: string, path: string) => void) | undefined;
  /** When (Date.now()) Proxmox last answered a call with 2xx: the health check trusts recent traffic. */
  lastOkAtMs = 0;
  /** When a call last failed to reach Proxmox or got a 5xx answer (the health check then asks itself). */
  lastFailAtMs = 0;
  /** The last node list read (any caller), with when it was read (a shared read: when it was served, at most its age later). */
  lastNodes: { atMs: number; nodes: NodeListEntry[] } | undefined;
  readonly #shared = new Map<string, { atMs: number; answer: Promise<unknown> }>();

  constructor(opts: PveClientOptions) {
    let u: URL;
    try {
      u = new URL(opts.url);
    } catch {
      throw new PveConfigError(`proxmox url ${JSON.stringify(opts.url)} is not a valid URL (e.g. https://pve1:8006)`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new PveConfigError(`proxmox url must use https:// (got ${u.protocol})`);
    }
    if (u.username || u.password) {
      throw new PveConfigError('proxmox url must not contain credentials; use the auth settings');
    }
    if (u.search || u.hash) throw new PveConfigError('proxmox url must not have a query or fragment');
    let p = u.pathname.replace(/\/+$/, '');
    if (p.endsWith('/api2/json')) p = p.slice(0, -'/api2/json'.length);
    this.#origin = u.origin;
    this.#basePath = `${p}/api2/json`;
    this.baseUrl = `${this.#origin}${this.#basePath}`;
    this.#log = (opts.logger ?? silentLogger).child({ component: 'proxmox', proxmox: this.#origin });
    this.#timeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.#uploadTimeoutMs = opts.uploadTimeoutMs ?? 10 * 60_000;
    this.#onResponse = opts.onResponse;
    this.#userAgent = opts.userAgent;
    this.#writeGuard = opts.writeGuard;

    if (isTokenCredentials(opts.auth)) {
      this.#auth = new TokenAuthenticator(opts.auth);
    } else {
      const ticketOpts: ConstructorParameters<typeof TicketAuthenticator>[2] = { logger: this.#log };
      if (opts.now) ticketOpts.now = opts.now;
      if (opts.ticketRenewAfterMs !== undefined) ticketOpts.renewAfterMs = opts.ticketRenewAfterMs;
      this.#auth = new TicketAuthenticator(opts.auth, (p) => this.#login(p), ticketOpts);
    }

    const mode = tlsMode(opts.tls);
    if (u.protocol === 'http:' && !['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) {
      this.#log.warn('proxmox url uses plain http; credentials travel unencrypted');
    }
    if (mode === 'insecure') {
      this.#log.warn(
        'TLS certificate verification is disabled (insecureSkipVerify); set a CA file or a certificate fingerprint instead',
      );
    }
    const connector = buildPveConnector(opts.tls, { connectTimeoutMs: opts.connectTimeoutMs ?? 10_000 });
    this.#agent = new Agent({ connect: connector, connections: 16 });
  }

  /** How this client authenticates, and as whom (never secret). */
  get principal(): { kind: 'token' | 'ticket'; id: string } {
    return { kind: this.#auth.kind, id: this.#auth.principal };
  }

  /** Closes idle connections; in-flight calls finish. */
  async close(): Promise<void> {
    await this.#agent.close();
  }

  // -------------------------------------------------------------------------------------------------------------
  // Generic calls. `path` is relative to /api2/json and already encoded (see pvePath).

  async get<T = unknown>(path: string, query?: PveParams): Promise<T> {
    return (await this.#call('GET', path, { query })).data as T;
  }

  /**
   * A GET whose answer may be shared for `ttlMs`: concurrent and repeated reads of the same path and query within that
   * time make one call (each caller gets its own copy). Only for lists that change rarely and that no safety decision
   * rests on (node list, storages, bridges, datacenter options, permissions, CPU models): VM, task and volume reads
   * always go to Proxmox. A failed read is not kept.
   */
  async getShared<T = unknown>(path: string, query: PveParams | undefined, ttlMs: number): Promise<T> {
    const key = `${path}?${query ? encodePveParams(query) : ''}`;
    const now = Date.now();
    let hit = this.#shared.get(key);
    if (!hit || now - hit.atMs >= ttlMs) {
      const answer = this.get<T>(path, query);
      hit = { atMs: now, answer };
      this.#shared.set(key, hit);
      answer.catch(() => {
        if (this.#shared.get(key)?.answer === answer) this.#shared.delete(key);
      });
      if (this.#shared.size > 256) for (const [k, v] of this.#shared) if (now - v.atMs >= 300_000) this.#shared.delete(k);
    }
    return structuredClone((await hit.answer) as T);
  }

  async post<T = unknown>(path: string, params?: PveParams): Promise<T> {
    return (await this.#call('POST', path, { form: params ?? {} })).data as T;
  }

  async put<T = unknown>(path: string, params?: PveParams): Promise<T> {
    return (await this.#call('PUT', path, { form: params ?? {} })).data as T;
  }

  async delete<T = unknown>(path: string, query?: PveParams): Promise<T> {
    return (await this.#call('DELETE', path, { query })).data as T;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Endpoints (proxmox-api.md §1.1)

  async version(): Promise<PveVersion> {
    return decodeVersion(await this.get('/version'));
  }

  /**
   * The cluster's nodes. With `maxAgeMs`, reads within that time share one call (see getShared); without, Proxmox
   * is asked.
   */
  async nodes(opts: { maxAgeMs?: number } = {}): Promise<NodeListEntry[]> {
    const maxAgeMs = opts.maxAgeMs ?? 0;
    const raw = maxAgeMs > 0 ? await this.getShared('/nodes', undefined, maxAgeMs) : await this.get('/nodes');
    const nodes = decodeNodeList(raw);
    this.lastNodes = { atMs: Date.now(), nodes };
    return nodes;
  }

  async nodeStatus(node: string): Promise<NodeStatus> {
    return decodeNodeStatus(await this.get(pvePath`/nodes/${node}/status`));
  }

  async clusterStatus(): Promise<ClusterStatusEntry[]> {
    return decodeClusterStatus(await this.get('/cluster/status'));
  }

  async clusterResources(type?: ClusterResourceType): Promise<ClusterResource[]> {
    return decodeClusterResources(await this.get('/cluster/resources', { type }));
  }

  async qemuList(node: string): Promise<QemuListEntry[]> {
    return decodeQemuList(await this.get(pvePath`/nodes/${node}/qemu`));
  }

  async vmStatus(node: string, vmid: number): Promise<VmStatus> {
    return decodeVmStatus(await this.get(pvePath`/nodes/${node}/qemu/${vmid}/status/current`));
  }

  async vmConfig(node: string, vmid: number, opts: { current?: boolean } = {}): Promise<VmConfig> {
    return decodeVmConfig(await this.get(pvePath`/nodes/${node}/qemu/${vmid}/config`, { current: opts.current }));
  }

  /** The lowest free VMID (no reservation: a concurrent caller may get the same). With `vmid`, asserts it is free. */
  async nextId(vmid?: number): Promise<number> {
    return decodeNextId(await this.get('/cluster/nextid', { vmid }));
  }

  /** `POST /nodes/{node}/qemu`; returns the `qmcreate` UPID. */
  async createVm(node: string, params: PveParams & { vmid: number }): Promise<string> {
    return this.#upid(await this.post(pvePath`/nodes/${node}/qemu`, params), 'create vm');
  }

  /** `PUT .../config`: applied synchronously. */
  async setVmConfig(node: string, vmid: number, params: PveParams): Promise<void> {
    await this.put(pvePath`/nodes/${node}/qemu/${vmid}/config`, params);
  }

  /** `POST .../config`: returns the `qmconfig` UPID. */
  async setVmConfigAsync(node: string, vmid: number, params: PveParams): Promise<string> {
    return this.#upid(await this.post(pvePath`/nodes/${node}/qemu/${vmid}/config`, params), 'set vm config');
  }

  async startVm(node: string, vmid: number, opts: { timeout?: number } = {}): Promise<string> {
    return this.#upid(await this.post(pvePath`/nodes/${node}/qemu/${vmid}/status/start`, { timeout: opts.timeout }), 'start vm');
  }

  async stopVm(node: string, vmid: number, opts: { timeout?: number; overruleShutdown?: boolean } = {}): Promise<string> {
    const params = { timeout: opts.timeout, 'overrule-shutdown': opts.overruleShutdown };
    return this.#upid(await this.post(pvePath`/nodes/${node}/qemu/${vmid}/status/stop`, params), 'stop vm');
  }

  async shutdownVm(node: string, vmid: number, opts: { timeout?: number; forceStop?: boolean } = {}): Promise<string> {
    const params = { timeout: opts.timeout, forceStop: opts.forceStop };
    return this.#upid(await this.post(pvePath`/nodes/${node}/qemu/${vmid}/status/shutdown`, params), 'shutdown vm');
  }

  /** `DELETE /nodes/{node}/qemu/{vmid}`; returns the `qmdestroy` UPID. */
  async deleteVm(
    node: string,
    vmid: number,
    opts: { purge?: boolean; destroyUnreferencedDisks?: boolean } = {},
  ): Promise<string> {
    const query = { purge: opts.purge, 'destroy-unreferenced-disks': opts.destroyUnreferencedDisks };
    return this.#upid(await this.delete(pvePath`/nodes/${node}/qemu/${vmid}`, query), 'delete vm');
  }

  /** A node's storages. With `maxAgeMs`, reads within that time share one call (see getShared). */
  async storageList(node: string, opts: { content?: string; enabled?: boolean; maxAgeMs?: number } = {}): Promise<StorageEntry[]> {
    const path = pvePath`/nodes/${node}/storage`;
    const query = { content: opts.content, enabled: opts.enabled };
    return decodeStorageList(opts.maxAgeMs ? await this.getShared(path, query, opts.maxAgeMs) : await this.get(path, query));
  }

  async storageContent(
    node: string,
    storage: string,
    opts: { content?: string; vmid?: number } = {},
  ): Promise<StorageContentEntry[]> {
    const query = { content: opts.content, vmid: opts.vmid };
    return decodeStorageContent(await this.get(pvePath`/nodes/${node}/storage/${storage}/content`, query));
  }

  /** `GET .../content/{volume}`. Prefer storageContent() to test existence: the "missing" error text varies. */
  async volumeInfo(node: string, storage: string, volid: string): Promise<VolumeInfo> {
    return decodeVolumeInfo(await this.get(`${pvePath`/nodes/${node}/storage/${storage}/content/`}${volumePath(volid)}`));
  }

  /** Deletes a volume; returns the `imgdel` UPID, or null when it finished within `delay` seconds. */
  async deleteVolume(node: string, storage: string, volid: string, opts: { delay?: number } = {}): Promise<string | null> {
    const data = await this.delete(`${pvePath`/nodes/${node}/storage/${storage}/content/`}${volumePath(volid)}`, {
      delay: opts.delay,
    });
    return data === null || data === undefined ? null : this.#upid(data, 'delete volume');
  }

  /** Makes Proxmox download `url` into the storage; returns the `download` UPID. */
  async downloadUrl(
    node: string,
    storage: string,
    opts: {
      url: string;
      filename: string;
      content: UploadContentType;
      checksum?: string;
      checksumAlgorithm?: ChecksumAlgorithm;
      verifyCertificates?: boolean;
    },
  ): Promise<string> {
    const params: PveParams = {
      url: opts.url,
      content: opts.content,
      filename: opts.filename,
      checksum: opts.checksum,
      'checksum-algorithm': opts.checksumAlgorithm,
      'verify-certificates': opts.verifyCertificates,
    };
    return this.#upid(await this.post(pvePath`/nodes/${node}/storage/${storage}/download-url`, params), 'download url');
  }

  /**
   * Uploads a file (multipart, in the exact order PVE's parser wants: `content`, checksum fields, then the file part
   * named `filename`). Returns the `imgcopy` UPID, whose node is the entry node, not necessarily `node`.
   */
  async uploadFile(
    node: string,
    storage: string,
    opts: {
      filename: string;
      content: UploadContentType;
      data: Buffer | Uint8Array;
      checksum?: string;
      checksumAlgorithm?: ChecksumAlgorithm;
    },
  ): Promise<string> {
    if (/["\r\n\\/]/.test(opts.filename) || opts.filename === '') {
      throw new TypeError(`upload filename ${JSON.stringify(opts.filename)} must be a plain file name`);
    }
    if ((opts.checksum === undefined) !== (opts.checksumAlgorithm === undefined)) {
      throw new TypeError('upload checksum and checksumAlgorithm must be given together');
    }
    const form = new FormData();
    form.append('content', opts.content);
    if (opts.checksumAlgorithm !== undefined && opts.checksum !== undefined) {
      form.append('checksum-algorithm', opts.checksumAlgorithm);
      form.append('checksum', opts.checksum);
    }
    const bytes = opts.data instanceof Buffer ? opts.data : Buffer.from(opts.data.buffer, opts.data.byteOffset, opts.data.byteLength);
    form.append('filename', new Blob([bytes]), opts.filename);
    // Serialise with undici's own encoder so the body has a known length (PVE rejects chunked uploads).
    const encoded = new Response(form);
    const contentType = encoded.headers.get('content-type');
    if (!contentType) throw new Error('multipart encoder produced no content type');
    const body = Buffer.from(await encoded.arrayBuffer());
    const res = await this.#call('POST', pvePath`/nodes/${node}/storage/${storage}/upload`, {
      multipart: { body, contentType },
      timeoutMs: this.#uploadTimeoutMs,
    });
    return this.#upid(res.data, 'upload');
  }

  async taskStatus(upid: string): Promise<TaskStatus> {
    const { node } = parseUpid(upid);
    return decodeTaskStatus(await this.get(pvePath`/nodes/${node}/tasks/${upid}/status`));
  }

  async taskLog(upid: string, opts: { start?: number; limit?: number } = {}): Promise<TaskLog> {
    const { node } = parseUpid(upid);
    const res = await this.#call('GET', pvePath`/nodes/${node}/tasks/${upid}/log`, {
      query: { start: opts.start, limit: opts.limit },
    });
    return decodeTaskLog(res.data, res.total);
  }

  /** Asks Proxmox to stop a running task (it then ends with an interrupt error). */
  async stopTask(upid: string): Promise<void> {
    const { node } = parseUpid(upid);
    await this.delete(pvePath`/nodes/${node}/tasks/${upid}`);
  }

  async pciMappings(): Promise<PciMapping[]> {
    return decodePciMappings(await this.get('/cluster/mapping/pci'));
  }

  async usbMappings(): Promise<UsbMapping[]> {
    return decodeUsbMappings(await this.get('/cluster/mapping/usb'));
  }

  // -------------------------------------------------------------------------------------------------------------
  // Transport

  #upid(data: unknown, what: string): string {
    if (!isUpid(data)) {
      throw new PveResponseShapeError(`${what}: expected a task id (UPID), got ${data === null ? 'null' : typeof data}`);
    }
    return data;
  }

  async #login(p: { username: string; password: string }): Promise<TicketResponse> {
    const res = await this.#call('POST', '/access/ticket', { form: p, anonymous: true });
    return decodeTicket(res.data);
  }

  async #call(method: string, path: string, opts: CallOptions): Promise<Envelope> {
    if (!path.startsWith('/')) throw new TypeError(`proxmox API path must start with '/': ${path}`);
    const qs = encodePveParams(opts.query);
    const target = `${this.#basePath}${path}${qs ? `?${qs}` : ''}`;
    const shownPath = safeDecode(path);
    let body: Buffer | undefined;
    const baseHeaders: Record<string, string> = { accept: 'application/json' };
    if (this.#userAgent !== undefined) baseHeaders['user-agent'] = this.#userAgent;
    const guarded = method !== 'GET' && method !== 'HEAD' && !opts.anonymous;
    if (opts.multipart) {
      body = opts.multipart.body;
      baseHeaders['content-type'] = opts.multipart.contentType;
    } else if (opts.form) {
      body = Buffer.from(encodePveParams(opts.form), 'utf8');
      baseHeaders['content-type'] = 'application/x-www-form-urlencoded';
    }
    if (body) baseHeaders['content-length'] = String(body.length);

    let reauthenticated = false;
    let staleRetried = false;
    for (;;) {
      const auth = opts.anonymous ? { headers: {}, generation: -1 } : await this.#auth.authorize(method);
      // Checked after the (possibly slow) authorization, immediately before the request is handed to the socket.
      if (guarded && this.#writeGuard) this.#writeGuard(method, shownPath);
      const started = Date.now();
      let answer: RawAnswer;
      try {
        answer = await this.#send(method, target, shownPath, { ...baseHeaders, ...auth.headers }, body, opts.timeoutMs);
      } catch (err) {
        this.#report({ method, status: 'error', seconds: (Date.now() - started) / 1000 });
        this.lastFailAtMs = Date.now();
        // A GET is safe to repeat; a kept-alive socket closed by the server is the common cause.
        if (err instanceof PveConnectionError && method === 'GET' && !staleRetried && STALE_SOCKET_CODES.has(err.code)) {
          staleRetried = true;
          this.#log.debug({ method, path: shownPath, code: err.code }, 'proxmox connection dropped; retrying GET once');
          continue;
        }
        if (err instanceof PveConnectionError) {
          this.#log.debug({ method, path: shownPath, code: err.code, mayHaveExecuted: err.mayHaveExecuted }, 'proxmox call failed');
        }
        throw err;
      }
      this.#log.debug({ method, path: shownPath, status: answer.status, ms: Date.now() - started }, 'proxmox call');
      this.#report({ method, status: answer.status, seconds: (Date.now() - started) / 1000, date: answer.date });

      // A 401 means the request was not executed, so repeating it after a new login is safe for any method.
      if (answer.status === 401 && !opts.anonymous && !reauthenticated && this.#auth.unauthorized(auth.generation)) {
        reauthenticated = true;
        continue;
      }
      if (answer.status >= 500) this.lastFailAtMs = Date.now();
      if (answer.status < 200 || answer.status >= 300) throw this.#httpError(method, shownPath, answer);
      this.lastOkAtMs = Date.now();
      return this.#envelope(method, shownPath, answer);
    }
  }

  #report(outcome: PveCallOutcome): void {
    if (!this.#onResponse) return;
    try {
      this.#onResponse(outcome);
    } catch {
      // A broken hook must not break API calls.
    }
  }

  #httpError(method: string, path: string, a: RawAnswer): PveError {
    let bodyMessage: string | undefined;
    let errors: Record<string, string> | undefined;
    const parsed = parseJson(a.body);
    if (isRecord(parsed)) {
      if (typeof parsed.message === 'string') bodyMessage = parsed.message;
      if (isRecord(parsed.errors)) {
        errors = {};
        for (const [k, v] of Object.entries(parsed.errors)) errors[k] = typeof v === 'string' ? v : JSON.stringify(v);
      }
    }
    return new PveError({ method, path, status: a.status, reasonPhrase: a.reasonPhrase, bodyMessage, errors });
  }

  #envelope(method: string, path: string, a: RawAnswer): Envelope {
    const parsed = parseJson(a.body);
    if (!isRecord(parsed) || !('data' in parsed)) {
      throw new PveResponseShapeError(`${method} ${path}: answer ${a.status} is not a Proxmox JSON envelope ({"data": ...})`);
    }
    return { data: parsed.data, total: parsed.total };
  }

  #send(
    method: string,
    target: string,
    shownPath: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
    timeoutMs: number | undefined,
  ): Promise<RawAnswer> {
    const timeout = timeoutMs ?? this.#timeoutMs;
    return new Promise<RawAnswer>((resolve, reject) => {
      let written = false;
      let status = 0;
      let reasonPhrase = '';
      let date: string | undefined;
      const chunks: Buffer[] = [];
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart: () => {
          written = true;
        },
        onResponseStart: (_controller, statusCode, headers, statusMessage) => {
          status = statusCode;
          reasonPhrase = statusMessage ?? '';
          const d = headers['date'];
          date = Array.isArray(d) ? d[0] : d;
        },
        onResponseData: (_controller, chunk) => {
          chunks.push(chunk);
        },
        onResponseEnd: () => {
          resolve({ status, reasonPhrase, body: Buffer.concat(chunks), date });
        },
        onResponseError: (_controller, err) => {
          reject(connectionError(method, shownPath, err, written, timeout));
        },
      };
      try {
        this.#agent.dispatch(
          {
            origin: this.#origin,
            path: target,
            method: method as Dispatcher.HttpMethod,
            headers,
            body: body ?? null,
            headersTimeout: timeout,
            bodyTimeout: timeout,
          },
          handler,
        );
      } catch (err) {
        reject(connectionError(method, shownPath, err, false, timeout));
      }
    });
  }
}

function parseJson(b: Buffer): unknown {
  if (b.length === 0) return undefined;
  try {
    return JSON.parse(b.toString('utf8'));
  } catch {
    return undefined;
  }
}

function connectionError(method: string, path: string, err: unknown, written: boolean, timeoutMs: number): PveConnectionError {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : 'UNKNOWN';
  let detail: string;
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      detail = `no answer from Proxmox within ${Math.round(timeoutMs / 1000)} s`;
      break;
    case 'UND_ERR_CONNECT_TIMEOUT':
      detail = 'timed out connecting to Proxmox';
      break;
    case 'ECONNREFUSED':
      detail = 'connection refused by Proxmox';
      break;
    case TLS_PIN_MISMATCH:
      detail = typeof e?.message === 'string' ? e.message : 'certificate does not match the pinned fingerprint';
      break;
    default:
      if (TLS_VERIFY_CODES.has(code) || /certificate/i.test(String(e?.message))) {
        detail = `TLS verification of the Proxmox certificate failed (${String(e?.message)}); set tls.caFile to the cluster CA (/etc/pve/pve-root-ca.pem) or pin tls.fingerprint`;
        break;
      }
      detail = typeof e?.message === 'string' ? e.message : String(err);
  }
  const mayHaveExecuted = written;
  if (mayHaveExecuted) detail += ' (the request was sent; it may have been executed)';
  return new PveConnectionError({ method, path, code, mayHaveExecuted, detail, cause: err });
}
