// The agent's commands: `skyhost agent` (the service) and `skyhost template import|build|list|rm`
// (the template store of this host, usable while the agent runs or not). Heavy modules are imported
// inside `run`, so that each command loads only what it uses.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Command, CommandContext } from '../base/cli.ts';
import { UsageError } from '../base/cli.ts';
import { untilSignal } from '../base/http.ts';
import { TemplateName } from '../wire/api.ts';
import { TemplateStore } from './templates.ts';
import { buildTinyGuest } from './tinyguest.ts';

const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;

export const agentCommand: Command = {
  name: 'agent',
  summary: 'run the host agent: VMs through libvirt/QEMU, consoles, SSH forwards, templates',
  description:
    'Without --controller the agent finds one on the LAN (mDNS) and enrolls; either way it serves its API\n' +
    'with the key from --key or DATA/secrets/agent-key\n' +
    '(created 0600). Several agents can share a machine with distinct --host-id, --data and sshPortRange.',
  flags: {
    data: dataFlag,
    port: { type: 'string', arg: 'PORT', key: 'agentPort', help: 'API port (default 8081)' },
    key: { type: 'string', arg: 'K', key: 'agentKey', help: 'bearer key every API call must carry' },
    'host-id': { type: 'string', arg: 'ID', key: 'hostId', help: 'host identity (default /etc/machine-id)' },
    controller: { type: 'string', arg: 'URL', key: 'controllerUrl', help: 'controller to enroll with (default: found on the LAN by mDNS)' },
    'join-token': { type: 'string', arg: 'T', key: 'joinToken', help: 'join token for enrollment (shows in ps: prefer /etc/skyhost/join-token, mode 0600)' },
    'ssh-ports': { type: 'string', arg: 'LOW-HIGH', key: 'sshPortRange', help: 'port range of SSH forwards (default 20000-20999)' },
  },
  async run(ctx) {
    // The service's code (HTTP app, status sampler, mDNS) loads only here, not for the template commands.
    const [{ startAgent }, { browseControllers }, { lanAddress }] = await Promise.all([import('./service.ts'), import('./discovery/index.ts'), import('../base/net.ts')]);
    // Browse for the controller while the agent starts (adoption, first status sample).
    const browser = ctx.config.controllerUrl ? undefined : browseControllers({ lanIp: lanAddress(ctx.config.lanInterface)?.ip, log: ctx.log });
    const agent = await startAgent({ config: ctx.config, log: ctx.log, enroll: true, ...(browser ? { browser } : {}) })
      .catch(async (err: unknown) => { await browser?.stop(); throw err; });
    ctx.print(`agent ${agent.hostId} listening on ${agent.url}`);
    const sig = await untilSignal();
    ctx.log.info(`stopping on ${sig} (VMs keep running)`);
    await agent.stop();
    return 0;
  },
};

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export const templateImportCommand: Command = {
  name: 'template import',
  summary: 'import a VM template: a bootable disk, or a kernel + initrd (+ disk)',
  usage: 'NAME (--disk FILE | --kernel FILE [--initrd FILE] [--cmdline "..."] [--disk FILE])',
  description:
    'Copies the files into DATA/templates/NAME/ with a manifest (sha256 of every file). --sha256 checks\n' +
    'a file: give it once per file in the order kernel, initrd, disk (a disk template: just the disk).',
  flags: {
    data: dataFlag,
    disk: { type: 'string', arg: 'FILE', help: 'bootable disk image (qcow2 or raw), or the root disk of a kernel template' },
    kernel: { type: 'string', arg: 'FILE', help: 'kernel for direct kernel boot' },
    initrd: { type: 'string', arg: 'FILE', help: 'initrd for direct kernel boot' },
    cmdline: { type: 'string', arg: 'ARGS', help: 'kernel command line' },
    sha256: { type: 'string', arg: 'HEX', multiple: true, help: 'expected sha256 of a file (repeatable)' },
    os: { type: 'string', arg: 'OS', help: 'operating system, e.g. alpine, debian, ubuntu-desktop' },
    'min-memory': { type: 'string', arg: 'MIB', help: 'least memory a VM of this template gets (default 128)' },
    console: { type: 'string', arg: 'KIND', help: 'serial (default) or vnc (graphical)' },
    'needs-kvm': { type: 'boolean', help: 'refuse on hosts without KVM (desktops)' },
    description: { type: 'string', arg: 'TEXT', help: 'one line shown with the template' },
  },
  async run(ctx) {
    const [name, ...extra] = ctx.args;
    if (!name || extra.length > 0) throw new UsageError('template import: give exactly one NAME (see skyhost template import --help)');
    const f = ctx.flags;
    const consoleKind = str(f.console);
    if (consoleKind !== undefined && consoleKind !== 'serial' && consoleKind !== 'vnc') throw new UsageError('--console must be serial or vnc');
    const minMem = str(f['min-memory']);
    if (minMem !== undefined && !/^\d+$/.test(minMem)) throw new UsageError('--min-memory must be a whole number of MiB');
    const store = new TemplateStore(ctx.config.dataDir);
    const t = await store.import({
      name,
      ...(str(f.disk) ? { disk: str(f.disk)! } : {}),
      ...(str(f.kernel) ? { kernel: str(f.kernel)! } : {}),
      ...(str(f.initrd) ? { initrd: str(f.initrd)! } : {}),
      ...(str(f.cmdline) !== undefined ? { cmdline: str(f.cmdline)! } : {}),
      ...(Array.isArray(f.sha256) ? { sha256: f.sha256 } : {}),
      ...(str(f.os) ? { os: str(f.os)! } : {}),
      ...(str(f.description) ? { description: str(f.description)! } : {}),
      ...(minMem ? { minMemoryMiB: Number(minMem) } : {}),
      ...(consoleKind ? { console: consoleKind } : {}),
      ...(f['needs-kvm'] === true ? { needsKvm: true } : {}),
    });
    ctx.print(`imported template ${t.name} (${t.kind}, ${t.files.map((x) => `${x.role} ${x.sha256.slice(0, 12)}`).join(', ')})`);
  },
};

