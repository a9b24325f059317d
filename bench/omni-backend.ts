// The Omni a workload runs against, reduced to what the bench plays: mint a provider key, hold Omni's status
// finalizer, create and delete machine requests, read their stages, count RPCs. Implemented here for the in-process
// Omni; test/conformance adapts upstream's COSI server (conformance/omni-harness) to the same shape.
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../src/gen/omni/specs/infra_pb.js';
import { MachineSpecSchema, type MachineSpec } from '../src/gen/proxmox/specs/specs_pb.js';
import { silentLogger } from '../src/log.js';
import { startInProcessOmni } from '../src/sim/omni/index.js';
import { NS, TYPES } from '../src/sim/omni/resources.js';

export interface RequestStage {
  stage: string;
  error: string;
}

export interface OmniBackend {
  readonly name: string;
  /** gRPC endpoint for the provider (`http://127.0.0.1:PORT`). */
  readonly endpoint: string;
  /** The fake image factory the public factory host is mapped to. */
  readonly factoryUrl: string;
  /** How often the workload polls request stages (ms). */
  readonly pollMs: number;
  createProviderKey(providerId: string): Promise<string>;
  /** Omni's MachineRequestStatusCleanupController, releasing when a status tears down. */
  holdMachineRequestStatuses(): Promise<void>;
  createMachineRequest(setId: string, id: string, spec: { talosVersion: string; providerData: string }): Promise<void>;
  /** Stage (enum name) and error of every MachineRequestStatus, by request ID. */
  requestStages(): Promise<Map<string, RequestStage>>;
  /** The provider wrote its health status (its first heartbeat). */
  providerReported(providerId: string): Promise<boolean>;
  deleteMachineRequest(id: string, timeoutMs: number): Promise<void>;
  callCounts(): Promise<Record<string, number>>;
  /** Schematics the fake factory registered (YAML as received); empty when the backend cannot tell. */
  schematics(): Array<{ id: string; yaml: string; via: string }>;
  /**
   * Calls `listener` synchronously as each write of a provider's private state lands (the in-process Omni only), before
   * the writer gets its answer: a test can stop the writer exactly at a recorded step boundary. Returns the unsubscribe.
   */
  onPrivateStateWrite?(providerId: string, listener: (id: string, spec: MachineSpec) => void): () => void;
  close(): Promise<void>;
}

export function stageFromSpec(protoSpec: Uint8Array): RequestStage {
  const s = fromBinary(MachineRequestStatusSpecSchema, protoSpec);
  return { stage: MachineRequestStatusSpec_Stage[s.stage] ?? String(s.stage), error: s.error };
}

export async function startInProcessOmniBackend(providerId: string): Promise<OmniBackend> {
  const omni = await startInProcessOmni({ providerId, seed: 5, logger: silentLogger });
  return {
    name: 'in-process Omni',
    endpoint: omni.endpoint,
    factoryUrl: omni.factoryUrl,
    pollMs: 25,
    createProviderKey: (id) => omni.createProviderKey(id),
    holdMachineRequestStatuses: async () => omni.controllers.holdMachineRequestStatuses({ autoRelease: true }),
    createMachineRequest: async (setId, id, spec) => {
      omni.controllers.createMachineRequest(setId, spec, id);
    },
    requestStages: async () => {
      const out = new Map<string, RequestStage>();
      for (const r of omni.store.list(NS.infraProvider, TYPES.machineRequestStatus)) out.set(r.metadata.id, stageFromSpec(r.spec.protoSpec));
      return out;
    },
    providerReported: async () => omni.controllers.connected(),
    deleteMachineRequest: (id, timeoutMs) => omni.controllers.deleteMachineRequest(id, AbortSignal.timeout(timeoutMs)),
    callCounts: async () => omni.callCounts(),
    schematics: () => omni.factory.registry.all().map((x) => ({ id: x.id, yaml: x.yaml, via: x.via })),
    onPrivateStateWrite: (id, listener) => {
      const [ns, type] = [`infra-provider:${id}`, `Machine.${id}.infraprovider.sidero.dev`];
      return omni.store.onChange((event) => {
        const r = event.resource;
        if (event.type !== 'created' && event.type !== 'updated') return;
        if (!r || r.metadata.namespace !== ns || r.metadata.type !== type) return;
        listener(r.metadata.id, fromBinary(MachineSpecSchema, r.spec.protoSpec));
      });
    },
    close: () => omni.close(),
  };
}
