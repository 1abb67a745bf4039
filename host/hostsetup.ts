// `skyhost host setup`: the one idempotent way a machine gets what SkyHost needs. It installs the
// missing Debian/Ubuntu packages with apt, starts libvirtd and virtlogd (with -d where there is no
// systemd), and finds out whether hardware acceleration really works by booting a tiny guest.
// `npm start` and `npm test` call it too, so a fresh machine needs nothing done by hand.
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SkyError, Unavailable } from '../base/errors.ts';
import { run, runStreaming } from '../base/exec.ts';
import type { Logger } from '../base/log.ts';
import { HOST_PACKAGES } from '../base/packages.ts';

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
] as const;

export type Accel = 'kvm' | 'tcg' | 'none';

export interface AccelReport {
  accel: Accel;
  /** One line saying why, e.g. "KVM present but a test boot did not finish in 8 s". */
  reason: string;
}

/** Packages whose dpkg status is not "install ok installed", from `dpkg-query -W -f '${Package} ${Status}\n'`. */
export function missingPackages(wanted: readonly string[], dpkgOutput: string): string[] {
  const installed = new Set<string>();
  for (const line of dpkgOutput.split('\n')) {
    const m = /^(\S+?)(?::\S+)? install ok installed$/.exec(line.trim());
    if (m) installed.add(m[1]!);
  }
  return wanted.filter((p) => !installed.has(p));
}

/**
 * A 512-byte boot sector that prints ACCEL_MARKER on the first serial port and halts:
 * xor ax,ax; mov ds,ax; mov dx,0x3f8; mov si,msg; loop: lodsb; test al,al; jz done; out dx,al;
 * jmp loop; done: hlt; jmp done; msg: db MARKER,0
 */
