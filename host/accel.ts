// Whether QEMU runs on this machine and how: KVM where a real guest boots under it, else TCG (software
// emulation), else none. Decided by booting this machine's own kernel with no root disk and watching
// the serial line, cached for the current boot. Used by host setup (its summary) and by the agent.
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SkyError } from '../base/errors.ts';
import { run, runStreaming } from '../base/exec.ts';

export type Accel = 'kvm' | 'tcg' | 'none';

export interface AccelReport {
  accel: Accel;
  /** One line saying why, e.g. "KVM present but a test boot did not finish in 8 s". */
  reason: string;
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
