// Error model of the Proxmox VE API client: HTTP errors with the status-line message, network failures, task failures.
// Messages carry method, path and Proxmox's own text; never a token secret, password, ticket or CSRF token.
import { STATUS_CODES } from 'node:http';

export interface PveErrorInit {
  method: string;
  path: string;
  status: number;
  /** The HTTP reason phrase exactly as received (may be empty). */
  reasonPhrase: string;
  /** The `message` field of the JSON body (PVE ≥ pve-http-server 5.2), if any. */
  bodyMessage?: string | undefined;
  /** The `errors` map of a 400 parameter-verification failure. */
  errors?: Record<string, string> | undefined;
}

/** An HTTP error answer from Proxmox (any non-2xx status, including 595/596 from the proxy layer). */
export class PveError extends Error {
  override readonly name = 'PveError';
  readonly status: number;
  /**
   * Proxmox's message: the HTTP reason phrase, which is where PVE puts the real error text; when the reason phrase
   * is empty or only the generic text for the status, the JSON body's `message` instead.
   */
  readonly statusText: string;
  readonly errors: Record<string, string> | undefined;
  readonly method: string;
  readonly path: string;

  constructor(init: PveErrorInit) {
    const statusText = chooseMessage(init.status, init.reasonPhrase, init.bodyMessage);
    const errors = init.errors && Object.keys(init.errors).length > 0 ? init.errors : undefined;
    super(formatMessage(init.method, init.path, init.status, statusText, errors));
    this.status = init.status;
    this.statusText = statusText;
    this.errors = errors;
    this.method = init.method;
    this.path = init.path;
  }
}

function chooseMessage(status: number, reasonPhrase: string, bodyMessage: string | undefined): string {
  const reason = reasonPhrase.trim();
  const body = oneLine(bodyMessage ?? '');
  const generic = STATUS_CODES[status];
  if (reason !== '' && (reason !== generic || body === '')) return reason;
  if (body !== '') return body;
  return reason !== '' ? reason : (generic ?? `HTTP ${status}`);
}

function oneLine(s: string): string {
  return s.trim().replace(/\s*\n\s*/g, ' ');
}

function formatMessage(
  method: string,
  path: string,
  status: number,
  statusText: string,
  errors: Record<string, string> | undefined,
): string {
  let msg = `${method} ${path}: ${status} ${statusText}`;
  if (errors) {
    const parts = Object.entries(errors).map(([k, v]) => `${k}: ${oneLine(v)}`);
    msg += ` (${parts.join('; ')})`;
  }
  return msg;
}

export interface PveConnectionErrorInit {
  method: string;
  path: string;
  /** True when the request may have reached Proxmox and only the answer was lost. */
  mayHaveExecuted: boolean;
  /** A short machine-readable code, e.g. ECONNREFUSED, UND_ERR_SOCKET, UND_ERR_HEADERS_TIMEOUT, PVE_TLS_PIN. */
  code: string;
  cause?: unknown;
  detail: string;
}

/** The request did not produce an HTTP answer: refused, reset, timed out, TLS rejected. */
export class PveConnectionError extends Error {
  override readonly name = 'PveConnectionError';
  readonly method: string;
  readonly path: string;
  readonly code: string;
  /**
   * False when the request certainly did not reach Proxmox (connect failed, TLS rejected); true when it may have been
   * sent and executed, with only the response lost. A non-idempotent call in that state must be reconciled, not retried.
   */
  readonly mayHaveExecuted: boolean;

  constructor(init: PveConnectionErrorInit) {
    super(`${init.method} ${init.path}: ${init.detail}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.method = init.method;
    this.path = init.path;
    this.code = init.code;
    this.mayHaveExecuted = init.mayHaveExecuted;
  }
}

/** An answer did not have the shape the client needs (not a `{data}` envelope, a list that is not a list, no UPID). */
export class PveResponseShapeError extends Error {
  override readonly name = 'PveResponseShapeError';
}

/** The client was configured wrongly (bad URL, malformed token id, unusable CA file); raised before any request. */
export class PveConfigError extends Error {
  override readonly name = 'PveConfigError';
}

export interface PveTaskErrorInit {
  upid: string;
  type: string;
  node: string;
  exitstatus: string;
  logTail: string[];
  vanished?: boolean;
}

/** A Proxmox task finished with an error exit status, or vanished (400 `no such task`). */
export class PveTaskError extends Error {
  override readonly name = 'PveTaskError';
  readonly upid: string;
  readonly type: string;
  readonly node: string;
  readonly exitstatus: string;
  /** The last lines of the task log (up to about 20), oldest first. */
  readonly logTail: string[];
  /** The task is unknown to its node: the outcome is unknown and must be reconciled from the resource's state. */
  readonly vanished: boolean;

  constructor(init: PveTaskErrorInit) {
    const vanished = init.vanished ?? false;
    super(
      vanished
        ? `task ${init.type} on node ${init.node} vanished (no such task); outcome unknown`
        : `task ${init.type} on node ${init.node} failed: ${init.exitstatus}`,
    );
    this.upid = init.upid;
    this.type = init.type;
    this.node = init.node;
    this.exitstatus = init.exitstatus;
    this.logTail = init.logTail;
    this.vanished = vanished;
  }
}

/** A task was still running (or its node unreachable) when the wait deadline passed. */
export class PveTaskTimeoutError extends Error {
  override readonly name = 'PveTaskTimeoutError';
  readonly upid: string;
  readonly type: string;
  readonly node: string;
  readonly deadlineMs: number;
  /** The last status seen: `running`, or `unknown` when the node could not be reached. */
  readonly lastStatus: string;

  constructor(init: { upid: string; type: string; node: string; deadlineMs: number; lastStatus: string }) {
    super(
      `task ${init.type} on node ${init.node} did not finish within ${Math.round(init.deadlineMs / 1000)} s ` +
        `(last status: ${init.lastStatus})`,
    );
    this.upid = init.upid;
    this.type = init.type;
    this.node = init.node;
    this.deadlineMs = init.deadlineMs;
    this.lastStatus = init.lastStatus;
  }
}

/** A `does not exist` error: missing VM config, storage, volume. */
export function isNotFound(err: unknown): boolean {
  return err instanceof PveError && (err.status === 500 || err.status === 404) && /does not exist/i.test(err.statusText);
}

/** The node in the path could not be reached by the entry node's proxy (AnyEvent::HTTP pseudo-statuses). */
export function isNodeUnreachable(err: unknown): boolean {
  return err instanceof PveError && [595, 596, 597, 599].includes(err.status);
}

/** Authentication failed (bad or expired token or ticket, bad CSRF token, failed login). */
export function isAuthError(err: unknown): boolean {
  return err instanceof PveError && err.status === 401;
}

/** The caller is authenticated but lacks a privilege (`Permission check failed (<path>, <priv>)`). */
export function isPermissionError(err: unknown): boolean {
  return err instanceof PveError && err.status === 403;
}

/** 400 `no such task` from the task endpoints: the task is gone, or was asked of the wrong node. */
export function isNoSuchTask(err: unknown): boolean {
  if (!(err instanceof PveError) || err.status !== 400) return false;
  if (/no such task/i.test(err.statusText)) return true;
  return Object.values(err.errors ?? {}).some((v) => /no such task/i.test(v));
}
