// The seeded chaos run (test/e2e/chaos.test.ts, docs/chaos.md): one SeededRandom per seed plans everything up front
// (the machine sets and requests, the foreign VMs of the fixture, and a timeline of creates, deletes, faults of both
// simulators and daemon kills), a runner plays that timeline against the real daemon (child process), then every
// fault is lifted, the daemon restarted once more, and the end state is checked against the invariants.
//
// A seed replays the same plan. The daemon runs on wall time and its own randomness (UUIDs, retry jitter) is not
// seeded, so which request a fault lands on can differ between two runs of one seed; the plan does not.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readPrivateKey } from 'openpgp';
import { fromBinary } from '@bufbuild/protobuf';
import { MachineSpecSchema, type MachineSpec } from '../../src/gen/proxmox/specs/specs_pb.js';
import { smbiosUuidOf } from '../../src/provision/cluster.js';
import { MACHINE_REQUEST_TAG_PREFIX } from '../../src/provision/planVm.js';
import { isoFileName } from '../../src/provision/isoStore.js';
import { VMID_SEED_PATTERN } from '../../src/provision/orphanSeeds.js';
import { seedIsoFileName } from '../../src/proxmox/nocloud.js';
import { GrpcCode } from '../../src/sim/omni/errors.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import type { RequestFault, RequestMatch, TaskMatch } from '../../src/sim/proxmox/faults.js';
import type { FixtureVm } from '../../src/sim/proxmox/fixture.js';
import type { TaskOutcomeOverride } from '../../src/sim/proxmox/tasks.js';
import { SeededRandom } from '../../src/sim/rng.js';
import {
  CONTROLLER,
  e2eFixture,
  PRIVATE_NS,
  PRIVATE_TYPE,
  PROVIDER_TOKEN,
  STEP_ANNOTATION,
  statusOf,
  type DaemonProcess,
  type World,
} from './e2e.js';
import { REPO_ROOT } from './daemon-command.js';
import { Changes, simChanges, simulatedTime, storeChanges, waitFor, whenAborted, type Trigger } from './wait.js';

// --- seeds ----------------------------------------------------------------------------------------------------------

/** The seeds the CI run uses when CHAOS_SEEDS is not set. */
export const CI_SEEDS = [1, 2, 3];

/** `1-50`, `3,7,11` or `1-5,9`: the listed seeds, in order, without repeats. */
export function parseSeeds(spec: string | undefined): number[] {
  if (spec === undefined || spec.trim() === '') return CI_SEEDS;
  const out: number[] = [];
  for (const part of spec.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const range = /^(\d+)\s*-\s*(\d+)$/.exec(part);
    if (range) {
      const [from, to] = [Number(range[1]), Number(range[2])];
      if (to < from) throw new Error(`CHAOS_SEEDS: empty range ${part}`);
      for (let s = from; s <= to; s++) out.push(s);
    } else if (/^\d+$/.test(part)) {
      out.push(Number(part));
    } else {
      throw new Error(`CHAOS_SEEDS: ${JSON.stringify(part)} is neither a seed nor a range like 1-50`);
    }
  }
  return [...new Set(out)];
}

/** The command that replays one seed. */
export function replayCommand(seed: number): string {
  return `CHAOS_SEEDS=${seed} TEST_DAEMON_LAYOUT=tsx npx vitest run test/e2e/chaos.test.ts`;
}

// --- the plan -------------------------------------------------------------------------------------------------------

/** Simulated milliseconds; the world runs them at TIME_SCALE wall time each. */
export const TIME_SCALE = 0.05;
/** The VM create task, slowed down so that deletes and kills land while creates are in flight. */
export const CREATE_TASK_MS = 10_000;

export interface SetPlan {
  id: string;
  talosVersion: string;
  providerData: string;
}

export interface RequestPlan {
  id: string;
  set: string;
}

type Window = { windowMs: number };

/** One thing the runner does. `pick` (0..1) chooses among what exists when the action runs. */
export type Action =
  | { kind: 'create'; request: string }
  | { kind: 'delete'; pick: number }
  | { kind: 'deleteInFlight'; pick: number }
  | { kind: 'sigkill' }
  | { kind: 'sigkillMidCreate' }
  | { kind: 'sigterm' }
  | { kind: 'pveRequestFault'; match: RequestMatch; fault: RequestFault; times: number }
  | { kind: 'pveTaskFault'; match: TaskMatch; outcome: TaskOutcomeOverride; times: number }
  | ({ kind: 'nodeOffline'; node: string } & Window)
  | ({ kind: 'quorumLoss' } & Window)
  | ({ kind: 'storageInactive'; storage: string; node: string } & Window)
  | ({ kind: 'storageFull'; storage: string; node: string } & Window)
  | ({ kind: 'storageDisabled'; storage: string } & Window)
  | { kind: 'downloadFailures'; times: number }
  | ({ kind: 'credentials'; what: CredentialFault } & Window)
  | ({ kind: 'vmLock'; pick: number; lock: string } & Window)
  | { kind: 'vmMutex'; pick: number; ms: number }
  | { kind: 'migrate'; pick: number; pickNode: number }
  | { kind: 'haManaged'; pick: number }
  | { kind: 'foreignVm'; name: string; set: string; node: string }
  | { kind: 'grabVmid'; node: string; name: string }
  | { kind: 'omniCutWatches' }
  | { kind: 'omniErrored' }
  | ({ kind: 'omniUnavailable' } & Window)
  | { kind: 'omniFailNext'; method: string; code: number; times: number }
  | { kind: 'omniStaleReads'; type: string; times: number }
  | ({ kind: 'omniKeyExpired' } & Window)
  | ({ kind: 'omniClockSkew'; skewMs: number } & Window);

export type CredentialFault = 'expireToken' | 'revokeToken' | 'revokeAcl' | 'revokeTickets' | 'ticketLifetimeZero' | 'passwordChanged' | 'rejectCsrf';

export interface TimelineEvent {
  /** Simulated ms after the previous event. */
  afterMs: number;
  /** Index of the action in `actions` this event starts, or ends (`end: true`, windowed faults only). */
  action: number;
  end?: boolean;
}

export interface ChaosPlan {
  seed: number;
  auth: 'token' | 'ticket';
  versionProfile: 'pve8.4' | 'pve9';
  /** Simulated ms a task held by a `stuck` fault stays stuck before the run releases it (a slow worker). */
  stuckForMs: number;
  fixtureSeed: number;
  omniSeed: number;
  sets: SetPlan[];
  requests: RequestPlan[];
  /** Foreign VMs in the fixture, two of them named and tagged like requests of this run. */
  foreignVms: FixtureVm[];
  actions: Action[];
  timeline: TimelineEvent[];
}

const NODES = ['pve1', 'pve2', 'pve3'];

/** Proxmox calls the daemon makes, weighted (the create and the delete of a VM most). */
const ROUTES: Array<{ method: string; route: string; weight: number; write?: boolean }> = [
  { method: 'POST', route: '/nodes/{node}/qemu', weight: 6, write: true },
  { method: 'DELETE', route: '/nodes/{node}/qemu/{vmid}', weight: 3, write: true },
  { method: 'POST', route: '/nodes/{node}/qemu/{vmid}/status/start', weight: 2, write: true },
  { method: 'POST', route: '/nodes/{node}/qemu/{vmid}/status/shutdown', weight: 1, write: true },
  { method: 'POST', route: '/nodes/{node}/qemu/{vmid}/status/stop', weight: 1, write: true },
  { method: 'PUT', route: '/nodes/{node}/qemu/{vmid}/config', weight: 1, write: true },
  { method: 'POST', route: '/nodes/{node}/storage/{storage}/upload', weight: 2, write: true },
  { method: 'POST', route: '/nodes/{node}/storage/{storage}/download-url', weight: 1, write: true },
  { method: 'DELETE', route: '/nodes/{node}/storage/{storage}/content/{volume*}', weight: 1, write: true },
  { method: 'DELETE', route: '/nodes/{node}/tasks/{upid}', weight: 1, write: true },
  { method: 'GET', route: '/cluster/resources', weight: 3 },
  { method: 'GET', route: '/cluster/nextid', weight: 1 },
  { method: 'GET', route: '/nodes', weight: 1 },
  { method: 'GET', route: '/nodes/{node}/qemu/{vmid}/config', weight: 3 },
  { method: 'GET', route: '/nodes/{node}/qemu/{vmid}/status/current', weight: 2 },
  { method: 'GET', route: '/nodes/{node}/tasks/{upid}/status', weight: 3 },
  { method: 'GET', route: '/nodes/{node}/storage', weight: 1 },
  { method: 'GET', route: '/nodes/{node}/storage/{storage}/content', weight: 1 },
];

