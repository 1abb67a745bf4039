import { createServer } from 'node:http';
import type { Command, CommandContext } from '../appliance/cli.ts';
import { close, listen, untilSignal } from '../appliance/http.ts';
import { buildApp } from './app.ts';

async function serveController(ctx: CommandContext): Promise<number> {
  const app = buildApp({ log: ctx.log });
  const server = createServer(app);
  const port = await listen(server, ctx.config.port, ctx.config.listen);
  ctx.log.info(`controller listening on http://${ctx.config.listen}:${port}`, { dataDir: ctx.config.dataDir });
  const sig = await untilSignal();
  ctx.log.info(`stopping on ${sig}`);
  await close(server);
  return 0;
}

const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;
const portFlag = { type: 'string', arg: 'PORT', key: 'port', help: 'web UI and API port (default 8080)' } as const;

export const upCommand: Command = {
  name: 'up',
  summary: 'controller + local agent on this machine, enrolled automatically (npm start runs this)',
  flags: { data: dataFlag, port: portFlag },
  run: serveController,
};

export const controllerCommand: Command = {
  name: 'controller',
  summary: 'run the controller only: web UI, JSON API, scheduler, host registry',
  flags: { data: dataFlag, port: portFlag },
  run: serveController,
};
