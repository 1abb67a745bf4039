// `skyhost setup [--port 8090] [--cli]`: the bootstrapper, as a local web page or a terminal menu.
import { createServer } from 'node:http';
import path from 'node:path';
import type { Command, CommandContext } from '../cli.ts';
import { close, listen, untilSignal } from '../http.ts';
import { buildInstallerIso, inspectUbuntuIso } from '../../iso/remaster.ts';
import { writeImage } from '../../iso/usb.ts';
import { buildSetupApp } from './app.ts';
import { downloadUbuntuIso } from './download.ts';
import { SetupJobs } from './jobs.ts';
import { runSetupMenu } from './menu.ts';

function jobsFor(ctx: CommandContext): SetupJobs {
  return new SetupJobs({
    buildIso: buildInstallerIso,
    download: downloadUbuntuIso,
    writeImage,
    workDir: path.join(ctx.config.dataDir, 'setup'),
    log: ctx.log,
  });
}

export const setupCommand: Command = {
  name: 'setup',
  summary: 'make the USB stick that installs a host node or the controller (web installer, or --cli menu)',
  description:
    'Opens a web page (http://127.0.0.1:8090 by default) that asks for the role and options, builds the\n' +
    'installer from an Ubuntu Server ISO, and writes it to a USB stick. --cli asks the same in the terminal.\n' +
    'Writing USB sticks needs root (sudo).',
  flags: {
    port: { type: 'string', arg: 'PORT', key: 'setupPort', help: 'web installer port (default 8090)' },
    listen: { type: 'string', arg: 'ADDR', help: 'address to listen on (default 127.0.0.1: this computer only)' },
    cli: { type: 'boolean', help: 'a terminal menu instead of the web page' },
    data: { type: 'string', arg: 'DIR', key: 'dataDir', help: 'built installers go in DIR/setup' },
    'allow-loop': { type: 'boolean', help: 'offer loop devices as USB sticks (tests only)' },
  },
  async run(ctx) {
    const jobs = jobsFor(ctx);
    const allowLoop = ctx.flags['allow-loop'] === true;
    if (ctx.flags.cli === true) {
      return runSetupMenu(process.stdin, process.stdout, { jobs, ubuntuMirror: ctx.config.ubuntuMirror, inspectIso: inspectUbuntuIso, allowLoop, cwd: process.cwd() });
    }
    const app = buildSetupApp({ log: ctx.log, jobs, ubuntuMirror: ctx.config.ubuntuMirror, inspectIso: inspectUbuntuIso, allowLoop });
    const server = createServer(app);
    const host = typeof ctx.flags.listen === 'string' ? ctx.flags.listen : '127.0.0.1';
    const port = await listen(server, ctx.config.setupPort, host);
    ctx.print(`SkyHost setup: open http://${host.includes(':') ? `[${host}]` : host}:${port}/ in a browser (Ctrl+C stops it)`);
    await untilSignal();
    await close(server);
    return 0;
  },
};
