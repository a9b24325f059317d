import { describe, expect, it } from 'vitest';
import { duplicateKey, jsonLineProblem } from './json-lines.js';

describe('jsonLineProblem', () => {
  it('accepts one object with unique keys at every level', () => {
    expect(jsonLineProblem('{"a":1,"b":{"a":2,"c":[{"a":3},{"a":4}]},"s":"x\\"a\\":1"}')).toBeUndefined();
  });
  it('names a duplicate key at the top level and in nested objects', () => {
    expect(jsonLineProblem('{"component":"proxmox","msg":"x","component":"proxmox"}')).toBe('duplicate key "component"');
    expect(duplicateKey('{"a":{"b":1,"c":{"d":1},"b":2}}')).toBe('b');
    expect(duplicateKey('[{"a":1},{"a":1,"a":2}]')).toBe('a');
  });
  it('refuses what is not one JSON object', () => {
    expect(jsonLineProblem('[1]')).toBe('not a JSON object');
    expect(jsonLineProblem('{"a":1}{"b":2}')).toMatch(/^not JSON/);
  });
});
