// What the controller logs over a request's life: each outcome once, and every line one JSON object with unique
// keys (step lines bind node/vmid and steps log them again).
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ProvisionController } from '../../src/provision/controller.js';
import { createLogger, type Logger } from '../../src/log.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { eventually, startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';
import { done } from '../../src/provision/step.js';
import { CTRL, ScriptedProvisioner, isProvisioned, startController } from '../omni/controller-harness.js';
import { jsonLineProblem } from '../helpers/json-lines.js';

const SPEC = {
  talosVersion: '1.9.5',
  providerData: 'cores: 2\nmemory: 4096\ndisk_size: 10\nstorage_selector: name == "local-lvm"\n',
};
/** A finalizer of Omni's own that keeps the request after ours is gone (as Omni destroys at its own pace). */
const OMNI_FINALIZER = 'MachineRequestSetStatusController';

let f: OmniFixture;
let p: ScriptedProvisioner;
let controller: ProvisionController | undefined;
let text = '';
let logger: Logger;

beforeEach(async () => {
  f = await startOmniFixture();
  p = new ScriptedProvisioner();
  controller = undefined;
  text = '';
  logger = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString('utf8');
        done();
      },
    }),
  });
});

afterEach(async () => {
  await controller?.stop();
  await f.close();
});

const lines = (): Array<Record<string, unknown>> => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
const logged = (msg: string) => lines().filter((l) => l.msg === msg);

describe('controller logs', () => {
  it('logs "machine deprovisioned" once per request, though removing the finalizer brings the request back', async () => {
    f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
    const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
    controller = startController(f, p, { logger });
    await eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    f.omni.store.addFinalizer(NS.infraProvider, TYPES.machineRequest, id, OMNI_FINALIZER);

    f.omni.store.teardown(NS.infraProvider, TYPES.machineRequest, id, { owner: '' });
    await eventually(() => !f.omni.store.get(NS.infraProvider, TYPES.machineRequest, id).metadata.finalizers.includes(CTRL), 'our finalizer removed');
    // The update that removed our finalizer is reconciled too (the request is still there, tearing down).
    await controller.whenIdle();
    await controller.reconcile(id);
    expect(p.deprovisions).toHaveLength(1);
    expect(logged('machine deprovisioned')).toHaveLength(1);
    expect(logged('machine deprovisioned')[0]).toMatchObject({ request: id, controller: CTRL });

    f.omni.store.removeFinalizer(NS.infraProvider, TYPES.machineRequest, id, OMNI_FINALIZER);
    f.omni.store.destroy(NS.infraProvider, TYPES.machineRequest, id, { owner: '' });
    await controller.whenIdle();
    expect(logged('machine deprovisioned')).toHaveLength(1);
  });

  it('writes step lines with node and vmid once each, the step value winning over the bound one', async () => {
    p.script('syncVM', (ctx) => {
      ctx.state.vmid = 100;
      ctx.state.uuid = '00000000-0000-4000-8000-000000000001';
      ctx.log.info({ vmid: 100, node: ctx.state.node }, 'VM created');
      return done;
    });
    p.script('startVM', (ctx) => {
      ctx.log.info({ vmid: ctx.state.vmid, node: 'pve2' }, 'VM started');
      return done;
    });
    f.omni.controllers.holdMachineRequestStatuses({ autoRelease: true });
    const id = f.omni.controllers.createMachineRequest('workers', SPEC).metadata.id;
    controller = startController(f, p, { logger });
    await eventually(() => isProvisioned(f.omni.store, id), 'PROVISIONED');
    for (const l of text.split('\n').filter((x) => x !== '')) expect(jsonLineProblem(l), l).toBeUndefined();
    expect(logged('VM created')[0]).toMatchObject({ request: id, step: 'syncVM', node: 'pve1', vmid: 100 });
    // startVM's step logger bound node pve1 and vmid 100; the step's own value is the one written.
    expect(logged('VM started')[0]).toMatchObject({ request: id, step: 'startVM', node: 'pve2', vmid: 100 });
  });
});
