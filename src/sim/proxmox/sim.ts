// PveSim: the socket-free Proxmox VE API simulator — request decoding, auth, routing, faults, envelopes, accessors.
import type { Logger } from '../../log.js';
import { silentLogger } from '../../log.js';
import { AccessControl, type Caller } from './auth.js';
import { ManualClock, ScaledClock, type SimClock } from './clock.js';
import { PveApiError, paramError, serverError } from './errors.js';
import { FaultPlan, type RequestFault } from './faults.js';
import { defaultRootPassword, defaultTokenId, defaultTokenSecret, type PveFixture } from './fixture.js';
import { parseUpload, type UploadBody } from './multipart.js';
import { SeededRandom } from '../rng.js';
import { matchRoute, WithTotal, type Route, type RouteContext } from './routing.js';
import { accessRoutes } from './routes/access.js';
import { clusterRoutes } from './routes/cluster.js';
import { haReconcile, haRoutes, SimHa } from './ha.js';
import { nodeRoutes } from './routes/nodes.js';
import { haStartVm, haStopVm, qemuRoutes } from './routes/qemu.js';
import { storageRoutes } from './routes/storage.js';
import { ClusterState, type SimVm, type SimVolume } from './state.js';
import { TaskBoard, type SimTask, type TaskFilter } from './tasks.js';
import { checkParams, type Params, type ParamValue } from './validate.js';
import { versionProfiles, type VersionProfile, type VersionProfileName } from './version.js';
import { seedFixture, createFixtureVm } from './seed.js';

export interface SimRequest {
  method: string;
  /** Full request path, e.g. `/api2/json/nodes` (a query string here is accepted too). */
  path: string;
  query?: string | Record<string, string>;
  headers?: Readonly<Record<string, string | string[] | undefined>>;
  body?: Buffer;
}

export interface SimResponse {
  status: number;
  reason: string;
  headers: Record<string, string>;
  body: Buffer;
  /** For the server adapter: drop the connection, or never answer. */
  transport?: 'reset' | 'hang';
}

export interface RequestRecord {
  atMs: number;
  method: string;
  /** Path below /api2/json. */
  path: string;
  route?: string;
  params: Record<string, string>;
  status: number;
  authid?: string;
  /** The request's User-Agent header (the provider puts its instance ID there: tells two instances' calls apart). */
  userAgent?: string;
}

export interface SimEvent {
  atMs: number;
  kind: string;
  detail: Record<string, unknown>;
}

export interface PveSimOptions {
  fixture: PveFixture;
  /** Default: a ScaledClock with the fixture's timeScale. */
  clock?: SimClock;
  logger?: Logger;
}

const jsonType = 'application/json;charset=UTF-8';
const allRoutes: Route[] = [...accessRoutes, ...clusterRoutes, ...haRoutes, ...nodeRoutes, ...qemuRoutes, ...storageRoutes];

export class PveSim {
  readonly clock: SimClock;
  readonly rng: SeededRandom;
  readonly state = new ClusterState();
  /** HA resources, rules (PVE 9) and groups (PVE 8): /etc/pve/ha. */
  readonly ha = new SimHa();
  readonly access: AccessControl;
  readonly taskBoard: TaskBoard;
  readonly faults: FaultPlan;
  readonly requests: RequestRecord[] = [];
  readonly events: SimEvent[] = [];
  profile: VersionProfile;
  shuffleLists: boolean;
  authFailDelayMs: number;
  offlineConnectDelayMs: number;
  downloadSizeBytes: number;
  /** Download failure to apply to the next download-url tasks (message), see `failDownloads`. */
  downloadFailures: string[] = [];
  /** VMs whose guest ignores ACPI/agent shutdown requests. */
  readonly shutdownIgnored = new Set<number>();
  /** RRD cadence: new VMs show `status: unknown` in /cluster/resources until the next sample. 0 = no lag. */
  statsCadenceMs: number;
  /** Per-VM flock emulation: held (by a backup, migration, ...) until this simulated time. */
  readonly vmMutexUntil = new Map<number, number>();
  /** One-shot hooks run after a `/cluster/nextid` answer (external actor grabbing the id). */
  afterNextId: Array<(vmid: number) => void> = [];
  private readonly log: Logger;
  private readonly changeListeners = new Set<(request?: RequestRecord) => void>();
  private readonly arrivalListeners = new Set<(request: RequestRecord) => void>();

