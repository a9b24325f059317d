// validateRequest against the simulator over HTTPS: every refusal the cluster can decide comes from the first step,
// names the provider-data field, is permanent, and happens before any call that could change the cluster (the
// simulator counts zero write calls and no download task).
import { afterEach, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { RequestRefused } from '../../src/provision/validateRequest.js';
import { StepFailure } from '../../src/provision/step.js';
import { writeCalls, type PveFixture } from '../../src/sim/proxmox/index.js';
import { basicData, request, rootToken, runSteps, startPveHarness, type PveHarness } from '../helpers/pveHarness.js';

/** basicData with `extra` merged over it (later keys win), as YAML. */
function withData(extra: string): string {
  return stringify({ ...(parse(basicData) as object), ...((parse(extra) as object | null) ?? {}) });
}

let h: PveHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function refusal(yamlExtra: string, opts: { fixture?: Partial<PveFixture>; setId?: string; root?: boolean } = {}): Promise<RequestRefused> {
  h = await startPveHarness({ fixture: opts.fixture, ...(opts.root ? { auth: rootToken } : {}) });
  const err = await runSteps(h.provisioner, request('req-refused', withData(yamlExtra), opts.setId)).then(
    () => new Error('provisioning unexpectedly succeeded'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RequestRefused);
  expect(writeCalls(h.sim)).toEqual([]);
  expect(h.sim.tasks({})).toEqual([]);
  return err as RequestRefused;
}

describe('refusals the cluster decides, before any write', () => {
  it.each([
    ['pinned node not in the cluster', 'node: pve9\n', 'node', 'provider data: node: "pve9" is not a node of this Proxmox cluster (nodes: pve1, pve2, pve3)'],
    ['no allowed node in the cluster', 'allowed_nodes: [pve8, pve9]\n', 'allowed_nodes', 'provider data: allowed_nodes: none of pve8, pve9 is a node of this Proxmox cluster'],
    ['more vCPUs than any node has', 'machine_type: q35\ncores: 17\nsockets: 2\n', 'sockets', 'provider data: sockets: 17 cores × 2 sockets = 34 vCPUs, but the largest node this VM may use has 32 CPUs'],
    ['more vCPUs than the pinned node has', 'node: pve3\ncores: 17\n', 'cores', 'provider data: cores: 17 cores × 1 socket = 17 vCPUs, but node pve3 has 16 CPUs'],
    ['more memory than any node has', 'memory: 262144\n', 'memory', 'provider data: memory: 262144 MiB (256 GiB) is more memory than the largest node this VM may use has (128 GiB)'],
    ['unknown PCI mapping', 'pci_devices: [{mapping: gpu-h100}]\n', 'pci_devices[0].mapping', 'provider data: pci_devices[0].mapping: no PCI resource mapping "gpu-h100" in the cluster (mappings the token can see: gpu-a100;'],
    [
      'PCI mapping only on nodes the VM may not use',
      'allowed_nodes: [pve3, pve1]\npci_devices: [{mapping: gpu-a100}]\n',
      'pci_devices[0].mapping',
      'provider data: pci_devices[0].mapping: PCI mapping "gpu-a100" has devices on pve2, none of them a node this VM may use (pve1, pve3)',
    ],
    ['unknown USB mapping', 'usb_devices: [{mapping: rtl-sdr}, {mapping: nope}]\n', 'usb_devices[1].mapping', 'provider data: usb_devices[1].mapping: no USB resource mapping "nope" in the cluster (mappings the token can see: rtl-sdr, zigbee; the token needs Mapping.Use on /mapping/usb/nope)'],
    [
      'USB mapping only on nodes the VM may not use',
      'node: pve1\nusb_devices: [{mapping: zigbee}]\n',
      'usb_devices[0].mapping',
      'provider data: usb_devices[0].mapping: USB mapping "zigbee" has devices on pve3, none of them a node this VM may use (pve1)',
    ],
    ['bridge on no node', 'network_bridge: vmbr9\n', 'network_bridge', 'provider data: network_bridge: no bridge "vmbr9" on any node this VM may use (pve1: vmbr0, vmbr1;'],
    ['second NIC on a missing bridge', 'additional_nics: [{bridge: vmbr1}, {bridge: vmbr7}]\n', 'additional_nics[1].bridge', 'provider data: additional_nics[1].bridge: no bridge "vmbr7"'],
    ['pool that does not exist', 'pool: nope\n', 'pool', 'provider data: pool: pool "nope" does not exist in Proxmox'],
    ['CPU model the node does not know', 'cpu_type: Foo\n', 'cpu_type', `provider data: cpu_type: "Foo" is not a CPU model Proxmox knows (node pve1): Built-in cputype 'Foo' is not defined (missing 'custom-' prefix?)`],
  ])('%s', async (_name, extra, field, message) => {
    const err = await refusal(extra);
    expect(err.field).toBe(field);
    expect(err.message.startsWith(message), err.message).toBe(true);
    expect(err.transient).toBe(false);
    expect(err.permanent).toBe(true);
  });

  it('an unknown custom CPU model, when the node lists custom models', async () => {
    const err = await refusal('cpu_type: custom-nope\n', { fixture: { customCpuModels: ['mine'] } });
    expect(err.message).toBe(`provider data: cpu_type: "custom-nope" is not a CPU model Proxmox knows (node pve1): Custom cputype 'nope' not found`);
  });

  it('tags the datacenter keeps from the token (registered, or not on the allow list), including the provider\'s own', async () => {
    const registered = await refusal('tags: [prod]\n', { fixture: { datacenter: { 'registered-tags': ['prod'] } } });
    expect(registered.field).toBe('tags[0]');
    expect(registered.message).toMatch(/^provider data: tags\[0\]: "prod" is a registered tag/);
    await h?.close();
    const none = await refusal('', { setId: 'workers', fixture: { datacenter: { 'user-tag-access': { 'user-allow': 'none' } } } });
    expect(none.field).toBe('tags');
    expect(none.message).toMatch(/^provider data: tags: the provider's tag "machine-request.workers" \(every VM of a machine set carries it\) may not be set by the token: the datacenter allows users no tags/);
  });
});

describe('what validation lets through', () => {
  it('places the VM on the one node that has the bridge and enough CPUs', async () => {
    h = await startPveHarness();
    h.sim.setNodeBridges('pve3', ['vmbr0', 'vmbr7']);
    const onlyPve3 = await runSteps(h.provisioner, request('req-bridge', withData('network_bridge: vmbr7\n')));
    expect(onlyPve3.node).toBe('pve3');
    const big = await runSteps(h.provisioner, request('req-cpus', withData('cores: 24\nmachine_type: q35\nallowed_nodes: [pve2, pve3]\n')));
    expect(big.node).toBe('pve2');
  });

  it('an existing pool, a custom CPU model that exists, allowed tags', async () => {
    h = await startPveHarness({
      auth: rootToken,
      fixture: { pools: ['omni'], customCpuModels: ['mine'], datacenter: { 'user-tag-access': { 'user-allow': 'list', 'user-allow-list': ['talos'] } } },
    });
    const state = await runSteps(h.provisioner, request('req-ok', withData('pool: omni\ncpu_type: custom-mine\ntags: [talos]\n'), 'workers'));
    expect(h.sim.vm(state.vmid)?.config.cpu).toBe('custom-mine');
    expect(h.sim.state.vms.get(state.vmid)?.pool).toBe('omni');
  });

  it('what Proxmox cannot tell is not refused: tag rules without Sys.Audit on /, bridges a node cannot list', async () => {
    h = await startPveHarness({ fixture: { datacenter: { 'user-tag-access': { 'user-allow': 'none' } } } });
    h.sim.faults.onRequest({ method: 'GET', route: '/cluster/options' }, { kind: 'httpError', status: 403, reason: 'Permission check failed (/, Sys.Audit)' });
    h.sim.faults.onRequest({ method: 'GET', route: '/nodes/{node}/network', node: 'pve1' }, { kind: 'httpError', status: 501, reason: 'not implemented' }, { times: Infinity });
    // Passes validation (tags cannot be checked, vmbr9 might exist on pve1); the create task then fails on the tag.
    const err = await runSteps(h.provisioner, request('req-unknown', withData('node: pve1\nnetwork_bridge: vmbr9\n'), 'workers')).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).not.toBeInstanceOf(RequestRefused);
    expect(err?.message).toMatch(/Sys\.Modify for modifying tag 'machine-request\.workers'/);
  });

  it('a Proxmox that cannot be reached is transient, not a refusal', async () => {
    h = await startPveHarness();
    h.sim.faults.onRequest({ method: 'GET', route: '/nodes' }, { kind: 'httpError', status: 503, reason: 'Service Unavailable' });
    const err = await runSteps(h.provisioner, request('req-503', basicData), undefined, { maxRetries: 0 }).then(
      () => undefined,
      (e: unknown) => e as StepFailure,
    );
    expect(err).toBeInstanceOf(StepFailure);
    expect(err).not.toBeInstanceOf(RequestRefused);
    expect(err?.transient).toBe(true);
  });
});
