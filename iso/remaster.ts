// `buildInstallerIso`: an official Ubuntu 22.04/24.04 live-server ISO in, a SkyHost installer out.
//
//   IN ──inspect──▶ .disk/info, grub.cfg, md5sum.txt ──edit──▶ staging dir (small files)
//                                                                │
//   xorriso -indev IN -outdev OUT.tmp -map staged... -boot_image any replay ──rename──▶ OUT
//
// `-boot_image any replay` re-creates the input's boot records (BIOS El Torito, UEFI image, MBR/GPT,
// appended EFI partition) from the input itself, so no boot flag is hard-coded and point releases keep
// booting. The output is written beside OUT and renamed only when complete; any failure removes it.
import { constants, createReadStream, existsSync } from 'node:fs';
import { access, chmod, mkdtemp, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CommandFailed, InvalidField, SkyError, Unavailable } from '../base/errors.ts';
import { hasCommand, run, runStreaming } from '../base/exec.ts';
import { skyhostExecutable } from '../base/executable.ts';
import { ISO_BINARY_PATH, isoFiles } from '../autoinstall/files.ts';
import { installerWarnings, parseInstallerOptions, type InstallerOptionsInput, type Release } from '../autoinstall/options.ts';
import { addAutoinstallToGrub } from './grub.ts';
import { md5, md5File, updateMd5Sums } from './md5sums.ts';

export interface BuildIsoOptions extends Omit<InstallerOptionsInput, 'release'> {
  /** The official Ubuntu live-server ISO, e.g. `ubuntu-24.04.1-live-server-amd64.iso`. */
  ubuntuIso: string;
  /** Where the installer ISO goes; an existing file is replaced only when the new one is complete. */
  out: string;
  /** The `skyhost` executable to embed; default: this executable (SEA) or the checkout's dist/skyhost. */
  binary?: string;
  /** Cancels the build (e.g. the web installer's Cancel button): it rejects and leaves nothing at `out`. */
  signal?: AbortSignal;
}

export type BuildStep = 'check' | 'inspect' | 'prepare' | 'write' | 'done';

export interface BuildProgress {
  step: BuildStep;
  /** 0..1 over the whole build. */
  fraction: number;
}

export interface BuildIsoResult {
  out: string;
  seconds: number;
  bytes: number;
  /** The Ubuntu release found in the ISO's .disk/info. */
  release: Release;
  /** The volume id, kept from the input (e.g. `Ubuntu-Server 24.04.1 LTS amd64`). */
  volumeId: string;
  /** How many GRUB install entries now start the unattended install. */
  grubEntries: number;
  /** The ISO paths added or replaced. */
  files: string[];
  /** What the person must be told (the first: it wipes the disk of every PC it boots). */
  warnings: string[];
}

/** What inspectUbuntuIso() learns from an ISO without unpacking it. */
export interface UbuntuIsoInfo {
  release: Release;
  diskInfo: string;
  volumeId: string;
  grubCfg: string;
  loopbackCfg?: string;
  md5sums?: string;
}

/** Fractions of the whole build at which each step starts (writing dominates). */
const STEP_START: Record<BuildStep, number> = { check: 0, inspect: 0.02, prepare: 0.05, write: 0.08, done: 1 };

/**
 * Remasters `ubuntuIso` into a SkyHost installer at `out`.
 * @example await buildInstallerIso({ role: 'agent', ubuntuIso: 'ubuntu.iso', out: 'skyhost.iso', hostnamePrefix: 'lab' })
 */
