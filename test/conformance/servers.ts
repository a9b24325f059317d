// The two Omni servers the conformance suite runs the same scenarios against: upstream's COSI State server (the Go
// harness in conformance/omni-harness, a child process) and our in-process Omni. Both are seeded identically and
// driven through one control interface that plays Omni's controllers.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { generateKey } from 'openpgp';
import { ResourceSchema, type Resource as WireResource } from '../../src/gen/cosi/v1alpha1/resource_pb.js';
import { MachineRequestSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { startImageFactory, type ImageFactory } from '../../src/sim/omni/factory.js';
import {
  CosiStore,
  encodeSpec,
  INTERNAL_ACTOR,
  LABELS,
  NS,
  OmniControllers,
  startInProcessOmni,
  TYPES,
  type InProcessOmni,
  type Role,
} from '../../src/sim/omni/index.js';
import { resourceFromWire, resourceToWire } from '../../src/sim/omni/wire.js';

const root = new URL('../..', import.meta.url).pathname;
export const HARNESS_BINARY = `${root}conformance/omni-harness/.bin/omni-harness`;
const GO_MISSING_MARKER = `${root}conformance/omni-harness/.bin/GO_MISSING`;
const BUILD_SCRIPT = `${root}scripts/build-conformance.sh`;

export const PROVIDER_ID = 'proxmox';
export const SEED = 7;
const IDENTITY_SUFFIX = '@infra-provider.serviceaccount.omni.sidero.dev';

export type ServerName = 'upstream' | 'in-process';

export interface ProviderKeyOptions {
  providerId?: string;
  role?: Role;
  /** Key identity e-mail; default `<providerId>@infra-provider.serviceaccount.omni.sidero.dev`. */
  identity?: string;
}

export interface ConformanceOmni {
  readonly name: ServerName;
  /** `http://127.0.0.1:<port>` of the gRPC API. */
  readonly endpoint: string;
  readonly providerId: string;
  /** ProviderJoinConfig.join_token of the provider (identical on both servers for the same seed). */
  readonly providerJoinToken: string;
  /** Image factory the server's FeaturesConfig points at. */
  readonly factory: Pick<ImageFactory, 'url' | 'requests'>;
  /** Generates an EdDSA key like omnictl, registers its public half, returns the base64 key string. */
  createProviderKey(opts?: ProviderKeyOptions): Promise<{ keyString: string; fingerprint: string }>;
  expireKey(fingerprint: string): Promise<void>;
  revokeKey(fingerprint: string): Promise<void>;
  /** Internal-actor access (bypasses auth and access rules), answers in wire form. */
  get(namespace: string, type: string, id: string): Promise<WireResource | undefined>;
  list(namespace: string, type: string): Promise<WireResource[]>;
  /** Create, or replace labels/annotations/finalizers/phase/spec of the stored resource. */
  put(resource: WireResource, owner?: string): Promise<WireResource>;
  destroy(namespace: string, type: string, id: string, owner?: string): Promise<void>;
  setFinalizer(namespace: string, type: string, id: string, finalizer: string, present: boolean): Promise<void>;
  createMachineRequest(setId: string, id: string, spec?: MessageInitShape<typeof MachineRequestSpecSchema>): Promise<WireResource>;
  holdMachineRequestStatuses(autoRelease: boolean): Promise<void>;
  releaseMachineRequestStatus(id: string): Promise<void>;
  /** A machine connects with `token`; `error` is Omni's refusal. */
  machineJoins(uuid: string, token: string): Promise<{ ok: true } | { ok: false; error: string }>;
  /**
   * Omni tears the request down and destroys it once its finalizers are gone. `until`: a bound in ms (the bench's
   * own), or a signal (a test's: no bound but the test's timeout); neither: no bound.
   */
  deleteMachineRequest(id: string, until?: number | AbortSignal): Promise<void>;
  setCapabilities(c: { teardownRpc?: boolean; createSchematicFromRaw?: boolean }): Promise<void>;
  callCounts(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

async function generateProviderKey(opts: ProviderKeyOptions): Promise<{ keyString: string; armoredPublicKey: string; identity: string; role: Role }> {
  const providerId = opts.providerId ?? PROVIDER_ID;
  const identity = opts.identity ?? `${providerId}${IDENTITY_SUFFIX}`;
  const { privateKey, publicKey } = await generateKey({
    type: 'ecc',
    curve: 'ed25519Legacy',
    userIDs: [{ name: providerId, email: identity }],
    keyExpirationTime: 365 * 86400,
    // Created an hour ago, so a client whose clock runs behind can still sign (skew tests).
    date: new Date(Date.now() - 3600_000),
    format: 'armored',
  });
  const keyString = Buffer.from(JSON.stringify({ name: `infra-provider:${providerId}`, pgp_key: privateKey }), 'utf8').toString('base64');
  return { keyString, armoredPublicKey: publicKey, identity, role: opts.role ?? 'InfraProvider' };
}

function machineRequestResource(providerId: string, setId: string, id: string, spec: MessageInitShape<typeof MachineRequestSpecSchema>): WireResource {
  const s = encodeSpec(MachineRequestSpecSchema, spec);
  return create(ResourceSchema, {
    metadata: {
      namespace: NS.infraProvider,
      type: TYPES.machineRequest,
      id,
      version: 'undefined',
      phase: 'running',
      labels: { [LABELS.infraProviderId]: providerId, [LABELS.machineRequestSet]: setId },
    },
    spec: { protoSpec: s.protoSpec, yamlSpec: s.yamlSpec },
  });
}

// --- in-process ------------------------------------------------------------------------------------------------------

export async function startInProcessServer(): Promise<ConformanceOmni> {
  // Matches the pinned upstream (Omni client v1.9): no GetBootAssetURL, CreateSchematicFromRaw without talos_version.
  const omni: InProcessOmni = await startInProcessOmni({
    providerId: PROVIDER_ID,
    seed: SEED,
    capabilities: { getBootAssetUrl: false, schematicTalosVersion: false },
  });
  const fingerprints = new Map<string, string>();
  return {
    name: 'in-process',
    endpoint: omni.endpoint,
    providerId: PROVIDER_ID,
    providerJoinToken: omni.controllers.providerJoinToken,
    factory: omni.factory,
    async createProviderKey(opts = {}) {
      const k = await generateProviderKey(opts);
      const entry = await omni.keys.register(k.armoredPublicKey, { identity: k.identity, role: k.role });
      fingerprints.set(entry.fingerprint, k.identity);
      return { keyString: k.keyString, fingerprint: entry.fingerprint };
    },
    async expireKey(fp) {
      omni.keys.expire(fp);
    },
    async revokeKey(fp) {
      omni.keys.revoke(fp);
    },
    async get(ns, type, id) {
      const r = omni.store.find(ns, type, id);
      return r ? resourceToWire(r) : undefined;
    },
    async list(ns, type) {
      return omni.store.list(ns, type).map(resourceToWire);
    },
    async put(resource, owner = '') {
      const input = resourceFromWire(resource);
      const { namespace, type, id } = input.metadata;
      const current = omni.store.find(namespace, type, id);
      if (!current) return resourceToWire(omni.access.create(INTERNAL_ACTOR, { ...input, metadata: { ...input.metadata, version: undefined } }, { owner }));
      return resourceToWire(
        omni.access.update(INTERNAL_ACTOR, { ...input, metadata: { ...input.metadata, version: current.metadata.version } }, { owner: current.metadata.owner }),
      );
    },
    async destroy(ns, type, id, owner = '') {
      omni.store.destroy(ns, type, id, { owner });
    },
    async setFinalizer(ns, type, id, finalizer, present) {
      if (present) omni.store.addFinalizer(ns, type, id, finalizer);
      else omni.store.removeFinalizer(ns, type, id, finalizer);
    },
    async createMachineRequest(setId, id, spec = { talosVersion: 'v1.9.5' }) {
      return resourceToWire(omni.controllers.createMachineRequest(setId, spec, id));
    },
    async holdMachineRequestStatuses(autoRelease) {
      omni.controllers.holdMachineRequestStatuses({ autoRelease });
    },
    async releaseMachineRequestStatus(id) {
      omni.controllers.releaseMachineRequestStatus(id);
    },
    async machineJoins(uuid, token) {
      try {
        omni.controllers.machineJoins(uuid, token);
        return { ok: true };
      } catch (err) {
        return { ok: false, error: (err as Error).message };
      }
    },
    async deleteMachineRequest(id, until) {
      await omni.controllers.deleteMachineRequest(id, typeof until === 'number' ? AbortSignal.timeout(until) : until);
    },
    async setCapabilities(c) {
      if (c.teardownRpc !== undefined) omni.capabilities.teardownRpc = c.teardownRpc;
      if (c.createSchematicFromRaw !== undefined) omni.capabilities.createSchematicFromRaw = c.createSchematicFromRaw;
    },
    async callCounts() {
      return omni.callCounts();
    },
    async close() {
      omni.controllers.stop();
      await omni.close();
    },
  };
}

// --- upstream (Go harness) -------------------------------------------------------------------------------------------

export type HarnessAvailability = { available: true } | { available: false; reason: string };

let building: Promise<HarnessAvailability> | undefined;

/**
 * Runs scripts/build-conformance.sh once per process (a no-op rebuild takes seconds; a cold one a few minutes) and
 * reports whether the harness can run.
 */
export function ensureHarness(): Promise<HarnessAvailability> {
  building ??= new Promise<HarnessAvailability>((resolve) => {
    const child = spawn('bash', [BUILD_SCRIPT], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    child.stderr!.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-4000)));
    child.on('error', (err) => resolve({ available: false, reason: `cannot run scripts/build-conformance.sh: ${err.message}` }));
    child.on('exit', (code) => {
      if (code !== 0) resolve({ available: false, reason: `scripts/build-conformance.sh failed (${code}):\n${output}` });
      else if (existsSync(GO_MISSING_MARKER) || !existsSync(HARNESS_BINARY)) {
        resolve({ available: false, reason: "'go' is not installed, so the upstream Go harness could not be built" });
      } else resolve({ available: true });
    });
  });
  return building;
}

/** Prints the loud notice that the upstream half is skipped. */
export function warnUpstreamSkipped(reason: string): void {
  console.warn(
    `\n${'#'.repeat(100)}\n# CONFORMANCE: the upstream Go harness is unavailable; scenarios against upstream are SKIPPED.\n# ${reason}\n${'#'.repeat(100)}\n`,
  );
}

/** Starts the named server, or returns the reason it cannot run (upstream without Go). */
export async function startServer(name: ServerName): Promise<ConformanceOmni | { skipped: string }> {
  if (name === 'in-process') return startInProcessServer();
  const availability = await ensureHarness();
  if (!availability.available) {
    warnUpstreamSkipped(availability.reason);
    return { skipped: availability.reason };
  }
  return startUpstreamServer();
}

export const SERVER_NAMES: ServerName[] = ['upstream', 'in-process'];

class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Kinds the in-process seed writes that the harness does not create itself (it seeds Omni's real RDs natively). */
const SEEDED_KINDS: Array<[string, string]> = [
  [NS.meta, TYPES.namespace],
  [NS.infraProvider, TYPES.infraProvider],
  [NS.infraProvider, TYPES.providerJoinConfig],
  [NS.default, TYPES.siderolinkApiConfig],
  [NS.default, TYPES.connectionParams],
  [NS.default, TYPES.featuresConfig],
  [NS.ephemeral, TYPES.sysVersion],
];

export async function startUpstreamServer(): Promise<ConformanceOmni> {
  const child: ChildProcess = spawn(HARNESS_BINARY, [], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  const ready = await new Promise<{ grpcPort: number; controlPort: number; versions: string }>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      try {
        resolve(JSON.parse(line) as { grpcPort: number; controlPort: number; versions: string });
      } catch (err) {
        reject(new Error(`omni-harness printed ${line}: ${(err as Error).message}`));
      }
    });
    child.once('exit', (code) => reject(new Error(`omni-harness exited with ${code}: ${stderr}`)));
  });
  const control = `http://127.0.0.1:${ready.controlPort}`;
  const call = async <T>(path: string, body: unknown = {}, signal?: AbortSignal): Promise<T> => {
    const res = await fetch(`${control}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
    const json = (await res.json()) as T & { error?: string };
    if (!res.ok) throw new ControlError(res.status, json.error ?? `HTTP ${res.status}`);
    return json;
  };
  const encode = (r: WireResource) => Buffer.from(toBinary(ResourceSchema, r)).toString('base64');
  const decode = (b64: string) => fromBinary(ResourceSchema, Buffer.from(b64, 'base64'));

  const factory = await startImageFactory();
  await call('/capabilities', { imageFactoryUrl: factory.url });

  // Seed exactly what the in-process Omni seeds (same seed → same join tokens), minus the RDs Go registers itself.
  const seedStore = new CosiStore();
  const seeder = new OmniControllers({ providerId: PROVIDER_ID, store: seedStore, seed: SEED, imageFactoryBaseUrl: factory.url });
  seeder.seed();
  for (const [ns, type] of SEEDED_KINDS) {
    for (const r of seedStore.list(ns, type)) await call('/state/put', { resource: encode(resourceToWire(r)), owner: '' });
  }

  const server: ConformanceOmni = {
    name: 'upstream',
    endpoint: `http://127.0.0.1:${ready.grpcPort}`,
    providerId: PROVIDER_ID,
    providerJoinToken: seeder.providerJoinToken,
    factory,
    async createProviderKey(opts = {}) {
      const k = await generateProviderKey(opts);
      const { fingerprint } = await call<{ fingerprint: string }>('/keys/register', {
        armoredPublicKey: k.armoredPublicKey,
        identity: k.identity,
        role: k.role,
      });
      return { keyString: k.keyString, fingerprint };
    },
    async expireKey(fingerprint) {
      await call('/keys/expire', { fingerprint });
    },
    async revokeKey(fingerprint) {
      await call('/keys/revoke', { fingerprint });
    },
    async get(namespace, type, id) {
      try {
        return decode((await call<{ resource: string }>('/state/get', { namespace, type, id })).resource);
      } catch (err) {
        if (err instanceof ControlError && err.status === 404) return undefined;
        throw err;
      }
    },
    async list(namespace, type) {
      return (await call<{ resources: string[] }>('/state/list', { namespace, type })).resources.map(decode);
    },
    async put(resource, owner = '') {
      return decode((await call<{ resource: string }>('/state/put', { resource: encode(resource), owner })).resource);
    },
    async destroy(namespace, type, id, owner = '') {
      await call('/state/destroy', { namespace, type, id, owner });
    },
    async setFinalizer(namespace, type, id, finalizer, present) {
      await call('/state/finalizer', { namespace, type, id, finalizer, remove: !present });
    },
    async createMachineRequest(setId, id, spec = { talosVersion: 'v1.9.5' }) {
      const resource = encode(machineRequestResource(PROVIDER_ID, setId, id, spec));
      return decode((await call<{ resource: string }>('/omni/machine-request', { providerId: PROVIDER_ID, setId, resource })).resource);
    },
    async holdMachineRequestStatuses(autoRelease) {
      await call('/omni/hold-statuses', { autoRelease });
    },
    async releaseMachineRequestStatus(id) {
      await call('/omni/release-status', { id });
    },
    async machineJoins(uuid, token) {
      try {
        await call('/omni/join', { uuid, token });
        return { ok: true };
      } catch (err) {
        if (err instanceof ControlError && err.status === 403) return { ok: false, error: err.message };
        throw err;
      }
    },
    async deleteMachineRequest(id, until) {
      // The harness bounds the wait itself (default 30 s); without a bound of ours, a day. A signal aborts the
      // control call, which cancels the harness's wait (the request context).
      const timeoutMs = typeof until === 'number' ? until : 24 * 3600_000;
      await call('/omni/delete-machine-request', { id, timeoutMs }, typeof until === 'number' ? undefined : until);
    },
    async setCapabilities(c) {
      await call('/capabilities', c);
    },
    async callCounts() {
      return call<Record<string, number>>('/calls');
    },
    async close() {
      await factory.close();
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.stdin!.end(); // the harness exits when stdin closes
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
  return server;
}

