// The ISO remaster against real tools: xorriso, GRUB, QEMU (TCG) with SeaBIOS and OVMF. The stand-in
// Ubuntu ISO (test/support/fake-ubuntu-iso.ts) has the live-server layout; its busybox initrd prints
// the kernel command line and /cdrom/nocloud/user-data on the serial port.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa, type ResultPromise } from 'execa';
import { checkoutRoot } from '../../base/assets.ts';
import { buildBinary } from '../../appliance/build.ts';
import { SkyError } from '../../base/errors.ts';
import { run } from '../../base/exec.ts';
import { VERSION } from '../../base/version.ts';
import { validateUserData } from '../../autoinstall/validate.ts';
import { md5File, parseMd5Sums } from '../../iso/md5sums.ts';
import { buildInstallerIso, type BuildIsoResult, type BuildProgress } from '../../iso/remaster.ts';
import { FAKE_MARKERS, fakeOtherIso, fakeUbuntuIso } from '../support/fake-ubuntu-iso.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv4Wkq9p0Y3tG4yW2bJk0m5c8iQ0x1Zr2s3t4u5v6w7 teacher@lab';
const BOOT_TIMEOUT_MS = 150_000;

/** `xorriso -report_el_torito as_mkisofs` without what differs between two images (offsets, dates, paths). */
async function bootRecord(iso: string): Promise<string[]> {
  const { stdout } = await run('xorriso', ['-indev', iso, '-report_el_torito', 'as_mkisofs']);
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('-'))
    .filter((l) => !l.startsWith('--modification-date'))
    .map((l) => l.replace(/--interval:local_fs:[^:]*:([^:]*):'.*'$/, '--interval:local_fs:X:$1:ISO').replace(/_start_\d+s_size_\d+d/, '_start_Xs_size_Xd'));
}

async function extract(iso: string, dir: string, ...files: string[]): Promise<void> {
  await run('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract_l', '/', dir, ...files, '--']);
}

interface Boot {
  log: string;
  cmdline: string;
  firmware: string;
  /** The device the initrd found the ISO on: /dev/sr0 (CD) or /dev/sda (disk, as a USB stick). */
  medium: string;
  userData: string;
}

const children = new Set<ResultPromise>();

/** Boots the image under QEMU (TCG) as a CD or as a disk (the way a USB stick boots), BIOS or UEFI. */
async function bootImage(iso: string, firmware: 'bios' | 'uefi', as: 'cd' | 'disk', dir: string): Promise<Boot> {
  const logFile = path.join(dir, `${firmware}-${as}.log`);
  const drive = as === 'cd' ? `file=${iso},media=cdrom,readonly=on,if=ide` : `file=${iso},format=raw,if=ide,snapshot=on`;
  const args = ['-machine', 'pc', '-accel', 'tcg', '-m', '512', '-display', 'none', '-monitor', 'none', '-no-reboot',
    '-serial', `file:${logFile}`, '-drive', drive, ...(as === 'cd' ? ['-boot', 'd'] : [])];
  if (firmware === 'uefi') {
    const vars = path.join(dir, `OVMF_VARS-${as}.fd`);
    copyFileSync('/usr/share/OVMF/OVMF_VARS.fd', vars);
    args.unshift('-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd', '-drive', `if=pflash,format=raw,file=${vars}`);
  }
  const child = execa('qemu-system-x86_64', args, { reject: false, timeout: BOOT_TIMEOUT_MS, stdin: 'ignore' });
  children.add(child);
  const result = await child;
  children.delete(child);
  const log = existsSync(logFile) ? readFileSync(logFile, 'latin1').replace(/\r/g, '') : '';
  if (!log.includes(FAKE_MARKERS.done)) {
    throw new Error(`${firmware} ${as} boot did not finish (exit ${result.exitCode}, timed out: ${result.timedOut}): ${log.slice(-1500)}`);
  }
  const line = (marker: string) => log.split('\n').find((l) => l.includes(marker))?.split(marker)[1]?.trim() ?? '';
  const begin = log.indexOf(FAKE_MARKERS.userDataBegin + '\n') + FAKE_MARKERS.userDataBegin.length + 1;
  return {
    log,
    cmdline: line(FAKE_MARKERS.cmdline),
    firmware: line(FAKE_MARKERS.firmware),
    medium: line(FAKE_MARKERS.medium),
    userData: log.slice(begin, log.indexOf(FAKE_MARKERS.userDataEnd)),
  };
}