export const templateBuildCommand: Command = {
  name: 'template build',
  summary: 'build a template on this host without a download: --busybox makes a tiny Linux from this machine\'s kernel and busybox',
  usage: 'NAME --busybox',
  description:
    'The tiny template boots in seconds even without KVM: a root shell on the serial console, an address by\n' +
    'DHCP, power-off on the ACPI button. Needs a kernel in /boot with its modules and busybox-static.',
  flags: {
    data: dataFlag,
    busybox: { type: 'boolean', help: 'a tiny busybox Linux (kernel + initramfs) from this machine\'s files' },
  },
  async run(ctx) {
    const [name, ...extra] = ctx.args;
    if (!name || extra.length > 0) throw new UsageError('template build: give exactly one NAME (see skyhost template build --help)');
    if (ctx.flags.busybox !== true) throw new UsageError('template build: say what to build: --busybox');
    const store = new TemplateStore(ctx.config.dataDir);
    if (!TemplateName.safeParse(name).success) throw new UsageError(`template build: ${TemplateName.safeParse(name).error!.issues[0]!.message}`);
    const work = await mkdtemp(path.join(os.tmpdir(), 'skyhost-build-'));
    try {
      const built = await buildTinyGuest(work, { hostname: name.replace(/[^a-z0-9-]/g, '-').slice(0, 32), prompt: `${name}# ` });
      const t = await store.import({
        name, kernel: built.kernel, initrd: built.initrd, cmdline: built.cmdline, os: 'busybox', minMemoryMiB: 64,
        description: 'tiny busybox Linux built on this host: root shell on the serial console',
      });
      ctx.print(`built template ${t.name} (kernel ${t.files[0]!.sha256.slice(0, 12)}, initrd ${t.files[1]!.sha256.slice(0, 12)})`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
};

export const templateListCommand: Command = {
  name: 'template list',
  summary: 'list the VM templates on this host',
  flags: { data: dataFlag, json: { type: 'boolean', help: 'print JSON' } },
  async run(ctx) {
    const list = await new TemplateStore(ctx.config.dataDir).list();
    if (ctx.flags.json === true) {
      ctx.print(JSON.stringify(list, null, 2));
      return;
    }
    if (list.length === 0) {
      ctx.print(`no templates in ${ctx.config.dataDir}/templates (add one: skyhost template import NAME --disk FILE)`);
      return;
    }
    ctx.print(['NAME', 'KIND', 'OS', 'CONSOLE', 'MIN MiB', 'KVM', 'SIZE MiB'].join('\t'));
    for (const t of list) {
      const size = Math.round(t.files.reduce((s, x) => s + x.bytes, 0) / 1024 / 1024);
      ctx.print([t.name, t.kind, t.os, t.console, t.minMemoryMiB, t.needsKvm ? 'needs' : '-', size].join('\t'));
    }
  },
};

/** Names of the VMs (of any agent using this data folder) that use the template. */
async function vmsUsing(ctx: CommandContext, template: string): Promise<string[]> {
  const [{ loadHypervisor }, { machineId }] = await Promise.all([import('./hypervisor/load.ts'), import('./service.ts')]);
  const { dataDir } = ctx.config;
  const hypervisor = await loadHypervisor({ hostId: ctx.config.hostId ?? (await machineId()), dataDir, log: ctx.log });
  return (await hypervisor.list()).filter((v) => v.metadata.dataDir === dataDir && v.metadata.template === template).map((v) => v.metadata.name);
}

export const templateRmCommand: Command = {
  name: 'template rm',
  summary: 'remove a VM template (refused while a VM uses it)',
  usage: 'NAME',
  flags: { data: dataFlag },
  async run(ctx: CommandContext) {
    const [name, ...extra] = ctx.args;
    if (!name || extra.length > 0) throw new UsageError('template rm: give exactly one NAME');
    await new TemplateStore(ctx.config.dataDir).remove(name, (n) => vmsUsing(ctx, n));
    ctx.print(`removed template ${name}`);
  },
};

export const AGENT_COMMANDS: Command[] = [agentCommand, templateImportCommand, templateBuildCommand, templateListCommand, templateRmCommand];
