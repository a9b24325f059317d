// Provider-level conformance: the real daemon pieces (startDaemon = connectOmni + startProvider + ProxmoxProvisioner)
// against the Proxmox simulator and, in turn, upstream's COSI server (Go harness) and the in-process Omni, driven
// through the same scenarios; the outcomes are compared at the end.
import { fromBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startDaemon, type DaemonSettings, type RunningDaemon } from '../../src/daemon.js';
import { bootFromSeed } from '../../src/demo/machine.js';
import { encodeJoinToken } from '../../src/sim/omni/jointoken.js';
import { InfraProviderStatusSpecSchema, MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { MachineSpecSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import { silentLogger } from '../../src/log.js';
import { smbiosUuidOf } from '../../src/provision/cluster.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { e2eFixture, PROVIDER_TOKEN, SMALL_VM } from '../helpers/e2e.js';
import { SERVER_NAMES, startServer, type ConformanceOmni, type ServerName } from './servers.js';
import { Observations, resourceView } from './wire.js';
import { pollFor } from '../helpers/wait.js';

const CONTROLLER = 'proxmox.ProvisionController';
const PRIVATE_NS = 'infra-provider:proxmox';
const PRIVATE_TYPE = 'Machine.proxmox.infraprovider.sidero.dev';
const MRS_TYPE = 'MachineRequestStatuses.omni.sidero.dev';
const MR_TYPE = 'MachineRequests.omni.sidero.dev';
const observations = new Observations();

/** The running test's signal (aborted when it times out). */
let signal: AbortSignal | undefined;
beforeEach((ctx) => {
  signal = ctx.signal;
});

/**
 * Polls the server (the upstream one is another process: nothing to subscribe to) with no deadline of its own;
 * ends with the test's signal.
 */
function eventually<T>(check: () => Promise<T | undefined | false>, what: string): Promise<T> {
  return pollFor(check, { what, everyMs: 50, signal });
}

describe.each(SERVER_NAMES)('the provider against %s', (name: ServerName) => {
  let server: ConformanceOmni | undefined;
  let skipped: string | undefined;
  let sim: PveSim;
  let pve: PveSimServer;
  let key: string;
  let daemon: RunningDaemon | undefined;
  const record = (k: string, v: unknown) => observations.record(name, k, v);

  const settings = (serviceAccountKey: string, id = 'proxmox'): DaemonSettings => ({
    omni: { endpoint: server!.endpoint, serviceAccountKey, serviceAccountName: `infra-provider:${id}`, insecureSkipVerify: false },
    proxmox: { url: pve.url, auth: PROVIDER_TOKEN, tls: { fingerprint: pve.fingerprint! } },
    provider: {
      id,
      name: 'Proxmox (conformance)',
      description: 'conformance suite',
      concurrency: 2,
      tasksPerNode: 4,
      tasksPerStorage: 4,
      shutdownTimeoutSeconds: 0,
      hostname: 'none',
      healthListen: null,
      logLevel: 'info',
      heartbeatIntervalSeconds: 1,
      leaseDurationSeconds: 15,
      leaseRenewDeadlineSeconds: 10,
      leaseRetryPeriodSeconds: 2,
    },
  });

  const status = async (id: string) => {
    const r = await server!.get('infra-provider', MRS_TYPE, id);
    if (!r) return undefined;
    const spec = fromBinary(MachineRequestStatusSpecSchema, r.spec!.protoSpec);
    return { stage: MachineRequestStatusSpec_Stage[spec.stage], status: spec.status, error: spec.error, id: spec.id, labels: { ...r.metadata!.labels } };
  };
  const privateState = async (id: string) => {
    const r = await server!.get(PRIVATE_NS, PRIVATE_TYPE, id);
    return r ? { spec: fromBinary(MachineSpecSchema, r.spec!.protoSpec), annotations: { ...r.metadata!.annotations } } : undefined;
  };
  const vmsNamed = (id: string) => [...sim.state.vms.values()].filter((vm) => vm.config.get('name') === id).length;
  const provisioned = (id: string) => eventually(async () => (await status(id))?.stage === 'PROVISIONED' && (await status(id))!, `${id} PROVISIONED`);

  beforeAll(async () => {
    const started = await startServer(name);
    if ('skipped' in started) {
      skipped = started.skipped;
      return;
    }
    server = started;
    sim = new PveSim({ fixture: e2eFixture(), clock: new ScaledClock(0.01) });
    pve = await startPveSimServer(sim, { https: true });
    key = (await server.createProviderKey()).keyString;
    await server.holdMachineRequestStatuses(true);
  }, 15 * 60_000);

  afterAll(async () => {
    await daemon?.stop();
    await pve?.close();
    await server?.close();
  });

  const live = (ctx: { skip: (note?: string) => void }): ConformanceOmni => {
    if (!server) {
      ctx.skip(skipped);
      throw new Error('unreachable');
    }
    return server;
  };

  it('starts, registers its status and heartbeats', async (ctx) => {
    const srv = live(ctx);
    daemon = await startDaemon(settings(key), silentLogger);
    expect(daemon.provider.joinMode).toBe('v2');
    const providerStatus = await eventually(() => srv.get('infra-provider', 'InfraProviderStatuses.omni.sidero.dev', 'proxmox'), 'provider status');
    const spec = fromBinary(InfraProviderStatusSpecSchema, providerStatus.spec!.protoSpec);
    expect(spec.name).toBe('Proxmox (conformance)');
    expect(spec.schema).not.toBe('');
    const health = await eventually(() => srv.get('infra-provider-ephemeral', 'InfraProviderHealthStatuses.omni.sidero.dev', 'proxmox'), 'heartbeat');
    record('startup: join mode', daemon.provider.joinMode);
    record('startup: provider status', { ...resourceView(providerStatus), version: undefined, updated: undefined, protoSpec: undefined, name: spec.name });
    record('startup: heartbeat', { owner: health.metadata!.owner, labels: health.metadata!.labels, phase: health.metadata!.phase });
  });

  it('provisions a request, links the machine that joins, and tears it down', async (ctx) => {
    const srv = live(ctx);
    await srv.createMachineRequest('workers', 'req-1', { talosVersion: 'v1.9.5', providerData: SMALL_VM });
    const done = await provisioned('req-1');
    expect(done.status).toBe('Provision Complete');
    const state = await privateState('req-1');
    expect(state?.annotations['infra.omni.sidero.dev/step']).toBe('syncHARules');
    const request = await srv.get('infra-provider', MR_TYPE, 'req-1');
    expect(request?.metadata?.finalizers).toContain(CONTROLLER);
    record('provision: status', { ...done, id: undefined });
    record('provision: request finalizers', request?.metadata?.finalizers);
    record('provision: step annotation', state?.annotations);

    const vm = sim.vm(state!.spec.vmid)!;
    const machine = bootFromSeed(sim.isoFile((vm.config.ide0 ?? '').split(',')[0] ?? '', vm.node), smbiosUuidOf(vm.config) ?? '');
    const joined = await srv.machineJoins(machine.uuid, machine.token);
    expect(joined).toEqual({ ok: true });
    const linked = await eventually(async () => (await status('req-1'))?.id === machine.uuid && (await status('req-1')), 'MRS.id');
    expect(linked.id).toBe(machine.uuid);
    const registration = await srv.get('infra-provider', 'InfraMachineRegistrations.omni.sidero.dev', machine.uuid);
    record('join: registration labels', registration?.metadata?.labels);

    const forged = encodeJoinToken('not-the-join-token', '2', { 'omni.sidero.dev/infra-provider-id': 'proxmox', 'omni.sidero.dev/machine-request': 'req-1' });
    const refused = await srv.machineJoins('00000000-0000-4000-8000-000000000001', forged);
    expect(refused.ok).toBe(false);
    record('join: forged token', refused);

    await srv.deleteMachineRequest('req-1', signal);
    const left = {
      request: (await srv.get('infra-provider', MR_TYPE, 'req-1')) !== undefined,
      status: (await srv.get('infra-provider', MRS_TYPE, 'req-1')) !== undefined,
      privateState: (await privateState('req-1')) !== undefined,
      vms: vmsNamed('req-1'),
    };
    expect(left).toEqual({ request: false, status: false, privateState: false, vms: 0 });
    record('teardown: leftovers', left);
  });

  it('resumes after a restart: work created while it was down is provisioned once', async (ctx) => {
    const srv = live(ctx);
    await daemon!.stop();
    daemon = undefined;
    await srv.createMachineRequest('workers', 'req-2', { talosVersion: 'v1.9.5', providerData: SMALL_VM });
    daemon = await startDaemon(settings(key), silentLogger);
    const done = await provisioned('req-2');
    expect(vmsNamed('req-2')).toBe(1);
    record('restart: provisioned after restart', { stage: done.stage, vms: vmsNamed('req-2') });
    await srv.deleteMachineRequest('req-2', signal);
    expect(vmsNamed('req-2')).toBe(0);
  });

  it('tears down through Get+Update when the server has no Teardown RPC (Omni < 1.8)', async (ctx) => {
    const srv = live(ctx);
    await srv.setCapabilities({ teardownRpc: false });
    try {
      await srv.createMachineRequest('workers', 'req-3', { talosVersion: 'v1.9.5', providerData: SMALL_VM });
      await provisioned('req-3');
      await srv.deleteMachineRequest('req-3', signal);
      const left = { status: (await srv.get('infra-provider', MRS_TYPE, 'req-3')) !== undefined, vms: vmsNamed('req-3') };
      expect(left).toEqual({ status: false, vms: 0 });
      record('no teardown rpc: leftovers', left);
    } finally {
      await srv.setCapabilities({ teardownRpc: true });
    }
  });

  it('refuses to start with an unregistered provider ID or an expired key', async (ctx) => {
    const srv = live(ctx);
    const ghostKey = (await srv.createProviderKey({ providerId: 'ghost' })).keyString;
    const ghost = await startDaemon(settings(ghostKey, 'ghost'), silentLogger).then(
      async (d) => {
        await d.stop();
        return 'started';
      },
      (err: Error) => err.message,
    );
    expect(ghost).toMatch(/PERMISSION_DENIED: infra provider with name "ghost" is not registered in the system/);
    const expiring = await srv.createProviderKey();
    await srv.expireKey(expiring.fingerprint);
    const expired = await startDaemon(settings(expiring.keyString), silentLogger).then(
      async (d) => {
        await d.stop();
        return 'started';
      },
      (err: Error) => err.message,
    );
    expect(expired).toMatch(/UNAUTHENTICATED: invalid signature/);
    record('refusal: unregistered provider', ghost);
    record('refusal: expired key', expired);
  });
});

describe('provider: upstream vs in-process', () => {
  it('end the same way', (ctx) => {
    const compared = observations.compare();
    if (compared === 0) ctx.skip('the upstream harness did not run');
    expect(compared).toBeGreaterThan(8);
  });
});
