// `doctor`: loads the daemon configuration like the daemon and checks, one finding per line, whether the provider
// can work with it (Proxmox TLS, auth, privileges, nodes, storage, bridges, clock; Omni key, identity, registration).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { ConfigError, loadConfig, type LiveConfig, type ReadTextFile } from '../config/index.js';
import { omniTrustedCas, parseOmniEndpoint } from '../cosi/grpc.js';
import { connectOmni } from '../cosi/omni-client.js';
import { InfraProviderKind, LABEL_INFRA_PROVIDER_ID, MachineRequestKind } from '../cosi/resources.js';
import { decodeServiceAccountKey, ServiceAccountKeyError, type ServiceAccountKey } from '../cosi/signing.js';
import { CosiError, isNotFound, isPermissionDenied, isUnauthenticated } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';
import { PveClient } from '../proxmox/client.js';
import { PveConnectionError, PveError } from '../proxmox/errors.js';
import { normalizeFingerprint, tlsMode } from '../proxmox/tls.js';
import { GO_PROVIDER_POOL_COMMENT } from '../provision/pools.js';
import type { NodeListEntry } from '../proxmox/types.js';
import { parse as parseYaml } from 'yaml';

export type DoctorStatus = 'OK' | 'WARN' | 'FAIL';

export interface DoctorFinding {
  check: string;
  status: DoctorStatus;
  /** What was found and, unless OK, what to do. Never contains a secret. */
  message: string;
}

export interface DoctorOptions {
  /** Daemon flags, exactly as the daemon would get them. */
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  readFile?: ReadTextFile;
  /** This machine's clock (tests move it to provoke skew). */
  now?: () => number;
  /** Bound for each network step. Default 10 s. */
  timeoutMs?: number;
  logger?: Logger;
}

/** Privileges the provider needs on Proxmox (docs/configuration.md), and those only some features need. */
export const REQUIRED_PRIVILEGES = [
  'Sys.Audit',
  'VM.Audit',
  'VM.Allocate',
  'VM.Config.CPU',
  'VM.Config.Memory',
  'VM.Config.HWType',
  'VM.Config.Options',
  'VM.Config.Network',
  'VM.Config.Disk',
  'VM.Config.CDROM',
  'VM.PowerMgmt',
  'Datastore.Audit',
  'Datastore.AllocateSpace',
  'Datastore.AllocateTemplate',
  'Datastore.Allocate',
  'SDN.Use',
] as const;
export const OPTIONAL_PRIVILEGES: Readonly<Record<string, string>> = {
  'Sys.AccessNetwork': 'downloading the Talos ISO on Proxmox VE 8.1 and later (or Sys.Modify on / before 8.1)',
  // The same two privileges for both kinds of mapping: Mapping.Use on /mapping/pci/<id> or /mapping/usb/<id> (qemu-server
  // check_hostpci_perm, check_usb_perm), and one of Mapping.Audit/Use/Modify there to list it (Cluster/Mapping/*.pm).
  'Mapping.Audit': 'PCI and USB passthrough (pci_devices, usb_devices)',
  'Mapping.Use': 'PCI and USB passthrough (pci_devices, usb_devices)',
};

/** Omni refuses signed requests whose timestamp is further off than this. */
export const OMNI_MAX_SKEW_MS = 5 * 60_000;
const CLOCK_WARN_MS = 30_000;
const KEY_EXPIRY_WARN_MS = 30 * 86400_000;

/** Runs every check; never throws for a problem it can explain. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorFinding[]> {
  const out: DoctorFinding[] = [];
  const add = (check: string, status: DoctorStatus, message: string): void => {
    out.push({ check, status, message });
  };
  let cfg;
  try {
    cfg = loadConfig(opts.argv, opts.env, opts.readFile);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const p of err.problems) add('config', 'FAIL', p);
    return out;
  }
  if (cfg.mode === 'demo') {
    add(
      'config',
      'FAIL',
      'neither Omni nor Proxmox is configured, so the daemon would run the built-in demo; set OMNI_ENDPOINT, OMNI_SERVICE_ACCOUNT_KEY, PROXMOX_URL and the Proxmox token (see docs/configuration.md)',
    );
    return out;
  }
  const from = cfg.configFile ? `config file ${cfg.configFile}, flags and environment` : 'flags and environment';
  add('config', 'OK', `loaded from ${from}; provider ID ${JSON.stringify(cfg.provider.id)}`);
  for (const w of cfg.warnings) add('config', 'WARN', w);

  const ctx: CheckContext = {
    cfg,
    add,
    now: opts.now ?? Date.now,
    timeoutMs: opts.timeoutMs ?? 10_000,
    log: opts.logger ?? silentLogger,
    readFile: opts.readFile,
    ha: { vms: [], requests: 0 },
  };
  await checkProxmox(ctx);
  await checkOmni(ctx);
  reportHa(ctx);
  return out;
}

/** One line per finding: `STATUS  check  message`. */
export function formatFindings(findings: readonly DoctorFinding[]): string {
  const width = Math.max(0, ...findings.map((f) => f.check.length));
  return findings.map((f) => `${f.status.padEnd(4)}  ${f.check.padEnd(width)}  ${f.message}\n`).join('');
}

