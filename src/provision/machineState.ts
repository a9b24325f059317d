// The provider's private per-request state (Omni resource `Machine.<providerId>.infraprovider.sidero.dev`): the
// generated `emuspecs.MachineSpec` without protobuf bookkeeping. Field meanings and numbers live in
// proto/proxmox/specs/specs.proto (the Go provider's numbers, so a running deployment can be taken over).
import { create } from '@bufbuild/protobuf';
import { MachineSpecSchema, type MachineSpec } from '../gen/proxmox/specs/specs_pb.js';

export type MachineState = Omit<MachineSpec, '$typeName' | '$unknown'>;

/** Private state as stored in Omni → the plain object steps work on (unknown fields dropped). */
export function machineStateFromSpec(spec: MachineSpec): MachineState {
  const { $typeName: _typeName, $unknown: _unknown, ...state } = spec;
  return state;
}

/** Plain state → the message stored in Omni. */
export function machineSpecFromState(state: MachineState): MachineSpec {
  return create(MachineSpecSchema, state);
}

export function emptyMachineState(): MachineState {
  return machineStateFromSpec(create(MachineSpecSchema));
}
