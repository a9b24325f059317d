import { describe, expect, it } from 'vitest';
import { fromBinary } from '@bufbuild/protobuf';
import { MachineRequestSpecSchema } from '../../src/gen/omni/specs/infra_pb.js';
import { OmniAccess } from '../../src/sim/omni/access.js';
import { INTERNAL_ACTOR, type Caller } from '../../src/sim/omni/auth.js';
import { encodeSpec, OmniControllers } from '../../src/sim/omni/controllers.js';
import { GrpcCode, OmniError } from '../../src/sim/omni/errors.js';
import { LABELS, NS, TYPES } from '../../src/sim/omni/resources.js';
import { CosiStore, type StoreEvent } from '../../src/sim/omni/store.js';

const provider = (id: string): Caller => ({
  kind: 'user',
  identity: `${id}@infra-provider.serviceaccount.omni.sidero.dev`,
  role: 'InfraProvider',
  fingerprint: 'f',
  infraProviderId: id,
});

function setup() {
  const store = new CosiStore();
  const access = new OmniAccess(store);
  const omni = new OmniControllers({ providerId: 'proxmox', store, seed: 7 });
  omni.seed();
  return { store, access, omni };
}

function caught(fn: () => unknown): OmniError {
  try {
    fn();
  } catch (err) {
    if (err instanceof OmniError) return err;
    throw err;
  }
  throw new Error('expected an OmniError');
}

const statusInput = (id: string) => ({
  metadata: { namespace: NS.infraProvider, type: TYPES.infraProviderStatus, id },
  spec: { protoSpec: new Uint8Array(), yamlSpec: '{}\n' },
});

