// `seeds orphaned`: NoCloud seed ISOs no VM uses any more (ours, `omni-seed-*.iso`, and every `user-data-<vmid>.iso`
// whose VMID no guest holds): what the Go provider's teardown can leave of VMs our daemon started, after a rollback
// (docs/operations.md). Read-only unless `--delete`.
import { deleteOrphanedSeeds, isYoung, listOurSeeds } from '../provision/orphanSeeds.js';
import { openProxmoxTarget } from './proxmoxTarget.js';
import { parseFlags, UsageError } from './usage.js';

const usage =
  'usage: omni-infra-provider-proxmox seeds orphaned (--config-file F | --sim-fixture F) [--delete [--min-age-seconds N]] [--json]';

export default async function seedsOrphaned(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    strings: ['config-file', 'sim-fixture', 'min-age-seconds'],
    booleans: ['json', 'help', 'delete'],
  });
  if (flags.has('help')) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument "${positional[0]}"; ${usage}`);
  const minAgeRaw = flags.get('min-age-seconds') ?? '600';
  const minAgeSeconds = Number(minAgeRaw);
  if (typeof minAgeRaw !== 'string' || !/^\d+$/.test(minAgeRaw) || !Number.isSafeInteger(minAgeSeconds)) {
    throw new UsageError(`--min-age-seconds: "${String(minAgeRaw)}" is not a whole number of seconds`);
  }
  const target = await openProxmoxTarget(flags);
  try {
    if (flags.has('delete')) {
      const { deleted, kept } = await deleteOrphanedSeeds(target.pve, { minAgeSeconds });
      if (flags.has('json')) {
        process.stdout.write(`${JSON.stringify({ deleted, kept }, null, 2)}\n`);
      } else {
        for (const s of deleted) process.stdout.write(`deleted ${s.volid}\n`);
        for (const s of kept) {
          const young = isYoung(s, minAgeSeconds, Date.now() / 1000);
          const why = s.usedBy.length > 0 ? `used by VM ${s.usedBy.join(', ')}` : s.kind === 'vmid' && !young ? 'its VMID was taken meanwhile' : `younger than ${minAgeSeconds} s`;
          process.stdout.write(`kept    ${s.volid} (${why})\n`);
        }
      }
      return 0;
    }
    const seeds = await listOurSeeds(target.pve);
    const orphaned = seeds.filter((s) => s.usedBy.length === 0);
    if (flags.has('json')) {
      process.stdout.write(`${JSON.stringify({ orphaned, used: seeds.filter((s) => s.usedBy.length > 0) }, null, 2)}\n`);
    } else {
      for (const s of seeds) {
        const what = s.usedBy.length > 0 ? `used by VM ${s.usedBy.join(', ')}` : s.kind === 'vmid' ? 'ORPHANED (no VM has its VMID)' : 'ORPHANED';
        process.stdout.write(`${what}\t${s.volid}\n`);
      }
      process.stdout.write(`${orphaned.length} orphaned of ${seeds.length}\n`);
    }
    return 0;
  } finally {
    await target.close();
  }
}
