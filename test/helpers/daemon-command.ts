// Which daemon the end-to-end tests and the bench run as a child process.
//
// - `TEST_DAEMON_LAYOUT=<dir>`: the compiled daemon of a production layout assembled by scripts/assemble-prod.sh (the
//   image's /app): `node <dir>/dist/main.js` with NODE_ENV=production, cwd <dir>. `npm test` and `.ci/run` set it,
//   so the suite tests what ships.
// - unset or `tsx` (e.g. `npx vitest run test/e2e/...` while developing): the TypeScript sources through tsx.
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';

export const REPO_ROOT = new URL('../..', import.meta.url).pathname;

export interface DaemonCommand {
  /** 'compiled' (a production layout) or 'tsx' (the sources, for development). */
  kind: 'compiled' | 'tsx';
  command: string;
  args: string[];
  cwd: string;
  /** Added to the child's environment. */
  env: Record<string, string>;
}

export function daemonLayout(): string | undefined {
  const dir = process.env.TEST_DAEMON_LAYOUT;
  if (dir === undefined || dir === '' || dir === 'tsx') return undefined;
  const abs = resolve(REPO_ROOT, dir);
  if (!existsSync(join(abs, 'dist', 'main.js'))) {
    throw new Error(`TEST_DAEMON_LAYOUT=${dir}: no dist/main.js there; assemble it with 'sh scripts/assemble-prod.sh ${dir}'`);
  }
  return abs;
}

/**
 * The environment the image sets (the Dockerfile's runtime `ENV` lines; test/ops/packaging.test.ts keeps the two
 * equal). NODE_OPTIONS: a 1 MiB young-generation semi-space instead of V8's default of up to 16 MiB: the daemon's
 * allocations are small and short-lived, so it costs no measurable CPU and lowers peak RSS by ~25 MiB
 * (docs/performance.md, Memory).
 */
export const IMAGE_ENV = { NODE_ENV: 'production', NODE_OPTIONS: '--max-semi-space-size=1' } as const;

/** The command line that runs the daemon (or one of its subcommands) with `args`. */
export function daemonCommand(args: string[] = []): DaemonCommand {
  const layout = daemonLayout();
  if (layout !== undefined) {
    return { kind: 'compiled', command: process.execPath, args: [join(layout, 'dist', 'main.js'), ...args], cwd: layout, env: { ...IMAGE_ENV } };
  }
  return { kind: 'tsx', command: process.execPath, args: ['--import', 'tsx', join(REPO_ROOT, 'src', 'main.ts'), ...args], cwd: REPO_ROOT, env: {} };
}
