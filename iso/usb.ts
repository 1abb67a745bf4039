// Finding drives and writing an installer image to one of them: the facts come from `lsblk` and
// `findmnt`, the decisions from the pure guards in usb-guards.ts, and the write itself opens the
// device with O_EXCL (the kernel refuses while anything has it mounted), copies in aligned chunks
// with progress, fsyncs, drops the device's cache and reads everything back to compare sha256s.
import { createHash } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { run } from '../base/exec.ts';
import { Conflict, Forbidden, InvalidField, NotFound, SkyError } from '../base/errors.ts';
import { checkDrive, describeDrive, formatBytes, hasErrors, parseLsblk, type Drive, type Finding } from './usb-guards.ts';

export const LSBLK_COLUMNS = 'NAME,PATH,SIZE,TYPE,TRAN,RM,HOTPLUG,RO,MODEL,SERIAL,MOUNTPOINTS,PKNAME';

/** Every block device lsblk knows: whole drives and their partitions, flattened. */
export async function allBlockDevices(): Promise<Drive[]> {
  const { stdout } = await run('lsblk', ['-J', '-b', '-o', LSBLK_COLUMNS], { timeout: 15_000 });
  return parseLsblk(stdout);
}

/** Whole drives a user could write to (loop devices too when `allowLoop`), each with its findings. */
export async function listDrives(opts: { allowLoop?: boolean; image?: string; imageSize?: number } = {}): Promise<DriveChoice[]> {
  const drives = await allBlockDevices();
  const imageMountpoint = opts.image ? await mountpointOf(opts.image) : undefined;
  return drives
    .filter((d) => d.type === 'disk' || (opts.allowLoop && d.type === 'loop' && d.size > 0))
    .filter((d) => d.size > 0 && !/^(zram|ram)\d/.test(d.name))
    .map((drive) => ({
      drive,
      findings: checkDrive(drive, {
        imageSize: opts.imageSize ?? 0,
        ...(imageMountpoint ? { imageMountpoint } : {}),
        ...(opts.allowLoop ? { allowLoop: true } : {}),
      }),
    }));
}

export interface DriveChoice {
  drive: Drive;
  findings: Finding[];
}

/** The mountpoint of the filesystem that holds `file` (for the "image is on this drive" guard). */
export async function mountpointOf(file: string): Promise<string | undefined> {
  const r = await run('findmnt', ['-n', '-o', 'TARGET', '--target', file], { timeout: 10_000, okCodes: [1] });
  return r.stdout.trim().split('\n')[0] || undefined;
}

/** Looks a device path up (a partition too, so that the guards can refuse it by name). */
export async function findDrive(device: string): Promise<Drive> {
  const real = await fsp.realpath(device).catch(() => {
    throw new NotFound(`drive ${device}`);
  });
  const drive = (await allBlockDevices()).find((d) => d.path === real || d.path === device);
  if (!drive) throw new InvalidField('device', `${device} is not a drive this computer knows (see: skyhost usb list)`);
  return drive;
}

/** Runs every guard for writing `image` to `device`: the drive and its findings. */
export async function checkTarget(image: string, device: string, opts: { allowLoop?: boolean } = {}): Promise<DriveChoice> {
  const st = await fsp.stat(image).catch(() => {
    throw new InvalidField('image', `cannot read ${image}: no such file`);
  });
  if (!st.isFile()) throw new InvalidField('image', `${image} is not a file`);
  const drive = await findDrive(device);
  const imageMountpoint = await mountpointOf(image);
  const findings = checkDrive(drive, {
    imageSize: st.size,
    ...(imageMountpoint ? { imageMountpoint } : {}),
    ...(opts.allowLoop ? { allowLoop: true } : {}),
  });
  return { drive, findings };
}

/** Thrown when the guards refuse a drive: carries every finding for the UI. */
export class DriveRefused extends SkyError {
  readonly findings: Finding[];
  constructor(drive: Drive, findings: Finding[]) {
    const errors = findings.filter((f) => f.level === 'error');
    super(422, 'drive_refused', `will not write to ${describeDrive(drive)}: ${errors.map((f) => f.message).join(' ')}`, { findings });
    this.findings = findings;
  }
}

export interface WriteProgress {
  phase: 'writing' | 'syncing' | 'verifying';
  bytes: number;
  total: number;
}