/** 0 when nothing failed, 1 otherwise. */
export function doctorExitCode(findings: readonly DoctorFinding[]): 0 | 1 {
  return findings.some((f) => f.status === 'FAIL') ? 1 : 0;
}

interface CheckContext {
  cfg: LiveConfig;
  add: (check: string, status: DoctorStatus, message: string) => void;
  now: () => number;
  timeoutMs: number;
  log: Logger;
  readFile: ReadTextFile | undefined;
  /** What the HA check learns on both sides (reported by reportHa once both ran). */
  ha: {
    /** Sys.Console on `/` (what the HA API's writes need): undefined = the permissions could not be read. */
    console?: boolean;
    /** The provider's VMs (tagged machine-request.<set>) that are HA resources. */
    vms: string[];
    /** The provider's machine requests whose provider data has `ha`. */
    requests: number;
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Proxmox

interface PeerView {
  fingerprint: string;
  authorized: boolean;
  authorizationError: string;
  subject: string;
  validTo: string;
  /** The ALPN protocol agreed on ('' when none). */
  alpn: string;
}

/**
 * Opens one TLS connection and reports the certificate presented and whether `ca` (or the system CAs) vouch for it,
 * host name included. SNI only for host names (RFC 6066).
 */
function inspectTls(host: string, port: number, ca: string | string[] | undefined, timeoutMs: number, alpn?: string[]): Promise<PeerView> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({
      host,
      port,
      rejectUnauthorized: false,
      ...(isIP(host) === 0 ? { servername: host } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(alpn !== undefined ? { ALPNProtocols: alpn } : {}),
    });
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`no TLS handshake within ${Math.round(timeoutMs / 1000)} s`), { code: 'ETIMEDOUT' })), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const cert: PeerCertificate = socket.getPeerCertificate();
      const fingerprint =
        typeof cert.fingerprint256 === 'string' && cert.fingerprint256 !== ''
          ? cert.fingerprint256.toUpperCase()
          : cert.raw
            ? createHash('sha256').update(cert.raw).digest('hex').toUpperCase().match(/../g)!.join(':')
            : '';
      const err = socket.authorizationError as unknown;
      resolve({
        fingerprint,
        authorized: socket.authorized,
        authorizationError: err instanceof Error ? err.message : typeof err === 'string' ? err : '',
        subject: typeof cert.subject?.CN === 'string' ? cert.subject.CN : '',
        validTo: cert.valid_to ?? '',
        alpn: typeof socket.alpnProtocol === 'string' ? socket.alpnProtocol : '',
      });
      socket.end();
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const msg = typeof e?.message === 'string' ? e.message.split('\n')[0]! : String(err);
  return typeof e?.code === 'string' && !msg.includes(e.code) ? `${e.code}: ${msg}` : msg;
}

async function checkProxmox(ctx: CheckContext): Promise<void> {
  const { cfg, add } = ctx;
  const url = new URL(cfg.proxmox.url);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  const where = `${url.hostname}:${port}`;

  if (url.protocol === 'https:') {
    const mode = tlsMode(cfg.proxmox.tls);
    let ca: string | undefined;
    if (mode === 'ca') {
      const read = ctx.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
      ca = cfg.proxmox.tls.caPem ?? read(cfg.proxmox.tls.caFile!);
    }
    let peer: PeerView;
    try {
      peer = await inspectTls(host, port, ca, ctx.timeoutMs);
    } catch (err) {
      add('proxmox.connect', 'FAIL', `cannot open a TLS connection to ${where}: ${errorText(err)}; check proxmox.url, DNS, the firewall, and that pveproxy runs on that node (any node serves the whole cluster)`);
      return;
    }
    add('proxmox.connect', 'OK', `TLS connection to ${where}; the server presents ${peer.subject ? `"${peer.subject}" ` : ''}with SHA-256 fingerprint ${peer.fingerprint}`);
    const pinHint = `to pin this certificate set fingerprint: ${peer.fingerprint} under proxmox: (or PROXMOX_FINGERPRINT) after comparing it with \`pvenode cert info\` on the node, or set caFile to the cluster CA (/etc/pve/pve-root-ca.pem)`;
    if (mode === 'fingerprint') {
      const want = normalizeFingerprint(cfg.proxmox.tls.fingerprint!);
      if (want !== peer.fingerprint) {
        add('proxmox.tls', 'FAIL', `the server certificate's SHA-256 fingerprint is ${peer.fingerprint}, not the pinned ${want} (certificate renewed, or another host); ${pinHint}`);
        return;
      }
      add('proxmox.tls', 'OK', 'the server certificate matches the pinned fingerprint');
    } else if (mode === 'insecure') {
      add('proxmox.tls', 'WARN', `certificate verification is off (insecureSkipVerify); ${pinHint}`);
    } else if (!peer.authorized) {
      const trust = mode === 'ca' ? `the CA in ${cfg.proxmox.tls.caFile ?? 'caPem'}` : 'the system CAs';
      add('proxmox.tls', 'FAIL', `${trust} do not vouch for the server certificate (${peer.authorizationError || 'not trusted'}); ${pinHint}`);
      return;
    } else {
      add('proxmox.tls', 'OK', `certificate verified against ${mode === 'ca' ? 'the configured CA' : 'the system CAs'} (valid until ${peer.validTo})`);
    }
  } else {
    add('proxmox.tls', 'WARN', 'proxmox.url uses plain http: the API token travels unencrypted; use https://<node>:8006');
  }

  let serverDate: string | undefined;
  const pve = new PveClient({
    ...cfg.proxmox,
    logger: ctx.log,
    requestTimeoutMs: ctx.timeoutMs,
    connectTimeoutMs: ctx.timeoutMs,
    onResponse: (o) => {
      if (o.date !== undefined) serverDate = o.date;
    },
  });
  try {
    const proceed = await checkAuth(ctx, pve, () => serverDate);
    if (!proceed) return;
    await checkPrivileges(ctx, pve);
    await findHaVms(ctx, pve);
    await checkGoPools(ctx, pve);
    const nodes = await checkNodes(ctx, pve);
    if (nodes.length > 0) {
      await checkStorage(ctx, pve, nodes);
      await checkBridges(ctx, pve, nodes);
    }
  } finally {
    await pve.close();
  }
}


