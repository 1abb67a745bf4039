// VM disks: a qcow2 overlay on the template's image (copy-on-write, milliseconds whatever the
// template's size) instead of a full copy.
import { run } from '../base/exec.ts';

export interface ImageInfo {
  format: string;
  virtualBytes: number;
  backingFile?: string;
}

/** `qemu-img info` of an image (format, virtual size, backing file). */
export async function imageInfo(file: string): Promise<ImageInfo> {
  const out = await run('qemu-img', ['info', '--output=json', '-U', file]);
  const j = JSON.parse(out.stdout) as { format: string; 'virtual-size': number; 'backing-filename'?: string };
  return { format: j.format, virtualBytes: j['virtual-size'], ...(j['backing-filename'] ? { backingFile: j['backing-filename'] } : {}) };
}

/**
 * Creates `out` as a qcow2 overlay on `backing` (`qemu-img create -f qcow2 -F FMT -b BACKING OUT [SIZE]`).
 * `sizeBytes` grows the VM's disk beyond the template's size (never shrinks it).
 * @example await createOverlay('/data/templates/alpine/disk.qcow2', 'qcow2', '/data/vms/x/disk.qcow2')
 */
export async function createOverlay(backing: string, backingFormat: 'qcow2' | 'raw', out: string, sizeBytes?: number): Promise<void> {
  const args = ['create', '-q', '-f', 'qcow2', '-F', backingFormat, '-b', backing, out];
  if (sizeBytes !== undefined) args.push(String(sizeBytes));
  await run('qemu-img', args);
}

/** An empty qcow2 disk of `sizeBytes` (a kernel template without a disk, given a diskGiB). */
export async function createBlankDisk(out: string, sizeBytes: number): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', out, String(sizeBytes)]);
}

/**
 * Writes `image` with its whole backing chain as one standalone qcow2 at `out` (save as template).
 * The image must not be in use: qemu-img refuses an image a running VM holds.
 * @example await flattenDisk('/data/vms/x/disk.qcow2', '/data/templates/.save-1/disk.qcow2')
 */
export async function flattenDisk(image: string, out: string): Promise<void> {
  await run('qemu-img', ['convert', '-q', '-O', 'qcow2', image, out], { timeout: 6 * 3_600_000 });
}
