// `skyhost template build debian-12`: a real Debian (or, on an Ubuntu host, that Ubuntu release) made
// with mmdebstrap from the package mirror and apt proxy this host already uses, with no mounts on the
// host (mmdebstrap's unshare mode writes a tarball; mkfs.ext4 -d turns the unpacked tree into a file
// system; qemu-img makes it a compressed qcow2). Results are cached outside the checkout, keyed by
// everything that decides them, and downloaded packages are kept for the next build.
//
// Boot path: direct kernel boot (template kind `kernel`: kernel + initrd + disk, root=/dev/vda).
// Under TCG a bootloader only adds seconds of emulated BIOS and GRUB, and installing one into an
// image needs loop devices and mounts; with the file system on the whole disk (no partition table)
// growing the root to the VM's disk is a plain resize2fs on first boot (cloud-init resize_rootfs).
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InvalidField, SkyError, Unavailable } from '../base/errors.ts';
import { run, runStreaming } from '../base/exec.ts';
import type { Logger } from '../base/log.ts';

/** Bump when the steps below change in a way the recipe's text does not show. */
const RECIPE_VERSION = 1;

export type BuildStage = 'packages' | 'filesystem' | 'image' | 'hash';
export const BUILD_STAGES: readonly BuildStage[] = ['packages', 'filesystem', 'image', 'hash'];

/** Everything that decides a Debian/Ubuntu template. */
export interface DistroRecipe {
  /** The recipe's name as given on the command line, e.g. `debian-12`. */
  target: string;
  distro: 'debian' | 'ubuntu';
  /** The apt suite, e.g. `bookworm`. */
  suite: string;
  desktop: boolean;
  packages: string[];
  /** Files written into the image, by absolute path. */
  files: Record<string, string>;
  /** Services enabled in the image. */
  enable: string[];
  /** Units that never start in the image (jobs of a long-lived PC, not of a lesson's VM). */
  mask: string[];
  /** Where packages come from: the host's own sources file(s) when the host runs this release, else a mirror URL. */
  mirrors: { name: string; text: string }[];
  /** apt options passed on (the host's proxy). */
  aptOptions: string[];
  /** The disk's size as the VM sees it before it grows to the VM's disk size. */
  sizeGiB: number;
  cmdline: string;
  minMemoryMiB: number;
  /** The image's default user (key-only login). */
  user: string;
}

const DEBIAN_SUITES: Record<string, string> = { 'debian-12': 'bookworm', 'debian-13': 'trixie' };

interface HostRelease {
  id: string;
  versionId: string;
  codename: string;
}

/** This machine's /etc/os-release: ID, VERSION_ID, VERSION_CODENAME. */
export function hostRelease(text = readOsRelease()): HostRelease {
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1] ?? '';
  return { id: get('ID'), versionId: get('VERSION_ID'), codename: get('VERSION_CODENAME') };
}

function readOsRelease(): string {
  try {
    return readFileSync('/etc/os-release', 'utf8');
  } catch {
    return ''; // no os-release (not Debian/Ubuntu): only the default mirrors are used
  }
}

/** The names `template build` accepts as a recipe on this host (debian-12, and ubuntu-X on Ubuntu X). */
export function distroTargets(host = hostRelease()): string[] {
  const out = Object.keys(DEBIAN_SUITES);
  if (host.id === 'ubuntu' && host.versionId && host.codename) out.push(`ubuntu-${host.versionId}`);
  return out;
}

/** The host's apt sources as mmdebstrap mirror files, when they are for `distro`/`suite`. */
function hostSources(distro: string, suite: string): { name: string; text: string }[] {
  const files = ['/etc/apt/sources.list'];
  const d = '/etc/apt/sources.list.d';
  if (existsSync(d)) for (const f of readdirSync(d).sort()) if (/\.(list|sources)$/.test(f)) files.push(path.join(d, f));
  const out: { name: string; text: string }[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue; // a file listed by the folder but unreadable or gone: not a source
    }
    // only the entries of this distribution: another vendor's repository (a .list added by hand) stays out
    const mirrorHost = distro === 'ubuntu' ? /ubuntu/ : /debian/;
    if (new RegExp(`\\b${suite}\\b`).test(text) && mirrorHost.test(text)) out.push({ name: f, text });
  }
  return out;
}

