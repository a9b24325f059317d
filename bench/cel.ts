// CEL library comparison for storage selectors: a conformance set run against every candidate library,
// plus compile/evaluate throughput measured in the same run. Run: `npx tsx bench/cel.ts [--json <file>] [--quick]`.
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

/** Variable values every case sees, shaped like one Proxmox storage on one node. */
export interface Vars {
  name: string;
  node: string;
  storageType: string;
  type: string;
  availableSpace: bigint;
  total: bigint;
  used: bigint;
  content: string[];
  shared: boolean;
  active: boolean;
  enabled: boolean;
}

const GiB = 1024n * 1024n * 1024n;
export const baseVars: Vars = {
  name: 'local-lvm',
  node: 'pve1',
  storageType: 'lvmthin',
  type: 'lvmthin',
  availableSpace: 200n * GiB,
  total: 500n * GiB,
  used: 300n * GiB,
  content: ['images', 'rootdir'],
  shared: false,
  active: true,
  enabled: true,
};

export type Expectation = { value: boolean | string } | { error: 'any' | 'parse' };

export interface ConformanceCase {
  area: string;
  expr: string;
  expect: Expectation;
  /** Why the expectation is what it is, when not obvious (the reference is cel-go with a declared environment). */
  note?: string;
}

/** Cases that matter for storage selectors, expectations per cel-spec / cel-go (checked environment). */
export const conformanceCases: ConformanceCase[] = [
  { area: 'string equality', expr: 'name == "local-lvm"', expect: { value: true } },
  { area: 'string equality', expr: 'name != "local"', expect: { value: true } },
  { area: 'string equality', expr: `"a\\"b" == 'a"b'`, expect: { value: true } },
  { area: 'string concat', expr: 'name + "@" + node == "local-lvm@pve1"', expect: { value: true } },
  { area: 'in', expr: '"images" in content', expect: { value: true } },
  { area: 'in', expr: '"iso" in content', expect: { value: false } },
  { area: 'in', expr: 'storageType in ["lvmthin", "zfspool", "rbd"]', expect: { value: true } },
  { area: 'string functions', expr: 'name.startsWith("local")', expect: { value: true } },
  { area: 'string functions', expr: 'name.endsWith("lvm")', expect: { value: true } },
  { area: 'string functions', expr: 'name.contains("al-l")', expect: { value: true } },
  { area: 'string functions', expr: 'name.matches("^local-[a-z]+$")', expect: { value: true } },
  { area: 'string functions', expr: 'name.matches("lvm")', expect: { value: true }, note: 'RE2 partial match, not anchored' },
  { area: 'string functions', expr: 'name.matches("[")', expect: { error: 'any' }, note: 'invalid regex' },
  { area: 'size', expr: 'size(name) == 9', expect: { value: true } },
  { area: 'size', expr: 'name.size() == 9', expect: { value: true } },
  { area: 'size', expr: 'size(content) == 2', expect: { value: true } },
  { area: 'size', expr: 'size("ü") == 1', expect: { value: true }, note: 'code points, not bytes' },
  { area: 'uint', expr: 'availableSpace > 100u * 1024u * 1024u * 1024u', expect: { value: true } },
  { area: 'uint', expr: 'availableSpace / 1073741824u >= 200u', expect: { value: true } },
  { area: 'uint', expr: 'total - used == availableSpace', expect: { value: true } },
  { area: 'uint', expr: 'used - total > 0u', expect: { error: 'any' }, note: 'uint underflow' },
  { area: 'uint', expr: 'int(availableSpace) > 1000', expect: { value: true } },
  { area: 'uint', expr: 'double(availableSpace) / 1073741824.0 > 199.5', expect: { value: true } },
  { area: 'int/uint mixing', expr: 'availableSpace > 1000', expect: { value: true }, note: 'cross-type ordering (cel-spec); cel-go needs CrossTypeNumericComparisons' },
  { area: 'int/uint mixing', expr: 'availableSpace - 1 > 0u', expect: { error: 'any' }, note: 'no overload uint - int' },
  { area: 'int/uint mixing', expr: '100 * 1024u > 0u', expect: { error: 'any' }, note: 'no overload int * uint' },
  { area: 'int/uint mixing', expr: 'name == 1', expect: { error: 'any' }, note: 'checker: no overload string == int' },
  { area: 'short-circuit', expr: 'true || 1 / 0 > 0', expect: { value: true } },
  { area: 'short-circuit', expr: '1 / 0 > 0 || true', expect: { value: true }, note: 'commutative error absorption' },
  { area: 'short-circuit', expr: 'false && 1 / 0 > 0', expect: { value: false } },
  { area: 'short-circuit', expr: '1 / 0 > 0 && false', expect: { value: false } },
  { area: 'short-circuit', expr: '1 / 0 > 0 || false', expect: { error: 'any' } },
  { area: 'macros', expr: 'content.exists(c, c == "images")', expect: { value: true } },
  { area: 'macros', expr: 'content.all(c, c != "iso")', expect: { value: true } },
  { area: 'macros', expr: 'content.exists_one(c, c.startsWith("i"))', expect: { value: true } },
  { area: 'macros', expr: 'content.filter(c, c.endsWith("dir")).size() == 1', expect: { value: true } },
  { area: 'macros', expr: 'content.map(c, size(c)) == [6, 7]', expect: { value: true } },
  { area: 'ternary', expr: 'shared ? name == "ceph" : availableSpace > 0u', expect: { value: true } },
  { area: 'bool vars', expr: '!shared && active && enabled', expect: { value: true } },
  { area: 'type()', expr: 'type(name) == string', expect: { value: true } },
  { area: 'non-bool result', expr: 'name', expect: { value: 'local-lvm' } },
  { area: 'unknown variable', expr: 'storagetype == "rbd"', expect: { error: 'any' } },
  { area: 'parse error', expr: 'name ==', expect: { error: 'parse' } },
  { area: 'parse error', expr: 'name = "x"', expect: { error: 'parse' } },
  { area: 'parse error', expr: 'name == "x', expect: { error: 'parse' } },
  { area: 'parse error', expr: '', expect: { error: 'parse' } },
  { area: 'variable named type', expr: 'type == "lvmthin"', expect: { value: true }, note: 'fails in cel-go: type is the builtin' },
];

