// The container as an operator runs it, without a Docker engine: the production layout that scripts/assemble-prod.sh
// builds (the image's /app, byte for byte the same script) run the way the image runs it:
//   - `node dist/main.js` with NODE_ENV=production, configured by environment variables only;
//   - as an unprivileged user, with /app and HOME read-only (compose.yaml: read_only: true, only /tmp writable);
//   - as PID 1 of its own PID namespace, stopped by SIGTERM sent from outside it (what `docker stop` does);
//   - the image's health check script (`node dist/ops/probe.js`) against the running daemon.
// And `npm start` (npm -> node): SIGTERM to npm stops the daemon and leaves no process behind.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { IMAGE_ENV, REPO_ROOT, daemonLayout } from '../helpers/daemon-command.js';
import { SMALL_VM, startWorld, waitForStage, type World } from '../helpers/e2e.js';
import { jsonLineProblem } from '../helpers/json-lines.js';

const layout = daemonLayout();
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
/** unshare(1) can give the daemon a PID namespace of its own (root, or a kernel allowing it). */
const canUnshare = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']).status === 0;
const canSetpriv = isRoot && spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'true']).status === 0;

if (!layout) {
  console.warn('########## container tests SKIPPED: TEST_DAEMON_LAYOUT is not a production layout (npm test and .ci/run assemble one)');
}
if (layout && !canUnshare) console.warn('########## container test: no PID namespace here (unshare refused); PID 1 behaviour NOT checked');

const scratch: string[] = [];
afterAll(() => {
  for (const d of scratch) {
    spawnSync('chmod', ['-R', 'u+w', d]);
    rmSync(d, { recursive: true, force: true });
  }
});

/** A read-only copy of the production layout and a read-only HOME, readable by the unprivileged user. */
function readOnlyInstall(): { app: string; home: string; tmp: string } {
  const base = mkdtempSync(join(tmpdir(), 'container-'));
  scratch.push(base);
  chmodSync(base, 0o755);
  const app = join(base, 'app');
  cpSync(layout!, app, { recursive: true });
  const home = join(base, 'home');
  spawnSync('mkdir', ['-p', home]);
  const tmp = join(base, 'tmp');
  spawnSync('mkdir', ['-p', tmp]);
  chmodSync(tmp, 0o1777); // the container's writable tmpfs /tmp
  expect(spawnSync('chmod', ['-R', 'a-w', app, home]).status).toBe(0);
  return { app, home, tmp };
}

/** Every file under `dir` with its size and mtime, to show nothing was written. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The command prefix that runs the daemon as the unprivileged user (root only; elsewhere we already are one). */
function asNobody(): string[] {
  return canSetpriv ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'] : [];
}

/** Resolves when `cond()` holds, checked whenever the child prints or exits; rejects when it exits first. */
function untilOutput(child: ChildProcess, cond: () => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (cond()) done(resolve);
    };
    const onExit = () => (cond() ? done(resolve) : done(() => reject(new Error(`the process exited before ${what}`))));
    const done = (f: () => void) => {
      child.stdout?.off('data', check);
      child.stderr?.off('data', check);
      child.off('exit', onExit);
      f();
    };
    child.stdout?.on('data', check);
    child.stderr?.on('data', check);
    child.on('exit', onExit);
    check();
  });
}

/** Runs `argv` and collects its output; resolves on exit. */
function run(argv: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The environment of the container: only what the image and compose set, plus `extra`. */
function containerEnv(home: string, tmp: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: home, TMPDIR: tmp, ...IMAGE_ENV, ...extra };
}

