// Save as template, reset to template and installing from an ISO, on the real libvirt + QEMU (TCG):
// the test guest with its disk driver writes a marker in raw bytes on its disk; the marker travels
// into a saved template and a VM made from it, and a reset takes it away while the name, MAC and
// address stay. A bootable ISO made here (GRUB) boots a VM with an empty disk of the size asked for.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configSchema, defaults } from '../../base/config.ts';
import { run } from '../../base/exec.ts';
import { Logger } from '../../base/log.ts';
import { domainName, hostTag } from '../../agent/hypervisor/libvirt/domain.ts';
import { listDomains, removeDomain } from '../../agent/hypervisor/libvirt/libvirt.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { virsh } from '../../agent/hypervisor/libvirt/virsh.ts';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { buildTestGuest, ConsoleSession, type TestGuest } from '../support/guest.ts';
import { guestInitrdWithDisk, ISO_GRUB_MARKER, makeBootableIso } from '../support/installer-iso.ts';
import { jsonOrText } from '../support/net.ts';
import { REPO } from '../support/netns.ts';

/** Errors only, and not the refusals these tests cause on purpose. */
class TestLog extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
}

/** Where the marker goes on the guest's disk: 512-byte sector 2048 (1 MiB in). */
const SECTOR = 2048;

