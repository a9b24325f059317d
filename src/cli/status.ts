// `omni-infra-provider-proxmox status [--json] [daemon flags]`: what the provider is doing, read from where it keeps
// everything (Omni and Proxmox), with the daemon's own configuration: the Omni connection and the lease holder,
// Proxmox health, every machine request (stage, step, node, VMID, age, last error, addresses), orphaned VMs and the
// ISO usage per storage. Read-only. Exit 0 when Omni and Proxmox both answered, 1 otherwise, 2 for usage errors.
import { readFileSync } from 'node:fs';
import { daemonUsage, loadConfig, type LiveConfig } from '../config/index.js';
import { connectOmni, type OmniClient } from '../cosi/omni-client.js';
import {
  providerLeaseKind,
  ANNOTATION_STEP,
  LABEL_INFRA_PROVIDER_ID,
  MachineRequestKind,
  MachineRequestStatusKind,
  providerMachineKind,
} from '../cosi/resources.js';
import { decodeServiceAccountKey } from '../cosi/signing.js';
import { MachineRequestStatusSpec_Stage } from '../gen/omni/specs/infra_pb.js';
import type { MachineSpec } from '../gen/proxmox/specs/specs_pb.js';
import { silentLogger } from '../log.js';
import { decodeLease, describeHolder } from '../omni/lease.js';
import { isUnused, scanHousekeeping, type HousekeepingScan, type HousekeepingSettings, type OmniRecords, type OrphanVm, type OurIso } from '../ops/housekeeping.js';
import { PveClient } from '../proxmox/client.js';
import { UsageError } from './usage.js';

export const STATUS_USAGE = `usage: omni-infra-provider-proxmox status [--json] [daemon flags]

Loads the configuration exactly as the daemon does (flags, environment, --config-file), connects to Omni with the
provider key and to Proxmox with the token, and shows: the Omni connection and the lease holder, Proxmox health
(nodes, quorum), every machine request (stage, step, node, VMID, age, last error, addresses), orphaned VMs and the
ISO usage per storage. Read-only.

  --json   print one JSON object instead of the tables

Exit status: 0 when Omni and Proxmox both answered, 1 when one did not, 2 for usage errors.`;

export interface LeaseView {
  holder?: string;
  /** Every other field the decoder could read, for display. */
  detail?: Record<string, string>;
}

export interface RequestRow {
  id: string;
  /** PROVISIONING, PROVISIONED, FAILED, UNKNOWN (no status yet), TEARING DOWN, or NO REQUEST (a dangling private state). */
  stage: string;
  /** The step the private state records (the one running or next). */
  step: string;
  node: string;
  vmid: number | null;
  /** The machine UUID (SMBIOS) the request's VM carries. */
  uuid: string;
  ageSeconds: number | null;
  /** MachineRequestStatus.error: the last step error (empty when none). */
  error: string;
  /** MachineRequestStatus.status: e.g. `Running Step: "syncVM" (4/5)`, `Provision Complete`. */
  status: string;
  addresses: string[];
}

export interface StatusReport {
  providerId: string;
  /** The housekeeping settings this configuration gives the daemon (what it reports, whether it removes). */
  housekeeping: HousekeepingSettings;
  omni: { endpoint: string; ok: boolean; error?: string; lease: { text: string; holder?: string; detail?: Record<string, string> } };
  proxmox: {
    url: string;
    ok: boolean;
    error?: string;
    version?: string;
    /** true/false from /cluster/status; null for a single node without a cluster. */
    quorate?: boolean | null;
    nodes: Array<{ node: string; status: string }>;
  };
  requests: RequestRow[];
  /** Null when it could not be worked out (Omni or Proxmox did not answer). */
  orphanVms: OrphanVm[] | null;
  isos: { perStorage: StorageUsage[]; unused: OurIso[]; complete: boolean } | null;
  problems: string[];
}

export interface StorageUsage {
  storage: string;
  /** The node for a local storage; empty for a shared one. */
  node: string;
  talos: UsageCount;
  seeds: UsageCount;
}

interface UsageCount {
  inUse: number;
  unused: number;
  bytesInUse: number;
  bytesUnused: number;
}

export interface StatusIo {
  env?: NodeJS.ProcessEnv;
  readFile?: (path: string) => string;
  stdout?: (text: string) => void;
  now?: () => number;
  timeoutMs?: number;
}

