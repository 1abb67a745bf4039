// `skyhost setup [--port 8090] [--cli]`: the bootstrapper, as a local web page or a terminal menu.
// What it runs is in ./run.ts, loaded only when the command starts.
import type { Command } from '../../base/cli.ts';

export const setupCommand: Command = {
  name: 'setup',
  summary: 'make the USB stick that installs a host node or the controller (web installer, or --cli menu)',
  description:
    'Opens a web page (http://127.0.0.1:8090/?key=... by default: open the exact address it prints) that\n' +
    'asks for the role and options, builds the installer from an Ubuntu Server ISO, and writes it to a USB\n' +
    'stick. --cli asks the same in the terminal.\n' +
    'Writing USB sticks needs root (sudo).',
  flags: {
    port: { type: 'string', arg: 'PORT', key: 'setupPort', help: 'web installer port (default 8090)' },
    listen: { type: 'string', arg: 'ADDR', help: 'address to listen on (default 127.0.0.1: this computer only)' },
    cli: { type: 'boolean', help: 'a terminal menu instead of the web page' },
    data: { type: 'string', arg: 'DIR', key: 'dataDir', help: 'built installers go in DIR/setup' },
    'allow-loop': { type: 'boolean', help: 'offer loop devices as USB sticks (tests only)' },
  },
  run: async (ctx) => (await import('./run.ts')).runSetup(ctx),
};
