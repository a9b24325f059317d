// Counting the calls that could change a Proxmox cluster: everything but reads and logins. Tests use it to prove
// that a refused request wrote nothing (no create, no download, no upload, no config change).
import type { PveSim, RequestRecord } from './sim.js';

/** A request that may change state: any method but GET, except `POST /access/ticket` (a login). */
export function isWriteCall(r: Pick<RequestRecord, 'method' | 'path'>): boolean {
  if (r.method === 'GET' || r.method === 'HEAD') return false;
  return !(r.method === 'POST' && /(^|\/api2\/json)\/access\/ticket\/?$/.test(r.path));
}

/** The write calls the simulator received, in order (whatever their answer: a refused write was still attempted). */
export function writeCalls(sim: PveSim): RequestRecord[] {
  return sim.requests.filter(isWriteCall);
}
