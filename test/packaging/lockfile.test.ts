// `npm ci` on the committed lock file: package.json and package-lock.json agree, the lock lists every platform's
// optional packages (an arm64 build must not be refused), and the dependencies are split right: what the compiled
// daemon imports at run time is in `dependencies`, the build/test/codegen tools are in `devDependencies`.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/daemon-command.js';
import { lockProblems, productionClosure, type LockFile, type PackageJson } from './lockfile.js';

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as PackageJson & { scripts: Record<string, string> };
const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as LockFile;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The package names src/ imports with a value (not `import type`, which the compiler erases). */
function runtimeImports(): Set<string> {
  const out = new Set<string>();
  const builtins = new Set(builtinModules);
  for (const file of sourceFiles(join(REPO_ROOT, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/^\s*(import|export)\s+(?!type\s)[^;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gms)) {
      const spec = m[2] ?? m[3]!;
      if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
      const parts = spec.split('/');
      out.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!);
    }
  }
  return out;
}

describe('package-lock.json', () => {
  it('agrees with package.json and lists every dependency of every locked package (npm ci would accept it)', () => {
    expect(lockProblems(pkg, lock)).toEqual([]);
  });

  it('lists the optional platform binaries of other OSes and CPUs (arm64 builds, macOS, Windows)', () => {
    for (const p of ['node_modules/@bufbuild/buf-darwin-arm64', 'node_modules/@bufbuild/buf-linux-aarch64', 'node_modules/@rollup/rollup-linux-arm64-musl', 'node_modules/@esbuild/linux-arm64']) {
      expect(lock.packages[p], p).toBeDefined();
    }
  });

  it('is refused when package.json and the lock disagree, or an optional package is missing (the check can fail)', () => {
    const dropped: LockFile = JSON.parse(JSON.stringify(lock));
    delete dropped.packages['node_modules/@bufbuild/buf-darwin-arm64'];
    expect(lockProblems(pkg, dropped)).toEqual(['Missing: @bufbuild/buf-darwin-arm64 (needed by node_modules/@bufbuild/buf) from lock file']);
    const bumped = { ...pkg, dependencies: { ...pkg.dependencies, yaml: '^9.0.0' } };
    expect(lockProblems(bumped, lock)).toEqual([expect.stringMatching(/^dependencies differ: yaml: package.json \^9.0.0, lock \^/)]);
    const added = { ...pkg, dependencies: { ...pkg.dependencies, 'left-pad': '^1.3.0' } };
    expect(lockProblems(added, lock).join('\n')).toMatch(/left-pad/);
  });
});

describe('dependencies', () => {
  const deps = Object.keys(pkg.dependencies ?? {});
  const devDeps = Object.keys(pkg.devDependencies ?? {});

  it('has every package src/ imports at run time in dependencies, and nothing there that src/ does not import', () => {
    const used = runtimeImports();
    expect([...used].filter((d) => !deps.includes(d)).sort()).toEqual([]);
    expect(deps.filter((d) => !used.has(d)).sort()).toEqual([]);
  });

  it('keeps the build, test and codegen tools in devDependencies, out of the production install', () => {
    for (const tool of ['typescript', 'tsx', 'vitest', '@bufbuild/buf', '@bufbuild/protoc-gen-es', '@types/node']) {
      expect(devDeps, tool).toContain(tool);
      expect(deps, tool).not.toContain(tool);
    }
    const prod = productionClosure(lock);
    for (const p of ['node_modules/tsx', 'node_modules/esbuild', 'node_modules/typescript', 'node_modules/vitest', 'node_modules/@bufbuild/buf']) {
      expect(prod.has(p), p).toBe(false);
    }
    expect(prod.has('node_modules/@marcbachmann/cel-js')).toBe(true);
    // Every package a production install takes is marked as such in the lock (npm ci --omit=dev relies on it).
    expect([...prod].filter((p) => lock.packages[p]?.dev === true)).toEqual([]);
  });
});
