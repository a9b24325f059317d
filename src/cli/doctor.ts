// `omni-infra-provider-proxmox doctor [--json] [daemon flags]`: checks the daemon's configuration against Proxmox
// and Omni and explains each problem; exit 0 when nothing failed, 1 when something did, 2 for usage errors.
import { daemonUsage } from '../config/index.js';
import { doctorExitCode, formatFindings, runDoctor, type DoctorOptions } from '../ops/doctor.js';
import { UsageError } from './usage.js';

export interface DoctorIo {
  env?: NodeJS.ProcessEnv;
  readFile?: (path: string) => string;
  stdout?: (text: string) => void;
  now?: () => number;
  timeoutMs?: number;
}

export const DOCTOR_USAGE = `usage: omni-infra-provider-proxmox doctor [--json] [daemon flags]

Loads the configuration exactly as the daemon does (flags, environment, --config-file) and checks it:
configuration, Proxmox connection and TLS (printing the server's SHA-256 fingerprint), authentication,
privileges, nodes, storage, bridges, clock skew, the Omni key, its identity, a signed Omni request and the
provider's registration. One line per check: OK, WARN or FAIL and what to do.

  --json   print a JSON array of {check, status, message}

Exit status: 0 when no check failed, 1 when one did, 2 for usage errors.`;

export async function doctor(argv: string[], io: DoctorIo = {}): Promise<number> {
  const out = io.stdout ?? ((t: string) => void process.stdout.write(t));
  if (argv.includes('--help') || argv.includes('-h')) {
    out(`${DOCTOR_USAGE}\n\n${daemonUsage()}\n`);
    return 0;
  }
  const json = argv.includes('--json');
  if (argv.some((a) => a.startsWith('--json='))) throw new UsageError('flag --json takes no value');
  const opts: DoctorOptions = { argv: argv.filter((a) => a !== '--json'), env: io.env ?? process.env };
  if (io.readFile) opts.readFile = io.readFile;
  if (io.now) opts.now = io.now;
  if (io.timeoutMs !== undefined) opts.timeoutMs = io.timeoutMs;
  const findings = await runDoctor(opts);
  out(json ? `${JSON.stringify(findings, null, 2)}\n` : formatFindings(findings));
  return doctorExitCode(findings);
}

export default (argv: string[]): Promise<number> => doctor(argv);
