import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { fromBinary } from '@bufbuild/protobuf';
import { createServiceClient, isServiceError, openOmniChannel, type OmniChannel } from '../../src/cosi/grpc.js';
import { EventType, State } from '../../src/gen/cosi/v1alpha1/state_pb.js';
import { MachineRequestStatusSpecSchema, MachineRequestStatusSpec_Stage } from '../../src/gen/omni/specs/infra_pb.js';
import { BootAssetURLRequest_BootAssetKind, ManagementService } from '../../src/gen/omni/management/management_pb.js';
import { encodeJoinToken } from '../../src/sim/omni/jointoken.js';
import { encodeSpec } from '../../src/sim/omni/controllers.js';
import { FINALIZERS, LABELS, NS, TYPES } from '../../src/sim/omni/resources.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/server.js';
import type { CosiStore } from '../../src/sim/omni/store.js';
import { storeChanges, waitFor } from '../helpers/wait.js';
import { decodeKeyString, signedMetadata, type DecodedKey } from './sign-fixture.js';

const P = 'proxmox';
const CTRL = 'proxmox.ProvisionController';

/** Waits until `check` holds, re-checking on every write to the store (no deadline: the test's timeout is the bound). */
function until(store: CosiStore, check: () => boolean, what: string): Promise<unknown> {
  return waitFor(() => check() || undefined, { what, on: [storeChanges(store)] });
}

async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    if (isServiceError(err)) return err;
    throw err;
  }
  throw new Error('expected the call to fail');
}

