// The `ha` block end to end against the simulator over HTTPS: HA resources, PVE 9 rules, PVE 8 groups, the checks
// that refuse before any write, resuming a Go state at the HA steps, and the teardown (HA first, then the VM).
import { toBinary, fromBinary } from '@bufbuild/protobuf';
import { afterEach, describe, expect, it } from 'vitest';
import { MachineSpecSchema } from '../../src/gen/proxmox/specs/specs_pb.js';
import { silentLogger } from '../../src/log.js';
import { haApiForVersion, haPlan, haResourceParams } from '../../src/provision/ha.js';
import { emptyMachineState, machineSpecFromState, machineStateFromSpec } from '../../src/provision/machineState.js';
import { parseProviderData } from '../../src/provision/providerData.js';
import { StepFailure } from '../../src/provision/step.js';
import { RequestRefused } from '../../src/provision/validateRequest.js';
import type { PveFixture } from '../../src/sim/proxmox/index.js';
import { writeCalls } from '../../src/sim/proxmox/index.js';
import { basicData, request, runSteps, startPveHarness, testFixture, type PveHarness } from '../helpers/pveHarness.js';

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** The fixture with the provider's role granted Sys.Console on / (what HA writes need, docs/configuration.md). */
function haFixture(versionProfile: PveFixture['versionProfile']): Partial<PveFixture> {
  const roles = testFixture().roles ?? {};
  return { versionProfile, roles: { ...roles, OmniProvider: [...(roles['OmniProvider'] ?? []), 'Sys.Console'] } };
}

/** Path of each write call, in order. */
function writes(sim: PveHarness['sim']): string[] {
  return writeCalls(sim).map((r) => `${r.method} ${r.path}`);
}

const pve9Data = `${basicData}allowed_nodes: [pve3]
ha:
  state: started
  max_restart: 2
  failback: false
  node_affinity_nodes: [pve1, pve2]
  node_affinity_strict: true
  resource_affinity: negative
`;

