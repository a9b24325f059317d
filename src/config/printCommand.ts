// `omni-infra-provider-proxmox config print [daemon flags]`: shows the effective configuration with secrets
// redacted and the source (flag, env, file, default) of every setting, then any warnings.
import { stringify } from 'yaml';
import { ConfigError, loadConfig } from './load.js';
import { redactConfig } from './redact.js';

export interface PrintIo {
  env?: NodeJS.ProcessEnv;
  readFile?: (path: string) => string;
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
}

/** Prints the redacted configuration as YAML; exit code 0, or 2 with every problem listed. */
export async function printConfig(argv: string[], io: PrintIo = {}): Promise<number> {
  const out = io.stdout ?? ((t: string) => void process.stdout.write(t));
  const err = io.stderr ?? ((t: string) => void process.stderr.write(t));
  try {
    const cfg = loadConfig(argv, io.env ?? process.env, io.readFile);
    out(stringify(redactConfig(cfg), { lineWidth: 0 }));
    return 0;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    err(`error: invalid configuration:\n${e.problems.map((p) => `  - ${p}\n`).join('')}`);
    return 2;
  }
}

export default (argv: string[]): Promise<number> => printConfig(argv);
