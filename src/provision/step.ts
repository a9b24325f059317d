// The contract between the provisioning controller and the provider's steps: what a step gets, what it may
// answer, and how failures are classified. Step names are persisted by Omni: never rename them.
import type { Logger } from '../log.js';
import type { MachineState } from './machineState.js';
import type { ProviderData } from './providerData.js';

/**
 * Step names in order. Stored in the private state's `infra.omni.sidero.dev/step` annotation (Go-compatible; the Go
 * provider appended registerHA and syncHARules in v0.2, which do nothing for a request without `ha`).
 */
export const STEP_NAMES = ['pickNode', 'createSchematic', 'uploadISO', 'syncVM', 'startVM', 'registerHA', 'syncHARules'] as const;
export type StepName = (typeof STEP_NAMES)[number];

/** What the steps need to know about one MachineRequest. */
export interface ProvisionRequest {
  /** MachineRequest ID; also the VM name. */
  id: string;
  /** `omni.sidero.dev/machine-request-set` label, when the request belongs to a set. */
  machineRequestSetId?: string | undefined;
  talosVersion: string;
  providerData: ProviderData;
  /** Extra Talos system extensions and kernel args the request asks for (MachineRequest spec). */
  extensions?: readonly string[];
  kernelArgs?: readonly string[];
  metaValues?: ReadonlyArray<{ key: number; value: string }>;
}

/** The Talos boot image for a request: where Proxmox downloads it from. */
export interface BootImage {
  /** URL Proxmox downloads (may carry credentials: never log it). */
  url: string;
  /**
   * Name of the ISO on Proxmox storage without `.iso`: sha256 hex of the factory URL, so caches written by the Go
   * provider are reused.
   */
  cacheKey: string;
}

/** The Omni side of image handling (schematics, boot asset URLs). */
export interface ImageService {
  /** Registers the request's schematic (qemu-guest-agent + request extensions/kernel args/meta); returns its ID. */
  createSchematic(request: ProvisionRequest): Promise<string>;
  /** The nocloud ISO URL for a schematic and Talos version. */
  bootImage(schematicId: string, talosVersion: string, arch: 'amd64' | 'arm64'): Promise<BootImage>;
}

export interface StepContext {
  request: ProvisionRequest;
  /** The private state; steps mutate it and the controller persists it after each step. */
  state: MachineState;
  /** Talos join config delivered as NoCloud user-data (secret: never log it). */
  joinConfig: string;
  log: Logger;
  /** Aborted when the controller stops, or when the request starts tearing down while the step runs. */
  signal?: AbortSignal | undefined;
  /**
   * Writes the private state as `state` holds it now (the step annotation is not changed) and resolves once Omni
   * stored it. Steps call it before and right after a Proxmox write whose outcome must survive a failure of the
   * step or a crash (write-ahead intent): what is checkpointed stays recorded even if the step then fails.
   * Rejects when the write failed; a step must then not make the Proxmox write it was about to record.
   */
  checkpoint(): Promise<void>;
  /**
   * Asks Omni to apply a machine-config patch to this request's machine (a ConfigPatchRequest `name`, labelled with
   * the provider and the request, removed at teardown). Resolves once Omni stored it; unchanged data writes nothing.
   * Absent where no Omni is attached (tests of the steps alone).
   */
  createConfigPatch?(name: string, data: string): Promise<void>;
}

export type StepResult =
  | { kind: 'done' }
  /** Not finished: persist the state, come back to this same step after `afterMs`. */
  | { kind: 'retry'; afterMs: number; message?: string | undefined };

export const done: StepResult = { kind: 'done' };

export function retryAfter(afterMs: number, message?: string): StepResult {
  return { kind: 'retry', afterMs, message };
}

/**
 * A failure the operator must see (MachineRequestStatus stage FAILED, retried later). The message is written for the
 * operator: what is wrong and what to do. `transient` failures are retried sooner and do not mark the request FAILED.
 */
export class StepFailure extends Error {
  override readonly name = 'StepFailure';
  readonly transient: boolean;
  /** Retrying cannot help (the request itself is invalid): stage FAILED and no retry until the request changes. */
  readonly permanent: boolean;
  constructor(message: string, opts: { transient?: boolean; permanent?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.transient = opts.transient ?? false;
    this.permanent = !this.transient && (opts.permanent ?? false);
  }
}

export interface Step {
  name: StepName;
  run(ctx: StepContext): Promise<StepResult>;
}

export interface DeprovisionContext {
  requestId: string;
  state: MachineState;
  log: Logger;
  signal?: AbortSignal | undefined;
}

/** Everything the controller needs from the infrastructure side. */
export interface Provisioner {
  readonly steps: readonly Step[];
  /** Removes exactly what provisioning created; a VM already gone is success. Idempotent. */
  deprovision(ctx: DeprovisionContext): Promise<void>;
  /** Throws with an operator-readable message when the infrastructure cannot be used (shown in Omni's UI). */
  healthCheck(): Promise<void>;
  /** A short note the machine request status shows after the step text (the static addresses); '' for none. */
  statusNote?(state: MachineState): string;
}
