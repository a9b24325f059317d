// Structured JSON logging (pino) with the redaction every module relies on: secrets never reach a log line, and
// every line is one JSON object with unique keys.
import { pino, type Logger } from 'pino';

export type { Logger };

/** Keys whose values are always replaced by "[redacted]", wherever they appear (up to two levels deep). */
export const SECRET_KEYS = [
  'password',
  'tokenSecret',
  'secret',
  'ticket',
  'CSRFPreventionToken',
  'authorization',
  'Authorization',
  'cookie',
  'Cookie',
  'serviceAccountKey',
  'key',
  'joinToken',
  'join_token',
  'joinConfig',
  'userData',
] as const;

const redactPaths = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]);

/** Keys pino itself writes on every line (level, time, the `service` base binding, the message). */
export const LINE_KEYS: ReadonlySet<string> = new Set(['level', 'time', 'service', 'msg']);

export interface LogOptions {
  level?: string;
  /** Where to write; defaults to stdout. */
  destination?: NodeJS.WritableStream;
}

// Why not pino's own child bindings: pino serialises each child's bindings once, appends them to its parent's, and
// writes the log call's fields after them, so a key bound twice (a child of a child, or a bound key passed again to
// a log call) appears twice on the line. Loggers made here keep their bindings as a plain object instead (the
// "context"), and a mixin merges context and call fields into one object per line: a child's binding replaces its
// parent's, a call's field replaces a binding, and an undefined value never hides a defined one.
const CONTEXT = Symbol('log context');

type Context = Readonly<Record<string, unknown>>;
type ContextLogger = Logger & { [CONTEXT]?: Context };

const EMPTY: Context = Object.freeze({});

/** Line keys a log call may carry itself: `msg` is the message when no message string is given. */
const CALL_LINE_KEYS: ReadonlySet<string> = new Set([...LINE_KEYS].filter((k) => k !== 'msg'));

/** `base` with `over`'s defined values on top; keys pino writes itself are renamed (`level` → `level_`). */
function mergeFields(base: Context, over: object, reserved: ReadonlySet<string> = LINE_KEYS): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[reserved.has(k) ? `${k}_` : k] = v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

function contextOf(logger: Logger): Context {
  return (logger as ContextLogger)[CONTEXT] ?? EMPTY;
}

function buildLogger(options: pino.LoggerOptions, destination?: NodeJS.WritableStream): Logger {
  const full: pino.LoggerOptions = {
    ...options,
    mixin: (_obj, _level, logger) => contextOf(logger),
    // pino calls this with the call's fields and the mixin's result: call fields win, a fresh object each line.
    mixinMergeStrategy: (mergeObject, mixinObject) => mergeFields(mixinObject as Context, mergeObject, CALL_LINE_KEYS),
    hooks: {
      // `log.info({ msg: 'a' }, 'b')` would write msg twice: keep the message string, rename the field.
      logMethod(args, method) {
        const [first, second] = args as unknown[];
        if (typeof second === 'string' && isPlainObject(first) && Object.hasOwn(first, 'msg')) {
          const { msg, ...rest } = first;
          (args as unknown[])[0] = { ...rest, msg_: msg };
        }
        method.apply(this, args);
      },
    },
  };
  const root = destination ? pino(full, destination as pino.DestinationStream) : pino(full);
  // Untyped views of pino's own methods (their generic signatures do not survive being called through `call`).
  type Raw = { child: (b: object, o?: object) => object; bindings: () => Record<string, unknown> };
  const pinoChild = (root as unknown as Raw).child;
  const pinoBindings = (root as unknown as Raw).bindings;
  const target = root as unknown as Raw & { setBindings: (b: object) => void; [CONTEXT]?: Context };
  // Children are created with Object.create(parent), so these overrides reach every descendant.
  target.child = function child(this: object, bindings: object, opts?: object): object {
    const c = pinoChild.call(this, {}, opts) as { [CONTEXT]?: Context };
    c[CONTEXT] = Object.freeze(mergeFields(contextOf(this as Logger), bindings ?? {}));
    return c;
  };
  target.bindings = function bindings(this: object) {
    return { ...pinoBindings.call(this), ...contextOf(this as Logger) };
  };
  target.setBindings = function setBindings(this: { [CONTEXT]?: Context }, bindings: object) {
    this[CONTEXT] = Object.freeze(mergeFields(contextOf(this as Logger), bindings));
  };
  return root;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  return buildLogger(
    {
      level,
      base: { service: 'omni-infra-provider-proxmox' },
      redact: { paths: redactPaths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string) => ({ level: label }) },
    },
    opts.destination,
  );
}

/** A logger that drops everything; for tests and pure code paths that accept an optional logger. */
export const silentLogger: Logger = buildLogger({ level: 'silent' });