/** Where a parse error should point, as a 0-based offset into the expression. */
const parseErrorOffsets: Record<string, number> = { 'name ==': 7, 'name = "x"': 5, 'name == "x': 8, '': 0 };

interface Outcome {
  stage: 'ok' | 'compile' | 'eval';
  value?: unknown;
  message?: string;
  /** 0-based offset of a compile error, when the library reports one. */
  offset?: number;
}

interface Candidate {
  id: string;
  version: string;
  /** Compile (parse + whatever checking the library offers) and return a reusable evaluator. */
  compile(expr: string): (vars: Vars) => unknown;
  /** Offset of a compile error, if the library reports one. */
  offsetOf(err: unknown): number | undefined;
}

async function version(pkg: string): Promise<string> {
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
  try {
    const { readFileSync } = await import('node:fs');
    const path = require.resolve(`${pkg}/package.json`, { paths: [process.cwd()] });
    return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
  } catch {
    // Some packages do not export package.json; fall back to the node_modules path.
    try {
      const { readFileSync } = await import('node:fs');
      return (JSON.parse(readFileSync(`node_modules/${pkg}/package.json`, 'utf8')) as { version: string }).version;
    } catch {
      return '?';
    }
  }
}

async function marcbachmann(): Promise<Candidate> {
  const mod = await import('@marcbachmann/cel-js/evaluator');
  const env = new mod.Environment()
    .registerVariable('name', 'string')
    .registerVariable('node', 'string')
    .registerVariable('storageType', 'string')
    .registerVariable('availableSpace', 'uint')
    .registerVariable('total', 'uint')
    .registerVariable('used', 'uint')
    .registerVariable('content', 'list<string>')
    .registerVariable('shared', 'bool')
    .registerVariable('active', 'bool')
    .registerVariable('enabled', 'bool');
  const U = mod.UnsignedInt;
  return {
    id: '@marcbachmann/cel-js',
    version: await version('@marcbachmann/cel-js'),
    compile(expr) {
      // `type` cannot be declared in this library (it is the builtin type constant); the raw library is tested here.
      const parsed = env.parse(expr);
      const checked = parsed.check();
      if (!checked.valid) throw checked.error;
      return (v) =>
        parsed({
          ...v,
          availableSpace: new U(v.availableSpace),
          total: new U(v.total),
          used: new U(v.used),
        });
    },
    offsetOf(err) {
      const range = (err as { range?: { start: number } }).range;
      return range?.start;
    },
  };
}