const TASK_TYPES: Array<{ type: string; weight: number }> = [
  { type: 'qmcreate', weight: 5 },
  { type: 'qmstart', weight: 2 },
  { type: 'qmdestroy', weight: 2 },
  { type: 'qmshutdown', weight: 1 },
  { type: 'qmstop', weight: 1 },
  { type: 'imgcopy', weight: 2 },
  { type: 'download', weight: 1 },
];

function weighted<T extends { weight: number }>(rng: SeededRandom, items: readonly T[]): T {
  const total = items.reduce((s, i) => s + i.weight, 0);
  let r = rng.next() * total;
  for (const item of items) {
    r -= item.weight;
    if (r < 0) return item;
  }
  return items[items.length - 1]!;
}

function oneOf<T>(rng: SeededRandom, items: readonly T[]): T {
  return items[rng.int(items.length)]!;
}

function between(rng: SeededRandom, lo: number, hi: number): number {
  return lo + rng.int(hi - lo + 1);
}

function requestFault(rng: SeededRandom, write: boolean): RequestFault {
  const kinds = write
    ? ['httpError', 'httpError', 'lostResponse', 'lostResponse', 'lostResponse', 'connReset', 'badBody', 'latency', 'hang']
    : ['httpError', 'httpError', 'lostResponse', 'connReset', 'badBody', 'latency', 'hang'];
  switch (oneOf(rng, kinds)) {
    case 'httpError': {
      const status = oneOf(rng, write ? [500, 502, 503, 504, 595, 596] : [500, 502, 503, 504, 596]);
      return { kind: 'httpError', status };
    }
    case 'lostResponse':
      return rng.next() < 0.5 ? { kind: 'lostResponse', mode: 'reset' } : { kind: 'lostResponse', mode: 'error', status: oneOf(rng, [502, 503, 504]) };
    case 'connReset':
      return { kind: 'connReset' };
    case 'badBody':
      return { kind: 'badBody', mode: oneOf(rng, ['truncated', 'invalidJson', 'wrongContentType'] as const) };
    case 'latency':
      return { kind: 'latency', ms: between(rng, 1_000, 8_000), jitterMs: 1_000 };
    default:
      return { kind: 'hang' };
  }
}

function taskOutcome(rng: SeededRandom): TaskOutcomeOverride {
  switch (oneOf(rng, ['fail', 'fail', 'stuck', 'stuck', 'vanish', 'unexpected', 'warnings'])) {
    case 'fail':
      return { kind: 'fail', message: 'injected failure (chaos)' };
    case 'stuck':
      return { kind: 'stuck' };
    case 'vanish':
      return { kind: 'vanish' };
    case 'unexpected':
      return { kind: 'unexpected' };
    default:
      return { kind: 'warnings', count: 1 };
  }
}

const SMALL = (selector: string) => `cores: 1
memory: 2048
disk_size: 10
storage_selector: ${selector}
`;

