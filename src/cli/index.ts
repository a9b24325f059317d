// Sub-command dispatch for the omni-infra-provider-proxmox binary.
import { UsageError } from './usage.js';

export type Command = (argv: string[]) => Promise<number>;

/**
 * Sub-commands by their words. Each module's default export is the command. Loaded lazily so the
 * daemon's start-up does not pay for the tools.
 */
const commands: Record<string, () => Promise<Command>> = {
  'sim proxmox': async () => (await import('./sim-proxmox.js')).default,
  plan: async () => (await import('./plan.js')).default,
  'storage explain': async () => (await import('./storage-explain.js')).default,
  'config print': async () => (await import('../config/printCommand.js')).default,
  doctor: async () => (await import('./doctor.js')).default,
  'seeds orphaned': async () => (await import('./seeds-orphaned.js')).default,
  status: async () => (await import('./status.js')).default,
  logs: async () => (await import('./logs.js')).default,
};

export async function runCli(argv: string[]): Promise<number> {
  // Longest match first: "storage explain" before "storage".
  const names = Object.keys(commands).sort((a, b) => b.split(' ').length - a.split(' ').length);
  for (const name of names) {
    const words = name.split(' ');
    if (words.every((w, i) => argv[i] === w)) {
      try {
        const cmd = await commands[name]!();
        return await cmd(argv.slice(words.length));
      } catch (err) {
        return reportError(err);
      }
    }
  }
  if (argv[0] && !argv[0].startsWith('-')) {
    process.stderr.write(`error: unknown command "${argv[0]}"; commands: ${Object.keys(commands).join(', ')}\n`);
    return 2;
  }
  try {
    return await (await import('./run.js')).default(argv);
  } catch (err) {
    return reportError(err);
  }
}

/** Usage and input errors exit 2 with one line on stderr; anything else exits 1. */
export function reportError(err: unknown): number {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`error: ${message.split('\n')[0]}\n`);
  return err instanceof UsageError || (err as { exitCode?: number })?.exitCode === 2 ? 2 : 1;
}
