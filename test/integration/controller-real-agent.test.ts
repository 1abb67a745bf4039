// The controller's API against one real agent on this machine (libvirt + QEMU under TCG), one
// controller and agent for every check: request a VM of the busybox test guest, use its serial
// console through the controller's proxy, power it off; "save as template" of a stopped VM, whose
// files (a disk flattened on its host; a kernel, initrd and disk for a kernel template, as debian-12
// is) reach the controller's catalog sha256 checked, so any host can pull them; delete.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

/** A 64 MiB qcow2 with `pattern` written at `offset` (qemu-io syntax, e.g. `1M`), for checking that a disk travelled. */
async function markedDisk(file: string, pattern: number, offset: string): Promise<string> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '64M']);
  await run('qemu-io', ['-c', `write -P 0x${pattern.toString(16)} ${offset} 64k`, file]);
  return file;
}

describe('controller with a real agent (libvirt + QEMU, TCG)', function () {
  this.timeout(180_000);
  let pair: RealPair;
  const api: RealPair['api'] = (...args) => pair.api(...args);
  const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
  const catalogFile = (template: string, file: string) => path.join(pair.work, 'controller', 'templates', template, file);

  before(async () => {
    const guest = await buildTestGuest();
    pair = await startRealPair({
      name: 'ctl-real', sshPortRange: '42200-42299', waitForTemplate: 'marked', accel: { accel: 'tcg', reason: 'tests run under TCG' },
      templates: async (agent, work) => {
        // the test guest's kernel with a small disk that carries a marker (it boots to a shell)
        const kdisk = await markedDisk(path.join(work, 'kmarked.qcow2'), 0x6b, '2M');
        await agent.templates.import({ name: 'kmarked', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, disk: kdisk, os: 'busybox', minMemoryMiB: 96 });
        // a disk alone with a marker in it (nothing boots from it: the VM runs in its firmware)
        const disk = await markedDisk(path.join(work, 'marked.qcow2'), 0x5a, '1M');
        await agent.templates.import({ name: 'marked', disk, os: 'none', minMemoryMiB: 64 });
        rmSync(kdisk);
        rmSync(disk);
      },
    });
  });

  after(async function () {
    this.timeout(120_000);
    await pair?.stop();
  });

  describe('a VM of a kernel template (kernel + initrd + disk)', function () {
    let id: string;

    it('creates the VM on the real host, reaches its serial console through the controller and powers it off', async () => {
      const created = await api('POST', '/api/vms', { template: 'kmarked', name: 'real-1', memoryMiB: 256 });
      expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
      id = created.json.id as string;
      expect(created.json.host).to.equal(pair.hostId);
      await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${id}`)).json.state === 'running', 60_000);

      const session = await ConsoleSession.open(pair.ctl.url, `/api/vms/${id}/console`, pair.ctl.services.secrets.adminToken);
      try {
        expect(await session.run('echo ctl-$((6*7))', 90_000)).to.include('ctl-42');
      } finally {
        session.close();
      }

      const off = await api('POST', `/api/vms/${id}/poweroff`);
      expect(off.status, JSON.stringify(off.json)).to.equal(200);
      expect(off.json.state).to.equal('shutoff');
    });

    it('saves it as a template: the kernel, initrd and flattened disk go into the catalog, each the host\'s file', async () => {
      expect(id, 'the VM of the test before').to.be.a('string');
      const saved = await api('POST', `/api/vms/${id}/save-as-template`, { name: 'kmarked-saved' });
      expect(saved.status, JSON.stringify(saved.json)).to.equal(201);
      expect(saved.json, JSON.stringify(saved.json)).to.include({ catalog: true });
      expect(saved.json).to.not.have.property('catalogNote');
      expect(saved.json.template).to.include({ name: 'kmarked-saved', kind: 'kernel' });

      const listed = ((await api('GET', '/api/templates')).json.templates as Array<{ name: string; controller: boolean; hosts: string[]; kind: string; sha256?: string }>).find((t) => t.name === 'kmarked-saved');
      expect(listed).to.include({ controller: true, kind: 'kernel' });
      expect(listed!.hosts).to.include(pair.hostId);

      // what hosts pull: the catalog's manifest names all three files, each the same bytes as on the host
      const manifest = JSON.parse(readFileSync(catalogFile('kmarked-saved', 'manifest.json'), 'utf8')) as { cmdline?: string; files: Array<{ role: string; file: string; sha256: string }> };
      expect(manifest.files.map((f) => f.role).sort()).to.deep.equal(['disk', 'initrd', 'kernel']);
      expect(manifest.cmdline).to.equal(saved.json.template.cmdline);
      for (const f of manifest.files) {
        const host = saved.json.template.files.find((x: { role: string }) => x.role === f.role);
        expect(f.sha256, f.role).to.equal(host.sha256);
        expect(sha256(catalogFile('kmarked-saved', f.file)), f.file).to.equal(f.sha256);
      }
      const disk = catalogFile('kmarked-saved', manifest.files.find((f) => f.role === 'disk')!.file);
      expect((await run('qemu-io', ['-r', '-c', 'read -P 0x6b 2M 64k', disk])).stdout).to.match(/read 65536\/65536 bytes/);
      expect(listed!.sha256).to.equal(manifest.files.find((f) => f.role === 'disk')!.sha256);
      const agentSees = await fetch(`${pair.ctl.url}/api/templates/kmarked-saved/manifest`, { headers: { authorization: `Bearer ${pair.agent.key}` } });
      expect(agentSees.status).to.equal(200);
      expect(((await agentSees.json()) as { files: unknown[] }).files).to.have.length(3);
    });

    it('deletes the VM: gone from the host and from the API', async () => {
      expect(id, 'the VM of the tests before').to.be.a('string');
      expect((await api('DELETE', `/api/vms/${id}`)).status).to.equal(204);
      expect(pair.agent.vms.list().map((v) => v.id)).not.to.include(id);
      expect((await api('GET', `/api/vms/${id}`)).status).to.equal(404);
    });
  });

  it('should flatten a stopped VM of a disk template on its host and put the same file, sha256 checked, in the catalog', async () => {
    const created = await api('POST', '/api/vms', { template: 'marked', name: 'to-save', memoryMiB: 64 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const id = created.json.id as string;
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${id}`)).json.state === 'running', 60_000);
    expect((await api('POST', `/api/vms/${id}/poweroff`)).json.state).to.equal('shutoff');

    const saved = await api('POST', `/api/vms/${id}/save-as-template`, { name: 'marked-saved', description: 'after class' });
    expect(saved.status, JSON.stringify(saved.json)).to.equal(201);
    expect(saved.json).to.include({ catalog: true });
    expect(saved.json.template).to.include({ name: 'marked-saved', kind: 'disk', minMemoryMiB: 64 });

    const listed = ((await api('GET', '/api/templates')).json.templates as Array<{ name: string; controller: boolean; hosts: string[] }>).find((t) => t.name === 'marked-saved');
    expect(listed).to.include({ controller: true });
    expect(listed!.hosts).to.include(pair.hostId);
    // the catalog's file is the host's file, and the marker is in it (the overlay's backing travelled)
    const file = catalogFile('marked-saved', saved.json.template.files[0].file);
    expect(sha256(file)).to.equal(saved.json.template.files[0].sha256);
    const check = await run('qemu-io', ['-r', '-c', 'read -P 0x5a 1M 64k', file]);
    expect(check.stdout).to.match(/read 65536\/65536 bytes/);
    expect((await run('qemu-img', ['info', '--output=json', file])).stdout).not.to.include('backing-filename');

    // a second save under the same name is the cluster's conflict, naming the field
    const again = await api('POST', `/api/vms/${id}/save-as-template`, { name: 'marked-saved' });
    expect(again.status).to.equal(409);
    expect(again.json.error.details.fields[0].field).to.equal('name');
  });
});
