// Every command of the `skyhost` executable, in the order `skyhost --help` lists them. Each
// component owns its commands; this is the one place they are put together, with `skyhost up`,
// which puts the controller and the agent together (appliance/up.ts).
import type { Command } from '../base/cli.ts';
import { hostSetupCommand } from '../host/host-command.ts';
import { controllerBackupCommand, controllerCommand, controllerRestoreCommand, dataFlag, portFlag } from '../server/commands.ts';
import { AGENT_COMMANDS } from '../agent/commands.ts';
import { usbListCommand, usbWriteCommand } from '../iso/usb-commands.ts';
import { setupCommand } from './setup/commands.ts';
import { isoBuildCommand } from '../iso/commands.ts';
import { CLIENT_COMMANDS } from '../client/commands.ts';

export const upCommand: Command = {
  name: 'up',
  summary: 'controller + local agent on this machine, enrolled automatically (npm start runs this)',
  description: 'One --data folder serves both: `skyhost template import NAME --disk FILE --data DIR` of that folder feeds the cluster.\n' +
    'On stop, VMs keep running; the VM network is removed only when no VM uses it.',
  flags: {
    data: dataFlag, port: portFlag, 'agent-port': { type: 'string', arg: 'PORT', key: 'agentPort', help: 'local agent port (default 8081)' },
    'host-id': { type: 'string', arg: 'ID', key: 'hostId', help: 'the local agent\'s host identity (default /etc/machine-id)' },
    'ssh-ports': { type: 'string', arg: 'LOW-HIGH', key: 'sshPortRange', help: 'port range of the local agent\'s SSH forwards (default 20000-20999)' },
  },
  run: async (ctx) => (await import('./up.ts')).serveUp(ctx),
};

export const COMMANDS: Command[] = [upCommand, controllerCommand, controllerBackupCommand, controllerRestoreCommand, hostSetupCommand, usbListCommand, usbWriteCommand, isoBuildCommand, setupCommand, ...AGENT_COMMANDS, ...CLIENT_COMMANDS];
