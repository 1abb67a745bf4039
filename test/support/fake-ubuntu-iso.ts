// A stand-in for Ubuntu's live-server ISO, built from Debian packages and cached under .cache/fake-iso/.
// Same layout as the real 22.04/24.04 images: GRUB El Torito for BIOS, the EFI system partition
// appended as GPT partition 2 (also the UEFI El Torito image), the MBR/GPT hybrid, .disk/info,
// md5sum.txt, casper/vmlinuz + initrd and hwe-vmlinuz + hwe-initrd, a grub.cfg shaped like Ubuntu's
// (plus loopback.cfg on 22.04). Its initrd is busybox: it prints FAKE_MARKERS.cmdline + /proc/cmdline,
// mounts the CD and prints /cdrom/nocloud/user-data between FAKE_MARKERS.userData*, on ttyS0, then
// powers off.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, openSync, writeSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../base/exec.ts';
import { md5File } from '../../iso/md5sums.ts';

export type FakeRelease = '22.04' | '24.04';

export const FAKE_MARKERS = {
  cmdline: 'SKYHOST-FAKE-CMDLINE: ',
  firmware: 'SKYHOST-FAKE-FIRMWARE: ',
  medium: 'SKYHOST-FAKE-MEDIUM: ',
  userDataBegin: 'SKYHOST-FAKE-USERDATA-BEGIN',
  userDataEnd: 'SKYHOST-FAKE-USERDATA-END',
  done: 'SKYHOST-FAKE-DONE',
} as const;

const CACHE = path.resolve(import.meta.dirname, '../../.cache/fake-iso');
/** Bump when the layout changes, so cached images are rebuilt. */
const LAYOUT_VERSION = 3;

const RELEASES: Record<FakeRelease, { diskInfo: string; volumeId: string; memtest: string; loopback: boolean }> = {
  '22.04': {
    diskInfo: 'Ubuntu-Server 22.04.4 LTS "Jammy Jellyfish" - Release amd64 (20240220)',
    volumeId: 'Ubuntu-Server 22.04.4 LTS amd64',
    memtest: '/boot/memtest86+.bin',
    loopback: true,
  },
  '24.04': {
    diskInfo: 'Ubuntu-Server 24.04.1 LTS "Noble Numbat" - Release amd64 (20240827)',
    volumeId: 'Ubuntu-Server 24.04.1 LTS amd64',
    memtest: '/boot/memtest86+x64.bin',
    loopback: false,
  },
};

/** Kernel modules the initrd loads to read the CD (this kernel builds them as modules), in order. */
const MODULES = [
  'kernel/drivers/scsi/scsi_common.ko',
  'kernel/drivers/scsi/scsi_mod.ko',
  'kernel/drivers/ata/libata.ko',
  'kernel/drivers/ata/ata_piix.ko',
  'kernel/drivers/cdrom/cdrom.ko',
  'kernel/drivers/scsi/sr_mod.ko',
  'kernel/fs/isofs/isofs.ko',
  // sd_mod and what it needs: the image attached as a disk, the way a USB stick is
  'kernel/crypto/crct10dif_common.ko',
  'kernel/crypto/crct10dif_generic.ko',
  'kernel/lib/crc-t10dif.ko',
  'kernel/lib/crc64.ko',
  'kernel/crypto/crc64_rocksoft_generic.ko',
  'kernel/lib/crc64-rocksoft.ko',
  'kernel/block/t10-pi.ko',
  'kernel/drivers/scsi/sd_mod.ko',
];

const INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1
echo "${FAKE_MARKERS.cmdline}$(cat /proc/cmdline)"
if [ -d /sys/firmware/efi ]; then echo "${FAKE_MARKERS.firmware}efi"; else echo "${FAKE_MARKERS.firmware}bios"; fi
for m in ${MODULES.map((m) => path.basename(m)).join(' ')}; do insmod /lib/modules/$m; done
mkdir -p /cdrom
i=0
until mount -t iso9660 -o ro /dev/sr0 /cdrom 2>/dev/null || mount -t iso9660 -o ro /dev/sda /cdrom 2>/dev/null; do
  i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.2
