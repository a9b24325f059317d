import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestStatusSpecSchema, MachineRequestStatusSpec_Stage as Stage } from '../../src/gen/omni/specs/infra_pb.js';
import { ConfigPatchSpecSchema } from '../../src/gen/omni/specs/omni_pb.js';
import type { ProvisionController } from '../../src/provision/controller.js';
import { STEP_NAMES, StepFailure, done, retryAfter } from '../../src/provision/step.js';
import { encodeSpec } from '../../src/sim/omni/controllers.js';
import { GrpcCode } from '../../src/sim/omni/errors.js';
import { FINALIZERS, LABELS, NS, TYPES } from '../../src/sim/omni/resources.js';
import { startOmniFixture, writeCounts, type OmniFixture } from '../omni/omni-fixture.js';
import { CTRL, PRIVATE_NS, PRIVATE_TYPE, ScriptedProvisioner, isProvisioned, mrs, privateState, seedPrivateState, startController } from '../omni/controller-harness.js';

const SPEC = {
  talosVersion: '1.9.5',
  providerData: 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\n',
};

let f: OmniFixture;
let p: ScriptedProvisioner;
let controller: ProvisionController | undefined;
/** The running test's signal (aborted when it times out). */
let signal: AbortSignal;

beforeEach(async (ctx) => {
  signal = ctx.signal;
  f = await startOmniFixture({}, { signal });
  p = new ScriptedProvisioner();
  controller = undefined;
});

afterEach(async () => {
  await controller?.stop();
  await f.close();
});

/** Every MRS status/stage/error Omni stored, in order. */
function recordStatuses(): Array<{ status: string; stage: Stage; error: string }> {
  const seen: Array<{ status: string; stage: Stage; error: string }> = [];
  f.omni.store.watchKind(NS.infraProvider, TYPES.machineRequestStatus, {}, (events) => {
    for (const e of events) {
      if (!e.resource || (e.type !== 'created' && e.type !== 'updated')) continue;
      const s = fromBinary(MachineRequestStatusSpecSchema, e.resource.spec.protoSpec);
      const last = seen.at(-1);
      if (!last || last.status !== s.status || last.stage !== s.stage || last.error !== s.error) seen.push({ status: s.status, stage: s.stage, error: s.error });
    }
  });
  return seen;
}

