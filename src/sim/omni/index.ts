// Entry point of the in-process Omni (tests and the embedded demo): the server handle and the pieces tests script.
export { startInProcessOmni, INTERNAL_ACTOR, type InProcessOmni, type InProcessOmniOptions, type OmniCapabilities } from './server.js';
export { OmniControllers, encodeSpec, CONNECTED_WINDOW_MS, type OmniControllersOptions, type SiderolinkSettings } from './controllers.js';
export { CosiStore, type Resource, type ResourceInput, type StoreEvent, type LabelQuery } from './store.js';
export { OmniAccess } from './access.js';
export { KeyRegistry, type Caller, type Role } from './auth.js';
export { FaultInjector } from './faults.js';
export { OmniError, GrpcCode, type OmniErrorKind } from './errors.js';
export { encodeJoinToken, parseJoinToken, joinTokenValidFor } from './jointoken.js';
export { FINALIZERS, IDS, LABELS, NS, TYPES } from './resources.js';