/** The host's apt proxy (Acquire::http::Proxy), passed to mmdebstrap so it goes the way apt goes. */
async function hostAptOptions(): Promise<string[]> {
  const out: string[] = [];
  for (const key of ['Acquire::http::Proxy', 'Acquire::https::Proxy']) {
    const r = await run('apt-config', ['dump', '--format', '%v', key], { okCodes: [1] }).catch((err: Error) => {
      throw new Unavailable(`apt-config failed (is this a Debian/Ubuntu host?): ${err.message.split('\n')[0]}`);
    });
    const value = r.stdout.trim();
    if (value) out.push(`${key} "${value.replace(/"/g, '')}";`);
  }
  return out;
}

// the default user is the distribution's own (`debian`, `ubuntu`: sudo, locked password, bash)
const CLOUD_CFG = (user: string) => `# SkyHost: NoCloud only (the seed ISO the agent attaches), key-only login as ${user}.
datasource_list: [NoCloud, None]
datasource:
  NoCloud:
    fs_label: cidata
ssh_pwauth: false
disable_root: true
preserve_hostname: false
manage_etc_hosts: true
# the file system is the whole disk (no partition to grow): resize2fs makes it as big as the VM's disk
resize_rootfs: true
# the image brings its own DHCP on every Ethernet interface (systemd-networkd)
network:
  config: disabled
# keep the host's apt sources the image was built from (a school mirror or proxy)
apt:
  preserve_sources_list: true
# Debian's module lists without what has nothing to do here (GRUB, locales, snap, LXD, Puppet, ...):
# each module is Python to load, and that costs seconds without KVM
cloud_init_modules: [migrator, seed_random, bootcmd, write-files, resizefs, mounts, set_hostname, update_hostname,
  update_etc_hosts, ca-certs, users-groups, ssh]
cloud_config_modules: [ssh-import-id, set-passwords, apt-configure, ntp, timezone, runcmd]
cloud_final_modules: [package-update-upgrade-install, write-files-deferred, scripts-vendor, scripts-per-once,
  scripts-per-boot, scripts-per-instance, scripts-user, ssh-authkey-fingerprints, keys-to-console, final-message,
  power-state-change]
# RSA host keys take seconds to make without KVM
ssh_genkeytypes: [ed25519, ecdsa]
`;

// IPv4 only: with IPv6 on, systemd-networkd-wait-online waited minutes for a router that never comes
const NETWORK = `[Match]
Type=ether

[Network]
DHCP=ipv4
IPv6AcceptRA=no
LinkLocalAddressing=no
`;

// cloud-init waits for the network: one interface up is enough, and never more than a minute
const WAIT_ONLINE = `[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
`;

const FSTAB = `# the root file system is the whole of the VM's disk (direct kernel boot, root=/dev/vda)
/dev/vda / ext4 defaults,discard,errors=remount-ro 0 1
`;

// cloud-init makes the SSH host keys on first boot; this only covers a boot where it did not run
const SSH_KEYS_UNIT = `[Unit]
Description=Make missing SSH host keys
Before=ssh.service
After=cloud-init.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
`;

// The login on the serial console, without the stock serial-getty@ttyS0: that one waits for the
// device unit dev-ttyS0.device and gives up after 90 s, which a boot under TCG on a busy PC outlasts.
// After cloud-init's first stage, so that the prompt shows the VM's name.
const SERIAL_LOGIN_UNIT = `[Unit]
Description=Login prompt on the serial console (ttyS0)
After=systemd-user-sessions.service cloud-init.service
Before=getty.target

[Service]
ExecStart=-/sbin/agetty -L --keep-baud 115200,57600,38400,9600 ttyS0 vt220
Type=idle
Restart=always
UtmpIdentifier=ttyS0
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/ttyS0
TTYReset=yes
TTYVHangup=yes
IgnoreSIGPIPE=no
SendSIGHUP=yes

[Install]
WantedBy=getty.target
`;

