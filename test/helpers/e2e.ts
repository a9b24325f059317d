// End-to-end harness: the in-process Omni and the Proxmox simulator in the test process, the real daemon as a child
// process (the compiled production layout under `npm test`, the sources through tsx otherwise: daemon-command.ts),
// configured through its environment, observed through its JSON log lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { MachineSpecSchema, type MachineSpec } from '../../src/gen/proxmox/specs/specs_pb.js';
import { bootFromSeed } from '../../src/demo/machine.js';
import { smbiosUuidOf } from '../../src/provision/cluster.js';
import { startInProcessOmni, type InProcessOmni, type InProcessOmniOptions } from '../../src/sim/omni/index.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import type { Resource, StoreEvent } from '../../src/sim/omni/store.js';
import { PveSim, ScaledClock, startPveSimServer, type PveFixture, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { daemonCommand, type DaemonCommand } from './daemon-command.js';
import { jsonLineProblem } from './json-lines.js';
import { Changes, processActivity, simChanges, storeChanges, waitFor, type Trigger } from './wait.js';

const fixtureFile = new URL('../fixtures/pve-3node.json', import.meta.url);

export const PROVIDER_ID = 'proxmox';
export const PRIVATE_NS = `infra-provider:${PROVIDER_ID}`;
export const PRIVATE_TYPE = `Machine.${PROVIDER_ID}.infraprovider.sidero.dev`;
export const STEP_ANNOTATION = 'infra.omni.sidero.dev/step';
export const CONTROLLER = `${PROVIDER_ID}.ProvisionController`;
export const STEP_NAMES = ['pickNode', 'createSchematic', 'uploadISO', 'syncVM', 'startVM', 'registerHA', 'syncHARules'] as const;
/** The fixture's least-privilege token (role OmniProvider). */
export const PROVIDER_TOKEN = { tokenId: 'omni@pve!provider', tokenSecret: '0a1b2c3d-0000-4000-8000-0000000000aa' };

export const SMALL_VM = `cores: 2
memory: 2048
disk_size: 10
storage_selector: name == "local-lvm"
`;

export function e2eFixture(overrides: Partial<PveFixture> = {}): PveFixture {
  const f = JSON.parse(readFileSync(fixtureFile, 'utf8')) as PveFixture;
  return { ...f, authFailDelayMs: 0, statsCadenceMs: 0, downloadSizeBytes: 256 * 1024, ...overrides };
}

export interface World {
  omni: InProcessOmni;
  sim: PveSim;
  pveServer: PveSimServer;
  /** The provider's service-account key (base64). */
  key: string;
  /** Environment for a daemon pointed at this world (overrides win). */
  env(overrides?: Record<string, string | undefined>): Record<string, string>;
  /** The test's signal (WorldOptions.signal): every wait on this world ends when it aborts. */
  signal: AbortSignal | undefined;
  /** Every daemon started in this world (startDaemonProcess), in order. */
  daemons: DaemonProcess[];
  close(): Promise<void>;
}

export interface WorldOptions {
  omni?: InProcessOmniOptions;
  fixture?: Partial<PveFixture>;
  /** Wall time per simulated time; 0.01 makes a 3 s create take 30 ms. */
  timeScale?: number;
  /** Hold MachineRequestStatuses like Omni's cleanup controller (released automatically on teardown). Default true. */
  holdStatuses?: boolean;
  /**
   * The test context's signal (`it('…', async ({ signal }) => …)`), aborted when vitest's per-test timeout fires:
   * waits on this world then fail, so that withWorld's clean-up (killing the daemons) runs. Waits have no deadline
   * of their own.
   */
  signal?: AbortSignal;
}

export async function startWorld(opts: WorldOptions = {}): Promise<World> {
  const omni = await startInProcessOmni({ providerId: PROVIDER_ID, seed: 7, ...opts.omni });
  if (opts.holdStatuses ?? true) omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
  const sim = new PveSim({ fixture: e2eFixture(opts.fixture), clock: new ScaledClock(opts.timeScale ?? 0.01) });
  const pveServer = await startPveSimServer(sim, { https: true });
  const key = await omni.createProviderKey(PROVIDER_ID);
  const world: World = {
    omni,
    sim,
    pveServer,
    key,
    signal: opts.signal,
    daemons: [],
    env(overrides = {}) {
      const base: Record<string, string | undefined> = {
        OMNI_ENDPOINT: omni.endpoint,
        OMNI_SERVICE_ACCOUNT_KEY: key,
        PROXMOX_URL: pveServer.url,
        PROXMOX_TOKEN_ID: PROVIDER_TOKEN.tokenId,
        PROXMOX_TOKEN_SECRET: PROVIDER_TOKEN.tokenSecret,
        PROXMOX_FINGERPRINT: pveServer.fingerprint ?? undefined,
        PROVIDER_HEALTH_LISTEN: 'off',
        PROVIDER_HEARTBEAT_INTERVAL_SECONDS: '1',
        // A daemon restarted after SIGKILL is a new instance: it waits for its predecessor's lease to expire. A short
        // lease keeps that wait at a few seconds (the defaults, 15/10/2 s, would add 15 s to every crash test).
        PROVIDER_LEASE_DURATION_SECONDS: '5',
        PROVIDER_LEASE_RENEW_DEADLINE_SECONDS: '4',
        PROVIDER_LEASE_RETRY_PERIOD_SECONDS: '1',
        PROVIDER_CONCURRENCY: '4',
        LOG_LEVEL: 'debug',
        ...overrides,
      };
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(base)) if (v !== undefined) out[k] = v;
      return out;
    },
    async close() {
      omni.controllers.stop();
      await pveServer.close();
      await omni.close();
    },
  };
  worldOf.set(omni, world);
  return world;
}