export async function status(argv: string[], io: StatusIo = {}): Promise<number> {
  const out = io.stdout ?? ((t: string) => void process.stdout.write(t));
  if (argv.includes('--help') || argv.includes('-h')) {
    out(`${STATUS_USAGE}\n\n${daemonUsage()}\n`);
    return 0;
  }
  if (argv.some((a) => a.startsWith('--json='))) throw new UsageError('flag --json takes no value');
  const json = argv.includes('--json');
  const cfg = loadConfig(
    argv.filter((a) => a !== '--json'),
    io.env ?? process.env,
    io.readFile,
  );
  if (cfg.mode !== 'live') {
    throw new UsageError('status needs the daemon\'s configuration: set OMNI_ENDPOINT, OMNI_SERVICE_ACCOUNT_KEY, PROXMOX_URL and the Proxmox token (or --config-file)');
  }
  const report = await collectStatus(cfg, { now: io.now ?? Date.now, timeoutMs: io.timeoutMs ?? 15_000, ...(io.readFile ? { readFile: io.readFile } : {}) });
  out(json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report, io.now ?? Date.now));
  return report.omni.ok && report.proxmox.ok ? 0 : 1;
}

export default (argv: string[]): Promise<number> => status(argv);

// ---------------------------------------------------------------------------------------------------------------
// Collecting

/** The static addresses the private state records for a request (field 110), as `net<N> <address>/<prefix>`. */
export function stateAddresses(spec: MachineSpec): string[] {
  return spec.nicAddresses.map((a) => `net${a.nic} ${a.address}`);
}

const STAGES: Record<number, string> = {
  [MachineRequestStatusSpec_Stage.UNKNOWN]: 'UNKNOWN',
  [MachineRequestStatusSpec_Stage.PROVISIONING]: 'PROVISIONING',
  [MachineRequestStatusSpec_Stage.PROVISIONED]: 'PROVISIONED',
  [MachineRequestStatusSpec_Stage.FAILED]: 'FAILED',
};

