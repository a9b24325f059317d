import { create } from '@bufbuild/protobuf';
import * as openpgp from 'openpgp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseOmniEndpoint } from '../../src/cosi/grpc.js';
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import {
  encodeResource,
  LABEL_INFRA_PROVIDER_ID,
  MachineRequestKind,
  MachineRequestStatusKind,
  newResource,
  providerMachineKind,
} from '../../src/cosi/resources.js';
import { decodeServiceAccountKey } from '../../src/cosi/signing.js';
import { isConflict, isNotFound, isPhaseConflict, type WatchEvent } from '../../src/cosi/state.js';
import { MachineRequestSpecSchema, MachineRequestStatusSpec_Stage, MachineRequestStatusSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { waitFor } from '../helpers/wait.js';
import { StateServer } from './state-server.js';

const OWNER = 'proxmox.ProvisionController';
const machineKind = providerMachineKind('proxmox');

let server: StateServer;
let omni: OmniClient;

beforeEach(async () => {
  server = new StateServer();
  const endpoint = await server.start();
  omni = connectOmni({
    endpoint,
    providerId: 'proxmox',
    state: { conflictRetry: { initialMs: 1, maxMs: 5 }, watchBackoff: { initialMs: 5, maxMs: 20 } },
  });
});

afterEach(async () => {
  omni.close();
  await server.stop();
});

function omniCreatesRequest(id: string, finalizers: string[] = []): void {
  const r = newResource(MachineRequestKind, id, create(MachineRequestSpecSchema, { talosVersion: 'v1.9.0' }), {
    labels: { [LABEL_INFRA_PROVIDER_ID]: 'proxmox' },
    finalizers,
  });
  server.put(encodeResource(MachineRequestKind, r));
}

describe('endpoint URL rules', () => {
  it('maps schemes to TLS/plaintext and default ports, dropping paths', () => {
    expect(parseOmniEndpoint('https://omni.example.com/some/path?x=1')).toEqual({ target: 'omni.example.com:443', host: 'omni.example.com', tls: true });
    expect(parseOmniEndpoint('https://omni.example.com:8443')).toMatchObject({ target: 'omni.example.com:8443', tls: true });
    expect(parseOmniEndpoint('http://omni.local')).toMatchObject({ target: 'omni.local:80', tls: false });
    expect(parseOmniEndpoint('grpc://127.0.0.1:8090')).toMatchObject({ target: '127.0.0.1:8090', tls: false });
    expect(parseOmniEndpoint('http://[::1]:8080')).toMatchObject({ target: '[::1]:8080', host: '::1', tls: false });
    expect(() => parseOmniEndpoint('127.0.0.1:8080')).toThrow(/not a URL with a scheme/);
  });
});

describe('CRUD and metadata', () => {
  it('creates with version "undefined", reads back typed specs, and lists by label', async () => {
    const mrs = newResource(MachineRequestStatusKind, 'req-1', create(MachineRequestStatusSpecSchema, { stage: MachineRequestStatusSpec_Stage.PROVISIONING }), {
      labels: { [LABEL_INFRA_PROVIDER_ID]: 'proxmox', set: 'a' },
    });
    const stored = await omni.state.create(MachineRequestStatusKind, mrs, { owner: OWNER });
    expect(stored.metadata.version).toBe('1');
    expect(stored.metadata.owner).toBe(OWNER);
    await omni.state.create(MachineRequestStatusKind, newResource(MachineRequestStatusKind, 'req-2', undefined, { labels: { set: 'b' } }), { owner: OWNER });

    const got = await omni.state.get(MachineRequestStatusKind, 'req-1');
    expect(got.spec.stage).toBe(MachineRequestStatusSpec_Stage.PROVISIONING);
    expect((await omni.state.list(MachineRequestStatusKind, { labels: { set: 'a' } })).map((r) => r.metadata.id)).toEqual(['req-1']);
    expect((await omni.state.list(MachineRequestStatusKind)).map((r) => r.metadata.id)).toEqual(['req-1', 'req-2']);
    expect(await omni.state.find(MachineRequestStatusKind, 'nope')).toBeUndefined();
    await expect(omni.state.get(MachineRequestStatusKind, 'nope')).rejects.toSatisfy(isNotFound);
  });

  it('private state keeps yaml_spec readable and survives a round trip with Go field numbers', async () => {
    const r = newResource(machineKind, 'req-1');
    r.spec.vmid = 104;
    r.spec.node = 'pve1';
    r.spec.isoStorage = 'nfs-iso';
    await omni.state.create(machineKind, r, { owner: OWNER });
    const raw = [...server.store.values()][0]!;
    expect(raw.spec?.yamlSpec).toContain('vmid: 104');
    expect(Buffer.from(raw.spec!.protoSpec).subarray(0, 2)).toEqual(Buffer.from([0x2a, 4])); // field 5 (node), length 4
    const back = await omni.state.get(machineKind, 'req-1');
    expect(back.spec.vmid).toBe(104);
    expect(back.spec.isoStorage).toBe('nfs-iso');
  });

  it('update with a stale version is a conflict', async () => {
    await omni.state.create(machineKind, newResource(machineKind, 'r'), { owner: OWNER });
    const a = await omni.state.get(machineKind, 'r');
    a.spec.node = 'pve1';
    await omni.state.update(machineKind, a, { owner: OWNER });
    a.spec.node = 'pve2';
    await expect(omni.state.update(machineKind, a, { owner: OWNER })).rejects.toSatisfy(isConflict);
  });
});

describe('modify', () => {
  it('re-reads and re-applies on conflict, keeping finalizers and labels written concurrently by Omni', async () => {
    await omni.state.create(MachineRequestStatusKind, newResource(MachineRequestStatusKind, 'r', undefined, { labels: { a: '1' } }), { owner: OWNER });
    let injected = false;
    server.beforeUpdate = () => {
      if (injected) return;
      injected = true;
      // Omni's cleanup controller adds its finalizer between our read and our write.
      const cur = [...server.store.values()][0]!;
      cur.metadata!.finalizers.push('MachineRequestStatusCleanupController');
      cur.metadata!.version = String(Number(cur.metadata!.version) + 1);
    };
    let calls = 0;
    const result = await omni.state.modify(
      MachineRequestStatusKind,
      'r',
      (res) => {
        calls++;
        res.spec.status = 'Running Step: "pickNode" (1/5)';
      },
      { owner: OWNER },
    );
    expect(calls).toBe(2);
    expect(result.metadata.finalizers).toEqual(['MachineRequestStatusCleanupController']);
    expect(result.metadata.labels).toEqual({ a: '1' });
    expect(result.spec.status).toBe('Running Step: "pickNode" (1/5)');
  });

  it('creates when missing and skips the write when nothing changed', async () => {
    await omni.state.modify(machineKind, 'r', (res) => void (res.spec.node = 'pve1'), { owner: OWNER });
    expect(server.countCalls('Create')).toBe(1);
    await omni.state.modify(machineKind, 'r', (res) => void (res.spec.node = 'pve1'), { owner: OWNER });
    expect(server.countCalls('Update')).toBe(0);
  });

  it('refuses to write a resource that is tearing down (expected phase running)', async () => {
    await omni.state.create(machineKind, newResource(machineKind, 'r'), { owner: OWNER });
    await omni.state.teardown(machineKind, 'r', { owner: OWNER });
    await expect(omni.state.modify(machineKind, 'r', (res) => void (res.spec.node = 'x'), { owner: OWNER })).rejects.toSatisfy(isPhaseConflict);
  });

  it('adds and removes finalizers with the resource owner ("" for MachineRequests)', async () => {
    omniCreatesRequest('req-1');
    const withFin = await omni.state.addFinalizer(MachineRequestKind, 'req-1', OWNER);
    expect(withFin.metadata.finalizers).toEqual([OWNER]);
    expect(withFin.spec.talosVersion).toBe('v1.9.0');
    await omni.state.addFinalizer(MachineRequestKind, 'req-1', OWNER);
    expect(server.countCalls('Update')).toBe(1);
    const without = await omni.state.removeFinalizer(MachineRequestKind, 'req-1', OWNER);
    expect(without?.metadata.finalizers).toEqual([]);
    expect(await omni.state.removeFinalizer(MachineRequestKind, 'gone', OWNER)).toBeUndefined();
  });
});

describe('teardown', () => {
  it('reports destroy readiness, and falls back to get + update when the server lacks Teardown', async () => {
    await omni.state.create(machineKind, newResource(machineKind, 'a', undefined, { finalizers: ['x'] }), { owner: OWNER });
    expect(await omni.state.teardown(machineKind, 'a', { owner: OWNER })).toBe(false);

    server.teardownImplemented = false;
    await omni.state.create(machineKind, newResource(machineKind, 'b'), { owner: OWNER });
    expect(await omni.state.teardown(machineKind, 'b', { owner: OWNER })).toBe(true);
    expect((await omni.state.get(machineKind, 'b')).metadata.phase).toBe('tearingDown');
    // The switch is permanent: the next teardown does not try the RPC again.
    const teardownCalls = server.countCalls('Teardown');
    await omni.state.create(machineKind, newResource(machineKind, 'c'), { owner: OWNER });
    expect(await omni.state.teardown(machineKind, 'c', { owner: OWNER })).toBe(true);
    expect(server.countCalls('Teardown')).toBe(teardownCalls);
    await omni.state.destroy(machineKind, 'c', { owner: OWNER });
    expect(await omni.state.find(machineKind, 'c')).toBeUndefined();
  });
});

async function take<T>(it: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

function summary(events: WatchEvent<typeof MachineRequestSpecSchema>[]): string[] {
  return events.map((e) => (e.type === 'bootstrapped' ? `bootstrapped${e.resync ? '(resync)' : ''}` : `${e.type} ${e.resource.metadata.id}`));
}


describe('watch', () => {
  it('bootstraps, resumes from the last bookmark after a broken stream, tolerates empty batches', async () => {
    omniCreatesRequest('a');
    omniCreatesRequest('b');
    const watch = omni.state.watch(MachineRequestKind);
    const it = watch[Symbol.asyncIterator]();
    expect(summary(await take(it, 3))).toEqual(['created a', 'created b', 'bootstrapped']);
    expect(server.watchRequests[0]).toMatchObject({ apiVersion: 1, options: { bootstrapContents: true, aggregated: true } });
    expect(server.watchRequests[0]!.id).toBeUndefined();

    server.sendEmptyBatch();
    omniCreatesRequest('c');
    expect(summary(await take(it, 1))).toEqual(['created c']);

    server.breakWatches();
    omniCreatesRequest('d'); // happens while the stream is down: must be replayed from the bookmark
    server.remove(MachineRequestKind.namespace, MachineRequestKind.type, 'a');
    expect(summary(await take(it, 2))).toEqual(['created d', 'destroyed a']);
    const resume = server.watchRequests[1]!;
    expect(resume.options?.bootstrapContents).toBe(false);
    expect(resume.options?.startFromBookmark).toBeDefined();

    omniCreatesRequest('c'); // update of c
    const [upd] = await take(it, 1);
    expect(upd?.type).toBe('updated');
    watch.close();
    expect((await it.next()).done).toBe(true);
  });

  it('resyncs after ERRORED and after a rejected bookmark, reporting what changed meanwhile', async ({ signal }) => {
    omniCreatesRequest('a');
    omniCreatesRequest('b');
    const watch = omni.state.watch(MachineRequestKind);
    const it = watch[Symbol.asyncIterator]();
    await take(it, 3);

    // Lost events: b disappears and e appears without any watcher hearing about it.
    server.removeSilently(MachineRequestKind.namespace, MachineRequestKind.type, 'b');
    omniCreatesRequest('e');
    await take(it, 1); // the live "created e"
    server.removeSilently(MachineRequestKind.namespace, MachineRequestKind.type, 'a');
    server.sendErrored();
    expect(summary(await take(it, 3))).toEqual(['destroyed a', 'destroyed b', 'bootstrapped(resync)']);

    // The stream that got ERRORED is replaced: wait until only the new one is open.
    await waitFor(() => server.openWatches === 1, { what: () => `one open watch (now ${server.openWatches})`, on: [server.watchChanges.trigger], signal });
    server.rejectBookmarks = true;
    server.breakWatches();
    omniCreatesRequest('f');
    const events = summary(await take(it, 2));
    expect(events).toEqual(['created f', 'bootstrapped(resync)']);
    expect(server.watchRequests.at(-1)?.options?.bootstrapContents).toBe(true);
    watch.close();
  });
});

describe('signing on the wire', () => {
  it('sends providerid on State calls only and signs every call with the configured key', async () => {
    const { privateKey } = await openpgp.generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      userIDs: [{ email: 'proxmox@infra-provider.serviceaccount.omni.sidero.dev' }],
      format: 'armored',
      date: new Date('2025-12-01T00:00:00Z'),
    });
    const key = await decodeServiceAccountKey(Buffer.from(JSON.stringify({ name: 'infra-provider:proxmox', pgp_key: privateKey })).toString('base64'), {
      now: new Date(1767225600_000),
    });
    const signed = connectOmni({ endpoint: `http://127.0.0.1:${server.port}`, key, providerId: 'proxmox', now: () => new Date(1767225600_000) });
    try {
      await signed.state.find(MachineRequestKind, 'x');
      await signed.state.list(MachineRequestKind);
      await signed.management.createSchematicFromRaw({ rawSchematic: new TextEncoder().encode('customization: {}\n') });
      const [get, list, mgmt] = server.calls.slice(-3);
      expect(get!.metadata.get('providerid')).toEqual(['proxmox']);
      expect(get!.metadata.get('x-sidero-timestamp')).toEqual(['1767225600']);
      expect(String(get!.metadata.get('x-sidero-payload')[0])).toContain('"method":"/cosi.resource.State/Get"');
      expect(String(list!.metadata.get('x-sidero-payload')[0])).toContain('"method":"/cosi.resource.State/List"');
      expect(String(get!.metadata.get('x-sidero-signature')[0])).toMatch(new RegExp(`^siderov1 infra-provider:proxmox ${key.fingerprint} [A-Za-z0-9+/]+=*$`));
      expect(mgmt!.metadata.get('providerid')).toEqual([]);
      expect(String(mgmt!.metadata.get('x-sidero-payload')[0])).toContain('"method":"/management.ManagementService/CreateSchematicFromRaw"');
      for (const h of ['nodes', 'runtime', 'cluster', 'context']) expect(get!.metadata.get(h)).toEqual([]);
      // A signature that cannot be made (here: clock before the key's creation) fails the call locally as
      // UNAUTHENTICATED; nothing unsigned reaches the server.
      const before = server.calls.length;
      const early = connectOmni({ endpoint: `http://127.0.0.1:${server.port}`, key, now: () => new Date('2020-01-01T00:00:00Z') });
      await expect(early.state.get(MachineRequestKind, 'x')).rejects.toThrow(/UNAUTHENTICATED: signing the request failed/);
      early.close();
      expect(server.calls.length).toBe(before);
    } finally {
      signed.close();
    }
  });
});