  constructor(opts: PveSimOptions) {
    const f = opts.fixture;
    this.log = opts.logger ?? silentLogger;
    this.clock = opts.clock ?? new ScaledClock(f.timeScale ?? 1);
    this.rng = new SeededRandom(f.seed ?? 1);
    this.profile = versionProfiles[f.versionProfile ?? 'pve9'];
    this.shuffleLists = f.shuffleLists ?? true;
    this.authFailDelayMs = f.authFailDelayMs ?? 3000;
    this.offlineConnectDelayMs = f.offlineConnectDelayMs ?? 0;
    this.downloadSizeBytes = f.downloadSizeBytes ?? 8 * 1024 * 1024;
    this.statsCadenceMs = f.statsCadenceMs ?? 10_000;
    this.access = new AccessControl({
      clock: this.clock,
      rng: this.rng,
      profile: () => this.profile,
      ...(f.ticketLifetimeMs !== undefined ? { ticketLifetimeMs: f.ticketLifetimeMs } : {}),
    });
    this.faults = new FaultPlan(this.rng, () => this.clock.now());
    this.taskBoard = new TaskBoard(
      this.clock,
      f.taskDurations ?? {},
      (t) => this.faults.taskOutcome(t),
      (node) => this.state.nodes.get(node)?.bootedAtMs ?? 0,
      f.contention,
    );
    seedFixture(this, f);
    for (const vm of this.state.vms.values()) if (vm.haManaged) this.ha.addResource(this, `vm:${vm.vmid}`, { state: vm.running ? 'started' : 'stopped' });
    if (!this.access.users.has('root@pam')) this.access.addUser({ userid: 'root@pam', password: defaultRootPassword, enabled: true });
    if (!f.tokens) {
      this.access.addToken({ fullid: defaultTokenId, userid: 'root@pam', secret: defaultTokenSecret, privsep: false, expire: 0 });
    }
  }

  setVersionProfile(name: VersionProfileName): void {
    this.profile = versionProfiles[name];
  }

  // ---- request handling ----

