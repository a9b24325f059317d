#!/usr/bin/env node
// Runs the vitest suite and ends with one plain summary line ("N passed, N failed, N skipped") that any CI can
// read, keeping vitest's exit code. Extra arguments go to vitest (e.g. a test path).
//
// The end-to-end tests run the daemon that ships: unless TEST_DAEMON_LAYOUT names a production layout already
// assembled (.ci/run does), this assembles one in .tmp/prod with scripts/assemble-prod.sh (the Dockerfile's own
// script) first. TEST_DAEMON_LAYOUT=tsx runs the TypeScript sources instead (quicker while developing).
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';

const out = '.tmp/vitest-results.json';
mkdirSync('.tmp', { recursive: true });
rmSync(out, { force: true });
const env = { ...process.env };
if (!env.TEST_DAEMON_LAYOUT) {
  const assemble = spawnSync('sh', ['scripts/assemble-prod.sh', '.tmp/prod'], { stdio: 'inherit' });
  if (assemble.status !== 0) {
    console.log('\ntests: 0 passed, 1 failed (could not assemble the production layout: scripts/assemble-prod.sh failed)');
    process.exit(1);
  }
  env.TEST_DAEMON_LAYOUT = '.tmp/prod';
}
console.log(`run-tests: e2e daemon = ${env.TEST_DAEMON_LAYOUT === 'tsx' ? 'TypeScript sources through tsx' : `compiled layout ${env.TEST_DAEMON_LAYOUT}`}`);
const vitest = spawnSync(
  process.execPath,
  ['node_modules/vitest/vitest.mjs', 'run', '--reporter=default', '--reporter=json', `--outputFile=${out}`, ...process.argv.slice(2)],
  { stdio: 'inherit', env },
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
