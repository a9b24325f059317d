// Every line the logger writes is one JSON object with unique keys, however children and log calls repeat keys;
// the most specific value wins and redaction still applies to bound and logged fields.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, type Logger } from '../../src/log.js';
import { jsonLineProblem } from '../helpers/json-lines.js';

function capture(level = 'trace'): { log: Logger; lines: () => string[] } {
  let text = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  return { log: createLogger({ level, destination }), lines: () => text.split('\n').filter((l) => l !== '') };
}

function parsed(lines: string[]): Array<Record<string, unknown>> {
  for (const l of lines) expect(jsonLineProblem(l), l).toBeUndefined();
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('createLogger', () => {
  it('writes a key bound by a parent and again by its child once, with the child value', () => {
    const { log, lines } = capture();
    // The daemon hands PveClient a `component: proxmox` child and the client binds component again.
    const pve = log.child({ component: 'proxmox' }).child({ component: 'proxmox', proxmox: 'https://pve:8006' });
    pve.debug({ method: 'GET', path: '/version' }, 'proxmox call');
    log.child({ component: 'omni' }).child({ component: 'heartbeat' }).info('beat');
    const [call, beat] = parsed(lines());
    expect(call).toMatchObject({ component: 'proxmox', proxmox: 'https://pve:8006', method: 'GET', msg: 'proxmox call' });
    expect(beat).toMatchObject({ component: 'heartbeat', msg: 'beat' });
  });

  it('lets a log call override a bound key (node/vmid on step lines) and never hides a bound value with undefined', () => {
    const { log, lines } = capture();
    const step = log.child({ request: 'r-1' }).child({ step: 'syncVM', node: 'pve1', vmid: undefined });
    step.info({ vmid: 101, node: 'pve2' }, 'VM created');
    step.info({ vmid: undefined, node: undefined }, 'no VM');
    // A task logger under the step logger binds node again.
    step.child({ task: 'qmcreate', node: 'pve2', id: '101' }).debug('task finished');
    const [created, none, task] = parsed(lines());
    expect(created).toMatchObject({ request: 'r-1', step: 'syncVM', node: 'pve2', vmid: 101 });
    expect(none).toMatchObject({ node: 'pve1' });
    expect(none).not.toHaveProperty('vmid');
    expect(task).toMatchObject({ step: 'syncVM', task: 'qmcreate', node: 'pve2', id: '101' });
    expect(step.bindings()).toMatchObject({ request: 'r-1', step: 'syncVM', node: 'pve1' });
  });

  it('keeps the keys pino writes itself unique (level, time, service, msg)', () => {
    const { log, lines } = capture();
    log.child({ service: 'other', level: 'x' }).info({ time: 1, msg: 'field' }, 'message');
    log.info({ msg: 'only the field' });
    const [a, b] = parsed(lines());
    expect(a).toMatchObject({ level: 'info', service: 'omni-infra-provider-proxmox', msg: 'message', service_: 'other', level_: 'x', time_: 1, msg_: 'field' });
    expect(b).toMatchObject({ msg: 'only the field' });
  });

  it('redacts secrets whether bound or logged, and serialises errors', () => {
    const { log, lines } = capture();
    log.child({ tokenSecret: 's3cr3t-bound' }).warn({ key: 's3cr3t-logged', nested: { password: 's3cr3t-nested' } }, 'secrets');
    log.child({ request: 'r' }).error({ err: new Error('boom') }, 'failed');
    const text = lines().join('\n');
    expect(text).not.toMatch(/s3cr3t/);
    const [secrets, failed] = parsed(lines());
    expect(secrets).toMatchObject({ tokenSecret: '[redacted]', key: '[redacted]', nested: { password: '[redacted]' } });
    expect(failed).toMatchObject({ request: 'r', err: { message: 'boom' }, msg: 'failed' });
  });

  it('honours the level of the logger and of children given a level', () => {
    const { log, lines } = capture('info');
    log.debug('hidden');
    log.child({ a: 1 }, { level: 'debug' }).debug('shown');
    expect(parsed(lines()).map((l) => l.msg)).toEqual(['shown']);
  });
});