done
echo "${FAKE_MARKERS.medium}$(grep ' /cdrom ' /proc/mounts | cut -d' ' -f1)"
echo ${FAKE_MARKERS.userDataBegin}
cat /cdrom/nocloud/user-data
echo ${FAKE_MARKERS.userDataEnd}
echo ${FAKE_MARKERS.done}
poweroff -f
`;

/** Runs from the GRUB core image: find the ISO 9660 tree, then Ubuntu's own grub.cfg. */
const EARLY_CFG = `serial --unit=0 --speed=115200
terminal_output serial console
search --no-floppy --set=root --file /.disk/info
set prefix=($root)/boot/grub
configfile ($root)/boot/grub/grub.cfg
`;

function grubCfg(r: FakeRelease, loopback = false): string {
  const extra = loopback ? '  iso-scan/filename=${iso_path}' : ' ';
  return `set timeout=1

loadfont unicode

set menu_color_normal=white/black
set menu_color_highlight=black/light-gray

menuentry "Try or Install Ubuntu Server" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz${extra} ---
\tinitrd\t/casper/initrd
}
menuentry "Ubuntu Server with the HWE kernel" {
\tset gfxpayload=keep
\tlinux\t/casper/hwe-vmlinuz${extra} ---
\tinitrd\t/casper/hwe-initrd
}
${loopback ? '' : `grub_platform
if [ "$grub_platform" = "efi" ]; then
menuentry 'Boot from next volume' {
\texit 1
}
menuentry 'UEFI Firmware Settings' {
\tfwsetup
}
else
menuentry 'Test memory' {
\tlinux16 ${RELEASES[r].memtest}
}
fi
`}`;
}

export interface FakeIsoOptions {
  release: FakeRelease;
  /** Size of a filler casper/ubuntu-server-minimal.squashfs in MB (default 1), to make the image realistic in size. */
  fillerMb?: number;
}

/** Path of the cached stand-in ISO, building it first if needed (a few seconds). */
export async function fakeUbuntuIso(opts: FakeIsoOptions): Promise<string> {
  const filler = opts.fillerMb ?? 1;
  const kernel = findKernel();
  const key = createHash('sha256').update(JSON.stringify({ LAYOUT_VERSION, opts, filler, kernel, INIT, EARLY_CFG })).digest('hex').slice(0, 12);
  const iso = path.join(CACHE, `ubuntu-${opts.release}-fake-${filler}mb-${key}.iso`);
  if (existsSync(iso)) return iso;
  mkdirSync(CACHE, { recursive: true });
  const work = path.join(CACHE, `work-${process.pid}-${key}`);
  rmSync(work, { recursive: true, force: true });
  try {
    const tree = path.join(work, 'tree');
    const rel = RELEASES[opts.release];
    const put = (p: string, content: string | Buffer) => {
      mkdirSync(path.dirname(path.join(tree, p)), { recursive: true });
      writeFileSync(path.join(tree, p), content);
    };
    put('.disk/info', rel.diskInfo);
    put('boot/grub/grub.cfg', grubCfg(opts.release));
    if (rel.loopback) put('boot/grub/loopback.cfg', grubCfg(opts.release, true));
    const initrd = await buildInitrd(path.join(work, 'initrd'), kernel.version);
    for (const prefix of ['', 'hwe-']) {
      put(`casper/${prefix}vmlinuz`, readFileSync(kernel.image));
      put(`casper/${prefix}initrd`, initrd);
    }
    writeFiller(path.join(tree, 'casper/ubuntu-server-minimal.squashfs'), filler);
    // md5sum.txt covers every file but itself and the boot images, like Ubuntu's.
    const sums = await Promise.all(listFiles(tree).map(async (f) => `${await md5File(path.join(tree, f))}  ./${f}`));
    put('md5sum.txt', sums.join('\n') + '\n');

    const earlyCfg = path.join(work, 'early.cfg');
    writeFileSync(earlyCfg, EARLY_CFG);
    const grubModules = ['iso9660', 'part_msdos', 'part_gpt', 'normal', 'configfile', 'linux', 'echo', 'search', 'search_fs_file', 'serial', 'terminal', 'test', 'font', 'gfxterm'];
    mkdirSync(path.join(tree, 'boot/grub/i386-pc'), { recursive: true });
    await run('grub-mkimage', ['-O', 'i386-pc-eltorito', '-o', path.join(tree, 'boot/grub/i386-pc/eltorito.img'), '-p', '/boot/grub', '-c', earlyCfg, 'biosdisk', ...grubModules]);
    const efiBinary = path.join(work, 'bootx64.efi');
    await run('grub-mkimage', ['-O', 'x86_64-efi', '-o', efiBinary, '-p', '/boot/grub', '-c', earlyCfg, 'fat', 'efi_gop', ...grubModules]);
    const esp = path.join(work, 'efi.img');
    await run('mkfs.vfat', ['-C', '-n', 'ESP', esp, '4096']);
    await run('mmd', ['-i', esp, '::/EFI', '::/EFI/boot']);
    await run('mcopy', ['-i', esp, efiBinary, '::/EFI/boot/bootx64.efi']);

    const tmpIso = path.join(work, 'out.iso');
    await run('xorriso', [
      '-as', 'mkisofs', '-r', '-J', '-joliet-long', '-V', rel.volumeId, '-o', tmpIso,
      '--grub2-mbr', '/usr/lib/grub/i386-pc/boot_hybrid.img',
      '-partition_offset', '16', '--mbr-force-bootable',
      '-append_partition', '2', '28732ac11ff8d211ba4b00a0c93ec93b', esp, '-appended_part_as_gpt',
      '-iso_mbr_part_type', 'a2a0d0ebe5b9334487c068b6b72699c7',
      '-c', '/boot.catalog',
      '-b', '/boot/grub/i386-pc/eltorito.img', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table', '--grub2-boot-info',
      '-eltorito-alt-boot', '-e', '--interval:appended_partition_2:::', '-no-emul-boot',
      tree,
    ], { timeout: 300_000 });
    renameSync(tmpIso, iso);
    // Older builds of the same image (another layout version or kernel) are of no further use.
    const family = `ubuntu-${opts.release}-fake-${filler}mb-`;
    for (const f of readdirSync(CACHE)) if (f.startsWith(family) && f !== path.basename(iso)) rmSync(path.join(CACHE, f), { force: true });
    return iso;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** A copy of the stand-in that is not Ubuntu (a Debian-looking .disk/info, no casper): for error tests. */
export async function fakeOtherIso(dir: string): Promise<string> {
  const tree = path.join(dir, 'other-tree');
  mkdirSync(path.join(tree, '.disk'), { recursive: true });
  writeFileSync(path.join(tree, '.disk/info'), 'Debian GNU/Linux 12.8.0 "Bookworm" - Official amd64 NETINST');
  writeFileSync(path.join(tree, 'README.txt'), 'not ubuntu\n');
  const iso = path.join(dir, 'debian-like.iso');
  await run('xorriso', ['-as', 'mkisofs', '-r', '-V', 'Debian 12.8.0 amd64 n', '-o', iso, tree]);
  return iso;
}

/** `mb` MiB of incompressible bytes, written a MiB at a time. */
function writeFiller(file: string, mb: number): void {
  const chunk = randomBytes(1024 * 1024);
  const fd = openSync(file, 'w');
  try {
    for (let i = 0; i < mb; i++) {
      chunk.writeUInt32LE(i, 0);
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
}

function findKernel(): { image: string; version: string } {
  const images = readdirSync('/boot').filter((f) => /^vmlinuz-/.test(f)).sort();
  const image = images.at(-1);
  if (!image) throw new Error('no kernel in /boot: apt-get install linux-image-amd64 (skyhost host setup --with-test-tools)');
  return { image: path.join('/boot', image), version: image.replace(/^vmlinuz-/, '') };
}

async function buildInitrd(dir: string, kernelVersion: string): Promise<Buffer> {
  const root = path.join(dir, 'root');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'lib/modules', 'cdrom']) mkdirSync(path.join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
  chmodSync(path.join(root, 'bin/busybox'), 0o755);
  const { stdout } = await run(path.join(root, 'bin/busybox'), ['--list']);
  for (const applet of stdout.split('\n').filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', path.join(root, 'bin', applet));
  }
  for (const m of MODULES) copyFileSync(path.join('/lib/modules', kernelVersion, m), path.join(root, 'lib/modules', path.basename(m)));
  writeFileSync(path.join(root, 'init'), INIT, { mode: 0o755 });
  const out = path.join(dir, 'initrd.gz');
  await run('sh', ['-c', 'cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 > "$2"', 'sh', root, out]);
  return readFileSync(out);
}

function listFiles(dir: string, prefix = ''): string[] {
  return readdirSync(path.join(dir, prefix), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(dir, path.join(prefix, e.name)) : [path.join(prefix, e.name)],
  );
}