  async handle(req: SimRequest): Promise<SimResponse> {
    this.tick();
    const method = req.method.toUpperCase();
    const headers = lowerHeaders(req.headers ?? {});
    const [rawPath, rawQuery] = splitQuery(req.path);
    const record: RequestRecord = { atMs: this.clock.now(), method, path: rawPath, params: {}, status: 0 };
    if (headers['user-agent'] !== undefined) record.userAgent = headers['user-agent'];
    this.requests.push(record);
    for (const listener of [...this.arrivalListeners]) listener(record);
    const done = (res: SimResponse): SimResponse => {
      record.status = res.status;
      this.log.debug({ method, path: record.path, status: res.status }, 'pve-sim request');
      this.changed(record);
      return res;
    };

    // The node the API URL points at is down: nothing answers.
    if (this.state.nodes.get(this.state.entryNode)?.online === false) {
      await this.clock.sleep(this.offlineConnectDelayMs);
      return done({ status: 0, reason: 'connection refused', headers: {}, body: Buffer.alloc(0), transport: 'reset' });
    }
    if (!rawPath.startsWith('/api2/json/') && rawPath !== '/api2/json') {
      return done(this.errorResponse(new PveApiError(501, `Method '${method} ${rawPath}' not implemented`)));
    }
    const apiPath = rawPath.slice('/api2/json'.length) || '/';
    record.path = apiPath;
    let segments: string[];
    try {
      segments = apiPath.split('/').filter(Boolean).map((s) => decodeURIComponent(s));
    } catch {
      return done(this.errorResponse(new PveApiError(400, 'invalid url')));
    }
    let route: Route | undefined;
    let pathParams: Record<string, string> = {};
    for (const r of allRoutes) {
      if (r.method !== method) continue;
      if (r.available && !r.available(this)) continue;
      const m = matchRoute(r.pattern, segments);
      if (m) {
        route = r;
        pathParams = m;
        break;
      }
    }
    if (!route) return done(this.errorResponse(new PveApiError(501, `Method '${method} ${apiPath}' not implemented`)));
    record.route = route.pattern;

    const vmidText = pathParams['vmid'];
    const faults = this.faults.requestFaults({
      method,
      route: route.pattern,
      path: apiPath,
      ...(pathParams['node'] !== undefined ? { node: pathParams['node'] } : {}),
      ...(vmidText !== undefined && /^\d+$/.test(vmidText) ? { vmid: Number(vmidText) } : {}),
    });
    for (const f of faults) {
      if (f.kind === 'latency') await this.clock.sleep(f.ms + (f.jitterMs ? this.rng.int(f.jitterMs + 1) : 0));
    }
    const early = faults.find((f) => f.kind === 'connReset' || f.kind === 'hang' || f.kind === 'httpError');
    if (early) return done(this.faultResponse(early));

    try {
      const caller = route.noAuth ? undefined : await this.authenticate(headers, method, route.csrfExempt === true);
      if (caller) record.authid = caller.authid;

      // Parameters: query for GET/DELETE; body (+ query on top) for POST/PUT.
      const params: Params = {};
      let upload: UploadBody | undefined;
      if (method === 'POST' || method === 'PUT') {
        const body = req.body ?? Buffer.alloc(0);
        if (route.upload) {
          upload = parseUpload(headers, body);
          Object.assign(params, upload.fields);
          params['filename'] = upload.filename;
        } else {
          if (body.length > this.profile.bodyLimitBytes) throw new PveApiError(501, 'for data too large');
          Object.assign(params, decodeBody(headers['content-type'], body));
        }
      }
      Object.assign(params, decodeQuery(rawQuery, req.query));
      const conflicts: Record<string, string> = {};
      for (const [k, v] of Object.entries(pathParams)) {
        if (params[k] !== undefined && String(params[k]) !== v) {
          conflicts[k] = 'duplicate parameter (already defined in URI) with conflicting values!';
        }
        params[k] = v;
      }
      if (Object.keys(conflicts).length) throw paramError(conflicts);
      record.params = Object.fromEntries(
        Object.entries(params).map(([k, v]) => [k, k === 'password' ? '[redacted]' : String(v)]),
      );

      // Proxy to the node in the path.
      let node;
      if (pathParams['node'] !== undefined) {
        node = this.state.resolveNode(pathParams['node']);
        if (!node.online) {
          await this.clock.sleep(this.offlineConnectDelayMs);
          throw new PveApiError(595, 'No route to host', undefined, 'proxy');
        }
      }
      this.tick();
      const checked = checkParams(route.schema, params, route.schemaOptions ?? {});
      const ctx: RouteContext = {
        sim: this,
        caller: caller ?? { authid: '', userid: '', via: 'ticket' },
        params: checked,
        method,
        path: apiPath,
        ...(node ? { node } : {}),
        ...(upload ? { upload } : {}),
      };
      const result = await route.handler(ctx);
      const after = faults.find((f) => f.kind === 'lostResponse' || f.kind === 'badBody');
      const res = this.okResponse(result);
      if (after) return done(this.afterCommitFault(after, res));
      return done(res);
    } catch (err) {
      if (err instanceof PveApiError) return done(this.errorResponse(err));
      this.log.error({ err }, 'pve-sim handler failed');
      return done(this.errorResponse(new PveApiError(500, err instanceof Error ? err.message : String(err))));
    }
  }

