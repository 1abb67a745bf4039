// `skyhost iso build` (docs/design.md#cli): remaster an Ubuntu live-server ISO into a SkyHost installer.
import { readFileSync } from 'node:fs';
import type { Command } from '../base/cli.ts';
import { UsageError } from '../base/cli.ts';
import { InvalidField } from '../base/errors.ts';
import { ROLES, type Role } from '../autoinstall/options.ts';
import type { BuildProgress } from './remaster.ts';

const STEP_WORDS: Record<BuildProgress['step'], string> = {
  check: 'checking', inspect: 'reading the Ubuntu ISO', prepare: 'preparing', write: 'writing', done: 'done',
};

/** A progress line on a terminal (redrawn in place), or one line per step elsewhere. */
export function progressPrinter(stream: NodeJS.WriteStream = process.stderr): (p: BuildProgress) => void {
  let lastStep = '';
  let lastPct = -1;
  return (p) => {
    const pct = Math.floor(p.fraction * 100);
    if (stream.isTTY) {
      if (pct === lastPct && p.step === lastStep) return;
      const bar = '#'.repeat(Math.floor(pct / 4)).padEnd(25, '.');
      stream.write(`\r[${bar}] ${String(pct).padStart(3)}% ${STEP_WORDS[p.step]}\x1b[K${p.step === 'done' ? '\n' : ''}`);
    } else if (p.step !== lastStep || pct >= lastPct + 10) {
      stream.write(`${String(pct).padStart(3)}% ${STEP_WORDS[p.step]}\n`);
    } else return;
    lastStep = p.step;
    lastPct = pct;
  };
}

function readSshKeys(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new InvalidField('ssh-key', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

export const isoBuildCommand: Command = {
  name: 'iso build',
  summary: 'remaster an Ubuntu 22.04/24.04 live-server ISO into an unattended SkyHost installer',
  usage: '--role agent|controller --ubuntu-iso IN --out OUT',
  description:
    'The installer ERASES THE LARGEST DISK of every PC it boots, without asking, installs Ubuntu, the\n' +
    'skyhost executable and its service, and powers off. Each PC names itself PREFIX-XXXXXX (MAC suffix).',
  flags: {
    role: { type: 'string', arg: 'ROLE', help: 'agent (a host that runs VMs) or controller' },
    'ubuntu-iso': { type: 'string', arg: 'IN', help: 'the official Ubuntu live-server ISO' },
    out: { type: 'string', arg: 'OUT', help: 'where to write the installer ISO' },
    'controller-url': { type: 'string', arg: 'URL', help: 'the controller (default: found by mDNS)' },
    'join-token': { type: 'string', arg: 'T', help: 'join token from the controller\'s "Add a host" page' },
    'ssh-key': { type: 'string', arg: 'FILE', help: 'OpenSSH public key file(s) for the admin user', multiple: true },
    'hostname-prefix': { type: 'string', arg: 'P', help: 'PCs are named P-XXXXXX (default skyhost-host / skyhost-controller)' },
    'admin-user': { type: 'string', arg: 'NAME', help: 'the admin account (default skyhost)' },
    'password-hash': { type: 'string', arg: 'HASH', help: 'crypt hash of the admin password (openssl passwd -6)' },
    timezone: { type: 'string', arg: 'TZ', help: 'e.g. Europe/Paris (default Etc/UTC)' },
    keyboard: { type: 'string', arg: 'LAYOUT', help: 'XKB layout, e.g. fr (default us)' },
    locale: { type: 'string', arg: 'LOCALE', help: 'e.g. fr_FR.UTF-8 (default en_US.UTF-8)' },
    proxy: { type: 'string', arg: 'URL', help: 'the school\'s HTTP proxy for apt' },
    mirror: { type: 'string', arg: 'URL', help: 'an Ubuntu archive mirror' },
    binary: { type: 'string', arg: 'FILE', help: 'the skyhost executable to embed (default: this one)' },
  },
  async run(ctx) {
    const f = ctx.flags;
    const role = str(f.role);
    if (!role || !(ROLES as readonly string[]).includes(role)) throw new UsageError('iso build: --role must be agent or controller');
    const ubuntuIso = str(f['ubuntu-iso']);
    const out = str(f.out);
    if (!ubuntuIso) throw new UsageError('iso build: --ubuntu-iso IN is required');
    if (!out) throw new UsageError('iso build: --out OUT is required');
    const keyFiles = Array.isArray(f['ssh-key']) ? f['ssh-key'] : [];
    const optional = {
      controllerUrl: str(f['controller-url']),
      joinToken: str(f['join-token']),
      hostnamePrefix: str(f['hostname-prefix']),
      adminUser: str(f['admin-user']),
      adminPasswordHash: str(f['password-hash']),
      timezone: str(f.timezone),
      keyboardLayout: str(f.keyboard),
      locale: str(f.locale),
      proxy: str(f.proxy),
      mirror: str(f.mirror),
      binary: str(f.binary),
    };
    const { buildInstallerIso } = await import('./remaster.ts'); // xorriso and friends: only for this command
    const result = await buildInstallerIso(
      {
        role: role as Role,
        ubuntuIso,
        out,
        sshKeys: keyFiles.flatMap(readSshKeys),
        ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
      },
      progressPrinter(),
    );
    ctx.print(`${result.out}: SkyHost ${role} installer from Ubuntu ${result.release} (${(result.bytes / 1e6).toFixed(0)} MB, ${result.seconds.toFixed(1)} s)`);
    for (const w of result.warnings) ctx.print(w);
    return 0;
  },
};
