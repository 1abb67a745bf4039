// The controller's API against a real agent on this machine (libvirt + QEMU under TCG, the busybox
// test guest): request a VM, use its serial console through the controller's proxy, power it off,
// delete it. One guest for every check.
import { expect } from 'chai';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

describe('controller with a real agent (libvirt + QEMU, TCG)', function () {
  this.timeout(180_000);
  let pair: RealPair;
  let vmId: string | undefined;
  const api: RealPair['api'] = (...args) => pair.api(...args);

  before(async () => {
    const guest = await buildTestGuest();
    pair = await startRealPair({
      name: 'ctl-real', sshPortRange: '42200-42299', waitForTemplate: 'guest',
      templates: async (agent) => {
        await agent.templates.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
      },
    });
  });

  after(async function () {
    this.timeout(120_000);
    await pair?.stop();
  });

  it('creates a VM on the real host, reaches its serial console through the controller, powers it off and deletes it', async () => {
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'real-1', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    vmId = created.json.id as string;
    expect(created.json.host).to.equal(pair.hostId);
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running', 60_000);

    const session = await ConsoleSession.open(pair.ctl.url, `/api/vms/${vmId}/console`, pair.ctl.services.secrets.adminToken);
    try {
      expect(await session.run('echo ctl-$((6*7))', 90_000)).to.include('ctl-42');
    } finally {
      session.close();
    }

    const off = await api('POST', `/api/vms/${vmId}/poweroff`);
    expect(off.status, JSON.stringify(off.json)).to.equal(200);
    expect(off.json.state).to.equal('shutoff');

    expect((await api('DELETE', `/api/vms/${vmId}`)).status).to.equal(204);
    expect(pair.agent.vms.list().map((v) => v.id)).not.to.include(vmId);
    expect((await api('GET', `/api/vms/${vmId}`)).status).to.equal(404);
  });
});