async function checkAuth(ctx: CheckContext, pve: PveClient, serverDate: () => string | undefined): Promise<boolean> {
  const who = pve.principal;
  const as = who.kind === 'token' ? `API token ${who.id}` : `user ${who.id} (password login, ticket)`;
  const sentAt = ctx.now();
  try {
    const v = await pve.version();
    const mid = (sentAt + ctx.now()) / 2;
    const note =
      who.kind === 'ticket'
        ? '; an API token is recommended for the daemon (no 2-hour ticket renewals, no password in the config)'
        : '';
    report(ctx, 'proxmox.auth', 'OK', `${as} accepted; Proxmox VE ${v.version}${v.release ? ` (release ${v.release})` : ''}${note}`);
    checkClock(ctx, serverDate(), mid);
    return true;
  } catch (err) {
    if (err instanceof PveError && err.status === 401) {
      const fix =
        who.kind === 'token'
          ? `check proxmox.tokenID / PROXMOX_TOKEN_ID and the secret (PROXMOX_TOKEN_SECRET); the token may be deleted or expired: \`pveum user token list ${who.id.split('!')[0]}\``
          : 'check proxmox.username, realm and password; users with two-factor authentication cannot log in here, use an API token';
      report(ctx, 'proxmox.auth', 'FAIL', `Proxmox rejected the ${as} (${err.statusText}); ${fix}`);
    } else if (err instanceof PveConnectionError) {
      report(ctx, 'proxmox.auth', 'FAIL', `no answer from Proxmox: ${err.message}`);
    } else {
      report(ctx, 'proxmox.auth', 'FAIL', `GET /version failed: ${errorText(err)}`);
    }
    return false;
  }
}

function report(ctx: CheckContext, check: string, status: DoctorStatus, message: string): void {
  ctx.add(check, status, message);
}

