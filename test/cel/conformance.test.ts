import { describe, expect, it } from 'vitest';
import { baseVars, conformanceCases } from '../../bench/cel.js';
import { compileSelector, SelectorError, type StorageFacts } from '../../src/cel/index.js';

// The library comparison's conformance set, run through our selector layer: every case must behave as cel-go
// would with a declared environment, plus the two things we add (the `type` variable and int(uint)).
const facts: StorageFacts = {
  storage: baseVars.name,
  node: baseVars.node,
  type: baseVars.type,
  content: baseVars.content,
  shared: baseVars.shared,
  active: baseVars.active,
  enabled: baseVars.enabled,
  total: Number(baseVars.total),
  used: Number(baseVars.used),
  avail: Number(baseVars.availableSpace),
};

function outcome(expr: string): { value: boolean } | { error: SelectorError } {
  try {
    return { value: compileSelector(expr).matches(facts) };
  } catch (err) {
    if (err instanceof SelectorError) return { error: err };
    throw err;
  }
}

describe('conformance set through src/cel', () => {
  it.each(conformanceCases.map((c) => [`${c.area}: ${c.expr}`, c] as const))('%s', (_label, c) => {
    const got = outcome(c.expr);
    if ('value' in c.expect) {
      if (typeof c.expect.value === 'boolean') expect(got).toEqual({ value: c.expect.value });
      else expect('error' in got && got.error.kind).toBe('not-bool');
    } else if (c.expect.error === 'parse') {
      expect('error' in got && got.error.kind).toBe('compile');
      expect('error' in got && got.error.position).toBeTruthy();
    } else {
      expect('error' in got).toBe(true);
    }
  });
});