export interface WriteOptions {
  onProgress?: (p: WriteProgress) => void;
  /** Bytes per write; a multiple of 4096 (default 4 MiB). */
  chunkSize?: number;
  /** Read the device back and compare sha256 (default true). */
  verify?: boolean;
  /** The image's sha256 when the caller already knows it (else it is computed while verifying). */
  imageSha256?: string;
}

export interface WriteResult {
  bytes: number;
  /** The sha256 the image and the drive's read-back share (absent without verify). */
  sha256?: string;
  /** Write and fsync. */
  writeMs: number;
  /** Read-back and compare (0 without verify). */
  verifyMs: number;
}

export const DEFAULT_CHUNK = 4 * 1024 * 1024;

/**
 * Copies `image` onto the block device `device` and proves it arrived. The guards are the caller's
 * job (see `writeImageSafely`); this refuses only what the kernel refuses: a device in use (O_EXCL).
 */
export async function writeImage(image: string, device: string, opts: WriteOptions = {}): Promise<WriteResult> {
  const chunk = opts.chunkSize ?? DEFAULT_CHUNK;
  if (chunk <= 0 || chunk % 4096 !== 0) throw new InvalidField('chunkSize', 'must be a positive multiple of 4096');
  const src = await fsp.open(image, 'r').catch((e: NodeJS.ErrnoException) => {
    throw new InvalidField('image', `cannot read ${image}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  });
  try {
    const total = (await src.stat()).size;
    const dst = await openDevice(device);
    const started = performance.now();
    let done = 0;
    try {
      await copyChunks(src, dst, total, chunk, (bytes) => {
        done = bytes;
        opts.onProgress?.({ phase: 'writing', bytes, total });
      });
      opts.onProgress?.({ phase: 'syncing', bytes: total, total });
      await dst.sync();
    } catch (e) {
      throw ioFailure(e, `writing to ${device} failed after ${formatBytes(done)} of ${formatBytes(total)}`);
    } finally {
      // a close error after a failed write would hide the write's own error, which is the one to report
      await dst.close().catch(() => undefined);
    }
    const writeMs = performance.now() - started;
    if (opts.verify === false) return { bytes: total, writeMs, verifyMs: 0 };
    const verifyStarted = performance.now();
    // Drop the device's page cache so that the read-back comes from the stick, not from memory.
    await run('blockdev', ['--flushbufs', device], { timeout: 120_000 });
    // The image is hashed on another core while this one reads the device back.
    const imageHash = opts.imageSha256 ? Promise.resolve(opts.imageSha256) : hashFileInWorker(image);
    // awaited below; this only keeps an early rejection from counting as unhandled while the device is read
    imageHash.catch(() => undefined);
    const readBack = await hashDevice(device, total, chunk, (bytes) => opts.onProgress?.({ phase: 'verifying', bytes, total }))
      .catch((e: unknown) => {
        throw ioFailure(e, `reading ${device} back failed`);
      });
    const sha256 = await imageHash;
    if (readBack !== sha256) {
      throw new SkyError(503, 'verify_failed',
        `the drive ${device} did not read back what was written (sha256 ${readBack.slice(0, 12)}... instead of ${sha256.slice(0, 12)}...): the stick may be faulty or fake; try another one`,
        { expected: sha256, actual: readBack });
    }
    return { bytes: total, sha256, writeMs, verifyMs: performance.now() - verifyStarted };
  } finally {
    await src.close();
  }
}

/** Checks the guards, refuses on any error, then writes. */
export async function writeImageSafely(image: string, device: string, opts: WriteOptions & { allowLoop?: boolean } = {}): Promise<WriteResult & { drive: Drive; findings: Finding[] }> {
  const { drive, findings } = await checkTarget(image, device, opts);
  if (hasErrors(findings)) throw new DriveRefused(drive, findings);
  const result = await writeImage(image, drive.path, opts);
  return { ...result, drive, findings };
}

/** An I/O error of the drive as one plain sentence (a SkyError passes through unchanged). */
function ioFailure(e: unknown, what: string): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  if (e instanceof SkyError || !code) return e;
  const why = code === 'ENOSPC' ? 'the drive is full' : code === 'ENXIO' || code === 'ENODEV' ? 'the drive was unplugged' : `input/output error (${code})`;
  return new SkyError(503, 'write_failed', `${what}: ${why}. The stick may be faulty, smaller than it claims, or unplugged: try another one.`, { code });
}

async function openDevice(device: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    // O_EXCL on a block device: the kernel refuses (EBUSY) while it or a partition is mounted or held.
    fh = await fsp.open(device, constants.O_WRONLY | constants.O_EXCL);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EBUSY') throw new Conflict(`${device} is in use (mounted or opened by another program): eject it first`);
    if (code === 'EACCES' || code === 'EPERM') throw new Forbidden(`no permission to write ${device}: run as root (sudo)`);
    if (code === 'ENOENT') throw new NotFound(`drive ${device}`);
    if (code === 'EROFS') throw new Conflict(`${device} is write-protected`);
    throw e;
  }
  const st = await fh.stat();
  if (!st.isBlockDevice()) {
    await fh.close();
    throw new InvalidField('device', `${device} is not a drive (block device)`);
  }
  return fh;
}

/**
 * Reads `total` bytes of `src` in chunks with two buffers, so that reading the next chunk overlaps
 * `consume` of the current one; `consume` must be done with the bytes when its promise settles.
 */
async function forEachChunk(src: fsp.FileHandle, total: number, chunk: number, consume: (view: Buffer, pos: number) => unknown): Promise<void> {
  const buffers = [Buffer.allocUnsafeSlow(chunk), Buffer.allocUnsafeSlow(chunk)];
  const readAt = async (buf: Buffer, pos: number): Promise<number> => {
    const want = Math.min(chunk, total - pos);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await src.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) throw new SkyError(500, 'short_read', 'the data ended before its expected size (the image changed or the drive is smaller than it says)');
      got += bytesRead;
    }
    return got;
  };
  let pos = 0;
  let i = 0;
  let pending = total > 0 ? readAt(buffers[0]!, 0) : Promise.resolve(0);
  try {
    while (pos < total) {
      const n = await pending;
      const next = pos + n;
      pending = next < total ? readAt(buffers[(i + 1) % 2]!, next) : Promise.resolve(0);
      await consume(buffers[i % 2]!.subarray(0, n), pos);
      pos = next;
      i++;
    }
  } finally {
    // the read in flight when `consume` threw: its own error adds nothing to the one being thrown
    await pending.catch(() => undefined);
  }
}

/** Copies `total` bytes of `src` to the same offsets of `dst`. */
async function copyChunks(src: fsp.FileHandle, dst: fsp.FileHandle, total: number, chunk: number, progress: (bytes: number) => void): Promise<void> {
  await forEachChunk(src, total, chunk, async (view, pos) => {
    await writeFully(dst, view, pos);
    progress(pos + view.length);
  });
}

// Hashing on this thread would slow the copy by a third; a worker hashes the image on another core.
const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { createReadStream } = require('node:fs');
const hash = createHash('sha256');
createReadStream(workerData.file, { highWaterMark: 4 * 1024 * 1024 })
  .on('data', (b) => hash.update(b))
  .on('error', (e) => parentPort.postMessage({ error: e.message }))
  .on('end', () => parentPort.postMessage({ sha256: hash.digest('hex') }));
`;

/** The sha256 of a file, computed on a worker thread. */
export function hashFileInWorker(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(HASH_WORKER, { eval: true, workerData: { file } });
    worker.once('message', (m: { sha256?: string; error?: string }) => {
      void worker.terminate();
      if (m.sha256) resolve(m.sha256);
      else reject(new InvalidField('image', `cannot read ${file}: ${m.error}`));
    });
    worker.once('error', reject);
  });
}

async function writeFully(dst: fsp.FileHandle, view: Buffer, pos: number): Promise<void> {
  let written = 0;
  while (written < view.length) {
    const { bytesWritten } = await dst.write(view, written, view.length - written, pos + written);
    if (bytesWritten === 0) throw new SkyError(507, 'device_full', 'the drive accepted no more data: it is smaller than it says');
    written += bytesWritten;
  }
}

async function hashDevice(device: string, length: number, chunk: number, progress: (bytes: number) => void): Promise<string> {
  const fh = await fsp.open(device, 'r');
  try {
    const hash = createHash('sha256');
    await forEachChunk(fh, length, chunk, (view, pos) => {
      hash.update(view);
      progress(pos + view.length);
    });
    return hash.digest('hex');
  } finally {
    await fh.close();
  }
}
