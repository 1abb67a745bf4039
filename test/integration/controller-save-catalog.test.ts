// "Save as template" through the controller with a real agent (libvirt + QEMU under TCG): the VM's
// disk, flattened on its host, is copied into the controller's catalog with its sha256 checked, so
// any host can pull it. The template is a small qcow2 with a marker written in it; no guest boots.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

describe('controller: save as template into the catalog (real agent)', function () {
  this.timeout(180_000);
  let pair: RealPair;
  const api: RealPair['api'] = (...args) => pair.api(...args);

  before(async () => {
    pair = await startRealPair({
      name: 'save-cat', sshPortRange: '42300-42399', waitForTemplate: 'marked', accel: { accel: 'tcg', reason: 'tests run under TCG' },
      templates: async (agent, work) => {
        // a 64 MiB disk with a marker in it (nothing boots from it: the VM runs in its firmware)
        const image = path.join(work, 'marked.qcow2');
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
        await run('qemu-io', ['-c', 'write -P 0x5a 1M 64k', image]);
        await agent.templates.import({ name: 'marked', disk: image, os: 'none', minMemoryMiB: 64 });
        rmSync(image);
      },
    });
  });

  after(async function () {
    this.timeout(120_000);
    await pair?.stop();
  });

  it('should flatten the stopped VM on its host and put the same file, sha256 checked, in the catalog', async () => {
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
    const file = path.join(pair.work, 'controller', 'templates', 'marked-saved', saved.json.template.files[0].file);
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).to.equal(saved.json.template.files[0].sha256);
    const check = await run('qemu-io', ['-r', '-c', 'read -P 0x5a 1M 64k', file]);
    expect(check.stdout).to.match(/read 65536\/65536 bytes/);
    expect((await run('qemu-img', ['info', '--output=json', file])).stdout).not.to.include('backing-filename');

    // a second save under the same name is the cluster's conflict, naming the field
    const again = await api('POST', `/api/vms/${id}/save-as-template`, { name: 'marked-saved' });
    expect(again.status).to.equal(409);
    expect(again.json.error.details.fields[0].field).to.equal('name');
  });
});
