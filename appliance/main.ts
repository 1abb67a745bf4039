#!/usr/bin/env node
// Entry point of the `skyhost` executable (bundled into dist/skyhost) and of `node appliance/main.ts`.
import { runCli } from '../base/cli.ts';
import { COMMANDS } from './commands.ts';

// Services resolve only when they stop; short commands end here.
void runCli(COMMANDS, process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
