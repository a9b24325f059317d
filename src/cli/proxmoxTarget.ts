// Which Proxmox the read-only tools talk to: a real cluster from the daemon's config file/env, or a simulator
// started in this process from a fixture (served over HTTPS on 127.0.0.1 and pinned by fingerprint).
import { loadProxmoxSettings } from '../config/index.js';
import { silentLogger } from '../log.js';
import { PveClient } from '../proxmox/client.js';
import { loadFixture } from '../sim/proxmox/fixture.js';
import { startPveSimServer } from '../sim/proxmox/server.js';
import { PveSim } from '../sim/proxmox/sim.js';
import { UsageError } from './usage.js';

export interface ProxmoxTarget {
  pve: PveClient;
  close(): Promise<void>;
}

export async function openProxmoxTarget(flags: Map<string, string | true>): Promise<ProxmoxTarget> {
  const configFile = flags.get('config-file');
  const fixtureFile = flags.get('sim-fixture');
  if ((typeof configFile === 'string') === (typeof fixtureFile === 'string')) {
    throw new UsageError('give exactly one of --config-file FILE (a real cluster) or --sim-fixture FILE (the simulator)');
  }
  if (typeof fixtureFile === 'string') {
    let fixture;
    try {
      fixture = await loadFixture(fixtureFile);
    } catch (err) {
      throw new UsageError(`--sim-fixture: ${err instanceof Error ? err.message : String(err)}`);
    }
    const sim = new PveSim({ fixture: { ...fixture, authFailDelayMs: 0 }, logger: silentLogger });
    const server = await startPveSimServer(sim, { https: true });
    const pve = new PveClient({
      url: server.url,
      auth: { tokenId: 'root@pam!omni', tokenSecret: '5ec7e7a0-0000-4000-8000-00000000cafe' },
      tls: { fingerprint: server.fingerprint! },
      logger: silentLogger,
    });
    return {
      pve,
      async close() {
        await pve.close();
        await server.close();
      },
    };
  }
  const settings = loadProxmoxSettings(configFile as string, process.env);
  const pve = new PveClient({ ...settings, logger: silentLogger });
  return { pve, close: () => pve.close() };
}