// an Ubuntu release's own pocket is what it shipped with (noble: kernel 6.8.0-31, April 2024); the fixes are in -updates and -security
const UBUNTU_MIRROR = (suite: string) => ['', '-updates', '-security'].map((pocket) => `deb http://archive.ubuntu.com/ubuntu ${suite}${pocket} main universe\n`).join('');

/** The recipe of `target` (e.g. `debian-12`), or InvalidField naming the choices. */
export async function distroRecipe(target: string, opts: { desktop?: boolean } = {}, host = hostRelease()): Promise<DistroRecipe> {
  const desktop = opts.desktop === true;
  let distro: 'debian' | 'ubuntu';
  let suite: string;
  if (DEBIAN_SUITES[target]) {
    distro = 'debian';
    suite = DEBIAN_SUITES[target];
  } else if (host.id === 'ubuntu' && target === `ubuntu-${host.versionId}` && host.codename) {
    distro = 'ubuntu';
    suite = host.codename;
  } else {
    throw new InvalidField('name', `no recipe for ${target}: choose ${distroTargets(host).join(', ')} (or --busybox)`);
  }
  const user = distro;
  // the cloud kernels are smaller and boot faster, but have no graphics drivers for a desktop
  const kernel = distro === 'debian' ? (desktop ? 'linux-image-amd64' : 'linux-image-cloud-amd64') : (desktop ? 'linux-image-generic' : 'linux-image-virtual');
  const packages = [
    kernel, 'initramfs-tools', 'systemd', 'systemd-sysv', 'systemd-resolved', 'udev', 'dbus', 'openssh-server',
    'cloud-init', 'cloud-guest-utils', 'e2fsprogs', 'sudo', 'ca-certificates', 'iproute2', 'iputils-ping', 'less', 'nano',
    // polkitd: logind asks it whether the user at the screen may shut down (XFCE's Shut Down); without it only root may
    ...(desktop ? ['xfce4', 'xfce4-terminal', 'lightdm', 'xserver-xorg-core', 'xserver-xorg-input-libinput', 'dbus-x11', 'at-spi2-core', 'fonts-dejavu-core', 'polkitd'] : []),
  ].sort();
  const files: Record<string, string> = {
    '/etc/cloud/cloud.cfg.d/90-skyhost.cfg': CLOUD_CFG(user),
    '/etc/systemd/network/80-skyhost-dhcp.network': NETWORK,
    '/etc/fstab': FSTAB,
    '/etc/hostname': `${distro}\n`,
    '/etc/systemd/system/skyhost-ssh-keys.service': SSH_KEYS_UNIT,
    '/etc/systemd/system/skyhost-serial-login.service': SERIAL_LOGIN_UNIT,
    '/etc/systemd/system/systemd-networkd-wait-online.service.d/skyhost.conf': WAIT_ONLINE,
  };
  if (desktop) {
    // the desktop starts on the VNC display for the image's user, who has no password to type
    files['/etc/lightdm/lightdm.conf.d/50-skyhost.conf'] = `[Seat:*]\nautologin-user=${user}\nautologin-session=xfce\n`;
    // the user exists once cloud-init has made it
    files['/etc/systemd/system/lightdm.service.d/skyhost.conf'] = '[Unit]\nAfter=cloud-init.service\n';
  }
  const enable = ['systemd-networkd.service', 'systemd-resolved.service', 'skyhost-serial-login.service', 'skyhost-ssh-keys.service', ...(desktop ? ['lightdm.service'] : [])];
  const mask = ['serial-getty@ttyS0.service', 'apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_reap.service', 'e2scrub_all.timer'];
  const own = distro === host.id && suite === host.codename ? hostSources(distro, suite) : [];
  const mirrors = own.length > 0
    ? own
    : [{ name: 'default', text: distro === 'debian' ? `deb http://deb.debian.org/debian ${suite} main` : UBUNTU_MIRROR(suite) }];
  return {
    target, distro, suite, desktop, packages, files, enable, mask, mirrors,
    aptOptions: await hostAptOptions(),
    sizeGiB: desktop ? 6 : 2,
    // console=tty0 first for the desktop: the kernel's messages show on the screen too, the last one is /dev/console
    cmdline: `root=/dev/vda rw ${desktop ? 'console=tty0 ' : ''}console=ttyS0`,
    minMemoryMiB: desktop ? 1024 : 384,
    user,
  };
}

