import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../base/exec.ts';
import { runCli } from '../../base/cli.ts';
import { COMMANDS } from '../../appliance/commands.ts';
import { checkTarget, listDrives, writeImage, writeImageSafely, type WriteProgress } from '../../iso/usb.ts';
import { createLoopDevice, writePatternFile, type LoopDevice } from '../support/loop-device.ts';

const MiB = 1024 * 1024;

function readDevice(device: string, length: number): Buffer {
  const fd = openSync(device, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, 0);
    return buf;
  } finally {
    closeSync(fd);
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('usb writer on a real loop device', function () {
  this.timeout(60_000);
  let loop: LoopDevice;
  let dir: string;
  let image: string;
  const IMAGE_BYTES = 9 * MiB + 123; // not a multiple of the chunk or of a sector

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-usb-'));
    image = path.join(dir, 'installer.iso');
    writePatternFile(image, IMAGE_BYTES, 7);
    loop = await createLoopDevice(32 * MiB);
  });
  after(async () => {
    await loop?.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('given a free loop device and loop devices allowed', () => {
    it('should write in chunks with progress, fsync, and verify the read-back sha256', async () => {
      const seen: WriteProgress[] = [];
      const result = await writeImageSafely(image, loop.device, { allowLoop: true, chunkSize: 1 * MiB, onProgress: (p) => seen.push(p) });
      const expected = sha(readFileSync(image));
      expect(result.sha256).to.equal(expected);
      expect(result.bytes).to.equal(IMAGE_BYTES);
      expect(sha(readDevice(loop.device, IMAGE_BYTES))).to.equal(expected);
      const writing = seen.filter((p) => p.phase === 'writing').map((p) => p.bytes);
      expect(writing).to.have.length(10);
      expect(writing.every((b, i) => i === 0 || b > writing[i - 1]!)).to.equal(true);
      expect(writing.at(-1)).to.equal(IMAGE_BYTES);
      expect([...new Set(seen.map((p) => p.phase))]).to.deep.equal(['writing', 'syncing', 'verifying']);
      expect(seen.at(-1)).to.deep.equal({ phase: 'verifying', bytes: IMAGE_BYTES, total: IMAGE_BYTES });
    });
  });

  describe('given loop devices not allowed', () => {
    it('should refuse the loop device as "not a USB stick" and write nothing', async () => {
      const before = sha(readDevice(loop.device, MiB));
      const err = await writeImageSafely(image, loop.device).catch((e) => e);
      expect(err.code).to.equal('drive_refused');
      expect(err.findings.map((f: { code: string }) => f.code)).to.deep.equal(['not_removable']);
      expect(sha(readDevice(loop.device, MiB))).to.equal(before);
    });
  });

  describe('given an image larger than the drive', () => {
    it('should refuse it as too small before opening the drive', async () => {
      const big = path.join(dir, 'big.iso');
      writePatternFile(big, 32 * MiB + 1, 3);
      const { findings } = await checkTarget(big, loop.device, { allowLoop: true });
      expect(findings.map((f) => f.code)).to.deep.equal(['too_small']);
      const exact = path.join(dir, 'exact.iso');
      writePatternFile(exact, 32 * MiB, 3);
      expect((await checkTarget(exact, loop.device, { allowLoop: true })).findings).to.deep.equal([]);
      rmSync(big);
      rmSync(exact);
    });
  });

  describe('given the drive is mounted', () => {
    const mnt = () => path.join(dir, 'mnt');
    before(async () => {
      await run('mkfs.ext4', ['-q', '-F', loop.device]);
      mkdirSync(mnt());
      await run('mount', [loop.device, mnt()]);
    });
    after(async () => {
      await run('umount', [mnt()]).catch(() => undefined);
    });

    it('should refuse it by the guards, naming where it is mounted', async () => {
      const { findings } = await checkTarget(image, loop.device, { allowLoop: true });
      const mounted = findings.find((f) => f.code === 'mounted');
      expect(mounted?.message).to.contain(mnt());
    });
    it('should be refused by the kernel too (O_EXCL) if the guards were skipped', async () => {
      const err = await writeImage(image, loop.device).catch((e) => e);
      expect(err.code).to.equal('conflict');
      expect(err.message).to.match(/in use/);
    });
    it('should refuse the drive holding the image file', async () => {
      const onStick = path.join(mnt(), 'installer.iso');
      writePatternFile(onStick, MiB, 9);
      const { findings } = await checkTarget(onStick, loop.device, { allowLoop: true });
      expect(findings.map((f) => f.code)).to.include.members(['holds_image', 'mounted']);
      rmSync(onStick);
    });
  });

  describe('given a drive that fails under the write (a loop device over a too-small tmpfs)', () => {
    it('should stop with one clear sentence, not a stack trace', async () => {
      const mnt = path.join(dir, 'tiny');
      mkdirSync(mnt);
      await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
      let bad: LoopDevice | undefined;
      try {
        bad = await createLoopDevice(32 * MiB, 'skyhost-bad-', mnt);
        const err = await writeImage(image, bad.device).catch((e) => e);
        expect(err.code).to.equal('write_failed');
        expect(err.message).to.match(new RegExp(`^writing to ${bad.device} failed after .* of 9\\.4 MB: .*try another one\\.$`));
      } finally {
        await bad?.remove();
        await run('umount', [mnt]);
      }
    });
  });

  describe('given the skyhost usb commands', () => {
    const cli = async (...argv: string[]) => {
      let out = '';
      let err = '';
      const code = await runCli(COMMANDS, argv, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
      return { code, out, err };
    };
    it('should list the loop device with --allow-loop and say why the system disk is refused', async () => {
      const { code, out } = await cli('usb', 'list', '--allow-loop', '--json');
      expect(code).to.equal(0);
      const list = JSON.parse(out) as Array<{ drive: { path: string }; findings: Array<{ code: string }> }>;
      expect(list.map((c) => c.drive.path)).to.include(loop.device);
      const root = (await listDrives()).find((c) => c.drive.allMountpoints.includes('/'));
      if (root) expect(root.findings.map((f) => f.code)).to.include('system_drive');
    });
    it('should write with --yes and report the verified sha256', async () => {
      const { code, out } = await cli('usb', 'write', image, loop.device, '--allow-loop', '--yes', '--quiet');
      expect(code, out).to.equal(0);
      expect(out).to.contain(sha(readFileSync(image))).and.contain('matches');
    });
    it('should ask for the drive\'s name on stdin and write only when it is typed', async () => {
      const main = path.resolve(import.meta.dirname, '../../appliance/main.ts');
      const write = (answer: string) => new Promise<{ code: number; out: string }>((resolve) => {
        const child = spawn(process.execPath, [main, 'usb', 'write', image, loop.device, '--allow-loop', '--quiet']);
        let out = '';
        child.stdout.on('data', (b: Buffer) => (out += b.toString()));
        child.stderr.on('data', (b: Buffer) => (out += b.toString()));
        child.on('exit', (code) => resolve({ code: code ?? -1, out }));
        child.stdin.end(answer);
      });
      const wrong = await write('sdb\n');
      expect(wrong.code).to.equal(2);
      expect(wrong.out).to.contain(`Type "${loop.name}" to confirm`).and.contain('Not confirmed: nothing was written');
      const right = await write(`${loop.name}\n`);
      expect(right.code, right.out).to.equal(0);
      expect(right.out).to.contain('matches');
    });
    it('should refuse the system disk with exit code 2 and plain words', async () => {
      const rootDisk = (await listDrives()).find((c) => c.drive.allMountpoints.includes('/'));
      if (!rootDisk) return;
      const { code, out } = await cli('usb', 'write', image, rootDisk.drive.path, '--yes');
      expect(code).to.equal(2);
      expect(out).to.contain('running from').and.contain('nothing was written');
    });
  });
});
