// The pure parts of the ISO remaster: grub.cfg and md5sum.txt edits.
import { expect } from 'chai';
import { SkyError } from '../../base/errors.ts';
import { addAutoinstallToGrub, AUTOINSTALL_ARGS } from '../../iso/grub.ts';
import { md5, parseMd5Sums, updateMd5Sums } from '../../iso/md5sums.ts';
import { xorrisoWriteError, xorrisoWriteFraction } from '../../iso/remaster.ts';

const UBUNTU_2404 = `set timeout=30

loadfont unicode

menuentry "Try or Install Ubuntu Server" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz  ---
\tinitrd\t/casper/initrd
}
menuentry "Ubuntu Server with the HWE kernel" {
\tset gfxpayload=keep
\tlinux\t/casper/hwe-vmlinuz  ---
\tinitrd\t/casper/hwe-initrd
}
grub_platform
if [ "$grub_platform" = "efi" ]; then
menuentry 'Boot from next volume' {
\texit 1
}
else
menuentry 'Test memory' {
\tlinux16 /boot/memtest86+x64.bin
}
fi
`;

const LOOPBACK_2204 = `menuentry "Try or Install Ubuntu Server" {
\tset gfxpayload=keep
\tlinux\t/casper/vmlinuz  iso-scan/filename=\${iso_path} --- quiet
\tinitrd\t/casper/initrd
}
`;

describe('grub.cfg edit', () => {
  it('should add the autoinstall arguments before --- on every install entry, HWE included', () => {
    const { text, entries } = addAutoinstallToGrub(UBUNTU_2404);
    expect(entries).to.equal(2);
    expect(text).to.contain('\tlinux\t/casper/vmlinuz autoinstall ds=nocloud\\;s=/cdrom/nocloud/ ---\n');
    expect(text).to.contain('\tlinux\t/casper/hwe-vmlinuz autoinstall ds=nocloud\\;s=/cdrom/nocloud/ ---\n');
    expect(text).to.contain('\tlinux16 /boot/memtest86+x64.bin\n');
    expect(text.split('\n').length).to.equal(UBUNTU_2404.split('\n').length);
  });

  it('should keep what is before and after --- (22.04 loopback.cfg)', () => {
    const { text } = addAutoinstallToGrub(LOOPBACK_2204);
    expect(text).to.contain(`\tlinux\t/casper/vmlinuz iso-scan/filename=\${iso_path} ${AUTOINSTALL_ARGS} --- quiet\n`);
  });

  it('should not double the arguments when the ISO was already remastered', () => {
    const once = addAutoinstallToGrub(UBUNTU_2404).text;
    expect(addAutoinstallToGrub(once).text).to.equal(once);
  });

  it('should add a --- when an entry has none', () => {
    expect(addAutoinstallToGrub('linux /casper/vmlinuz quiet\n').text).to.equal(`linux /casper/vmlinuz quiet ${AUTOINSTALL_ARGS} ---\n`);
  });

  it('should refuse a grub.cfg without a casper entry (not a live-server ISO)', () => {
    expect(() => addAutoinstallToGrub('menuentry "Debian" {\n linux /install.amd/vmlinuz\n}\n')).to.throw(SkyError, /not an Ubuntu live-server ISO/);
  });
});

describe('md5sum.txt update', () => {
  const original = `${md5('a')}  ./boot/grub/grub.cfg\n${md5('k')}  ./casper/vmlinuz\n`;

  it('should replace changed entries, keep the others and add new files', () => {
    const updated = updateMd5Sums(original, new Map([['/boot/grub/grub.cfg', md5('b')], ['/nocloud/user-data', md5('u')]]));
    expect(parseMd5Sums(updated)).to.deep.equal(new Map([
      ['/casper/vmlinuz', md5('k')],
      ['/boot/grub/grub.cfg', md5('b')],
      ['/nocloud/user-data', md5('u')],
    ]));
    expect(updated.endsWith('\n')).to.equal(true);
    expect(updated.split('\n').filter((l) => l.includes('grub.cfg'))).to.have.length(1);
  });
});

describe('xorriso progress', () => {
  it('should read the written fraction from the pacifier lines and ignore the others', () => {
    expect(xorrisoWriteFraction('xorriso : UPDATE : Writing:     600384s   45.4%   fifo  74%  buf  50%  717.2xD ')).to.be.closeTo(0.454, 1e-9);
    expect(xorrisoWriteFraction('xorriso : UPDATE :  12.5% done, estimate finish Mon')).to.equal(0.125);
    expect(xorrisoWriteFraction('xorriso : UPDATE :      15 nodes read in 1 seconds')).to.equal(undefined);
    expect(xorrisoWriteFraction('xorriso : UPDATE : Writing:     100976s    7.6%   fifo 100%  buf  50%')).to.be.closeTo(0.076, 1e-9);
  });
});

describe('xorriso write failures', () => {
  it('should tell a full disk apart from other failures', () => {
    for (const stderr of ['xorriso : FAILURE : Image size 12592s exceeds free space on media 2512s', 'libburn : SORRY : No space left on device']) {
      const e = xorrisoWriteError(stderr, '/mnt/usb');
      expect(e.code).to.equal('disk_full');
      expect(e.message).to.equal('not enough space in /mnt/usb for the installer ISO');
    }
    const other = xorrisoWriteError('libisofs: FAILURE : Read error occurred with IsoDataSource', '/mnt/usb', ['-indev', 'x'], 5);
    expect(other.code).to.equal('command_failed');
    expect(other.message).to.contain('Read error');
  });
});