export async function collectStatus(cfg: LiveConfig, opts: { now: () => number; timeoutMs: number; readFile?: (path: string) => string }): Promise<StatusReport> {
  const id = cfg.provider.id;
  const problems: string[] = [];
  const report: StatusReport = {
    providerId: id,
    housekeeping: cfg.housekeeping,
    omni: { endpoint: cfg.omni.endpoint, ok: false, lease: { text: 'unknown (Omni did not answer)' } },
    proxmox: { url: cfg.proxmox.url, ok: false, nodes: [] },
    requests: [],
    orphanVms: null,
    isos: null,
    problems,
  };
  const bound = <T>(p: Promise<T>, what: string): Promise<T> => withTimeout(p, opts.timeoutMs, `${what} did not answer within ${Math.round(opts.timeoutMs / 1000)} s`);

  let omni: OmniClient | undefined;
  let records: OmniRecords | undefined;
  try {
    const key = await decodeServiceAccountKey(cfg.omni.serviceAccountKey, { providerId: id });
    const read = opts.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
    omni = connectOmni({
      endpoint: cfg.omni.endpoint,
      key,
      providerId: id,
      insecureSkipVerify: cfg.omni.insecureSkipVerify,
      ...(cfg.omni.caFile !== undefined ? { caCertificates: read(cfg.omni.caFile) } : {}),
      logger: silentLogger,
    });
    const st = omni.state;
    const [requests, statuses, states, leases] = await bound(
      Promise.all([
        st.list(MachineRequestKind, { labels: { [LABEL_INFRA_PROVIDER_ID]: id } }),
        st.list(MachineRequestStatusKind, { labels: { [LABEL_INFRA_PROVIDER_ID]: id } }),
        st.list(providerMachineKind(id)),
        st.list(providerLeaseKind(id)),
      ]),
      'Omni',
    );
    report.omni.ok = true;
    records = { requestIds: new Set(requests.map((r) => r.metadata.id)), states: new Map(states.map((s) => [s.metadata.id, s])) };
    const lease = leases[0];
    if (lease) {
      const view = decodeLease(lease);
      const renewed = lease.metadata.updated ? `, renewed ${ago(opts.now() - lease.metadata.updated.getTime())} ago` : '';
      const holder = describeHolder(view);
      report.omni.lease = {
        text: view.holderInstance === '' ? `released${renewed}` : `held by ${holder}${renewed}`,
        holder,
        detail: {
          version: view.holderVersion,
          durationSeconds: String(view.durationSeconds),
          renewDeadlineSeconds: String(view.renewDeadlineSeconds),
          transitions: String(view.transitions),
        },
      };
    } else {
      report.omni.lease = { text: 'no lease (no instance has taken one yet)' };
    }
    const statusById = new Map(statuses.map((s) => [s.metadata.id, s]));
    const ids = [...new Set([...requests.map((r) => r.metadata.id), ...states.map((s) => s.metadata.id)])].sort();
    const requestById = new Map(requests.map((r) => [r.metadata.id, r]));
    for (const rid of ids) {
      const req = requestById.get(rid);
      const mrs = statusById.get(rid);
      const state = records.states.get(rid);
      const spec = state?.spec;
      let stage: string;
      if (!req) stage = 'NO REQUEST (dangling state)';
      else if (req.metadata.phase === 'tearingDown') stage = 'TEARING DOWN';
      else stage = mrs ? (STAGES[mrs.spec.stage] ?? String(mrs.spec.stage)) : 'UNKNOWN';
      const created = (req ?? state)?.metadata.created;
      report.requests.push({
        id: rid,
        stage,
        step: state?.metadata.annotations[ANNOTATION_STEP] ?? '',
        node: spec?.node ?? '',
        vmid: spec ? spec.vmid || spec.createVmid || null : null,
        uuid: spec?.uuid ?? '',
        ageSeconds: created ? Math.max(0, Math.round((opts.now() - created.getTime()) / 1000)) : null,
        error: mrs?.spec.error ?? '',
        status: mrs?.spec.status ?? '',
        addresses: spec ? stateAddresses(spec) : [],
      });
    }
  } catch (err) {
    report.omni.error = errorText(err);
    problems.push(`Omni: ${errorText(err)}`);
  } finally {
    omni?.close();
  }

  const pve = new PveClient({ ...cfg.proxmox, logger: silentLogger, requestTimeoutMs: opts.timeoutMs, connectTimeoutMs: opts.timeoutMs });
  try {
    const v = await bound(pve.version(), 'Proxmox');
    report.proxmox.version = v.version;
    const nodes = await bound(pve.nodes(), 'Proxmox');
    report.proxmox.nodes = nodes.map((n) => ({ node: n.node, status: n.status })).sort((a, b) => a.node.localeCompare(b.node));
    try {
      const cluster = (await bound(pve.clusterStatus(), 'Proxmox')).find((e) => e.type === 'cluster');
      report.proxmox.quorate = cluster ? cluster.quorate === true : null;
    } catch (err) {
      problems.push(`Proxmox: /cluster/status: ${errorText(err)}`);
    }
    report.proxmox.ok = true;
    // Without Omni's records every VM of ours would look orphaned: only the ISO usage by VMs is shown then.
    const scan: HousekeepingScan = await bound(
      scanHousekeeping(pve, async () => records ?? { requestIds: new Set(), states: new Map() }),
      'Proxmox',
    );
    problems.push(...scan.problems.map((p) => `Proxmox: ${p}`));
    if (records) report.orphanVms = scan.orphanVms;
    report.isos = { perStorage: perStorage(scan.isos), unused: scan.isos.filter(isUnused), complete: scan.complete && records !== undefined };
  } catch (err) {
    report.proxmox.error = errorText(err);
    problems.push(`Proxmox: ${errorText(err)}`);
  } finally {
    await pve.close();
  }
  return report;
}

function perStorage(isos: readonly OurIso[]): StorageUsage[] {
  const by = new Map<string, StorageUsage>();
  const empty = (): UsageCount => ({ inUse: 0, unused: 0, bytesInUse: 0, bytesUnused: 0 });
  for (const i of isos) {
    const node = i.shared ? '' : i.node;
    const key = `${i.storage}/${node}`;
    let u = by.get(key);
    if (!u) by.set(key, (u = { storage: i.storage, node, talos: empty(), seeds: empty() }));
    const c = i.kind === 'talos' ? u.talos : u.seeds;
    if (isUnused(i)) {
      c.unused++;
      c.bytesUnused += i.size;
    } else {
      c.inUse++;
      c.bytesInUse += i.size;
    }
  }
  return [...by.values()].sort((a, b) => a.storage.localeCompare(b.storage) || a.node.localeCompare(b.node));
}

// ---------------------------------------------------------------------------------------------------------------
// Printing

