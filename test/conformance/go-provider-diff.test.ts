// Side by side with the upstream Go provider: the same MachineClasses must produce the same Proxmox create
// parameters, except for the differences docs/compat.md documents as intentional. Skipped (loudly) without Go.
import { describe, expect, it } from 'vitest';
import { upstreamUnavailableReason } from '../../bench/provider-process.js';
import { MACHINE_CLASS_EXAMPLES } from '../../conformance/go-provider/examples.js';
import { diffCreateParams, normaliseCreateParams, runDifferential, type DifferentialReport } from '../../conformance/go-provider/differential.js';

const skipReason = upstreamUnavailableReason();
if (skipReason) {
  process.stderr.write(
    `\n${'#'.repeat(100)}\n## SKIPPED go-provider differential: ${skipReason}\n## install it with: bash scripts/install-go-provider.sh\n${'#'.repeat(100)}\n\n`,
  );
}

describe('differential classification (no Go needed)', () => {
  it('normalises only run-specific values: VMID, SMBIOS UUID, ISO hash, and drops the node', () => {
    const n = normaliseCreateParams({
      vmid: '104',
      node: 'pve2',
      smbios1: 'uuid=14a1ef63-cee3-48d7-ac03-e7bd8004982a',
      cdrom: 'local:iso/394a2f17ca18e283f539797d0f1dd797a11d396357775cac6fc94ace6a06160a.iso',
      net0: 'virtio,bridge=vmbr1,firewall=1,tag=20',
    });
    expect(n).toEqual({
      vmid: '<vmid>',
      smbios1: 'uuid=<uuid>',
      cdrom: 'local:iso/<sha256(url)>.iso',
      net0: 'virtio,bridge=vmbr1,firewall=1,tag=20',
    });
  });

  it('accepts the documented differences and flags anything else as unexplained', () => {
    const upstream = { cdrom: 'local:iso/x.iso', agent: 'enabled=true', sockets: '0', net0: 'virtio,bridge=vmbr0,firewall=1', cores: '2' };
    const ours = { ide2: 'local:iso/x.iso,media=cdrom', agent: 'enabled=1', sockets: '1', net0: 'virtio,bridge=vmbr0,firewall=0', boot: 'order=scsi0;ide2;net0', cores: '2' };
    const diffs = diffCreateParams('x', upstream, ours);
    expect(diffs.filter((d) => d.reason === undefined).map((d) => d.param)).toEqual(['net0']);
    expect(diffs.map((d) => d.param).sort()).toEqual(['agent', 'boot', 'cdrom', 'ide2', 'net0', 'sockets']);
    // The ISO rule only holds when both name the same volume.
    const moved = diffCreateParams('x', { cdrom: 'local:iso/a.iso' }, { ide2: 'local:iso/b.iso,media=cdrom' });
    expect(moved.every((d) => d.reason === undefined)).toBe(true);
  });
});

describe.skipIf(skipReason !== undefined)('against the upstream Go provider', () => {
  let report: DifferentialReport;

  it('runs every MachineClass example through both providers without any traffic leaving 127.0.0.1', async () => {
    report = await runDifferential();
    expect(report.errors).toEqual([]);
    expect(report.outboundAttempts).toEqual([]);
    expect(report.examples.map((x) => x.example.name)).toEqual(MACHINE_CLASS_EXAMPLES.map((e) => e.name));
    for (const x of report.examples) {
      expect(x.upstream, `${x.example.name}: upstream create`).toBeDefined();
      expect(x.ours, `${x.example.name}: our create`).toBeDefined();
    }
  }, 240_000);

  it('sends the same create parameters except for documented, intentional differences', () => {
    expect(report, 'previous test produced the report').toBeDefined();
    const unexplained = report.unexplained.map((d) => `${d.example}.${d.param}: upstream ${d.upstream ?? '(absent)'} / ours ${d.ours ?? '(absent)'}`);
    expect(unexplained).toEqual([]);
  });

  it('builds the Talos ISO from the same schematic content (qemu-guest-agent extension)', () => {
    const compact = (yaml: string) => yaml.replace(/\s+/g, ' ').trim();
    expect(report.schematics.upstream.map(compact)).toEqual(report.schematics.ours.map(compact));
    expect(report.schematics.ours.join('\n')).toContain('siderolabs/qemu-guest-agent');
  });

  it('provisions MachineClasses without `sockets`, which upstream sends as sockets=0 and Proxmox refuses', () => {
    const minimal = report.examples.find((x) => x.example.name === 'minimal');
    expect(minimal?.upstream?.status).toBe(400);
    expect(minimal?.upstream?.refusal).toContain('sockets');
    expect(minimal?.ours?.status).toBe(200);
    expect(minimal?.ours?.params.sockets).toBe('1');
  });
});
