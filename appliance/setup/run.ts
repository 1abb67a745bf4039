// What `skyhost setup` runs: the web installer or the terminal menu, with the jobs that build and
// write the installer. Imported only when the command starts (appliance/setup/commands.ts).
import { createServer } from 'node:http';
import path from 'node:path';
import type { CommandContext } from '../../base/cli.ts';
import { close, listen, untilSignal } from '../../base/http.ts';
import { buildInstallerIso, inspectUbuntuIso } from '../../iso/remaster.ts';
import { writeImage } from '../../iso/usb.ts';
import { buildSetupApp } from './app.ts';
import { setupKey, setupUrl } from './guard.ts';
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

export async function runSetup(ctx: CommandContext): Promise<number | void> {
  const jobs = jobsFor(ctx);
  const allowLoop = ctx.flags['allow-loop'] === true;
  if (ctx.flags.cli === true) {
    return runSetupMenu(process.stdin, process.stdout, { jobs, ubuntuMirror: ctx.config.ubuntuMirror, inspectIso: inspectUbuntuIso, allowLoop, cwd: process.cwd() });
  }
  const host = typeof ctx.flags.listen === 'string' ? ctx.flags.listen : '127.0.0.1';
  const key = setupKey();
  const app = buildSetupApp({ log: ctx.log, jobs, ubuntuMirror: ctx.config.ubuntuMirror, inspectIso: inspectUbuntuIso, allowLoop, key, listenAddress: host });
  const server = createServer(app);
  const port = await listen(server, ctx.config.setupPort, host);
  // Listening everywhere: the page still answers only under a loopback address.
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  ctx.print(`SkyHost setup: open ${setupUrl(shown, port, key)} in a browser on this computer (Ctrl+C stops it)`);
  await untilSignal();
  await close(server);
  return 0;
}
