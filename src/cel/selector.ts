// Storage selectors: compile a MachineClass CEL expression, evaluate it over the storages of one Proxmox node,
// pick one deterministically, and explain every decision in words an operator can act on.
import type { ASTNode } from '@marcbachmann/cel-js';
import { Environment, UnsignedInt } from '@marcbachmann/cel-js/evaluator';
import type { Logger } from '../log.js';
import { aliasTypeIdentifier, positionAt, TYPE_ALIAS, unaliasText, type SourcePosition } from './source.js';

export type { SourcePosition } from './source.js';

/** What Proxmox reports about one storage on one node (`GET /nodes/{node}/storage`), sizes in bytes. */
export interface StorageFacts {
  storage: string;
  node: string;
  /** Storage plugin type: `dir`, `lvmthin`, `zfspool`, `rbd`, `nfs`, ... */
  type: string;
  content: string[];
  shared: boolean;
  active: boolean;
  enabled: boolean;
  total: number;
  used: number;
  avail: number;
}

export type SelectorErrorKind = 'compile' | 'eval' | 'no-match' | 'not-bool';

export interface SelectorErrorDetails {
  selector: string;
  /** The bare reason, without the selector and context around it. */
  reason: string;
  position?: SourcePosition;
  node?: string;
  storage?: string;
  /** For `no-match`: every storage of the node, with why it was or was not considered. */
  rows?: StorageExplanation[];
}

export class SelectorError extends Error {
  override readonly name = 'SelectorError';
  readonly kind: SelectorErrorKind;
  readonly selector: string;
  readonly reason: string;
  readonly position?: SourcePosition;
  readonly node?: string;
  readonly storage?: string;
  readonly rows?: StorageExplanation[];

  constructor(kind: SelectorErrorKind, message: string, details: SelectorErrorDetails) {
    super(message);
    this.kind = kind;
    this.selector = details.selector;
    this.reason = details.reason;
    if (details.position) this.position = details.position;
    if (details.node !== undefined) this.node = details.node;
    if (details.storage !== undefined) this.storage = details.storage;
    if (details.rows) this.rows = details.rows;
  }
}

export interface CompiledSelector {
  readonly source: string;
  /** True when the storage satisfies the expression. Throws SelectorError `eval` or `not-bool`. */
  matches(facts: StorageFacts): boolean;
}

export interface StorageExplanation {
  node: string;
  storage: string;
  /** Enabled, active and allows `images`: only eligible storages are ever chosen. */
  eligible: boolean;
  /** Why the storage is not eligible. */
  why?: string;
  /** Eligible and the selector returned true. */
  matched: boolean;
  /** What the selector returned for this storage (also computed for storages that are not eligible). */
  result?: boolean;
  /** Evaluation error for this storage, if any. */
  error?: string;
  /** The storage selectStorage would pick on this node. */
  chosen: boolean;
  /** The values of every selector variable for this storage. */
  vars: Record<string, unknown>;
}

/** Variables a selector can use, in the order they are documented and listed in messages. */
export const SELECTOR_VARIABLES = [
  ['name', 'string'],
  ['node', 'string'],
  ['type', 'string'],
  ['storageType', 'string'],
  ['availableSpace', 'uint'],
  ['total', 'uint'],
  ['used', 'uint'],
  ['content', 'list<string>'],
  ['shared', 'bool'],
  ['active', 'bool'],
  ['enabled', 'bool'],
] as const;

const environment = buildEnvironment();

function buildEnvironment(): Environment {
  let env = new Environment();
  for (const [name, type] of SELECTOR_VARIABLES) {
    env = env.registerVariable(name === 'type' ? TYPE_ALIAS : name, type);
  }
  // cel-go has int(uint); this library lacks it. Overflow past int64 is an error, as in cel-go.
  return env.registerFunction('int(uint): int', (u: UnsignedInt) => {
    const v = u.valueOf();
    if (v > 0x7fffffffffffffffn) throw new RangeError('int() range error: value does not fit in int');
    return v;
  });
}

