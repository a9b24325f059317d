// A provider daemon run as a child process (ours: the compiled daemon of a production layout, as the image runs it;
// or the upstream Go binary), with the resource figures the
// benchmark reports read from /proc/<pid>: CPU seconds (utime+stime) and peak RSS (VmHWM).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { daemonCommand } from '../test/helpers/daemon-command.js';

export type ProviderKind = 'ours' | 'upstream';

export const REPO_ROOT = resolve(import.meta.dirname, '..');

/** Where scripts/install-go-provider.sh puts the upstream binary; GO_PROVIDER_BIN overrides it. */
export function upstreamBinaryPath(): string {
  return process.env.GO_PROVIDER_BIN ?? join(REPO_ROOT, '.cache', 'go-bin', 'omni-infra-provider-proxmox');
}

/** Undefined when the upstream binary can run here, else the reason it cannot. */
export function upstreamUnavailableReason(): string | undefined {
  const bin = upstreamBinaryPath();
  if (!existsSync(bin)) return `no upstream binary at ${bin} (run scripts/install-go-provider.sh, or set GO_PROVIDER_BIN)`;
  return undefined;
}

/** Which upstream build is in use: the .version file the installer writes next to the binary, if any. */
export function upstreamVersionLabel(): string {
  try {
    return readFileSync(`${upstreamBinaryPath()}.version`, 'utf8').trim();
  } catch {
    return 'unknown version';
  }
}

export interface ProviderEndpoints {
  omniEndpoint: string;
  /** Secret: passed through the environment only, never logged. */
  serviceAccountKey: string;
  providerId: string;
  /** e.g. https://127.0.0.1:PORT (no /api2/json). */
  proxmoxUrl: string;
  tokenId: string;
  /** Secret. */
  tokenSecret: string;
  /** SHA-256 fingerprint of the simulator's certificate (ours pins it; upstream can only skip verification). */
  proxmoxFingerprint: string;
  /** provider.concurrency for ours (default: the daemon's default); upstream has no knob (its library default is 1). */
  concurrency?: number;
}

export interface ProcessFigures {
  cpuSeconds: number;
  peakRssMb: number;
}

export interface ProviderProcess {
  kind: ProviderKind;
  pid: number;
  /** CPU seconds and peak RSS so far (read from /proc while the process lives). */
  figures(): ProcessFigures;
  /** Output the process wrote (stderr and stdout), for diagnosing failures. Never contains the secrets above. */
  output(): string;
  exited(): boolean;
  stop(): Promise<ProcessFigures>;
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number.parseInt(r.stdout ?? '', 10);
    clockTicks = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clockTicks;
}

/** utime+stime of a live process, in seconds, from /proc/<pid>/stat. */
export function readCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start at field 3 ("state").
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return (utime + stime) / ticksPerSecond();
}

/** Peak resident set size (VmHWM) of a live process, in MiB. */
export function readPeakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
  return m ? Number(m[1]) / 1024 : 0;
}

/**
 * Environment for a child that must not reach anything but loopback: every proxy variable points at the loopback
 * egress proxy (outbound-guard.ts), loopback itself is exempt, and the only trusted CA is the test CA.
 */
function childEnv(extra: Record<string, string>, guard: OutboundRoute | undefined): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...extra };
  if (guard) {
    for (const k of ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY']) env[k] = guard.proxyUrl;
    env.NO_PROXY = env.no_proxy = '127.0.0.1,localhost,::1';
    env.SSL_CERT_FILE = guard.caFile;
  }
  return env;
}

/** The loopback egress proxy and the CA file that trusts its stand-in factory (see outbound-guard.ts). */
export interface OutboundRoute {
  proxyUrl: string;
  caFile: string;
}

export async function startProviderProcess(
  kind: ProviderKind,
  ep: ProviderEndpoints,
  opts: { outbound?: OutboundRoute; logLevel?: string } = {},
): Promise<ProviderProcess> {
  let child: ChildProcess;
  let workDir: string | undefined;
  if (kind === 'ours') {
    const cmd = daemonCommand();
    if (cmd.kind !== 'compiled') throw new Error('the bench measures the compiled daemon: set TEST_DAEMON_LAYOUT to a layout from scripts/assemble-prod.sh');
    child = spawn(cmd.command, cmd.args, {
      cwd: cmd.cwd,
      env: childEnv(
        {
          ...cmd.env,
          OMNI_ENDPOINT: ep.omniEndpoint,
          OMNI_SERVICE_ACCOUNT_KEY: ep.serviceAccountKey,
          PROVIDER_ID: ep.providerId,
          PROXMOX_URL: `${ep.proxmoxUrl}/api2/json`,
          PROXMOX_TOKEN_ID: ep.tokenId,
          PROXMOX_TOKEN_SECRET: ep.tokenSecret,
          PROXMOX_FINGERPRINT: ep.proxmoxFingerprint,
          PROVIDER_HEALTH_LISTEN: 'off',
          // Unset: the daemon's own defaults (provider.concurrency, tasksPerNode, tasksPerStorage).
          ...(ep.concurrency !== undefined ? { PROVIDER_CONCURRENCY: String(ep.concurrency) } : {}),
          LOG_LEVEL: opts.logLevel ?? 'warn',
        },
        opts.outbound,
      ),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } else {
    workDir = await mkdtemp(join(tmpdir(), 'go-provider-'));
    const configFile = join(workDir, 'config.yaml');
    // The Go provider's config file: only the proxmox section exists. It cannot pin a certificate, so the
    // simulator's self-signed one is accepted by skipping verification (loopback only).
    await writeFile(
      configFile,
      [
        'proxmox:',
        `  url: "${ep.proxmoxUrl}/api2/json"`,
        `  tokenID: "${ep.tokenId}"`,
        `  tokenSecret: "${ep.tokenSecret}"`,
        '  insecureSkipVerify: true',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    child = spawn(upstreamBinaryPath(), ['--config-file', configFile, '--id', ep.providerId], {
      cwd: workDir,
      env: childEnv({ OMNI_ENDPOINT: ep.omniEndpoint, OMNI_SERVICE_ACCOUNT_KEY: ep.serviceAccountKey }, opts.outbound),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start the ${kind} provider`);
  let out = '';
  const keep = (b: Buffer) => {
    out += b.toString('utf8');
    if (out.length > 200_000) out = out.slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exitedFlag = false;
  const exitPromise = new Promise<void>((res) => child.once('exit', () => ((exitedFlag = true), res())));
  let last: ProcessFigures = { cpuSeconds: 0, peakRssMb: 0 };
  const figures = (): ProcessFigures => {
    if (exitedFlag) return last;
    try {
      last = { cpuSeconds: readCpuSeconds(pid), peakRssMb: readPeakRssMb(pid) };
    } catch {
      // The process went away between the check and the read: keep the last sample.
    }
    return last;
  };
  return {
    kind,
    pid,
    figures,
    output: () => out,
    exited: () => exitedFlag,
    async stop() {
      const f = figures();
      if (!exitedFlag) {
        child.kill('SIGTERM');
        const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exitPromise;
        clearTimeout(killTimer);
      }
      if (workDir) await rm(workDir, { recursive: true, force: true });
      return f;
    },
  };
}
