#!/usr/bin/env node
// Runs the vitest suite and ends with one plain summary line ("N passed, N failed, N skipped") that any CI can
// read, keeping vitest's exit code. Extra arguments go to vitest (e.g. a test path).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';

const out = '.tmp/vitest-results.json';
mkdirSync('.tmp', { recursive: true });
rmSync(out, { force: true });
const vitest = spawnSync(
  process.execPath,
  ['node_modules/vitest/vitest.mjs', 'run', '--reporter=default', '--reporter=json', `--outputFile=${out}`, ...process.argv.slice(2)],
  { stdio: 'inherit' },
);
let code = vitest.status ?? 1;
try {
  const r = JSON.parse(readFileSync(out, 'utf8'));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  console.log(`\ntests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  if (r.numTotalTests === 0) code = code || 1;
} catch (err) {
  console.log(`\ntests: 0 passed, 1 failed (no results from vitest: ${err instanceof Error ? err.message : err})`);
  code = code || 1;
}
process.exit(code);
