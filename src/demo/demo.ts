// The embedded demo: the real daemon against an in-process Omni and a simulated three-node Proxmox cluster.
// A machine set of 3 control planes and 2 workers is provisioned, each machine boots from its seed and joins,
// then one worker is removed. Nothing leaves 127.0.0.1.
import { fromBinary } from '@bufbuild/protobuf';
import { startDaemon, type DaemonSettings, type RunningDaemon } from '../daemon.js';
import { MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../gen/omni/specs/infra_pb.js';
import { MachineSpecSchema } from '../gen/proxmox/specs/specs_pb.js';
import { silentLogger, type Logger } from '../log.js';
import { smbiosUuidOf } from '../provision/cluster.js';
import { formats, parsePropertyString } from '../proxmox/propertyString.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../sim/proxmox/index.js';
import { startInProcessOmni, type InProcessOmni } from '../sim/omni/index.js';
import { NS, TYPES } from '../sim/omni/resources.js';
import { CONTROL_PLANE_DATA, DEMO_TOKEN, demoFixture, WORKER_DATA } from './fixture.js';
import { bootFromSeed } from './machine.js';

export interface DemoOptions {
  /** Run the scenario to its end, print the result and return instead of running until interrupted. */
  exitWhenDone: boolean;
  /** Print the final result as a JSON array on stdout (progress then goes to stderr). */
  json: boolean;
  /** Daemon logger (JSON lines). */
  log: Logger;
  /** Wall time per simulated time; 0.05 makes a 20 s ISO download take 1 s. */
  timeScale?: number;
  /** Give up after this long (exit-when-done). */
  timeoutMs?: number;
  /** Resolves when the user interrupts (SIGINT/SIGTERM). */
  interrupted: Promise<unknown>;
  talosVersion?: string;
}

export interface DemoMachine {
  request: string;
  set: string;
  node: string;
  vmid: number;
  stage: string;
  /** net0's static address, as the machine read it from its seed ('' without one). */
  address: string;
}

const PROVIDER_ID = 'proxmox';
const CP_SET = 'demo-control-planes';
const WORKER_SET = 'demo-workers';
const PRIVATE_NS = `infra-provider:${PROVIDER_ID}`;
const PRIVATE_TYPE = `Machine.${PROVIDER_ID}.infraprovider.sidero.dev`;

class DemoTimeout extends Error {}

export async function runDemo(opts: DemoOptions): Promise<number> {
  const out = opts.json ? process.stderr : process.stdout;
  const say = (line: string) => out.write(`${new Date().toISOString().slice(11, 19)}  ${line}\n`);
  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);

  say('demo: starting an in-process Omni and a simulated 3-node Proxmox cluster (127.0.0.1 only)');
  const omni: InProcessOmni = await startInProcessOmni({ providerId: PROVIDER_ID, logger: silentLogger });
  // Omni's MachineRequestStatusCleanupController: holds each status until its request is torn down.
  omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
  const sim = new PveSim({ fixture: demoFixture(), clock: new ScaledClock(opts.timeScale ?? 0.05), logger: silentLogger });
  const pveServer: PveSimServer = await startPveSimServer(sim, { https: true });
  const key = await omni.createProviderKey(PROVIDER_ID);

  const settings: DaemonSettings = {
    omni: { endpoint: omni.endpoint, serviceAccountKey: key, serviceAccountName: `infra-provider:${PROVIDER_ID}`, insecureSkipVerify: false },
    proxmox: { url: pveServer.url, auth: DEMO_TOKEN, tls: { fingerprint: pveServer.fingerprint! } },
    provider: {
      id: PROVIDER_ID,
      name: 'Proxmox (demo)',
      description: 'Embedded demo: simulated Proxmox, in-process Omni',
      concurrency: 4,
      tasksPerNode: 4,
      tasksPerStorage: 4,
      shutdownTimeoutSeconds: 0,
      hostname: 'none',
      healthListen: null,
      logLevel: 'info',
      heartbeatIntervalSeconds: 10,
      leaseDurationSeconds: 15,
      leaseRenewDeadlineSeconds: 10,
      leaseRetryPeriodSeconds: 2,
    },
  };
  let daemon: RunningDaemon | undefined;
  const stopAll = async () => {
    await daemon?.stop();
    await pveServer.close();
    await omni.close();
  };

  const requests = new Map<string, string>(); // request id -> set
  const booted = new Map<string, string>(); // request id -> net0 address the machine read from its seed
  const removed = new Set<string>();
  try {
    daemon = await startDaemon(settings, opts.log);
    say(`demo: provider "${PROVIDER_ID}" registered with Omni (${daemon.provider.joinMode} join tokens); Proxmox at ${pveServer.url}`);

    const talosVersion = opts.talosVersion ?? 'v1.11.5';
    for (let i = 1; i <= 3; i++) {
      const r = omni.controllers.createMachineRequest(CP_SET, { talosVersion, providerData: CONTROL_PLANE_DATA }, `${CP_SET}-${i}`);
      requests.set(r.metadata.id, CP_SET);
    }
    for (let i = 1; i <= 2; i++) {
      const r = omni.controllers.createMachineRequest(WORKER_SET, { talosVersion, providerData: WORKER_DATA }, `${WORKER_SET}-${i}`);
      requests.set(r.metadata.id, WORKER_SET);
    }
    say(`demo: Omni asked for ${requests.size} machines: 3 in ${CP_SET}, 2 in ${WORKER_SET}`);

    const seen = new Map<string, string>();
    const report = () => {
      for (const id of requests.keys()) {
        const line = describe(omni, id);
        if (line !== undefined && seen.get(id) !== line) {
          seen.set(id, line);
          say(`${id.padEnd(24)} ${line}`);
        }
      }
    };
    const waitFor = async (what: string, done: () => boolean) => {
      while (!done()) {
        report();
        if (Date.now() > deadline) throw new DemoTimeout(`demo: timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      report();
    };

    await waitFor('all machines to be provisioned', () => [...requests.keys()].every((id) => stageOf(omni, id) === 'PROVISIONED'));

    // Each VM boots: Talos reads the cidata seed on ide0 and joins Omni with the token in its join config.
    for (const id of requests.keys()) {
      const state = privateState(omni, id);
      const vm = state ? sim.vm(state.vmid) : undefined;
      if (!state || !vm) throw new Error(`demo: no VM for ${id}`);
      const seedVolid = (vm.config.ide0 ?? '').split(',')[0] ?? '';
      // The VM's NICs by MAC (what Talos matches network-config entries with).
      const macOf = (nic: string) => parsePropertyString(String(vm.config[nic] ?? ''), formats.net).macaddr ?? '';
      const nics = Object.keys(vm.config).filter((k) => /^net\d+$/.test(k));
      const machine = bootFromSeed(sim.isoFile(seedVolid, vm.node), smbiosUuidOf(vm.config) ?? '', nics.map(macOf));
      const net0 = machine.addresses?.[macOf('net0').toLowerCase()]?.[0] ?? '';
      booted.set(id, net0);
      omni.controllers.machineJoins(machine.uuid, machine.token);
      say(`${id.padEnd(24)} machine ${machine.uuid} booted on ${vm.node} (VM ${vm.vmid}) and joined Omni${net0 ? `; net0 ${net0} from its seed (no DHCP)` : ''}`);
    }
    await waitFor('Omni to link every request to its machine', () =>
      [...requests.keys()].every((id) => (statusOf(omni, id)?.id ?? '') === privateState(omni, id)?.uuid),
    );

    const victim = `${WORKER_SET}-2`;
    const victimState = privateState(omni, victim);
    say(`demo: scaling ${WORKER_SET} down: Omni tears ${victim} down`);
    const teardown = omni.controllers.deleteMachineRequest(victim);
    let finished = false;
    void teardown.finally(() => (finished = true));
    await waitFor(`${victim} to be torn down`, () => finished);
    await teardown;
    removed.add(victim);
    say(`${victim.padEnd(24)} removed: VM ${victimState?.vmid ?? '?'} ${victimState && sim.vm(victimState.vmid) ? 'STILL EXISTS' : 'deleted'}`);

    const result = summarise(omni, sim, requests, removed, { vmid: victimState?.vmid ?? 0, node: victimState?.node ?? '' }, booted);
    const ok = verify(result, sim, victimState?.vmid ?? 0);
    printTable(say, result);
    say(ok ? 'demo: everything ended as expected' : 'demo: something did not end as expected (see above)');
    if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (opts.exitWhenDone) {
      await stopAll();
      return ok ? 0 : 1;
    }
    say('demo: the provider keeps running (heartbeat every 10 s); press Ctrl-C to stop');
    await opts.interrupted;
    say('demo: stopping');
    await stopAll();
    return ok ? 0 : 1;
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    await stopAll();
    return 1;
  }
}

function statusOf(omni: InProcessOmni, id: string) {
  const res = omni.store.find(NS.infraProvider, TYPES.machineRequestStatus, id);
  return res ? fromBinary(MachineRequestStatusSpecSchema, res.spec.protoSpec) : undefined;
}

function stageOf(omni: InProcessOmni, id: string): string | undefined {
  const s = statusOf(omni, id);
  return s ? MachineRequestStatusSpec_Stage[s.stage] : undefined;
}

function privateState(omni: InProcessOmni, id: string) {
  const res = omni.store.find(PRIVATE_NS, PRIVATE_TYPE, id);
  return res ? fromBinary(MachineSpecSchema, res.spec.protoSpec) : undefined;
}

function describe(omni: InProcessOmni, id: string): string | undefined {
  const s = statusOf(omni, id);
  const request = omni.store.find(NS.infraProvider, TYPES.machineRequest, id);
  if (!request) return 'gone: request released by the provider and destroyed by Omni';
  if (request.metadata.phase === 'tearingDown') {
    return s ? 'tearing down: waiting for Omni to release the machine' : 'tearing down: deprovisioning the VM';
  }
  if (!s) return 'waiting for the provider';
  const state = privateState(omni, id);
  const where = state?.node ? ` [${state.node}${state.vmid ? ` VM ${state.vmid}` : ''}]` : '';
  const err = s.error ? ` (${s.error})` : '';
  return `${MachineRequestStatusSpec_Stage[s.stage]}: ${s.status}${where}${err}`;
}

function summarise(
  omni: InProcessOmni,
  sim: PveSim,
  requests: Map<string, string>,
  removed: Set<string>,
  removedVm: { vmid: number; node: string },
  booted: Map<string, string>,
): DemoMachine[] {
  return [...requests].map(([request, set]) => {
    const address = booted.get(request) ?? '';
    if (removed.has(request)) {
      const vm = sim.vm(removedVm.vmid);
      return { request, set, node: removedVm.node, vmid: removedVm.vmid, stage: vm ? 'LEAKED' : 'REMOVED', address };
    }
    const state = privateState(omni, request);
    return { request, set, node: state?.node ?? '', vmid: state?.vmid ?? 0, stage: stageOf(omni, request) ?? 'UNKNOWN', address };
  });
}

function verify(result: DemoMachine[], sim: PveSim, removedVmid: number): boolean {
  const kept = result.filter((m) => m.stage !== 'REMOVED');
  const cps = result.filter((m) => m.set === CP_SET);
  return (
    kept.length === 4 &&
    kept.every((m) => m.stage === 'PROVISIONED' && sim.vm(m.vmid)?.running === true) &&
    new Set(cps.map((m) => m.node)).size === 3 &&
    // Every machine got its own static address from its seed (the pools are the classes' address_pool).
    result.every((m) => m.address !== '') &&
    new Set(result.map((m) => m.address)).size === result.length &&
    result.filter((m) => m.stage === 'REMOVED').length === 1 &&
    removedVmid > 0 &&
    sim.vm(removedVmid) === undefined
  );
}

function printTable(say: (l: string) => void, result: DemoMachine[]): void {
  say('request                  set                   node  vmid  address         stage');
  for (const m of result) {
    say(`${m.request.padEnd(24)} ${m.set.padEnd(21)} ${m.node.padEnd(5)} ${String(m.vmid).padEnd(5)} ${(m.address || '-').padEnd(15)} ${m.stage}`);
  }
}