describe('skyhost iso build (xorriso remaster)', function () {
  this.timeout(300_000);
  let dir: string;
  let iso2404: string;
  let iso2204: string;

  before(async () => {
    if (!existsSync(path.join(checkoutRoot(), 'dist/skyhost'))) await buildBinary({ quiet: true });
    [iso2404, iso2204] = await Promise.all([fakeUbuntuIso({ release: '24.04' }), fakeUbuntuIso({ release: '22.04' })]);
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-iso-test-'));
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('given an Ubuntu 24.04 live-server ISO and agent options', () => {
    let out: string;
    let result: BuildIsoResult;
    const progress: BuildProgress[] = [];
    let files: string;

    before(async () => {
      out = path.join(dir, 'agent-24.04.iso');
      result = await buildInstallerIso(
        { role: 'agent', ubuntuIso: iso2404, out, hostnamePrefix: 'lab', sshKeys: [KEY], controllerUrl: 'http://controller.local:8080', joinToken: 'join-3f9a2c7e' },
        (p) => progress.push(p),
      );
      files = path.join(dir, 'agent-files');
      mkdirSync(files);
      await run('xorriso', ['-osirrox', 'on', '-indev', out, '-extract', '/', files]);
    });

    it('should report the release, the kept volume id and progress up to done', async () => {
      expect(result).to.include({ out, release: '24.04', volumeId: 'Ubuntu-Server 24.04.1 LTS amd64', grubEntries: 2 });
      expect(result.warnings[0]).to.match(/ERASES THE LARGEST DISK/);
      expect(progress.map((p) => p.step)).to.include.members(['check', 'inspect', 'prepare', 'write', 'done']);
      expect(progress.at(-1)).to.deep.equal({ step: 'done', fraction: 1 });
      for (let i = 1; i < progress.length; i++) expect(progress[i]!.fraction).to.be.at.least(progress[i - 1]!.fraction);
      const { stdout } = await run('xorriso', ['-indev', out, '-pvd_info']);
      expect(stdout).to.match(/^Volume Id\s*:\s*Ubuntu-Server 24\.04\.1 LTS amd64$/m);
    });

    it('should keep the BIOS and UEFI boot records of the input', async () => {
      const [before, after] = await Promise.all([bootRecord(iso2404), bootRecord(out)]);
      expect(after).to.deep.equal(before);
      expect(after).to.include("-b '/boot/grub/i386-pc/eltorito.img'");
      expect(after.join('\n')).to.match(/-append_partition 2 28732ac11ff8d211ba4b00a0c93ec93b/);
      expect(after.join('\n')).to.match(/-e '--interval:appended_partition_2_start_Xs_size_Xd:all::'/);
      const { stdout } = await run('xorriso', ['-indev', out, '-report_system_area', 'plain']);
      expect(stdout).to.match(/GPT/).and.match(/MBR/);
    });

    it('should start the unattended install from every install entry of grub.cfg', () => {
      const cfg = readFileSync(path.join(files, 'boot/grub/grub.cfg'), 'utf8');
      const linuxLines = cfg.split('\n').filter((l) => /^\s*linux\s+\/casper\//.test(l));
      expect(linuxLines).to.have.length(2);
      for (const l of linuxLines) expect(l).to.match(/vmlinuz autoinstall ds=nocloud\\;s=\/cdrom\/nocloud\/ ---$/);
    });

    it('should list every file with its right md5 in md5sum.txt, the new ones included', async () => {
      const sums = parseMd5Sums(readFileSync(path.join(files, 'md5sum.txt'), 'utf8'));
      for (const f of ['/nocloud/user-data', '/nocloud/meta-data', '/skyhost/skyhost', '/skyhost/config.yaml', '/boot/grub/grub.cfg', '/casper/vmlinuz']) {
        expect(sums.has(f), f).to.equal(true);
      }
      for (const [f, sum] of sums) expect(await md5File(path.join(files, f)), f).to.equal(sum);
    });

    it('should carry valid user-data, the config for the agent and the executable', async () => {
      const auto = validateUserData(readFileSync(path.join(files, 'nocloud/user-data'), 'utf8'));
      expect(auto.identity).to.include({ hostname: 'lab' });
      expect(readFileSync(path.join(files, 'nocloud/meta-data'), 'utf8')).to.contain('instance-id');
      expect(readFileSync(path.join(files, 'skyhost/config.yaml'), 'utf8')).to.contain('controllerUrl: http://controller.local:8080').and.not.contain('join-3f9a2c7e');
      expect(readFileSync(path.join(files, 'skyhost/join-token'), 'utf8')).to.equal('join-3f9a2c7e\n');
      expect(readFileSync(path.join(files, 'skyhost/skyhost-agent.service'), 'utf8')).to.contain('ExecStart=/usr/local/bin/skyhost agent');
      const { stdout } = await run(path.join(files, 'skyhost/skyhost'), ['--version'], { timeout: 30_000 });
      expect(stdout.trim()).to.equal(`skyhost ${VERSION}`);
    });

    for (const as of ['cd', 'disk'] as const) {
      it(`should boot as a ${as === 'cd' ? 'CD' : 'disk (a USB stick)'} from BIOS and from UEFI into the installer with autoinstall, and read the user-data`, async () => {
        const bootDir = path.join(dir, `boot-${as}`);
        mkdirSync(bootDir);
        const [bios, uefi] = await Promise.all([bootImage(out, 'bios', as, bootDir), bootImage(out, 'uefi', as, bootDir)]);
        const userData = readFileSync(path.join(files, 'nocloud/user-data'), 'utf8');
        for (const [name, boot] of [['bios', bios], ['efi', uefi]] as const) {
          expect(boot.firmware, name).to.equal(name);
          expect(boot.medium, name).to.equal(as === 'cd' ? '/dev/sr0' : '/dev/sda');
          expect(boot.cmdline, name).to.contain('/casper/vmlinuz autoinstall ds=nocloud;s=/cdrom/nocloud/ ---');
          expect(boot.userData, name).to.equal(userData);
        }
      });
    }
  });

  describe('given an Ubuntu 22.04 live-server ISO and `skyhost iso build --role controller` run by the single executable', () => {
    it('should embed the executable itself, edit loopback.cfg too and leave out what 22.04 does not know', async () => {
      const binary = path.join(checkoutRoot(), 'dist/skyhost');
      const out = path.join(dir, 'controller-22.04.iso');
      const keyFile = path.join(dir, 'teacher.pub');
      writeFileSync(keyFile, `# the teacher's key\n${KEY}\n`);
      const cli = await run(binary, ['iso', 'build', '--role', 'controller', '--ubuntu-iso', iso2204, '--out', out, '--hostname-prefix', 'skyctl', '--ssh-key', keyFile], { timeout: 120_000 });
      expect(cli.stdout).to.match(/SkyHost controller installer from Ubuntu 22\.04/).and.match(/ERASES THE LARGEST DISK/);
      expect(cli.stderr).to.contain('100% done');
      expect(await bootRecord(out)).to.deep.equal(await bootRecord(iso2204));
      const { stdout } = await run('xorriso', ['-indev', out, '-pvd_info']);
      expect(stdout).to.match(/^Volume Id\s*:\s*Ubuntu-Server 22\.04\.4 LTS amd64$/m);
      const files = path.join(dir, 'controller-files');
      mkdirSync(files);
      await extract(out, files, '/boot/grub/loopback.cfg', '/boot/grub/grub.cfg', '/nocloud/user-data', '/skyhost/skyhost-controller.service', '/skyhost/skyhost');
      for (const cfg of ['grub.cfg', 'loopback.cfg']) {
        const lines = readFileSync(path.join(files, 'boot/grub', cfg), 'utf8').split('\n').filter((l) => /^\s*linux\s+\/casper\//.test(l));
        expect(lines, cfg).to.have.length(2);
        for (const l of lines) expect(l, cfg).to.contain('autoinstall ds=nocloud\\;s=/cdrom/nocloud/ ---');
      }
      expect(readFileSync(path.join(files, 'boot/grub/loopback.cfg'), 'utf8')).to.contain('iso-scan/filename=${iso_path} autoinstall');
      const auto = validateUserData(readFileSync(path.join(files, 'nocloud/user-data'), 'utf8'), '22.04');
      expect(JSON.stringify(auto.storage)).not.to.contain('sizing-policy');
      expect(auto.packages).to.include('avahi-daemon');
      expect(auto.ssh).to.deep.include({ 'authorized-keys': [KEY] });
      expect(existsSync(path.join(files, 'skyhost/skyhost-controller.service'))).to.equal(true);
      expect(await md5File(path.join(files, 'skyhost/skyhost'))).to.equal(await md5File(binary));
    });

    it('should exit 2 with one line naming a bad option, and write nothing', async () => {
      const out = path.join(dir, 'bad.iso');
      const r = await execa(path.join(checkoutRoot(), 'dist/skyhost'), ['iso', 'build', '--role', 'agent', '--ubuntu-iso', iso2204, '--out', out, '--hostname-prefix', 'lab pc'], { reject: false });
      expect(r.exitCode).to.equal(2);
      expect(String(r.stderr).trim().split('\n').at(-1)).to.match(/^skyhost: options\.hostnamePrefix: must be/);
      expect(existsSync(out)).to.equal(false);
    });
  });

  describe('given bad input', () => {
    /** Runs the build, expects a SkyError with `code` matching `message`, and nothing left in `outDir`. */
    async function expectFailure(opts: { ubuntuIso: string; out: string }, code: string, message: RegExp): Promise<void> {
      const before = readdirSync(path.dirname(opts.out));
      try {
        await buildInstallerIso({ role: 'agent', ...opts });
        expect.fail('the build should have failed');
      } catch (e) {
        expect(e, String(e)).to.be.instanceOf(SkyError);
        expect((e as SkyError).code).to.equal(code);
        expect((e as SkyError).message).to.match(message);
      }
      expect(readdirSync(path.dirname(opts.out))).to.deep.equal(before);
    }

    it('should refuse an ISO that is not Ubuntu live-server, leaving no output', async () => {
      const other = await fakeOtherIso(dir);
      await expectFailure({ ubuntuIso: other, out: path.join(dir, 'x.iso') }, 'invalid_field', /ubuntuIso: .* is not an Ubuntu live-server ISO/);
      await expectFailure({ ubuntuIso: '/etc/hostname', out: path.join(dir, 'x.iso') }, 'invalid_field', /not an ISO 9660 image/);
    });

    it('should refuse an unreadable input: missing, a folder, or cut short (in the tree or in the data)', async () => {
      await expectFailure({ ubuntuIso: path.join(dir, 'missing.iso'), out: path.join(dir, 'x.iso') }, 'invalid_field', /missing\.iso does not exist/);
      await expectFailure({ ubuntuIso: dir, out: path.join(dir, 'x.iso') }, 'invalid_field', /is not a file/);
      const whole = readFileSync(iso2404);
      for (const fraction of [0.3, 0.95]) {
        const cut = path.join(dir, `cut-${fraction}.iso`);
        writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * fraction)));
        await expectFailure({ ubuntuIso: cut, out: path.join(dir, 'x.iso') }, 'invalid_field', /is truncated or damaged/);
        rmSync(cut);
      }
    });

    it('should stop when cancelled while writing, leaving no output', async () => {
      const out = path.join(dir, 'cancelled.iso');
      const before = readdirSync(dir);
      const controller = new AbortController();
      try {
        await buildInstallerIso({ role: 'agent', ubuntuIso: iso2404, out, signal: controller.signal }, (p) => {
          if (p.step === 'write') controller.abort();
        });
        expect.fail('the build should have been cancelled');
      } catch (e) {
        expect((e as SkyError).code, String(e)).to.equal('cancelled');
      }
      expect(readdirSync(dir)).to.deep.equal(before);
    });

    it('should say so when xorriso is missing', async () => {
      const bin = path.join(dir, 'bin-without-xorriso');
      mkdirSync(bin);
      symlinkSync('/bin/sh', path.join(bin, 'sh'));
      const saved = process.env.PATH;
      process.env.PATH = bin;
      try {
        await expectFailure({ ubuntuIso: iso2404, out: path.join(dir, 'x.iso') }, 'missing_tool', /xorriso is not installed/);
      } finally {
        process.env.PATH = saved;
      }
    });

    describe('given an output folder on a full filesystem', () => {
      let mnt: string;
      before(async () => {
        mnt = path.join(dir, 'small-tmpfs');
        mkdirSync(mnt);
        await run('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'skyhost-iso-test', mnt]);
      });
      after(async () => {
        await run('umount', [mnt]).catch(() => run('umount', ['-l', mnt]));
      });

      it('should fail with disk_full before writing, leaving nothing behind', async () => {
        await expectFailure({ ubuntuIso: iso2404, out: path.join(mnt, 'x.iso') }, 'disk_full', /not enough space in .*small-tmpfs/);
      });
    });
  });
});