function checkClock(ctx: CheckContext, date: string | undefined, localMs: number): void {
  const server = date === undefined ? NaN : Date.parse(date);
  if (Number.isNaN(server)) {
    report(ctx, 'clock', 'WARN', 'Proxmox sent no Date header, so the clock could not be compared; make sure NTP runs on this host (Omni rejects requests more than 5 minutes off)');
    return;
  }
  // The Date header has a resolution of one second.
  const skew = localMs - server;
  const abs = Math.abs(skew);
  const text = `this host's clock is ${formatDuration(abs)} ${skew >= 0 ? 'ahead of' : 'behind'} Proxmox`;
  if (abs > OMNI_MAX_SKEW_MS) {
    report(ctx, 'clock', 'FAIL', `${text}; Omni rejects signed requests more than 5 minutes off: fix NTP (timedatectl status) on this host and on the Proxmox nodes`);
  } else if (abs > CLOCK_WARN_MS) {
    report(ctx, 'clock', 'WARN', `${text}; Omni rejects requests more than 5 minutes off: check NTP on this host and the Proxmox nodes`);
  } else {
    report(ctx, 'clock', 'OK', abs < 2000 ? 'this host and Proxmox agree on the time' : text);
  }
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

const isUnimplementedAnswer = (err: unknown): boolean => err instanceof PveError && (err.status === 501 || err.status === 404);
const isForbidden = (err: unknown): boolean => err instanceof PveError && err.status === 403;

async function checkPrivileges(ctx: CheckContext, pve: PveClient): Promise<void> {
  const who = pve.principal;
  const privsepHint =
    who.kind === 'token'
      ? `; with privilege separation the token's rights are the intersection of the user's and the token's ACLs, so give the role to both (pveum acl modify / --users ${who.id.split('!')[0]} --tokens '${who.id}' --roles OmniProvider)`
      : '';
  let perms: unknown;
  try {
    perms = await pve.get('/access/permissions');
  } catch (err) {
    if (!isUnimplementedAnswer(err) && !isForbidden(err)) {
      report(ctx, 'proxmox.privileges', 'WARN', `could not read the effective permissions (${errorText(err)}); trying read-only probes`);
    }
    return probePrivileges(ctx, pve, privsepHint);
  }
  const held = new Set<string>();
  const onRoot = perms !== null && typeof perms === 'object' ? (perms as Record<string, unknown>)['/'] : undefined;
  ctx.ha.console = onRoot !== null && typeof onRoot === 'object' && (onRoot as Record<string, unknown>)['Sys.Console'] !== undefined;
  if (perms !== null && typeof perms === 'object') {
    for (const privs of Object.values(perms as Record<string, unknown>)) {
      if (privs !== null && typeof privs === 'object') {
        for (const [p, v] of Object.entries(privs as Record<string, unknown>)) if (v !== undefined && v !== null) held.add(p);
      }
    }
  }
  const missing = REQUIRED_PRIVILEGES.filter((p) => !held.has(p));
  const optional = Object.keys(OPTIONAL_PRIVILEGES).filter((p) => !held.has(p));
  if (missing.length > 0) {
    report(
      ctx,
      'proxmox.privileges',
      'FAIL',
      `${who.id} lacks ${missing.join(', ')}; add them to its role (pveum role modify OmniProvider --append 1 --privs "${missing.join(' ')}") and check with \`pveum user token permissions\`${privsepHint}`,
    );
  } else {
    report(ctx, 'proxmox.privileges', 'OK', `${who.id} holds every privilege the provider needs (${REQUIRED_PRIVILEGES.length} checked)`);
  }
  for (const p of optional) report(ctx, 'proxmox.privileges', 'WARN', `${who.id} lacks ${p}, needed for ${OPTIONAL_PRIVILEGES[p]}`);
  if (held.has('Mapping.Use')) await compareMappingKinds(ctx, pve, who.id);
}

/**
 * PCI and USB mappings need the same privilege on different paths (qemu-server check_hostpci_perm on
 * /mapping/pci/<id>, check_usb_perm on /mapping/usb/<id>): an ACL narrowed to one kind refuses the other.
 */
async function compareMappingKinds(ctx: CheckContext, pve: PveClient, id: string): Promise<void> {
  const usable = new Map<'pci' | 'usb', boolean>();
  for (const kind of ['pci', 'usb'] as const) {
    const path = `/mapping/${kind}`;
    try {
      const perms = await pve.get<Record<string, Record<string, unknown>> | null>('/access/permissions', { path });
      usable.set(kind, perms?.[path]?.['Mapping.Use'] !== undefined);
    } catch {
      return;
    }
  }
  if (usable.get('pci') === usable.get('usb')) return;
  const [has, lacks] = usable.get('pci') ? ['pci', 'usb'] : ['usb', 'pci'];
  report(
    ctx,
    'proxmox.privileges',
    'WARN',
    `${id} holds Mapping.Use on /mapping/${has} but not on /mapping/${lacks}: ${lacks === 'usb' ? 'usb_devices' : 'pci_devices'} ` +
      `are refused (Permission check failed (/mapping/${lacks}/<id>, Mapping.Use)); put the role on /mapping/${lacks} too`,
  );
}

/** The provider's VMs (tag `machine-request.<set>`) that are HA resources: their teardown needs the HA API. */
async function findHaVms(ctx: CheckContext, pve: PveClient): Promise<void> {
  try {
    const resources = await pve.get<Array<Record<string, unknown>>>('/cluster/ha/resources');
    const sids = new Set(resources.map((r) => r['sid']).filter((x): x is string => typeof x === 'string'));
    if (sids.size === 0) return;
    const vms = await pve.clusterResources('vm');
    ctx.ha.vms = vms
      .filter((v) => sids.has(`vm:${v.vmid}`) && (v.tags ?? '').split(/[;,\s]+/).some((t) => t.startsWith('machine-request.')))
      .map((v) => `vm:${v.vmid}`)
      .sort();
  } catch (err) {
    ctx.log.debug({ err: errorText(err) }, 'HA resources could not be listed');
  }
}

/**
 * Sys.Console on `/`, which pve-ha-manager's API requires for every HA write (API2/HA/Resources.pm, Rules.pm,
 * Groups.pm; reads need Sys.Audit): reported only when HA is in use, by a machine request's `ha` or by an HA resource
 * that is one of the provider's VMs (whose teardown removes it).
 */
function reportHa(ctx: CheckContext): void {
  const { vms, requests, console } = ctx.ha;
  if (vms.length === 0 && requests === 0) return;
  const why = [
    requests > 0 ? `${requests} machine request(s) use ha` : '',
    vms.length > 0 ? `${vms.length} of the provider's VMs are HA resources (${vms.slice(0, 5).join(', ')}${vms.length > 5 ? ', …' : ''})` : '',
  ].filter(Boolean).join(' and ');
  if (console === true) {
    report(ctx, 'proxmox.ha', 'OK', `${why}; the token holds Sys.Console on /, which Proxmox's HA API needs to register and remove HA resources, rules and groups`);
  } else if (console === false) {
    report(
      ctx,
      'proxmox.ha',
      'FAIL',
      `${why}, but the token lacks Sys.Console on /, which Proxmox's HA API needs for every change (registerHA fails with "Permission check failed (/, Sys.Console)" and a teardown cannot remove the HA resource); ` +
        'add it: pveum role modify OmniProvider --append 1 --privs "Sys.Console" (the role must be granted on /, see docs/configuration.md)',
    );
  } else {
    report(ctx, 'proxmox.ha', 'WARN', `${why}; Sys.Console on / (needed by Proxmox's HA API) could not be verified: this Proxmox does not answer GET /access/permissions`);
  }
}

/** Without /access/permissions: read-only calls whose 403 (or silent filtering) reveals a missing privilege. */
async function probePrivileges(ctx: CheckContext, pve: PveClient, privsepHint: string): Promise<void> {
  const who = pve.principal;
  const missing: string[] = [];
  const probe = async (path: string, priv: string): Promise<unknown> => {
    try {
      return await pve.get(path);
    } catch (err) {
      if (isForbidden(err)) missing.push(`${priv} on ${forbiddenPath(err) ?? path}`);
      return undefined;
    }
  };
  await probe('/cluster/status', 'Sys.Audit');
  const nodes = (await pve.nodes().catch(() => [])) as NodeListEntry[];
  const first = nodes.find((n) => n.status === 'online');
  if (first) await probe(`/nodes/${encodeURIComponent(first.node)}/status`, 'Sys.Audit');
  const storages = await probe('/cluster/resources?type=storage', 'Datastore.Audit');
  if (Array.isArray(storages) && storages.length === 0 && nodes.length > 0) missing.push('Datastore.Audit (no storage is visible)');
  if (missing.length > 0) {
    report(ctx, 'proxmox.privileges', 'FAIL', `${who.id} lacks ${[...new Set(missing)].join('; ')}; add them to its role (see docs/configuration.md)${privsepHint}`);
    return;
  }
  report(
    ctx,
    'proxmox.privileges',
    'WARN',
    `read-only probes passed (Sys.Audit, Datastore.Audit), but this Proxmox does not answer GET /access/permissions, so the write privileges (${REQUIRED_PRIVILEGES.filter((p) => !p.endsWith('Audit')).join(', ')}) were not verified; compare with \`pveum user token permissions\` by hand`,
  );
}

function forbiddenPath(err: unknown): string | undefined {
  const m = /Permission check failed \(([^,)]+), ([^)]+)\)/.exec(err instanceof PveError ? err.statusText : '');
  return m ? m[1] : undefined;
}

