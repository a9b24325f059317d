// Error values the simulated API raises, each carrying the HTTP status and Proxmox's wording.

/** How the error travels: as an API envelope, an auth-layer 401 (text only in the status line), or a proxy failure (empty body). */
export type ErrorKind = 'api' | 'auth' | 'proxy';

export class PveApiError extends Error {
  override readonly name = 'PveApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly errors?: Record<string, string>,
    readonly kind: ErrorKind = 'api',
  ) {
    super(message);
  }
}

/** 400 `Parameter verification failed.` with one entry per parameter. */
export function paramError(errors: Record<string, string>): PveApiError {
  return new PveApiError(400, 'Parameter verification failed.', errors);
}

/** A handler's `die`: HTTP 500 whose reason phrase is the first line of the message. */
export function serverError(message: string): PveApiError {
  return new PveApiError(500, message);
}

export function permissionError(path: string, privs: string): PveApiError {
  return new PveApiError(403, `Permission check failed (${path}, ${privs})`);
}

export function authError(message: string): PveApiError {
  return new PveApiError(401, message, undefined, 'auth');
}

export function proxyError(status: number, reason: string): PveApiError {
  return new PveApiError(status, reason, undefined, 'proxy');
}
