// `storage explain`: how a CEL storage selector sees every storage of the cluster (or one node).
import { explainSelector, SelectorError, type StorageFacts } from '../cel/index.js';
import { storageFacts } from '../provision/cluster.js';
import { openProxmoxTarget } from './proxmoxTarget.js';
import { parseFlags, UsageError } from './usage.js';

const usage =
  'usage: omni-infra-provider-proxmox storage explain --selector EXPR [--node N] (--config-file F | --sim-fixture F) --json';

export default async function storageExplain(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    strings: ['selector', 'node', 'config-file', 'sim-fixture'],
    booleans: ['json', 'help'],
  });
  if (flags.has('help')) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument "${positional[0]}"; ${usage}`);
  const selector = flags.get('selector');
  if (typeof selector !== 'string') throw new UsageError(`--selector is required; ${usage}`);
  const only = flags.get('node') as string | undefined;
  const target = await openProxmoxTarget(flags);
  try {
    const nodes = (await target.pve.nodes()).filter((n) => n.status === 'online').map((n) => n.node);
    if (only !== undefined && !nodes.includes(only)) {
      throw new UsageError(`--node: "${only}" is not an online node of the cluster (online: ${nodes.join(', ') || 'none'})`);
    }
    const facts: StorageFacts[] = [];
    for (const node of only !== undefined ? [only] : nodes.sort()) facts.push(...(await storageFacts(target.pve, node)));
    let rows;
    try {
      rows = explainSelector(selector, facts, only);
    } catch (err) {
      if (err instanceof SelectorError) throw new UsageError(`--selector: ${err.message}`);
      throw err;
    }
    const out = rows.map((r) => ({
      node: r.node,
      storage: r.storage,
      matched: r.matched,
      chosen: r.chosen,
      eligible: r.eligible,
      ...(r.why !== undefined ? { why: r.why } : {}),
      ...(r.error !== undefined ? { error: r.error } : {}),
      vars: r.vars,
    }));
    if (flags.has('json')) {
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } else {
      for (const r of out) {
        const verdict = r.chosen ? 'CHOSEN' : r.matched ? 'matched' : r.eligible ? (r.error ? `error: ${r.error}` : 'no match') : `not eligible: ${r.why}`;
        process.stdout.write(`${r.node.padEnd(12)} ${r.storage.padEnd(20)} ${verdict}\n`);
      }
    }
    return 0;
  } finally {
    await target.close();
  }
}