function toUint(bytes: number): UnsignedInt {
  const whole = Number.isFinite(bytes) && bytes > 0 ? Math.trunc(bytes) : 0;
  return new UnsignedInt(BigInt(whole));
}

function celContext(f: StorageFacts): Record<string, unknown> {
  return {
    name: f.storage,
    node: f.node,
    [TYPE_ALIAS]: f.type,
    storageType: f.type,
    availableSpace: toUint(f.avail),
    total: toUint(f.total),
    used: toUint(f.used),
    content: [...f.content],
    shared: f.shared,
    active: f.active,
    enabled: f.enabled,
  };
}

/** Selector variables for one storage, as plain JSON-friendly values (for explain output). */
export function selectorVariables(f: StorageFacts): Record<string, unknown> {
  return {
    name: f.storage,
    node: f.node,
    type: f.type,
    storageType: f.type,
    availableSpace: f.avail,
    total: f.total,
    used: f.used,
    content: [...f.content],
    shared: f.shared,
    active: f.active,
    enabled: f.enabled,
  };
}

/** Longest selector text quoted in a message; longer ones are cut (a message must stay readable in Omni's UI). */
const QUOTE_MAX = 120;

/** Control characters written as `\xNN`, so a message never carries them. */
function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** The selector as quoted in one-line messages: whitespace folded, control characters escaped, long text cut. */
function quoted(source: string): string {
  let text = printable(source.replace(/\s+/g, ' ').trim());
  if (text.length > QUOTE_MAX) text = `${text.slice(0, QUOTE_MAX)}… (${source.length} characters)`;
  return '`' + text + '`';
}

interface LibraryError {
  summary?: string;
  code?: string;
  range?: { start: number };
  message?: string;
}

function libraryReason(err: unknown): string {
  const e = err as LibraryError;
  const text = typeof e?.summary === 'string' ? e.summary : err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
  return printable(unaliasText(text)).slice(0, 300);
}

const variableList = SELECTOR_VARIABLES.map(([n, t]) => `${n} (${t})`).join(', ');

function compileHint(code: string | undefined, reason: string): string {
  if (code === 'unknown_variable') return `; available variables: ${variableList}`;
  if (/Unexpected character: =$/.test(reason)) return '; compare with ==';
  if (/\buint\b/.test(reason) && /\bint\b/.test(reason.replace(/\buint\b/g, ''))) {
    return '; availableSpace, total and used are uint: write integer literals with a u suffix (availableSpace > 100u * 1024u * 1024u * 1024u) or compare with plain >, <, >=, <=';
  }
  return '';
}

/**
 * Patterns given as literals to `matches` are checked when the selector is compiled, so a bad regex is reported
 * with its position instead of failing on every storage later. The library uses JavaScript regular expressions,
 * not RE2: RE2's inline flags such as `(?i)` are the usual casualty, so they get a hint.
 */
function checkRegexLiterals(node: ASTNode, source: string): void {
  const stack: unknown[] = [node];
  while (stack.length) {
    const n = stack.pop() as ASTNode | undefined;
    if (!n || typeof n !== 'object' || !('op' in n)) continue;
    if (n.op === 'rcall' && n.args[0] === 'matches') {
      const pattern = n.args[2][0];
      if (pattern && pattern.op === 'value' && typeof pattern.args === 'string') {
        try {
          new RegExp(pattern.args);
        } catch {
          const position = positionAt(source, pattern.range.start);
          const hint = /^\(\?[a-zA-Z]+\)/.test(pattern.args)
            ? '; inline flags like (?i) are not supported, use e.g. name.lowerAscii().matches("...")'
            : '';
          const reason = `invalid regular expression ${JSON.stringify(pattern.args)}`;
          throw new SelectorError(
            'compile',
            `storage selector ${quoted(source)} is not valid CEL at line ${position.line}, column ${position.column}: ${reason}${hint}`,
            { selector: source, reason, position },
          );
        }
      }
    }
    const args: unknown = n.args;
    if (Array.isArray(args)) stack.push(...args.flat(2));
  }
}

