// "Save as template" of a VM whose template boots a kernel (kernel + initrd + disk, as debian-12 is):
// the new template reaches the controller's catalog whole, every file sha256 checked, so any host can
// pull it (it used to stay on the host that made it). Real agent (libvirt + QEMU under TCG) booting the
// test guest's kernel with a small disk that carries a marker.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { buildTestGuest } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

describe('controller: a kernel template saved from a VM goes into the catalog (real agent)', function () {
  this.timeout(180_000);
  let pair: RealPair;
  const api: RealPair['api'] = (...args) => pair.api(...args);

  before(async () => {
    const guest = await buildTestGuest();
    pair = await startRealPair({
      name: 'save-kernel', sshPortRange: '43700-43749', waitForTemplate: 'kmarked', accel: { accel: 'tcg', reason: 'tests run under TCG' },
      templates: async (agent, work) => {
        const image = path.join(work, 'kmarked.qcow2');
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
        await run('qemu-io', ['-c', 'write -P 0x6b 2M 64k', image]);
        await agent.templates.import({ name: 'kmarked', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, disk: image, os: 'busybox', minMemoryMiB: 96 });
        rmSync(image);
      },
    });
  });

  after(async function () {
    this.timeout(120_000);
    await pair?.stop();
  });

  it('copies the kernel, initrd and flattened disk into the catalog, each the host\'s file', async () => {
    const created = await api('POST', '/api/vms', { template: 'kmarked', name: 'k-to-save', memoryMiB: 96 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const id = created.json.id as string;
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${id}`)).json.state === 'running', 60_000);
    const off = await api('POST', `/api/vms/${id}/poweroff`);
    expect(off.json.state, JSON.stringify(off.json)).to.equal('shutoff');

    const saved = await api('POST', `/api/vms/${id}/save-as-template`, { name: 'kmarked-saved' });
    expect(saved.status, JSON.stringify(saved.json)).to.equal(201);
    expect(saved.json, JSON.stringify(saved.json)).to.include({ catalog: true });
    expect(saved.json).to.not.have.property('catalogNote');
    expect(saved.json.template).to.include({ name: 'kmarked-saved', kind: 'kernel' });

    const listed = ((await api('GET', '/api/templates')).json.templates as Array<{ name: string; controller: boolean; hosts: string[]; kind: string; sha256?: string }>).find((t) => t.name === 'kmarked-saved');
    expect(listed).to.include({ controller: true, kind: 'kernel' });
    expect(listed!.hosts).to.include(pair.hostId);

    // what hosts pull: the catalog's manifest names all three files, each the same bytes as on the host
    const manifest = JSON.parse(readFileSync(path.join(pair.work, 'controller', 'templates', 'kmarked-saved', 'manifest.json'), 'utf8')) as { cmdline?: string; files: Array<{ role: string; file: string; sha256: string }> };
    expect(manifest.files.map((f) => f.role).sort()).to.deep.equal(['disk', 'initrd', 'kernel']);
    expect(manifest.cmdline).to.equal(saved.json.template.cmdline);
    for (const f of manifest.files) {
      const host = saved.json.template.files.find((x: { role: string }) => x.role === f.role);
      expect(f.sha256, f.role).to.equal(host.sha256);
      expect(createHash('sha256').update(readFileSync(path.join(pair.work, 'controller', 'templates', 'kmarked-saved', f.file))).digest('hex'), f.file).to.equal(f.sha256);
    }
    const disk = path.join(pair.work, 'controller', 'templates', 'kmarked-saved', manifest.files.find((f) => f.role === 'disk')!.file);
    expect((await run('qemu-io', ['-r', '-c', 'read -P 0x6b 2M 64k', disk])).stdout).to.match(/read 65536\/65536 bytes/);
    expect(listed!.sha256).to.equal(manifest.files.find((f) => f.role === 'disk')!.sha256);
    const agentSees = await fetch(`${pair.ctl.url}/api/templates/kmarked-saved/manifest`, { headers: { authorization: `Bearer ${pair.agent.key}` } });
    expect(agentSees.status).to.equal(200);
    expect(((await agentSees.json()) as { files: unknown[] }).files).to.have.length(3);
  });
});
