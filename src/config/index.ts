// Daemon configuration: the settings table, loading and validation, and the redacted printable view.
export * from './settings.js';
export * from './load.js';
export * from './redact.js';
export { printConfig } from './printCommand.js';