describe('provisioning', () => {
  it('runs every step once, reports progress in the MRS and ends PROVISIONED', async () => {
    f.omni.controllers.holdMachineRequestStatuses();
    const statuses = recordStatuses();
    let stateBeforeFirstStep: ReturnType<typeof privateState>;
    p.onStep = (call) => {
      if (call.step === 'pickNode') stateBeforeFirstStep = privateState(f.omni.store, call.request);
    };
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');

    expect(p.stepsRun(id)).toEqual([...STEP_NAMES]);
    // Private state existed, empty, before step 1.
    expect(stateBeforeFirstStep?.res.metadata.owner).toBe(CTRL);
    expect(stateBeforeFirstStep?.spec.node).toBe('');
    expect(stateBeforeFirstStep?.res.metadata.annotations['infra.omni.sidero.dev/step']).toBeUndefined();

    expect(statuses.map((s) => s.status)).toEqual([
      '',
      'Running Step: "pickNode" (1/7)',
      'Running Step: "createSchematic" (2/7)',
      'Running Step: "uploadISO" (3/7)',
      'Running Step: "syncVM" (4/7)',
      'Running Step: "startVM" (5/7)',
      'Running Step: "registerHA" (6/7)',
      'Running Step: "syncHARules" (7/7)',
      'Provision Complete',
    ]);
    expect(statuses[0]?.stage).toBe(Stage.PROVISIONING);

    const status = mrs(f.omni.store, id);
    expect(status?.res.metadata.owner).toBe(CTRL);
    expect(status?.res.metadata.labels).toMatchObject({ [LABELS.infraProviderId]: 'proxmox', [LABELS.machineRequestSet]: 'workers' });
    expect(status?.res.metadata.finalizers).toContain(FINALIZERS.machineRequestStatusCleanup);
    const machine = privateState(f.omni.store, id);
    expect(status?.spec.id).toBe(machine?.spec.uuid);
    expect(machine?.spec).toMatchObject({ node: 'pve1', vmid: 100, vmStartTask: 'UPID:pve1:0001:start' });
    expect(machine?.res.metadata.annotations['infra.omni.sidero.dev/step']).toBe('syncHARules');

    const request = f.omni.controllers.machineRequest(id);
    expect(request?.metadata.finalizers).toEqual([CTRL]);
    expect(request?.metadata.owner).toBe('');
    // The join config carries a v2 token naming this request.
    expect(p.calls[0]?.joinConfig).toMatch(/kind: SideroLinkConfig\napiUrl: https:\/\/127\.0\.0\.1:8099\?jointoken=v2%3A/);
  });

  it.each(STEP_NAMES.map((name, i) => [name, i] as const))('resumes from the stored step annotation %s', async (name, index) => {
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    seedPrivateState(f.omni.store, id, { node: 'pve2' }, { 'infra.omni.sidero.dev/step': name });
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    expect(p.stepsRun(id)).toEqual(STEP_NAMES.slice(index));
    expect(privateState(f.omni.store, id)?.spec.node).toBe(index === 0 ? 'pve1' : 'pve2');
  });

  it('restarts from the first step when the annotation names no known step', async () => {
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    seedPrivateState(f.omni.store, req.metadata.id, {}, { 'infra.omni.sidero.dev/step': 'renamedStep' });
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, req.metadata.id), 'PROVISIONED');
    expect(p.stepsRun(req.metadata.id)).toEqual([...STEP_NAMES]);
  });

  it('hard failure: FAILED with the message, nothing persisted for the step, retried later', async () => {
    const statuses = recordStatuses();
    let annotationAtFailure: string | undefined;
    p.script('syncVM', (ctx) => {
      ctx.state.vmid = 999; // must not be persisted
      annotationAtFailure = privateState(f.omni.store, ctx.request.id)?.res.metadata.annotations['infra.omni.sidero.dev/step'];
      throw new StepFailure('storage selector matched no storage on node pve1');
    });
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    controller = startController(f, p, { failedRetryMs: 50 });
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED after retry');
    expect(annotationAtFailure).toBe('uploadISO');
    expect(statuses).toContainEqual({
      status: 'Running Step: "syncVM" (4/7)',
      stage: Stage.FAILED,
      error: 'storage selector matched no storage on node pve1',
    });
    // The retry resumed at the last persisted step (uploadISO, re-run as Go does), then the failed one.
    expect(p.stepsRun(id)).toEqual(['pickNode', 'createSchematic', 'uploadISO', 'syncVM', 'uploadISO', 'syncVM', 'startVM', 'registerHA', 'syncHARules']);
    expect(mrs(f.omni.store, id)?.spec.error).toBe('');
  });

  it('retry-after: state and annotation persisted, message shown while PROVISIONING, same step resumed', async () => {
    let snapshot: { annotation?: string | undefined; task?: string | undefined; error?: string | undefined; stage?: Stage | undefined } = {};
    p.script(
      'uploadISO',
      (ctx) => {
        ctx.state.volumeUploadTask = 'UPID:pve1:download';
        return retryAfter(40, 'downloading Talos ISO: 40%');
      },
      (ctx) => {
        const st = privateState(f.omni.store, ctx.request.id);
        const m = mrs(f.omni.store, ctx.request.id);
        snapshot = {
          annotation: st?.res.metadata.annotations['infra.omni.sidero.dev/step'],
          task: st?.spec.volumeUploadTask,
          error: m?.spec.error,
          stage: m?.spec.stage,
        };
        return done;
      },
    );
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, req.metadata.id), 'PROVISIONED');
    expect(snapshot).toEqual({ annotation: 'uploadISO', task: 'UPID:pve1:download', error: 'downloading Talos ISO: 40%', stage: Stage.PROVISIONING });
    expect(p.stepsRun(req.metadata.id)).toEqual(['pickNode', 'createSchematic', 'uploadISO', 'uploadISO', 'syncVM', 'startVM', 'registerHA', 'syncHARules']);
  });

  it('transient failure keeps the stage PROVISIONING and retries with backoff', async () => {
    const statuses = recordStatuses();
    p.script('pickNode', () => {
      throw new StepFailure('Proxmox API timed out', { transient: true });
    });
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, req.metadata.id), 'PROVISIONED');
    expect(statuses.some((s) => s.stage === Stage.FAILED)).toBe(false);
    expect(statuses).toContainEqual({ status: 'Running Step: "pickNode" (1/7)', stage: Stage.PROVISIONING, error: 'Proxmox API timed out' });
  });

  it('invalid provider data: FAILED with the validation message and no step runs', async () => {
    const req = f.omni.controllers.createMachineRequest('workers', { ...SPEC, providerData: SPEC.providerData.replace('cores: 2', 'cores: many') });
    controller = startController(f, p);
    const status = await f.eventually(() => (mrs(f.omni.store, req.metadata.id)?.spec.stage === Stage.FAILED ? mrs(f.omni.store, req.metadata.id) : undefined), 'FAILED');
    expect(status.spec.error).toMatch(/cores/);
    expect(p.calls).toHaveLength(0);
  });

  it('fills MRS.id from the one InfraMachineRegistration created when the machine joins with its token', async () => {
    p.setsUuid = false;
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    expect(mrs(f.omni.store, id)?.spec.id).toBe('');
    const joinConfig = p.calls[0]?.joinConfig ?? '';
    const token = decodeURIComponent(/jointoken=([^\n&]+)/.exec(joinConfig)?.[1] ?? '');
    f.omni.controllers.machineJoins('6a0c1b2d-0000-4000-8000-000000000001', token);
    await f.eventually(() => mrs(f.omni.store, id)?.spec.id === '6a0c1b2d-0000-4000-8000-000000000001', 'MRS.id from registration');
  });
});

