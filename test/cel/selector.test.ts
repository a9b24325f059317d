import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  compileSelector,
  explainSelector,
  SelectorError,
  selectStorage,
  type StorageFacts,
} from '../../src/cel/index.js';
import { createLogger } from '../../src/log.js';

const G = 1024 ** 3;

function storage(over: Partial<StorageFacts> & Pick<StorageFacts, 'storage'>): StorageFacts {
  return {
    node: 'pve1',
    type: 'dir',
    content: ['images'],
    shared: false,
    active: true,
    enabled: true,
    total: 500 * G,
    used: 100 * G,
    avail: 400 * G,
    ...over,
  };
}

/** A typical three-node cluster: local dir (iso only), local-lvm, shared ceph, a disabled nfs, an offline zfs. */
function cluster(): StorageFacts[] {
  const out: StorageFacts[] = [];
  for (const node of ['pve1', 'pve2', 'pve3']) {
    out.push(
      storage({ storage: 'local', node, type: 'dir', content: ['iso', 'vztmpl', 'backup'], total: 100 * G, used: 20 * G, avail: 80 * G }),
      storage({ storage: 'local-lvm', node, type: 'lvmthin', content: ['images', 'rootdir'], total: 400 * G, used: 100 * G, avail: 300 * G }),
      storage({ storage: 'vm_ssd', node, type: 'rbd', content: ['images'], shared: true, total: 2000 * G, used: 1188 * G, avail: 812 * G }),
      storage({ storage: 'nfs-old', node, type: 'nfs', content: ['images', 'iso'], enabled: false, total: 0, used: 0, avail: 0 }),
    );
  }
  out.push(storage({ storage: 'tank', node: 'pve2', type: 'zfspool', content: ['images'], active: false, total: 0, used: 0, avail: 0 }));
  return out;
}

function catchSelectorError(fn: () => unknown): SelectorError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SelectorError) return err;
    throw err;
  }
  throw new Error('expected a SelectorError');
}

