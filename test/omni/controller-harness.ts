// Controller test harness: a scripted Provisioner (test double for the Proxmox steps) and helpers to read what
// the in-process Omni stores.
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestStatusSpecSchema, MachineRequestStatusSpec_Stage } from '../../src/gen/omni/specs/infra_pb.js';
import { MachineSpecSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import { ProvisionController, type ProvisionControllerOptions } from '../../src/provision/controller.js';
import type { MachineState } from '../../src/provision/machineState.js';
import { STEP_NAMES, done, type DeprovisionContext, type Provisioner, type Step, type StepContext, type StepName, type StepResult } from '../../src/provision/step.js';
import { encodeSpec } from '../../src/sim/omni/controllers.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import type { CosiStore, Resource } from '../../src/sim/omni/store.js';
import { Changes } from '../helpers/wait.js';
import type { OmniFixture } from './omni-fixture.js';

export const CTRL = 'proxmox.ProvisionController';
export const PRIVATE_NS = 'infra-provider:proxmox';
export const PRIVATE_TYPE = 'Machine.proxmox.infraprovider.sidero.dev';

export type StepBehaviour = (ctx: StepContext) => StepResult | Promise<StepResult>;

/** What each step does to the state when it succeeds (stands in for the Proxmox work). */
const DEFAULT_EFFECTS: Record<StepName, (s: MachineState, requestId: string) => void> = {
  pickNode: (s) => {
    s.node = 'pve1';
  },
  createSchematic: (s) => {
    s.schematic = 'f'.repeat(64);
  },
  uploadISO: (s) => {
    s.volumeId = `local:iso/${'e'.repeat(64)}.iso`;
  },
  syncVM: (s, id) => {
    if (s.uuid === '') s.uuid = `00000000-0000-4000-8000-${id.replace(/[^0-9a-f]/g, '0').padEnd(12, '0').slice(0, 12)}`;
    s.vmid = 100;
  },
  startVM: (s) => {
    s.vmStartTask = 'UPID:pve1:0001:start';
  },
  // Requests without `ha`: the HA steps change nothing.
  registerHA: () => {},
  syncHARules: () => {},
};

export interface StepCall {
  request: string;
  step: StepName;
  joinConfig: string;
}

/** Provisioner test double: runs scripted behaviours per step (one per call, then the default effect). */
export class ScriptedProvisioner implements Provisioner {
  readonly steps: Step[];
  readonly calls: StepCall[] = [];
  readonly deprovisions: DeprovisionContext[] = [];
  private readonly scripts = new Map<StepName, StepBehaviour[]>();
  onStep: ((call: StepCall, ctx: StepContext) => void | Promise<void>) | undefined;
  onDeprovision: ((ctx: DeprovisionContext) => void | Promise<void>) | undefined;
  setsUuid = true;
  healthError: string | undefined;
  /** Notified when a step or a deprovision starts and when a scripted behaviour was invoked (for waits). */
  readonly changes = new Changes();

  constructor() {
    this.steps = STEP_NAMES.map((name) => ({
      name,
      run: async (ctx: StepContext) => {
        const call = { request: ctx.request.id, step: name, joinConfig: ctx.joinConfig };
        this.calls.push(call);
        this.changes.notify();
        await this.onStep?.(call, ctx);
        const scripted = this.scripts.get(name)?.shift();
        if (scripted) {
          const result = scripted(ctx);
          this.changes.notify();
          return result;
        }
        if (name !== 'syncVM' || this.setsUuid) DEFAULT_EFFECTS[name](ctx.state, ctx.request.id);
        else ctx.state.vmid = 100;
        return done;
      },
    }));
  }

  /** Queue behaviours for the next runs of `step`. */
  script(step: StepName, ...behaviours: StepBehaviour[]): void {
    this.scripts.set(step, [...(this.scripts.get(step) ?? []), ...behaviours]);
  }

  stepsRun(request: string): StepName[] {
    return this.calls.filter((c) => c.request === request).map((c) => c.step);
  }

  async deprovision(ctx: DeprovisionContext): Promise<void> {
    this.deprovisions.push(ctx);
    this.changes.notify();
    await this.onDeprovision?.(ctx);
  }

  async healthCheck(): Promise<void> {
    if (this.healthError !== undefined) throw new Error(this.healthError);
  }
}

export function startController(f: OmniFixture, provisioner: Provisioner, opts: Partial<ProvisionControllerOptions> = {}): ProvisionController {
  const controller = new ProvisionController({
    state: f.client.state,
    providerId: 'proxmox',
    provisioner,
    joinMode: 'v2',
    failedRetryMs: 60_000,
    backoff: { initialMs: 10, maxMs: 100, jitter: 0 },
    watchRestartMs: 20,
    shutdownTimeoutMs: 2000,
    ...opts,
  });
  controller.start();
  return controller;
}

export function mrs(store: CosiStore, id: string) {
  const res = store.find(NS.infraProvider, TYPES.machineRequestStatus, id);
  return res ? { res, spec: fromBinary(MachineRequestStatusSpecSchema, res.spec.protoSpec) } : undefined;
}

export function privateState(store: CosiStore, id: string) {
  const res = store.find(PRIVATE_NS, PRIVATE_TYPE, id);
  return res ? { res, spec: fromBinary(MachineSpecSchema, res.spec.protoSpec) } : undefined;
}

export function isProvisioned(store: CosiStore, id: string): boolean {
  return mrs(store, id)?.spec.stage === MachineRequestStatusSpec_Stage.PROVISIONED;
}

/** Stores private state as a previous run (or the Go provider) left it. */
export function seedPrivateState(store: CosiStore, id: string, state: Partial<MachineState>, annotations: Record<string, string> = {}): Resource {
  return store.create(
    { metadata: { namespace: PRIVATE_NS, type: PRIVATE_TYPE, id, annotations }, spec: encodeSpec(MachineSpecSchema, state) },
    { owner: CTRL },
  );
}