export async function buildInstallerIso(
  opts: BuildIsoOptions,
  onProgress: (p: BuildProgress) => void = () => {},
): Promise<BuildIsoResult> {
  const started = performance.now();
  onProgress({ step: 'check', fraction: STEP_START.check });
  const { ubuntuIso, out, binary: binaryOpt, signal, ...installer } = opts;
  const checkCancelled = () => {
    if (signal?.aborted) throw new SkyError(499, 'cancelled', 'the ISO build was cancelled');
  };
  parseInstallerOptions({ ...installer }); // a bad option fails before any work
  if (!(await hasCommand('xorriso'))) {
    throw new Unavailable('xorriso is not installed: install it with "apt-get install xorriso" (or run skyhost host setup)', { command: 'xorriso' }, 'missing_tool');
  }
  const input = path.resolve(ubuntuIso);
  const output = path.resolve(out);
  await checkReadable(input);
  if (input === output) throw new InvalidField('out', 'must not be the input ISO');
  const binary = path.resolve(binaryOpt ?? skyhostExecutable());
  await checkReadable(binary, 'binary');
  const outDir = path.dirname(output);
  if (!existsSync(outDir)) throw new InvalidField('out', `folder ${outDir} does not exist`);
  // The input, the binary, and 4 MB for the small files and ISO directory records.
  await checkFreeSpace(outDir, (await stat(input)).size + (await stat(binary)).size + 4 * 1024 * 1024);
  // Hashing the binary (100+ MB) overlaps with reading the ISO.
  const binarySum = md5File(binary);
  binarySum.catch(() => {}); // awaited below; an early failure must not be an unhandled rejection

  checkCancelled();
  onProgress({ step: 'inspect', fraction: STEP_START.inspect });
  const info = await inspectUbuntuIso(input);
  const options = parseInstallerOptions({ ...installer, release: info.release });

  checkCancelled();
  onProgress({ step: 'prepare', fraction: STEP_START.prepare });
  const staging = await mkdtemp(path.join(os.tmpdir(), 'skyhost-iso-'));
  const tmpOut = path.join(outDir, `.${path.basename(output)}.${process.pid}.partial`);
  try {
    const staged = new Map<string, string>(); // ISO path -> local file
    const sums = new Map<string, string>();
    const stage = async (isoPath: string, content: string, mode = 0o644) => {
      const local = path.join(staging, isoPath.replace(/^\//, '').replaceAll('/', '__'));
      await writeFile(local, content, { mode });
      await chmod(local, mode);
      staged.set(isoPath, local);
      sums.set(isoPath, md5(content));
    };
    const grub = addAutoinstallToGrub(info.grubCfg);
    await stage('/boot/grub/grub.cfg', grub.text);
    if (info.loopbackCfg !== undefined) {
      await stage('/boot/grub/loopback.cfg', addAutoinstallToGrub(info.loopbackCfg, 'boot/grub/loopback.cfg').text);
    }
    for (const [isoPath, content] of isoFiles(options)) {
      await stage(isoPath, content, isoPath.endsWith('.sh') ? 0o755 : 0o644);
    }
    staged.set(ISO_BINARY_PATH, binary);
    sums.set(ISO_BINARY_PATH, await binarySum);
    if (info.md5sums !== undefined) await stage('/md5sum.txt', updateMd5Sums(info.md5sums, sums));

    checkCancelled();
    onProgress({ step: 'write', fraction: STEP_START.write });
    // stdio: so that paths under /dev (a USB stick, /dev/shm) are files, not optical drives.
    // -stdio_sync end: one fsync when complete (the default syncs every 16 MB, twice as slow here), so
    // the rename below publishes a durable file. -dvd_obs 64k: fewer, larger writes.
    const args = ['-stdio_sync', 'end', '-dvd_obs', '64k', '-indev', `stdio:${input}`, '-outdev', `stdio:${tmpOut}`];
    for (const [isoPath, local] of staged) args.push('-map', local, isoPath);
    args.push('-chmod', '0755', ISO_BINARY_PATH, '--');
    args.push('-boot_image', 'any', 'replay');
    await runXorrisoWrite(args, outDir, (f) => onProgress({ step: 'write', fraction: STEP_START.write + f * (1 - STEP_START.write) }), signal);
    checkCancelled();
    await rename(tmpOut, output);
    const bytes = (await stat(output)).size;
    onProgress({ step: 'done', fraction: 1 });
    return {
      out: output,
      seconds: (performance.now() - started) / 1000,
      bytes,
      release: info.release,
      volumeId: info.volumeId,
      grubEntries: grub.entries,
      files: [...staged.keys()],
      warnings: installerWarnings(options),
    };
  } catch (e) {
    await rm(tmpOut, { force: true });
    throw e;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function checkReadable(file: string, field = 'ubuntuIso'): Promise<void> {
  try {
    await access(file, constants.R_OK);
    const s = await stat(file);
    if (!s.isFile() && !s.isBlockDevice()) throw new InvalidField(field, `${file} is not a file`);
    // Read the first byte too: access() says yes to root even where a read would fail.
    await new Promise<void>((resolve, reject) => {
      const stream = createReadStream(file, { start: 0, end: 0 });
      stream.on('error', reject).on('data', () => {}).on('end', () => resolve());
    });
  } catch (e) {
    if (e instanceof SkyError) throw e;
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'does not exist' : err.code === 'EACCES' ? 'is not readable (permission denied)' : `cannot be read (${err.code ?? err.message})`;
    throw new InvalidField(field, `${file} ${why}`);
  }
}

async function checkFreeSpace(dir: string, needed: number): Promise<void> {
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  if (free < needed) throw diskFull(dir, needed, free);
}

function diskFull(dir: string, needed?: number, free?: number): SkyError {
  const mb = (n: number) => `${Math.ceil(n / 1e6)} MB`;
  const sizes = needed !== undefined && free !== undefined ? `: the ISO needs about ${mb(needed)}, ${mb(free)} free` : '';
  return new SkyError(507, 'disk_full', `not enough space in ${dir} for the installer ISO${sizes}`, { dir, needed, free });
}

/**
 * Reads .disk/info, the volume id, grub.cfg, loopback.cfg and md5sum.txt; throws a clear 422 when the
 * file is not an Ubuntu 22.04/24.04 live-server ISO.
 */
export async function inspectUbuntuIso(iso: string): Promise<UbuntuIsoInfo> {
  const notUbuntu = (why: string) => new InvalidField('ubuntuIso', `${iso} is not an Ubuntu live-server ISO: ${why}`);
  const damaged = () =>
    new InvalidField('ubuntuIso', `${iso} is truncated or damaged (an interrupted download?): download it again and check it against SHA256SUMS`);
  let listing: string;
  try {
    const r = await run('xorriso', ['-abort_on', 'FAILURE', '-indev', `stdio:${iso}`, '-pvd_info', '-find', '/', '-maxdepth', '3', '-type', 'f', '--'], { timeout: 120_000 });
    listing = r.stdout + '\n' + r.stderr;
  } catch (e) {
    if (e instanceof CommandFailed && /readable blocks|Read error/i.test(e.stderr)) throw damaged();
    if (e instanceof CommandFailed) throw notUbuntu('it is not an ISO 9660 image xorriso can read');
    throw e;
  }
  const files = new Set(listing.split('\n').map((l) => /^'(.*)'$/.exec(l.trim())?.[1]).filter((f): f is string => !!f));
  const volumeId = /^Volume Id\s*:\s*(.*)$/m.exec(listing)?.[1]?.trim() ?? '';
  if (files.size === 0) throw notUbuntu('it is not an ISO 9660 image (xorriso finds no files in it)');
  const blocks = Number(/^Media summary:\s*\d+ sessions?, (\d+) data blocks/m.exec(listing)?.[1] ?? 0);
  if ((await stat(iso)).size < blocks * 2048) throw damaged();
  for (const needed of ['/.disk/info', '/boot/grub/grub.cfg']) {
    if (!files.has(needed)) throw notUbuntu(`it has no ${needed}`);
  }
  if (![...files].some((f) => /^\/casper\/.*vmlinuz/.test(f))) throw notUbuntu('it has no /casper/vmlinuz');
  const wanted = ['/.disk/info', '/boot/grub/grub.cfg', '/boot/grub/loopback.cfg', '/md5sum.txt'].filter((f) => files.has(f));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'skyhost-inspect-'));
  try {
    await run('xorriso', ['-abort_on', 'FAILURE', '-osirrox', 'on', '-indev', `stdio:${iso}`, '-extract_l', '/', dir, ...wanted, '--'], { timeout: 120_000 });
    const read = (f: string) => readFile(path.join(dir, f), 'utf8');
    const diskInfo = (await read('.disk/info')).trim();
    const m = /^Ubuntu-Server (\d\d\.\d\d)/.exec(diskInfo);
    if (!m) throw notUbuntu(`.disk/info says "${diskInfo.slice(0, 80)}" (a server ISO says "Ubuntu-Server 24.04...")`);
    const release = m[1] as string;
    if (release !== '22.04' && release !== '24.04') {
      throw new InvalidField('ubuntuIso', `${iso} is Ubuntu Server ${release}: SkyHost supports the 22.04 and 24.04 LTS live-server ISOs`);
    }
    return {
      release,
      diskInfo,
      volumeId,
      grubCfg: await read('boot/grub/grub.cfg'),
      ...(files.has('/boot/grub/loopback.cfg') ? { loopbackCfg: await read('boot/grub/loopback.cfg') } : {}),
      ...(files.has('/md5sum.txt') ? { md5sums: await read('md5sum.txt') } : {}),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The fraction written from an xorriso pacifier line: `xorriso : UPDATE : Writing:  600384s   45.4%   fifo  74% ...`. */
export function xorrisoWriteFraction(line: string): number | undefined {
  const m = /Writing:\s+\d+s\s+([\d.]+)%/.exec(line) ?? /([\d.]+)% done/.exec(line);
  return m ? Math.min(1, Number(m[1]) / 100) : undefined;
}

/** Runs the writing xorriso (long), following its UPDATE lines as progress. */
async function runXorrisoWrite(args: string[], outDir: string, onFraction: (f: number) => void, signal?: AbortSignal): Promise<void> {
  const full = ['-abort_on', 'FAILURE', '-report_about', 'UPDATE', ...args];
  try {
    await runStreaming('xorriso', full, {
      timeout: 0, ...(signal ? { signal } : {}),
      onLine: (line, stream) => {
        const f = stream === 'stderr' ? xorrisoWriteFraction(line) : undefined;
        if (f !== undefined) onFraction(f);
      },
    });
  } catch (e) {
    if (e instanceof SkyError && e.code === 'cancelled') throw new SkyError(499, 'cancelled', 'the ISO build was cancelled');
    if (e instanceof CommandFailed) throw xorrisoWriteError(e.stderr, outDir, full, e.exitCode);
    throw e;
  }
}

/** The error for a failed writing xorriso: disk_full when it ran out of room, else CommandFailed. */
export function xorrisoWriteError(stderr: string, outDir: string, args: string[] = [], exitCode?: number): SkyError {
  if (/No space left on device|ENOSPC|exceeds free space on media|Write error/i.test(stderr)) return diskFull(outDir);
  return new CommandFailed('xorriso', args, exitCode, stderr);
}
