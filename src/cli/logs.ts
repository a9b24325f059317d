// `omni-infra-provider-proxmox logs`: the daemon's JSON log lines (stdin or a file), printed for people: time, level,
// message, the request/step/node/vmid context, other fields, the error. Filters by request, level and time. Lines that
// are not a log object (a crash's stack trace, compose's own messages) are passed through unchanged.
//
//   docker compose logs provider | omni-infra-provider-proxmox logs --level warn
//   docker compose logs --no-log-prefix -t provider | omni-infra-provider-proxmox logs --request workers-abc123
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { parseFlags, UsageError } from './usage.js';

export const LOGS_USAGE = `usage: omni-infra-provider-proxmox logs [--request ID] [--level LEVEL] [--since WHEN] [FILE]

Reads the daemon's JSON log lines from FILE or stdin (\`docker compose logs provider | … logs\`; compose's
"name  | " prefix and a timestamp from -t are understood) and prints one readable line each:
  <UTC time> <LEVEL> <message>  request=… step=… node=… vmid=… <other fields>  error: …
Lines that are not JSON log objects are printed unchanged.

  --request ID   only lines of this machine request
  --level L      only lines at or above L: trace, debug, info, warn, error, fatal
  --since WHEN   only lines from WHEN on: a duration back from now (90s, 30m, 2h, 1d) or a time (2026-11-30T02:00:00Z)`;

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
type Level = (typeof LEVELS)[number];
/** pino's numeric levels. */
const LEVEL_NUMBERS: Record<number, Level> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
/** Context fields, printed first and in this order. */
const CONTEXT_KEYS = ['request', 'step', 'node', 'vmid', 'task'] as const;
/** Fields every line has, or that the readable form shows elsewhere. */
const HIDDEN_KEYS = new Set(['level', 'time', 'msg', 'service', 'pid', 'hostname', 'err', 'error', ...CONTEXT_KEYS]);

export interface LogsFilter {
  request?: string;
  minLevel?: Level;
  /** Milliseconds since the epoch. */
  since?: number;
}

export interface LogsIo {
  stdin?: Readable;
  stdout?: (text: string) => void;
  now?: () => number;
}

export async function logs(argv: string[], io: LogsIo = {}): Promise<number> {
  const out = io.stdout ?? ((t: string) => void process.stdout.write(t));
  const { flags, positional } = parseFlags(argv, { strings: ['request', 'level', 'since'], booleans: ['help'] });
  if (flags.has('help')) {
    out(`${LOGS_USAGE}\n`);
    return 0;
  }
  if (positional.length > 1) throw new UsageError(`unexpected argument "${positional[1]}"; ${LOGS_USAGE.split('\n')[0]}`);
  const filter = parseFilter(flags, (io.now ?? Date.now)());
  const input = positional[0] !== undefined ? await openFile(positional[0]) : (io.stdin ?? process.stdin);
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) {
    const text = formatLogLine(line, filter);
    if (text !== undefined) out(`${text}\n`);
  }
  return 0;
}

export default (argv: string[]): Promise<number> => logs(argv);

async function openFile(path: string): Promise<Readable> {
  try {
    return (await open(path, 'r')).createReadStream();
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export function parseFilter(flags: Map<string, string | true>, now: number): LogsFilter {
  const f: LogsFilter = {};
  const request = flags.get('request');
  if (typeof request === 'string') {
    if (request.trim() === '') throw new UsageError('--request: give a machine request ID');
    f.request = request.trim();
  }
  const level = flags.get('level');
  if (typeof level === 'string') {
    const l = level.toLowerCase();
    if (!(LEVELS as readonly string[]).includes(l)) throw new UsageError(`--level: "${level}" is not one of ${LEVELS.join(', ')}`);
    f.minLevel = l as Level;
  }
  const since = flags.get('since');
  if (typeof since === 'string') {
    const m = /^(\d+)(s|m|h|d)$/.exec(since.trim());
    if (m) f.since = now - Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
    else {
      const t = Date.parse(since);
      if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(since)) {
        throw new UsageError(`--since: "${since}" is neither a duration (90s, 30m, 2h, 1d) nor a time (2026-11-30T02:00:00Z)`);
      }
      f.since = t;
    }
  }
  return f;
}

/** Splits off compose's `name  | ` prefix and a `-t` timestamp; returns the JSON object when the rest is one. */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  let rest = line.trimEnd();
  const prefixed = /^[A-Za-z0-9][\w.-]*\s+\|\s?(.*)$/.exec(rest);
  if (prefixed && !rest.startsWith('{')) rest = prefixed[1]!;
  const stamped = /^\d{4}-\d{2}-\d{2}T\S+\s+(\{.*)$/.exec(rest);
  if (stamped) rest = stamped[1]!;
  if (!rest.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(rest) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
    const o = v as Record<string, unknown>;
    return typeof o.msg === 'string' || 'level' in o ? o : undefined;
  } catch {
    return undefined;
  }
}

function levelOf(v: unknown): Level | undefined {
  if (typeof v === 'number') return LEVEL_NUMBERS[v];
  if (typeof v === 'string' && (LEVELS as readonly string[]).includes(v.toLowerCase())) return v.toLowerCase() as Level;
  return undefined;
}

function timeOf(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** The readable form of one input line, or undefined when the filter drops it. Non-log lines pass unchanged. */
export function formatLogLine(line: string, filter: LogsFilter = {}): string | undefined {
  const o = parseLogLine(line);
  if (!o) return line;
  const level = levelOf(o.level);
  const time = timeOf(o.time);
  if (filter.request !== undefined && o.request !== filter.request) return undefined;
  if (filter.minLevel !== undefined && level !== undefined && LEVELS.indexOf(level) < LEVELS.indexOf(filter.minLevel)) return undefined;
  if (filter.since !== undefined && time !== undefined && time < filter.since) return undefined;

  const parts: string[] = [];
  parts.push(time !== undefined ? new Date(time).toISOString().replace('T', ' ').replace('Z', '') : '-'.repeat(23));
  parts.push((level ?? String(o.level ?? '?')).toUpperCase().padEnd(5));
  const fields: string[] = [];
  for (const k of CONTEXT_KEYS) if (o[k] !== undefined) fields.push(`${k}=${scalar(o[k])}`);
  for (const [k, v] of Object.entries(o)) if (!HIDDEN_KEYS.has(k) && v !== undefined) fields.push(`${k}=${scalar(v)}`);
  let text = `${parts.join(' ')} ${typeof o.msg === 'string' ? o.msg : ''}`;
  if (fields.length > 0) text += `  ${fields.join(' ')}`;
  const err = errorMessage(o.err ?? o.error);
  if (err) text += `  error: ${err}`;
  return text;
}

function scalar(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** `err` is a string (our errorText) or pino's serialised Error ({type, message, stack}). */
function errorMessage(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (typeof v === 'object') {
    const e = v as { message?: unknown; type?: unknown };
    if (typeof e.message === 'string') return typeof e.type === 'string' && e.type !== 'Error' ? `${e.type}: ${e.message}` : e.message;
  }
  return JSON.stringify(v);
}