describe('VM disks and templates on real libvirt/QEMU: save as template, reset, install from an ISO', function () {
  this.timeout(300_000);
  const key = randomBytes(16).toString('hex');
  const hostId = `itest-disks-${randomBytes(3).toString('hex')}`;
  let dataDir = '';
  let agent: RunningAgent | undefined;
  let base = '';
  let guest: TestGuest;
  const sessions: ConsoleSession[] = [];

  const api = async (method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await fetch(base + p, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: jsonOrText(await res.text()) };
  };
  const consoleOf = async (id: string) => {
    const s = await ConsoleSession.open(base, `/vms/${id}/console`, key);
    sessions.push(s);
    return s;
  };
  /** What the guest reads at SECTOR: its first 16 bytes with the zeros dropped. */
  const readMarker = async (s: ConsoleSession) => {
    const out = await s.run(`printf 'got[%s]\\n' "$(dd if=/dev/vda bs=512 skip=${SECTOR} count=1 2>/dev/null | head -c 16 | tr -d '\\000')"`, 120_000);
    const m = /got\[([A-Za-z0-9]*)\]/.exec(out);
    if (!m) throw new Error(`the guest printed no marker line: ${JSON.stringify(out)}`);
    return m[1]!;
  };

  before(async function () {
    await ensureDaemons();
    guest = await buildTestGuest();
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-disks-'));
    chmodSync(dataDir, 0o711);
    // the test guest with the virtio disk driver: it sees a VM's disk as /dev/vda
    const initrd = path.join(dataDir, 'initrd-disk.gz');
    await guestInitrdWithDisk(guest, initrd);
    await new TemplateStore(dataDir).import({ name: 'disk-guest', kernel: guest.kernel, initrd, cmdline: guest.cmdline, os: 'busybox' });
    rmSync(initrd);
    const low = 24000 + Math.floor(Math.random() * 500) * 10;
    agent = await startAgent({
      config: configSchema.parse({ ...defaults({ isRoot: true, cwd: REPO }), dataDir, listen: '127.0.0.1', sshPortRange: `${low}-${low + 9}`, logLevel: 'warn' }),
      log: new TestLog('disks-test'), key, hostId, port: 0, listen: '127.0.0.1', accel: { accel: 'tcg', reason: 'tests run under TCG' },
    });
    base = `http://127.0.0.1:${agent.port}`;
  });

  after(async function () {
    for (const s of sessions) s.close();
    await agent?.stop();
    const prefix = `sky-${hostTag(hostId)}-`;
    for (const name of (await listDomains()).keys()) if (name.startsWith(prefix)) await removeDomain(name);
    await removeNetwork(networkName(hostId));
    if (dataDir && !process.env.SKYHOST_TEST_KEEP) rmSync(dataDir, { recursive: true, force: true });
  });

  describe('given a VM that wrote a marker on its disk', function () {
    let writer: any;
    const marker = `SKY${randomBytes(4).toString('hex')}`;

    it('should write the marker in raw bytes on the VM\'s disk and read it back', async function () {
      const a = await api('POST', '/vms', { name: 'writer', template: 'disk-guest', diskGiB: 1 });
      expect(a.status, JSON.stringify(a.body)).to.equal(201);
      writer = a.body;
      const s = await consoleOf(writer.id);
      expect(await s.run('cat /sys/block/vda/size', 120_000)).to.include(String(1024 ** 3 / 512));
      await s.run(`printf ${marker} | dd of=/dev/vda bs=512 seek=${SECTOR} conv=notrunc 2>/dev/null; sync`);
      expect(await readMarker(s)).to.equal(marker);
    });

    it('should refuse a reset while the VM is being created (409) and change nothing', async function () {
      const id = `making${randomBytes(3).toString('hex')}`;
      const creating = api('POST', '/vms', { id, name: 'being-made', template: 'disk-guest', diskGiB: 1 });
      let seen = await api('GET', `/vms/${id}`);
      while (seen.status === 404) seen = await api('GET', `/vms/${id}`);
      expect(seen.body.state).to.equal('creating');
      const reset = await api('POST', `/vms/${id}/reset`);
      const save = await api('POST', `/vms/${id}/save-as-template`, { name: 'too-early' });
      expect((await creating).status).to.equal(201);
      expect(reset.status, JSON.stringify(reset.body)).to.equal(409);
      expect(reset.body.error.message).to.match(/being created/);
      expect(save.status).to.equal(409);
      expect((await api('DELETE', `/vms/${id}`)).status).to.equal(204);
    });

    it('should save the stopped VM as a standalone template that carries the marker into a new VM', async function () {
      expect((await api('POST', `/vms/${writer.id}/shutdown`, { timeoutSeconds: 120 })).body.state).to.equal('shutoff');
      const t0 = performance.now();
      const a = await api('POST', `/vms/${writer.id}/save-as-template`, { name: 'after-lesson' });
      const saveMs = performance.now() - t0;
      expect(a.status, JSON.stringify(a.body)).to.equal(201);
      expect(a.body).to.include({ kind: 'kernel', cmdline: guest.cmdline, os: 'busybox' });
      expect(a.body.files.map((f: { role: string }) => f.role)).to.have.members(['kernel', 'initrd', 'disk']);
      const store = new TemplateStore(dataDir);
      const image = store.pathOf((await store.get('after-lesson'))!, 'disk')!;
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', image])).stdout);
      expect(info['backing-filename'], 'standalone').to.equal(undefined);
      expect(info['virtual-size']).to.equal(1024 ** 3);
      console.log(`      (save as template of a 1 GiB disk: ${Math.round(saveMs)} ms, on a machine other engineers load)`);

      const child = await api('POST', '/vms', { name: 'reader', template: 'after-lesson' });
      expect(child.status, JSON.stringify(child.body)).to.equal(201);
      const s = await consoleOf(child.body.id);
      expect(await readMarker(s)).to.equal(marker);
      expect((await api('DELETE', `/vms/${child.body.id}`)).status).to.equal(204);
      expect((await api('DELETE', '/templates/after-lesson')).status).to.equal(204);
    });

    it('should reset the running VM: the marker is gone, its id, name, MAC and address stay', async function () {
      expect((await api('POST', `/vms/${writer.id}/start`)).body.state).to.equal('running');
      const t0 = performance.now();
      const a = await api('POST', `/vms/${writer.id}/reset`);
      const resetMs = performance.now() - t0;
      expect(a.status, JSON.stringify(a.body)).to.equal(200);
      expect(a.body).to.include({ id: writer.id, name: 'writer', mac: writer.mac, ip: writer.ip, state: 'running' });
      console.log(`      (reset of a running VM: ${Math.round(resetMs)} ms)`);
      const dom = domainName(hostId, writer.id);
      expect(await virsh(['domiflist', dom])).to.include(writer.mac);
      const s = await consoleOf(writer.id);
      expect(await readMarker(s)).to.equal('');
      // the guest takes the same address by DHCP (its MAC's reservation)
      let addr = '';
      for (let i = 0; i < 120 && !addr.includes(`${writer.ip}/`); i++) {
        addr = await s.run('ip -4 addr show eth0');
        if (!addr.includes(`${writer.ip}/`)) await new Promise((r) => setTimeout(r, 500));
      }
      expect(addr).to.include(`${writer.ip}/`);
      expect((await api('DELETE', `/vms/${writer.id}`)).status).to.equal(204);
    });
  });

  describe('given an installer ISO', function () {
    it('should boot a VM from the ISO on its CD-ROM, with an empty disk of the size asked for and a VNC console', async function () {
      const iso = path.join(dataDir, 'installer-src.iso');
      await makeBootableIso(guest, iso);
      await new TemplateStore(dataDir).import({ name: 'installer', iso, os: 'test-installer' });
      rmSync(iso);
      const a = await api('POST', '/vms', { name: 'installing', template: 'installer', diskGiB: 2 });
      expect(a.status, JSON.stringify(a.body)).to.equal(201);
      const vm = a.body;
      expect(vm).to.include({ console: 'vnc', diskGiB: 2, state: 'running' });
      try {
        // QEMU has the installer as a read-only CD-ROM beside the disk
        const blk = await virsh(['domblklist', domainName(hostId, vm.id), '--details']);
        expect(blk).to.match(/cdrom\s+hdd\s+\S+installer\.iso/);
        const s = await consoleOf(vm.id);
        await s.waitFor(new RegExp(ISO_GRUB_MARKER), 120_000);
        expect(await s.run('cat /sys/block/vda/size', 120_000)).to.include(String(2 * 1024 ** 3 / 512));
        expect(await s.run('dd if=/dev/vda bs=1M count=4 2>/dev/null | tr -d "\\000" | wc -c')).to.match(/^\s*0\s*$/m);
        const { WebSocket } = await import('ws');
        const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/vms/${vm.id}/vnc`, { headers: { authorization: `Bearer ${key}` } });
        const banner = await new Promise<string>((resolve, reject) => {
          ws.once('message', (d: Buffer) => resolve(d.toString('latin1')));
          ws.once('error', reject);
        });
        ws.close();
        expect(banner).to.match(/^RFB 003\.00\d\n/);
      } finally {
        expect((await api('DELETE', `/vms/${vm.id}`)).status).to.equal(204);
      }
      // saved after the install, it is a disk template (what was installed), kept on the screen
      expect((await api('DELETE', '/templates/installer')).status).to.equal(204);
    });
  });
});
