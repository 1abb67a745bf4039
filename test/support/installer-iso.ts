// ISO images for the `iso` template kind: a plain data ISO (xorriso), and a bootable "installer"
// (grub-mkrescue, BIOS) that prints a marker from GRUB on the serial line and boots the test guest's
// kernel from the CD with an initrd that can see the VM's disk. Also the initrd addition that gives
// the test guest a disk driver (virtio_blk), appended as a second cpio (Linux unpacks both).
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../base/exec.ts';
import { kernelRelease } from '../../agent/tinyguest.ts';
import type { TestGuest } from './guest.ts';

/** What GRUB on the bootable ISO prints on the serial line before it loads the kernel. */
export const ISO_GRUB_MARKER = 'SKYISO-GRUB-BOOTED';

/** A small ISO 9660 image with one text file (not bootable). */
export async function makeDataIso(out: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-iso-src-'));
  try {
    writeFileSync(path.join(dir, 'README.TXT'), 'an installer ISO stand-in\n');
    await run('xorriso', ['-as', 'mkisofs', '-quiet', '-output', out, '-volid', 'SKYTEST', dir]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The test guest's initrd with the virtio block driver added (the tiny guest loads every module in
 * /lib/modules; `99-` loads it after the virtio core), so the guest sees its disk as /dev/vda.
 */
export async function guestInitrdWithDisk(guest: TestGuest, out: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-initrd-add-'));
  try {
    mkdirSync(path.join(dir, 'lib/modules'), { recursive: true });
    const ko = path.join('/lib/modules', kernelRelease(), 'kernel/drivers/block/virtio_blk.ko');
    if (!existsSync(ko)) throw new Error(`${ko} is missing: the test guest cannot see a disk`);
    copyFileSync(ko, path.join(dir, 'lib/modules/99-virtio_blk.ko'));
    const cpio = path.join(dir, 'add.cpio');
    await run('cpio', ['-o', '-H', 'newc', '--quiet', '-O', cpio], { cwd: dir, input: './lib\n./lib/modules\n./lib/modules/99-virtio_blk.ko\n' });
    await run('gzip', ['-1', '-f', cpio]);
    writeFileSync(out, Buffer.concat([readFileSync(guest.initrd), readFileSync(`${cpio}.gz`)]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A BIOS-bootable ISO (GRUB) that prints ISO_GRUB_MARKER and boots the test guest (with its disk driver) from the CD. */
export async function makeBootableIso(guest: TestGuest, out: string): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-iso-boot-'));
  try {
    mkdirSync(path.join(dir, 'boot/grub'), { recursive: true });
    copyFileSync(guest.bzImage, path.join(dir, 'boot/vmlinuz')); // GRUB's linux loads a bzImage
    await guestInitrdWithDisk(guest, path.join(dir, 'boot/initrd.gz'));
    writeFileSync(path.join(dir, 'boot/grub/grub.cfg'), [
      'serial --unit=0 --speed=115200',
      'terminal_input serial console',
      'terminal_output serial console',
      'set timeout=0',
      'menuentry "SkyHost test installer" {',
      `  echo ${ISO_GRUB_MARKER}`,
      `  linux /boot/vmlinuz ${guest.cmdline}`,
      '  initrd /boot/initrd.gz',
      '}',
      '',
    ].join('\n'));
    // BIOS only: the VMs boot with SeaBIOS
    await run('grub-mkrescue', ['-d', '/usr/lib/grub/i386-pc', '-o', out, dir, '--', '-volid', 'SKYINSTALL'], { timeout: 120_000 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