async function checkNodes(ctx: CheckContext, pve: PveClient): Promise<NodeListEntry[]> {
  let nodes: NodeListEntry[];
  try {
    nodes = await pve.nodes();
  } catch (err) {
    report(ctx, 'proxmox.nodes', 'FAIL', `GET /nodes failed: ${errorText(err)}`);
    return [];
  }
  nodes = [...nodes].sort((a, b) => a.node.localeCompare(b.node));
  const online = nodes.filter((n) => n.status === 'online');
  const offline = nodes.filter((n) => n.status !== 'online');
  if (nodes.length === 0) {
    report(ctx, 'proxmox.nodes', 'FAIL', 'no node is visible; the token needs Sys.Audit on /nodes');
  } else if (online.length === 0) {
    report(ctx, 'proxmox.nodes', 'FAIL', `no node is online (${offline.map((n) => `${n.node}: ${n.status}`).join(', ')})`);
  } else if (offline.length > 0) {
    report(ctx, 'proxmox.nodes', 'WARN', `${online.length} of ${nodes.length} nodes online; not online: ${offline.map((n) => `${n.node} (${n.status})`).join(', ')}; machines are placed on online nodes only`);
  } else {
    report(ctx, 'proxmox.nodes', 'OK', `${online.length} node(s) online: ${online.map((n) => n.node).join(', ')}`);
  }
  return online;
}

