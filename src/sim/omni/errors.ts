// Errors raised by the in-process Omni, each carrying the gRPC status code the real server would answer with.

/** gRPC status codes (the numeric values are fixed by the gRPC specification). */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

/**
 * What went wrong, in COSI/Omni terms. Several kinds share one gRPC code (a version conflict and pending
 * finalizers are both FAILED_PRECONDITION), so tests can tell them apart by kind.
 */
export type OmniErrorKind =
  | 'notFound'
  | 'alreadyExists'
  | 'ownerConflict'
  | 'versionConflict'
  | 'phaseConflict'
  | 'pendingFinalizers'
  | 'invalidBookmark'
  | 'invalidArgument'
  | 'permissionDenied'
  | 'unauthenticated'
  | 'unimplemented'
  | 'unavailable'
  | 'cancelled'
  | 'malformed'
  | 'internal';

const codeOfKind: Record<OmniErrorKind, GrpcCode> = {
  notFound: GrpcCode.NOT_FOUND,
  alreadyExists: GrpcCode.ALREADY_EXISTS,
  ownerConflict: GrpcCode.PERMISSION_DENIED,
  versionConflict: GrpcCode.FAILED_PRECONDITION,
  phaseConflict: GrpcCode.INVALID_ARGUMENT,
  pendingFinalizers: GrpcCode.FAILED_PRECONDITION,
  invalidBookmark: GrpcCode.FAILED_PRECONDITION,
  invalidArgument: GrpcCode.INVALID_ARGUMENT,
  permissionDenied: GrpcCode.PERMISSION_DENIED,
  unauthenticated: GrpcCode.UNAUTHENTICATED,
  unimplemented: GrpcCode.UNIMPLEMENTED,
  unavailable: GrpcCode.UNAVAILABLE,
  cancelled: GrpcCode.CANCELLED,
  /** A request the Go server rejects with a plain error (status UNKNOWN): bad version/phase text, missing spec. */
  malformed: GrpcCode.UNKNOWN,
  internal: GrpcCode.INTERNAL,
};

/** An error the in-process Omni answers a call with; `code` is the gRPC status, `message` the status text. */
export class OmniError extends Error {
  readonly kind: OmniErrorKind;
  readonly code: GrpcCode;

  constructor(kind: OmniErrorKind, message: string, code: GrpcCode = codeOfKind[kind]) {
    super(message);
    this.name = 'OmniError';
    this.kind = kind;
    this.code = code;
  }
}

export function isOmniError(err: unknown, kind?: OmniErrorKind): err is OmniError {
  return err instanceof OmniError && (kind === undefined || err.kind === kind);
}
