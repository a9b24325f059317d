// The Go provider's machine-set pools (private-state field 12), against the simulator over HTTPS: a VM joins the set's
// pool when it exists (none is created), the pool is recorded before the create, and a teardown removes it exactly as
// the Go provider would: only with its comment, only once empty, never a pool someone else made. A state the Go
// provider wrote with field 12 keeps it through our decoding and encoding.
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { MachineSpecSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import { emptyMachineState, machineSpecFromState, machineStateFromSpec } from '../../src/provision/machineState.js';
import { GO_PROVIDER_POOL_COMMENT } from '../../src/provision/pools.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { basicData, providerToken, request, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Pool.Allocate on /pool for the provider's user and token (its privsep token holds the intersection). */
function allowPoolAllocate(harness: PveHarness): void {
  for (const ugid of ['omni@pve', providerToken.tokenId]) harness.sim.access.grant('/pool', ugid, { privs: ['Pool.Allocate', 'Pool.Audit'] });
}

const teardown = (harness: PveHarness, id: string, state: ReturnType<typeof emptyMachineState>) =>
  harness.provisioner.deprovision({ requestId: id, state, log: silentLogger });

describe('private-state field 12 (pool)', () => {
  it('a state the Go provider wrote with field 12 is read and written back with it', () => {
    const goBytes = toBinary(MachineSpecSchema, create(MachineSpecSchema, { uuid: 'u', node: 'pve1', vmid: 101, pool: 'workers' }));
    const state = machineStateFromSpec(fromBinary(MachineSpecSchema, goBytes));
    expect(state.pool).toBe('workers');
    const again = fromBinary(MachineSpecSchema, toBinary(MachineSpecSchema, machineSpecFromState(state)));
    expect(again.pool).toBe('workers');
    expect(again.$unknown ?? []).toEqual([]);
  });
});

describe('machine-set pools', () => {
  it('a set moved from the Go provider: VMs join its pool; the last teardown removes the empty pool, not before', async () => {
    h = await startPveHarness({ fixture: { pools: [{ poolid: 'workers', comment: GO_PROVIDER_POOL_COMMENT }] } });
    const harness = h;
    allowPoolAllocate(harness);
    const a = await runSteps(harness.provisioner, request('w-a', basicData, 'workers'));
    const b = await runSteps(harness.provisioner, request('w-b', basicData, 'workers'));
    expect(a.pool).toBe('workers');
    expect(harness.sim.vm(a.vmid)).toBeDefined();
    expect(harness.sim.state.vms.get(a.vmid)?.pool).toBe('workers');
    expect(harness.sim.state.vms.get(b.vmid)?.pool).toBe('workers');
    const post = harness.sim.requests.find((r) => r.method === 'POST' && r.route === '/nodes/{node}/qemu');
    expect(post?.params.pool).toBe('workers');

    await teardown(harness, 'w-a', a);
    expect(harness.sim.state.pools.has('workers')).toBe(true); // w-b is still in it
    await teardown(harness, 'w-b', b);
    expect(harness.sim.state.pools.has('workers')).toBe(false);
    expect(harness.sim.events.filter((e) => e.kind === 'pool-deleted')).toHaveLength(1);
    expect(writeCalls(harness.sim).filter((r) => r.method === 'POST' && r.path === '/pools')).toEqual([]); // none created
  });

  it('a pool named like the set but made by someone else is joined and never removed; no set pool means no pool', async () => {
    h = await startPveHarness({ fixture: { pools: [{ poolid: 'workers', comment: 'ops team' }] } });
    const harness = h;
    allowPoolAllocate(harness);
    const joined = await runSteps(harness.provisioner, request('w-a', basicData, 'workers'));
    expect(joined.pool).toBe('workers');
    await teardown(harness, 'w-a', joined);
    expect(harness.sim.state.pools.has('workers')).toBe(true);
    const none = await runSteps(harness.provisioner, request('c-a', basicData, 'controlplanes'));
    expect(none.pool).toBe('');
    expect(harness.sim.state.vms.get(none.vmid)?.pool).toBeUndefined();
    expect(writeCalls(harness.sim).some((r) => r.method === 'DELETE' && r.path.startsWith('/pools'))).toBe(false);
  });

  it('a teardown of a Go state (field 12) leaves a Go pool that still has a member, and one the token may not delete', async () => {
    h = await startPveHarness({ fixture: { pools: [{ poolid: 'set-a', comment: GO_PROVIDER_POOL_COMMENT }] } });
    const harness = h;
    allowPoolAllocate(harness);
    const mine = await runSteps(harness.provisioner, request('a-1', basicData, 'set-a'));
    const other = harness.sim.externalCreateVm({ node: 'pve1', name: 'someone-elses' });
    harness.sim.state.vms.get(other)!.pool = 'set-a';
    await teardown(harness, 'a-1', mine);
    expect(harness.sim.state.pools.has('set-a')).toBe(true);
    expect(harness.sim.vm(other)).toBeDefined();

    // Empty now, but the token lacks Pool.Allocate on it: logged, the teardown still succeeds.
    harness.sim.externalDeleteVm(other);
    const again = await runSteps(harness.provisioner, request('a-2', basicData, 'set-a'));
    harness.sim.access.revokeAll(providerToken.tokenId, '/pool');
    await teardown(harness, 'a-2', again);
    expect(harness.sim.state.pools.has('set-a')).toBe(true);
    const refused = harness.sim.requests.filter((r) => r.method === 'DELETE' && r.path === '/pools/set-a');
    expect(refused.map((r) => r.status)).toEqual([403]);
  });
});
