// `npm start -- --exit-when-done --json` with no configuration: the embedded demo runs the real daemon against the
// in-process Omni and the simulated cluster, and reports what happened.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { daemonCommand } from '../helpers/daemon-command.js';

describe('embedded demo', () => {
  it('provisions 3 control planes and 2 workers, joins them, removes one worker, exits 0', async () => {
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (/^(OMNI_|PROXMOX_|PROVIDER_|TEST_DAEMON_)/.test(k)) delete env[k];
    const cmd = daemonCommand(['--exit-when-done', '--json']);
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        cmd.command,
        cmd.args,
        { cwd: cmd.cwd, env: { ...env, ...cmd.env } },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
    });
    expect(r.stderr).toMatch(/demo: everything ended as expected/);
    expect(r.code).toBe(0);
    const machines = JSON.parse(r.stdout) as Array<{ request: string; set: string; node: string; vmid: number; stage: string; address: string }>;
    // A network without DHCP: each machine read its own static address from its seed, from its class's pool.
    expect(machines.map((m) => m.address).sort()).toEqual(['10.20.0.11/24', '10.20.0.12/24', '10.20.0.13/24', '10.30.0.21/24', '10.30.0.22/24']);
    expect(r.stderr.match(/and joined Omni; net0 10\.[23]0\.0\.\d+\/24 from its seed/g)).toHaveLength(5);
    expect(machines).toHaveLength(5);
    const cps = machines.filter((m) => m.set === 'demo-control-planes');
    expect(cps.every((m) => m.stage === 'PROVISIONED')).toBe(true);
    expect(new Set(cps.map((m) => m.node)).size).toBe(3);
    expect(machines.filter((m) => m.stage === 'REMOVED').map((m) => m.request)).toEqual(['demo-workers-2']);
    expect(new Set(machines.map((m) => m.vmid)).size).toBe(5);
    // The machines really joined: each printed a join line with its UUID.
    expect(r.stderr.match(/booted on pve\d \(VM \d+\) and joined Omni/g)).toHaveLength(5);
    // Secrets never reach the output.
    expect(r.stderr + r.stdout).not.toMatch(/jointoken=|5ec7e7a0-0000/);
  }, 130_000);
});