/** Everything one seed does, decided up front by one SeededRandom. */
export function planChaos(seed: number): ChaosPlan {
  // A string seed: FNV-hashed, so that consecutive seeds do not start with correlated draws.
  const rng = new SeededRandom(`chaos:${seed}`);
  const auth = rng.next() < 0.5 ? 'token' : 'ticket';
  const fixtureSeed = rng.int(2 ** 31);
  const stuckForMs = between(rng, 20_000, 90_000);
  const versionProfile = rng.next() < 0.5 ? 'pve8.4' : 'pve9';
  const omniSeed = rng.int(2 ** 31);
  const sets: SetPlan[] = [
    { id: `chaos${seed}-a`, talosVersion: 'v1.11.5', providerData: SMALL('name == "local-lvm"') },
    { id: `chaos${seed}-b`, talosVersion: 'v1.11.5', providerData: SMALL('name == "ceph-vm"') },
    { id: `chaos${seed}-c`, talosVersion: 'v1.10.7', providerData: SMALL('type == "lvmthin"') },
  ];
  const requests: RequestPlan[] = [];
  const count = between(rng, 10, 13);
  for (let i = 0; i < count; i++) {
    const set = oneOf(rng, sets).id;
    requests.push({ id: `${set}-${String(i).padStart(2, '0')}`, set });
  }
  // Foreign VMs: two named after requests of this run and tagged with their set (one running, one stopped), one
  // plain. Their smbios1 carries another UUID: they look like ours by name and tag, and must never be touched.
  const foreignVms: FixtureVm[] = [];
  let vmid = 102 + rng.int(6);
  for (const [i, req] of [requests[0]!, requests[1]!].entries()) {
    foreignVms.push({
      vmid: vmid++,
      node: oneOf(rng, NODES),
      name: req.id,
      tags: [`${MACHINE_REQUEST_TAG_PREFIX}${req.set}`],
      maxmem: 1024 * 1024 * 1024,
      status: i === 0 ? 'running' : 'stopped',
      smbiosUuid: rng.uuid(),
      disk: { storage: 'local-lvm', sizeGiB: 8 },
    });
  }
  foreignVms.push({
    vmid: vmid + rng.int(4),
    node: oneOf(rng, NODES),
    name: 'someone-elses-db',
    tags: ['prod'],
    status: 'running',
    disk: { storage: 'ceph-vm', sizeGiB: 8 },
  });

  // The timeline: absolute simulated times, then turned into gaps.
  const actions: Action[] = [];
  const at: Array<{ atMs: number; action: number; end?: boolean }> = [];
  const add = (atMs: number, action: Action) => {
    const index = actions.push(action) - 1;
    at.push({ atMs, action: index });
    if ('windowMs' in action) at.push({ atMs: atMs + action.windowMs, action: index, end: true });
    return index;
  };
  const span = 300_000;
  // Creates: three at the start, the rest spread over the first two thirds.
  requests.forEach((r, i) => add(i < 3 ? i * 500 : between(rng, 2_000, (span * 2) / 3), { kind: 'create', request: r.id }));
  // Deletes: about 40 % of the requests, half of them aimed at a create in flight (while creates are still coming).
  const deletes = Math.round(count * 0.4);
  for (let i = 0; i < deletes; i++) {
    if (i % 2 === 0) add(between(rng, 5_000, (span * 2) / 3), { kind: 'deleteInFlight', pick: rng.next() });
    else add(between(rng, 8_000, span), { kind: 'delete', pick: rng.next() });
  }
  // The daemon: killed mid-create once, killed at a random moment once or twice, stopped gracefully sometimes.
  add(between(rng, 5_000, span / 2), { kind: 'sigkillMidCreate' });
  for (let i = between(rng, 1, 2); i > 0; i--) add(between(rng, 10_000, span), { kind: 'sigkill' });
  if (rng.next() < 0.5) add(between(rng, 10_000, span), { kind: 'sigterm' });
  // Faults.
  const faults = between(rng, 16, 22);
  for (let i = 0; i < faults; i++) {
    const t = between(rng, 1_000, span);
    const windowMs = between(rng, 3_000, 30_000);
    const what = weighted(rng, [
      { k: 'pveRequest', weight: 8 },
      { k: 'pveTask', weight: 5 },
      { k: 'node', weight: 1.5 },
      { k: 'quorum', weight: 0.5 },
      { k: 'storage', weight: 1 },
      { k: 'downloads', weight: 0.5 },
      { k: 'credentials', weight: 2 },
      { k: 'vm', weight: 1.5 },
      { k: 'foreign', weight: 1 },
      { k: 'omni', weight: 4 },
    ]).k;
    switch (what) {
      case 'pveRequest': {
        const r = weighted(rng, ROUTES);
        const fault = requestFault(rng, r.write === true);
        const match: RequestMatch = { method: r.method, route: r.route };
        add(t, { kind: 'pveRequestFault', match, fault, times: between(rng, 1, 3) });
        // A hung call ends only with its process (the client's own timeout is 60 s of wall time): a kill follows.
        if (fault.kind === 'hang') add(t + between(rng, 10_000, 40_000), { kind: 'sigkill' });
        break;
      }
      case 'pveTask':
        add(t, { kind: 'pveTaskFault', match: { type: weighted(rng, TASK_TYPES).type }, outcome: taskOutcome(rng), times: between(rng, 1, 2) });
        break;
      case 'node':
        add(t, { kind: 'nodeOffline', node: oneOf(rng, NODES), windowMs });
        break;
      case 'quorum':
        add(t, { kind: 'quorumLoss', windowMs });
        break;
      case 'storage': {
        const k = oneOf(rng, ['inactive', 'full', 'disabled']);
        if (k === 'inactive') add(t, { kind: 'storageInactive', storage: oneOf(rng, ['local-lvm', 'local', 'nfs-iso']), node: oneOf(rng, NODES), windowMs });
        else if (k === 'full') add(t, { kind: 'storageFull', storage: oneOf(rng, ['local-lvm', 'ceph-vm']), node: oneOf(rng, NODES), windowMs });
        else add(t, { kind: 'storageDisabled', storage: oneOf(rng, ['local-lvm', 'ceph-vm', 'nfs-iso']), windowMs });
        break;
      }
      case 'downloads':
        add(t, { kind: 'downloadFailures', times: between(rng, 1, 3) });
        break;
      case 'credentials': {
        const kinds: CredentialFault[] =
          auth === 'token'
            ? ['expireToken', 'revokeToken', 'revokeAcl']
            : ['revokeTickets', 'ticketLifetimeZero', 'passwordChanged', 'revokeAcl', 'rejectCsrf'];
        add(t, { kind: 'credentials', what: oneOf(rng, kinds), windowMs });
        break;
      }
      case 'vm': {
        const k = oneOf(rng, ['lock', 'mutex', 'migrate', 'migrate', 'ha']);
        if (k === 'lock') add(t, { kind: 'vmLock', pick: rng.next(), lock: oneOf(rng, ['backup', 'migrate', 'snapshot']), windowMs });
        else if (k === 'mutex') add(t, { kind: 'vmMutex', pick: rng.next(), ms: between(rng, 2_000, 15_000) });
        else if (k === 'migrate') add(t, { kind: 'migrate', pick: rng.next(), pickNode: rng.next() });
        else add(t, { kind: 'haManaged', pick: rng.next() });
        break;
      }
      case 'foreign': {
        const req = oneOf(rng, requests);
        if (rng.next() < 0.5) add(t, { kind: 'foreignVm', name: req.id, set: req.set, node: oneOf(rng, NODES) });
        else add(t, { kind: 'grabVmid', node: oneOf(rng, NODES), name: req.id });
        break;
      }
      default: {
        const k = oneOf(rng, ['cut', 'cut', 'errored', 'unavailable', 'failNext', 'failNext', 'stale', 'key', 'skew']);
        if (k === 'cut') add(t, { kind: 'omniCutWatches' });
        else if (k === 'errored') add(t, { kind: 'omniErrored' });
        else if (k === 'unavailable') add(t, { kind: 'omniUnavailable', windowMs: Math.min(windowMs, 10_000) });
        else if (k === 'failNext') {
          add(t, {
            kind: 'omniFailNext',
            method: oneOf(rng, ['Get', 'List', 'Create', 'Update', 'Teardown', 'Destroy']),
            code: oneOf(rng, [GrpcCode.UNAVAILABLE, GrpcCode.INTERNAL, GrpcCode.DEADLINE_EXCEEDED, GrpcCode.ABORTED]),
            times: between(rng, 1, 3),
          });
        } else if (k === 'stale') {
          add(t, { kind: 'omniStaleReads', type: oneOf(rng, [TYPES.machineRequest, TYPES.machineRequestStatus, PRIVATE_TYPE]), times: between(rng, 1, 4) });
        } else if (k === 'key') add(t, { kind: 'omniKeyExpired', windowMs: Math.min(windowMs, 10_000) });
        else add(t, { kind: 'omniClockSkew', skewMs: oneOf(rng, [-1, 1]) * between(rng, 6, 30) * 60_000, windowMs: Math.min(windowMs, 10_000) });
      }
    }
  }
  at.sort((a, b) => a.atMs - b.atMs || a.action - b.action || Number(a.end ?? false) - Number(b.end ?? false));
  let previous = 0;
  const timeline: TimelineEvent[] = at.map((e) => {
    const afterMs = e.atMs - previous;
    previous = e.atMs;
    return { afterMs, action: e.action, ...(e.end ? { end: true } : {}) };
  });
  return { seed, auth, versionProfile, stuckForMs, fixtureSeed, omniSeed, sets, requests, foreignVms, actions, timeline };
}