  private async authenticate(
    headers: Record<string, string | undefined>,
    method: string,
    csrfExempt: boolean,
  ): Promise<Caller> {
    try {
      return this.access.authenticate(headers, method, csrfExempt || method === 'GET');
    } catch (err) {
      if (err instanceof PveApiError && err.status === 401) await this.clock.sleep(this.authFailDelayMs);
      throw err;
    }
  }

  private okResponse(result: unknown): SimResponse {
    const payload = result instanceof WithTotal ? { data: result.data, total: result.total } : { data: result ?? null };
    return this.jsonResponse(200, 'OK', payload);
  }

  private jsonResponse(status: number, reason: string, payload: unknown): SimResponse {
    return {
      status,
      reason,
      headers: { 'content-type': jsonType, 'cache-control': 'max-age=0', pragma: 'no-cache' },
      body: Buffer.from(JSON.stringify(payload)),
    };
  }

  errorResponse(err: PveApiError): SimResponse {
    const message = err.message.endsWith('\n') ? err.message : `${err.message}\n`;
    const reason = firstLine(err.message);
    if (err.kind === 'proxy') return { status: err.status, reason, headers: {}, body: Buffer.alloc(0) };
    if (err.kind === 'auth') return { status: err.status, reason, headers: { 'content-type': jsonType }, body: Buffer.alloc(0) };
    const payload: Record<string, unknown> = { data: null };
    if (err.errors) payload['errors'] = err.errors;
    if (this.profile.messageField) payload['message'] = message;
    return this.jsonResponse(err.status, reason, payload);
  }

  private faultResponse(f: RequestFault): SimResponse {
    if (f.kind === 'connReset') return { status: 0, reason: 'connection reset', headers: {}, body: Buffer.alloc(0), transport: 'reset' };
    if (f.kind === 'hang') return { status: 0, reason: 'no answer', headers: {}, body: Buffer.alloc(0), transport: 'hang' };
    if (f.kind === 'httpError') {
      const reason = f.reason ?? defaultReason(f.status);
      if (f.message === undefined) return { status: f.status, reason, headers: {}, body: Buffer.alloc(0) };
      return this.errorResponse(new PveApiError(f.status, f.message));
    }
    throw new Error(`not an early fault: ${f.kind}`);
  }

  private afterCommitFault(f: RequestFault, res: SimResponse): SimResponse {
    if (f.kind === 'lostResponse') {
      if (f.mode === 'reset') return { ...res, status: 0, reason: 'connection reset', transport: 'reset' };
      const status = f.status ?? 503;
      return { status, reason: f.reason ?? defaultReason(status), headers: {}, body: Buffer.alloc(0) };
    }
    if (f.kind === 'badBody') {
      if (f.mode === 'truncated') return { ...res, body: res.body.subarray(0, Math.max(1, Math.floor(res.body.length / 2))) };
      if (f.mode === 'invalidJson') return { ...res, body: Buffer.from('{"data": <html>') };
      return { ...res, headers: { ...res.headers, 'content-type': 'text/html' }, body: Buffer.from('<html>proxy error</html>') };
    }
    return res;
  }

  // ---- time ----

  /** Finishes every task that is due by now. */
  tick(): void {
    this.taskBoard.runDue(this.clock.now());
  }

  /** Runs (manual clock) or waits (scaled clock) until no task that will end by itself is running. */
  async settle(): Promise<void> {
    for (let i = 0; i < 10_000; i++) {
      this.tick();
      const due = this.taskBoard.nextDue();
      if (due === undefined) return;
      const wait = Math.max(0, due - this.clock.now());
      if (this.clock instanceof ManualClock) this.clock.advance(wait);
      else await this.clock.sleep(wait + 1);
    }
  }

  /**
   * Lets running tasks held by a `stuck` fault end now (as if whatever blocked the worker went away); they finish
   * like any other task on the next tick. Returns how many were released.
   */
  releaseStuckTasks(filter: TaskFilter = {}): number {
    const released = this.taskBoard.releaseStuck(filter, this.clock.now());
    this.tick();
    if (released > 0) this.changed();
    return released;
  }

