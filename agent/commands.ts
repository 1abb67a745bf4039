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
import { buildTinyGuest, TINY_MIN_MEMORY_MIB } from './tinyguest.ts';

const dataFlag = { type: 'string', arg: 'DIR', key: 'dataDir', help: 'data folder (default /var/lib/skyhost as root, ./.skyhost otherwise)' } as const;

export const agentCommand: Command = {
  name: 'agent',
  summary: 'run the host agent: VMs through libvirt/QEMU, consoles, SSH forwards, templates',
  description:
    'Without --controller the agent finds one on the LAN (mDNS) and enrolls (with a join string, --join or\n' +
    '/etc/skyhost/join-token, only with the controller whose certificate it names); either way it serves its API\n' +
    'over HTTPS (plain HTTP to this machine only)\n' +
    'with the key from --key or DATA/secrets/agent-key\n' +
    '(created 0600). Several agents can share a machine with distinct --host-id, --data and sshPortRange.',
  flags: {
    data: dataFlag,
    port: { type: 'string', arg: 'PORT', key: 'agentPort', help: 'API port (default 8081)' },
    key: { type: 'string', arg: 'K', key: 'agentKey', help: 'bearer key every API call must carry' },
    'host-id': { type: 'string', arg: 'ID', key: 'hostId', help: 'host identity (default /etc/machine-id)' },
    controller: { type: 'string', arg: 'URL', key: 'controllerUrl', help: 'controller to enroll with (default: found on the LAN by mDNS)' },
    'join-token': { type: 'string', arg: 'T', key: 'joinToken', help: 'join token for enrollment (shows in ps: prefer /etc/skyhost/join-token, mode 0600)' },
    join: { type: 'string', arg: 'shk1.…', key: 'joinToken', help: 'join string from the hosts page: token, controller addresses and certificate fingerprint (shows in ps: prefer /etc/skyhost/join-token)' },
    'controller-fingerprint': { type: 'string', arg: 'SHA256', key: 'controllerFingerprint', help: 'trust only the controller with this certificate (with a bare join token; a join string carries it)' },
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
  summary: 'import a VM template: a bootable disk, a kernel + initrd (+ disk), or an installer ISO',
  usage: 'NAME (--disk FILE | --kernel FILE [--initrd FILE] [--cmdline "..."] [--disk FILE] | --iso FILE)',
  description:
    'Copies the files into DATA/templates/NAME/ with a manifest (sha256 of every file). --sha256 checks\n' +
    'a file: give it once per file in the order kernel, initrd, disk (a disk template: just the disk).',
  flags: {
    data: dataFlag,
    disk: { type: 'string', arg: 'FILE', help: 'bootable disk image (qcow2 or raw), or the root disk of a kernel template' },
    kernel: { type: 'string', arg: 'FILE', help: 'kernel for direct kernel boot' },
    initrd: { type: 'string', arg: 'FILE', help: 'initrd for direct kernel boot' },
    cmdline: { type: 'string', arg: 'ARGS', help: 'kernel command line' },
    iso: { type: 'string', arg: 'FILE', help: 'an installer ISO: its VMs get an empty disk of the size asked for and boot it from a CD' },
    sha256: { type: 'string', arg: 'HEX', multiple: true, help: 'expected sha256 of a file (repeatable)' },
    os: { type: 'string', arg: 'OS', help: 'operating system, e.g. alpine, debian, ubuntu-desktop' },
    'min-memory': { type: 'string', arg: 'MIB', help: 'least memory a VM of this template gets (default 128)' },
    console: { type: 'string', arg: 'KIND', help: 'serial (default) or vnc (graphical)' },
    'needs-kvm': { type: 'boolean', help: 'refuse on hosts without KVM (desktops)' },
    ssh: { type: 'boolean', help: 'the image runs an SSH server: its VMs\' pages show an SSH command' },
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
      ...(str(f.iso) ? { iso: str(f.iso)! } : {}),
      ...(Array.isArray(f.sha256) ? { sha256: f.sha256 } : {}),
      ...(str(f.os) ? { os: str(f.os)! } : {}),
      ...(str(f.description) ? { description: str(f.description)! } : {}),
      ...(minMem ? { minMemoryMiB: Number(minMem) } : {}),
      ...(consoleKind ? { console: consoleKind } : {}),
      ...(f['needs-kvm'] === true ? { needsKvm: true } : {}),
      ...(f.ssh === true ? { ssh: true } : {}),
    });
    ctx.print(`imported template ${t.name} (${t.kind}, ${t.files.map((x) => `${x.role} ${x.sha256.slice(0, 12)}`).join(', ')})`);
  },
};