describe('in-process Omni over gRPC', () => {
  let omni: InProcessOmni;
  let channel: OmniChannel;
  let key: DecodedKey;
  let state: ReturnType<typeof createServiceClient<typeof State>>;
  let mgmt: ReturnType<typeof createServiceClient<typeof ManagementService>>;

  const signed = async (method: string) => {
    const md = new grpc.Metadata();
    for (const [k, values] of Object.entries(await signedMetadata(method, key))) for (const v of values) md.add(k, v);
    return { metadata: md };
  };

  beforeAll(async () => {
    omni = await startInProcessOmni({ providerId: P, seed: 42 });
    key = await decodeKeyString(await omni.createProviderKey(P));
    channel = openOmniChannel(omni.endpoint);
    state = createServiceClient(State, { channel: channel.channel });
    mgmt = createServiceClient(ManagementService, { channel: channel.channel });
  });

  afterAll(async () => {
    state.close();
    mgmt.close();
    channel.close();
    await omni.close();
  });

  async function collect<T>(stream: AsyncIterable<T>, n: number): Promise<T[]> {
    const out: T[] = [];
    for await (const item of stream) {
      out.push(item);
      if (out.length >= n) break;
    }
    return out;
  }

  it('rejects unsigned calls with UNAUTHENTICATED "invalid signature"', async () => {
    const err = await failure(state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: P }));
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(err.details).toBe('invalid signature');
  });

  it('lists resource definitions (v2 token mode) and reads the join inputs', async () => {
    const rds = await collect(state.list({ namespace: NS.meta, type: TYPES.resourceDefinition }, await signed('/cosi.resource.State/List')), 100);
    expect(rds.map((r) => r.resource?.metadata?.id)).toContain('providerjoinconfigs.omni.sidero.dev');
    const pjc = await state.get({ namespace: NS.infraProvider, type: TYPES.providerJoinConfig, id: P }, await signed('/cosi.resource.State/Get'));
    expect(pjc.resource?.metadata?.version).toBe('1');
    expect(pjc.resource?.metadata?.labels[LABELS.infraProviderId]).toBe(P);
  });

  it('creates the provider status with a forced label and refuses a foreign ID', async () => {
    const spec = encodeSpec(MachineRequestStatusSpecSchema, {});
    const created = await state.create(
      { resource: { metadata: { namespace: NS.infraProvider, type: TYPES.infraProviderStatus, id: P, version: 'undefined', phase: 'running' }, spec }, options: { owner: '' } },
      await signed('/cosi.resource.State/Create'),
    );
    expect(created.resource?.metadata?.labels[LABELS.infraProviderId]).toBe(P);
    const err = await failure(
      state.create(
        { resource: { metadata: { namespace: NS.infraProvider, type: TYPES.infraProviderStatus, id: 'nope', version: 'undefined', phase: 'running' }, spec } },
        await signed('/cosi.resource.State/Create'),
      ),
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    const badVersion = await failure(
      state.create(
        { resource: { metadata: { namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id: 'x', version: '', phase: 'running' }, spec } },
        await signed('/cosi.resource.State/Create'),
      ),
    );
    expect(badVersion.code).toBe(grpc.status.UNKNOWN);
    expect(badVersion.details).toContain('error parsing version');
  });

  it('streams a watch: empty first response, NOOP bookmark, then live events; the stream can be cut', async () => {
    const stream = state.watch(
      { namespace: NS.infraProvider, type: TYPES.machineRequest, apiVersion: 1, options: { aggregated: true, bootstrapBookmark: true } },
      await signed('/cosi.resource.State/Watch'),
    );
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value?.event).toEqual([]);
    const noop = await it.next();
    expect(noop.value?.event.map((e: { eventType: EventType }) => e.eventType)).toEqual([EventType.NOOP]);
    const bookmark = noop.value?.event[0]?.bookmark;
    expect(bookmark?.length).toBe(16);

    const req = omni.controllers.createMachineRequest('set1', { talosVersion: 'v1.9.5' });
    const created = await it.next();
    expect(created.value?.event[0]?.eventType).toBe(EventType.CREATED);
    expect(created.value?.event[0]?.resource?.metadata?.id).toBe(req.metadata.id);
    expect(created.value?.event[0]?.resource?.metadata?.labels[LABELS.machineRequestSet]).toBe('set1');

    expect(omni.controllers.cutWatchStreams()).toBe(1);
    const cut = await it.next().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isServiceError(cut) && cut.code).toBe(grpc.status.UNAVAILABLE);

    // Resume from the NOOP bookmark: the CREATED event is replayed.
    const resumed = state.watch(
      { namespace: NS.infraProvider, type: TYPES.machineRequest, apiVersion: 1, options: { aggregated: true, startFromBookmark: bookmark } },
      await signed('/cosi.resource.State/Watch'),
    );
    const [, replay] = await collect(resumed, 2);
    resumed.cancel();
    expect(replay?.event.map((e) => e.resource?.metadata?.id)).toEqual([req.metadata.id]);
  });

  it('hides BOOTSTRAPPED from api_version 0, treats id "" as a single-resource watch, and can inject ERRORED', async () => {
    omni.controllers.createMachineRequest('set5');
    const old = state.watch(
      { namespace: NS.infraProvider, type: TYPES.machineRequest, apiVersion: 0, options: { bootstrapContents: true, aggregated: true } },
      await signed('/cosi.resource.State/Watch'),
    );
    const [, bootstrap] = await collect(old, 2);
    old.cancel();
    const types = bootstrap?.event.map((e) => e.eventType) ?? [];
    expect(types.length).toBeGreaterThan(0);
    expect(types.every((t) => t === EventType.CREATED)).toBe(true);

    // In the provider's private namespace (no label scoping) the single-resource watch shows its DESTROYED tombstone.
    const single = state.watch(
      { namespace: 'infra-provider:proxmox', type: 'Machine.proxmox.infraprovider.sidero.dev', id: '', apiVersion: 1 },
      await signed('/cosi.resource.State/Watch'),
    );
    const [, tomb] = await collect(single, 2);
    single.cancel();
    expect(tomb?.event[0]?.eventType).toBe(EventType.DESTROYED);
    expect(tomb?.event[0]?.resource?.metadata?.version).toBe('undefined');

    const live = state.watch(
      { namespace: NS.infraProvider, type: TYPES.machineRequest, apiVersion: 1, options: { aggregated: true } },
      await signed('/cosi.resource.State/Watch'),
    );
    const iter = live[Symbol.asyncIterator]();
    await iter.next();
    // The server registers the stream for faults in the same turn as it sends the empty confirmation just read.
    expect(omni.faults.openWatchCount()).toBeGreaterThan(0);
    expect(omni.faults.injectErroredEvent('buffer overrun: test')).toBeGreaterThan(0);
    const errored = await iter.next();
    live.cancel();
    expect(errored.value?.event[0]?.eventType).toBe(EventType.ERRORED);
    expect(errored.value?.event[0]?.error).toBe('buffer overrun: test');
  });

  it('answers a bad bookmark with FAILED_PRECONDITION as the first receive', async () => {
    const stream = state.watch(
      { namespace: NS.infraProvider, type: TYPES.machineRequest, apiVersion: 1, options: { startFromBookmark: new Uint8Array(16) } },
      await signed('/cosi.resource.State/Watch'),
    );
    const err = await collect(stream, 1).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isServiceError(err) && err.code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it('runs the finalizer/teardown dance of a request with Omni holding the status finalizer', async () => {
    omni.controllers.holdMachineRequestStatuses();
    const req = omni.controllers.createMachineRequest('set2');
    const id = req.metadata.id;
    const get = async () => (await state.get({ namespace: NS.infraProvider, type: TYPES.machineRequest, id }, await signed('/cosi.resource.State/Get'))).resource;

    // Provider adds its finalizer with the request's owner ("").
    const current = await get();
    current?.metadata?.finalizers.push(CTRL);
    await state.update({ newResource: current, options: { owner: '' } }, await signed('/cosi.resource.State/Update'));

    // Provider creates the status; Omni's cleanup controller puts its finalizer on it.
    const mrsSpec = encodeSpec(MachineRequestStatusSpecSchema, { stage: MachineRequestStatusSpec_Stage.PROVISIONING });
    await state.create(
      { resource: { metadata: { namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id, version: 'undefined', phase: 'running' }, spec: mrsSpec }, options: { owner: CTRL } },
      await signed('/cosi.resource.State/Create'),
    );
    await until(omni.store, () => omni.store.get(NS.infraProvider, TYPES.machineRequestStatus, id).metadata.finalizers.length > 0, 'the cleanup finalizer');
    expect(omni.store.get(NS.infraProvider, TYPES.machineRequestStatus, id).metadata.finalizers).toEqual([FINALIZERS.machineRequestStatusCleanup]);

    // Omni scales down.
    const deleted = omni.controllers.deleteMachineRequest(id);
    await until(omni.store, () => omni.store.get(NS.infraProvider, TYPES.machineRequest, id).metadata.phase === 'tearingDown', 'the request to tear down');
    expect((await get())?.metadata?.phase).toBe('tearingDown');

    const teardown = async () =>
      (await state.teardown({ namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id, options: { owner: CTRL } }, await signed('/cosi.resource.State/Teardown'))).destroyReady;
    expect(await teardown()).toBe(false);
    const early = await failure(state.destroy({ namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id, options: { owner: CTRL } }, await signed('/cosi.resource.State/Destroy')));
    expect(early.code).toBe(grpc.status.FAILED_PRECONDITION);
    omni.controllers.releaseMachineRequestStatus(id);
    expect(await teardown()).toBe(true);
    await state.destroy({ namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id, options: { owner: CTRL } }, await signed('/cosi.resource.State/Destroy'));

    // Provider drops its finalizer; Omni destroys the request.
    const last = await get();
    if (last?.metadata) last.metadata.finalizers = [];
    await state.update({ newResource: last, options: { owner: '' } }, await signed('/cosi.resource.State/Update'));
    await deleted;
    expect(omni.controllers.machineRequest(id)).toBeUndefined();
    const gone = await failure(get());
    expect(gone.code).toBe(grpc.status.NOT_FOUND);
  });

  it('registers a machine that joins with a valid per-request v2 token and refuses a forged one', async () => {
    const extra = { [LABELS.infraProviderId]: P, [LABELS.machineRequest]: 'set3-abcdef' };
    const reg = omni.controllers.machineJoins('3f1c-uuid', encodeJoinToken(omni.controllers.providerJoinToken, '2', extra));
    expect(reg.metadata.labels).toEqual(extra);
    const listed = await collect(
      state.list(
        { namespace: NS.infraProvider, type: TYPES.infraMachineRegistration, options: { labelQuery: [{ terms: [{ key: LABELS.machineRequest, op: 1, value: ['set3-abcdef'] }] }] } },
        await signed('/cosi.resource.State/List'),
      ),
      10,
    );
    expect(listed.map((r) => r.resource?.metadata?.id)).toEqual(['3f1c-uuid']);
    expect(() => omni.controllers.machineJoins('x', encodeJoinToken('wrong-token', '2', extra))).toThrow('unauthorized');
    // v1 tokens are checked against Omni's default join token.
    const v1 = encodeJoinToken(omni.controllers.defaultJoinToken, '1', { [LABELS.infraProviderId]: P });
    expect(omni.controllers.machineJoins('legacy-uuid', v1).metadata.labels[LABELS.infraProviderId]).toBe(P);
  });

  it('serves schematics through Omni and the factory, with ids the factory can serve images for', async () => {
    const yaml = 'customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/qemu-guest-agent\n';
    const res = await mgmt.createSchematicFromRaw(
      { rawSchematic: new TextEncoder().encode(yaml), talosVersion: 'v1.9.5' },
      await signed('/management.ManagementService/CreateSchematicFromRaw'),
    );
    expect(res.schematicId).toBe(createHash('sha256').update(yaml).digest('hex'));
    expect(omni.factory.registry.get(res.schematicId)?.talosVersion).toBe('v1.9.5');
    const bad = await failure(
      mgmt.createSchematicFromRaw({ rawSchematic: new TextEncoder().encode('customization:\n  bogus: 1\n') }, await signed('/management.ManagementService/CreateSchematicFromRaw')),
    );
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);

    const asset = await mgmt.getBootAssetURL(
      { schematicId: res.schematicId, talosVersion: '1.9.5', bootAssetKind: BootAssetURLRequest_BootAssetKind.ISO, platform: 'nocloud', architecture: 'amd64' },
      await signed('/management.ManagementService/GetBootAssetURL'),
    );
    expect(asset.url).toBe(`${omni.factoryUrl}/image/${res.schematicId}/v1.9.5/nocloud-amd64.iso`);
    const image = await fetch(asset.url);
    expect(image.status).toBe(200);
    const bytes = Buffer.from(await image.arrayBuffer());
    const again = Buffer.from(await (await fetch(asset.url)).arrayBuffer());
    expect(bytes.length).toBeGreaterThan(0);
    expect(bytes.equals(again)).toBe(true);

    const posted = await fetch(`${omni.factoryUrl}/schematics`, { method: 'POST', body: 'customization: {}\n', headers: { 'content-type': 'application/yaml' } });
    expect(posted.status).toBe(201);
    const body = (await posted.json()) as { id: string };
    expect(body.id).toBe(createHash('sha256').update('customization: {}\n').digest('hex'));
    expect((await fetch(`${omni.factoryUrl}/image/${'0'.repeat(64)}/v1.9.5/nocloud-amd64.iso`)).status).toBe(404);
  });

  it('serves a stale read once, so an Update built on it hits a version conflict', async () => {
    const req = omni.controllers.createMachineRequest('set4');
    const id = req.metadata.id;
    omni.store.addFinalizer(NS.infraProvider, TYPES.machineRequest, id, 'omni-internal');
    omni.faults.serveStaleReads(TYPES.machineRequest, 1);
    const get = async () => (await state.get({ namespace: NS.infraProvider, type: TYPES.machineRequest, id }, await signed('/cosi.resource.State/Get'))).resource;
    const stale = await get();
    expect(stale?.metadata?.version).toBe('1');
    stale?.metadata?.finalizers.push(CTRL);
    const conflict = await failure(state.update({ newResource: stale, options: { owner: '' } }, await signed('/cosi.resource.State/Update')));
    expect(conflict.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(conflict.details).toContain('update conflict: expected version "1", actual version "2"');
    const fresh = await get();
    expect(fresh?.metadata?.version).toBe('2');
    fresh?.metadata?.finalizers.push(CTRL);
    const updated = await state.update({ newResource: fresh, options: { owner: '' } }, await signed('/cosi.resource.State/Update'));
    expect(updated.resource?.metadata?.finalizers).toEqual(['omni-internal', CTRL]);
  });

  it('fails planned calls with the planned status', async () => {
    omni.faults.failNext('Get', grpc.status.INTERNAL, 'boom');
    const err = await failure(state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: P }, await signed('/cosi.resource.State/Get')));
    expect(err.code).toBe(grpc.status.INTERNAL);
    expect(err.details).toBe('boom');
    const ok = await state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: P }, await signed('/cosi.resource.State/Get'));
    expect(ok.resource?.metadata?.id).toBe(P);
  });

  it('can be made unavailable for a while', async () => {
    omni.controllers.makeUnavailable();
    const err = await failure(state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: P }, await signed('/cosi.resource.State/Get')));
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    omni.controllers.restoreService();
    const ok = await state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: P }, await signed('/cosi.resource.State/Get'));
    expect(ok.resource?.metadata?.id).toBe(P);
  });
});

