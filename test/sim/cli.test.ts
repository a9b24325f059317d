import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { describe, expect, it, vi } from 'vitest';
import simProxmox from '../../src/cli/sim-proxmox.js';
import { UsageError } from '../../src/cli/usage.js';
import { Changes, waitFor } from '../helpers/wait.js';
import { fixturePath, rootToken } from './helpers.js';

describe('sim proxmox command', () => {
  it('prints one JSON line with the URL, serves the fixture, and stops on SIGTERM', async ({ signal }) => {
    const lines: string[] = [];
    const printed = new Changes();
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      printed.notify();
      return true;
    });
    try {
      const done = simProxmox(['--fixture', fileURLToPath(fixturePath), '--port', '0', '--seed', '5']);
      let ended: string | undefined;
      done.then(
        (code) => {
          ended = `the command returned ${code} without printing`;
          printed.notify();
        },
        (err: unknown) => {
          ended = `the command failed: ${String(err)}`;
          printed.notify();
        },
      );
      await waitFor(() => lines.length > 0, { what: 'the line with the URL', on: [printed.trigger], impossible: () => ended, signal });
      const info = JSON.parse(lines[0]!) as { url: string; fingerprint: string | null };
      expect(info.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(info.fingerprint).toBeNull();
      const res = await request(`${info.url}/api2/json/nodes`, { headers: { authorization: rootToken } });
      expect(((await res.body.json()) as { data: unknown[] }).data).toHaveLength(3);
      process.emit('SIGTERM');
      expect(await done).toBe(0);
    } finally {
      spy.mockRestore();
    }
  });

  it('rejects a missing fixture flag and a bad port as usage errors', async () => {
    await expect(simProxmox(['--port', '0'])).rejects.toBeInstanceOf(UsageError);
    await expect(simProxmox(['--fixture', 'x.json', '--port', 'abc'])).rejects.toThrow(/--port/);
    await expect(simProxmox(['--fixture', '/nonexistent/f.json'])).rejects.toThrow(/cannot load fixture/);
  });
});
