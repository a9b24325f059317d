// Differential run: the same MachineClass examples go to our provider and to the upstream Go provider, each on its
// own identical simulated cluster; the `POST /nodes/{node}/qemu` parameters each one sent are normalised and
// diffed, and every difference is matched against the intentional ones documented in docs/compat.md.
import { MACHINE_CLASS_EXAMPLES, type MachineClassExample } from './examples.js';
import { upstreamUnavailableReason, upstreamVersionLabel, type ProviderKind } from '../../bench/provider-process.js';
import type { OmniBackend } from '../../bench/omni-backend.js';
import { runWorkload, type CreateCall, type WorkloadResult } from '../../bench/workload.js';

export interface ParamDiff {
  example: string;
  param: string;
  upstream: string | undefined;
  ours: string | undefined;
  /** Set when the difference is documented as intentional; undefined = unexplained. */
  reason: string | undefined;
}

export interface CreateOutcome {
  status: number;
  refusal: string | undefined;
  node: string;
  params: Record<string, string>;
}

export interface ExampleOutcome {
  example: MachineClassExample;
  upstream: CreateOutcome | undefined;
  ours: CreateOutcome | undefined;
  diffs: ParamDiff[];
}

export interface DifferentialReport {
  upstreamVersion: string;
  examples: ExampleOutcome[];
  /** Schematic YAML each provider had registered for the Talos ISO. */
  schematics: Record<ProviderKind, string[]>;
  /** ISO URLs each provider asked Proxmox to download. */
  isoUrls: Record<ProviderKind, string[]>;
  unexplained: ParamDiff[];
  outboundAttempts: string[];
  errors: string[];
}

/** Values that legitimately differ between any two runs (IDs, UUIDs, content hashes) are replaced by placeholders. */
export function normaliseCreateParams(params: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) {
    if (k === 'node') continue; // placement is compared separately
    let value = v;
    if (k === 'vmid') value = '<vmid>';
    value = value.replace(/uuid=[0-9a-f-]{36}/i, 'uuid=<uuid>');
    value = value.replace(/iso\/[0-9a-f]{64}\.iso/, 'iso/<sha256(url)>.iso');
    out[k] = value;
  }
  return out;
}

interface IntentionalDifference {
  param: RegExp;
  matches(upstream: string | undefined, ours: string | undefined, all: { upstream: Record<string, string>; ours: Record<string, string> }): boolean;
  reason: string;
}

/** The create-parameter differences docs/compat.md lists as intentional, as predicates over the measured values. */
export const INTENTIONAL_DIFFERENCES: readonly IntentionalDifference[] = [
  {
    param: /^cdrom$/,
    matches: (u, o, all) => u !== undefined && o === undefined && all.ours.ide2 === `${u},media=cdrom`,
    reason: 'Talos ISO attached as `ide2=<volid>,media=cdrom` (what PVE turns `cdrom` into); the seed step knows ide0 is free',
  },
  {
    param: /^ide2$/,
    matches: (u, o, all) => u === undefined && o !== undefined && o === `${all.upstream.cdrom ?? ''},media=cdrom`,
    reason: 'same as `cdrom`: explicit slot for the Talos ISO',
  },
  {
    param: /^agent$/,
    matches: (u, o) => u === 'enabled=true' && o === 'enabled=1',
    reason: "PVE's canonical boolean; same meaning",
  },
  {
    param: /^boot$/,
    matches: (u, o) => u === undefined && o === 'order=scsi0;ide2;net0',
    reason: "boot order sent explicitly instead of relying on PVE's default (same order)",
  },
  {
    param: /^sockets$/,
    matches: (u, o) => u === '0' && o === '1',
    reason: "`sockets` unset: upstream sends Go's zero value 0, which PVE's schema refuses (minimum 1); ours sends PVE's default 1",
  },
  {
    param: /^machine$/,
    matches: (u, o) => u === 'i440fx' && o === 'pc',
    reason: '`i440fx` is not a PVE machine type (PVE refuses it); `pc` is the i440fx machine',
  },
  {
    param: /^hostpci\d+$/,
    matches: (u, o) => u !== undefined && o === `${u},rombar=0`,
    reason: '`rombar: false` disables the ROM BAR as the Go field comment says; upstream omitted it (PVE default on)',
  },
];

export function diffCreateParams(example: string, upstream: Record<string, string>, ours: Record<string, string>): ParamDiff[] {
  const keys = [...new Set([...Object.keys(upstream), ...Object.keys(ours)])].sort();
  const diffs: ParamDiff[] = [];
  for (const param of keys) {
    const u = upstream[param];
    const o = ours[param];
    if (u === o) continue;
    const rule = INTENTIONAL_DIFFERENCES.find((r) => r.param.test(param) && r.matches(u, o, { upstream, ours }));
    diffs.push({ example, param, upstream: u, ours: o, reason: rule?.reason });
  }
  return diffs;
}

function createFor(result: WorkloadResult, request: string): CreateCall | undefined {
  // The last attempt wins (a provider may retry after a refusal).
  return result.creates.filter((c) => c.request === request).at(-1);
}