describe('OmniAccess for infra-provider identities', () => {
  it('refuses a provider whose InfraProvider resource does not exist', () => {
    const { access } = setup();
    const err = caught(() => access.list(provider('vsphere'), NS.infraProvider, TYPES.machineRequest));
    expect(err.code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(err.message).toBe('infra provider with name "vsphere" is not registered in the system');
  });

  it('allows only the shared namespaces and its own private namespace with the right type suffix', () => {
    const { access } = setup();
    const p = provider('proxmox');
    const ns = caught(() => access.list(p, 'infra-provider:other', TYPES.machineRequest));
    expect(ns.code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(ns.message).toBe('namespace not allowed, must be one of: infra-provider, infra-provider-ephemeral, infra-provider:proxmox');
    const suffix = caught(() => access.list(p, 'infra-provider:proxmox', 'Machine.other.infraprovider.sidero.dev'));
    expect(suffix.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(suffix.message).toContain('must have a type suffix ".proxmox.infraprovider.sidero.dev"');
    // Private state: no label scoping, no forced label.
    const created = access.create(
      p,
      { metadata: { namespace: 'infra-provider:proxmox', type: 'Machine.proxmox.infraprovider.sidero.dev', id: 'r1' }, spec: { protoSpec: new Uint8Array(), yamlSpec: '{}\n' } },
      { owner: 'proxmox.ProvisionController' },
    );
    expect(created.metadata.labels).toEqual({});
  });

  it('scopes shared namespaces by the provider label and forces it on create', () => {
    const { access, omni, store } = setup();
    const p = provider('proxmox');
    const mine = omni.createMachineRequest('set1');
    // A request for another provider (Omni hands out requests per provider).
    store.create({
      metadata: { namespace: NS.infraProvider, type: TYPES.machineRequest, id: 'foreign', labels: { [LABELS.infraProviderId]: 'other' } },
      spec: encodeSpec(MachineRequestSpecSchema, { talosVersion: 'v1.9.0' }),
    });
    expect(access.list(p, NS.infraProvider, TYPES.machineRequest).map((r) => r.metadata.id)).toEqual([mine.metadata.id]);
    const hidden = caught(() => access.get(p, NS.infraProvider, TYPES.machineRequest, 'foreign'));
    expect(hidden.code).toBe(GrpcCode.NOT_FOUND);
    expect(hidden.message).toBe('not found');

    const status = access.create(p, statusInput('proxmox'));
    expect(status.metadata.labels[LABELS.infraProviderId]).toBe('proxmox');
    const wrongId = caught(() => access.create(p, statusInput('other')));
    expect(wrongId.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(wrongId.message).toBe('resource ID must match the infra provider ID "proxmox"');
  });

  it('lets a provider change only finalizers of a MachineRequest', () => {
    const { access, omni } = setup();
    const p = provider('proxmox');
    const req = omni.createMachineRequest('set1', { talosVersion: 'v1.9.5', extensions: ['siderolabs/qemu-guest-agent'] });
    const id = req.metadata.id;
    const fin = access.get(p, NS.infraProvider, TYPES.machineRequest, id);
    fin.metadata.finalizers.push('proxmox.ProvisionController');
    expect(access.update(p, fin, { owner: '' }).metadata.finalizers).toEqual(['proxmox.ProvisionController']);

    const relabel = access.get(p, NS.infraProvider, TYPES.machineRequest, id);
    relabel.metadata.labels.extra = 'x';
    const err = caught(() => access.update(p, relabel, { owner: '' }));
    expect(err.code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(err.message).toBe('infra providers are not allowed to update "MachineRequests.omni.sidero.dev" resources other than setting finalizers');

    expect(caught(() => access.teardown(p, NS.infraProvider, TYPES.machineRequest, id)).code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(caught(() => access.destroy(p, NS.infraProvider, TYPES.machineRequest, id)).message).toBe(
      'infra providers are not allowed to destroy "MachineRequests.omni.sidero.dev" resources',
    );
    expect(caught(() => access.create(p, { ...req, metadata: { ...req.metadata, id: 'new' } })).message).toBe(
      'infra providers are not allowed to create "MachineRequests.omni.sidero.dev" resources',
    );
  });

  it('validates MachineRequests for users: semver talos version on create, immutable spec', () => {
    const { access } = setup();
    const operator: Caller = { kind: 'user', identity: 'op@example.com', role: 'Operator', fingerprint: 'x' };
    const bad = caught(() =>
      access.create(operator, {
        metadata: { namespace: NS.infraProvider, type: TYPES.machineRequest, id: 'r' },
        spec: encodeSpec(MachineRequestSpecSchema, { talosVersion: 'latest' }),
      }),
    );
    expect(bad.code).toBe(GrpcCode.INVALID_ARGUMENT);
    expect(bad.message).toContain('invalid talos version format: "latest"');
    const ok = access.create(operator, {
      metadata: { namespace: NS.infraProvider, type: TYPES.machineRequest, id: 'r', labels: { [LABELS.infraProviderId]: 'proxmox' } },
      spec: encodeSpec(MachineRequestSpecSchema, { talosVersion: '1.9' }),
    });
    expect(fromBinary(MachineRequestSpecSchema, ok.spec.protoSpec).talosVersion).toBe('1.9');
    const changed = { ...ok, spec: encodeSpec(MachineRequestSpecSchema, { talosVersion: 'v1.10.0' }) };
    expect(caught(() => access.update(operator, changed)).message).toBe('failed to validate: machine request spec is immutable');
    const reader: Caller = { ...operator, role: 'Reader' };
    expect(caught(() => access.update(reader, ok)).message).toBe(
      'only operators and admins are allowed to modify "MachineRequests.omni.sidero.dev" resources',
    );
  });

  it("applies Omni's role rules to its own kinds", () => {
    const { access } = setup();
    const p = provider('proxmox');
    expect(access.get(p, NS.default, TYPES.siderolinkApiConfig, 'siderolink-config').metadata.id).toBe('siderolink-config');
    expect(access.list(p, NS.meta, TYPES.resourceDefinition).map((r) => r.metadata.id)).toContain('providerjoinconfigs.omni.sidero.dev');
    const write = caught(() =>
      access.create(p, { metadata: { namespace: NS.default, type: TYPES.featuresConfig, id: 'x' }, spec: { protoSpec: new Uint8Array(), yamlSpec: '' } }),
    );
    expect(write.message).toBe('only read access is permitted');
    const users = caught(() => access.list(p, NS.default, 'Users.omni.sidero.dev'));
    expect(users.code).toBe(GrpcCode.PERMISSION_DENIED);
    expect(users.message).toBe('no access is permitted');
    const none: Caller = { kind: 'user', identity: 'x', role: 'None', fingerprint: 'x' };
    expect(caught(() => access.get(none, NS.default, TYPES.siderolinkApiConfig, 'siderolink-config')).message).toBe(
      'unauthorized: access denied: insufficient role: "None"',
    );
    expect(access.list(INTERNAL_ACTOR, NS.default, 'Users.omni.sidero.dev')).toEqual([]);
  });

  it('filters aggregated watch batches by provider label, which can leave a batch empty', async () => {
    const { access, store, omni } = setup();
    const batches: StoreEvent[][] = [];
    let wake: () => void = () => {};
    access.watchKind(provider('proxmox'), NS.infraProvider, TYPES.machineRequest, { bootstrapBookmark: true }, (events) => {
      batches.push(events);
      wake();
    });
    const waitFor = (n: number) => new Promise<void>((resolve) => {
      wake = () => batches.length >= n && resolve();
      wake();
    });
    await waitFor(1);
    store.create({
      metadata: { namespace: NS.infraProvider, type: TYPES.machineRequest, id: 'foreign', labels: { [LABELS.infraProviderId]: 'other' } },
      spec: encodeSpec(MachineRequestSpecSchema, { talosVersion: 'v1.9.0' }),
    });
    await waitFor(2);
    const mine = omni.createMachineRequest('set1');
    await waitFor(3);
    expect(batches.map((b) => b.map((e) => `${e.type}:${e.resource?.metadata.id ?? ''}`))).toEqual([
      ['noop:'],
      [],
      [`created:${mine.metadata.id}`],
    ]);
  });
});
