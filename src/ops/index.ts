// Operational surface of the daemon: metrics registry, readiness checks and the HTTP endpoint serving them
// (the `doctor` checks live in ./doctor.js, loaded only by that command).
export * from './metrics.js';
export * from './health.js';
export * from './listen.js';
export * from './server.js';
export * from './providerMetrics.js';