export async function runDifferential(
  opts: { timeScale?: number; examples?: readonly MachineClassExample[]; omni?: (providerId: string) => Promise<OmniBackend> } = {},
): Promise<DifferentialReport> {
  const unavailable = upstreamUnavailableReason();
  if (unavailable) throw new Error(`upstream Go provider unavailable: ${unavailable}`);
  const examples = opts.examples ?? MACHINE_CLASS_EXAMPLES;
  const sets = examples.map((e) => ({ setId: e.name, providerData: e.providerData, count: 1 }));
  const common = {
    sets,
    timeScale: opts.timeScale ?? 0.05,
    teardown: false,
    waitFor: 'create-attempted' as const,
    timeoutMs: 180_000,
    ...(opts.omni ? { omni: opts.omni } : {}),
  };
  // Both providers at once, each against its own Omni and simulated cluster (same fixture, same seed).
  const [up, ours] = await Promise.all([runWorkload({ kind: 'upstream', ...common }), runWorkload({ kind: 'ours', ...common })]);
  const errors = [up, ours].filter((r) => !r.ok).map((r) => `${r.kind}: ${r.error ?? 'failed'}`);
  const outcomes: ExampleOutcome[] = examples.map((example) => {
    const request = `${example.name}-01`;
    const u = createFor(up, request);
    const o = createFor(ours, request);
    const un = u ? normaliseCreateParams(u.params) : undefined;
    const on = o ? normaliseCreateParams(o.params) : undefined;
    return {
      example,
      upstream: u && un ? { status: u.status, refusal: u.refusal, node: u.node, params: un } : undefined,
      ours: o && on ? { status: o.status, refusal: o.refusal, node: o.node, params: on } : undefined,
      diffs: un && on ? diffCreateParams(example.name, un, on) : [],
    };
  });
  const unexplained = outcomes.flatMap((x) => x.diffs.filter((d) => d.reason === undefined));
  for (const x of outcomes) {
    if (!x.upstream || !x.ours) errors.push(`${x.example.name}: no create call from ${!x.upstream ? 'upstream' : 'ours'}`);
  }
  return {
    upstreamVersion: upstreamVersionLabel(),
    examples: outcomes,
    schematics: { upstream: up.schematics.map((s) => s.yaml), ours: ours.schematics.map((s) => s.yaml) },
    isoUrls: { upstream: [...new Set(up.downloads.map((d) => d.url))], ours: [...new Set(ours.downloads.map((d) => d.url))] },
    unexplained,
    outboundAttempts: [...up.outboundAttempts, ...ours.outboundAttempts],
    errors,
  };
}

const cell = (v: string | undefined) => (v === undefined ? '—' : `\`${v.replace(/\|/g, '\\|')}\``);

/** The "Differential report (measured)" section body for docs/compat.md. */
export function renderDifferentialMarkdown(report: DifferentialReport): string {
  const lines: string[] = [];
  for (const x of report.examples) {
    lines.push(`#### \`${x.example.name}\` — ${x.example.covers}`, '', '```yaml', x.example.providerData.trimEnd(), '```', '');
    const st = (s: CreateOutcome | undefined) =>
      s ? (s.status === 200 ? `accepted on ${s.node}` : `refused on ${s.node}: ${s.status} \`${s.refusal ?? '?'}\``) : 'no create call';
    lines.push(`Upstream: ${st(x.upstream)}. Ours: ${st(x.ours)}.`, '');
    lines.push('| Parameter | Upstream | Ours | Verdict |', '|---|---|---|---|');
    const keys = [...new Set([...Object.keys(x.upstream?.params ?? {}), ...Object.keys(x.ours?.params ?? {})])].sort();
    for (const k of keys) {
      const u = x.upstream?.params[k];
      const o = x.ours?.params[k];
      const d = x.diffs.find((z) => z.param === k);
      const verdict = u === o ? 'same' : d?.reason ? `intentional: ${d.reason}` : '**UNEXPLAINED**';
      lines.push(`| \`${k}\` | ${cell(u)} | ${cell(o)} | ${verdict} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const report = await runDifferential();
  process.stdout.write(`${renderDifferentialMarkdown(report)}\n`);
  process.stdout.write(`\nupstream ISO URLs: ${report.isoUrls.upstream.join(', ')}\nours ISO URLs: ${report.isoUrls.ours.join(', ')}\n`);
  process.stdout.write(`\nupstream schematics:\n${report.schematics.upstream.join('\n---\n')}\nours schematics:\n${report.schematics.ours.join('\n---\n')}\n`);
  process.stdout.write(`\nrefused outbound: ${report.outboundAttempts.join(', ') || 'none'}\nerrors: ${report.errors.join('\n') || 'none'}\n`);
  process.stdout.write(`unexplained: ${report.unexplained.length}\n`);
  process.exitCode = report.unexplained.length > 0 || report.errors.length > 0 ? 1 : 0;
}
