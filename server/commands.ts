// `skyhost controller`. What it runs is in server/serve.ts, imported when it starts: the other
// commands (the agent above all) never load the controller's code. `skyhost up` is the roof's
// (appliance/commands.ts): it composes the controller with the local agent.
import type { Command } from '../base/cli.ts';

export const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;
export const portFlag = { type: 'string', arg: 'PORT', key: 'port', help: 'web UI and API port (default 8080)' } as const;

export const controllerCommand: Command = {
  name: 'controller',
  summary: 'run the controller only: web UI, JSON API, scheduler, host registry',
  flags: { data: dataFlag, port: portFlag },
  run: async (ctx) => (await import('./serve.ts')).serveController(ctx),
};
