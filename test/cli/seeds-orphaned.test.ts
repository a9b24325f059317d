// `seeds orphaned` as an operator runs it (docs/operations.md, rolling back to the Go provider): read-only by
// default, JSON with --json, usage errors exit 2 with one line naming the flag.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { daemonCommand } from '../helpers/daemon-command.js';

const root = new URL('../..', import.meta.url).pathname;
const fixture = join(root, 'test/fixtures/pve-3node.json');

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cmd = daemonCommand(args);
    execFile(cmd.command, cmd.args, { cwd: cmd.cwd, env: { ...process.env, ...cmd.env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('seeds orphaned', () => {
  it('lists (read-only) and, with --delete, reports what it removed, as JSON', async () => {
    const list = await run(['seeds', 'orphaned', '--sim-fixture', fixture, '--json']);
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual({ orphaned: [], used: [] });
    const del = await run(['seeds', 'orphaned', '--sim-fixture', fixture, '--delete', '--json']);
    expect(del.code).toBe(0);
    expect(JSON.parse(del.stdout)).toEqual({ deleted: [], kept: [] });
  });

  it('refuses a bad --min-age-seconds and a missing target with exit 2 and one line', async () => {
    const bad = await run(['seeds', 'orphaned', '--sim-fixture', fixture, '--delete', '--min-age-seconds', '1h']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: --min-age-seconds: "1h" is not a whole number of seconds\n$/);
    const none = await run(['seeds', 'orphaned']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--config-file FILE .* --sim-fixture FILE/);
  });
});
