import { describe, expect, it } from 'vitest';
import { isUpid, parseUpid } from '../../src/proxmox/upid.js';

describe('parseUpid', () => {
  it.each([
    [
      'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105:root@pam:',
      { node: 'pve1', pid: 0xa1b2c, pstart: 0x12d687, starttime: 0x65a0f1e2, type: 'qmcreate', id: '105', user: 'root@pam' },
    ],
    [
      // upload: empty id
      'UPID:pve-node-2:00001234:123456789:6700AABB:imgcopy::omni@pve!provider:',
      { node: 'pve-node-2', pid: 0x1234, pstart: 0x123456789, starttime: 0x6700aabb, type: 'imgcopy', id: '', user: 'omni@pve', tokenid: 'provider' },
    ],
    [
      'UPID:n1:00ABCDEF:00ABCDEF:00000001:download:nocloud-amd64.iso:root@pam:',
      { node: 'n1', pid: 0xabcdef, pstart: 0xabcdef, starttime: 1, type: 'download', id: 'nocloud-amd64.iso', user: 'root@pam' },
    ],
    [
      'UPID:pve1:0000AAAA:0000BBBB:6500CCCC:imgdel:105@local-lvm:root@pam:',
      { node: 'pve1', pid: 0xaaaa, pstart: 0xbbbb, starttime: 0x6500cccc, type: 'imgdel', id: '105@local-lvm', user: 'root@pam' },
    ],
  ])('parses %s', (s, want) => {
    const got = parseUpid(s);
    expect(got).toEqual(want);
    expect(isUpid(s)).toBe(true);
  });

  it.each([
    ['missing trailing colon', 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105:root@pam'],
    ['not a UPID', 'hello'],
    ['empty', ''],
    ['short pid', 'UPID:pve1:A1B2C:0012D687:65A0F1E2:qmcreate:105:root@pam:'],
    ['non-hex starttime', 'UPID:pve1:000A1B2C:0012D687:65A0F1EZ:qmcreate:105:root@pam:'],
    ['empty type', 'UPID:pve1:000A1B2C:0012D687:65A0F1E2::105:root@pam:'],
    ['empty user', 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105::'],
    ['node with trailing dash', 'UPID:pve-:000A1B2C:0012D687:65A0F1E2:qmcreate:105:root@pam:'],
    ['slash in id', 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:1/05:root@pam:'],
    ['extra field', 'UPID:pve1:000A1B2C:0012D687:65A0F1E2:qmcreate:105:root@pam:x:'],
  ])('rejects %s', (_why, s) => {
    expect(() => parseUpid(s)).toThrow(TypeError);
    expect(isUpid(s)).toBe(false);
  });

  it('isUpid rejects non-strings', () => {
    expect(isUpid(null)).toBe(false);
    expect(isUpid(42)).toBe(false);
  });
});
