// `logs`: the daemon's own JSON lines (written by its real logger), with and without compose's prefix and -t
// timestamps, printed readable; filtered by request, level and time; other lines passed through unchanged.
import { Readable, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { formatLogLine, logs, parseLogLine } from '../../src/cli/logs.js';
import { createLogger } from '../../src/log.js';

/** Lines exactly as the daemon writes them. */
function daemonLines(): string[] {
  const lines: string[] = [];
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _e, done) {
        lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
        done();
      },
    }),
  });
  const step = log.child({ component: 'steps', request: 'workers-abc123', step: 'syncVM' });
  step.debug({ node: 'pve1' }, 'checking for an existing VM');
  step.info({ node: 'pve1', vmid: 104 }, 'VM created');
  log.child({ request: 'workers-def456', step: 'uploadISO' }).warn({ err: 'download task failed: 404 Not Found', attempt: 2 }, 'Talos ISO download failed');
  log.error({ err: new TypeError('boom') }, 'heartbeat failed');
  return lines;
}

async function run(argv: string[], input: string, now = Date.now()): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await logs(argv, { stdin: Readable.from([input]), stdout: (t) => void (out += t), now: () => now });
  return { code, out };
}

describe('logs', () => {
  it('prints time, level, message, context, other fields and the error, one line each', () => {
    const [debug, info, warn, error] = daemonLines().map((l) => formatLogLine(l)!);
    expect(debug).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} DEBUG checking for an existing VM {2}request=workers-abc123 step=syncVM node=pve1 component=steps$/);
    expect(info).toMatch(/ INFO {2}VM created {2}request=workers-abc123 step=syncVM node=pve1 vmid=104 component=steps$/);
    expect(warn).toMatch(/ WARN {2}Talos ISO download failed {2}request=workers-def456 step=uploadISO attempt=2 {2}error: download task failed: 404 Not Found$/);
    expect(error).toMatch(/ ERROR heartbeat failed {2}error: TypeError: boom$/);
  });

  it('understands compose\'s "name  | " prefix and -t timestamps; passes other lines through unchanged', async () => {
    const [line] = daemonLines().slice(1, 2);
    const plain = formatLogLine(line!);
    expect(formatLogLine(`provider-1  | ${line}`)).toBe(plain);
    expect(formatLogLine(`provider-1  | 2026-11-30T02:00:00.123456789Z ${line}`)).toBe(plain);
    expect(formatLogLine(`2026-11-30T02:00:00.123456789Z ${line}`)).toBe(plain);
    for (const other of ['provider-1  | Error: Cannot find module x', '    at Object.<anonymous> (/app/dist/main.js:1:1)', '{not json', '["an array"]', '']) {
      expect(formatLogLine(other)).toBe(other);
      expect(parseLogLine(other)).toBeUndefined();
    }
  });

  it('filters by request, by level at or above, and by --since; non-log lines always pass', async () => {
    const lines = daemonLines();
    const input = `${lines.map((l) => `provider-1  | ${l}`).join('\n')}\nprovider-1  | node:internal crash\n`;
    const byRequest = await run(['--request', 'workers-abc123'], input);
    expect(byRequest.code).toBe(0);
    expect(byRequest.out.trim().split('\n')).toEqual([expect.stringContaining('checking for an existing VM'), expect.stringContaining('VM created'), 'provider-1  | node:internal crash']);
    const warnUp = await run(['--level', 'WARN'], input);
    expect(warnUp.out.trim().split('\n')).toEqual([expect.stringContaining('Talos ISO download failed'), expect.stringContaining('heartbeat failed'), 'provider-1  | node:internal crash']);
    const time = Date.parse(JSON.parse(lines[0]!).time as string);
    expect((await run(['--since', '30m'], input, time + 29 * 60_000)).out.trim().split('\n')).toHaveLength(5);
    expect((await run(['--since', '30m'], input, time + 31 * 60_000)).out.trim().split('\n')).toEqual(['provider-1  | node:internal crash']);
    expect((await run(['--since', new Date(time + 60_000).toISOString()], input)).out.trim().split('\n')).toHaveLength(1);
  });

  it('reads a file given as argument', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(`${tmpdir()}/logs-`);
    try {
      writeFileSync(`${dir}/provider.log`, `${daemonLines().join('\n')}\n`);
      let out = '';
      expect(await logs([`${dir}/provider.log`, '--level', 'error'], { stdout: (t) => void (out += t) })).toBe(0);
      expect(out.trim().split('\n')).toEqual([expect.stringMatching(/ ERROR heartbeat failed {2}error: TypeError: boom$/)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads pino\'s numeric levels and epoch times too', () => {
    const t = Date.parse('2026-11-30T02:03:04.005Z');
    expect(formatLogLine(JSON.stringify({ level: 50, time: t, msg: 'x', request: 'r1' }))).toBe('2026-11-30 02:03:04.005 ERROR x  request=r1');
    expect(formatLogLine(JSON.stringify({ level: 30, time: t, msg: 'y' }), { minLevel: 'warn' })).toBeUndefined();
  });

  it('refuses bad flags with exit 2 and one line naming the flag', async () => {
    const { runCli } = await import('../../src/cli/index.js');
    let err = '';
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((t: string) => ((err += t), true)) as typeof process.stderr.write;
    try {
      expect(await runCli(['logs', '--level', 'loud'])).toBe(2);
      expect(err).toMatch(/^error: --level: "loud" is not one of trace, debug, info, warn, error, fatal\n$/);
      err = '';
      expect(await runCli(['logs', '--since', 'yesterday'])).toBe(2);
      expect(err).toMatch(/--since: "yesterday"/);
      err = '';
      expect(await runCli(['logs', '/nonexistent/provider.log'])).toBe(2);
      expect(err).toMatch(/cannot read \/nonexistent\/provider\.log: ENOENT/);
    } finally {
      process.stderr.write = write;
    }
  });
});
