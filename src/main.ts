// Process entry point: dispatches sub-commands; with no sub-command it runs the daemon.
import { runCli } from './cli/index.js';

process.exitCode = await runCli(process.argv.slice(2));
