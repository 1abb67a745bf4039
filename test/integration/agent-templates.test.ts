// `skyhost template import|list|rm` on a data folder, with real qemu-img images and real libvirt for
// the "in use" check: both template kinds, sha256 checks, refusals that leave nothing behind.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { runCli } from '../../base/cli.ts';
import { COMMANDS } from '../../appliance/commands.ts';
import { run } from '../../base/exec.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { LibvirtHypervisor } from '../../agent/hypervisor/libvirt/libvirt.ts';
import { logger } from '../../base/log.ts';
import { sha256File } from '../../agent/templates.ts';
import { buildTestGuest, type TestGuest } from '../support/guest.ts';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(COMMANDS, argv, { stdout: (s) => (out += s), stderr: (s) => (err += s), env: {} });
  return { code, out, err };
}

describe('skyhost template import|list|rm', function () {
  this.timeout(60_000);
  let dir: string;
  let data: string;
  let disk: string;
  let guest: TestGuest;

  before(async function () {
    guest = await buildTestGuest();
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-templates-'));
    data = path.join(dir, 'data');
    disk = path.join(dir, 'alpine.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
  });

  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  const leftovers = () => (existsSync(path.join(data, 'templates')) ? readdirSync(path.join(data, 'templates')).filter((n) => n.startsWith('.')) : []);

  it('should import a disk template with its sha256 checked and list it', async function () {
    const sum = await sha256File(disk);
    const r = await cli('template', 'import', 'alpine-3', '--disk', disk, '--sha256', sum, '--os', 'alpine', '--min-memory', '64', '--data', data);
    expect(r.code, r.err).to.equal(0);
    const manifest = JSON.parse(readFileSync(path.join(data, 'templates/alpine-3/manifest.json'), 'utf8'));
    expect(manifest).to.include({ name: 'alpine-3', kind: 'disk', os: 'alpine', minMemoryMiB: 64, console: 'serial', needsKvm: false });
    expect(manifest.files).to.deep.equal([{ role: 'disk', file: 'disk.qcow2', bytes: manifest.files[0].bytes, sha256: sum, format: 'qcow2', virtualBytes: 64 * 1024 * 1024 }]);
    expect(await sha256File(path.join(data, 'templates/alpine-3/disk.qcow2'))).to.equal(sum);
    const list = await cli('template', 'list', '--data', data);
    expect(list.out).to.match(/^alpine-3\tdisk\talpine\tserial\t64\t-/m);
  });

  it('should import a kernel template (kernel + initrd + cmdline) with a sha256 for each file', async function () {
    const sums = [await sha256File(guest.kernel), await sha256File(guest.initrd)];
    const r = await cli('template', 'import', 'tiny', '--kernel', guest.kernel, '--initrd', guest.initrd, '--cmdline', guest.cmdline,
      '--sha256', sums[0]!, '--sha256', sums[1]!, '--data', data);
    expect(r.code, r.err).to.equal(0);
    const json = JSON.parse((await cli('template', 'list', '--json', '--data', data)).out);
    const tiny = json.find((t: { name: string }) => t.name === 'tiny');
    expect(tiny).to.include({ kind: 'kernel', cmdline: guest.cmdline });
    expect(tiny.files.map((f: { role: string; sha256: string }) => [f.role, f.sha256])).to.deep.equal([['kernel', sums[0]], ['initrd', sums[1]]]);
  });

  it('should refuse a wrong sha256 and leave nothing behind', async function () {
    const r = await cli('template', 'import', 'bad-sum', '--disk', disk, '--sha256', '0'.repeat(64), '--data', data);
    expect(r.code).to.equal(2);
    expect(r.err).to.match(/sha256 is [0-9a-f]{64}, expected 0{64}/);
    expect(existsSync(path.join(data, 'templates/bad-sum'))).to.equal(false);
    expect(leftovers()).to.deep.equal([]);
  });

  it('should refuse an image with a backing file, a missing file, a second import of a name, and hostile names', async function () {
    const overlay = path.join(dir, 'overlay.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', disk, overlay]);
    const cases: [string[], RegExp][] = [
      [['overlayed', '--disk', overlay], /backing file/],
      [['missing', '--disk', path.join(dir, 'nope.qcow2')], /not a readable file/],
      [['alpine-3', '--disk', disk], /already exists/],
      [['../evil', '--disk', disk], /^skyhost: name:/],
      [['a;b', '--disk', disk], /^skyhost: name:/],
      [['x', '--initrd', guest.initrd], /disk/],
    ];
    for (const [args, re] of cases) {
      const r = await cli('template', 'import', ...args, '--data', data);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.err, args.join(' ')).to.match(re);
    }
    expect(readdirSync(path.join(data, 'templates')).sort()).to.deep.equal(['alpine-3', 'tiny']);
  });

  it('should build a tiny busybox template from this machine\'s kernel and busybox, and refuse a bad name', async function () {
    const r = await cli('template', 'build', 'tiny-built', '--busybox', '--data', data);
    expect(r.code, r.err).to.equal(0);
    const t = JSON.parse((await cli('template', 'list', '--json', '--data', data)).out).find((x: { name: string }) => x.name === 'tiny-built');
    expect(t).to.include({ kind: 'kernel', os: 'busybox', console: 'serial' });
    expect(t.files.map((f: { role: string }) => f.role)).to.deep.equal(['kernel', 'initrd']);
    expect(t.cmdline).to.include('console=ttyS0');
    const bad = await cli('template', 'build', '$(id)', '--busybox', '--data', data);
    expect(bad.code).to.equal(2);
    expect((await cli('template', 'build', 'x', '--data', data)).code).to.equal(2);
    expect((await cli('template', 'rm', 'tiny-built', '--data', data)).code).to.equal(0);
  });

  it('should refuse to remove a template a VM uses, then remove it when none does', async function () {
    await ensureDaemons();
    const hostId = `tpl-${randomBytes(3).toString('hex')}`;
    const id = randomBytes(6).toString('hex');
    const metadata = { hostId, dataDir: data, id, name: 'user-of-tiny', template: 'tiny', vcpus: 1, memoryMiB: 64, mac: '52:54:00:aa:bb:cc', ip: '10.213.250.2', console: 'serial' as const, network: 'default', createdAt: new Date().toISOString() };
    // another agent's VM in this data folder: defined, never started, enough for the in-use check
    const hypervisor = new LibvirtHypervisor({ hostId, dataDir: data, log: logger('test') });
    await hypervisor.define({ metadata, accel: 'tcg', disk: false, kernel: { kernel: guest.kernel } });
    try {
      const r = await cli('template', 'rm', 'tiny', '--data', data);
      expect(r.code).to.equal(2);
      expect(r.err).to.match(/used by VM\(s\) user-of-tiny/);
      expect(existsSync(path.join(data, 'templates/tiny/manifest.json'))).to.equal(true);
    } finally {
      await hypervisor.destroy(id);
    }
    expect((await cli('template', 'rm', 'tiny', '--data', data)).code).to.equal(0);
    expect(existsSync(path.join(data, 'templates/tiny'))).to.equal(false);
    const again = await cli('template', 'rm', 'tiny', '--data', data);
    expect(again.code).to.equal(2);
    expect(again.err).to.match(/not found/);
  });
});