/** The cache key of a recipe: changes with anything that changes the result. */
export function recipeKey(r: DistroRecipe): string {
  // the name, kernel command line, memory and user go into the manifest, not into the files
  const { target: _t, cmdline: _c, minMemoryMiB: _m, user: _u, ...decides } = r;
  const text = JSON.stringify({ v: RECIPE_VERSION, ...decides, mirrors: r.mirrors.map((m) => m.text) });
  return `${r.distro}-${r.suite}${r.desktop ? '-desktop' : ''}-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
}

/** `${XDG_CACHE_HOME:-~/.cache}/skyhost`: outside any checkout, so a fresh clone on this machine reuses it. */
export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'skyhost');
}

export interface BuiltImage {
  dir: string;
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Whether the result came from the cache. */
  cached: boolean;
  seconds: number;
}

export interface BuildOptions {
  cacheDir?: string;
  /** Builds again even when the cache has the result (the package cache is still used). */
  rebuild?: boolean;
  /** A stage begins, or says what it is doing. */
  onProgress?: (stage: BuildStage, detail: string) => void;
  /** A line of mmdebstrap's output (for a log). */
  onLine?: (line: string) => void;
  /** Aborting stops the build: its children get SIGTERM (then SIGKILL), its work folder goes; rejects with a 499 `cancelled`. */
  signal?: AbortSignal;
  /** Where the sweep of abandoned work folders says what it removed. */
  log?: Logger;
  /**
   * The archive's key, for building another distribution's release than this host's (the Ubuntu bench on a
   * Debian PC): apt as run by mmdebstrap trusts it, the image does not keep it (its own keyring package does).
   * Not needed on the host's own release: its apt already trusts its archive.
   */
  keyring?: string;
}

/** Who is building in a `.build-*` work folder (its `owner` file): a process is known by its pid, boot and start time. */
export interface BuildOwner {
  pid: number;
  bootId: string;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22): a reused pid has another. */
  startTicks: number;
}

/** A work folder without an owner file (a build of an older version, or one killed before writing it) counts as abandoned after this. */
export const OWNERLESS_ABANDONED_MS = 24 * 3600_000;

function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/** The start time of process `pid` (clock ticks since boot), or undefined when there is no such process. */
function startTicks(pid: number | 'self'): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // no such process
  }
  // the command name (field 2) is in parentheses and may hold spaces: count fields after its last ')'
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

/** This process as the owner of a work folder. */
export function thisBuildOwner(): BuildOwner {
  return { pid: process.pid, bootId: bootId(), startTicks: startTicks('self') ?? 0 };
}

/** Whether the process that wrote `owner` still runs (same boot, same pid, same start time). */
export function ownerAlive(owner: BuildOwner): boolean {
  return owner.bootId === bootId() && startTicks(owner.pid) === owner.startTicks;
}

export interface WorkFolder {
  name: string;
  /** The owner file's content; undefined when there is none or it cannot be read. */
  owner?: BuildOwner;
  mtimeMs: number;
}

/** The `.build-*` work folders among `folders` that no running build owns: the owner is gone, or ownerless and older than a day. */
export function abandonedWorkFolders(folders: WorkFolder[], isAlive: (o: BuildOwner) => boolean, now = Date.now()): string[] {
  return folders
    .filter((f) => f.name.startsWith('.build-'))
    .filter((f) => (f.owner ? !isAlive(f.owner) : now - f.mtimeMs > OWNERLESS_ABANDONED_MS))
    .map((f) => f.name);
}

function readOwner(dir: string): BuildOwner | undefined {
  try {
    const o = JSON.parse(readFileSync(path.join(dir, 'owner'), 'utf8')) as Partial<BuildOwner>;
    if (typeof o.pid === 'number' && typeof o.bootId === 'string' && typeof o.startTicks === 'number') return o as BuildOwner;
  } catch {
    // no owner file, or a half-written one: the folder's age decides
  }
  return undefined;
}

/** Removes what builds killed hard (SIGKILL, power cut) left in `templatesDir`; returns the names removed. */
export async function sweepAbandonedBuilds(templatesDir: string, opts: { log?: Logger; isAlive?: (o: BuildOwner) => boolean; now?: number } = {}): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(templatesDir)).filter((n) => n.startsWith('.build-'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no build has run here yet
    throw err;
  }
  const folders: WorkFolder[] = [];
  for (const name of names) {
    const dir = path.join(templatesDir, name);
    const st = await stat(dir).catch(() => undefined); // removed by its own build meanwhile: nothing to sweep
    if (!st?.isDirectory()) continue;
    const owner = readOwner(dir);
    folders.push({ name, mtimeMs: st.mtimeMs, ...(owner ? { owner } : {}) });
  }
  const gone = abandonedWorkFolders(folders, opts.isAlive ?? ownerAlive, opts.now);
  for (const name of gone) {
    await rm(path.join(templatesDir, name), { recursive: true, force: true });
    opts.log?.info(`removed the work folder of a build that was killed: ${name}`, { dir: templatesDir });
  }
  return gone;
}

/** Builds (or takes from the cache) the kernel, initrd and qcow2 disk of a recipe. Needs root. */
export async function buildDistroImage(r: DistroRecipe, opts: BuildOptions = {}): Promise<BuiltImage> {
  const t0 = performance.now();
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const dir = path.join(cacheDir, 'templates', recipeKey(r));
  const result = (cached: boolean): BuiltImage => ({
    dir, disk: path.join(dir, 'disk.qcow2'), kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'),
    cmdline: r.cmdline, cached, seconds: Math.round((performance.now() - t0) / 100) / 10,
  });
  if (!opts.rebuild && existsSync(path.join(dir, 'recipe.json'))) return result(true);
  if (process.getuid?.() !== 0) throw new Unavailable('building a Debian/Ubuntu template needs root (the image keeps its files\' owners): run it with sudo');
  for (const tool of ['mmdebstrap', 'mkfs.ext4', 'qemu-img', 'tar']) await requireTool(tool);
  const { signal } = opts;
  const stopped = () => new SkyError(499, 'cancelled', 'the build was stopped');
  // each child in a group of its own: a stop ends it and what it started (SIGTERM, SIGKILL 3 s later), and waits for them
  const step = (command: string, args: string[], timeout: number, onLine: (line: string) => void = () => {}, env?: Record<string, string>) => {
    if (signal?.aborted) throw stopped();
    return runStreaming(command, args, { timeout, onLine, processGroup: true, ...(signal ? { signal } : {}), ...(env ? { env } : {}) });
  };

  const progress = opts.onProgress ?? (() => {});
  const packageCache = path.join(cacheDir, 'apt', `${r.distro}-${r.suite}`);
  await mkdir(packageCache, { recursive: true });
  await mkdir(path.dirname(dir), { recursive: true });
  await sweepAbandonedBuilds(path.dirname(dir), opts.log ? { log: opts.log } : {});
  const work = await mkdtemp(path.join(path.dirname(dir), `.build-${recipeKey(r)}-`));
  try {
    // who builds here: the next build removes the folder if this process dies without doing so
    await writeFile(path.join(work, 'owner'), JSON.stringify(thisBuildOwner()) + '\n');
    // mmdebstrap's temporary folders (its root, gpg home) go into the work folder, and with it
    const tmp = path.join(work, 'tmp');
    await mkdir(tmp);
    const stage = path.join(work, 'stage');
    for (const [file, text] of Object.entries(r.files)) {
      await mkdir(path.join(stage, path.dirname(file)), { recursive: true });
      await writeFile(path.join(stage, file), text, { mode: 0o644 });
    }
    const mirrorArgs: string[] = [];
    for (const [i, m] of r.mirrors.entries()) {
      const f = path.join(work, `mirror-${i}${m.text.includes('Types:') ? '.sources' : '.list'}`);
      await writeFile(f, m.text);
      mirrorArgs.push(f);
    }

    progress('packages', `mmdebstrap ${r.suite}: ${r.packages.length} packages and their dependencies`);
    const tarball = path.join(work, 'root.tar');
    const args = [
      '--mode=unshare', '--variant=apt', '--format=tar',
      `--include=${r.packages.join(',')}`,
      ...r.aptOptions.map((o) => `--aptopt=${o}`),
      ...(r.distro === 'ubuntu' ? ['--components=main,universe'] : []),
      ...(opts.keyring ? [`--keyring=${opts.keyring}`] : []),
      // downloaded packages are kept between builds: a second build downloads nothing
      '--skip=essential/unlink',
      '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
      `--setup-hook=sync-in ${packageCache} /var/cache/apt/archives/`,
      `--customize-hook=sync-out /var/cache/apt/archives ${packageCache}`,
      `--customize-hook=sync-in ${stage} /`,
      `--customize-hook=chroot "$1" systemctl enable ${r.enable.join(' ')}`,
      `--customize-hook=chroot "$1" systemctl mask ${r.mask.join(' ')}`,
      // each VM gets its own machine id and SSH host keys on first boot; no apt lists, logs or caches
      '--customize-hook=: > "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id "$1"/etc/ssh/ssh_host_*; ' +
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/lib/cloud/* "$1"/tmp/* "$1"/var/tmp/*',
      r.suite, tarball, ...mirrorArgs,
    ];
    await step('mmdebstrap', args, 3_600_000, (line) => {
      opts.onLine?.(line);
      const m = /^I: (.*)/.exec(line);
      if (m) progress('packages', m[1]!.slice(0, 100));
    }, { TMPDIR: tmp });

    progress('filesystem', `ext4 file system of ${r.sizeGiB} GiB`);
    const tree = path.join(work, 'root');
    await mkdir(tree);
    // unpacked as root so that owners, modes and device nodes stay what the packages made them
    await step('tar', ['--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', tarball, '-C', tree], 600_000);
    await rm(tarball);
    const boot = await readdir(path.join(tree, 'boot'));
    const vmlinuz = boot.filter((f) => f.startsWith('vmlinuz-')).sort().at(-1);
    const initrd = boot.filter((f) => f.startsWith('initrd.img-')).sort().at(-1);
    if (!vmlinuz || !initrd) throw new Unavailable(`the image has no kernel and initrd in /boot (found: ${boot.join(', ') || 'nothing'})`);
    const out = path.join(work, 'out');
    await mkdir(out);
    await rename(path.join(tree, 'boot', vmlinuz), path.join(out, 'vmlinuz'));
    await rename(path.join(tree, 'boot', initrd), path.join(out, 'initrd.img'));
    const raw = path.join(work, 'disk.raw');
    await step('mkfs.ext4', ['-q', '-F', '-L', 'skyroot', '-d', tree, raw, `${r.sizeGiB}G`], 1_200_000);
    await rm(tree, { recursive: true, force: true });

    progress('image', 'compressed qcow2');
    await step('qemu-img', ['convert', '-c', '-O', 'qcow2', raw, path.join(out, 'disk.qcow2')], 1_800_000);
    await rm(raw);
    const sizes = { disk: (await stat(path.join(out, 'disk.qcow2'))).size, kernel: vmlinuz, initrd };
    await writeFile(path.join(out, 'recipe.json'), JSON.stringify({ key: recipeKey(r), builtAt: new Date().toISOString(), ...sizes, recipe: r }, null, 2) + '\n');
    if (signal?.aborted) throw stopped();
    await rm(dir, { recursive: true, force: true });
    await rename(out, dir);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return result(false);
}

async function requireTool(tool: string): Promise<void> {
  const found = ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(path.join(d, tool)));
  if (!found) throw new Unavailable(`${tool} is not installed (run: skyhost host setup)`, { command: tool }, 'missing_tool');
}

/** What a built image says about itself (recipe.json), or undefined. */
export async function builtRecipe(dir: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, 'recipe.json'), 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined; // not built (yet)
  }
}
