// Test harness: a Proxmox simulator over HTTPS on 127.0.0.1, the real client pinned to its certificate, and a
// ProxmoxProvisioner wired to them. The ImageService here is a fixed test double (the Omni side is tested elsewhere).
import { readFileSync } from 'node:fs';
import { silentLogger, type Logger } from '../../src/log.js';
import { PveClient, type PveClientOptions } from '../../src/proxmox/client.js';
import { emptyMachineState, type MachineState } from '../../src/provision/machineState.js';
import { parseProviderData } from '../../src/provision/providerData.js';
import { isoCacheKey } from '../../src/omni/images.js';
import { ProxmoxProvisioner, type ProxmoxProvisionerOptions } from '../../src/provision/proxmoxProvisioner.js';
import { StepFailure, type ImageService, type ProvisionRequest, type StepContext } from '../../src/provision/step.js';
import { PveSim, ScaledClock, startPveSimServer, type PveFixture, type PveSimServer, type SimClock } from '../../src/sim/proxmox/index.js';

export const fixtureFile = new URL('../fixtures/pve-3node.json', import.meta.url);

export function testFixture(overrides: Partial<PveFixture> = {}): PveFixture {
  const f = JSON.parse(readFileSync(fixtureFile, 'utf8')) as PveFixture;
  return { ...f, authFailDelayMs: 0, ...overrides };
}

export const testImages: ImageService = {
  async createSchematic() {
    return 'a'.repeat(64);
  },
  async bootImage(schematic, version, arch) {
    const url = `https://factory.talos.dev/image/${schematic}/${version}/nocloud-${arch}.iso`;
    return { url, cacheKey: isoCacheKey('factory.talos.dev', schematic, version, arch) };
  },
};

export interface PveHarness {
  sim: PveSim;
  server: PveSimServer;
  pve: PveClient;
  provisioner: ProxmoxProvisioner;
  close(): Promise<void>;
}

/** timeScale 0.002: a simulated 20 s download takes 40 ms. */
/** The fixture's least-privilege token (role OmniProvider, as docs/configuration.md tells operators to create). */
export const providerToken = { tokenId: 'omni@pve!provider', tokenSecret: '0a1b2c3d-0000-4000-8000-0000000000aa' };
export const rootToken = { tokenId: 'root@pam!omni', tokenSecret: '5ec7e7a0-0000-4000-8000-00000000cafe' };

export async function startPveHarness(
  opts: {
    fixture?: Partial<PveFixture>;
    timeScale?: number;
    auth?: PveClientOptions['auth'];
    provisioner?: Partial<ProxmoxProvisionerOptions>;
  } = {},
): Promise<PveHarness> {
  const fixture = testFixture(opts.fixture);
  const clock = new ScaledClock(opts.timeScale ?? 0.002);
  const sim = new PveSim({ fixture, clock });
  const server = await startPveSimServer(sim, { https: true });
  const pve = new PveClient({
    url: server.url,
    auth: opts.auth ?? providerToken,
    tls: { fingerprint: server.fingerprint! },
    logger: silentLogger,
    now: () => clock.now(),
  });
  const provisioner = new ProxmoxProvisioner({
    pve,
    images: testImages,
    log: silentLogger,
    // Task waits run on the simulator's clock, so deadlines are in simulated time (a 5 min deadline = 0.6 s).
    taskWait: { clock: { now: () => clock.now(), sleep: (ms) => clock.sleep(ms) } },
    shutdownTimeoutSec: 5,
    pendingCreateWaitMs: 2_000,
    ...opts.provisioner,
  });
  simClockOf.set(provisioner, clock);
  return {
    sim,
    server,
    pve,
    provisioner,
    async close() {
      await pve.close();
      await server.close();
    },
  };
}

export function request(id: string, providerData: string, setId?: string): ProvisionRequest {
  return { id, machineRequestSetId: setId, talosVersion: 'v1.11.5', providerData: parseProviderData(providerData) };
}

export const basicData = `
cores: 2
memory: 4096
disk_size: 20
storage_selector: 'name == "local-lvm"'
`;

/** The simulator clock a harness's provisioner runs on: runSteps waits out retry delays on it. */
const simClockOf = new WeakMap<ProxmoxProvisioner, SimClock>();

/** Delay before retrying a step that failed transiently (simulated ms, like the controller's backoff). */
const TRANSIENT_RETRY_MS = 500;

export const JOIN_CONFIG = 'apiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: https://omni.example.invalid:8090?jointoken=test-join-token\n';

/**
 * Runs every step in order (resuming from `from`), retrying a step that asks to, like the controller does. Retry
 * delays pass on the simulator's clock (a retry-after of 2 s is 2 simulated seconds), so the number of retries a
 * step needs does not depend on how busy the machine is.
 */
export async function runSteps(
  provisioner: ProxmoxProvisioner,
  req: ProvisionRequest,
  state: MachineState = emptyMachineState(),
  opts: {
    maxRetries?: number;
    from?: string;
    /** Called with the state whenever a step checkpoints it (the controller's write to Omni); steps work on `state`. */
    checkpoint?: (state: MachineState) => void | Promise<void>;
    signal?: AbortSignal;
    /** The last step to run (default: every step to the end). */
    until?: string;
    /** The steps' logger (default: silent). */
    log?: Logger;
  } = {},
): Promise<MachineState> {
  const clock = simClockOf.get(provisioner);
  const sleep = (ms: number) => (clock ? clock.sleep(ms) : new Promise((r) => setTimeout(r, ms)));
  let started = opts.from === undefined;
  for (const step of provisioner.steps) {
    if (!started && step.name !== opts.from) continue;
    started = true;
    const ctx: StepContext = {
      request: req,
      state,
      joinConfig: JOIN_CONFIG,
      log: opts.log ?? silentLogger,
      signal: opts.signal,
      checkpoint: async () => {
        await opts.checkpoint?.(state);
      },
    };
    for (let attempt = 0; ; attempt++) {
      let result;
      try {
        result = await step.run(ctx);
      } catch (err) {
        if (err instanceof StepFailure && err.transient && attempt < (opts.maxRetries ?? 20)) {
          await sleep(TRANSIENT_RETRY_MS);
          continue;
        }
        throw err;
      }
      if (result.kind === 'done') break;
      if (attempt >= (opts.maxRetries ?? 20)) throw new Error(`${step.name} still retrying: ${result.message ?? ''}`);
      await sleep(result.afterMs);
    }
    if (step.name === opts.until) break;
  }
  return state;
}