describe('idle behaviour', () => {
  it('writes nothing while idle, after unrelated request updates, and after a watch resync', async () => {
    f.omni.controllers.holdMachineRequestStatuses();
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    await controller.whenIdle();
    const before = writeCounts(f.omni);
    const gets = () => f.omni.callCounts()['/cosi.resource.State/Get'] ?? 0;

    // Omni labels the request with the machine it matched: the controller looks, and writes nothing.
    let getsBefore = gets();
    f.omni.store.mutate(NS.infraProvider, TYPES.machineRequest, id, (res) => {
      res.metadata.labels[LABELS.machine] = 'uuid-1';
    });
    await f.eventually(() => gets() > getsBefore, 'reconcile after label change');
    await controller.whenIdle();

    // A broken watch resyncs and reconciles every known request again: still no writes.
    getsBefore = gets();
    f.omni.faults.injectErroredEvent();
    await f.eventually(() => gets() > getsBefore, 'reconcile after resync');
    await controller.whenIdle();

    expect(writeCounts(f.omni)).toEqual(before);
    expect(p.stepsRun(id)).toEqual([...STEP_NAMES]);
  });
});

describe('teardown', () => {
  it('patches, then MRS (after Omni releases it), then Deprovision exactly once, then private state, then the finalizer', async () => {
    f.omni.controllers.holdMachineRequestStatuses();
    f.omni.controllers.holdConfigPatchRequests();
    const order: string[] = [];
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    f.omni.store.create(
      {
        metadata: {
          namespace: NS.infraProvider,
          type: TYPES.configPatchRequest,
          id: `${id}-patch`,
          labels: { [LABELS.infraProviderId]: 'proxmox', [LABELS.machineRequest]: id },
        },
        spec: encodeSpec(ConfigPatchSpecSchema, { data: 'machine: {}\n' }),
      },
      { owner: CTRL },
    );
    for (const [type, label] of [
      [TYPES.configPatchRequest, 'patch'],
      [TYPES.machineRequestStatus, 'status'],
      [PRIVATE_TYPE, 'private state'],
      [TYPES.machineRequest, 'request'],
    ] as const) {
      const ns = type === PRIVATE_TYPE ? PRIVATE_NS : NS.infraProvider;
      f.omni.store.watchKind(ns, type, {}, (events) => {
        for (const e of events) if (e.type === 'destroyed' && e.resource) order.push(`${label} destroyed`);
      });
    }
    f.omni.store.watchKind(NS.infraProvider, TYPES.machineRequest, {}, (events) => {
      for (const e of events) {
        if (e.type === 'updated' && e.old?.metadata.finalizers.includes(CTRL) && !e.resource?.metadata.finalizers.includes(CTRL)) order.push('finalizer removed');
      }
    });
    p.onDeprovision = () => {
      order.push('deprovision');
      // A network blip right after Deprovision: the retry must not deprovision again.
      f.omni.faults.failNext('Teardown', GrpcCode.UNAVAILABLE, 'connection reset');
    };
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');

    const deleted = f.omni.controllers.deleteMachineRequest(id, signal);
    await f.eventually(() => mrs(f.omni.store, id)?.res.metadata.phase === 'tearingDown', 'MRS tearing down');
    await controller.whenIdle();
    expect(order).toEqual(['patch destroyed']);
    expect(p.deprovisions).toHaveLength(0);

    f.omni.controllers.releaseMachineRequestStatus(id);
    await deleted;
    await f.eventually(() => order.includes('request destroyed'), 'request destroyed event');
    expect(order).toEqual(['patch destroyed', 'status destroyed', 'deprovision', 'private state destroyed', 'finalizer removed', 'request destroyed']);
    expect(p.deprovisions).toHaveLength(1);
    expect(p.deprovisions[0]?.state).toMatchObject({ node: 'pve1', vmid: 100 });
  });

  it('removes the finalizer even when the private state is already gone', async () => {
    f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    const id = req.metadata.id;
    controller = startController(f, p);
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    await controller.whenIdle();
    f.omni.store.destroy(PRIVATE_NS, PRIVATE_TYPE, id, { owner: CTRL });
    await f.omni.controllers.deleteMachineRequest(id, signal);
    expect(f.omni.controllers.machineRequest(id)).toBeUndefined();
    expect(p.deprovisions).toHaveLength(0);
  });

  it('deprovisions and destroys dangling private state found at startup (also Go leftovers in tearingDown)', async () => {
    seedPrivateState(f.omni.store, 'gone-aaaaaa', { node: 'pve3', vmid: 123 }, { 'infra.omni.sidero.dev/step': 'startVM' });
    seedPrivateState(f.omni.store, 'gone-bbbbbb', { node: 'pve1', vmid: 124 });
    f.omni.store.teardown(PRIVATE_NS, PRIVATE_TYPE, 'gone-bbbbbb', { owner: CTRL });
    controller = startController(f, p);
    await f.eventually(() => !privateState(f.omni.store, 'gone-aaaaaa') && !privateState(f.omni.store, 'gone-bbbbbb'), 'dangling state destroyed');
    expect(p.deprovisions.map((d) => [d.requestId, d.state.vmid]).sort()).toEqual([
      ['gone-aaaaaa', 123],
      ['gone-bbbbbb', 124],
    ]);
  });
});

