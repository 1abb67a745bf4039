// A real agent restarted with a VM that was running: the controller starts it again. One controller
// and one real agent (libvirt + QEMU under TCG, the busybox test guest) in this process; the reboot
// of the PC is played as a power cut: the agent stopped, the domain switched off hard (libvirt's
// "destroy", the driver's poweroff), the agent started again at the same address. The VM runs
// again afterwards, answers on its console, and the event log says why.
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { loadHypervisor } from '../../agent/hypervisor/load.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { bearerApi, type ApiCall } from '../support/real-pair.ts';

describe('start on boot with a real agent (libvirt + QEMU, TCG)', function () {
  this.timeout(300_000);
  const hostId = `boot-${process.pid}`;
  const key = 'start-on-boot-agent-key-0123456789';
  let work: string;
  let agent: RunningAgent | undefined;
  let ctl: RunningController | undefined;
  let api: ApiCall;
  let port = 0;

  const runAgent = async () => {
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42500-42599' },
      log: logger('agent'), hostId, port, listen: '127.0.0.1', key, accel: { accel: 'tcg', reason: 'tests run under TCG' },
    });
    port = agent.port;
    return agent;
  };

  before(async () => {
    const guest = await buildTestGuest();
    configureLogging({ out: () => {} });
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-boot-'));
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    // in the store before the agent starts: its first status lists the template (the next sample is 5 s later)
    await new TemplateStore(path.join(work, 'agent')).import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
    const a = await runAgent();
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1 });
    const started = ctl;
    api = bearerApi(() => started.url, () => started.services.secrets.adminToken);
    const enrolled = await api('POST', '/api/enroll', { hostId, hostname: 'lab-03', agentUrl: a.url, agentKey: key, joinToken: ctl.services.secrets.joinToken, version: 'test' });
    expect(enrolled.status, JSON.stringify(enrolled.json)).to.equal(200);
    await waitFor('the host to report its template', () => started.services.templates.find('guest') !== undefined, 20_000);
  });

  after(async function () {
    this.timeout(120_000);
    // each step whatever the one before did: a leftover domain or NAT network would outlive the run
    await ctl?.stop().catch((err: Error) => process.stderr.write(`controller stop: ${err.message}\n`));
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch((err: Error) => process.stderr.write(`delete ${vm.id}: ${err.message}\n`));
      await agent.stop().catch((err: Error) => process.stderr.write(`agent stop: ${err.message}\n`));
    }
    await removeNetwork(networkName(hostId));
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('should run the VM again after its host comes back from a power cut, and say so in the event log', async () => {
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'essay-7', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const vmId = created.json.id as string;
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running', 60_000);
    const patched = await api('PATCH', `/api/vms/${vmId}`, { startOnBoot: true });
    expect(patched.status, JSON.stringify(patched.json)).to.equal(200);
    expect(patched.json).to.deep.include({ startOnBoot: true, startsOnBoot: true });

    // The power cut: the agent gone, the domain off as if the plug was pulled.
    await agent!.stop();
    agent = undefined;
    const hv = await loadHypervisor({ hostId, dataDir: path.join(work, 'agent'), log: logger('test') });
    try {
      await hv.poweroff(vmId);
      expect(await hv.state(vmId)).to.equal('shutoff');
    } finally {
      await hv.close();
    }
    await runAgent();

    await waitFor('the VM to run again', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running' &&
      (await agent!.vms.get(vmId)).state === 'running', 60_000, 250);
    const events = (await api('GET', `/api/events?limit=200&vmId=${vmId}`)).json.events as Array<{ msg: string }>;
    expect(events.map((e) => e.msg)).to.include('VM essay-7 started again after host lab-03 came back');
    const session = await ConsoleSession.open(ctl!.url, `/api/vms/${vmId}/console`, ctl!.services.secrets.adminToken);
    try {
      expect(await session.run('echo back-$((6*7))', 120_000)).to.include('back-42');
    } finally {
      session.close();
    }
  });
});
