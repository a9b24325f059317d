// What `npm ci` checks before it installs anything, done offline on package.json and package-lock.json: the lock file
// records the same dependency ranges as package.json, and every dependency of every locked package (optional
// platform binaries of other OSes and CPUs included) resolves to an entry of the lock file by Node's lookup.

export interface PackageJson {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

export interface LockEntry extends PackageJson {
  version?: string;
  dev?: boolean;
  optional?: boolean;
  peer?: boolean;
  link?: boolean;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

export interface LockFile {
  lockfileVersion: number;
  packages: Record<string, LockEntry>;
}

/** The lock path a dependency `name` of the package at `from` resolves to, walking up node_modules folders. */
export function resolveInLock(lock: LockFile, from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = base === '' ? `node_modules/${name}` : `${base}/node_modules/${name}`;
    if (lock.packages[candidate] !== undefined) return candidate;
    if (base === '') return undefined;
    const i = base.lastIndexOf('/node_modules/');
    base = i < 0 ? '' : base.slice(0, i);
  }
}

function sameRanges(a: Record<string, string> | undefined, b: Record<string, string> | undefined): string[] {
  const out: string[] = [];
  const x = a ?? {};
  const y = b ?? {};
  for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) if (x[k] !== y[k]) out.push(`${k}: package.json ${x[k] ?? '(absent)'}, lock ${y[k] ?? '(absent)'}`);
  return out;
}

/** Every way package.json and the lock file disagree, as `npm ci` would refuse them; empty when they agree. */
export function lockProblems(pkg: PackageJson, lock: LockFile): string[] {
  const problems: string[] = [];
  if (lock.lockfileVersion < 2) problems.push(`lockfileVersion ${lock.lockfileVersion}: npm ci needs 2 or 3`);
  const root = lock.packages[''];
  if (!root) return [...problems, 'the lock file has no root package entry'];
  for (const kind of ['dependencies', 'devDependencies', 'optionalDependencies'] as const) {
    for (const d of sameRanges(pkg[kind], root[kind])) problems.push(`${kind} differ: ${d}`);
  }
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (entry.link) continue;
    const needed = { ...entry.dependencies, ...entry.optionalDependencies };
    for (const [peer, range] of Object.entries(entry.peerDependencies ?? {})) {
      if (!entry.peerDependenciesMeta?.[peer]?.optional) needed[peer] = range;
    }
    if (path === '') Object.assign(needed, entry.devDependencies);
    for (const name of Object.keys(needed)) {
      if (resolveInLock(lock, path, name) === undefined) problems.push(`Missing: ${name} (needed by ${path || 'the root package'}) from lock file`);
    }
  }
  return problems;
}

/** Lock paths of every package a production install (`npm ci --omit=dev`) installs on this platform or any other. */
export function productionClosure(lock: LockFile): Set<string> {
  const out = new Set<string>();
  const queue: string[] = [];
  const visit = (from: string, names: string[]) => {
    for (const name of names) {
      const p = resolveInLock(lock, from, name);
      if (p !== undefined && !out.has(p)) {
        out.add(p);
        queue.push(p);
      }
    }
  };
  const root = lock.packages['']!;
  visit('', Object.keys({ ...root.dependencies, ...root.optionalDependencies }));
  while (queue.length > 0) {
    const p = queue.shift()!;
    const e = lock.packages[p]!;
    const peers = Object.keys(e.peerDependencies ?? {}).filter((n) => !e.peerDependenciesMeta?.[n]?.optional);
    visit(p, [...Object.keys({ ...e.dependencies, ...e.optionalDependencies }), ...peers]);
  }
  return out;
}