describe.skipIf(!layout)('the production layout as the container runs it', () => {
  it('runs the embedded demo to its end as an unprivileged user with /app and HOME read-only', async () => {
    const { app, home, tmp } = readOnlyInstall();
    const before = snapshot(app);
    const r = await run([...asNobody(), process.execPath, 'dist/main.js', '--exit-when-done', '--json'], { cwd: app, env: containerEnv(home, tmp) });
    expect(r.stderr).toMatch(/demo: everything ended as expected/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toHaveLength(5);
    expect(r.stderr).not.toMatch(/EACCES|EROFS|EPERM/);
    // Nothing written: the tree is unchanged and HOME is empty.
    expect(snapshot(app)).toEqual(before);
    expect(readdirSync(home)).toEqual([]);
  }, 180_000);

  it('serves Omni from env-only configuration as PID 1, answers the image health check, and stops on SIGTERM', async () => {
    const { app, home, tmp } = readOnlyInstall();
    const world: World = await startWorld();
    let child: ChildProcess | undefined;
    try {
      const port = await freePort();
      const env = containerEnv(home, tmp, world.env({ PROVIDER_HEALTH_LISTEN: `127.0.0.1:${port}`, LOG_LEVEL: 'info' }));
      const pidNs = canUnshare ? ['unshare', '--pid', '--fork', '--mount-proc', '--'] : [];
      const argv = [...pidNs, ...asNobody(), process.execPath, 'dist/main.js'];
      child = spawn(argv[0]!, argv.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
      child.stderr!.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
      let exit: { code: number | null; signal: string | null } | undefined;
      const exited = new Promise<void>((resolve) => child!.on('exit', (code, signal) => ((exit = { code, signal }), resolve())));
      await untilOutput(child, () => stdout.includes('"infra provider started"'), `the daemon logged "infra provider started" (stderr: ${stderr})`);

      // The daemon's own PID: the child of unshare (setpriv execs node), PID 1 inside its namespace.
      let daemonPid = child.pid!;
      if (canUnshare) {
        const children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/);
        daemonPid = Number(children[0]);
        const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${daemonPid}/status`, 'utf8'))![1]!.trim().split(/\s+/);
        expect(nspid.at(-1)).toBe('1');
      }
      if (canSetpriv) expect(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${daemonPid}/status`, 'utf8'))![1]).toBe(String(NOBODY));

      // It works: a request is provisioned.
      const req = world.omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5', providerData: SMALL_VM }, 'container-1');
      await waitForStage(world.omni, req.metadata.id, 'PROVISIONED');

      // The image's HEALTHCHECK (PROVIDER_HEALTH_LISTEN tells the probe where to look, as in the image).
      const probe = await run([process.execPath, 'dist/ops/probe.js'], { cwd: app, env });
      expect(probe.stderr).toBe('');
      expect(probe.code).toBe(0);

      // `docker stop`: SIGTERM from outside the namespace to its PID 1; it must exit by itself (code 0).
      const t0 = Date.now();
      process.kill(daemonPid, 'SIGTERM');
      await exited;
      const ms = Date.now() - t0;
      console.log(`container test: the daemon as PID ${canUnshare ? '1' : daemonPid} exited ${JSON.stringify(exit)} ${ms} ms after SIGTERM`);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(ms).toBeLessThan(30_000); // compose's stop_grace_period; past it Docker sends SIGKILL
      expect(stdout).toMatch(/"infra provider stopped"/);
      expect(stderr).not.toMatch(/EACCES|EROFS|EPERM|DEP0\d+/);
      for (const line of stdout.split('\n').filter((l) => l.startsWith('{'))) expect(jsonLineProblem(line), line).toBeUndefined();

      const after = await run([process.execPath, 'dist/ops/probe.js'], { cwd: app, env });
      expect(after.code).toBe(1);
      expect(readdirSync(home)).toEqual([]);
    } finally {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await world.close();
    }
  }, 240_000);
});

/** Every process whose parent chain reaches `pid` (pid included), from /proc. */
function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i] && !out.includes(p)) out.push(p);
  return out;
}

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

describe.skipIf(!existsSync(join(REPO_ROOT, 'node_modules', 'tsx')))('npm start', () => {
  it('runs the demo through npm and stops completely on SIGTERM to npm', async () => {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^(OMNI_|PROXMOX_|PROVIDER_|TEST_DAEMON_|npm_)/.test(k)) env[k] = v;
    const npm = spawn('npm', ['start'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = ''; // the demo's narration goes to stdout (stderr with --json), npm's own lines to stderr
    npm.stderr.on('data', (b: Buffer) => (out += b.toString('utf8')));
    npm.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    const exited = new Promise<void>((resolve) => npm.on('exit', () => resolve()));
    onTestFinished(() => {
      if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
    });
    await untilOutput(npm, () => /demo: the provider keeps running/.test(out), 'the demo settled');
    const tree = processTree(npm.pid!);
    onTestFinished(() => {
      for (const p of tree) if (alive(p)) process.kill(p, 'SIGKILL'); // leave nothing behind when the test fails
    });
    expect(tree.length).toBeGreaterThanOrEqual(2); // npm and the daemon
    npm.kill('SIGTERM');
    await exited;
    // npm exits only after its child did: when it is gone, nothing of the tree may still run.
    expect(tree.filter(alive), `processes of npm start still running after npm exited (tree ${tree.join(', ')})`).toEqual([]);
    expect(out).toMatch(/demo: stopping/);
  }, 180_000);
});
