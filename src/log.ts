// Structured JSON logging (pino) with the redaction every module relies on: secrets never reach a log line.
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

export interface LogOptions {
  level?: string;
  /** Where to write; defaults to stdout. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info';
  const options = {
    level,
    base: { service: 'omni-infra-provider-proxmox' },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return opts.destination ? pino(options, opts.destination as pino.DestinationStream) : pino(options);
}

/** A logger that drops everything; for tests and pure code paths that accept an optional logger. */
export const silentLogger: Logger = pino({ level: 'silent' });
