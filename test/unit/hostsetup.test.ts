import { expect } from 'chai';
import { ACCEL_MARKER, decideAccel, probeBootSector } from '../../host/accel.ts';
import { HOST_PACKAGES, missingPackages, TEST_PACKAGES } from '../../host/hostsetup.ts';

describe('host setup', () => {
  describe('missingPackages', () => {
    it('should count only fully installed packages as present', () => {
      const dpkg = [
        'libvirt-clients install ok installed',
        'qemu-utils deinstall ok config-files',
        'xorriso:amd64 install ok installed',
        'qemu-system-x86 install ok half-configured',
      ].join('\n');
      expect(missingPackages(['libvirt-clients', 'qemu-utils', 'xorriso', 'qemu-system-x86', 'ovmf'], dpkg))
        .to.deep.equal(['qemu-utils', 'qemu-system-x86', 'ovmf']);
    });

    it('should find nothing missing when all are installed', () => {
      const dpkg = HOST_PACKAGES.map((p) => `${p} install ok installed`).join('\n');
      expect(missingPackages(HOST_PACKAGES, dpkg)).to.deep.equal([]);
    });

    it('should keep the test tools apart from what a host needs', () => {
      expect(HOST_PACKAGES).to.include.members(['libvirt-daemon-system', 'qemu-system-x86', 'qemu-utils', 'xorriso']);
      expect(TEST_PACKAGES).to.include.members(['chromium', 'ovmf', 'avahi-daemon', 'busybox-static', 'grub-pc-bin']);
      expect(HOST_PACKAGES).to.not.include('chromium');
    });
  });

  describe('decideAccel', () => {
    const table = [
      { given: { qemuPresent: false, kvmDevice: true }, accel: 'none', says: 'not installed' },
      { given: { qemuPresent: true, kvmDevice: true, kvmBoot: 'ok' }, accel: 'kvm', says: 'KVM' },
      { given: { qemuPresent: true, kvmDevice: true, kvmBoot: 'timeout', tcgBoot: 'ok' }, accel: 'tcg', says: 'did not finish' },
      { given: { qemuPresent: true, kvmDevice: true, kvmBoot: 'error', tcgBoot: 'ok' }, accel: 'tcg', says: 'could not start' },
      { given: { qemuPresent: true, kvmDevice: false, tcgBoot: 'ok' }, accel: 'tcg', says: 'no /dev/kvm' },
      { given: { qemuPresent: true, kvmDevice: false, tcgBoot: 'timeout' }, accel: 'none', says: 'failed too' },
    ] as const;
    for (const row of table) {
      it(`should answer ${row.accel} given ${JSON.stringify(row.given)}`, () => {
        const r = decideAccel(row.given);
        expect(r.accel).to.equal(row.accel);
        expect(r.reason).to.contain(row.says);
      });
    }
  });

  describe('probeBootSector', () => {
    it('should be one boot sector that carries the marker', () => {
      const s = probeBootSector();
      expect(s.length).to.equal(512);
      expect([s[510], s[511]]).to.deep.equal([0x55, 0xaa]);
      expect(s.toString('latin1')).to.contain(ACCEL_MARKER);
      // mov si, imm16 must point at the marker, loaded at 0x7c00
      const si = s.readUInt16LE(8);
      expect(s.toString('latin1', si - 0x7c00, si - 0x7c00 + ACCEL_MARKER.length)).to.equal(ACCEL_MARKER);
    });
  });
});