/** Compile a selector once; throws SelectorError `compile` (with position) or `not-bool`. */
export function compileSelector(expr: string): CompiledSelector {
  const source = expr;
  if (source.trim() === '') {
    throw new SelectorError('compile', 'storage selector is empty; write a CEL condition such as name == "local-lvm"', {
      selector: source,
      reason: 'empty expression',
      position: positionAt(source, 0),
    });
  }
  let evaluate: (ctx: Record<string, unknown>) => unknown;
  let resultType: string | undefined;
  try {
    const parsed = environment.parse(aliasTypeIdentifier(source));
    const checked = parsed.check();
    if (!checked.valid) throw checked.error;
    resultType = checked.type;
    evaluate = parsed;
    checkRegexLiterals(parsed.ast, source);
  } catch (err) {
    if (err instanceof SelectorError) throw err;
    const e = err as LibraryError;
    const reason = libraryReason(err);
    const position = typeof e?.range?.start === 'number' ? positionAt(source, e.range.start) : undefined;
    const where = position ? ` at line ${position.line}, column ${position.column}` : '';
    throw new SelectorError(
      'compile',
      `storage selector ${quoted(source)} is not valid CEL${where}: ${reason}${compileHint(e?.code, reason)}`,
      { selector: source, reason, ...(position ? { position } : {}) },
    );
  }
  if (resultType !== 'bool' && resultType !== 'dyn') {
    throw new SelectorError(
      'not-bool',
      `storage selector ${quoted(source)} returns ${resultType ?? 'an unknown type'}, not bool; write a condition such as name == "local-lvm"`,
      { selector: source, reason: `result type is ${resultType ?? 'unknown'}` },
    );
  }
  return {
    source,
    matches(facts: StorageFacts): boolean {
      let out: unknown;
      try {
        out = evaluate(celContext(facts));
      } catch (err) {
        const reason = libraryReason(err);
        throw new SelectorError(
          'eval',
          `storage selector ${quoted(source)} failed on storage ${facts.storage} on node ${facts.node}: ${reason} (${describeVars(facts)})`,
          { selector: source, reason, node: facts.node, storage: facts.storage },
        );
      }
      if (typeof out !== 'boolean') {
        const got = celTypeName(out);
        throw new SelectorError(
          'not-bool',
          `storage selector ${quoted(source)} returned ${got} for storage ${facts.storage} on node ${facts.node}, not bool`,
          { selector: source, reason: `returned ${got}`, node: facts.node, storage: facts.storage },
        );
      }
      return out;
    },
  };
}

/** CEL's name for the type of an evaluation result, for messages. */
function celTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (v instanceof UnsignedInt) return 'uint';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'number') return 'double';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object') return 'map';
  return typeof v;
}

/** Why a storage can never hold a VM disk, or undefined when it can. */
export function ineligibility(f: StorageFacts): string | undefined {
  const why: string[] = [];
  if (!f.enabled) why.push('disabled');
  if (!f.active) why.push('inactive');
  if (!f.content.includes('images')) {
    why.push(f.content.length ? `content ${f.content.join(',')} does not allow images` : 'content does not allow images');
  }
  return why.length ? why.join(', ') : undefined;
}

/** Deterministic preference: most available space first, then storage name. */
function byPreference(a: StorageFacts, b: StorageFacts): number {
  if (a.avail !== b.avail) return b.avail - a.avail;
  return a.storage < b.storage ? -1 : a.storage > b.storage ? 1 : 0;
}

const GIB = 1024 ** 3;

function formatSize(bytes: number): string {
  return `${Math.max(0, Math.trunc(bytes))}u (${(bytes / GIB).toFixed(1)} GiB)`;
}

function describeVars(f: StorageFacts): string {
  return [
    `type=${f.type}`,
    `availableSpace=${formatSize(f.avail)}`,
    `total=${formatSize(f.total)}`,
    `used=${formatSize(f.used)}`,
    `content=[${f.content.join(',')}]`,
    `shared=${f.shared}`,
  ].join(', ');
}

