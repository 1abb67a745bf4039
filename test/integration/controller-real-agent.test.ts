// The controller's API against a real agent on this machine (libvirt + QEMU under TCG, the busybox
// test guest): request a VM, use its serial console through the controller's proxy, power it off,
// delete it. One guest for every check.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';

describe('controller with a real agent (libvirt + QEMU, TCG)', function () {
  this.timeout(180_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-ctl-real-'));
  const hostId = `ctl-real-${process.pid}`;
  let agent: RunningAgent | undefined;
  let ctl: RunningController | undefined;
  let token: string;
  let vmId: string | undefined;

  const api = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(ctl!.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  before(async () => {
    configureLogging({ out: () => {} });
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    const guest = await buildTestGuest();
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42200-42299' },
      log: logger('agent'), hostId, port: 0, listen: '127.0.0.1', key: 'ctl-real-agent-key-0123456789',
    });
    await agent.templates.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1 });
    token = ctl.services.secrets.adminToken;
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: 'lab-pc-real', agentUrl: agent.url, agentKey: agent.key, joinToken: ctl.services.secrets.joinToken, version: 'test' }),
    });
    expect(enrolled.status).to.equal(200);
    await waitFor('the host to report its template', () => ctl!.services.templates.find('guest') !== undefined, 20_000);
  });

  after(async function () {
    this.timeout(120_000);
    await ctl?.stop().catch(() => {});
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch(() => {});
      await agent.stop().catch(() => {});
    }
    // the host id is new each run: its NAT network would otherwise stay behind
    await removeNetwork(networkName(hostId));
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('creates a VM on the real host, reaches its serial console through the controller, powers it off and deletes it', async () => {
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'real-1', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    vmId = created.json.id as string;
    expect(created.json.host).to.equal(hostId);
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running', 60_000);

    const session = await ConsoleSession.open(ctl!.url, `/api/vms/${vmId}/console`, token);
    try {
      expect(await session.run('echo ctl-$((6*7))', 90_000)).to.include('ctl-42');
    } finally {
      session.close();
    }

    const off = await api('POST', `/api/vms/${vmId}/poweroff`);
    expect(off.status, JSON.stringify(off.json)).to.equal(200);
    expect(off.json.state).to.equal('shutoff');

    expect((await api('DELETE', `/api/vms/${vmId}`)).status).to.equal(204);
    expect(agent!.vms.list().map((v) => v.id)).not.to.include(vmId);
    expect((await api('GET', `/api/vms/${vmId}`)).status).to.equal(404);
  });
});