/** Deterministic Fisher-Yates with a small LCG, so permutations are the same on every run. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('selectors written for the Go provider keep working', () => {
  it('picks the storage named in the README example', () => {
    expect(selectStorage('name == "local-lvm"', cluster(), 'pve2').storage).toBe('local-lvm');
  });

  it('accepts storageType, node and uint availableSpace with u literals', () => {
    const facts = cluster();
    expect(selectStorage('storageType == "rbd"', facts, 'pve1').storage).toBe('vm_ssd');
    expect(selectStorage('node == "pve3" && storageType == "lvmthin"', facts, 'pve3')).toMatchObject({ storage: 'local-lvm', node: 'pve3' });
    expect(selectStorage('availableSpace > 500u * 1024u * 1024u * 1024u', facts, 'pve1').storage).toBe('vm_ssd');
    expect(selectStorage('availableSpace < 500u * 1024u * 1024u * 1024u', facts, 'pve1').storage).toBe('local-lvm');
  });

  it('orders uint against plain int literals, but rejects int arithmetic and equality with a hint', () => {
    expect(selectStorage('availableSpace > 500 * 1024 * 1024 * 1024', cluster(), 'pve1').storage).toBe('vm_ssd');
    const eq = catchSelectorError(() => compileSelector('availableSpace == 1000'));
    expect(eq.kind).toBe('compile');
    expect(eq.message).toContain('no such overload: uint == int');
    expect(eq.message).toContain('u suffix');
    const minus = catchSelectorError(() => compileSelector('availableSpace - 1 > 0u'));
    expect(minus.message).toContain('uint - int');
  });
});

describe('type is the storage type', () => {
  it('matches `type == "rbd"` (fails in the Go provider)', () => {
    expect(selectStorage('type == "rbd"', cluster(), 'pve2').storage).toBe('vm_ssd');
    expect(selectStorage('type in ["zfspool", "lvmthin"]', cluster(), 'pve2').storage).toBe('local-lvm');
  });

  it('leaves the builtin type() function, strings and comments alone', () => {
    const facts = cluster();
    expect(selectStorage('type(name) == string && type == "lvmthin"', facts, 'pve1').storage).toBe('local-lvm');
    expect(selectStorage('type (type) == string && type == "rbd"', facts, 'pve1').storage).toBe('vm_ssd');
    const literal = [storage({ storage: 'type', type: 'dir' }), storage({ storage: 'other', type: 'type', avail: 1 })];
    // "type" inside a string is text, not the variable: only the storage *named* type matches.
    expect(selectStorage('name == "type"', literal, 'pve1').storage).toBe('type');
    expect(selectStorage("name == 'type' // type == \"dir\"", literal, 'pve1').storage).toBe('type');
    expect(selectStorage('type == "type"', literal, 'pve1').storage).toBe('other');
  });

  it('reports errors at the user\'s own columns after the rewrite', () => {
    const err = catchSelectorError(() => compileSelector('type == "rbd" && nosuch'));
    expect(err.position).toEqual({ line: 1, column: 18, offset: 17 });
    expect(err.message).toContain('Unknown variable: nosuch');
    expect(err.message).not.toContain('_typ');
  });
});

describe('every variable', () => {
  const facts = [
    storage({ storage: 'a', type: 'lvmthin', content: ['images', 'rootdir'], shared: false, total: 10 * G, used: 4 * G, avail: 6 * G }),
    storage({ storage: 'b', type: 'rbd', content: ['images'], shared: true, total: 100 * G, used: 90 * G, avail: 10 * G }),
  ];
  const cases: Array<[string, string]> = [
    ['name == "a"', 'a'],
    ['node == "pve1" && name.startsWith("a")', 'a'],
    ['storageType == "rbd"', 'b'],
    ['type == "lvmthin"', 'a'],
    ['availableSpace < 8u * 1024u * 1024u * 1024u', 'a'],
    ['total == 10u * 1024u * 1024u * 1024u', 'a'],
    ['used > 50u * 1024u * 1024u * 1024u', 'b'],
    ['"rootdir" in content', 'a'],
    ['content.all(c, c == "images")', 'b'],
    ['size(content) == 2', 'a'],
    ['shared', 'b'],
    ['!shared', 'a'],
    ['active && enabled && name == "a"', 'a'],
    ['double(used) / double(total) < 0.5', 'a'],
    ['int(availableSpace) < 8 * 1024 * 1024 * 1024', 'a'],
    ['name.matches("^[b-z]$")', 'b'],
    ['shared ? availableSpace > 1u : false', 'b'],
  ];
  it.each(cases)('%s selects %s', (expr, want) => {
    expect(selectStorage(expr, facts, 'pve1').storage).toBe(want);
  });
});

describe('candidates', () => {
  it('are only enabled, active storages that allow images, on the requested node', () => {
    const facts = cluster();
    // `true` matches everything; vm_ssd has the most space of what is eligible on pve2.
    expect(selectStorage('true', facts, 'pve2').storage).toBe('vm_ssd');
    const err = catchSelectorError(() => selectStorage('name in ["local", "nfs-old", "tank"]', facts, 'pve2'));
    expect(err.kind).toBe('no-match');
    expect(err.message).toContain('not eligible: local (content iso,vztmpl,backup does not allow images; the selector would match it)');
    expect(err.message).toContain('nfs-old (disabled; the selector would match it)');
    expect(err.message).toContain('tank (inactive; the selector would match it)');
  });

  it('never returns a storage of another node', () => {
    const facts = [storage({ storage: 'big', node: 'pve2', avail: 900 * G }), storage({ storage: 'small', node: 'pve1', avail: 1 * G })];
    expect(selectStorage('true', facts, 'pve1').storage).toBe('small');
  });
});

describe('several matches', () => {
  it('prefer most available space, then name, whatever order Proxmox lists them in', () => {
    const facts = [
      storage({ storage: 'zeta', avail: 50 * G }),
      storage({ storage: 'beta', avail: 70 * G }),
      storage({ storage: 'alpha', avail: 70 * G }),
      storage({ storage: 'gamma', avail: 10 * G }),
    ];
    for (let seed = 1; seed <= 20; seed++) {
      expect(selectStorage('true', shuffled(facts, seed), 'pve1').storage).toBe('alpha');
      expect(selectStorage('availableSpace < 60u * 1024u * 1024u * 1024u', shuffled(facts, seed), 'pve1').storage).toBe('zeta');
    }
  });

  it('accepts a compiled selector and logs the choice', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const logger = createLogger({ level: 'debug', destination: sink });
    const compiled = compileSelector('type == "rbd"');
    expect(compiled.source).toBe('type == "rbd"');
    expect(selectStorage(compiled, cluster(), 'pve3', { logger }).storage).toBe('vm_ssd');
    const entry = JSON.parse(lines.find((l) => l.includes('storage selected')) ?? '{}') as Record<string, unknown>;
    expect(entry).toMatchObject({ node: 'pve3', storage: 'vm_ssd', selector: 'type == "rbd"' });
  });
});

describe('errors an operator reads', () => {
  it('compile errors carry line, column and reason', () => {
    const err = catchSelectorError(() => compileSelector('name == "a" &&\n  (type == "rbd"'));
    expect(err.kind).toBe('compile');
    expect(err.position).toEqual({ line: 2, column: 17, offset: 31 });
    expect(err.message).toBe(
      'storage selector `name == "a" && (type == "rbd"` is not valid CEL at line 2, column 17: Expected RPAREN, got EOF',
    );
    const eq = catchSelectorError(() => compileSelector('name = "local"'));
    expect(eq.position?.column).toBe(6);
    expect(eq.message).toContain('compare with ==');
    const unknown = catchSelectorError(() => compileSelector('storagetype == "rbd"'));
    expect(unknown.message).toContain('Unknown variable: storagetype; available variables: name (string)');
  });

  it('a literal regex that does not compile is reported at compile time, with a hint for RE2 flags', () => {
    const err = catchSelectorError(() => compileSelector('type == "rbd" ||\n name.matches("(?i)^ssd")'));
    expect(err.kind).toBe('compile');
    expect(err.position).toEqual({ line: 2, column: 15, offset: 31 });
    expect(err.message).toContain('invalid regular expression "(?i)^ssd"; inline flags like (?i) are not supported');
    expect(catchSelectorError(() => compileSelector('content.exists(c, c.matches("["))')).position?.column).toBe(29);
  });

  it('an empty selector is a compile error, not a retry loop', () => {
    const err = catchSelectorError(() => compileSelector('   '));
    expect(err.kind).toBe('compile');
    expect(err.message).toBe('storage selector is empty; write a CEL condition such as name == "local-lvm"');
  });

  it('a selector that does not return bool is rejected when compiled', () => {
    const err = catchSelectorError(() => compileSelector('name'));
    expect(err.kind).toBe('not-bool');
    expect(err.message).toBe('storage selector `name` returns string, not bool; write a condition such as name == "local-lvm"');
    expect(catchSelectorError(() => compileSelector('availableSpace / 2u')).message).toContain('returns uint, not bool');
  });

  it('a dyn result that turns out not to be bool fails when evaluated', () => {
    const err = catchSelectorError(() => selectStorage('dyn(availableSpace)', cluster(), 'pve1'));
    expect(err.kind).toBe('not-bool');
    expect(err.message).toBe('storage selector `dyn(availableSpace)` returned uint for storage vm_ssd on node pve1, not bool');
    expect(selectStorage('dyn(shared)', cluster(), 'pve1').storage).toBe('vm_ssd');
  });

  it('evaluation errors name the storage and its values', () => {
    const bad = catchSelectorError(() => selectStorage('name.matches(name + "[")', cluster(), 'pve1'));
    expect(bad.kind).toBe('eval');
    expect(bad.message).toMatch(/^storage selector `name\.matches\(name \+ "\["\)` failed on storage \S+ on node pve1: Invalid regular expression/);
    const underflow = catchSelectorError(() => selectStorage('availableSpace - 500u * 1024u * 1024u * 1024u > 0u', cluster(), 'pve1'));
    expect(underflow.kind).toBe('eval');
    expect(underflow.storage).toBe('local-lvm');
    expect(underflow.message).toContain('failed on storage local-lvm on node pve1');
    expect(underflow.message).toContain('availableSpace=322122547200u (300.0 GiB)');
  });

  it('no match lists every candidate with its values and every storage left out with why', () => {
    const err = catchSelectorError(() => selectStorage('type == "cephfs"', cluster(), 'pve2'));
    expect(err.kind).toBe('no-match');
    expect(err.node).toBe('pve2');
    expect(err.message).toBe(
      'storage selector `type == "cephfs"` matched no storage on node pve2; candidates: ' +
        'vm_ssd (type=rbd, availableSpace=871878361088u (812.0 GiB), total=2147483648000u (2000.0 GiB), used=1275605286912u (1188.0 GiB), content=[images], shared=true); ' +
        'local-lvm (type=lvmthin, availableSpace=322122547200u (300.0 GiB), total=429496729600u (400.0 GiB), used=107374182400u (100.0 GiB), content=[images,rootdir], shared=false); ' +
        'not eligible: local (content iso,vztmpl,backup does not allow images), nfs-old (disabled), tank (inactive)',
    );
    expect(err.rows?.map((r) => r.storage)).toEqual(['vm_ssd', 'local-lvm', 'local', 'nfs-old', 'tank']);
  });

  it('says so when a node has nothing eligible or no storage at all', () => {
    const onlyIso = [storage({ storage: 'local', content: ['iso'] })];
    expect(catchSelectorError(() => selectStorage('true', onlyIso, 'pve1')).message).toBe(
      'storage selector `true` has nothing to choose from on node pve1: no storage there is enabled, active and allows disk images; not eligible: local (content iso does not allow images; the selector would match it)',
    );
    expect(catchSelectorError(() => selectStorage('true', onlyIso, 'pve9')).message).toBe(
      'storage selector `true` has nothing to choose from: no storage reported on node pve9',
    );
  });
});

describe('explainSelector', () => {
  it('shows every storage of every node with its variables and the one that would be chosen', () => {
    const rows = explainSelector('type == "rbd" || name == "local-lvm"', cluster());
    expect(rows).toHaveLength(13);
    const chosen = rows.filter((r) => r.chosen).map((r) => `${r.node}/${r.storage}`);
    expect(chosen).toEqual(['pve1/vm_ssd', 'pve2/vm_ssd', 'pve3/vm_ssd']);
    const tank = rows.find((r) => r.storage === 'tank');
    expect(tank).toMatchObject({ node: 'pve2', eligible: false, why: 'inactive', matched: false, result: false });
    const lvm = rows.find((r) => r.node === 'pve1' && r.storage === 'local-lvm');
    expect(lvm).toMatchObject({ eligible: true, matched: true, chosen: false });
    expect(lvm?.vars).toEqual({
      name: 'local-lvm',
      node: 'pve1',
      type: 'lvmthin',
      storageType: 'lvmthin',
      availableSpace: 300 * G,
      total: 400 * G,
      used: 100 * G,
      content: ['images', 'rootdir'],
      shared: false,
      active: true,
      enabled: true,
    });
  });

  it('limits to one node and reports per-storage evaluation errors without throwing', () => {
    const rows = explainSelector('availableSpace - 500u * 1024u * 1024u * 1024u > 0u', cluster(), 'pve1');
    expect(rows.every((r) => r.node === 'pve1')).toBe(true);
    expect(rows.find((r) => r.storage === 'vm_ssd')).toMatchObject({ result: true, matched: true, chosen: false });
    expect(rows.find((r) => r.storage === 'local-lvm')?.error).toBe('Unsigned integer overflow');
    expect(rows.some((r) => r.chosen)).toBe(false);
  });

  it('throws the compile error for a broken selector', () => {
    expect(catchSelectorError(() => explainSelector('name ==', cluster())).kind).toBe('compile');
  });
});
