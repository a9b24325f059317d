// Checks that a log line is one JSON object with unique keys at every level. JSON.parse silently keeps the last of
// two equal keys; log pipelines (Loki, Elasticsearch, jq with --seq...) reject or mangle such lines, so the e2e
// harness checks every line the daemon prints with this.

/** Why `line` is not one JSON object with unique keys, or undefined when it is. */
export function jsonLineProblem(line: string): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return `not JSON: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object';
  const dup = duplicateKey(line);
  return dup === undefined ? undefined : `duplicate key ${JSON.stringify(dup)}`;
}

/** The first key that appears twice in one object of the (valid) JSON text `text`. */
export function duplicateKey(text: string): string | undefined {
  const stack: Array<Set<string> | null> = []; // a Set per open object, null per open array
  let i = 0;
  let expectKey = false;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const raw = text.slice(i, j + 1);
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(raw) as string;
        if (top.has(key)) return key;
        top.add(key);
        expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === '{') {
      stack.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      stack.push(null);
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      expectKey = stack[stack.length - 1] instanceof Set;
    }
    i++;
  }
  return undefined;
}
