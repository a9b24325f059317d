// The daemon's /metrics reflect what it did: a machine provisioned and torn down against the simulator and the
// in-process Omni shows up as Proxmox calls and tasks, Omni RPCs, step runs, a deprovision, heartbeats and request phases.
import { fromBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type DaemonSettings, type RunningDaemon } from '../../src/daemon.js';
import { MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { silentLogger } from '../../src/log.js';
import { PveSim, ScaledClock, startPveSimServer, type PveSimServer } from '../../src/sim/proxmox/index.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/index.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { providerToken, testFixture } from '../helpers/pveHarness.js';
import { MachineRequestKind } from '../../src/cosi/resources.js';
import { recordPveTasks } from '../../src/ops/providerMetrics.js';
import { waitForTask } from '../../src/proxmox/tasks.js';
import { GrpcCode } from '../../src/sim/omni/errors.js';
import { storeChanges, waitFor } from '../helpers/wait.js';

const DATA = `cores: 2\nmemory: 2048\ndisk_size: 10\nstorage_selector: 'name == "local-lvm"'\n`;

let omni: InProcessOmni;
let server: PveSimServer;
let sim: PveSim;
let daemon: RunningDaemon;

/** Wall time (s) before the daemon started: its heartbeat timestamps are later. */
let startedAtSeconds = 0;

function stage(id: string): string | undefined {
  const res = omni.store.find(NS.infraProvider, TYPES.machineRequestStatus, id);
  return res ? MachineRequestStatusSpec_Stage[fromBinary(MachineRequestStatusSpecSchema, res.spec.protoSpec).stage] : undefined;
}

/** Scrapes /metrics over HTTP and returns sample name+labels -> value. */
async function scrape(): Promise<Map<string, number>> {
  const res = await fetch(`${daemon.opsUrl!}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

beforeAll(async () => {
  omni = await startInProcessOmni({ providerId: 'proxmox', logger: silentLogger });
  omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
  sim = new PveSim({ fixture: testFixture(), clock: new ScaledClock(0.002), logger: silentLogger });
  server = await startPveSimServer(sim, { https: true });
  const settings: DaemonSettings = {
    omni: { endpoint: omni.endpoint, serviceAccountKey: await omni.createProviderKey('proxmox'), serviceAccountName: 'infra-provider:proxmox', insecureSkipVerify: false },
    proxmox: { url: server.url, auth: providerToken, tls: { fingerprint: server.fingerprint! } },
    provider: {
      id: 'proxmox',
      name: 'Proxmox',
      description: 'metrics test',
      concurrency: 2,
      tasksPerNode: 4,
      tasksPerStorage: 4,
      shutdownTimeoutSeconds: 0,
      hostname: 'none',
      healthListen: { host: '127.0.0.1', port: 0 },
      logLevel: 'silent',
      heartbeatIntervalSeconds: 10,
      leaseDurationSeconds: 15,
      leaseRenewDeadlineSeconds: 10,
      leaseRetryPeriodSeconds: 2,
    },
  };
  startedAtSeconds = Math.floor(Date.now() / 1000);
  daemon = await startDaemon(settings, silentLogger);
}, 30_000);

afterAll(async () => {
  await daemon?.stop();
  await server?.close();
  await omni?.close();
});

describe('daemon metrics', () => {
  it('counts Proxmox calls, step runs, heartbeats, request phases and deprovisions', async ({ signal }) => {
    expect(daemon.opsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5', providerData: DATA }, 'workers-1');
    await waitFor(() => stage('workers-1') === 'PROVISIONED', {
      what: () => `the request to be provisioned (stage now ${stage('workers-1')})`,
      on: [storeChanges(omni.store)],
      signal,
    });
    // Omni stores PROVISIONED before the daemon has the answer (and records the phase): let that reconcile end.
    await daemon.provider.controller.whenIdle();

    let m = await scrape();
    for (const step of ['pickNode', 'createSchematic', 'uploadISO', 'syncVM', 'startVM', 'registerHA', 'syncHARules']) {
      expect(m.get(`proxmox_provider_provision_steps_total{step="${step}",result="done"}`), step).toBe(1);
      expect(m.get(`proxmox_provider_provision_step_duration_seconds_count{step="${step}"}`), step).toBeGreaterThanOrEqual(1);
    }
    expect(m.get('proxmox_provider_provision_steps_total{step="pickNode",result="failed"}')).toBeUndefined();
    expect(m.get('proxmox_provider_pve_requests_total{method="GET",code="200"}')).toBeGreaterThan(5);
    expect(m.get('proxmox_provider_pve_requests_total{method="POST",code="200"}')).toBeGreaterThanOrEqual(2);
    const getCalls = [...m].filter(([k]) => k.startsWith('proxmox_provider_pve_requests_total{method="GET"')).reduce((n, [, v]) => n + v, 0);
    expect(m.get('proxmox_provider_pve_request_duration_seconds_count{method="GET"}')).toBe(getCalls);
    expect(m.get('proxmox_provider_machine_requests{phase="provisioned"}')).toBe(1);
    expect(m.get('proxmox_provider_machine_requests{phase="provisioning"}')).toBe(0);
    expect(m.get('proxmox_provider_omni_heartbeats_total{result="ok"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('proxmox_provider_omni_heartbeat_last_success_timestamp_seconds')).toBeGreaterThanOrEqual(startedAtSeconds);
    expect(m.get('proxmox_provider_deprovisions_total{result="done"}')).toBeUndefined();
    // Every Proxmox task the steps waited for, by type and outcome, and how long the waits took.
    for (const type of ['download', 'qmcreate', 'qmstart']) {
      expect(m.get(`proxmox_provider_pve_tasks_total{type="${type}",result="ok"}`), type).toBe(1);
      expect(m.get(`proxmox_provider_pve_task_duration_seconds_count{type="${type}"}`), type).toBe(1);
    }
    expect([...m.keys()].filter((k) => k.startsWith('proxmox_provider_pve_tasks_total') && !k.endsWith('result="ok"}'))).toEqual([]);
    // Omni calls by method and gRPC code: the request status written, the schematic created.
    expect(m.get('proxmox_provider_omni_rpcs_total{method="/cosi.resource.State/Update",code="OK"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('proxmox_provider_omni_rpcs_total{method="/management.ManagementService/CreateSchematicFromRaw",code="OK"}')).toBe(1);

    await omni.controllers.deleteMachineRequest('workers-1', signal);
    await daemon.provider.controller.whenIdle();
    m = await scrape();
    expect(m.get('proxmox_provider_deprovisions_total{result="done"}')).toBe(1);
    expect(m.get('proxmox_provider_machine_requests{phase="provisioned"}')).toBe(0);
    expect(m.get('proxmox_provider_pve_requests_total{method="DELETE",code="200"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('proxmox_provider_pve_tasks_total{type="qmdestroy",result="ok"}')).toBe(1);
  }, 30_000);

  it('counts an Omni call that failed under its gRPC code', async () => {
    const key = 'proxmox_provider_omni_rpcs_total{method="/cosi.resource.State/List",code="UNAVAILABLE"}';
    expect((await scrape()).get(key)).toBeUndefined();
    omni.faults.failNext('/cosi.resource.State/List', GrpcCode.UNAVAILABLE, 'connection reset', 2);
    await expect(daemon.omni.state.list(MachineRequestKind)).rejects.toThrow(/connection reset/);
    await expect(daemon.omni.state.list(MachineRequestKind)).rejects.toThrow(/connection reset/);
    expect((await scrape()).get(key)).toBe(2);
  }, 20_000);


  it('counts a Proxmox task that failed, and one that vanished, under its type', async () => {
    sim.faults.onTask({ type: 'qmconfig' }, { kind: 'fail', message: 'simulated config failure' });
    sim.faults.onTask({ type: 'qmconfig' }, { kind: 'vanish' });
    for (let i = 0; i < 2; i++) {
      const upid = await daemon.pve.post<string>('/nodes/pve1/qemu/100/config', { description: `try ${i}` });
      await expect(waitForTask(daemon.pve, upid, { onFinished: recordPveTasks(daemon.metrics) })).rejects.toThrow();
    }
    const m = await scrape();
    expect(m.get('proxmox_provider_pve_tasks_total{type="qmconfig",result="failed"}')).toBe(1);
    expect(m.get('proxmox_provider_pve_tasks_total{type="qmconfig",result="vanished"}')).toBe(1);
  }, 20_000);

  it('counts a Proxmox answer with its status code and a call that got no answer as "error"', async () => {
    const before = await scrape();
    await expect(daemon.pve.get('/nodes/nosuchnode/status')).rejects.toThrow();
    await server.close();
    await expect(daemon.pve.get('/version')).rejects.toThrow();
    const after = await scrape();
    const codes = [...after.keys()].filter((k) => k.startsWith('proxmox_provider_pve_requests_total{method="GET"'));
    const grew = codes.filter((k) => (after.get(k) ?? 0) > (before.get(k) ?? 0));
    expect(grew).toContain('proxmox_provider_pve_requests_total{method="GET",code="error"}');
    expect(grew.some((k) => /code="(400|404|500)"/.test(k))).toBe(true);
  }, 20_000);
});