export const ACCEL_MARKER = 'SKYHOST-BOOT-OK';
export function probeBootSector(): Buffer {
  const code = [0x31, 0xc0, 0x8e, 0xd8, 0xba, 0xf8, 0x03, 0xbe, 0x15, 0x7c, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector, 0);
  Buffer.from(ACCEL_MARKER + '\n\0', 'latin1').copy(sector, code.length);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** Decides the hypervisor from the two probe boots (kvm is tried only where /dev/kvm is there). */
export function decideAccel(p: {
  qemuPresent: boolean;
  kvmDevice: boolean;
  kvmBoot?: 'ok' | 'timeout' | 'error';
  tcgBoot?: 'ok' | 'timeout' | 'error';
}): AccelReport {
  if (!p.qemuPresent) return { accel: 'none', reason: 'qemu-system-x86_64 is not installed' };
  if (p.kvmDevice && p.kvmBoot === 'ok') return { accel: 'kvm', reason: 'a test boot under KVM finished' };
  const kvmWhy = !p.kvmDevice
    ? 'no /dev/kvm'
    : p.kvmBoot === 'timeout'
      ? `/dev/kvm present but a test boot under KVM did not finish in ${KVM_PROBE_MS / 1000} s`
      : '/dev/kvm present but QEMU could not start a guest with it';
  if (p.tcgBoot === 'ok') return { accel: 'tcg', reason: `${kvmWhy}: using TCG (software emulation)` };
  return { accel: 'none', reason: `${kvmWhy}, and a TCG test boot failed too` };
}

const KVM_PROBE_MS = 8000;
const TCG_PROBE_MS = 30000;

/** The kernel the probe boots: this machine's own, newest first (Ubuntu and Debian hosts have one). */
export function findProbeKernel(bootDir = '/boot'): string | undefined {
  try {
    const kernels = readdirSync(bootDir).filter((f) => /^vmlinuz-/.test(f)).sort().reverse();
    for (const k of kernels) {
      const file = path.join(bootDir, k);
      try {
        accessSync(file, constants.R_OK);
        return file;
      } catch {
        // unreadable as this user: try the next
      }
    }
  } catch {
    // no /boot
  }
  return undefined;
}

/** What a probe boot must print: a kernel that reached its root-mount panic ran its whole early boot. */
export const KERNEL_MARKER = 'Kernel panic';

/**
 * Boots a tiny guest under one accelerator and watches the serial line. With a kernel it boots that
 * kernel with no root disk, which ends in a panic after the whole early boot (about 4 s under TCG);
 * that catches the KVM of these machines, where real mode runs but a Linux guest hangs. Without one
 * it boots the probe sector (real mode only: weaker).
 */
export async function probeBoot(accel: 'kvm' | 'tcg', timeoutMs: number, kernel?: string): Promise<'ok' | 'timeout' | 'error'> {
  const dir = mkdtempIn(os.tmpdir(), 'skyhost-probe-');
  const disk = path.join(dir, 'boot.img');
  writeFileSync(disk, probeBootSector());
  const guest = kernel
    ? ['-kernel', kernel, '-append', 'console=ttyS0 quiet panic=-1']
    : ['-drive', `file=${disk},format=raw,if=ide`];
  const marker = kernel ? KERNEL_MARKER : ACCEL_MARKER;
  const args = ['-accel', accel, '-machine', 'pc', '-m', '128', '-nodefaults', '-display', 'none', '-monitor', 'none',
    '-serial', 'stdio', ...guest, '-no-reboot'];
  try {
    const r = await runStreaming('qemu-system-x86_64', args, {
      timeout: 0, signal: AbortSignal.timeout(timeoutMs),
      onLine: (line, stream) => (stream === 'stdout' && line.includes(marker) ? 'stop' : undefined),
    });
    return r.stopped ? 'ok' : 'error';
  } catch (err) {
    // The probe's answer, not a failure of host setup: the caller falls back to TCG or to none.
    return err instanceof SkyError && err.code === 'cancelled' ? 'timeout' : 'error';
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function mkdtempIn(base: string, prefix: string): string {
  const dir = path.join(base, prefix + process.pid + '-' + Math.random().toString(36).slice(2, 8));
  mkdirSync(dir, { recursive: true });
  return dir;
}

const ACCEL_CACHE = '/run/skyhost/accel-v2.json';

/**
 * Whether KVM really works here, else TCG, else none. The answer is cached for this boot of the
 * machine (keyed by the kernel's boot id). SKYHOST_ACCEL=kvm|tcg|none overrides it.
 */
export async function detectAccel(opts: { fresh?: boolean } = {}): Promise<AccelReport> {
  const forced = process.env.SKYHOST_ACCEL;
  if (forced === 'kvm' || forced === 'tcg' || forced === 'none') {
    return { accel: forced, reason: 'set by SKYHOST_ACCEL' };
  }
  const bootId = readBootId();
  if (!opts.fresh && existsSync(ACCEL_CACHE)) {
    try {
      const cached = JSON.parse(readFileSync(ACCEL_CACHE, 'utf8')) as AccelReport & { bootId: string };
      if (cached.bootId === bootId) return { accel: cached.accel, reason: cached.reason };
    } catch {
      // a torn cache file is probed again
    }
  }
  // A QEMU that is missing or does not run means acceleration 'none', and the report says so.
  const qemuPresent = await run('qemu-system-x86_64', ['--version']).then(() => true, () => false);
  const kvmDevice = existsSync('/dev/kvm');
  const kernel = findProbeKernel();
  const kvmBoot = qemuPresent && kvmDevice ? await probeBoot('kvm', KVM_PROBE_MS, kernel) : undefined;
  const tcgBoot = qemuPresent && kvmBoot !== 'ok' ? await probeBoot('tcg', TCG_PROBE_MS, kernel) : undefined;
  const decided = decideAccel({ qemuPresent, kvmDevice, ...(kvmBoot ? { kvmBoot } : {}), ...(tcgBoot ? { tcgBoot } : {}) });
  const report = kernel || !qemuPresent ? decided : { ...decided, reason: `${decided.reason} (real-mode probe only: no kernel in /boot)` };
  if (qemuPresent) {
    try {
      mkdirSync(path.dirname(ACCEL_CACHE), { recursive: true });
      writeFileSync(ACCEL_CACHE, JSON.stringify({ ...report, bootId }));
    } catch {
      // not root: probe again next time
    }
  }
  return report;
}

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown'; // no /proc: a fallback only (hosts run Linux), where the cache cannot tell boots apart
  }
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
