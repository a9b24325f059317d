// Lexical handling of selector source text: turning the identifier `type` into a declarable alias without
// touching strings, comments, member names or `type(...)` calls, and mapping offsets to line/column.

/**
 * The name `type` is bound to the storage type under. CEL's `type` is a builtin that the library will not let us
 * redeclare, so the source is rewritten. Same length as `type`, so every offset in an error still points at the
 * user's own text.
 */
export const TYPE_ALIAS = '_typ';

export interface SourcePosition {
  /** 1-based line. */
  line: number;
  /** 1-based column, in UTF-16 code units from the start of the line. */
  column: number;
  /** 0-based offset into the selector text. */
  offset: number;
}

export function positionAt(source: string, offset: number): SourcePosition {
  const clamped = Math.max(0, Math.min(offset, source.length));
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < clamped; i++) {
    if (source.charCodeAt(i) === 10 /* \n */) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: clamped - lineStart + 1, offset: clamped };
}

const isIdentStart = (c: string | undefined): boolean => c !== undefined && /[A-Za-z_]/.test(c);
const isIdentPart = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_]/.test(c);
const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/.test(c);

/** Index just past a string literal whose opening quote is at `i` (prefix letters already consumed). */
function skipString(src: string, i: number, raw: boolean): number {
  const quote = src[i]!;
  const triple = src.startsWith(quote.repeat(3), i);
  const close = triple ? quote.repeat(3) : quote;
  let j = i + close.length;
  while (j < src.length) {
    const c = src[j];
    if (!raw && c === '\\') {
      j += 2;
      continue;
    }
    if (src.startsWith(close, j)) return j + close.length;
    if (!triple && c === '\n') return j; // unterminated; the parser reports it
    j++;
  }
  return j;
}

/** Index of the next character that is neither whitespace nor inside a `//` comment. */
function skipTrivia(src: string, i: number): number {
  let j = i;
  for (;;) {
    while (isSpace(src[j])) j++;
    if (src.startsWith('//', j)) {
      while (j < src.length && src[j] !== '\n') j++;
      continue;
    }
    return j;
  }
}

/**
 * Replace every identifier `type` that is a variable reference (not a call `type(...)`, not a member name
 * `x.type`, not inside a string or comment) with {@link TYPE_ALIAS}. Offsets are preserved.
 */
export function aliasTypeIdentifier(src: string): string {
  let out = '';
  let i = 0;
  let lastSignificant = '';
  while (i < src.length) {
    const c = src[i]!;
    if (isSpace(c)) {
      out += c;
      i++;
      continue;
    }
    if (src.startsWith('//', i)) {
      const end = src.indexOf('\n', i);
      const stop = end < 0 ? src.length : end;
      out += src.slice(i, stop);
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      const end = skipString(src, i, false);
      out += src.slice(i, end);
      i = end;
      lastSignificant = '"';
      continue;
    }
    if (/[0-9]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[0-9A-Za-z_.]/.test(src[j]!)) j++;
      out += src.slice(i, j);
      i = j;
      lastSignificant = '0';
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (isIdentPart(src[j])) j++;
      const word = src.slice(i, j);
      const next = src[j];
      if ((next === '"' || next === "'") && /^(r|b|rb|br)$/i.test(word)) {
        const end = skipString(src, j, /r/i.test(word));
        out += src.slice(i, end);
        i = end;
        lastSignificant = '"';
        continue;
      }
      const isCall = src[skipTrivia(src, j)] === '(';
      out += word === 'type' && lastSignificant !== '.' && !isCall ? TYPE_ALIAS : word;
      i = j;
      lastSignificant = 'a';
      continue;
    }
    out += c;
    lastSignificant = c;
    i++;
  }
  return out;
}

/** Undo {@link aliasTypeIdentifier} in text shown to the operator (error summaries). */
export function unaliasText(text: string): string {
  return text.replace(new RegExp(`\\b${TYPE_ALIAS}\\b`, 'g'), 'type');
}