/** One parsed line of the daemon's pino output. */
export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The daemon running as a child process. */
export class DaemonProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  /** Raw stdout text that was not a JSON log line. */
  readonly otherStdout: string[] = [];
  /** Stdout lines that looked like log lines but were not one JSON object with unique keys, with the reason. */
  readonly badLines: string[] = [];
  stderr = '';
  stdout = '';
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private buffered = '';

  readonly command: DaemonCommand;

  constructor(env: Record<string, string>, args: string[] = []) {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && !/^(OMNI_|PROXMOX_|PROVIDER_|LOG_LEVEL$|TEST_DAEMON_)/.test(k)) clean[k] = v;
    }
    this.command = daemonCommand(args);
    this.child = spawn(this.command.command, this.command.args, {
      cwd: this.command.cwd,
      env: { ...clean, ...this.command.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => {
      this.stdout += chunk;
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        if (line.startsWith('{')) {
          const problem = jsonLineProblem(line);
          if (problem !== undefined) this.badLines.push(`${problem}: ${line}`);
        }
        try {
          this.lines.push(JSON.parse(line) as LogLine);
        } catch {
          this.otherStdout.push(line);
        }
      }
    });
    this.child.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
      });
      // Resolved on 'close', not 'exit': 'exit' can come before the last stdout/stderr chunks were read, and a test
      // that checks what the daemon printed on its way out would then see part of it (or nothing).
      this.child.on('close', (code, signal) => {
        this.exit ??= { code, signal };
        resolve(this.exit);
      });
    });
  }

  /** Every log line whose message matches. */
  logs(msg: string | RegExp): LogLine[] {
    return this.lines.filter((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
  }

  /** The first log line whose message matches, once the daemon printed it; fails as soon as the daemon is gone. */
  waitForLog(msg: string | RegExp): Promise<LogLine> {
    return waitFor(() => this.logs(msg)[0], {
      what: `log line ${String(msg)}`,
      on: [processActivity(this.child)],
      impossible: () => (daemonGone(this) ? `${describeExit(this)} before logging it` : undefined),
      signal: daemonWorld.get(this)?.signal,
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.exit === undefined) this.child.kill(signal);
  }

  /** SIGKILL and wait for the process to be gone. */
  async crash(): Promise<void> {
    this.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM; resolves with the exit and how long it took. */
  async terminate(): Promise<Exit & { ms: number }> {
    const t0 = Date.now();
    this.kill('SIGTERM');
    const exit = await this.exited;
    return { ...exit, ms: Date.now() - t0 };
  }
}

export function startDaemonProcess(world: World, env: Record<string, string | undefined> = {}, args: string[] = []): DaemonProcess {
  const d = new DaemonProcess(world.env(env), args);
  world.daemons.push(d);
  daemonWorld.set(d, world);
  running.add(d);
  void d.exited.then(() => running.delete(d));
  return d;
}

// --- waiting ------------------------------------------------------------------------------------------------------
// No wait has a deadline of its own (see wait.ts): a wait re-checks its condition on every change in the world
// (Omni store writes, simulator requests, daemon output and exits), fails at once when no daemon of the world is
// left running, and ends with the test's signal when vitest's per-test timeout fires.

const worldOf = new WeakMap<InProcessOmni, World>();
const daemonWorld = new WeakMap<DaemonProcess, World>();
/** Daemons still running in this test process: killed if the process exits before a test could clean up. */
const running = new Set<DaemonProcess>();
process.on('exit', () => {
  for (const d of running) d.child.kill('SIGKILL');
});

/** The process exited and its output has been read to the end (so no line it printed is still on the way). */
function daemonGone(d: DaemonProcess): boolean {
  return d.exit !== undefined && (d.child.stdout?.readableEnded ?? true);
}

function describeExit(d: DaemonProcess): string {
  const tail = d.stderr.trim().split('\n').slice(-10).join('\n');
  return `the daemon exited (${JSON.stringify(d.exit)})${tail ? `; stderr:\n${tail}` : ''}`;
}

/** Why waiting on the world is pointless: every daemon it started is gone (undefined while one runs, or none started). */
function worldStalled(world: World): string | undefined {
  if (world.daemons.length === 0 || !world.daemons.every(daemonGone)) return undefined;
  return `every daemon of this world has exited; the last one: ${describeExit(world.daemons.at(-1)!)}`;
}

function worldTriggers(world: World): Trigger[] {
  return [storeChanges(world.omni.store), simChanges(world.sim), ...world.daemons.map((d) => processActivity(d.child))];
}

/**
 * Resolves once `cond` holds, re-checking it on every change in the world. `what` may be a function: it is
 * evaluated when the wait fails, so the message shows the state at that moment.
 */
export function waitUntil(world: World, cond: () => boolean, opts: { what: string | (() => string); on?: Trigger[] }): Promise<void> {
  return waitFor(() => cond() || undefined, {
    what: opts.what,
    on: [...worldTriggers(world), ...(opts.on ?? [])],
    impossible: () => worldStalled(world),
    signal: world.signal,
  }).then(() => undefined);
}

// --- reading the world ------------------------------------------------------------------------------------------

export interface StatusView {
  stage: string;
  status: string;
  error: string;
  id: string;
  labels: Record<string, string>;
  finalizers: string[];
}

export function statusOf(omni: InProcessOmni, id: string): StatusView | undefined {
  const res = omni.store.find(NS.infraProvider, TYPES.machineRequestStatus, id);
  if (!res) return undefined;
  const spec = fromBinary(MachineRequestStatusSpecSchema, res.spec.protoSpec);
  return {
    stage: MachineRequestStatusSpec_Stage[spec.stage] ?? String(spec.stage),
    status: spec.status,
    error: spec.error,
    id: spec.id,
    labels: { ...res.metadata.labels },
    finalizers: [...res.metadata.finalizers],
  };
}

export function privateResource(omni: InProcessOmni, id: string): Resource | undefined {
  return omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id);
}

export function privateStateOf(omni: InProcessOmni, id: string): MachineSpec | undefined {
  const res = privateResource(omni, id);
  return res ? fromBinary(MachineSpecSchema, res.spec.protoSpec) : undefined;
}

export function requestResource(omni: InProcessOmni, id: string): Resource | undefined {
  return omni.store.find(NS.infraProvider, TYPES.machineRequest, id);
}

/** VMs in the simulator named after request `id` (the provider names VMs after their request). */
export function vmsOf(sim: PveSim, id: string): Array<{ vmid: number; node: string; config: Map<string, string>; running: boolean }> {
  return [...sim.state.vms.values()].filter((vm) => vm.config.get('name') === id);
}

/** Every VM the provider created (not in the fixture: VMIDs 100/101 are pre-existing). */
export function providerVms(sim: PveSim): number[] {
  return [...sim.state.vms.keys()].filter((vmid) => vmid !== 100 && vmid !== 101);
}

/** Every NoCloud seed ISO (ours: `user-data-<vmid>.iso`, or `omni-seed-*.iso`) on any ISO storage of any node. */
export function seedIsos(sim: PveSim): string[] {
  const out: string[] = [];
  for (const storage of ['local', 'nfs-iso']) {
    for (const v of sim.volumes(storage)) if (/omni-seed-|user-data-\d+\.iso$/.test(v.name)) out.push(v.volid);
  }
  return out;
}

/** Resolves with the status once request `id` reached `stage` (Omni's store, re-checked on every write). */
export function waitForStage(omni: InProcessOmni, id: string, stage: string): Promise<StatusView> {
  const world = worldOf.get(omni);
  return waitFor(
    () => {
      const s = statusOf(omni, id);
      return s?.stage === stage ? s : undefined;
    },
    {
      what: () => `request ${id} to reach ${stage} (now ${JSON.stringify(statusOf(omni, id))})`,
      on: world ? worldTriggers(world) : [storeChanges(omni.store)],
      ...(world ? { impossible: () => worldStalled(world), signal: world.signal } : {}),
    },
  );
}

/** The machine behind request `id` boots from its seed and joins Omni with the token the seed carries. */
export function bootAndJoin(world: World, id: string): { uuid: string; token: string } {
  const state = privateStateOf(world.omni, id);
  if (!state) throw new Error(`no private state for ${id}`);
  const vm = world.sim.vm(state.vmid);
  if (!vm) throw new Error(`no VM ${state.vmid} for ${id}`);
  const seedVolid = (vm.config.ide0 ?? '').split(',')[0] ?? '';
  const machine = bootFromSeed(world.sim.isoFile(seedVolid, vm.node), smbiosUuidOf(vm.config) ?? '');
  world.omni.controllers.machineJoins(machine.uuid, machine.token);
  return machine;
}

/**
 * Omni removes request `id`; resolves once Omni destroyed it (the provider released its finalizer). Fails when no
 * daemon is left to release it, or with the test's signal.
 */
export async function deleteRequest(world: World, id: string): Promise<void> {
  const abort = new AbortController();
  const settled = new Changes();
  let outcome: { ok: true } | { ok: false; err: unknown } | undefined;
  void world.omni.controllers.deleteMachineRequest(id, abort.signal).then(
    () => {
      outcome = { ok: true };
      settled.notify();
    },
    (err: unknown) => {
      outcome = { ok: false, err };
      settled.notify();
    },
  );
  try {
    await waitUntil(world, () => outcome !== undefined, {
      what: () => `Omni to destroy request ${id} (finalizers now ${JSON.stringify(requestResource(world.omni, id)?.metadata.finalizers)})`,
      on: [settled.trigger],
    });
  } finally {
    if (outcome === undefined) abort.abort(new Error('the wait for the teardown ended'));
  }
  if (outcome !== undefined && !outcome.ok) throw outcome.err;
}

/** Calls `onEvent` for every change to the provider's private state (synchronously, as the store applies it). */
export function watchPrivateState(omni: InProcessOmni, onEvent: (e: StoreEvent) => void): () => void {
  const handle = omni.store.watchKind(PRIVATE_NS, PRIVATE_TYPE, {}, (events) => {
    for (const e of events) onEvent(e);
  });
  return () => handle.cancel();
}

/** What must hold once every request is gone: no VM, no seed ISO, no private state, no MRS, no request. */
export function leftovers(world: World): { vms: number[]; seeds: string[]; privateStates: string[]; statuses: string[]; requests: string[] } {
  return {
    vms: providerVms(world.sim),
    seeds: seedIsos(world.sim),
    privateStates: world.omni.store.list(PRIVATE_NS, PRIVATE_TYPE).map((r) => r.metadata.id),
    statuses: world.omni.store.list(NS.infraProvider, TYPES.machineRequestStatus).map((r) => r.metadata.id),
    requests: world.omni.store.list(NS.infraProvider, TYPES.machineRequest).map((r) => r.metadata.id),
  };
}

export const NOTHING_LEFT = { vms: [], seeds: [], privateStates: [], statuses: [], requests: [] };

/**
 * Runs `body` in a fresh world and cleans up (every daemon it started is killed, servers closed) whatever happens,
 * so tests can run concurrently without sharing state.
 */
export async function withWorld(
  opts: WorldOptions,
  body: (world: World, spawnDaemon: (env?: Record<string, string | undefined>, args?: string[]) => DaemonProcess) => Promise<void>,
): Promise<void> {
  const world = await startWorld(opts);
  const daemons: DaemonProcess[] = [];
  try {
    await body(world, (env = {}, args = []) => {
      const d = startDaemonProcess(world, env, args);
      daemons.push(d);
      return d;
    });
  } finally {
    for (const d of daemons) await d.crash();
    await world.close();
  }
  // Every log line of every daemon is one JSON object with unique keys (checked after the body, so a test that
  // failed for another reason reports that reason).
  const bad = daemons.flatMap((d) => d.badLines);
  if (bad.length > 0) throw new Error(`the daemon printed ${bad.length} log line(s) that are not one JSON object with unique keys:\n${bad.slice(0, 5).join('\n')}`);
}

/** Provision steps the daemon logged as started, per request: `{request: [step, ...]}`. */
export function stepRuns(daemons: DaemonProcess[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const d of daemons) {
    for (const l of d.logs('running provision step')) (out[String(l.request)] ??= []).push(String(l.step));
  }
  return out;
}