describe('shutdown', () => {
  it('stop() waits for the step in flight and takes no new work', async () => {
    let release: (() => void) | undefined;
    let finished = false;
    p.script('pickNode', async (ctx) => {
      await new Promise<void>((r) => {
        release = r;
      });
      ctx.state.node = 'pve1';
      finished = true;
      return done;
    });
    const req = f.omni.controllers.createMachineRequest('workers', SPEC);
    // No shutdown bound to race: the step finishing and its result being written take what they take.
    controller = startController(f, p, { shutdownTimeoutMs: 60 * 60_000 });
    await f.eventually(() => release, 'step started', [p.changes.trigger]);
    const stopping = controller.stop();
    release?.();
    const result = await stopping;
    expect(result.drained).toBe(true);
    expect(finished).toBe(true);
    // The step's result was persisted, and no further step started.
    expect(privateState(f.omni.store, req.metadata.id)?.res.metadata.annotations['infra.omni.sidero.dev/step']).toBe('pickNode');
    expect(p.stepsRun(req.metadata.id)).toEqual(['pickNode']);
    controller = undefined;
  });

  it('stop() returns after the bound when a step hangs, aborting it', async () => {
    let aborted = false;
    p.script('pickNode', (ctx) => new Promise((_, reject) => ctx.signal?.addEventListener('abort', () => {
      aborted = true;
      reject(new Error('aborted'));
    })));
    f.omni.controllers.createMachineRequest('workers', SPEC);
    controller = startController(f, p, { shutdownTimeoutMs: 50 });
    await f.eventually(() => p.calls.length > 0, 'step started', [p.changes.trigger]);
    const result = await controller.stop();
    expect(result.drained).toBe(false);
    expect(result.abandoned).toHaveLength(1);
    await f.eventually(() => aborted, 'step aborted');
    controller = undefined;
  });
});

describe('concurrency', () => {
  it('reconciles at most `concurrency` requests at the same time', async () => {
    const ids = [1, 2, 3, 4, 5].map(() => f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id);
    let concurrent = 0;
    let max = 0;
    let started = 0;
    const held: Array<() => void> = [];
    p.onStep = async (call) => {
      if (call.step !== 'pickNode') return;
      started++;
      concurrent++;
      max = Math.max(max, concurrent);
      // Each pickNode waits until a second one runs beside it (or no request is left to come): the limit is reached
      // whatever the pace of the reconciles. A fixed 20 ms hold could end before the other reconcile got here.
      await new Promise<void>((resolve) => {
        held.push(resolve);
        if (concurrent >= 2 || started >= ids.length) for (const release of held.splice(0)) release();
      });
      concurrent--;
    };
    controller = startController(f, p, { concurrency: 2 });
    await f.eventually(
      () => ids.every((id) => isProvisioned(f.omni.store, id)),
      () => `all PROVISIONED (so far ${ids.filter((id) => isProvisioned(f.omni.store, id)).length} of ${ids.length})`,
    );
    expect(max).toBe(2);
    expect(p.calls.filter((c) => c.step === 'pickNode')).toHaveLength(ids.length);
  });
});
