// Public surface of the Proxmox VE API simulator.
export { PveSim, type PveSimOptions, type SimRequest, type SimResponse, type RequestRecord, type SimEvent } from './sim.js';
export { startPveSimServer, type PveSimServer, type PveSimServerOptions } from './server.js';
export { ManualClock, ScaledClock, type SimClock } from './clock.js';
export {
  loadFixture,
  parseFixture,
  defaultRootPassword,
  defaultTokenId,
  defaultTokenSecret,
  type PveFixture,
} from './fixture.js';
export type { RequestFault, RequestMatch, TaskMatch, FaultTiming } from './faults.js';
export type { TaskOutcomeOverride, SimTask, TaskFilter } from './tasks.js';
export type { VersionProfileName } from './version.js';
export { downloadedBytes } from './routes/storage.js';
export { isWriteCall, writeCalls } from './writes.js';
