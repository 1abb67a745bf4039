// `skyhost setup --cli` as a person uses it: the real command in a child process, answering its
// prompts one by one (wrong answers included), building from the stand-in ISO with the real remaster
// and writing the result to a loop device with the real USB writer.
import { expect } from 'chai';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkoutRoot } from '../../base/assets.ts';
import { fakeUbuntuIso } from '../support/fake-ubuntu-iso.ts';
import { createLoopDevice, sha256OfPrefix, type LoopDevice } from '../support/loop-device.ts';

const MAIN = path.join(checkoutRoot(), 'appliance/main.ts');

/** A child process whose output we wait on, prompt by prompt. */
class Session {
  readonly child: ChildProcessWithoutNullStreams;
  out = '';
  private read = 0;
  readonly exited: Promise<number>;
  constructor(args: string[]) {
    this.child = spawn(process.execPath, [MAIN, ...args]);
    this.child.stdout.on('data', (b: Buffer) => (this.out += b.toString()));
    this.child.stderr.on('data', (b: Buffer) => (this.out += b.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code ?? -1)));
  }
  /** Waits until `re` appears after what was already consumed; returns the text up to it. */
  async expect(re: RegExp, timeoutMs = 30_000): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const rest = this.out.slice(this.read);
      const m = re.exec(rest);
      if (m) {
        this.read += m.index + m[0].length;
        return rest.slice(0, m.index + m[0].length);
      }
      if (Date.now() > until) throw new Error(`timed out waiting for ${re}; output so far:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  answer(line: string): void {
    this.child.stdin.write(line + '\n');
  }
  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

describe('skyhost setup --cli (terminal menu)', function () {
  this.timeout(240_000);
  let dir: string;
  let iso: string;
  let loop: LoopDevice;
  const sessions: Session[] = [];
  const start = (...args: string[]) => {
    const s = new Session(['setup', '--cli', '--data', path.join(dir, 'data'), ...args]);
    sessions.push(s);
    return s;
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-setup-cli-'));
    iso = await fakeUbuntuIso({ release: '24.04' });
    loop = await createLoopDevice(256 * 1024 * 1024);
  });
  after(async () => {
    for (const s of sessions) s.kill();
    await loop?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('given answers typed one by one, some of them wrong', () => {
    it('should ask again for wrong answers, build the installer and write it to the chosen drive', async () => {
      const s = start('--allow-loop');
      await s.expect(/Choose 1 or 2 \[1\]: /);
      s.answer('3');
      await s.expect(/type 1 or 2/);
      await s.expect(/Choose 1 or 2 \[1\]: /);
      s.answer('1');
      await s.expect(/Name prefix.*: /);
      s.answer('Lab PC');
      expect(await s.expect(/Name prefix.*: /)).to.contain('lower-case letters');
      s.answer('lab');
      for (const q of [/Time zone.*: /, /Keyboard layout.*: /, /locale.*: /, /user name.*: /]) {
        await s.expect(q);
        s.answer('');
      }
      await s.expect(/password.*: /);
      s.answer('correct horse battery');
      await s.expect(/SSH public key.*: /);
      s.answer('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl teacher@laptop');
      await s.expect(/proxy.*: /);
      s.answer('');
      await s.expect(/package mirror.*: /);
      s.answer('');
      await s.expect(/Controller address.*: /);
      s.answer('http://skyhost-controller.local:8080');
      await s.expect(/Join token.*: /);
      s.answer('shj_cli-join-token-01');
      await s.expect(/Choose 1 or 2 \[1\]: /);
      s.answer('1');
      await s.expect(/ISO file: /);
      s.answer('/etc/hostname');
      expect(await s.expect(/ISO file: /)).to.contain('not an Ubuntu live-server ISO');
      s.answer(iso);
      await s.expect(/Save the installer as.*: /);
      const out = path.join(dir, 'lab-installer.iso');
      s.answer(out);
      expect(await s.expect(/Write it to a USB stick now\? \(y\/n\) \[n\]: /, 120_000)).to.contain('The installer is ready');
      s.answer('y');
      const list = await s.expect(/Choose a drive .*: /);
      const line = list.split('\n').find((l) => l.includes(` ${loop.device}`) && /^\s+\d+\)/.test(l));
      expect(line, list).to.be.a('string');
      s.answer(/^\s+(\d+)\)/.exec(line!)![1]!);
      await s.expect(new RegExp(`Type "${loop.name}" to confirm: `));
      s.answer('wrong');
      expect(await s.expect(/Choose a drive .*: /)).to.contain('nothing was written');
      s.answer(/^\s+(\d+)\)/.exec(line!)![1]!);
      await s.expect(new RegExp(`Type "${loop.name}" to confirm: `));
      s.answer(loop.name);
      const done = await s.expect(/You can unplug it\./, 120_000);
      expect(await s.exited).to.equal(0);
      const size = statSync(out).size;
      const sha = createHash('sha256').update(readFileSync(out)).digest('hex');
      expect(done).to.contain(sha);
      expect(sha256OfPrefix(loop.device, size)).to.equal(sha);
    });
  });

  describe('given answers piped in that run out early', () => {
    it('should stop with exit code 2 and write nothing', async () => {
      const s = start();
      s.child.stdin.end('2\nlab-ctl\n');
      expect(await s.exited).to.equal(2);
      expect(s.out).to.contain('Stopped: no more answers. Nothing was written');
    });
  });
});
