// `plan` and `storage explain` as an operator runs them: JSON on stdout, exit 0; bad input or an unsatisfiable plan
// exit 2 with one line on stderr naming the field.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { daemonCommand } from '../helpers/daemon-command.js';

const root = new URL('../..', import.meta.url).pathname;
const fixture = join(root, 'test/fixtures/pve-3node.json');
const dir = mkdtempSync(join(tmpdir(), 'plan-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const cmd = daemonCommand(args);
    execFile(cmd.command, cmd.args, { cwd: cmd.cwd, env: { ...process.env, ...cmd.env } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

function dataFile(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const base = 'cores: 2\nmemory: 4096\ndisk_size: 20\n';

// Each test runs the CLI (a fresh Node process) several times: seconds each on a busy machine.
describe('plan', { timeout: 90_000 }, () => {
  it('prints the node, storages and exact create parameters', async () => {
    const f = dataFile('ok.yaml', `${base}storage_selector: type == "rbd"\nadditional_disks:\n  - disk_size: 50\n    storage_selector: name == "local-lvm"\nvlan: 20\nvga: "qxl,memory=32"\nusb_devices:\n  - {mapping: zigbee, usb3: true}\nvmid_range: "150-160"\n`);
    const r = await run(['plan', '--provider-data', f, '--request-id', 'req-a', '--machine-request-set', 'set-a', '--sim-fixture', fixture, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { node: string; storages: { primary: string; additional: string[] }; isoStorage: string; params: Record<string, unknown> };
    expect(out.node).toBe('pve3'); // the only node with an entry for the zigbee USB mapping
    expect(out.storages).toEqual({ primary: 'ceph-vm', additional: ['local-lvm'] });
    expect(out.isoStorage).toBe('nfs-iso');
    expect(out.params).toMatchObject({
      name: 'req-a',
      scsi0: 'ceph-vm:20',
      scsi1: 'local-lvm:50',
      net0: 'virtio,bridge=vmbr0,firewall=1,tag=20',
      tags: 'machine-request.set-a',
      vga: 'qxl,memory=32',
      usb0: 'mapping=zigbee,usb3=1',
      vmid: 150,
      cores: 2,
      memory: 4096,
    });
  });

  it('shows the HA calls (PVE 9 rules, PVE 8 groups) and refuses resource_affinity on PVE 8 naming the field', async () => {
    const ha = dataFile('ha.yaml', `${base}storage_selector: 'true'\nha:\n  max_restart: 2\n  node_affinity_nodes: [pve1, pve2]\n  node_affinity_strict: true\n  resource_affinity: negative\n`);
    const r = await run(['plan', '--provider-data', ha, '--machine-request-set', 'set-a', '--sim-fixture', fixture, '--json']);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { params: { vmid: number }; ha: { api: string; calls: Array<{ method: string; path: string; params: Record<string, unknown> }> } };
    expect(out.ha.api).toBe('rules');
    const sid = `vm:${out.params.vmid}`;
    expect(out.ha.calls).toEqual([
      { method: 'POST', path: '/cluster/ha/resources', params: { sid, max_restart: 2 } },
      { method: 'POST', path: '/cluster/ha/rules', params: { rule: 'omni-set-a-naff', type: 'node-affinity', resources: sid, nodes: 'pve1,pve2', strict: 1 } },
      { method: 'POST', path: '/cluster/ha/rules', params: { rule: 'omni-set-a-raff', type: 'resource-affinity', resources: `${sid},<the set's other HA VMs>`, affinity: 'negative' } },
    ]);
    const pve8 = join(dir, 'pve8.json');
    writeFileSync(pve8, JSON.stringify({ ...(JSON.parse(readFileSync(fixture, 'utf8')) as object), versionProfile: 'pve8.4' }));
    const groups = dataFile('ha8.yaml', `${base}storage_selector: 'true'\nha:\n  node_affinity_nodes: [pve3]\n`);
    const r8 = await run(['plan', '--provider-data', groups, '--machine-request-set', 'set-a', '--sim-fixture', pve8]);
    expect(r8.code).toBe(0);
    expect(r8.stdout).toMatch(/HA calls \(Proxmox VE 8: HA groups\):\n {2}POST \/cluster\/ha\/resources sid=vm:\d+\n {2}POST \/cluster\/ha\/groups group=omni-set-a-naff nodes=pve3 restricted=0\n {2}PUT \/cluster\/ha\/resources\/vm:\d+ group=omni-set-a-naff\n/);
    const refused = await run(['plan', '--provider-data', ha, '--machine-request-set', 'set-a', '--sim-fixture', pve8, '--json']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^error: provider data: ha\.resource_affinity: needs Proxmox VE 9/);
  });

  it('shows the static addresses and the NoCloud network-config a VM would get, and DHCP otherwise', async () => {
    const pool = `${base}storage_selector: 'true'\naddress_pool:\n  cidr: 10.0.0.0/24\n  range: 10.0.0.10-10.0.0.50\n  gateway: 10.0.0.1\n  dns_servers: [1.1.1.1, 1.0.0.1]\n`;
    const r = await run(['plan', '--provider-data', dataFile('pool.yaml', pool), '--request-id', 'cp-1', '--sim-fixture', fixture, '--json']);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { params: Record<string, string>; network: { addresses: Array<{ nic: string; address: string; mac: string }>; networkConfig: string } };
    const [a] = out.network.addresses;
    expect(a).toMatchObject({ nic: 'net0', address: '10.0.0.10/24' });
    expect(out.params.net0).toBe(`virtio=${a!.mac},bridge=vmbr0,firewall=1`);
    expect(parseYaml(out.network.networkConfig)).toEqual({
      version: 2,
      ethernets: { eth0: { match: { macaddress: a!.mac }, addresses: ['10.0.0.10/24'], gateway4: '10.0.0.1', nameservers: { addresses: ['1.1.1.1', '1.0.0.1'] } } },
    });
    const dhcp = await run(['plan', '--provider-data', dataFile('dhcp.yaml', `${base}storage_selector: 'true'\n`), '--sim-fixture', fixture, '--json']);
    expect((JSON.parse(dhcp.stdout) as { network: unknown }).network).toEqual({ dhcp: true });
    const bad = await run(['plan', '--provider-data', dataFile('badpool.yaml', pool.replace('10.0.0.50', '10.0.1.50')), '--sim-fixture', fixture, '--json']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: provider data: address_pool\.range: 10\.0\.1\.50 is outside cidr 10\.0\.0\.0\/24/);
  });

  it('exits 2 naming the field when the selector matches nothing', async () => {
    const f = dataFile('nomatch.yaml', `${base}storage_selector: type == "zfspool"\n`);
    const r = await run(['plan', '--provider-data', f, '--sim-fixture', fixture, '--json']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error: storage_selector: storage selector `type == "zfspool"` matched no storage on node pve\d; candidates: /);
  });

  it('exits 2 for a smuggled property and for an unknown key', async () => {
    const smuggle = await run(['plan', '--provider-data', dataFile('s.yaml', `${base}storage_selector: 'true'\nnetwork_bridge: "vmbr0,firewall=0"\n`), '--sim-fixture', fixture, '--json']);
    expect(smuggle.code).toBe(2);
    expect(smuggle.stderr).toMatch(/^error: provider data: network_bridge: /);
    const typo = await run(['plan', '--provider-data', dataFile('t.yaml', `${base}storage_selector: 'true'\ncorse: 4\n`), '--sim-fixture', fixture, '--json']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/unknown key "corse"/);
  });

  it('exits 2 when the pinned node is unknown, when the VM is larger than any node, and when no node has room', async () => {
    const unknown = await run(['plan', '--provider-data', dataFile('n.yaml', `${base}storage_selector: 'true'\nnode: pve9\n`), '--sim-fixture', fixture, '--json']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: provider data: node: "pve9" is not a node of this Proxmox cluster \(nodes: pve1, pve2, pve3\)/);
    const huge = await run(['plan', '--provider-data', dataFile('h.yaml', 'cores: 2\nmemory: 4194304\ndisk_size: 20\nstorage_selector: "true"\n'), '--sim-fixture', fixture, '--json']);
    expect(huge.code).toBe(2);
    expect(huge.stderr).toMatch(/^error: provider data: memory: 4194304 MiB \(4096 GiB\) is more memory than the largest node this VM may use has \(128 GiB\)/);
    const full = await run(['plan', '--provider-data', dataFile('f.yaml', 'cores: 2\nmemory: 131072\ndisk_size: 20\nstorage_selector: "true"\n'), '--sim-fixture', fixture, '--json']);
    expect(full.code).toBe(2);
    expect(full.stderr).toMatch(/^error: node: .*pve1: needs 128 GiB, 126 GiB uncommitted/);
  });

  it('exits 2 for usage errors', async () => {
    const r = await run(['plan', '--sim-fixture', fixture]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--provider-data is required/);
    const both = await run(['plan', '--provider-data', dataFile('b.yaml', base), '--sim-fixture', fixture, '--config-file', fixture]);
    expect(both.code).toBe(2);
  });
});

describe('storage explain', { timeout: 90_000 }, () => {
  it('lists every storage with its variables and the verdict', async () => {
    const r = await run(['storage', 'explain', '--selector', 'type == "rbd"', '--sim-fixture', fixture, '--json']);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ node: string; storage: string; matched: boolean; vars: Record<string, unknown> }>;
    expect(new Set(rows.map((x) => x.node))).toEqual(new Set(['pve1', 'pve2', 'pve3']));
    const ceph = rows.filter((x) => x.storage === 'ceph-vm');
    expect(ceph.every((x) => x.matched)).toBe(true);
    expect(ceph[0]!.vars).toMatchObject({ name: 'ceph-vm', type: 'rbd', storageType: 'rbd' });
    expect(rows.filter((x) => x.storage !== 'ceph-vm').every((x) => !x.matched)).toBe(true);
  });

  it('exits 2 with the position of a syntax error', async () => {
    const r = await run(['storage', 'explain', '--selector', 'name == ', '--sim-fixture', fixture, '--json']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: --selector: .*(line 1|column)/);
  });
});