export function describeAction(a: Action): string {
  switch (a.kind) {
    case 'create':
      return `create ${a.request}`;
    case 'pveRequestFault':
      return `proxmox ${a.match.method} ${String(a.match.route)}: ${JSON.stringify(a.fault)} on the next ${a.times} call(s)`;
    case 'pveTaskFault':
      return `proxmox task ${a.match.type}: ${JSON.stringify(a.outcome)} for the next ${a.times} task(s)`;
    default: {
      const { kind, ...rest } = a;
      const detail = Object.entries(rest)
        .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : JSON.stringify(v)}`)
        .join(' ');
      return detail ? `${kind} ${detail}` : kind;
    }
  }
}

// --- the run --------------------------------------------------------------------------------------------------------

/** The world options of a plan: the 3-node fixture with the plan's foreign VMs and a 10 s create task. */
export function chaosWorldOptions(plan: ChaosPlan, signal: AbortSignal | undefined) {
  const base = e2eFixture();
  return {
    signal,
    timeScale: TIME_SCALE,
    omni: { seed: plan.omniSeed },
    fixture: {
      seed: plan.fixtureSeed,
      versionProfile: plan.versionProfile,
      taskDurations: { ...base.taskDurations, qmcreate: CREATE_TASK_MS },
      vms: [...(base.vms ?? []), ...plan.foreignVms],
    },
  };
}

interface ForeignVm {
  vmid: number;
  node: string;
  running: boolean;
  /** The config as the simulator holds it (key order included), serialised. */
  config: string;
  why: string;
  /** Index in the simulator's request log from which calls can concern this VM (the VMID may have been ours before). */
  since: number;
}

function configText(config: Map<string, string>): string {
  return JSON.stringify([...config.entries()]);
}

/** Undo of a windowed fault. */
type Undo = () => void;

export class ChaosRun {
  readonly log: string[] = [];
  /** Problems seen while running (not the end-state invariants): the run fails with them too. */
  readonly problems: string[] = [];
  /** Requests created, and those deleted (Omni's teardown started). */
  readonly created: string[] = [];
  readonly deleted = new Map<string, { settled: boolean; error?: string }>();
  /** Every SMBIOS UUID each request's private state ever carried. */
  readonly uuids = new Map<string, Set<string>>();
  readonly foreign = new Map<number, ForeignVm>();
  /** Every write of each request's private state and status, compactly, for the report. */
  readonly history = new Map<string, string[]>();
  /** VMID → request, from the create calls the simulator answered. */
  readonly createdVmids = new Map<number, string>();
  private readonly undo = new Map<number, Undo>();
  private readonly deletions: Promise<void>[] = [];
  private readonly deleteAbort = new AbortController();
  private readonly daemonActivity = new Changes();
  private readonly triggers: Trigger[];
  private readonly t0: number;
  private daemon: DaemonProcess | undefined;
  /** Daemons we stopped on purpose (their exit is expected). */
  private readonly stopping = new WeakSet<DaemonProcess>();
  /** `hang` rules, and how many of their uses were consumed when the current daemon started. */
  private readonly hangRules: Array<{ id: number; times: number }> = [];
  private hangsUsedAtStart = 0;
  /** Outages in progress per group (see `outage`). */
  private readonly held = new Map<string, { count: number; restore: Undo }>();
  private restartAfterOutage = false;
  private fingerprint: string | undefined;
  /** Daemons that lived through (or started during) an Omni outage: their start-up may fail, by design. */
  private readonly sawOmniOutage = new WeakSet<DaemonProcess>();
  readonly daemons: DaemonProcess[] = [];
  private readonly unsubscribe: Array<() => void> = [];
  /** Daemon kills and starts, one at a time. */
  private lifecycle: Promise<void> = Promise.resolve();
  /** Actions waiting for the next create call of a live request (deleteInFlight, sigkillMidCreate). */
  private armed: Array<{ index: number; kind: 'delete' | 'kill' }> = [];
  private closed = false;

  constructor(
    readonly plan: ChaosPlan,
    readonly world: World,
    private readonly spawn: (env?: Record<string, string | undefined>) => DaemonProcess,
  ) {
    this.t0 = world.sim.clock.now();
    this.triggers = [storeChanges(world.omni.store), simChanges(world.sim), this.daemonActivity.trigger];
    for (const vm of plan.foreignVms) this.recordForeign(vm.vmid, 'fixture');
    const handle = world.omni.store.watchKind(PRIVATE_NS, PRIVATE_TYPE, {}, (events) => {
      for (const e of events) {
        if (!e.resource) continue;
        const spec = fromBinary(MachineSpecSchema, e.resource.spec.protoSpec);
        const { metadata } = e.resource;
        const task7 = spec.vmCreateTask ? spec.vmCreateTask.split(':').slice(5, 7).join(':') : '-';
        const task109 = spec.seedUploadTask.startsWith('UPID:') ? 'upid' : spec.seedUploadTask || '-';
        this.remember(
          metadata.id,
          `state v${metadata.version} ${e.type} ${metadata.phase} step=${metadata.annotations[STEP_ANNOTATION] ?? '-'} ` +
            `vmid=${spec.vmid} create=${spec.createVmid}@${spec.createNode} task7=${task7} node=${spec.node} ` +
            `seed=${spec.seedVolume || '-'} upload=${task109}`,
        );
        if (spec.uuid) {
          const set = this.uuids.get(e.resource.metadata.id) ?? new Set<string>();
          set.add(spec.uuid.toLowerCase());
          this.uuids.set(e.resource.metadata.id, set);
        }
      }
    });
    this.unsubscribe.push(() => handle.cancel());
    const statuses = world.omni.store.watchKind(NS.infraProvider, TYPES.machineRequestStatus, {}, (events) => {
      for (const e of events) {
        if (!e.resource) continue;
        const s = statusOf(world.omni, e.resource.metadata.id);
        const error = s?.error ? JSON.stringify(s.error).slice(0, 200) : '';
        this.remember(e.resource.metadata.id, `status ${e.type} ${e.resource.metadata.phase} ${s?.stage ?? '-'} ${s?.status ?? ''} ${error}`);
      }
    });
    this.unsubscribe.push(() => statuses.cancel());
    this.unsubscribe.push(
      world.sim.onChange((r) => {
        if (!r || r.method !== 'POST' || r.route !== '/nodes/{node}/qemu' || !r.params['vmid'] || !r.params['name']) return;
        this.createdVmids.set(Number(r.params['vmid']), r.params['name']);
        // Called before the simulator sends its answer: a kill here means the daemon never hears it.
        const id = r.params['name'];
        if (r.status === 200 && this.live().includes(id)) {
          const next = this.armed.shift();
          if (next) this.fire(next, id);
        }
      }),
    );
  }

  /** Runs an armed action on the create call of request `id` that the simulator has just answered. */
  private fire(armed: { index: number; kind: 'delete' | 'kill' }, id: string): void {
    if (armed.kind === 'delete') {
      this.delete(id, `#${armed.index}: its create call was just answered`);
      return;
    }
    const victim = this.daemon;
    if (!victim) return;
    this.stopping.add(victim);
    victim.kill('SIGKILL');
    this.note(`#${armed.index}: create call of ${id} answered; SIGKILL daemon #${this.daemons.indexOf(victim) + 1} before the answer is sent`);
    void this.serial(async () => {
      await victim.exited;
      if (this.daemon === victim && !this.closed) this.startDaemon();
    });
  }

  private serial(op: () => Promise<void>): Promise<void> {
    const run = this.lifecycle.then(op);
    this.lifecycle = run.catch(() => undefined);
    return run;
  }

  /** How often each kind of injected fault took effect (request and task rules: uses consumed). */
  readonly fired = new Map<string, number>();

  private countFired(kind: string, detail: string, n: number): void {
    const key = `${kind} ${detail}`;
    this.fired.set(key, (this.fired.get(key) ?? 0) + n);
    if (n > 0) this.note(`  fired ${n}×`);
  }

  private remember(id: string, what: string): void {
    const list = this.history.get(id) ?? [];
    list.push(`[${(this.now() / 1000).toFixed(1).padStart(6)} s] ${what}`);
    this.history.set(id, list);
  }

  private now(): number {
    return this.world.sim.clock.now() - this.t0;
  }

  note(message: string): void {
    this.log.push(`[${(this.now() / 1000).toFixed(1).padStart(6)} s] ${message}`);
  }

  private recordForeign(vmid: number, why: string): void {
    const vm = this.world.sim.state.vms.get(vmid);
    if (!vm) throw new Error(`foreign VM ${vmid} does not exist`);
    this.foreign.set(vmid, { vmid, node: vm.node, running: vm.running, config: configText(vm.config), why, since: this.world.sim.requests.length });
  }

  // --- waiting ---

  /** Until `cond` holds; re-checked on every change of Omni, the simulator, the daemons. */
  private until(cond: () => boolean, what: string | (() => string), extra: Trigger[] = []): Promise<void> {
    return waitFor(() => cond() || undefined, { what, on: [...this.triggers, ...extra], signal: this.world.signal }).then(() => undefined);
  }

  /** `ms` of simulated time. */
  private async sleep(ms: number): Promise<void> {
    if (ms <= 0) return;
    await Promise.race([this.world.sim.clock.sleep(ms), whenAborted(this.world.signal, `${ms} simulated ms`)]);
  }

  // --- the daemon ---

  private daemonEnv(): Record<string, string | undefined> {
    const level = process.env.CHAOS_LOG_LEVEL ?? 'info';
    if (this.plan.auth === 'token') return { LOG_LEVEL: level };
    return {
      LOG_LEVEL: level,
      PROXMOX_TOKEN_ID: undefined,
      PROXMOX_TOKEN_SECRET: undefined,
      PROXMOX_USERNAME: 'omni@pve',
      PROXMOX_PASSWORD: 'omni-sim-password',
    };
  }

  startDaemon(): DaemonProcess {
    const d = this.spawn(this.daemonEnv());
    this.daemons.push(d);
    this.daemon = d;
    if (this.omniOutage()) this.sawOmniOutage.add(d);
    this.hangsUsedAtStart = this.hangsUsed();
    const wake = () => this.daemonActivity.notify();
    d.child.stdout?.on('data', wake);
    d.child.on('exit', wake);
    void d.exited.then((exit) => {
      if (this.stopping.has(d) || this.closed) return;
      const tail = d.stderr.trim().split('\n').slice(-3).join(' | ');
      const lastError = d.lines.filter((l) => l.level === 'error' || l.level === 'fatal').at(-1)?.msg;
      if (this.sawOmniOutage.has(d) && exit.code === 2 && d.logs('the provider could not start').length > 0) {
        // Start-up refuses a key Omni does not accept (exit 2, by design), as a container's restart policy would see
        // it: the supervisor starts it again once Omni accepts the key.
        this.note(`daemon #${this.daemons.indexOf(d) + 1} could not start during an Omni outage (${lastError ?? ''}); restarted once it ends`);
        if (this.omniOutage()) this.restartAfterOutage = true;
        else if (this.daemon === d) this.startDaemon();
        return;
      }
      this.problems.push(`daemon #${this.daemons.indexOf(d) + 1} exited on its own: ${JSON.stringify(exit)} ${lastError ?? ''} ${tail}`);
      this.note(`daemon exited on its own (${JSON.stringify(exit)}); starting another`);
      if (this.daemon === d) this.startDaemon();
    });
    this.note(`daemon #${this.daemons.length} started (${this.plan.auth} auth)`);
    return d;
  }

  /**
   * Waits until the current daemon is running its controller (unless Omni is down: start-up waits for it; or the
   * daemon was killed meanwhile: whoever killed it starts the next one).
   */
  private async started(): Promise<void> {
    const d = this.daemon;
    if (!d || this.omniOutage()) return;
    await this.until(
      () => this.omniOutage() || this.stopping.has(d) || this.daemon !== d || d.logs('infra provider started').length > 0,
      () => `daemon #${this.daemons.indexOf(d) + 1} to start`,
    );
  }

  private sigkill(why: string): Promise<void> {
    return this.serial(async () => {
      const d = this.daemon;
      if (d && d.exit === undefined) {
        this.stopping.add(d);
        this.note(`SIGKILL daemon #${this.daemons.indexOf(d) + 1} (${why})`);
        await d.crash();
      }
      this.restartAfterOutage = false;
      this.startDaemon();
    }).then(() => this.started());
  }

  private hangsUsed(): number {
    return this.hangRules.reduce((sum, r) => sum + r.times - remainingUses(this.world.sim, r.id), 0);
  }

  private sigterm(): Promise<void> {
    // A hung call keeps a graceful stop waiting for it (the client's timeout is 60 s of wall time).
    const armed = this.hangRules.some((r) => remainingUses(this.world.sim, r.id) > 0);
    if (armed || this.hangsUsed() > this.hangsUsedAtStart) return this.sigkill('a call of this daemon may hang: SIGKILL instead of SIGTERM');
    return this.serial(() => this.gracefulRestart()).then(() => this.started());
  }

  private async gracefulRestart(): Promise<void> {
    // A stop of a running daemon (one that was just spawned has no signal handler yet).
    await this.started();
    const d = this.daemon;
    if (!d) return;
    if (d.exit !== undefined) {
      // Not running (its start-up was refused during an Omni outage): start another now.
      this.note(`daemon #${this.daemons.indexOf(d) + 1} is not running; starting another instead of a SIGTERM`);
      this.restartAfterOutage = false;
      this.startDaemon();
      return;
    }
    this.stopping.add(d);
    this.note(`SIGTERM daemon #${this.daemons.indexOf(d) + 1}`);
    d.kill('SIGTERM');
    // Like a container runtime's stop timeout: SIGKILL after 60 s (simulated) without an exit.
    let exited = false;
    const gone = d.exited.then(() => {
      exited = true;
    });
    await Promise.race([gone, this.sleep(60_000)]);
    if (!exited) {
      this.note('no exit 60 s after SIGTERM; SIGKILL');
      await d.crash();
    } else {
      const exit = exitOf(d);
      // (Killed by the signal before it printed anything: still loading, before its handler was installed.)
      if (exit?.code !== 0 && !(exit?.signal === 'SIGTERM' && d.lines.length === 0)) {
        this.problems.push(`daemon #${this.daemons.indexOf(d) + 1} exited with ${JSON.stringify(exit)} after SIGTERM`);
      }
    }
    this.startDaemon();
  }

  // --- requests ---

  private live(): string[] {
    return this.created.filter((id) => !this.deleted.has(id));
  }

  private delete(id: string, why: string): void {
    this.note(`delete ${id} (${why})`);
    const entry: { settled: boolean; error?: string } = { settled: false };
    this.deleted.set(id, entry);
    this.deletions.push(
      this.world.omni.controllers.deleteMachineRequest(id, this.deleteAbort.signal).then(
        () => {
          entry.settled = true;
          this.note(`request ${id} destroyed by Omni`);
          this.daemonActivity.notify();
        },
        (err: unknown) => {
          entry.settled = true;
          entry.error = err instanceof Error ? err.message : String(err);
          this.daemonActivity.notify();
        },
      ),
    );
  }

  /** Live requests whose VM create is running in Proxmox right now. */
  private createsInFlight(): string[] {
    const live = new Set(this.live());
    const out: string[] = [];
    for (const t of this.world.sim.tasks({ type: 'qmcreate', status: 'running' })) {
      const id = t.vmid === undefined ? undefined : this.createdVmids.get(t.vmid);
      if (id !== undefined && live.has(id)) out.push(id);
    }
    return out;
  }

  // --- faults on our VMs ---

  /** VMs the provider created that still exist, in VMID order. */
  private ourVms(): number[] {
    return [...this.world.sim.state.vms.keys()].filter((v) => !this.foreign.has(v) && v !== 100 && v !== 101).sort((a, b) => a - b);
  }

  private pickVm(pick: number): number | undefined {
    const vms = this.ourVms().filter((v) => this.world.sim.state.vms.get(v)?.config.get('lock') === undefined);
    return vms.length === 0 ? undefined : vms[Math.floor(pick * vms.length)];
  }

  // --- playing the plan ---

  /** Releases tasks held by a `stuck` fault once they have been stuck for the plan's `stuckForMs`. */
  private async releaseStuckTasks(): Promise<void> {
    const { sim } = this.world;
    while (!this.closed && !this.world.signal?.aborted) {
      await this.sleep(1_000).catch(() => undefined);
      for (const t of sim.tasks({ status: 'running' })) {
        if (t.override?.kind !== 'stuck' || sim.clock.now() - t.startedAtMs < this.plan.stuckForMs) continue;
        const n = sim.releaseStuckTasks({ type: t.type, node: t.node, ...(t.vmid !== undefined ? { vmid: t.vmid } : {}) });
        if (n > 0) this.note(`released ${n} ${t.type} task(s) stuck for ${this.plan.stuckForMs} ms`);
      }
    }
  }

  async play(): Promise<void> {
    const { sim, omni } = this.world;
    for (const [i, a] of this.plan.actions.entries()) this.log.push(`plan #${i}: ${describeAction(a)}`);
    this.fingerprint = await this.providerFingerprint();
    void this.releaseStuckTasks();
    this.startDaemon();
    await this.started();
    for (const event of this.plan.timeline) {
      await this.sleep(event.afterMs);
      const action = this.plan.actions[event.action]!;
      if (event.end) {
        const undo = this.undo.get(event.action);
        this.undo.delete(event.action);
        if (undo) {
          this.note(`end #${event.action} ${action.kind}`);
          undo();
        }
        continue;
      }
      this.note(`#${event.action} ${describeAction(action)}`);
      await this.apply(event.action, action, sim, omni);
    }
  }

  private async apply(index: number, a: Action, sim: World['sim'], omni: World['omni']): Promise<void> {
    switch (a.kind) {
      case 'create': {
        const req = this.plan.requests.find((r) => r.id === a.request)!;
        const set = this.plan.sets.find((s) => s.id === req.set)!;
        omni.controllers.createMachineRequest(set.id, { talosVersion: set.talosVersion, providerData: set.providerData }, req.id);
        this.created.push(req.id);
        return;
      }
      case 'delete': {
        const live = this.live();
        if (live.length === 0) return this.note('  nothing to delete');
        this.delete(live[Math.floor(a.pick * live.length)]!, 'random');
        return;
      }
      case 'deleteInFlight': {
        const now = this.createsInFlight();
        if (now.length > 0) this.delete(now[Math.floor(a.pick * now.length)]!, 'its VM create is running');
        else this.armed.push({ index, kind: 'delete' });
        return;
      }
      case 'sigkill':
        return this.sigkill('planned');
      case 'sigkillMidCreate': {
        const now = this.createsInFlight();
        if (now.length > 0) return this.sigkill(`creates in flight: ${now.join(', ')}`);
        this.armed.push({ index, kind: 'kill' });
        return;
      }
      case 'sigterm':
        return this.sigterm();
      case 'pveRequestFault': {
        // Armed until used up (or the fault phase ends).
        const id = sim.faults.onRequest(a.match, a.fault, { times: a.times });
        if (a.fault.kind === 'hang') this.hangRules.push({ id, times: a.times });
        this.undo.set(index, () => {
          this.countFired(a.kind, a.fault.kind, a.times - remainingUses(sim, id));
          sim.faults.remove(id);
        });
        return;
      }
      case 'pveTaskFault': {
        const id = sim.faults.onTask(a.match, a.outcome, { times: a.times });
        this.undo.set(index, () => {
          this.countFired(a.kind, `${a.match.type} ${a.outcome.kind}`, a.times - remainingUses(sim, id));
          sim.faults.remove(id);
        });
        return;
      }
      case 'nodeOffline':
        this.undo.set(index, this.outage(`node ${a.node}`, () => () => sim.setNodeOnline(a.node, true), () => sim.setNodeOnline(a.node, false)));
        return;
      case 'quorumLoss':
        this.undo.set(index, this.outage('quorum', () => () => sim.setQuorate(true), () => sim.setQuorate(false)));
        return;
      case 'storageInactive':
      case 'storageDisabled':
      case 'storageFull': {
        const storage = sim.state.storages.get(a.storage)!;
        const snapshot = () => {
          const used = storage.baseUsed;
          const inactive = new Set(storage.inactiveOn);
          const disabled = storage.disabled;
          return () => {
            storage.baseUsed = used;
            storage.inactiveOn = inactive;
            storage.disabled = disabled;
          };
        };
        const apply = () => {
          if (a.kind === 'storageFull') sim.fillStorage(a.storage, a.node, 0);
          else if (a.kind === 'storageInactive') sim.setStorageActive(a.storage, a.node, false);
          else sim.setStorageDisabled(a.storage, true);
        };
        this.undo.set(index, this.outage(`storage ${a.storage}`, snapshot, apply));
        return;
      }
      case 'downloadFailures':
        sim.failDownloads('chaos: connection reset by the mirror', a.times);
        return;
      case 'credentials':
        this.undo.set(index, this.outage('proxmox credentials', () => this.credentialSnapshot(), () => this.credentialFault(a.what)));
        return;
      case 'vmLock': {
        const vmid = this.pickVm(a.pick);
        if (vmid === undefined) return this.note('  no VM of ours to lock');
        sim.injectLock(vmid, a.lock);
        this.note(`  VM ${vmid} locked (${a.lock})`);
        this.undo.set(index, () => {
          const vm = sim.state.vms.get(vmid);
          if (vm && vm.config.get('lock') === a.lock) sim.injectLock(vmid, undefined);
        });
        return;
      }
      case 'vmMutex': {
        const vmid = this.pickVm(a.pick);
        if (vmid === undefined) return this.note('  no VM of ours');
        sim.holdVmMutex(vmid, a.ms);
        this.note(`  VM ${vmid} config lock held for ${a.ms} ms`);
        return;
      }
      case 'migrate': {
        const vmid = this.pickVm(a.pick);
        if (vmid === undefined) return this.note('  no VM of ours to migrate');
        const from = sim.state.vms.get(vmid)!.node;
        const targets = NODES.filter((n) => n !== from);
        const to = targets[Math.floor(a.pickNode * targets.length)]!;
        sim.externalMigrateVm(vmid, to);
        this.note(`  VM ${vmid} migrated ${from} → ${to}`);
        return;
      }
      case 'haManaged': {
        const vmid = this.pickVm(a.pick);
        if (vmid === undefined) return this.note('  no VM of ours');
        sim.setHaManaged(vmid, true);
        this.note(`  VM ${vmid} is now an HA resource`);
        return;
      }
      case 'foreignVm': {
        const vmid = sim.externalCreateVm({ node: a.node, name: a.name, tags: [`${MACHINE_REQUEST_TAG_PREFIX}${a.set}`], memoryMiB: 1024 });
        this.recordForeign(vmid, `created by someone else at ${(this.now() / 1000).toFixed(1)} s`);
        this.note(`  foreign VM ${vmid} named ${a.name}`);
        return;
      }
      case 'grabVmid':
        sim.afterNextId.push((vmid) => {
          if (sim.state.vms.has(vmid)) return;
          sim.externalCreateVm({ vmid, node: a.node, name: a.name });
          this.recordForeign(vmid, 'took the VMID /cluster/nextid had just handed out');
          this.note(`  someone else took VMID ${vmid} right after /cluster/nextid`);
        });
        return;
      case 'omniCutWatches':
        this.note(`  ${omni.faults.cutWatches()} watch stream(s) cut`);
        return;
      case 'omniErrored':
        this.note(`  ERRORED event on ${omni.faults.injectErroredEvent()} watch stream(s)`);
        return;
      case 'omniUnavailable':
        this.undo.set(index, this.outage('omni', () => this.omniSnapshot(), () => omni.faults.makeUnavailable()));
        return;
      case 'omniFailNext':
        omni.faults.failNext(a.method, a.code as GrpcCode, `chaos: injected ${a.method} failure`, a.times);
        return;
      case 'omniStaleReads':
        omni.faults.serveStaleReads(a.type, a.times);
        return;
      case 'omniKeyExpired': {
        const fingerprint = this.fingerprint ?? '';
        this.undo.set(index, this.outage('omni', () => this.omniSnapshot(), () => omni.keys.expire(fingerprint)));
        return;
      }
      case 'omniClockSkew':
        this.undo.set(index, this.outage('omni', () => this.omniSnapshot(), () => omni.keys.skewClock(a.skewMs)));
        return;
    }
  }

  /**
   * Starts an outage of `group` (applied by `apply`); the group is put back as it was before its first outage (the
   * function `snapshot` returned then) when its last overlapping outage ends.
   */
  private outage(group: string, snapshot: () => Undo, apply: () => void): Undo {
    let held = this.held.get(group);
    if (!held) {
      held = { count: 0, restore: snapshot() };
      this.held.set(group, held);
    }
    held.count++;
    if (group === 'omni' && this.daemon) this.sawOmniOutage.add(this.daemon);
    apply();
    const h = held;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--h.count > 0) return;
      this.held.delete(group);
      h.restore();
      if (group === 'omni' && this.restartAfterOutage) {
        this.restartAfterOutage = false;
        void this.serial(async () => {
          // Unless a kill or stop started another meanwhile.
          if (!this.closed && (this.daemon === undefined || this.daemon.exit !== undefined)) this.startDaemon();
        });
      }
    };
  }

  private omniOutage(): boolean {
    return this.held.has('omni');
  }

  private omniSnapshot(): Undo {
    const { omni } = this.world;
    const keys = [...this.providerKeys()].map((k) => ({ k, expiration: k.expiration }));
    return () => {
      omni.faults.restore();
      omni.keys.skewClock(0);
      for (const { k, expiration } of keys) k.expiration = expiration;
    };
  }

  /** The fingerprint of the provider's service-account key (the world's only provider key). */
  private async providerFingerprint(): Promise<string> {
    const { pgp_key: armoredKey } = JSON.parse(Buffer.from(this.world.key, 'base64').toString('utf8')) as { pgp_key: string };
    return (await readPrivateKey({ armoredKey })).getFingerprint().toLowerCase();
  }

  private *providerKeys() {
    if (this.fingerprint === undefined) return;
    const key = this.world.omni.keys.key(this.fingerprint);
    if (key) yield key;
  }

  /** The provider's Proxmox credentials as they are now (token, ACL, password, CSRF rejections), to put back. */
  private credentialSnapshot(): Undo {
    const access = this.world.sim.access;
    const token = access.tokens.get(PROVIDER_TOKEN.tokenId);
    const tokenCopy = token ? { ...token } : undefined;
    const acl = access.acl.map((e) => ({ ...e }));
    const user = access.users.get('omni@pve');
    const password = user?.password;
    const ticketLifetimeMs = access.ticketLifetimeMs;
    return () => {
      if (tokenCopy) access.addToken({ ...tokenCopy });
      access.acl = acl;
      if (user) user.password = password;
      access.csrfRejections = 0;
      access.ticketLifetimeMs = ticketLifetimeMs;
    };
  }

  private credentialFault(what: CredentialFault): void {
    const { sim } = this.world;
    const access = sim.access;
    switch (what) {
      case 'expireToken':
        sim.expireToken(PROVIDER_TOKEN.tokenId);
        return;
      case 'revokeToken':
        sim.revokeToken(PROVIDER_TOKEN.tokenId);
        return;
      case 'revokeAcl':
        access.revokeAll(this.plan.auth === 'token' ? PROVIDER_TOKEN.tokenId : 'omni@pve');
        return;
      case 'revokeTickets':
        access.revokeTickets();
        return;
      case 'ticketLifetimeZero':
        sim.setTicketLifetime(0);
        return;
      case 'passwordChanged': {
        const user = access.users.get('omni@pve');
        if (user) user.password = 'changed-by-chaos';
        access.revokeTickets();
        return;
      }
      case 'rejectCsrf':
        sim.rejectCsrf(3);
        return;
    }
  }

  // --- convergence ---

  /** Lifts every fault, restarts the daemon once more (SIGKILL) and waits until every request has settled. */
  async converge(): Promise<void> {
    const { sim, omni } = this.world;
    for (const a of this.armed.splice(0)) this.note(`#${a.index} (${a.kind} on the next create call) never fired`);
    await this.lifecycle;
    this.note('--- faults lifted');
    for (const [index, undo] of [...this.undo.entries()]) {
      this.undo.delete(index);
      undo();
    }
    sim.faults.clear();
    sim.downloadFailures.length = 0;
    sim.afterNextId.length = 0;
    sim.access.csrfRejections = 0;
    omni.faults.restore();
    omni.faults.clearStaleReads();
    const released = sim.releaseStuckTasks();
    if (released > 0) this.note(`released ${released} stuck task(s)`);
    for (const n of NODES) sim.setNodeOnline(n, true);
    sim.setQuorate(true);
    // The fault phase may have left a request waiting on daemon timers of wall time (a FAILED request is retried
    // after 60 s, a hung call times out after 60 s): one last restart, then no more help.
    await this.sigkill('end of the fault phase');
    await this.until(
      () => this.converged(),
      () => `convergence: ${this.pending().join('; ')}`,
      [simulatedTime(sim.clock, 1_000)],
    );
    await sim.settle();
    this.note('--- converged');
  }

  /** What convergence still waits for. */
  pending(): string[] {
    const out: string[] = [];
    for (const [id, d] of this.deleted) {
      if (!d.settled) out.push(`${id} not destroyed yet (finalizers ${JSON.stringify(this.world.omni.controllers.machineRequest(id)?.metadata.finalizers)})`);
    }
    for (const id of this.live()) {
      const s = statusOf(this.world.omni, id);
      if (s?.stage !== 'PROVISIONED') out.push(`${id} ${s?.stage ?? 'no status'} ${s?.error ?? ''}`);
    }
    return out;
  }

  private converged(): boolean {
    return this.pending().length === 0;
  }

  close(): void {
    this.closed = true;
    this.armed = [];
    this.deleteAbort.abort(new Error('chaos run over'));
    for (const u of this.unsubscribe) u();
  }

  async settleDeletions(): Promise<void> {
    await Promise.allSettled(this.deletions);
  }

  // --- invariants ---

  /** Every invariant of docs/chaos.md that does not hold, one line each. */
  violations(): string[] {
    const { sim, omni } = this.world;
    const out: string[] = [...this.problems];
    const vms = [...sim.state.vms.values()];
    const live = this.live();
    const liveSet = new Set(live);
    const accounted = new Set<number>([100, 101, ...this.foreign.keys()]);

    for (const [id, d] of this.deleted) if (d.error) out.push(`deleting ${id} failed: ${d.error}`);

    // Whose seed ISO a volume is: `omni-seed-<request>.iso` by its name; `user-data-<vmid>.iso` (go-proxmox's name, which
    // ours uses) the live request whose VM has that VMID or whose state records it, else the request the VMID was last
    // created for.
    const liveVmids = new Map<number, string>();
    const liveSeeds = new Map<string, string>();
    for (const id of live) {
      const res = omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id);
      const st: MachineSpec | undefined = res ? fromBinary(MachineSpecSchema, res.spec.protoSpec) : undefined;
      if (st?.vmid) liveVmids.set(st.vmid, id);
      if (st?.seedVolume) liveSeeds.set(st.seedVolume, id);
    }
    const known = [...live, ...this.deleted.keys()];
    const seedOwner = (v: { volid: string; name: string }): string | undefined => {
      const byVmid = VMID_SEED_PATTERN.exec(isoFileName(v.volid));
      if (!byVmid) return known.find((id) => v.name.endsWith(seedIsoFileName(id)));
      const vmid = Number(byVmid[1]);
      return liveSeeds.get(v.volid) ?? liveVmids.get(vmid) ?? this.createdVmids.get(vmid);
    };

    // Every live request: PROVISIONED, exactly one VM with its name and SMBIOS UUID, the one its state records.
    for (const id of live) {
      const status = statusOf(omni, id);
      const res = omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id);
      const state: MachineSpec | undefined = res ? fromBinary(MachineSpecSchema, res.spec.protoSpec) : undefined;
      if (status?.stage !== 'PROVISIONED') out.push(`${id}: stage ${status?.stage ?? 'none'} (${status?.error ?? ''})`);
      if (!state) {
        out.push(`${id}: no private state`);
        continue;
      }
      const uuid = state.uuid.toLowerCase();
      const uuidOf = (vm: (typeof vms)[number]) => smbiosUuidOf(Object.fromEntries(vm.config));
      const mine = vms.filter((vm) => !this.foreign.has(vm.vmid) && (vm.config.get('name') === id || (uuid !== '' && uuidOf(vm) === uuid)));
      const exact = mine.filter((vm) => vm.config.get('name') === id && uuidOf(vm) === uuid);
      if (exact.length !== 1 || mine.length !== 1) {
        out.push(`${id}: ${exact.length} VM(s) with its name and SMBIOS UUID ${uuid}, ${mine.length} with either (${mine.map((v) => v.vmid).join(', ')})`);
      }
      const vm = exact[0];
      if (vm) {
        accounted.add(vm.vmid);
        if (state.vmid !== vm.vmid) out.push(`${id}: private state records VMID ${state.vmid}, its VM is ${vm.vmid}`);
        if (!vm.running) out.push(`${id}: VM ${vm.vmid} is not running`);
        if (vm.config.get('lock') !== undefined) out.push(`${id}: VM ${vm.vmid} is locked (${vm.config.get('lock')})`);
        if (status && status.id !== uuid) out.push(`${id}: MachineRequestStatus.id ${status.id} is not the VM's UUID ${uuid}`);
      }
      const seeds = seedVolumes(this.world).filter((v) => seedOwner(v) === id);
      if (seeds.length > 1) out.push(`${id}: ${seeds.length} seed ISOs (${seeds.map((s) => `${s.node}/${s.volid}`).join(', ')})`);
    }

    // Deleted requests: no VM, no seed ISO, no status, no private state, no request left.
    for (const id of this.deleted.keys()) {
      const uuids = this.uuids.get(id) ?? new Set<string>();
      for (const vm of vms) {
        if (this.foreign.has(vm.vmid)) continue;
        const uuid = smbiosUuidOf(Object.fromEntries(vm.config));
        if (vm.config.get('name') === id || (uuid !== undefined && uuids.has(uuid))) out.push(`deleted ${id}: VM ${vm.vmid} on ${vm.node} remains`);
      }
      for (const v of seedVolumes(this.world)) if (seedOwner(v) === id) out.push(`deleted ${id}: seed ISO ${v.volid} on ${v.node} remains`);
      const request = omni.controllers.machineRequest(id);
      if (request) out.push(`deleted ${id}: the MachineRequest still exists (finalizers ${JSON.stringify(request.metadata.finalizers)})`);
      if (omni.store.find(NS.infraProvider, TYPES.machineRequestStatus, id)) out.push(`deleted ${id}: its MachineRequestStatus remains`);
      if (omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id)) out.push(`deleted ${id}: its private state remains`);
    }

    // No other VM (a leak or a duplicate), no seed ISO of anything but a live request, no task still running.
    for (const vm of vms) {
      if (accounted.has(vm.vmid)) continue;
      const creator = this.createdVmids.get(vm.vmid);
      const what = `name ${vm.config.get('name') ?? '-'}, lock ${vm.config.get('lock') ?? '-'}${creator ? `, created for ${creator}` : ''}`;
      out.push(`VM ${vm.vmid} on ${vm.node} (${what}) belongs to no live request`);
    }
    for (const v of seedVolumes(this.world)) {
      if (seedOwner(v) === undefined) out.push(`seed ISO ${v.volid} on ${v.node} belongs to no request`);
    }
    for (const t of sim.tasks({ status: 'running' })) out.push(`task ${t.upid} still running`);

    // Foreign VMs: untouched (config byte-identical, same node and power state, no write call on them).
    for (const f of this.foreign.values()) {
      const vm = sim.state.vms.get(f.vmid);
      if (!vm) {
        out.push(`foreign VM ${f.vmid} (${f.why}) is gone`);
        continue;
      }
      const power = (running: boolean) => (running ? 'running' : 'stopped');
      if (configText(vm.config) !== f.config) {
        out.push(`foreign VM ${f.vmid} (${f.why}): config changed\n  before ${f.config}\n  after  ${configText(vm.config)}`);
      }
      if (vm.node !== f.node || vm.running !== f.running) {
        out.push(`foreign VM ${f.vmid} (${f.why}): was ${f.node}/${power(f.running)}, now ${vm.node}/${power(vm.running)}`);
      }
      const writes = sim.requests.slice(f.since).filter((r) => r.method !== 'GET' && new RegExp(`/qemu/${f.vmid}(/|$)`).test(r.path));
      for (const w of writes) out.push(`foreign VM ${f.vmid} (${f.why}): ${w.method} ${w.path} (answered ${w.status})`);
    }

    // Nothing held by a finalizer: every request is live and running, every status and private state has its request.
    for (const r of omni.store.list(NS.infraProvider, TYPES.machineRequest)) {
      const id = r.metadata.id;
      if (!liveSet.has(id)) out.push(`MachineRequest ${id} exists but was ${this.deleted.has(id) ? 'deleted' : 'never created by the run'}`);
      else if (r.metadata.phase !== 'running') out.push(`MachineRequest ${id} is ${r.metadata.phase} (finalizers ${JSON.stringify(r.metadata.finalizers)})`);
      else if (!r.metadata.finalizers.includes(CONTROLLER)) out.push(`MachineRequest ${id} lacks the provider's finalizer`);
    }
    for (const type of [TYPES.machineRequestStatus]) {
      for (const r of omni.store.list(NS.infraProvider, type)) {
        if (!liveSet.has(r.metadata.id)) out.push(`${type} ${r.metadata.id} left behind (${r.metadata.phase}, finalizers ${JSON.stringify(r.metadata.finalizers)})`);
        else if (r.metadata.phase !== 'running') out.push(`${type} ${r.metadata.id} is ${r.metadata.phase}`);
      }
    }
    for (const r of omni.store.list(PRIVATE_NS, PRIVATE_TYPE)) {
      if (!liveSet.has(r.metadata.id)) out.push(`private state ${r.metadata.id} left behind (${r.metadata.phase}, finalizers ${JSON.stringify(r.metadata.finalizers)})`);
      else if (r.metadata.phase !== 'running') out.push(`private state ${r.metadata.id} is ${r.metadata.phase}`);
    }
    return out;
  }

  /** What the run did, counted (for the report and docs/chaos.md). */
  stats(): Record<string, unknown> {
    const creates = this.world.sim.requests.filter((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu');
    return {
      seed: this.plan.seed,
      auth: this.plan.auth,
      requests: this.created.length,
      deleted: this.deleted.size,
      deletedMidCreate: this.log.filter((l) => / delete .*\((its VM create is running|#\d+: its create call was just answered)\)/.test(l)).length,
      createCalls: creates.length,
      createCallsAnswered200: creates.filter((r) => r.status === 200).length,
      daemons: this.daemons.length,
      killsMidCreate: this.log.filter((l) => /SIGKILL daemon #\d+ before the answer|SIGKILL daemon #\d+ \(creates in flight/.test(l)).length,
      proxmoxCalls: this.world.sim.requests.length,
      faultsFired: Object.fromEntries(this.fired),
    };
  }

  /** A summary for the failure report: each request's stage, state and VMs. */
  summary(): string[] {
    const { sim, omni } = this.world;
    const out: string[] = [];
    for (const id of this.created) {
      const s = statusOf(omni, id);
      const res = omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id);
      const st = res ? fromBinary(MachineSpecSchema, res.spec.protoSpec) : undefined;
      const vms = [...sim.state.vms.values()]
        .filter((v) => v.config.get('name') === id)
        .map((v) => `${v.vmid}@${v.node}${this.foreign.has(v.vmid) ? '(foreign)' : ''}`);
      const state = `vmid ${st?.vmid ?? '-'} create ${st?.createVmid ?? '-'}@${st?.createNode ?? '-'} node ${st?.node ?? '-'} step ${res?.metadata.annotations[STEP_ANNOTATION] ?? '-'}`;
      out.push(`${id} ${this.deleted.has(id) ? 'DELETED' : 'live'}: ${s?.stage ?? '-'} ${s?.error ? JSON.stringify(s.error) : ''} state{${state}} VMs [${vms.join(' ')}]`);
    }
    return out;
  }

  /** Writes the plan, the action log, the summary and every daemon's log lines under .tmp/chaos/seed-N; returns the directory. */
  writeReport(violations: string[]): string {
    const dir = join(REPO_ROOT, '.tmp', 'chaos', `seed-${this.plan.seed}`);
    mkdirSync(dir, { recursive: true });
    const history = [...this.history].flatMap(([id, lines]) => [`${id}:`, ...lines.map((l) => `  ${l}`)]);
    writeFileSync(
      join(dir, 'report.txt'),
      [
        `seed ${this.plan.seed}`,
        `replay: ${replayCommand(this.plan.seed)}`,
        JSON.stringify(this.stats()),
        '',
        'violations:',
        ...violations,
        '',
        'requests:',
        ...this.summary(),
        '',
        'log:',
        ...this.log,
        '',
        'history:',
        ...history,
        '',
      ].join('\n'),
    );
    this.daemons.forEach((d, i) => writeFileSync(join(dir, `daemon-${i + 1}.log`), `${d.lines.map((l) => JSON.stringify(l)).join('\n')}\n${d.stderr}`));
    return dir;
  }
}

/** A daemon's exit as of now (a function, so that TypeScript does not keep an earlier narrowing of the field). */
function exitOf(d: DaemonProcess): DaemonProcess['exit'] {
  return d.exit;
}

/** Uses left of a fault rule of the simulator (its plan keeps them private; read for the run's statistics). */
function remainingUses(sim: World['sim'], id: number): number {
  const plan = sim.faults as unknown as { requestRules: Array<{ id: number; remaining: number }>; taskRules: Array<{ id: number; remaining: number }> };
  return [...plan.requestRules, ...plan.taskRules].find((r) => r.id === id)?.remaining ?? 0;
}

/** Every NoCloud seed ISO (`omni-seed-*.iso`, `user-data-<vmid>.iso`) on any storage of any node. */
function seedVolumes(world: World): Array<{ volid: string; name: string; node: string }> {
  const out: Array<{ volid: string; name: string; node: string }> = [];
  for (const s of world.sim.state.storages.values()) {
    const nodes = s.shared ? [world.sim.state.entryNode] : [...world.sim.state.nodes.keys()];
    for (const node of nodes) {
      for (const v of world.sim.state.volumeMap(s, node).values()) {
        if (/omni-seed-|user-data-\d+\.iso$/.test(v.name)) out.push({ volid: v.volid, name: v.name, node });
      }
    }
  }
  return out;
}