async function checkStorage(ctx: CheckContext, pve: PveClient, nodes: NodeListEntry[]): Promise<void> {
  const perNode: string[] = [];
  const lacking: string[] = [];
  let usable = 0;
  for (const n of nodes) {
    let list;
    try {
      list = await pve.storageList(n.node, { enabled: true });
    } catch (err) {
      lacking.push(`${n.node}: storage list failed (${errorText(err)})`);
      continue;
    }
    const active = list.filter((s) => s.active);
    const holds = (s: { content: string }, c: string): boolean => s.content.split(/[,;\s]+/).includes(c);
    const images = active.filter((s) => holds(s, 'images')).map((s) => s.storage);
    const iso = active.filter((s) => holds(s, 'iso')).map((s) => s.storage);
    perNode.push(`${n.node}: images ${images.join('/') || '-'}, iso ${iso.join('/') || '-'}`);
    if (images.length === 0) lacking.push(`${n.node} has no active storage for VM disks (content "images")`);
    if (iso.length === 0) lacking.push(`${n.node} has no active storage for ISO images (content "iso")`);
    if (images.length > 0 && iso.length > 0) usable++;
  }
  const fix = 'enable the content type on a storage (Datacenter → Storage → Edit → Content) and give the token Datastore.Audit on it';
  if (usable === 0) report(ctx, 'proxmox.storage', 'FAIL', `no online node has both disk and ISO storage: ${[...lacking].join('; ')}; ${fix}`);
  else if (lacking.length > 0) report(ctx, 'proxmox.storage', 'WARN', `${lacking.join('; ')}; machines cannot be placed there; ${fix}`);
  else report(ctx, 'proxmox.storage', 'OK', perNode.join('; '));
}

/**
 * Pools the Go provider v0.1+ created for machine sets (its comment): a teardown removes them once empty, which needs
 * Pool.Allocate on /pool/<id> (docs/compat.md, Pools). Said only when such pools are visible (`GET /pools`).
 */
async function checkGoPools(ctx: CheckContext, pve: PveClient): Promise<void> {
  let list: unknown;
  try {
    list = await pve.get('/pools');
  } catch {
    return; // pools not visible to the token: nothing to say
  }
  const pools = Array.isArray(list)
    ? list
        .filter((p): p is Record<string, unknown> => p !== null && typeof p === 'object' && p.comment === GO_PROVIDER_POOL_COMMENT)
        .map((p) => String(p.poolid))
        .sort()
    : [];
  if (pools.length === 0) return;
  const lacking: string[] = [];
  for (const id of pools) {
    const path = `/pool/${id}`;
    try {
      const perms = await pve.get<Record<string, Record<string, unknown>> | null>('/access/permissions', { path });
      if (perms?.[path]?.['Pool.Allocate'] === undefined) lacking.push(id);
    } catch {
      lacking.push(id);
    }
  }
  const what = `${pools.length} machine-set pool${pools.length === 1 ? '' : 's'} the Go provider created (${pools.join(', ')})`;
  if (lacking.length === 0) {
    report(ctx, 'proxmox.pools', 'OK', `${what}; the token may remove each once its last VM is deleted`);
  } else {
    report(
      ctx,
      'proxmox.pools',
      'WARN',
      `${what}; the token lacks Pool.Allocate on ${lacking.map((id) => `/pool/${id}`).join(', ')}, so a teardown leaves ` +
        'the emptied pool behind (pveum acl modify /pool/<id> --tokens <token> --roles PVEPoolAdmin, or remove it by hand)',
    );
  }
}

