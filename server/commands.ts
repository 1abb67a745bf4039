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

export const controllerBackupCommand: Command = {
  name: 'controller backup',
  summary: "write the controller's database and secrets to one file, while it runs",
  usage: 'FILE',
  description: 'FILE is a gzip\'d tar (mode 0600) holding skyhost-backup.json, skyhost.db (SQLite\'s online backup) and\n' +
    'DATA/secrets (cluster id, join tokens, admin token): keep it as safe as the secrets. `skyhost controller restore FILE`\n' +
    'puts it back, on this machine or a new one (docs/setup.md, Backup and restore).',
  flags: { data: dataFlag, force: { type: 'boolean', help: 'replace FILE if it exists' } },
  run: async (ctx) => (await import('./db/backup.ts')).backupCommand(ctx),
};

export const controllerRestoreCommand: Command = {
  name: 'controller restore',
  summary: 'put a controller backup in place in the data folder of a stopped controller',
  usage: 'FILE',
  description: 'Refused while a controller runs on the data folder. FILE is checked (manifest, checksums, integrity_check,\n' +
    'a known schema version) before anything changes; the database and secrets it replaces are moved to\n' +
    'DATA/before-restore-<time>/. Then start the controller: hosts re-attach with their keys, agents find it by mDNS.',
  flags: { data: dataFlag },
  run: async (ctx) => (await import('./db/backup.ts')).restoreCommand(ctx),
};
