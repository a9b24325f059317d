// `sim proxmox`: serves the Proxmox VE API simulator from a fixture until SIGINT/SIGTERM.
import { createLogger } from '../log.js';
import { loadFixture } from '../sim/proxmox/fixture.js';
import { startPveSimServer } from '../sim/proxmox/server.js';
import { PveSim } from '../sim/proxmox/sim.js';
import { parseFlags, UsageError } from './usage.js';

const usage = 'usage: omni-infra-provider-proxmox sim proxmox --fixture FILE [--port N] [--https] [--seed S]';

export default async function simProxmox(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, { strings: ['fixture', 'port', 'seed'], booleans: ['https', 'help'] });
  if (flags.has('help')) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument "${positional[0]}"; ${usage}`);
  const fixtureFile = flags.get('fixture');
  if (typeof fixtureFile !== 'string') throw new UsageError(`--fixture is required; ${usage}`);
  const portText = flags.get('port') ?? '0';
  const port = Number(portText);
  if (typeof portText !== 'string' || !/^\d+$/.test(portText) || port > 65535) throw new UsageError(`--port must be 0..65535`);
  let fixture;
  try {
    fixture = await loadFixture(fixtureFile);
  } catch (err) {
    throw new UsageError(`cannot load fixture: ${err instanceof Error ? err.message : String(err)}`);
  }
  const seed = flags.get('seed');
  if (typeof seed === 'string') fixture.seed = /^\d+$/.test(seed) ? Number(seed) : seed;
  const logger = createLogger({ destination: process.stderr });
  const sim = new PveSim({ fixture, logger });
  const server = await startPveSimServer(sim, { https: flags.get('https') === true, port });
  process.stdout.write(
    JSON.stringify({ url: server.url, api: `${server.url}/api2/json`, fingerprint: server.fingerprint ?? null, entryNode: sim.state.entryNode }) + '\n',
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  return 0;
}
