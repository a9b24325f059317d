// Shared set-up for simulator tests: a 3-node sim on a manual clock and a tiny request helper.
import { readFileSync } from 'node:fs';
import { ManualClock, PveSim, type PveFixture, type SimResponse } from '../../src/sim/proxmox/index.js';

export const fixturePath = new URL('../fixtures/pve-3node.json', import.meta.url);

export function loadTestFixture(overrides: Partial<PveFixture> = {}): PveFixture {
  const f = JSON.parse(readFileSync(fixturePath, 'utf8')) as PveFixture;
  return { ...f, authFailDelayMs: 0, ...overrides };
}

export function newSim(overrides: Partial<PveFixture> = {}): { sim: PveSim; clock: ManualClock } {
  const clock = new ManualClock();
  const sim = new PveSim({ fixture: loadTestFixture(overrides), clock });
  return { sim, clock };
}

export const rootToken = 'PVEAPIToken=root@pam!omni=5ec7e7a0-0000-4000-8000-00000000cafe';
export const omniToken = 'PVEAPIToken=omni@pve!provider=0a1b2c3d-0000-4000-8000-0000000000aa';

export interface Reply {
  status: number;
  reason: string;
  json: { data?: unknown; errors?: Record<string, string>; message?: string; total?: number } | undefined;
  raw: SimResponse;
}

export async function call(
  sim: PveSim,
  method: string,
  path: string,
  params: Record<string, string | number | boolean> = {},
  auth: string | Record<string, string> = rootToken,
): Promise<Reply> {
  const headers: Record<string, string> = typeof auth === 'string' ? { authorization: auth } : { ...auth };
  let full = `/api2/json${path}`;
  let body: Buffer | undefined;
  if (method === 'GET' || method === 'DELETE') {
    const q = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)])).toString();
    if (q) full += `?${q}`;
  } else {
    headers['content-type'] = 'application/json';
    body = Buffer.from(JSON.stringify(params));
  }
  const raw = await sim.handle({ method, path: full, headers, ...(body ? { body } : {}) });
  const text = raw.body.toString('utf8');
  let json: Reply['json'];
  try {
    json = text ? (JSON.parse(text) as Reply['json']) : undefined;
  } catch {
    json = undefined;
  }
  return { status: raw.status, reason: raw.reason, json, raw };
}

/** GETs a task's status from the node in its UPID. */
export async function taskStatus(sim: PveSim, upid: string): Promise<Record<string, unknown>> {
  const node = upid.split(':')[1]!;
  const r = await call(sim, 'GET', `/nodes/${node}/tasks/${encodeURIComponent(upid)}/status`);
  if (r.status !== 200) throw new Error(`task status ${r.status} ${r.reason}`);
  return r.json!.data as Record<string, unknown>;
}

/** Logs in as root@pam (password) and returns headers for ticket calls (cookie + CSRF). */
export async function rootTicketHeaders(sim: PveSim): Promise<Record<string, string>> {
  const r = await call(sim, 'POST', '/access/ticket', { username: 'root@pam', password: 'pve-sim-root' }, {});
  const d = r.json?.data as { ticket: string; CSRFPreventionToken: string };
  return { cookie: `PVEAuthCookie=${encodeURIComponent(d.ticket)}`, csrfpreventiontoken: d.CSRFPreventionToken };
}