/** The tables `status` prints by default. */
export function formatStatus(r: StatusReport, now: () => number = Date.now): string {
  const lines: string[] = [];
  lines.push(`provider  ${r.providerId}`);
  lines.push(`omni      ${r.omni.endpoint}  ${r.omni.ok ? `OK, ${r.requests.length} machine request(s)` : `FAILED: ${r.omni.error ?? ''}`}`);
  lines.push(`lease     ${r.omni.lease.text}`);
  const px = r.proxmox;
  if (px.ok) {
    const online = px.nodes.filter((n) => n.status === 'online').length;
    const quorum = px.quorate === null || px.quorate === undefined ? 'no cluster (single node)' : px.quorate ? 'quorate' : 'NOT QUORATE';
    lines.push(`proxmox   ${px.url}  OK, Proxmox VE ${px.version ?? '?'}, ${quorum}, ${online}/${px.nodes.length} node(s) online: ${px.nodes.map((n) => `${n.node} ${n.status}`).join(', ')}`);
  } else {
    lines.push(`proxmox   ${px.url}  FAILED: ${px.error ?? ''}`);
  }
  lines.push('', 'MACHINE REQUESTS');
  if (r.requests.length === 0) lines.push(r.omni.ok ? '(none)' : '(unknown: Omni did not answer)');
  else {
    lines.push(
      ...table(
        ['REQUEST', 'STAGE', 'STEP', 'NODE', 'VMID', 'AGE', 'ADDRESSES', 'LAST ERROR'],
        r.requests.map((q) => [q.id, q.stage, q.step || '-', q.node || '-', q.vmid === null ? '-' : String(q.vmid), q.ageSeconds === null ? '-' : ago(q.ageSeconds * 1000), q.addresses.join(' ') || '-', oneLine(q.error) || '-']),
      ),
    );
  }
  const hk = r.housekeeping;
  const removal = (on: boolean, what: string): string => (on ? `${what} removed` : `${what} only reported`);
  lines.push(
    '',
    hk.intervalSeconds > 0
      ? `housekeeping every ${hk.intervalSeconds} s: ${removal(hk.removeOrphanVms, `orphaned VMs`)}${hk.removeOrphanVms ? ` after ${ago(hk.orphanVmGraceSeconds * 1000)}` : ''}, ${removal(hk.removeUnusedIsos, 'unused ISOs')}${hk.removeUnusedIsos ? ` (Talos ISOs after ${ago(hk.talosIsoMinAgeSeconds * 1000)})` : ''}`
      : 'housekeeping off (housekeeping.intervalSeconds: 0)',
  );
  lines.push('', 'ORPHANED VMS (our identity, no machine request, no private state)');
  if (r.orphanVms === null) lines.push('(unknown: needs both Omni and Proxmox; see the problems below)');
  else if (r.orphanVms.length === 0) lines.push('(none)');
  else lines.push(...table(['VMID', 'NODE', 'NAME', 'SMBIOS UUID', 'STATUS', 'LOCK'], r.orphanVms.map((v) => [String(v.vmid), v.node, v.name, v.uuid, v.status ?? '-', v.lock ?? '-'])));
  lines.push('', 'ISO USAGE (Talos ISOs <sha256>.iso, seeds omni-seed-*.iso and user-data-<vmid>.iso a request records; "unused" = no VM and no request names it)');
  if (r.isos === null) lines.push('(unknown: see the problems below)');
  else {
    if (r.isos.perStorage.length === 0) lines.push('(no ISO of ours on any storage)');
    else {
      const u = (c: UsageCount): string => `${c.inUse} in use (${size(c.bytesInUse)}), ${c.unused} unused (${size(c.bytesUnused)})`;
      lines.push(...table(['STORAGE', 'NODE', 'TALOS ISOS', 'SEEDS'], r.isos.perStorage.map((s) => [s.storage, s.node || '(shared)', u(s.talos), u(s.seeds)])));
    }
    if (r.isos.unused.length > 0) {
      lines.push('', 'UNUSED ISOS');
      const t = now() / 1000;
      lines.push(...table(['VOLUME', 'NODE', 'KIND', 'SIZE', 'AGE'], r.isos.unused.map((i) => [i.volid, i.shared ? '(shared)' : i.node, i.kind, size(i.size), i.ctime === undefined ? '?' : ago((t - i.ctime) * 1000)])));
    }
    if (!r.isos.complete) lines.push('(incomplete: see the problems below)');
  }
  if (r.problems.length > 0) lines.push('', 'PROBLEMS', ...r.problems.map((p) => `- ${p}`));
  return `${lines.join('\n')}\n`;
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(head), ...rows.map(line)];
}

function oneLine(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > 120 ? `${t.slice(0, 117)}...` : t;
}

export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function size(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

function errorText(err: unknown): string {
  const e = err as { message?: unknown } | null;
  return typeof e?.message === 'string' ? e.message.split('\n')[0]! : String(err);
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
