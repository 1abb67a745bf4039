// `skyhost controller` and `skyhost up` (docs/design.md#cli). What they run is in server/serve.ts, imported
// when one of them starts: the other commands (the agent above all) never load the controller's code.
import type { Command } from '../base/cli.ts';

const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;
const portFlag = { type: 'string', arg: 'PORT', key: 'port', help: 'web UI and API port (default 8080)' } as const;

export const upCommand: Command = {
  name: 'up',
  summary: 'controller + local agent on this machine, enrolled automatically (npm start runs this)',
  description: 'One --data folder serves both: `skyhost template import NAME --disk FILE --data DIR` of that folder feeds the cluster.',
  flags: { data: dataFlag, port: portFlag, 'agent-port': { type: 'string', arg: 'PORT', key: 'agentPort', help: 'local agent port (default 8081)' } },
  run: async (ctx) => (await import('./serve.ts')).serveController(ctx, true),
};

export const controllerCommand: Command = {
  name: 'controller',
  summary: 'run the controller only: web UI, JSON API, scheduler, host registry',
  flags: { data: dataFlag, port: portFlag },
  run: async (ctx) => (await import('./serve.ts')).serveController(ctx, false),
};