export interface SelectOptions {
  logger?: Logger;
}

/**
 * Pick the storage for a disk on `node`: among storages of that node that are enabled, active and allow
 * `images`, those the selector matches; the one with most available space wins, ties broken by name.
 */
export function selectStorage(
  expr: string | CompiledSelector,
  storages: readonly StorageFacts[],
  node: string,
  opts: SelectOptions = {},
): StorageFacts {
  const selector = typeof expr === 'string' ? compileSelector(expr) : expr;
  const onNode = storages.filter((s) => s.node === node);
  const candidates = onNode.filter((s) => ineligibility(s) === undefined).sort(byPreference);
  // Every candidate is evaluated, so an expression that errors on any of them fails the same way every time.
  const matched = candidates.filter((s) => selector.matches(s));
  const chosen = matched[0];
  if (chosen) {
    opts.logger?.debug({ node, storage: chosen.storage, selector: selector.source, matched: matched.length }, 'storage selected');
    return chosen;
  }
  const rows = explainRows(selector, onNode);
  const excluded = onNode
    .filter((s) => ineligibility(s) !== undefined)
    .sort((a, b) => (a.storage < b.storage ? -1 : 1))
    .map((s) => {
      const row = rows.find((r) => r.node === s.node && r.storage === s.storage);
      return `${s.storage} (${ineligibility(s)}${row?.result === true ? '; the selector would match it' : ''})`;
    });
  const notEligible = excluded.length ? `; not eligible: ${excluded.join(', ')}` : '';
  let message: string;
  if (onNode.length === 0) {
    message = `storage selector ${quoted(selector.source)} has nothing to choose from: no storage reported on node ${node}`;
  } else if (candidates.length === 0) {
    message = `storage selector ${quoted(selector.source)} has nothing to choose from on node ${node}: no storage there is enabled, active and allows disk images${notEligible}`;
  } else {
    const listed = candidates.map((s) => `${s.storage} (${describeVars(s)})`).join('; ');
    message = `storage selector ${quoted(selector.source)} matched no storage on node ${node}; candidates: ${listed}${notEligible}`;
  }
  throw new SelectorError('no-match', message, { selector: selector.source, reason: 'no storage matched', node, rows });
}

function explainRows(selector: CompiledSelector, storages: readonly StorageFacts[]): StorageExplanation[] {
  const nodes = [...new Set(storages.map((s) => s.node))].sort();
  const rows: StorageExplanation[] = [];
  for (const node of nodes) {
    const here = storages.filter((s) => s.node === node).sort(byPreference);
    let chosenYet = false;
    for (const s of here) {
      const why = ineligibility(s);
      const row: StorageExplanation = {
        node,
        storage: s.storage,
        eligible: why === undefined,
        matched: false,
        chosen: false,
        vars: selectorVariables(s),
      };
      if (why !== undefined) row.why = why;
      try {
        row.result = selector.matches(s);
      } catch (err) {
        row.error = err instanceof SelectorError ? err.reason : String(err);
      }
      row.matched = row.eligible && row.result === true;
      rows.push(row);
    }
    // selectStorage fails outright when any candidate errors; mirror that: nothing is chosen on such a node.
    const nodeRows = rows.filter((r) => r.node === node);
    if (!nodeRows.some((r) => r.eligible && r.error !== undefined)) {
      for (const r of nodeRows) {
        if (r.matched && !chosenYet) {
          r.chosen = true;
          chosenYet = true;
        }
      }
    }
  }
  return rows;
}

/**
 * Every storage (of `node`, or of all nodes), with its variables, eligibility and the selector's verdict.
 * Throws SelectorError only when the selector does not compile or is not a condition.
 */
export function explainSelector(
  expr: string | CompiledSelector,
  storages: readonly StorageFacts[],
  node?: string,
): StorageExplanation[] {
  const selector = typeof expr === 'string' ? compileSelector(expr) : expr;
  return explainRows(selector, node === undefined ? storages : storages.filter((s) => s.node === node));
}