export const templateBuildCommand: Command = {
  name: 'template build',
  summary: 'build a template on this host: debian-12 (a real Debian from this host\'s package mirror), or --busybox (a tiny Linux)',
  usage: 'debian-12 [--desktop] | NAME --busybox',
  description:
    'debian-12 (and, on an Ubuntu host, ubuntu-VERSION of the host) is made with mmdebstrap from the apt sources\n' +
    'and proxy this host uses: kernel, systemd, OpenSSH, cloud-init (NoCloud: hostname, SSH key, user-data),\n' +
    'a login on the serial console, user "debian" (key-only). The disk grows to the VM\'s size on first boot.\n' +
    '--desktop adds XFCE on the VNC display (needs KVM). Results are cached in ~/.cache/skyhost (XDG_CACHE_HOME):\n' +
    'a second build is quick; --rebuild builds again (reusing downloaded packages). Needs root.\n' +
    'The tiny template (--busybox) boots in seconds even without KVM: a root shell on the serial console, an\n' +
    'address by DHCP, power-off on the ACPI button. Needs a kernel in /boot with its modules and busybox-static.',
  flags: {
    data: dataFlag,
    busybox: { type: 'boolean', help: 'a tiny busybox Linux (kernel + initramfs) from this machine\'s files' },
    desktop: { type: 'boolean', help: 'with a light graphical desktop (XFCE) on the VNC display; needs KVM' },
    as: { type: 'string', arg: 'NAME', help: 'the template\'s name (default: the recipe\'s, e.g. debian-12 or debian-12-desktop)' },
    rebuild: { type: 'boolean', help: 'build again even if the cache has this recipe\'s image' },
  },
  async run(ctx) {
    const [name, ...extra] = ctx.args;
    if (!name || extra.length > 0) throw new UsageError('template build: give exactly one NAME (see skyhost template build --help)');
    const store = new TemplateStore(ctx.config.dataDir);
    if (ctx.flags.busybox !== true) return stoppable((signal) => buildDistroTemplate(ctx, store, name, signal));
    if (!TemplateName.safeParse(name).success) throw new UsageError(`template build: ${TemplateName.safeParse(name).error!.issues[0]!.message}`);
    const work = await mkdtemp(path.join(os.tmpdir(), 'skyhost-build-'));
    try {
      const built = await buildTinyGuest(work, { hostname: name.replace(/[^a-z0-9-]/g, '-').slice(0, 32), prompt: `${name}# ` });
      const t = await store.import({
        name, kernel: built.kernel, initrd: built.initrd, cmdline: built.cmdline, os: 'busybox', minMemoryMiB: TINY_MIN_MEMORY_MIB,
        description: 'tiny busybox Linux built on this host: root shell on the serial console',
      });
      ctx.print(`built template ${t.name} (kernel ${t.files[0]!.sha256.slice(0, 12)}, initrd ${t.files[1]!.sha256.slice(0, 12)})`);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  },
};

/**
 * Runs a build that SIGTERM or SIGINT (Ctrl-C) stops: its children are stopped and waited for, its work
 * folder removed, and the command ends with 128 + the signal's number and one line saying so. A second
 * signal ends it at once (the next build sweeps what is left).
 */
async function stoppable(build: (signal: AbortSignal) => Promise<void>): Promise<number | void> {
  const stop = new AbortController();
  let by: NodeJS.Signals | undefined;
  const on = (sig: NodeJS.Signals) => {
    if (by) process.exit(128 + os.constants.signals[sig]);
    by = sig;
    stop.abort();
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  try {
    await build(stop.signal);
  } catch (err) {
    if (!by) throw err;
    // the build's own failure once it was stopped (a child killed, `cancelled`) is the stop itself
  } finally {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
  }
  if (!by) return;
  process.stderr.write(`${process.stdout.isTTY ? '\n' : ''}skyhost: template build stopped by ${by}: its work folder was removed, nothing was kept\n`);
  return 128 + os.constants.signals[by];
}

/** `template build debian-12 [--desktop]`: the recipe's image (built or cached), imported into the store. */
async function buildDistroTemplate(ctx: CommandContext, store: TemplateStore, target: string, signal: AbortSignal): Promise<void> {
  const { buildDistroImage, distroRecipe, distroTargets, BUILD_STAGES } = await import('./debian-template.ts');
  if (!distroTargets().includes(target)) {
    throw new UsageError(`template build: no recipe ${target}: choose ${distroTargets().join(', ')}, or NAME --busybox`);
  }
  const desktop = ctx.flags.desktop === true;
  const name = typeof ctx.flags.as === 'string' ? ctx.flags.as : desktop ? `${target}-desktop` : target;
  const valid = TemplateName.safeParse(name);
  if (!valid.success) throw new UsageError(`template build: --as ${valid.error.issues[0]!.message}`);
  if (await store.get(name)) throw new UsageError(`template build: template ${name} already exists (remove it first: skyhost template rm ${name})`);
  const recipe = await distroRecipe(target, { desktop });
  const line = progressLine(ctx);
  const t0 = performance.now();
  const stageOf = (s: string) => `[${BUILD_STAGES.indexOf(s as never) + 1}/${BUILD_STAGES.length}] ${s}`;
  const built = await buildDistroImage(recipe, {
    rebuild: ctx.flags.rebuild === true,
    onProgress: (stage, detail) => line(`${stageOf(stage)}: ${detail}`, Math.round((performance.now() - t0) / 1000)),
    onLine: (l) => ctx.log.debug('mmdebstrap', { line: l }),
    signal, log: ctx.log,
  });
  if (signal.aborted) return;
  if (built.cached) line(`${stageOf('image')}: from the cache ${built.dir}`, 0);
  line(`${stageOf('hash')}: sha256 of the files, into ${store.dir}/${name}`, Math.round((performance.now() - t0) / 1000));
  const t = await store.import({
    name, kernel: built.kernel, initrd: built.initrd, disk: built.disk, cmdline: built.cmdline,
    os: recipe.desktop ? `${recipe.distro}-desktop` : recipe.distro,
    minMemoryMiB: recipe.minMemoryMiB, console: recipe.desktop ? 'vnc' : 'serial', needsKvm: recipe.desktop, ssh: true,
    description: `${recipe.distro} ${recipe.suite}${recipe.desktop ? ' with the XFCE desktop' : ''}: cloud-init (NoCloud), OpenSSH, user ${recipe.user} (key-only)`,
  });
  // stopped while the files were taken in: the template goes too (the image stays in the build cache)
  if (signal.aborted) return void (await store.remove(name, async () => []));
  line.done();
  const disk = t.files.find((f) => f.role === 'disk')!;
  const secs = Math.round((performance.now() - t0) / 100) / 10;
  ctx.print(`built template ${t.name} in ${secs} s${built.cached ? ' (image from the cache)' : ''}: disk ${(disk.bytes / 2 ** 20).toFixed(0)} MiB sha256 ${disk.sha256}`);
}

/** One line of progress that rewrites itself on a terminal; a line per change otherwise. */
function progressLine(ctx: CommandContext): ((text: string, seconds: number) => void) & { done: () => void } {
  const tty = process.stdout.isTTY === true;
  let last = '';
  const show = (text: string, seconds: number) => {
    const s = `${String(seconds).padStart(4)} s ${text}`;
    if (tty) process.stdout.write(`\r\x1b[K${s.slice(0, (process.stdout.columns || 100) - 1)}`);
    else if (text.split(':')[0] !== last.split(':')[0]) ctx.print(s); // stages only, not every line of mmdebstrap
    last = text;
  };
  return Object.assign(show, { done: () => { if (tty) process.stdout.write('\n'); } });
}

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