  /**
   * Calls `listener` as each request arrives, before it is handled (its record has no status yet): tests that check
   * who was allowed to write at that moment (two provider instances) look there. Returns the unsubscribe function.
   */
  onArrival(listener: (request: RequestRecord) => void): () => void {
    this.arrivalListeners.add(listener);
    return () => this.arrivalListeners.delete(listener);
  }

  /**
   * Calls `listener` after every request the simulator answered, with its record, before the answer is sent (state
   * changes happen in requests, or in the test's own calls such as releaseStuckTasks, which call it without one).
   * For tests that wait for a condition on the simulator. Returns the unsubscribe function.
   */
  onChange(listener: (request?: RequestRecord) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  private changed(request?: RequestRecord): void {
    for (const listener of [...this.changeListeners]) listener(request);
  }

  /** Manual clock only: moves simulated time and runs due tasks. */
  advance(ms: number): void {
    if (!(this.clock instanceof ManualClock)) throw new Error('advance() needs a ManualClock');
    this.clock.advance(ms);
    this.tick();
  }

  // ---- accessors for tests ----

  vm(vmid: number): { vmid: number; node: string; running: boolean; config: Record<string, string> } | undefined {
    this.tick();
    const vm = this.state.vms.get(vmid);
    if (!vm) return undefined;
    return { vmid, node: vm.node, running: vm.running, config: Object.fromEntries(vm.config) };
  }

  volumes(storage: string, node?: string): SimVolume[] {
    this.tick();
    const s = this.state.storages.get(storage);
    if (!s) return [];
    const nodes = s.shared ? [this.state.entryNode] : node ? [node] : [...this.state.nodes.keys()];
    return nodes.flatMap((n) => [...this.state.volumeMap(s, n).values()]);
  }

  tasks(filter: TaskFilter = {}): SimTask[] {
    this.tick();
    return this.taskBoard.list(filter);
  }

  /** The bytes of an uploaded file (e.g. a cloud-init ISO). */
  isoFile(volid: string, node?: string): Buffer {
    this.tick();
    const nodes = node ? [node] : [...this.state.nodes.keys()];
    for (const n of nodes) {
      const v = this.state.findVolume(volid, n);
      if (v?.data) return v.data;
    }
    throw new Error(`no uploaded file ${volid}`);
  }

  event(kind: string, detail: Record<string, unknown>): void {
    this.events.push({ atMs: this.clock.now(), kind, detail });
  }

  /** Shuffled (seeded) unless list shuffling is off. */
  order<T>(items: T[]): T[] {
    return this.shuffleLists ? this.rng.shuffle(items) : items;
  }

  // ---- fault and outside-world controls ----

  setNodeOnline(node: string, online: boolean): void {
    const n = this.state.nodes.get(node);
    if (!n) throw new Error(`unknown node ${node}`);
    n.online = online;
    this.event(online ? 'node-online' : 'node-offline', { node });
  }

  /** Replaces the node's bridges (what `GET /nodes/{node}/network` lists and NICs may attach to). */
  setNodeBridges(node: string, bridges: readonly string[]): void {
    const n = this.state.nodes.get(node);
    if (!n) throw new Error(`unknown node ${node}`);
    n.bridges = new Set(bridges);
  }

  setQuorate(quorate: boolean): void {
    this.state.quorate = quorate;
  }

  setStorageActive(storage: string, node: string, active: boolean): void {
    const s = this.mustStorage(storage);
    if (active) s.inactiveOn.delete(node);
    else s.inactiveOn.add(node);
  }

  setStorageDisabled(storage: string, disabled: boolean): void {
    this.mustStorage(storage).disabled = disabled;
  }

  /** Fills the storage (on `node`, or the shared pool) so that only `availBytes` remain. */
  fillStorage(storage: string, node: string, availBytes = 0): void {
    const s = this.mustStorage(storage);
    const { used } = this.state.usage(s, node);
    s.baseUsed += Math.max(0, s.total - used - availBytes);
  }

  /** The next `times` download-url tasks fail with `download failed: <reason>`. */
  failDownloads(reason: string, times = 1): void {
    for (let i = 0; i < times; i++) this.downloadFailures.push(reason);
  }

  injectLock(vmid: number, lock: string | undefined): void {
    const vm = this.mustVm(vmid);
    if (lock === undefined) vm.config.delete('lock');
    else vm.config.set('lock', lock);
  }

  /** Something else holds the VM's config lock (flock) for `ms` of simulated time. */
  holdVmMutex(vmid: number, ms: number): void {
    this.vmMutexUntil.set(vmid, this.clock.now() + ms);
  }

  /**
   * Takes the VM's config lock the way qemu-server does: waits while another holder has it, and gives up after
   * `timeoutMs` (10 s; 5 s at create) with PVE's `got timeout` error.
   */
  async acquireVmMutex(vmid: number, timeoutMs = 10_000): Promise<void> {
    const until = this.vmMutexUntil.get(vmid);
    if (until === undefined) return;
    const remaining = until - this.clock.now();
    if (remaining <= 0) {
      this.vmMutexUntil.delete(vmid);
      return;
    }
    if (remaining > timeoutMs) {
      await this.clock.sleep(timeoutMs);
      throw serverError(vmMutexTimeout(vmid));
    }
    await this.clock.sleep(remaining);
  }

  /** For workers: fails right away when the lock is still held (the worker's wait has run out by then). */
  assertVmMutexFree(vmid: number): void {
    const until = this.vmMutexUntil.get(vmid);
    if (until !== undefined && until > this.clock.now()) throw new Error(vmMutexTimeout(vmid));
  }

  /** The next `times` ticket calls are refused with `Permission denied - invalid csrf token`. */
  rejectCsrf(times = 1): void {
    this.access.csrfRejections += times;
  }

  /** Marks a VM as an HA resource (start/stop become hastart/hastop; destroy needs purge). */
  setHaManaged(vmid: number, managed: boolean): void {
    const vm = this.mustVm(vmid);
    if (managed) this.ha.addResource(this, `vm:${vmid}`, { state: vm.running ? 'started' : 'stopped' });
    else this.ha.removeResource(this, `vm:${vmid}`, true);
  }

  /** The HA stack (LRM) starting a VM of a `started` resource; runs as the work of a `qmstart` task. */
  haStartVm(vmid: number): void {
    haStartVm(this, vmid);
  }

  /** The HA stack shutting down a VM of a `stopped`/`disabled` resource. */
  haStopVm(vmid: number): void {
    haStopVm(this, vmid);
  }

  /** Lets the HA stack act on a resource now (after a test changed the cluster, e.g. brought a node back). */
  haReconcile(sid: string): void {
    haReconcile(this, sid);
  }

  revokeToken(fullid: string): void {
    this.access.tokens.delete(fullid);
  }

  expireToken(fullid: string): void {
    const t = this.access.tokens.get(fullid);
    if (t) t.expire = Math.floor(this.clock.now() / 1000);
  }

  /** Changes the ticket lifetime (e.g. 0 to expire every ticket issued so far at once). */
  setTicketLifetime(ms: number): void {
    this.access.ticketLifetimeMs = ms;
  }

  /** An external client creates a finished VM. */
  externalCreateVm(vm: { vmid?: number; node: string; name?: string; tags?: string[]; memoryMiB?: number }): number {
    const vmid = vm.vmid ?? this.lowestFreeVmid();
    createFixtureVm(this, {
      vmid,
      node: vm.node,
      ...(vm.name !== undefined ? { name: vm.name } : {}),
      ...(vm.tags ? { tags: vm.tags } : {}),
      ...(vm.memoryMiB !== undefined ? { maxmem: vm.memoryMiB * 1024 * 1024 } : {}),
    });
    this.event('external-create', { vmid, node: vm.node });
    return vmid;
  }

  /** After the next `/cluster/nextid` answer (also one asserting `vmid` free), someone else creates a VM with that id. */
  grabVmidAfterNextId(node = this.state.entryNode): void {
    this.afterNextId.push((vmid) => this.externalCreateVm({ vmid, node }));
  }

  /** Moves a VM (and its local disks) to another node, as an HA or admin migration would. */
  externalMigrateVm(vmid: number, toNode: string): void {
    const vm = this.mustVm(vmid);
    if (!this.state.nodes.has(toNode)) throw new Error(`unknown node ${toNode}`);
    for (const volid of this.state.referencedVolids(vm)) {
      const v = this.state.findVolume(volid, vm.node);
      const s = this.state.storages.get(v?.storage ?? '');
      if (v && s && !s.shared) {
        this.state.removeVolume(volid, vm.node);
        this.state.addVolume(s, toNode, { name: v.name, content: v.content, format: v.format, size: v.size, ctime: v.ctime, ...(v.vmid !== undefined ? { vmid: v.vmid } : {}) });
      }
    }
    const from = vm.node;
    vm.node = toNode;
    this.event('external-migrate', { vmid, from, to: toNode });
  }

  externalDeleteVolume(volid: string, node = this.state.entryNode): boolean {
    return this.state.removeVolume(volid, node);
  }

  externalDeleteVm(vmid: number): void {
    const vm = this.mustVm(vmid);
    for (const volid of this.state.referencedVolids(vm)) this.state.removeVolume(volid, vm.node);
    this.state.vms.delete(vmid);
  }

  lowestFreeVmid(): number {
    const { lower, upper } = this.state.nextId;
    for (let id = lower; id < upper; id++) if (!this.state.vms.has(id)) return id;
    throw new Error('no free vmid');
  }

  private mustStorage(sid: string) {
    const s = this.state.storages.get(sid);
    if (!s) throw new Error(`unknown storage ${sid}`);
    return s;
  }

  private mustVm(vmid: number): SimVm {
    const vm = this.state.vms.get(vmid);
    if (!vm) throw new Error(`unknown vm ${vmid}`);
    return vm;
  }
}

function vmMutexTimeout(vmid: number): string {
  return `can't lock file '/var/lock/qemu-server/lock-${vmid}.conf' - got timeout`;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? '';
}

function defaultReason(status: number): string {
  const reasons: Record<number, string> = {
    500: 'Internal Server Error',
    501: 'Not Implemented',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
    595: 'Connection refused',
    596: 'Connection reset by peer',
    597: 'Broken pipe',
    599: 'Internal Exception',
  };
  return reasons[status] ?? 'Error';
}

function lowerHeaders(h: Readonly<Record<string, string | string[] | undefined>>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function splitQuery(path: string): [string, string] {
  const i = path.indexOf('?');
  return i < 0 ? [path, ''] : [path.slice(0, i), path.slice(i + 1)];
}

function decodeQuery(fromPath: string, extra: SimRequest['query']): Params {
  const out: Params = {};
  for (const [k, v] of new URLSearchParams(fromPath)) out[k] = v;
  if (typeof extra === 'string') for (const [k, v] of new URLSearchParams(extra)) out[k] = v;
  else if (extra) Object.assign(out, extra);
  return out;
}

function decodeBody(contentType: string | undefined, body: Buffer): Params {
  if (body.length === 0) return {};
  const text = body.toString('utf8');
  if (contentType && /^application\/json/i.test(contentType)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new PveApiError(400, 'malformed JSON string');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return {};
    const out: Params = {};
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
      if (v === null || v === undefined) continue;
      out[k] = typeof v === 'object' ? JSON.stringify(v) : (v as ParamValue);
    }
    return out;
  }
  const out: Params = {};
  for (const [k, v] of new URLSearchParams(text)) out[k] = v;
  return out;
}
