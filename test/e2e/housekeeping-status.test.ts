// The daemon as a child process with housekeeping on (reporting only, the default): it logs the orphaned VM once and
// touches nothing; `status` against the same Omni and Proxmox shows the provisioned request and the orphan; `logs`
// turns the daemon's real output into readable lines for one request.
import { describe, expect, it } from 'vitest';
import { status, type StatusReport } from '../../src/cli/status.js';
import { formatLogLine } from '../../src/cli/logs.js';
import { createFixtureVm } from '../../src/sim/proxmox/seed.js';
import { SMALL_VM, waitForStage, withWorld } from '../helpers/e2e.js';

describe('housekeeping, status and logs against a running daemon', () => {
  it('reports the orphan once without touching it; status and logs show what happened', async ({ signal }) => {
    await withWorld({ signal }, async (world, spawnDaemon) => {
      const { omni, sim } = world;
      const orphan = createFixtureVm(sim, {
        vmid: 777,
        node: 'pve2',
        name: 'workers-zz99yy',
        tags: ['machine-request.workers'],
        smbiosUuid: '0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3',
        status: 'running',
      });
      const foreign = createFixtureVm(sim, { vmid: 778, node: 'pve3', name: 'workers-aa11bb', smbiosUuid: '1a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3' });
      const daemon = spawnDaemon({ HOUSEKEEPING_INTERVAL_SECONDS: '60' });
      const req = omni.controllers.createMachineRequest('workers', { talosVersion: 'v1.11.5', providerData: SMALL_VM });
      const id = req.metadata.id;
      await waitForStage(omni, id, 'PROVISIONED');
      expect(await daemon.waitForLog('housekeeping on: reports only')).toMatchObject({ intervalSeconds: 60, removeOrphanVms: false, removeUnusedIsos: false });
      const line = await daemon.waitForLog(/^orphaned VM:/);
      expect(line).toMatchObject({ level: 'warn', component: 'housekeeping', vmid: orphan.vmid, node: 'pve2', vmName: 'workers-zz99yy' });
      expect(daemon.logs(/^orphaned VM:/)).toHaveLength(1);
      expect(sim.vm(orphan.vmid)).toBeDefined();
      expect(sim.vm(foreign.vmid)).toBeDefined();
      expect(sim.requests.filter((r) => r.method !== 'GET' && /\/qemu\/(777|778)(\/|$)/.test(r.path))).toEqual([]);

      let out = '';
      const code = await status(['--json'], { env: world.env(), stdout: (t) => void (out += t), timeoutMs: 10_000 });
      expect(code).toBe(0);
      const report = JSON.parse(out) as StatusReport;
      expect(report.omni.lease.text).toMatch(/^held by .* \(pid \d+, instance \S+\), renewed /);
      expect(report.requests).toEqual([expect.objectContaining({ id, stage: 'PROVISIONED', step: 'syncHARules', error: '' })]);
      expect(report.requests[0]!.vmid).toBeGreaterThan(0);
      expect(report.orphanVms?.map((v) => v.vmid)).toEqual([orphan.vmid]);
      expect(report.isos?.perStorage.reduce((n, s) => n + s.talos.inUse + s.seeds.inUse, 0)).toBe(2);

      const readable = daemon.lines
        .map((l) => formatLogLine(`provider-1  | ${JSON.stringify(l)}`, { request: id }))
        .filter((l): l is string => l !== undefined);
      expect(readable.length).toBeGreaterThan(3);
      expect(readable.every((l) => l.includes(`request=${id}`))).toBe(true);
      expect(readable.some((l) => / INFO {2}VM started {2}request=\S+ step=startVM node=pve\d vmid=\d+/.test(l))).toBe(true);
    });
  }, 120_000);
});
