// A real block device for tests: a sparse file in a temp folder attached with `losetup`. Call
// `remove()` in an after hook; it detaches the device and deletes the file even after a failure.
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../base/exec.ts';

export interface LoopDevice {
  /** e.g. /dev/loop3 */
  device: string;
  /** Kernel name, e.g. loop3 (what the confirmation box accepts for a loop device). */
  name: string;
  backingFile: string;
  remove(): Promise<void>;
}

/** `parent`: where the backing file goes (e.g. /dev/shm for a device that is as fast as memory). */
export async function createLoopDevice(bytes: number, prefix = 'skyhost-loop-', parent = os.tmpdir()): Promise<LoopDevice> {
  const dir = mkdtempSync(path.join(parent, prefix));
  const backingFile = path.join(dir, 'disk.img');
  writeFileSync(backingFile, '');
  truncateSync(backingFile, bytes);
  let device: string;
  try {
    device = (await run('losetup', ['-f', '--show', backingFile])).stdout.trim();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    device,
    name: path.basename(device),
    backingFile,
    async remove() {
      await run('losetup', ['-d', device]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A file of `bytes` pseudo-random bytes (deterministic from `seed`), for images to write. */
export function writePatternFile(file: string, bytes: number, seed = 1): void {
  const buf = Buffer.allocUnsafe(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= bytes; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (let i = bytes - (bytes % 4); i < bytes; i++) buf[i] = i & 0xff;
  writeFileSync(file, buf);
}

/** sha256 of the first `length` bytes of a file or device (what a written image should read back as). */
export function sha256OfPrefix(file: string, length: number): string {
  const hash = createHash('sha256');
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(4 * 1024 * 1024);
  try {
    let pos = 0;
    while (pos < length) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, length - pos), pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}
