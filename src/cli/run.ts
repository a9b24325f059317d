// The default command: run the provider. With no Omni and no Proxmox configured it runs the embedded demo.
import * as grpc from '@grpc/grpc-js';
import { ConfigError, daemonUsage, loadConfig } from '../config/index.js';
import { CosiError } from '../cosi/state.js';
import { startDaemon, untilSignal } from '../daemon.js';
import { createLogger } from '../log.js';
import { UsageError } from './usage.js';

const DEMO_FLAGS = ['--exit-when-done', '--json'];

export default async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${daemonUsage()}\n\nDemo-only flags: --exit-when-done (run the scenario once and exit), --json (print the result as JSON)\n`);
    return 0;
  }
  const demoFlags = new Set(argv.filter((a) => DEMO_FLAGS.includes(a)));
  let cfg;
  try {
    cfg = loadConfig(argv.filter((a) => !DEMO_FLAGS.includes(a)), process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`error: the configuration cannot be used:\n${err.problems.map((p) => `  - ${p}`).join('\n')}\n`);
      return 2;
    }
    throw err;
  }
  const interrupted = untilSignal();
  if (cfg.mode === 'demo') {
    // The demo prints its own progress; the daemon's JSON logs go to stderr, quieter unless LOG_LEVEL says otherwise.
    const log = createLogger({ level: process.env.LOG_LEVEL ?? 'warn', destination: process.stderr });
    for (const w of cfg.warnings) log.warn(w);
    // Loaded only for the demo: the simulated Proxmox and in-process Omni are not part of the daemon's memory.
    const { runDemo } = await import('../demo/demo.js');
    return runDemo({ exitWhenDone: demoFlags.has('--exit-when-done'), json: demoFlags.has('--json'), log, interrupted });
  }
  if (demoFlags.size > 0) throw new UsageError(`${[...demoFlags].join(', ')} only apply to the demo (no Omni/Proxmox configured)`);
  const log = createLogger({ level: cfg.provider.logLevel });
  for (const w of cfg.warnings) log.warn(w);
  log.info({ providerId: cfg.provider.id, omni: cfg.omni.endpoint, proxmox: cfg.proxmox.url }, 'starting');
  const abort = new AbortController();
  void interrupted.then(() => abort.abort());
  let daemon;
  try {
    daemon = await startDaemon(cfg, log, { signal: abort.signal });
  } catch (err) {
    const message = explainStartupError(err, cfg.provider.id);
    log.error({ err: message }, 'the provider could not start');
    process.stderr.write(`error: ${message}\n`);
    return 2;
  }
  const ended = await Promise.race([interrupted.then((signal) => ({ signal })), daemon.failed.then((err) => ({ err }))]);
  if ('err' in ended) {
    const message = explainStartupError(ended.err, cfg.provider.id);
    process.stderr.write(`error: ${message}\n`);
    await daemon.stop();
    return 2;
  }
  log.info({ signal: ended.signal }, 'stopping: no new work; waiting for in-flight steps');
  await daemon.stop();
  log.info('stopped');
  return 0;
}

/**
 * The start-up failure as an operator should read it: Omni answers every signature problem with the same bare
 * "invalid signature", so say what can cause it.
 */
export function explainStartupError(err: unknown, providerId: string): string {
  const message = err instanceof Error ? err.message : String(err);
  if (!(err instanceof CosiError)) return message;
  if (err.code === grpc.status.UNAUTHENTICATED) {
    return (
      `${message} — Omni rejected the provider's signed requests: the service account key is unknown to this Omni ` +
      `(revoked, expired, or issued by another Omni instance), or this machine's clock differs from Omni's by more ` +
      `than 5 minutes (check NTP). A new key: omnictl infraprovider create ${providerId}`
    );
  }
  if (err.code === grpc.status.PERMISSION_DENIED && /not registered/.test(err.details)) {
    return `${message} — register it in Omni with: omnictl infraprovider create ${providerId} (and use that key)`;
  }
  return message;
}