async function bufbuild(): Promise<Candidate> {
  const cel = await import('@bufbuild/cel');
  const { CelScalar, listType } = cel;
  const env = cel.celEnv({
    variables: {
      name: CelScalar.STRING,
      node: CelScalar.STRING,
      storageType: CelScalar.STRING,
      type: CelScalar.STRING,
      availableSpace: CelScalar.UINT,
      total: CelScalar.UINT,
      used: CelScalar.UINT,
      content: listType(CelScalar.STRING),
      shared: CelScalar.BOOL,
      active: CelScalar.BOOL,
      enabled: CelScalar.BOOL,
    },
  });
  return {
    id: '@bufbuild/cel',
    version: await version('@bufbuild/cel'),
    compile(expr) {
      const run = cel.plan(env, cel.parse(expr));
      return (v) => {
        const r = run({
          ...v,
          availableSpace: cel.celUint(v.availableSpace),
          total: cel.celUint(v.total),
          used: cel.celUint(v.used),
        });
        if (cel.isCelError(r)) throw r;
        return cel.isCelUint(r) ? r.value : r;
      };
    },
    offsetOf(err) {
      const m = /<input>:(\d+):(\d+):/.exec(err instanceof Error ? err.message : '');
      // Reports "line:column", 1-based column; single-line cases only here.
      return m ? Number(m[2]) - 1 : undefined;
    },
  };
}

async function chromegg(): Promise<Candidate> {
  const lib = await import('cel-js');
  return {
    id: 'cel-js',
    version: await version('cel-js'),
    compile(expr) {
      const parsed = lib.parse(expr);
      if (!parsed.isSuccess) throw new Error(parsed.errors.join('; '));
      return (v) => {
        const out = lib.evaluate(parsed.cst, {
          ...v,
          availableSpace: Number(v.availableSpace),
          total: Number(v.total),
          used: Number(v.used),
        });
        return out;
      };
    },
    offsetOf() {
      return undefined; // errors are strings without positions
    },
  };
}

