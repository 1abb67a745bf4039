import { expect } from 'chai';
import {
  checkDrive,
  confirmationMatches,
  formatBytes,
  hasErrors,
  holdsImage,
  isLargeEnough,
  isMounted,
  isPartition,
  isReadOnly,
  isRemovable,
  isSystemDrive,
  isUnusuallyLarge,
  LARGE_DRIVE_BYTES,
  parseLsblk,
  type Drive,
  type GuardContext,
} from '../../iso/usb-guards.ts';

/** A 16 GB USB stick that every guard accepts; override what a test is about. */
function stick(over: Partial<Drive> = {}): Drive {
  return {
    name: 'sdb',
    path: '/dev/sdb',
    size: 16_000_000_000,
    type: 'disk',
    transport: 'usb',
    removable: true,
    hotplug: true,
    readOnly: false,
    model: 'SanDisk Ultra',
    serial: '4C530001',
    mountpoints: [],
    allMountpoints: [],
    parent: null,
    ...over,
  };
}

const IMAGE = 3_000_000_000;
const codes = (d: Drive, ctx: GuardContext = { imageSize: IMAGE }) => checkDrive(d, ctx).map((f) => f.code);

describe('usb guards', () => {
  describe('given a plain USB stick larger than the image', () => {
    it('should have no findings', () => {
      expect(checkDrive(stick(), { imageSize: IMAGE })).to.deep.equal([]);
    });
  });

  describe('given an image size at the drive size boundary', () => {
    const size = 8_000_000_000;
    it('should refuse a drive one byte smaller than the image (size - 1)', () => {
      expect(isLargeEnough(stick({ size: size - 1 }), size)).to.equal(false);
      expect(codes(stick({ size: size - 1 }), { imageSize: size })).to.deep.equal(['too_small']);
    });
    it('should accept a drive exactly as large as the image (size)', () => {
      expect(isLargeEnough(stick({ size }), size)).to.equal(true);
      expect(codes(stick({ size }), { imageSize: size })).to.deep.equal([]);
    });
    it('should accept a drive one byte larger than the image (size + 1)', () => {
      expect(isLargeEnough(stick({ size: size + 1 }), size)).to.equal(true);
    });
    it('should say both sizes in plain words', () => {
      const [f] = checkDrive(stick({ size: 1_000_000_000 }), { imageSize: 2_500_000_000 });
      expect(f!.message).to.contain('1.0 GB').and.contain('2.5 GB').and.contain('bigger USB stick');
    });
  });

  describe('given a drive at the "unusually large" boundary', () => {
    it('should not warn at the limit minus one byte', () => {
      expect(isUnusuallyLarge(stick({ size: LARGE_DRIVE_BYTES - 1 }))).to.equal(false);
    });
    it('should not warn exactly at the limit', () => {
      expect(isUnusuallyLarge(stick({ size: LARGE_DRIVE_BYTES }))).to.equal(false);
      expect(codes(stick({ size: LARGE_DRIVE_BYTES }))).to.deep.equal([]);
    });
    it('should warn (not refuse) one byte over the limit', () => {
      const findings = checkDrive(stick({ size: LARGE_DRIVE_BYTES + 1 }), { imageSize: IMAGE });
      expect(findings.map((f) => [f.level, f.code])).to.deep.equal([['warning', 'large']]);
      expect(hasErrors(findings)).to.equal(false);
    });
  });

  describe('given a partition', () => {
    const part = stick({ name: 'sdb1', path: '/dev/sdb1', type: 'part', parent: 'sdb' });
    it('should refuse it and name the whole drive to choose instead', () => {
      expect(isPartition(part)).to.equal(true);
      const [f] = checkDrive(part, { imageSize: IMAGE });
      expect(f!.level).to.equal('error');
      expect(f!.message).to.contain('/dev/sdb)');
    });
  });

  describe('given the disk the computer runs from', () => {
    for (const mount of ['/', '/boot', '/boot/efi', '[SWAP]']) {
      it(`should refuse a disk with ${mount} on one of its partitions`, () => {
        const d = stick({ transport: 'sata', removable: false, hotplug: false, allMountpoints: [mount] });
        expect(isSystemDrive(d)).to.equal(true);
        expect(codes(d)).to.include('system_drive');
      });
    }
    it('should not call a stick mounted at /media/... a system disk', () => {
      expect(isSystemDrive(stick({ allMountpoints: ['/media/teacher/STICK'] }))).to.equal(false);
    });
    it('should say so in words a teacher understands', () => {
      const [f] = checkDrive(stick({ allMountpoints: ['/'] }), { imageSize: IMAGE });
      expect(f!.message).to.match(/running from/);
    });
  });

  describe('given the drive that holds the image file', () => {
    const d = stick({ mountpoints: [], allMountpoints: ['/media/teacher/STICK'] });
    it('should refuse it', () => {
      expect(holdsImage(d, '/media/teacher/STICK')).to.equal(true);
      expect(codes(d, { imageSize: IMAGE, imageMountpoint: '/media/teacher/STICK' })).to.include('holds_image');
    });
    it('should not refuse a drive when the image is elsewhere', () => {
      expect(holdsImage(d, '/')).to.equal(false);
      expect(holdsImage(d, undefined)).to.equal(false);
    });
  });

  describe('given a mounted stick', () => {
    it('should refuse it and say how to eject it', () => {
      const d = stick({ allMountpoints: ['/media/teacher/STICK'] });
      expect(isMounted(d)).to.equal(true);
      const f = checkDrive(d, { imageSize: IMAGE }).find((x) => x.code === 'mounted');
      expect(f?.message).to.contain('/media/teacher/STICK').and.contain('Eject');
    });
  });

  describe('given a write-protected stick', () => {
    it('should refuse it and mention the lock switch', () => {
      const d = stick({ readOnly: true });
      expect(isReadOnly(d)).to.equal(true);
      expect(checkDrive(d, { imageSize: IMAGE })[0]!.message).to.contain('lock switch');
    });
  });

  describe('given drives that are not removable', () => {
    it('should refuse an internal SATA disk', () => {
      const d = stick({ transport: 'sata', removable: false, hotplug: false });
      expect(isRemovable(d)).to.equal(false);
      expect(codes(d)).to.deep.equal(['not_removable']);
    });
    it('should accept a USB disk that does not set the removable bit', () => {
      expect(isRemovable(stick({ removable: false, hotplug: false, transport: 'usb' }))).to.equal(true);
    });
    it('should accept a hot-pluggable drive', () => {
      expect(isRemovable(stick({ removable: false, hotplug: true, transport: null }))).to.equal(true);
    });
    it('should refuse a loop device unless loop devices are explicitly allowed', () => {
      const loop = stick({ name: 'loop3', path: '/dev/loop3', type: 'loop', transport: null, removable: false, hotplug: false, model: null, serial: null });
      expect(codes(loop)).to.deep.equal(['not_removable']);
      expect(checkDrive(loop, { imageSize: IMAGE, allowLoop: true })).to.deep.equal([]);
    });
  });

  describe('given several problems at once', () => {
    it('should list every error before any warning', () => {
      const d = stick({ readOnly: true, size: LARGE_DRIVE_BYTES + 1, allMountpoints: ['/mnt/x'] });
      const levels = checkDrive(d, { imageSize: IMAGE }).map((f) => f.level);
      expect(levels).to.deep.equal(['error', 'error', 'warning']);
    });
  });

  describe('given a typed confirmation', () => {
    it('should accept the model or the serial, ignoring case and spaces', () => {
      expect(confirmationMatches(stick(), ' sandisk ultra ')).to.equal(true);
      expect(confirmationMatches(stick(), '4c530001')).to.equal(true);
    });
    it('should refuse anything else, including an empty answer', () => {
      expect(confirmationMatches(stick(), 'sdb')).to.equal(false);
      expect(confirmationMatches(stick(), '')).to.equal(false);
      expect(confirmationMatches(stick(), 'SanDisk')).to.equal(false);
    });
    it('should accept the device name when the drive has no model or serial', () => {
      const loop = stick({ name: 'loop3', path: '/dev/loop3', model: null, serial: null });
      expect(confirmationMatches(loop, 'loop3')).to.equal(true);
    });
  });

  describe('given lsblk JSON output', () => {
    const json = JSON.stringify({
      blockdevices: [
        { name: 'sda', path: '/dev/sda', size: 500107862016, type: 'disk', tran: 'sata', rm: false, hotplug: false, ro: false, model: 'WDC', serial: 'W1', mountpoints: [null], pkname: null,
          children: [
            { name: 'sda1', path: '/dev/sda1', size: 536870912, type: 'part', tran: null, rm: false, hotplug: false, ro: false, model: null, serial: null, mountpoints: ['/boot/efi'], pkname: 'sda' },
            { name: 'sda2', path: '/dev/sda2', size: 499570991104, type: 'part', tran: null, rm: false, hotplug: false, ro: false, model: null, serial: null, mountpoints: [null], pkname: 'sda',
              children: [{ name: 'vg-root', path: '/dev/mapper/vg-root', size: 1, type: 'lvm', rm: false, hotplug: false, ro: false, mountpoints: ['/'], pkname: 'sda2' }] },
          ] },
        { name: 'sdb', path: '/dev/sdb', size: '16008609792', type: 'disk', tran: 'usb', rm: '1', hotplug: '1', ro: '0', model: 'Ultra  ', serial: 'X', mountpoints: [null], pkname: null },
      ],
    });
    it('should flatten the tree and carry mountpoints of partitions and volumes up to the disk', () => {
      const drives = parseLsblk(json);
      expect(drives.map((d) => d.name)).to.deep.equal(['sda', 'sda1', 'sda2', 'vg-root', 'sdb']);
      expect(drives[0]!.allMountpoints).to.have.members(['/boot/efi', '/']);
      expect(isSystemDrive(drives[0]!)).to.equal(true);
      expect(drives[2]!.parent).to.equal('sda');
    });
    it('should read older lsblk output where flags and sizes are strings', () => {
      const sdb = parseLsblk(json).find((d) => d.name === 'sdb')!;
      expect(sdb).to.include({ size: 16008609792, removable: true, hotplug: true, readOnly: false, model: 'Ultra' });
      expect(sdb.allMountpoints).to.deep.equal([]);
    });
  });

  describe('given byte counts', () => {
    it('should print them in the decimal units printed on sticks', () => {
      expect(formatBytes(999)).to.equal('999 bytes');
      expect(formatBytes(16_008_609_792)).to.equal('16.0 GB');
    });
  });
});
