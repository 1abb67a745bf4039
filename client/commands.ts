// `skyhost vm list|create|start|stop|delete|console|ssh`: a client of a controller's JSON API for
// people's scripts (a teacher scripting a lesson), from any machine. What the commands run is in
// vm.ts, imported inside `run()`, so `skyhost --help` loads none of it. docs/cli.md is its guide.
import type { Command, FlagSpec } from '../base/cli.ts';

/** How to reach the controller and who we are: every `vm` command takes these. */
export const CONNECTION_FLAGS: Record<string, FlagSpec> = {
  controller: { type: 'string', arg: 'URL', key: 'controllerUrl', help: 'the controller, e.g. https://10.0.0.5:8443 (default: found on the LAN by mDNS)' },
  'controller-fingerprint': {
    type: 'string', arg: 'SHA256', key: 'controllerFingerprint',
    help: 'trust only the controller whose certificate has this sha256 (the hosts page shows it); without it, HTTPS is checked with the system\'s CAs',
  },
  token: { type: 'string', arg: 'T', help: 'API token (default: $SKYHOST_TOKEN, else the file ~/.config/skyhost/token)' },
};

const json = { type: 'boolean', help: 'print JSON instead of text' } as const;
const vmArg = 'NAME|ID';

export const vmListCommand: Command = {
  name: 'vm list',
  summary: 'list VMs on a controller (yours; an admin\'s or teacher\'s: all they may see)',
  flags: { ...CONNECTION_FLAGS, json, owner: { type: 'string', arg: 'USER', help: 'only the VMs of this user' }, state: { type: 'string', arg: 'STATE', help: 'only VMs in this state (running, shutoff, creating, error, ...)' } },
  run: async (ctx) => (await import('./vm.ts')).listVms(ctx),
};

export const vmCreateCommand: Command = {
  name: 'vm create',
  summary: 'ask the controller for a VM and wait until it runs',
  usage: '--template T [--name N] [--vcpus N] [--memory MIB] [--disk GIB] [--lease MIN] [--ssh-key FILE]',
  description: 'The scheduler picks a host; "no host fits" comes with a reason for every host. Prints the VM and its SSH command.\n' +
    'Waits until the VM runs (--no-wait: as soon as the controller accepted it).',
  flags: {
    ...CONNECTION_FLAGS,
    template: { type: 'string', arg: 'T', help: 'the template (required), e.g. debian-12' },
    name: { type: 'string', arg: 'N', help: 'the VM\'s name (default: the template\'s and four random characters)' },
    vcpus: { type: 'string', arg: 'N', help: 'virtual CPUs (default 1)' },
    memory: { type: 'string', arg: 'MIB', help: 'memory in MiB (default: the template\'s minimum, at least 256)' },
    disk: { type: 'string', arg: 'GIB', help: 'disk size in GiB (default: the template\'s)' },
    lease: { type: 'string', arg: 'MIN', help: 'shut the VM down after this many minutes (default: the class\'s, template\'s or cluster\'s)' },
    'ssh-key': { type: 'string', arg: 'FILE', help: 'an OpenSSH public key file for the VM\'s user (e.g. ~/.ssh/id_ed25519.pub)' },
    'no-wait': { type: 'boolean', help: 'do not wait until the VM runs' },
    timeout: { type: 'string', arg: 'SECONDS', help: 'how long to wait for it to run (default 600)' },
    json,
  },
  run: async (ctx) => (await import('./vm.ts')).createVm(ctx),
};

export const vmStartCommand: Command = {
  name: 'vm start',
  summary: 'start a stopped VM',
  usage: vmArg,
  flags: { ...CONNECTION_FLAGS, json },
  run: async (ctx) => (await import('./vm.ts')).vmAction(ctx, 'start'),
};

export const vmStopCommand: Command = {
  name: 'vm stop',
  summary: 'shut a VM down (its guest is asked, as with the power button); --force pulls the plug',
  usage: vmArg,
  flags: { ...CONNECTION_FLAGS, force: { type: 'boolean', help: 'power off at once instead of asking the guest' }, json },
  run: async (ctx) => (await import('./vm.ts')).vmAction(ctx, ctx.flags.force === true ? 'poweroff' : 'shutdown'),
};

export const vmDeleteCommand: Command = {
  name: 'vm delete',
  summary: 'delete a VM and its disk',
  usage: vmArg,
  flags: { ...CONNECTION_FLAGS },
  run: async (ctx) => (await import('./vm.ts')).deleteVm(ctx),
};

export const vmConsoleCommand: Command = {
  name: 'vm console',
  summary: 'attach this terminal to a VM\'s serial console (Ctrl-] leaves)',
  usage: vmArg,
  description: 'The terminal is in raw mode while attached: every key goes to the VM. Ctrl-] leaves; the VM keeps running.',
  flags: { ...CONNECTION_FLAGS },
  run: async (ctx) => (await import('./console.ts')).attachConsole(ctx),
};

export const vmSshCommand: Command = {
  name: 'vm ssh',
  summary: 'ssh into a VM with the command the controller gives for it',
  usage: `${vmArg} [-- SSH ARGUMENTS...]`,
  description: 'Runs ssh with the VM\'s SSH command (its host\'s address and forwarded port); words after -- go to ssh\n' +
    '(e.g. -- -i ~/.ssh/lab uname -a). Exits with ssh\'s exit code.',
  flags: { ...CONNECTION_FLAGS },
  run: async (ctx) => (await import('./vm.ts')).sshVm(ctx),
};

export const CLIENT_COMMANDS: Command[] = [vmListCommand, vmCreateCommand, vmStartCommand, vmStopCommand, vmDeleteCommand, vmConsoleCommand, vmSshCommand];
