// created/updated on the wire, as a Go COSI client (cosi-project/runtime) sends them: a Create carries both, equal
// to the time the resource was made (resource.NewMetadata stamps time.Now()); an Update echoes the metadata as read.
// The COSI server stamps `created` on Create but keeps the `updated` it is sent, so a Create without it is stored as
// updated at the Unix epoch (what Omni showed as "updated: 1970-01-01").
import { clone, create, equals } from '@bufbuild/protobuf';
import { TimestampSchema, timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectOmni, type OmniClient } from '../../src/cosi/omni-client.js';
import { MachineRequestStatusKind, newResource, providerMachineKind } from '../../src/cosi/resources.js';
import { ResourceSchema, type Resource } from '../../src/gen/cosi/v1alpha1/resource_pb.js';
import { MachineRequestStatusSpecSchema, MachineRequestStatusSpec_Stage } from '../../src/gen/omni/specs/infra_pb.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { startOmniFixture, type OmniFixture } from '../omni/omni-fixture.js';
import { StateServer } from './state-server.js';

const OWNER = 'proxmox.ProvisionController';
const machineKind = providerMachineKind('proxmox');

function ms(t: Timestamp | undefined): number {
  if (t === undefined) throw new Error('timestamp missing on the wire');
  return timestampDate(t).getTime();
}

describe('created/updated sent by the client (wire)', () => {
  let server: StateServer;
  let omni: OmniClient;
  const creates: Resource[] = [];
  const updates: Resource[] = [];

  beforeEach(async () => {
    creates.length = 0;
    updates.length = 0;
    server = new StateServer();
    server.beforeCreate = (r) => void creates.push(clone(ResourceSchema, r));
    server.beforeUpdate = (r) => void updates.push(clone(ResourceSchema, r));
    omni = connectOmni({ endpoint: await server.start(), providerId: 'proxmox' });
  });

  afterEach(async () => {
    omni.close();
    await server.stop();
  });

  it('Create carries created = updated = the time the resource was made', async () => {
    const before = Date.now();
    await omni.state.create(machineKind, newResource(machineKind, 'r-1'), { owner: OWNER });
    // The read-modify-write path creates a missing resource the same way.
    await omni.state.modify(MachineRequestStatusKind, 'r-1', (res) => void (res.spec.stage = MachineRequestStatusSpec_Stage.PROVISIONING), { owner: OWNER });
    const after = Date.now();
    expect(creates).toHaveLength(2);
    for (const r of creates) {
      const m = r.metadata!;
      expect(m.created, 'created').toBeDefined();
      expect(m.updated, 'updated').toBeDefined();
      expect(equals(TimestampSchema, m.created!, m.updated!)).toBe(true);
      expect(ms(m.created)).toBeGreaterThanOrEqual(before);
      expect(ms(m.created)).toBeLessThanOrEqual(after);
    }
  });

  it('Create of a resource built without timestamps still carries both (now)', async () => {
    const bare = newResource(machineKind, 'r-2');
    delete bare.metadata.created;
    delete bare.metadata.updated;
    const before = Date.now();
    await omni.state.create(machineKind, bare, { owner: OWNER });
    const m = creates[0]!.metadata!;
    expect(ms(m.updated)).toBeGreaterThanOrEqual(before);
    expect(ms(m.created)).toBe(ms(m.updated));
  });

  it('Update echoes created and updated exactly as read from the server', async () => {
    await omni.state.create(machineKind, newResource(machineKind, 'r-3'), { owner: OWNER });
    const stored = [...server.store.values()].find((r) => r.metadata?.id === 'r-3')!;
    // Server-side values with nanoseconds, as Omni returns them.
    stored.metadata!.created = create(TimestampSchema, { seconds: 1_700_000_000n, nanos: 123_000_000 });
    stored.metadata!.updated = create(TimestampSchema, { seconds: 1_700_000_100n, nanos: 456_000_000 });
    const read = await omni.state.get(machineKind, 'r-3');
    read.spec.node = 'pve1';
    await omni.state.update(machineKind, read, { owner: OWNER });
    await omni.state.modify(machineKind, 'r-3', (res) => void (res.spec.node = 'pve2'), { owner: OWNER });
    expect(updates).toHaveLength(2);
    const first = updates[0]!.metadata!;
    expect(first.created).toEqual(timestampFromDate(new Date(1_700_000_000_123)));
    expect(first.updated).toEqual(timestampFromDate(new Date(1_700_000_100_456)));
    // The second write read the resource the first one stored: again what the server had.
    const second = updates[1]!.metadata!;
    expect(ms(second.created)).toBe(1_700_000_000_123);
    expect(second.updated).toBeDefined();
  });
});

describe('created/updated as Omni stores them (in-process Omni, COSI in-memory state semantics)', () => {
  let f: OmniFixture;
  beforeEach(async () => {
    f = await startOmniFixture();
  });
  afterEach(async () => {
    await f.close();
  });

  it('a resource the provider creates is not "updated" in 1970', async () => {
    const before = Date.now();
    await f.client.state.modify(
      MachineRequestStatusKind,
      'req-1',
      (res) => {
        res.spec = create(MachineRequestStatusSpecSchema, { stage: MachineRequestStatusSpec_Stage.PROVISIONING });
      },
      { owner: OWNER },
    );
    const stored = f.omni.store.get(NS.infraProvider, TYPES.machineRequestStatus, 'req-1');
    expect(stored.metadata.updated.getTime()).toBeGreaterThanOrEqual(before);
    expect(stored.metadata.created.getTime()).toBeGreaterThanOrEqual(before);
    const afterUpdate = await f.client.state.modify(MachineRequestStatusKind, 'req-1', (res) => void (res.spec.status = 'x'), { owner: OWNER });
    expect(afterUpdate.metadata.created?.getTime()).toBe(stored.metadata.created.getTime());
    expect(afterUpdate.metadata.updated!.getTime()).toBeGreaterThanOrEqual(stored.metadata.updated.getTime());
  });
});