function runCase(c: Candidate, expr: string): Outcome {
  let evaluate: (vars: Vars) => unknown;
  try {
    evaluate = c.compile(expr);
  } catch (err) {
    const offset = c.offsetOf(err);
    return { stage: 'compile', message: firstLine(err), ...(offset === undefined ? {} : { offset }) };
  }
  try {
    return { stage: 'ok', value: evaluate(baseVars) };
  } catch (err) {
    return { stage: 'eval', message: firstLine(err) };
  }
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function passes(c: ConformanceCase, o: Outcome): boolean {
  if ('value' in c.expect) return o.stage === 'ok' && o.value === c.expect.value;
  if (c.expect.error === 'parse') return o.stage === 'compile';
  return o.stage !== 'ok';
}

/** Median of `runs` samples of ops/s, each sample a loop of about `sampleMs`. */
function opsPerSecond(fn: () => void, runs: number, sampleMs: number): number {
  const samples: number[] = [];
  // Warm up (JIT, caches) for one sample's length before measuring.
  const warmUntil = performance.now() + sampleMs;
  while (performance.now() < warmUntil) for (let i = 0; i < 100; i++) fn();
  for (let r = 0; r < runs; r++) {
    let n = 0;
    const start = performance.now();
    let now = start;
    while (now - start < sampleMs) {
      for (let i = 0; i < 100; i++) fn();
      n += 100;
      now = performance.now();
    }
    samples.push((n * 1000) / (now - start));
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] ?? 0;
}

const benchExpr = 'storageType in ["lvmthin", "zfspool", "rbd"] && availableSpace > 100u * 1024u * 1024u * 1024u && "images" in content';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const quick = args.includes('--quick');
  const jsonIdx = args.indexOf('--json');
  const jsonPath = jsonIdx >= 0 ? args[jsonIdx + 1] : undefined;

  const candidates: Candidate[] = [];
  for (const load of [marcbachmann, bufbuild, chromegg]) {
    try {
      candidates.push(await load());
    } catch (err) {
      console.log(`skipped a candidate (not installed?): ${firstLine(err)}`);
    }
  }

  // Conformance.
  const results: Record<string, { pass: number; total: number; compileTimeErrors: number; positioned: number; failures: string[] }> = {};
  for (const cand of candidates) {
    const r = { pass: 0, total: 0, compileTimeErrors: 0, positioned: 0, failures: [] as string[] };
    for (const cc of conformanceCases) {
      const o = runCase(cand, cc.expr);
      r.total++;
      if (passes(cc, o)) r.pass++;
      else {
        const got = o.stage === 'ok' ? `value ${JSON.stringify(String(o.value))}` : `${o.stage} error: ${o.message}`;
        r.failures.push(`[${cc.area}] \`${cc.expr}\` expected ${JSON.stringify(cc.expect)}, got ${got}`);
      }
      const expectsErrorBeforeRun = 'error' in cc.expect && cc.area !== 'short-circuit' && !cc.expr.includes('matches') && !cc.expr.includes('used - total');
      if (expectsErrorBeforeRun && o.stage === 'compile') r.compileTimeErrors++;
      const want = parseErrorOffsets[cc.expr];
      if (want !== undefined && o.offset === want) r.positioned++;
    }
    results[cand.id] = r;
  }

  // Throughput, same run.
  const runs = quick ? 3 : 7;
  const sampleMs = quick ? 50 : 200;
  const perf: Record<string, { compile: number; evaluate: number }> = {};
  for (const cand of candidates) {
    const compile = opsPerSecond(() => void cand.compile(benchExpr), runs, sampleMs);
    const evaluate = cand.compile(benchExpr);
    const ev = opsPerSecond(() => void evaluate(baseVars), runs, sampleMs);
    perf[cand.id] = { compile, evaluate: ev };
  }

  const errorCases = conformanceCases.filter(
    (c) => 'error' in c.expect && c.area !== 'short-circuit' && !c.expr.includes('matches') && !c.expr.includes('used - total'),
  ).length;
  const base = candidates[0] ? perf[candidates[0].id] : undefined;
  console.log(`\nConformance (${conformanceCases.length} cases) and throughput (median of ${runs}), expression: ${benchExpr}\n`);
  console.log('| library | version | conformance | errors caught before evaluation | parse errors at the right offset | compile ops/s | evaluate ops/s | compile ratio | evaluate ratio |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const cand of candidates) {
    const r = results[cand.id]!;
    const p = perf[cand.id]!;
    const ratio = (x: number, y: number | undefined): string => (y ? (x / y).toFixed(2) : '-');
    console.log(
      `| ${cand.id} | ${cand.version} | ${r.pass}/${r.total} | ${r.compileTimeErrors}/${errorCases} | ${r.positioned}/${Object.keys(parseErrorOffsets).length} | ${Math.round(p.compile).toLocaleString('en-US')} | ${Math.round(p.evaluate).toLocaleString('en-US')} | ${ratio(p.compile, base?.compile)} | ${ratio(p.evaluate, base?.evaluate)} |`,
    );
  }
  for (const cand of candidates) {
    const r = results[cand.id]!;
    if (r.failures.length === 0) continue;
    console.log(`\n${cand.id} failures:`);
    for (const f of r.failures) console.log(`  - ${f}`);
  }
  // Our layer on the chosen library: compile (with the `type` rewrite and checks) and a full selection.
  const ours = await import('../src/cel/index.js');
  const storages = Array.from({ length: 12 }, (_, i) => ({
    storage: `s${i}`,
    node: 'pve1',
    type: ['lvmthin', 'zfspool', 'rbd', 'dir'][i % 4]!,
    content: i % 5 === 0 ? ['iso'] : ['images'],
    shared: i % 3 === 0,
    active: true,
    enabled: true,
    total: 1000 * 2 ** 30,
    used: i * 50 * 2 ** 30,
    avail: (1000 - i * 50) * 2 ** 30,
  }));
  const ourCompile = opsPerSecond(() => void ours.compileSelector(benchExpr), runs, sampleMs);
  const compiled = ours.compileSelector(benchExpr);
  const ourSelect = opsPerSecond(() => void ours.selectStorage(compiled, storages, 'pve1'), runs, sampleMs);
  console.log(`\nsrc/cel on the chosen library: compileSelector ${Math.round(ourCompile).toLocaleString('en-US')} ops/s; selectStorage over 12 storages ${Math.round(ourSelect).toLocaleString('en-US')} ops/s`);

  if (jsonPath) {
    writeFileSync(jsonPath, JSON.stringify({ expression: benchExpr, runs, sampleMs, node: process.version, results, perf, ours: { compile: ourCompile, select12: ourSelect } }, null, 2));
    console.log(`\nwrote ${jsonPath}`);
  }
}

// Run only when executed directly, so tests can import the conformance set.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