async function checkBridges(ctx: CheckContext, pve: PveClient, nodes: NodeListEntry[]): Promise<void> {
  const perNode: string[] = [];
  const lacking: string[] = [];
  for (const n of nodes) {
    let list: unknown;
    try {
      list = await pve.get(`/nodes/${encodeURIComponent(n.node)}/network`, { type: 'any_bridge' });
    } catch (err) {
      const why = isForbidden(err) ? 'the token may not list networks (Sys.Audit on /nodes)' : isUnimplementedAnswer(err) ? 'this Proxmox does not list networks' : errorText(err);
      report(ctx, 'proxmox.bridges', 'WARN', `bridges could not be listed (${why}); make sure the bridges named in provider data (default vmbr0) exist on every node`);
      return;
    }
    const names = Array.isArray(list)
      ? list.map((e) => (e !== null && typeof e === 'object' ? (e as Record<string, unknown>).iface : undefined)).filter((i): i is string => typeof i === 'string')
      : [];
    perNode.push(`${n.node}: ${names.sort().join(', ') || 'none'}`);
    if (!names.includes('vmbr0')) lacking.push(n.node);
  }
  if (lacking.length === 0) {
    report(ctx, 'proxmox.bridges', 'OK', perNode.join('; '));
    return;
  }
  report(
    ctx,
    'proxmox.bridges',
    'WARN',
    `no vmbr0 (the default network_bridge) visible on ${lacking.join(', ')} (${perNode.join('; ')}); name an existing ` +
      'bridge in provider data, or give the token SDN.Use on /sdn/zones/localnetwork (Proxmox hides bridges without it)',
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Omni

async function checkOmni(ctx: CheckContext): Promise<void> {
  const { cfg } = ctx;
  const id = cfg.provider.id;
  const tls = await checkOmniTls(ctx);
  if (tls === false) return;
  let key: ServiceAccountKey;
  try {
    key = await decodeServiceAccountKey(cfg.omni.serviceAccountKey, { now: new Date(ctx.now()) });
  } catch (err) {
    const why = err instanceof ServiceAccountKeyError ? err.message : 'the key could not be read';
    report(ctx, 'omni.key', 'FAIL', `${why}; get a new key with \`omnictl infraprovider renewkey ${id}\` (or create the provider) and set OMNI_SERVICE_ACCOUNT_KEY`);
    return;
  }
  const expiry = key.expiresAt ? `expires ${key.expiresAt.toISOString().slice(0, 10)}` : 'never expires';
  const soon = key.expiresAt !== undefined && key.expiresAt.getTime() - ctx.now() < KEY_EXPIRY_WARN_MS;
  report(
    ctx,
    'omni.key',
    soon ? 'WARN' : 'OK',
    `key ${key.fingerprint} (${key.email ?? key.identity}) decodes; ${expiry}${soon ? `; renew it soon: omnictl infraprovider renewkey ${id}` : ''}`,
  );
  if (key.providerId === undefined) {
    report(ctx, 'omni.identity', 'FAIL', `the key belongs to ${JSON.stringify(key.email ?? key.identity)}, which is not an infra provider; create one with \`omnictl infraprovider create ${id}\``);
    return;
  }
  if (key.providerId !== id) {
    report(ctx, 'omni.identity', 'FAIL', `the key belongs to infra provider ${JSON.stringify(key.providerId)} but the provider ID is ${JSON.stringify(id)}; run with --id ${key.providerId} (PROVIDER_ID), or use the key of provider ${JSON.stringify(id)}`);
    return;
  }
  report(ctx, 'omni.identity', 'OK', `the key belongs to infra provider ${JSON.stringify(id)}, the configured --id`);

  const omni = connectOmni({
    endpoint: cfg.omni.endpoint,
    key,
    providerId: id,
    insecureSkipVerify: cfg.omni.insecureSkipVerify,
    ...(tls.ca !== undefined ? { caCertificates: tls.ca } : {}),
    logger: ctx.log,
  });
  const unregistered = (): void =>
    report(ctx, 'omni.registered', 'FAIL', `Omni has no infra provider ${JSON.stringify(id)} (it refuses the key's calls with "not registered"); register it with \`omnictl infraprovider create ${id}\` and use the key it prints`);
  try {
    // Omni checks the registration when it authorises a provider's call: an unregistered provider gets
    // PERMISSION_DENIED "... is not registered in the system" for every call, this Get included. NOT_FOUND means the
    // call was authorised (so the provider is registered) but the resource is hidden from the provider's key:
    // `omnictl infraprovider create` writes it without the infra-provider-id label, and Omni shows a provider only
    // the resources of the shared namespaces that carry its label.
    let visible = true;
    try {
      await withTimeout(omni.state.get(InfraProviderKind, id), ctx.timeoutMs, `Omni did not answer within ${Math.round(ctx.timeoutMs / 1000)} s`);
    } catch (err) {
      if (isNotRegistered(err)) {
        report(ctx, 'omni.api', 'OK', `${cfg.omni.endpoint} accepted the key's signature`);
        unregistered();
        return;
      }
      if (!isNotFound(err)) {
        report(ctx, 'omni.api', 'FAIL', explainOmniError(err, cfg.omni.endpoint, id));
        return;
      }
      visible = false;
    }
    report(ctx, 'omni.api', 'OK', `${cfg.omni.endpoint} accepted a signed request`);
    let requests: number;
    try {
      const list = await withTimeout(omni.state.list(MachineRequestKind, { labels: { [LABEL_INFRA_PROVIDER_ID]: id } }), ctx.timeoutMs, 'listing timed out');
      requests = list.length;
      ctx.ha.requests = list.filter((r) => usesHa(r.spec.providerData)).length;
    } catch (err) {
      if (isNotRegistered(err)) {
        unregistered();
        return;
      }
      report(ctx, 'omni.registered', 'WARN', `listing the provider's machine requests failed: ${explainOmniError(err, cfg.omni.endpoint, id)}`);
      return;
    }
    const hidden = visible
      ? ''
      : ' (its InfraProviders resource is not visible to the provider key: `omnictl infraprovider create` writes it without the omni.sidero.dev/infra-provider-id label and Omni shows a provider only labelled resources; this is normal)';
    report(ctx, 'omni.registered', 'OK', `infra provider ${JSON.stringify(id)} is registered in Omni; ${requests} machine request(s) for it${hidden}`);
  } finally {
    omni.close();
  }
}

/** PERMISSION_DENIED "infra provider with name … is not registered in the system". */
function isNotRegistered(err: unknown): boolean {
  return isPermissionDenied(err) && /not registered/i.test(err instanceof CosiError ? err.message : errorText(err));
}

/**
 * `omni.connect` / `omni.tls`: one TLS handshake to the Omni endpoint with the trust the daemon uses (the CA file on
 * top of the public CAs, or the public CAs). Returns false when Omni cannot be reached securely (later checks would
 * only repeat it), else the extra CA certificates to give the client.
 */
async function checkOmniTls(ctx: CheckContext): Promise<false | { ca?: string }> {
  const { cfg } = ctx;
  let endpoint;
  try {
    endpoint = parseOmniEndpoint(cfg.omni.endpoint);
  } catch (err) {
    report(ctx, 'omni.connect', 'FAIL', errorText(err));
    return false;
  }
  // Plaintext (http://, grpc://): the config check already warned.
  if (!endpoint.tls) return {};
  const caFile = cfg.omni.caFile;
  let ca: string | undefined;
  if (caFile !== undefined) {
    const read = ctx.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
    try {
      ca = read(caFile);
    } catch (err) {
      report(ctx, 'omni.tls', 'FAIL', `cannot read the Omni CA file ${caFile} (${errorText(err)}); check OMNI_CA_FILE / omni.caFile and the volume mount`);
      return false;
    }
  }
  const port = Number(endpoint.target.slice(endpoint.target.lastIndexOf(':') + 1));
  const where = `${endpoint.host}:${port}`;
  let peer: PeerView;
  try {
    peer = await inspectTls(endpoint.host, port, omniTrustedCas(ca), ctx.timeoutMs, ['h2', 'http/1.1']);
  } catch (err) {
    report(ctx, 'omni.connect', 'FAIL', `cannot open a TLS connection to Omni at ${where}: ${errorText(err)}; check the endpoint, DNS and the firewall`);
    return false;
  }
  report(ctx, 'omni.connect', 'OK', `TLS connection to ${where}; the server presents ${peer.subject ? `"${peer.subject}" ` : ''}with SHA-256 fingerprint ${peer.fingerprint}`);
  const trust = caFile !== undefined ? `the CA file ${caFile} (with the public CAs)` : 'the public CAs';
  if (cfg.omni.insecureSkipVerify) {
    report(ctx, 'omni.tls', 'WARN', `certificate verification is off (insecureSkipVerify); ${peer.authorized ? `${trust} would vouch for it: drop insecureSkipVerify` : `give the provider the CA that issued it with OMNI_CA_FILE (omni.caFile) instead`}`);
  } else if (!peer.authorized) {
    const fix =
      caFile !== undefined
        ? `make ${caFile} hold the CA that issued Omni's certificate (and any intermediate), or fix the certificate`
        : "if a private CA issued Omni's certificate, give that CA to the provider with OMNI_CA_FILE (--omni-ca-file, omni.caFile); NODE_EXTRA_CA_CERTS does not reach the gRPC connection";
    report(ctx, 'omni.tls', 'FAIL', `${trust} do not vouch for Omni's certificate (${peer.authorizationError || 'not trusted'}); ${fix}`);
    return false;
  } else {
    report(ctx, 'omni.tls', 'OK', `certificate verified against ${trust} (valid until ${peer.validTo})`);
  }
  if (peer.alpn !== 'h2') {
    report(ctx, 'omni.tls', 'WARN', `${where} did not agree to HTTP/2 (ALPN h2) in the TLS handshake; gRPC needs it: check that the proxy in front of Omni passes HTTP/2`);
  }
  return ca !== undefined ? { ca } : {};
}

function explainOmniError(err: unknown, endpoint: string, id: string): string {
  const text = err instanceof CosiError ? err.message : errorText(err);
  if (isUnauthenticated(err)) {
    return `Omni rejected the signature (${text}): the key was revoked or expired, belongs to another Omni, or this host's clock is more than 5 minutes off; renew it with \`omnictl infraprovider renewkey ${id}\``;
  }
  if (isPermissionDenied(err)) {
    return `Omni refused the request (${text}): the key is not an infra provider key for ${JSON.stringify(id)}, or the provider was deleted; \`omnictl infraprovider list\``;
  }
  return `cannot talk to Omni at ${endpoint} (${text}); check the endpoint, DNS, and that any proxy in front of Omni passes HTTP/2 gRPC`;
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Whether provider data (YAML) has an `ha` block; unreadable data counts as no. */
function usesHa(providerData: string): boolean {
  try {
    const v: unknown = parseYaml(providerData);
    return v !== null && typeof v === 'object' && 'ha' in v && (v as Record<string, unknown>)['ha'] !== null;
  } catch {
    return false;
  }
}
