import { describe, expect, it } from 'vitest';
import {
  PveConnectionError,
  PveError,
  PveTaskError,
  isAuthError,
  isNoSuchTask,
  isNodeUnreachable,
  isNotFound,
  isPermissionError,
} from '../../src/proxmox/errors.js';

const err = (status: number, reasonPhrase: string, extra: Partial<ConstructorParameters<typeof PveError>[0]> = {}) =>
  new PveError({ method: 'GET', path: '/x', status, reasonPhrase, ...extra });

describe('PveError', () => {
  it('puts parameter errors on one line after the reason', () => {
    const e = err(400, 'Parameter verification failed.', {
      method: 'POST',
      path: '/nodes/pve1/qemu',
      errors: { net0: 'invalid format - format error\nnet0.bridge: property is missing\n' },
    });
    expect(e.message).toBe(
      'POST /nodes/pve1/qemu: 400 Parameter verification failed. (net0: invalid format - format error net0.bridge: property is missing)',
    );
    expect(e.errors?.net0).toContain('\n');
  });

  it('uses the generic status text only when nothing better exists', () => {
    expect(err(500, '').statusText).toBe('Internal Server Error');
    expect(err(500, '', { bodyMessage: 'VM 105 is running - destroy failed\n' }).statusText).toBe(
      'VM 105 is running - destroy failed',
    );
    expect(err(500, 'VM is locked (backup)', { bodyMessage: 'other' }).statusText).toBe('VM is locked (backup)');
    expect(err(599, '').statusText).toBe('HTTP 599');
  });

  it('classifies errors for callers', () => {
    expect(isNotFound(err(500, "Configuration file 'nodes/pve1/qemu-server/1.conf' does not exist"))).toBe(true);
    expect(isNotFound(err(500, 'VM is locked (create)'))).toBe(false);
    expect(isNotFound(new Error('does not exist'))).toBe(false);
    for (const s of [595, 596, 597, 599]) expect(isNodeUnreachable(err(s, 'x'))).toBe(true);
    expect(isNodeUnreachable(err(500, 'x'))).toBe(false);
    expect(isAuthError(err(401, 'Authentication failed!'))).toBe(true);
    expect(isAuthError(err(403, 'Permission check failed (/vms/105, VM.Allocate)'))).toBe(false);
    expect(isPermissionError(err(403, 'Permission check failed (/vms/105, VM.Allocate)'))).toBe(true);
    expect(isNoSuchTask(err(400, 'Parameter verification failed.', { errors: { upid: 'no such task' } }))).toBe(true);
    expect(isNoSuchTask(err(400, 'Parameter verification failed.', { errors: { upid: 'unable to parse worker upid' } }))).toBe(false);
  });

  it('describes task and connection failures for the operator', () => {
    const t = new PveTaskError({ upid: 'u', type: 'qmstart', node: 'pve1', exitstatus: "bridge 'vmbr9' does not exist", logTail: [] });
    expect(t.message).toBe("task qmstart on node pve1 failed: bridge 'vmbr9' does not exist");
    const c = new PveConnectionError({ method: 'POST', path: '/p', code: 'UND_ERR_SOCKET', mayHaveExecuted: true, detail: 'other side closed' });
    expect(c.message).toBe('POST /p: other side closed');
  });
});
