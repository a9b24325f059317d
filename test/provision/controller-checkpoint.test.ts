// The controller's side of write-ahead intent (issue 8): a step's checkpoint() persists the private state mid-step
// (kept even when the step then fails), and a teardown that arrives while a step runs aborts that step, then
// deprovisions from what the step checkpointed, and releases the finalizer only after that.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProvisionController } from '../../src/provision/controller.js';
import { StepFailure } from '../../src/provision/step.js';
import { startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';
import { CTRL, ScriptedProvisioner, isProvisioned, mrs, privateState, startController } from '../omni/controller-harness.js';

const SPEC = {
  talosVersion: '1.9.5',
  providerData: 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\n',
};
const STEP_ANNOTATION = 'infra.omni.sidero.dev/step';

let f: OmniFixture;
let p: ScriptedProvisioner;
let controller: ProvisionController | undefined;
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

describe('checkpoint()', () => {
  it('persists the state mid-step without moving the step annotation, and keeps it when the step then fails', async () => {
    let atCheckpoint: { spec: unknown; annotation: string | undefined } | undefined;
    p.script('syncVM', async (ctx) => {
      ctx.state.createVmid = 321;
      ctx.state.createNode = 'pve2';
      await ctx.checkpoint();
      const st = privateState(f.omni.store, ctx.request.id);
      atCheckpoint = { spec: { createVmid: st?.spec.createVmid, createNode: st?.spec.createNode }, annotation: st?.res.metadata.annotations[STEP_ANNOTATION] };
      throw new StepFailure('syncVM: Proxmox rejected the credentials');
    });
    let stateOnRetry: { createVmid: number; createNode: string } | undefined;
    p.script('syncVM', (ctx) => {
      stateOnRetry = { createVmid: ctx.state.createVmid, createNode: ctx.state.createNode };
      ctx.state.createVmid = 0;
      ctx.state.createNode = '';
      ctx.state.vmid = 321;
      return { kind: 'done' };
    });
    const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
    controller = startController(f, p, { failedRetryMs: 50 });
    await f.eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED after the retry');
    expect(atCheckpoint).toEqual({ spec: { createVmid: 321, createNode: 'pve2' }, annotation: 'uploadISO' });
    // The hard failure wrote nothing more, but what was checkpointed is what the retry started from.
    expect(stateOnRetry).toEqual({ createVmid: 321, createNode: 'pve2' });
    expect(privateState(f.omni.store, id)?.spec).toMatchObject({ vmid: 321, createVmid: 0, createNode: '' });
  });
});

describe('teardown while a step runs', () => {
  it('aborts the step, deprovisions from what it checkpointed, then releases the finalizer', async () => {
    f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
    let stepSignal: AbortSignal | undefined;
    p.script('syncVM', async (ctx) => {
      ctx.state.createVmid = 555;
      ctx.state.createNode = 'pve1';
      ctx.state.vmCreateTask = 'UPID:pve1:00001234:00005678:65000000:qmcreate:555:root@pam!omni:';
      await ctx.checkpoint();
      stepSignal = ctx.signal;
      p.changes.notify();
      // Stands in for the wait on the create task: only the abort ends it.
      await new Promise<void>((_, reject) => {
        const fail = () => reject(ctx.signal?.reason ?? new Error('aborted'));
        if (ctx.signal?.aborted) fail();
        ctx.signal?.addEventListener('abort', fail, { once: true });
      });
      return { kind: 'done' };
    });
    let finalizersAtDeprovision: string[] | undefined;
    p.onDeprovision = (ctx) => {
      finalizersAtDeprovision = [...(f.omni.controllers.machineRequest(ctx.requestId)?.metadata.finalizers ?? [])];
    };
    const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
    controller = startController(f, p);
    await f.eventually(() => stepSignal, 'the syncVM step waiting', [p.changes.trigger]);
    expect(privateState(f.omni.store, id)?.spec.createVmid).toBe(555);

    await f.omni.controllers.deleteMachineRequest(id, signal);
    expect(stepSignal?.aborted).toBe(true);
    expect(p.deprovisions).toHaveLength(1);
    expect(p.deprovisions[0]?.state).toMatchObject({
      createVmid: 555,
      createNode: 'pve1',
      vmCreateTask: 'UPID:pve1:00001234:00005678:65000000:qmcreate:555:root@pam!omni:',
    });
    expect(finalizersAtDeprovision).toContain(CTRL);
    expect(f.omni.controllers.machineRequest(id)).toBeUndefined();
    // The aborted step was neither reported as a failure nor followed by another step.
    expect(p.stepsRun(id)).toEqual(['pickNode', 'createSchematic', 'uploadISO', 'syncVM']);
    expect(mrs(f.omni.store, id)).toBeUndefined();
  });

  it('a step that finishes anyway after the teardown started has its result recorded, and no next step runs', async () => {
    f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
    let started = false;
    let finish: (() => void) | undefined;
    p.script('syncVM', async (ctx) => {
      started = true;
      p.changes.notify();
      // Ignores its signal (as a step in a Proxmox call that cannot be aborted would), then reports its VM.
      await new Promise<void>((resolve) => {
        finish = resolve;
      });
      ctx.state.vmid = 777;
      return { kind: 'done' };
    });
    const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
    controller = startController(f, p);
    await f.eventually(() => started, 'the syncVM step running', [p.changes.trigger]);
    const deleted = f.omni.controllers.deleteMachineRequest(id, signal);
    await f.eventually(() => f.omni.controllers.machineRequest(id)?.metadata.phase === 'tearingDown', 'request tearing down');
    finish?.();
    await deleted;
    expect(p.deprovisions.map((d) => d.state.vmid)).toEqual([777]);
    expect(p.stepsRun(id)).not.toContain('startVM');
    expect(p.calls.filter((c) => c.request === id).map((c) => c.step).at(-1)).toBe('syncVM');
  });
});
