// Operational surface of the daemon: metrics registry, readiness checks and the HTTP endpoint serving them.
export * from './metrics.js';
export * from './health.js';
export * from './listen.js';
export * from './server.js';
export * from './providerMetrics.js';