describe('in-process Omni emulating an old release', () => {
  it('answers UNIMPLEMENTED for Teardown and the management RPCs, and omits the ProviderJoinConfig definition', async () => {
    const omni = await startInProcessOmni({
      legacy: true,
      capabilities: { teardownRpc: false, createSchematicFromRaw: false, getBootAssetUrl: false },
    });
    const key = await decodeKeyString(await omni.createProviderKey('proxmox'));
    const channel = openOmniChannel(omni.endpoint);
    const state = createServiceClient(State, { channel: channel.channel });
    const mgmt = createServiceClient(ManagementService, { channel: channel.channel });
    const signed = async (method: string) => {
      const md = new grpc.Metadata();
      for (const [k, values] of Object.entries(await signedMetadata(method, key))) for (const v of values) md.add(k, v);
      return { metadata: md };
    };
    try {
      const td = await failure(state.teardown({ namespace: NS.infraProvider, type: TYPES.machineRequestStatus, id: 'x' }, await signed('/cosi.resource.State/Teardown')));
      expect(td.code).toBe(grpc.status.UNIMPLEMENTED);
      const cs = await failure(mgmt.createSchematicFromRaw({ rawSchematic: new Uint8Array() }, await signed('/management.ManagementService/CreateSchematicFromRaw')));
      expect(cs.code).toBe(grpc.status.UNIMPLEMENTED);
      const ids: string[] = [];
      for await (const r of state.list({ namespace: NS.meta, type: TYPES.resourceDefinition }, await signed('/cosi.resource.State/List'))) {
        ids.push(r.resource?.metadata?.id ?? '');
      }
      expect(ids).toContain('connectionparams.omni.sidero.dev');
      expect(ids).not.toContain('providerjoinconfigs.omni.sidero.dev');
      const status = fromBinary(MachineRequestStatusSpecSchema, new Uint8Array());
      expect(status.stage).toBe(MachineRequestStatusSpec_Stage.UNKNOWN);
    } finally {
      state.close();
      mgmt.close();
      channel.close();
      await omni.close();
    }
  });

  it('serves gRPC over TLS with a self-signed certificate', async () => {
    const omni = await startInProcessOmni({ tls: true });
    const key = await decodeKeyString(await omni.createProviderKey('proxmox'));
    const channel = openOmniChannel(omni.endpoint, { caCertificates: Buffer.from(omni.tlsCertificate ?? '') });
    const state = createServiceClient(State, { channel: channel.channel });
    try {
      expect(omni.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const md = new grpc.Metadata();
      for (const [k, values] of Object.entries(await signedMetadata('/cosi.resource.State/Get', key))) for (const v of values) md.add(k, v);
      const res = await state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: 'proxmox' }, { metadata: md });
      expect(res.resource?.metadata?.id).toBe('proxmox');
    } finally {
      state.close();
      channel.close();
      await omni.close();
    }
  });
});
