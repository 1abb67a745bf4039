import { expect } from 'chai';
import { pickIso } from '../../appliance/setup/download.ts';
import { checkIsoForm, checkOptionsForm, emptyOptionsForm, readOptionsForm, toInstallerOptions } from '../../appliance/setup/plan.ts';

describe('web installer plan', () => {
  describe('given a SHA256SUMS file', () => {
    const sums = [
      `${'a'.repeat(64)} *ubuntu-24.04-live-server-amd64.iso`,
      `${'b'.repeat(64)} *ubuntu-24.04.2-live-server-amd64.iso`,
      `${'c'.repeat(64)} *ubuntu-24.04.1-live-server-amd64.iso`,
      `${'d'.repeat(64)} *ubuntu-24.04.3-desktop-amd64.iso`,
    ].join('\n');
    it('should pick the newest point release of the live-server ISO', () => {
      expect(pickIso(sums, '24.04')).to.deep.equal({ name: 'ubuntu-24.04.2-live-server-amd64.iso', sha256: 'b'.repeat(64) });
    });
    it('should find nothing for a release the file does not list', () => {
      expect(pickIso(sums, '22.04')).to.equal(undefined);
    });
  });

  describe('given hostile option values', () => {
    const bad = {
      hostnamePrefix: 'lab pc',
      adminUser: 'root',
      password: 'ab\ncd efgh',
      sshKeys: 'ssh-ed25519 AAAA x\nrm -rf /',
      timezone: 'Europe/Paris; reboot',
      locale: 'en_US.UTF-8\nfoo: bar',
      proxy: 'http://proxy:3128/"quote',
      controllerUrl: 'javascript:alert(1)',
      joinToken: "tok'en; reboot",
    };
    it('should name every bad field and never pass the value through', () => {
      const errors = checkOptionsForm(emptyOptionsForm(bad));
      expect(Object.keys(errors).sort()).to.deep.equal(Object.keys(bad).sort());
      expect(errors.sshKeys).to.contain('line 2');
    });
    it('should drop a controller address and join token for the controller role (they are for host nodes)', () => {
      const form = readOptionsForm({ role: 'controller', controllerUrl: 'http://c:8080', joinToken: 'shj_abcdefgh' });
      expect(toInstallerOptions(form)).to.not.have.any.keys('controllerUrl', 'joinToken');
    });
  });

  describe('given good options from a form', () => {
    it('should keep only known fields and turn them into installer options', () => {
      const form = readOptionsForm({ role: 'agent', hostnamePrefix: ' lab ', sshKeys: '\nssh-ed25519 AAAAC3Nz teacher\n', extra: 'ignored', joinToken: ['a', 'b'] });
      expect(checkOptionsForm(form)).to.deep.equal({});
      expect(toInstallerOptions(form, '$6$salt$hash')).to.deep.equal({
        role: 'agent', hostnamePrefix: 'lab', adminUser: 'skyhost', sshKeys: ['ssh-ed25519 AAAAC3Nz teacher'], timezone: 'Etc/UTC',
        keyboardLayout: 'us', locale: 'en_US.UTF-8', adminPasswordHash: '$6$salt$hash',
      });
    });
  });

  describe('given the ISO step', () => {
    it('should need a path that exists, or a http(s) mirror and a known release', () => {
      expect(checkIsoForm({ source: 'path', isoPath: '', ubuntuMirror: '', release: '' }).errors).to.have.property('isoPath');
      expect(checkIsoForm({ source: 'path', isoPath: '/nonexistent.iso', ubuntuMirror: '', release: '' }).errors.isoPath).to.contain('there is no file');
      expect(checkIsoForm({ source: 'path', isoPath: '/tmp', ubuntuMirror: '', release: '' }).errors.isoPath).to.contain('folder');
      expect(checkIsoForm({ source: 'download', isoPath: '', ubuntuMirror: 'ftp://x', release: '20.04' }).errors).to.have.keys('ubuntuMirror', 'release');
      expect(checkIsoForm({ source: 'download', isoPath: '', ubuntuMirror: 'http://mirror.school/ubuntu/', release: '22.04' }).source)
        .to.deep.equal({ kind: 'download', mirror: 'http://mirror.school/ubuntu', release: '22.04' });
    });
  });
});
