// `skyhost controller` and `skyhost up` (DESIGN §3).
import type { Command, CommandContext } from '../appliance/cli.ts';
import { untilSignal } from '../appliance/http.ts';
import { startController } from './controller.ts';
import { servicesOptions } from './services.ts';

async function serveController(ctx: CommandContext, withAgent: boolean): Promise<number> {
  const controller = await startController({ ...servicesOptions(ctx.config, ctx.log), port: ctx.config.port, listen: ctx.config.listen });
  ctx.log.info(`controller listening on http://${ctx.config.listen}:${controller.port}`, { dataDir: ctx.config.dataDir });
  if (withAgent) ctx.log.warn('the local agent is not built in yet: this runs the controller only');
  const sig = await untilSignal();
  ctx.log.info(`stopping on ${sig}`);
  await controller.stop();
  return 0;
}

const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;
const portFlag = { type: 'string', arg: 'PORT', key: 'port', help: 'web UI and API port (default 8080)' } as const;

export const upCommand: Command = {
  name: 'up',
  summary: 'controller + local agent on this machine, enrolled automatically (npm start runs this)',
  flags: { data: dataFlag, port: portFlag },
  run: (ctx) => serveController(ctx, true),
};

export const controllerCommand: Command = {
  name: 'controller',
  summary: 'run the controller only: web UI, JSON API, scheduler, host registry',
  flags: { data: dataFlag, port: portFlag },
  run: (ctx) => serveController(ctx, false),
};
