// The simulator's HA API: resources on every version, rules on PVE 9, groups on PVE 8, with pve-ha-manager's checks
// and texts, and what HA does to the VM (requested state, node affinity, destroy needs purge).
import { describe, expect, it } from 'vitest';
import { call, newSim, omniToken } from './helpers.js';

describe('HA resources (both versions)', () => {
  it.each(['pve9', 'pve8.4'] as const)('%s: create, already defined, read, update with digest, delete', async (versionProfile) => {
    const { sim } = newSim({ versionProfile });
    expect((await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:100', state: 'started', max_restart: 2, comment: 'x' })).status).toBe(200);
    const again = await call(sim, 'POST', '/cluster/ha/resources', { sid: '100' });
    expect([again.status, again.reason]).toEqual([500, "create resource failed: resource ID 'vm:100' already defined"]);
    const read = await call(sim, 'GET', '/cluster/ha/resources/vm:100');
    const data = read.json?.data as Record<string, unknown>;
    expect(data).toMatchObject({ sid: 'vm:100', type: 'vm', state: 'started', max_restart: 2, comment: 'x' });
    expect(data['digest']).toMatch(/^[0-9a-f]{40}$/);
    expect((await call(sim, 'PUT', '/cluster/ha/resources/vm:100', { max_restart: 3, digest: String(data['digest']) })).status).toBe(200);
    const stale = await call(sim, 'PUT', '/cluster/ha/resources/vm:100', { max_restart: 4, digest: String(data['digest']) });
    expect(stale.reason).toBe('update resources config failed: detected modified configuration - file changed by other user? Try again.');
    expect((await call(sim, 'GET', '/cluster/ha/resources/vm:999')).reason).toBe("no such resource 'vm:999'");
    expect((await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:555' })).reason).toBe("resource 'vm:555' does not exist in cluster");
    expect((await call(sim, 'POST', '/cluster/ha/resources', { sid: '555' })).reason).toBe('unable to detect SID from VMID - VM/CT 555 does not exist');
    expect((await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm 1' })).json?.errors).toEqual({ sid: 'invalid format - value does not look like a valid ha resource id' });
    expect((await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:101', state: 'on' })).json?.errors?.['state']).toMatch(/enumeration/);
    expect((await call(sim, 'DELETE', '/cluster/ha/resources/vm:100')).status).toBe(200);
    expect((await call(sim, 'DELETE', '/cluster/ha/resources/vm:100')).reason).toBe("cannot delete service 'vm:100', not HA managed!");
    expect(sim.vm(100)).toBeDefined();
  });

  it('writes need Sys.Console on /, reads Sys.Audit (the provider role has Sys.Audit only)', async () => {
    const { sim } = newSim();
    expect((await call(sim, 'GET', '/cluster/ha/resources', {}, omniToken)).status).toBe(200);
    const r = await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:100' }, omniToken);
    expect([r.status, r.reason]).toEqual([403, 'Permission check failed (/, Sys.Console)']);
    expect(sim.ha.resources.size).toBe(0);
  });

  it('PVE 8 knows no failback on a resource and no purge on delete; PVE 9 refuses a group once groups are migrated', async () => {
    const pve8 = newSim({ versionProfile: 'pve8.4' }).sim;
    expect((await call(pve8, 'POST', '/cluster/ha/resources', { sid: 'vm:100', failback: 1 })).json?.errors).toEqual({
      failback: 'property is not defined in schema and the schema does not allow additional properties',
    });
    const pve9 = newSim().sim;
    expect((await call(pve9, 'POST', '/cluster/ha/resources', { sid: 'vm:100', group: 'g1' })).reason).toBe(
      "invalid parameter 'group': ha groups have been migrated to rules",
    );
  });

  it('an HA-managed VM cannot be destroyed without purge; purge removes it from HA and from its rules (PVE 9)', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:101', state: 'stopped' });
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:100', state: 'ignored' });
    expect((await call(sim, 'POST', '/cluster/ha/rules', { rule: 'keep', type: 'resource-affinity', resources: 'vm:100,vm:101', affinity: 'negative' })).status).toBe(200);
    const r = await call(sim, 'DELETE', '/nodes/pve2/qemu/101');
    expect(r.reason).toBe('unable to remove VM 101 - used in HA resources and purge parameter not set.');
    expect((await call(sim, 'DELETE', '/nodes/pve2/qemu/101', { purge: 1 })).status).toBe(200);
    await sim.settle();
    expect(sim.ha.resources.has('vm:101')).toBe(false);
    expect([...sim.ha.rules.get('keep')!.resources]).toEqual(['vm:100']);
    // The rule is kept with one resource, and reported ineffective.
    const rule = (await call(sim, 'GET', '/cluster/ha/rules/keep')).json?.data as Record<string, unknown>;
    expect(rule['errors']).toEqual({ resources: 'rule is ineffective as there are less than two resources' });
    // DELETE of the last resource with purge deletes the rule left empty.
    await call(sim, 'DELETE', '/cluster/ha/resources/vm:100', { purge: 1 });
    expect(sim.ha.rules.size).toBe(0);
  });
});

describe('HA rules (PVE 9)', () => {
  it('create, already defined, unmanaged resources, unknown nodes, infeasible, add a member with the digest', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:100', state: 'ignored' });
    const create = (p: Record<string, string | number>) => call(sim, 'POST', '/cluster/ha/rules', p);
    expect((await create({ rule: 'omni-set-naff', type: 'node-affinity', resources: 'vm:100', nodes: 'pve1,pve2', strict: 1 })).status).toBe(200);
    expect((await create({ rule: 'omni-set-naff', type: 'node-affinity', resources: 'vm:100', nodes: 'pve1' })).reason).toBe(
      "create ha rule failed: HA rule 'omni-set-naff' already defined",
    );
    expect((await create({ rule: 'r2', type: 'node-affinity', resources: 'vm:101', nodes: 'pve1' })).reason).toBe(
      'create ha rule failed: cannot use unmanaged resource(s) vm:101.',
    );
    expect((await create({ rule: 'r3', type: 'node-affinity', resources: 'vm:100', nodes: 'pve9' })).reason).toBe(
      'create ha rule failed: cannot use non-existent node(s) pve9.',
    );
    expect((await create({ rule: 'r4', type: 'resource-affinity', resources: 'vm:100', affinity: 'negative' })).reason).toBe(
      "create ha rule failed: Rule 'r4' is invalid.",
    );
    expect((await create({ rule: '1r', type: 'node-affinity', resources: 'vm:100', nodes: 'pve1' })).json?.errors).toEqual({
      rule: "invalid format - invalid configuration ID '1r'",
    });
    expect((await call(sim, 'GET', '/cluster/ha/rules/nope')).reason).toBe("no such ha rule 'nope'");
    const rule = (await call(sim, 'GET', '/cluster/ha/rules/omni-set-naff')).json?.data as Record<string, unknown>;
    expect(rule).toMatchObject({ rule: 'omni-set-naff', type: 'node-affinity', resources: 'vm:100', nodes: 'pve1,pve2', strict: 1 });
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:101', state: 'ignored' });
    const put = (digest: string) => call(sim, 'PUT', '/cluster/ha/rules/omni-set-naff', { type: 'node-affinity', resources: 'vm:100,vm:101', digest });
    expect((await put(String(rule['digest']))).status).toBe(200);
    expect((await put(String(rule['digest']))).reason).toBe('update HA rules failed: detected modified configuration - file changed by other user? Try again.');
    expect([...sim.ha.rules.get('omni-set-naff')!.resources].sort()).toEqual(['vm:100', 'vm:101']);
  });

  it('a VM outside its node-affinity rule is moved by HA; a started resource starts its VM, a stopped one stops it', async () => {
    const { sim } = newSim();
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:101', state: 'started' });
    await sim.settle();
    expect(sim.vm(101)?.running).toBe(true);
    expect(sim.tasks({ type: 'qmstart', vmid: 101 })[0]?.upid).toMatch(/:root@pam:$/);
    await call(sim, 'POST', '/cluster/ha/rules', { rule: 'pin', type: 'node-affinity', resources: 'vm:101', nodes: 'pve3', strict: 1 });
    expect(sim.vm(101)?.node).toBe('pve3');
    await call(sim, 'PUT', '/cluster/ha/resources/vm:101', { state: 'stopped' });
    await sim.settle();
    expect(sim.vm(101)?.running).toBe(false);
  });

  it('PVE 8 has no rules API: 501 like any path it does not serve', async () => {
    const { sim } = newSim({ versionProfile: 'pve8.4' });
    const r = await call(sim, 'GET', '/cluster/ha/rules');
    expect([r.status, r.reason]).toEqual([501, "Method 'GET /cluster/ha/rules' not implemented"]);
  });
});

describe('HA groups (PVE 8)', () => {
  it('create, already defined, resource group, in use, delete', async () => {
    const { sim } = newSim({ versionProfile: 'pve8.4' });
    expect((await call(sim, 'POST', '/cluster/ha/groups', { group: 'omni-set-naff', nodes: 'pve3', restricted: 1 })).status).toBe(200);
    expect((await call(sim, 'POST', '/cluster/ha/groups', { group: 'omni-set-naff', nodes: 'pve1' })).reason).toBe(
      "create ha group failed: ha group ID 'omni-set-naff' already defined",
    );
    await call(sim, 'POST', '/cluster/ha/resources', { sid: 'vm:100', state: 'started' });
    expect((await call(sim, 'PUT', '/cluster/ha/resources/vm:100', { group: 'nope' })).reason).toBe("HA group 'nope' does not exist");
    expect((await call(sim, 'PUT', '/cluster/ha/resources/vm:100', { group: 'omni-set-naff' })).status).toBe(200);
    expect(sim.vm(100)?.node).toBe('pve3');
    expect((await call(sim, 'DELETE', '/cluster/ha/groups/omni-set-naff')).reason).toBe("delete ha group failed: ha group is used by service 'vm:100'");
    await call(sim, 'DELETE', '/cluster/ha/resources/vm:100');
    expect((await call(sim, 'DELETE', '/cluster/ha/groups/omni-set-naff')).status).toBe(200);
    expect((await call(sim, 'GET', '/cluster/ha/groups/omni-set-naff')).reason).toBe("no such ha group 'omni-set-naff'");
  });

  it('PVE 9 refuses the group calls once groups are migrated to rules', async () => {
    const { sim } = newSim();
    expect((await call(sim, 'POST', '/cluster/ha/groups', { group: 'g1', nodes: 'pve1' })).reason).toBe('cannot create group: ha groups have been migrated to rules');
    expect((await call(sim, 'GET', '/cluster/ha/groups')).reason).toBe('cannot index groups: ha groups have been migrated to rules');
  });
});
