import { describe, expect, it } from 'vitest';
import { aliasTypeIdentifier, positionAt, TYPE_ALIAS } from '../../src/cel/source.js';

describe('aliasTypeIdentifier', () => {
  const A = TYPE_ALIAS;
  const cases: Array<[string, string]> = [
    ['type == "rbd"', `${A} == "rbd"`],
    ['type=="rbd"&&type!="x"', `${A}=="rbd"&&${A}!="x"`],
    ['type(name) == string', 'type(name) == string'],
    ['type (name) == string', 'type (name) == string'],
    ['type // comment\n(name)', 'type // comment\n(name)'],
    ['type(type) == string', `type(${A}) == string`],
    ['"type" == type', `"type" == ${A}`],
    ["'a \\' type' == type", `'a \\' type' == ${A}`],
    ['r"type\\" == type', `r"type\\" == ${A}`],
    ['"""type\n"type""" + type', `"""type\n"type""" + ${A}`],
    ["b'type' == type", `b'type' == ${A}`],
    ['x.type == 1', 'x.type == 1'],
    ['x . type == 1', 'x . type == 1'],
    ['types == type_ || mytype == type', `types == type_ || mytype == ${A}`],
    ['// type == "x"\ntype == "y"', `// type == "x"\n${A} == "y"`],
    ['1e3 > 0 && 0x1Fu > 0u && type == "dir"', `1e3 > 0 && 0x1Fu > 0u && ${A} == "dir"`],
    ['content.exists(type, type == "images")', `content.exists(${A}, ${A} == "images")`],
  ];
  it.each(cases)('%j', (input, want) => {
    const out = aliasTypeIdentifier(input);
    expect(out).toBe(want);
    expect(out).toHaveLength(input.length);
  });
});

describe('positionAt', () => {
  it('gives 1-based line and column', () => {
    expect(positionAt('ab\ncd', 0)).toEqual({ line: 1, column: 1, offset: 0 });
    expect(positionAt('ab\ncd', 4)).toEqual({ line: 2, column: 2, offset: 4 });
    expect(positionAt('ab', 2)).toEqual({ line: 1, column: 3, offset: 2 });
  });
});
