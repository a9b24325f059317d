// Typed errors of the pure provisioning core (provider data, VM planning, placement), each with
// an operator-facing message that names what was wrong and never carries a secret.

/** Invalid provider data (the YAML a MachineClass carries). `field` is the offending key path. */
export class ProviderDataError extends Error {
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super(message);
    this.name = 'ProviderDataError';
    this.field = field;
  }
}

/** The VM plan cannot be built from the given inputs (a bad context value, or a value PVE would reject). */
export class VmPlanError extends Error {
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super(message);
    this.name = 'VmPlanError';
    this.field = field;
  }
}

/** One node as placement saw it. */
export interface PlacementCandidate {
  node: string;
  accepted: boolean;
  /** Why the node was rejected, or what placement knew about it when accepted. */
  reason: string;
}

/** No node can take the VM; the message lists every node with the reason it was rejected. */
export class PlacementError extends Error {
  readonly candidates: readonly PlacementCandidate[];
  constructor(message: string, candidates: readonly PlacementCandidate[]) {
    super(message);
    this.name = 'PlacementError';
    this.candidates = candidates;
  }
}