describe('PVE 9: HA resources and rules', () => {
  it('two machines of a set: resources, the set node-affinity and resource-affinity rules; HA moves the VMs; teardown removes all of it', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    const a = request('ha-a', pve9Data, 'set-1');
    const b = request('ha-b', pve9Data, 'set-1');
    const sa = await runSteps(h.provisioner, a);
    // The first member: a resource and the node-affinity rule; a resource-affinity rule needs two resources.
    expect(h.sim.ha.rules.has('omni-set-1-raff')).toBe(false);
    const sb = await runSteps(h.provisioner, b);
    const sidA = `vm:${sa.vmid}`;
    const sidB = `vm:${sb.vmid}`;
    expect(sa.haRegistered && sb.haRegistered).toBe(true);
    expect(h.sim.ha.resources.get(sidA)).toEqual({ state: 'started', max_restart: 2, failback: 0 });
    const naff = h.sim.ha.rules.get('omni-set-1-naff')!;
    expect({ type: naff.type, nodes: naff.nodes, strict: naff.strict, resources: [...naff.resources].sort() }).toEqual({
      type: 'node-affinity',
      nodes: ['pve1', 'pve2'],
      strict: 1,
      resources: [sidA, sidB].sort(),
    });
    const raff = h.sim.ha.rules.get('omni-set-1-raff')!;
    expect({ type: raff.type, affinity: raff.affinity, resources: [...raff.resources].sort() }).toEqual({
      type: 'resource-affinity',
      affinity: 'negative',
      resources: [sidA, sidB].sort(),
    });
    // Placed on pve3 (allowed_nodes), then moved by HA into the strict node-affinity rule.
    expect(['pve1', 'pve2']).toContain(h.sim.vm(sa.vmid)!.node);
    expect(sa.node).toBe('pve3');

    const before = h.sim.requests.length;
    await h.provisioner.deprovision({ requestId: a.id, state: sa, log: silentLogger });
    await h.provisioner.deprovision({ requestId: b.id, state: sb, log: silentLogger });
    expect(h.sim.vm(sa.vmid)).toBeUndefined();
    expect(h.sim.vm(sb.vmid)).toBeUndefined();
    expect(h.sim.ha.resources.size).toBe(0);
    expect(h.sim.ha.rules.size).toBe(0);
    // The HA resource goes before the VM is shut down and deleted, and the VM is deleted where HA moved it.
    const teardown = h.sim.requests.slice(before).filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.path}`);
    const haDelete = teardown.indexOf(`DELETE /cluster/ha/resources/${sidA}`);
    const vmShutdown = teardown.findIndex((p) => p.endsWith(`/qemu/${sa.vmid}/status/shutdown`));
    expect(haDelete).toBeGreaterThanOrEqual(0);
    expect(haDelete).toBeLessThan(vmShutdown);
    expect(teardown.find((p) => p.startsWith('DELETE /nodes/') && p.endsWith(`/qemu/${sa.vmid}`))).toMatch(/^DELETE \/nodes\/pve[12]\//);
  });

  it('a rule edit that meets a digest conflict is read again and retried', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    const data = `${basicData}ha:\n  node_affinity_nodes: [pve1]\n`;
    await runSteps(h.provisioner, request('dg-a', data, 'dg'));
    h.sim.faults.onRequest(
      { method: 'PUT', route: '/cluster/ha/rules/{rule}' },
      { kind: 'httpError', status: 500, reason: 'update HA rules failed: detected modified configuration - file changed by other user? Try again.' },
    );
    const sb = await runSteps(h.provisioner, request('dg-b', data, 'dg'));
    expect(h.sim.ha.rules.get('omni-dg-naff')!.resources.has(`vm:${sb.vmid}`)).toBe(true);
    expect(writes(h.sim).filter((p) => p === 'PUT /cluster/ha/rules/omni-dg-naff')).toHaveLength(2);
  });

  it('an existing HA resource (retry, operator, Go provider) is brought to the block by PUT; rules[] entries get the VM', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    h.sim.ha.addResource(h.sim, 'vm:100', { state: 'ignored' });
    h.sim.setHaManaged(101, true);
    h.sim.ha.rules.set('keep-apart', { type: 'resource-affinity', resources: new Set(['vm:100', 'vm:101']), affinity: 'negative', order: 1 });
    const data = `${basicData}ha:\n  max_restart: 3\n  rules: [keep-apart]\n`;
    const req = request('ex-a', data);
    const state = await runSteps(h.provisioner, req);
    const sid = `vm:${state.vmid}`;
    h.sim.ha.resources.set(sid, { state: 'started', max_restart: 9 });
    await runSteps(h.provisioner, req, state, { from: 'registerHA' });
    expect(h.sim.ha.resources.get(sid)).toEqual({ state: 'started', max_restart: 3 });
    expect([...h.sim.ha.rules.get('keep-apart')!.resources]).toContain(sid);
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    // Purge took our VM out of the operator's rule, which stays with its own members.
    expect([...h.sim.ha.rules.get('keep-apart')!.resources].sort()).toEqual(['vm:100', 'vm:101']);
  });
});

describe('PVE 8: HA groups', () => {
  it('node affinity becomes the set group (restricted for strict, nofailback for failback: false); teardown removes resource and group', async () => {
    h = await startPveHarness({ fixture: haFixture('pve8.4') });
    const data = `${basicData}allowed_nodes: [pve1]\nha:\n  failback: false\n  node_affinity_nodes: [pve2]\n  node_affinity_strict: true\n`;
    const req = request('g8-a', data, 'set-8');
    const state = await runSteps(h.provisioner, req);
    const sid = `vm:${state.vmid}`;
    expect(h.sim.ha.groups.get('omni-set-8-naff')).toEqual({ nodes: ['pve2'], restricted: 1, nofailback: 1 });
    expect(h.sim.ha.resources.get(sid)).toEqual({ group: 'omni-set-8-naff' });
    expect(h.sim.vm(state.vmid)!.node).toBe('pve2');
    // PVE 8 has no rules API: never asked.
    expect(h.sim.requests.some((r) => r.path.startsWith('/cluster/ha/rules'))).toBe(false);
    await h.provisioner.deprovision({ requestId: req.id, state, log: silentLogger });
    expect(h.sim.vm(state.vmid)).toBeUndefined();
    expect(h.sim.ha.resources.size).toBe(0);
    expect(h.sim.ha.groups.size).toBe(0);
    expect(writes(h.sim)).toContain(`DELETE /cluster/ha/resources/${sid}`);
  });

  it.each([
    ['resource_affinity', 'ha:\n  resource_affinity: negative\n', 'ha.resource_affinity', /needs Proxmox VE 9/],
    ['rules', 'ha:\n  rules: [keep-apart]\n', 'ha.rules', /needs Proxmox VE 9/],
    ['an unknown node', 'ha:\n  node_affinity_nodes: [pve1, pve7]\n', 'ha.node_affinity_nodes[1]', /"pve7" is not a node of this Proxmox cluster/],
  ])('%s: refused before any write, naming the field', async (_what, block, field, text) => {
    h = await startPveHarness({ fixture: haFixture('pve8.4') });
    const err = await runSteps(h.provisioner, request('g8-refused', basicData + block, 'set-8')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RequestRefused);
    expect((err as RequestRefused).field).toBe(field);
    expect((err as RequestRefused).message).toMatch(text);
    expect((err as RequestRefused).message.startsWith(`provider data: ${field}: `)).toBe(true);
    expect(writeCalls(h.sim)).toEqual([]);
  });
});

describe('refusals and state', () => {
  it('PVE 9: a rules[] entry that does not exist is refused before any write', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    const err = await runSteps(h.provisioner, request('r9', `${basicData}ha:\n  rules: [nope-rule]\n`)).catch((e: unknown) => e);
    expect((err as RequestRefused).field).toBe('ha.rules[0]');
    expect((err as RequestRefused).message).toBe('provider data: ha.rules[0]: no HA rule "nope-rule" in this cluster (Datacenter → HA → Rules)');
    expect(writeCalls(h.sim)).toEqual([]);
  });

  it('ha removed from an HA-registered machine: both HA steps fail with the Go provider message, and teardown still removes the resource', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    const state = await runSteps(h.provisioner, request('rm-a', `${basicData}ha: {}\n`));
    expect(h.sim.ha.resources.has(`vm:${state.vmid}`)).toBe(true);
    for (const from of ['registerHA', 'syncHARules']) {
      const err = await runSteps(h.provisioner, request('rm-a', basicData), state, { from }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StepFailure);
      expect((err as StepFailure).permanent).toBe(true);
      expect((err as StepFailure).message).toMatch(new RegExp(`^${from}: ha config removed from an HA-registered machine; re-add ha: or deprovision it`));
    }
    await h.provisioner.deprovision({ requestId: 'rm-a', state, log: silentLogger });
    expect(h.sim.ha.resources.size).toBe(0);
    expect(h.sim.vm(state.vmid)).toBeUndefined();
  });

  it('a Go v0.2+ state (field 13 set) resumed at syncHARules puts the VM into the set rule, and is torn down', async () => {
    h = await startPveHarness({ fixture: haFixture('pve9') });
    const data = `${basicData}ha:\n  node_affinity_nodes: [pve1, pve2, pve3]\n`;
    const ours = await runSteps(h.provisioner, request('go-a', data, 'go-set'));
    // What the Go provider leaves when it stopped after registerHA: the resource, no rule yet.
    h.sim.ha.rules.clear();
    const go = machineStateFromSpec(
      fromBinary(MachineSpecSchema, toBinary(MachineSpecSchema, machineSpecFromState({ ...emptyMachineState(), uuid: ours.uuid, node: ours.node, vmid: ours.vmid, haRegistered: true }))),
    );
    expect(go.haRegistered).toBe(true);
    await runSteps(h.provisioner, request('go-a', data, 'go-set'), go, { from: 'syncHARules' });
    expect([...h.sim.ha.rules.get('omni-go-set-naff')!.resources]).toEqual([`vm:${ours.vmid}`]);
    await h.provisioner.deprovision({ requestId: 'go-a', state: go, log: silentLogger });
    expect(h.sim.ha.resources.size + h.sim.ha.rules.size).toBe(0);
    expect(h.sim.vm(ours.vmid)).toBeUndefined();
  });

  it('field 13 is ha_registered on the wire (tag 0x68, varint 1), as the Go provider writes it', () => {
    const bytes = toBinary(MachineSpecSchema, machineSpecFromState({ ...emptyMachineState(), haRegistered: true }));
    expect([...bytes]).toEqual([0x68, 0x01]);
  });

  it('the HA API follows the version; plan lists the calls', () => {
    expect(haApiForVersion('9.1.5')).toBe('rules');
    expect(haApiForVersion('8.4.1')).toBe('groups');
    expect(haApiForVersion('8.0.4')).toBe('groups');
    expect(haApiForVersion('10.0.1')).toBe('rules');
    // PVE 8 resources have no failback (pve-ha-manager 4.0): it goes to the set group as nofailback instead.
    const ha = parseProviderData(`${basicData}ha:\n  failback: false\n  state: stopped\n  comment: ''\n`).ha!;
    expect(haResourceParams(ha, 'groups')).toEqual({ state: 'stopped' });
    expect(haResourceParams(ha, 'rules')).toEqual({ state: 'stopped', failback: 0 });
    const data = parseProviderData(pve9Data);
    expect(haPlan(data, 'set-1', 'rules').map((c) => `${c.method} ${c.path} ${String(c.params['rule'] ?? c.params['sid'])}`)).toEqual([
      'POST /cluster/ha/resources vm:<vmid>',
      'POST /cluster/ha/rules omni-set-1-naff',
      'POST /cluster/ha/rules omni-set-1-raff',
    ]);
    expect(haPlan(parseProviderData(basicData), 'set-1', 'rules')).toEqual([]);
  });
});
