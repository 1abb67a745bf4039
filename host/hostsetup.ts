// `skyhost host setup`: the one idempotent way a machine gets what SkyHost needs. It installs the
// missing Debian/Ubuntu packages with apt, starts libvirtd and virtlogd (with -d where there is no
// systemd), and finds out whether hardware acceleration really works by booting a tiny guest.
// `npm start` and `npm test` call it too, so a fresh machine needs nothing done by hand.
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { Unavailable } from '../base/errors.ts';
import { run } from '../base/exec.ts';
import type { Logger } from '../base/log.ts';
import { HOST_PACKAGES } from '../base/packages.ts';
import { detectAccel, type AccelReport } from './accel.ts';

export { HOST_PACKAGES };

/** What the test suite needs on top: ISO tools, firmware, mDNS peers, a browser, a guest kernel. */
export const TEST_PACKAGES = [
  'grub-pc-bin',
  'grub-efi-amd64-bin',
  'grub-common',
  'mtools',
  'dosfstools',
  'ovmf',
  'avahi-daemon',
  'avahi-utils',
  'dbus',
  'chromium',
  'busybox-static',
  'linux-image-amd64',
  'cpio',
  'iproute2',
  'wrk',
  'openssh-client', // the debian-12 template's test logs in with a real ssh
] as const;

/** Packages whose dpkg status is not "install ok installed", from `dpkg-query -W -f '${Package} ${Status}\n'`. */
export function missingPackages(wanted: readonly string[], dpkgOutput: string): string[] {
  const installed = new Set<string>();
  for (const line of dpkgOutput.split('\n')) {
    const m = /^(\S+?)(?::\S+)? install ok installed$/.exec(line.trim());
    if (m) installed.add(m[1]!);
  }
  return wanted.filter((p) => !installed.has(p));
}

function hasSystemd(): boolean {
  return existsSync('/run/systemd/system');
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

const DAEMONS = [
  { name: 'virtlogd', socket: '/run/libvirt/virtlogd-sock', unit: 'virtlogd' },
  { name: 'libvirtd', socket: '/run/libvirt/libvirt-sock', unit: 'libvirtd' },
] as const;

/** Starts virtlogd and libvirtd unless they answer on their sockets; returns the ones it started. */
export async function ensureDaemons(log?: Logger): Promise<string[]> {
  const started: string[] = [];
  for (const d of DAEMONS) {
    if (await socketAnswers(d.socket)) continue;
    if (hasSystemd()) {
      await run('systemctl', ['enable', '--now', d.unit], { timeout: 60_000 });
    } else {
      await run(d.name, ['-d'], { timeout: 30_000 });
    }
    for (let i = 0; i < 50 && !(await socketAnswers(d.socket)); i++) await sleep(100);
    if (!(await socketAnswers(d.socket))) {
      throw new Unavailable(`${d.name} was started but does not answer on ${d.socket}`);
    }
    log?.debug(`started ${d.name}`);
    started.push(d.name);
  }
  return started;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface SetupResult {
  installed: string[];
  started: string[];
  accel: AccelReport;
}

/** Installs what is missing, starts the daemons, probes acceleration. Safe to run again and again. */
export async function hostSetup(opts: { withTestTools?: boolean; log?: Logger } = {}): Promise<SetupResult> {
  const wanted = [...HOST_PACKAGES, ...(opts.withTestTools ? TEST_PACKAGES : [])];
  const query = await run('dpkg-query', ['-W', '-f', '${Package} ${Status}\\n', ...wanted], { okCodes: [1] });
  const missing = missingPackages(wanted, query.stdout);
  if (missing.length > 0) {
    if (process.getuid?.() !== 0) {
      throw new Unavailable(`missing packages: ${missing.join(' ')}; run skyhost host setup as root (sudo)`);
    }
    opts.log?.info(`installing ${missing.join(' ')}`);
    const env = { DEBIAN_FRONTEND: 'noninteractive' };
    await run('apt-get', ['update', '-qq'], { timeout: 600_000, env });
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { timeout: 1_800_000, env });
  }
  const started = await ensureDaemons(opts.log);
  const accel = await detectAccel();
  return { installed: missing, started, accel };
}

/** The one line `skyhost host setup` prints. */
export function describeSetup(r: SetupResult, packageCount: number): string {
  const pk = r.installed.length > 0 ? `installed ${r.installed.join(', ')}` : `all ${packageCount} packages present`;
  const dm = r.started.length > 0 ? `started ${r.started.join(' and ')}` : 'libvirtd and virtlogd running';
  const nothing = r.installed.length === 0 && r.started.length === 0 ? ': nothing to do' : '';
  return `host setup${nothing}: ${pk}, ${dm}, acceleration ${r.accel.accel} (${r.accel.reason})`;
}
