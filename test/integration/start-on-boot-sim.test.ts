// VMs come back after a host reboots, on the controller's services with a simulated agent (the real
// agent app over the in-memory hypervisor): a power cut (the agent gone, its VMs shut off) and the
// host down, or a reboot quicker than three polls; on return the VMs that ran and whose setting asks
// for it run again, the others stay off, and the event log says so. The pure choice (reconcile.ts
// `startAgain`) first. The real agent and libvirt: start-on-boot.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import type { VmInfo } from '../../wire/api.ts';
import { MISSED_POLLS_FOR_DOWN } from '../../server/hosts/registry.ts';
import { startAgain } from '../../server/vms/reconcile.ts';
import type { VmRecord } from '../../server/vms/records.ts';
import { createServices, type ControllerServices } from '../../server/services.ts';
import type { User } from '../../server/users/users.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('start on boot: the choice', () => {
  const rec = (id: string, over: Partial<VmRecord> = {}): VmRecord => ({
    id, name: `vm-${id}`, owner: 'anna', template: 'alpine', hostId: 'pc-1', state: 'unknown', vcpus: 1, memoryMiB: 128, diskGiB: 1,
    console: 'serial', createdAt: '2026-01-01T00:00:00Z', ...over,
  });
  const info = (id: string, state: VmInfo['state']): VmInfo => ({
    id, name: `vm-${id}`, template: 'alpine', state, vcpus: 1, memoryMiB: 128, diskGiB: 1, console: 'serial', createdAt: '2026-01-01T00:00:00Z',
  } as VmInfo);
  const records = [rec('a'), rec('b'), rec('c'), rec('d', { hostId: 'pc-2' }), rec('e')];
  const index = { get: (id: string) => records.find((r) => r.id === id), onHost: () => [] };

  it('should start what ran, is this host\'s, is reported shut off and asks for it; nothing else', () => {
    const report = [info('a', 'shutoff'), info('b', 'running'), info('c', 'shutoff'), info('d', 'shutoff'), info('e', 'shutoff')];
    const got = startAgain(index, 'pc-1', ['a', 'b', 'c', 'd', 'gone', 'a'], report, (vm) => vm.id !== 'c', 'lab-03');
    // b runs already, c does not ask for it, d is another host's, e did not run, gone has no record, a once.
    expect(got).to.deep.equal([{ vmId: 'a', reason: 'VM vm-a started again after host lab-03 came back' }]);
  });
});

describe('start on boot: controller services and a simulated agent', function () {
  this.timeout(30_000);
  let dir: string;
  let services: ControllerServices;
  let agent: SimAgent;
  let admin: User;

  const poll = () => services.hosts.pollOne(services.hosts.require(agent.hostId));
  const state = (id: string) => services.vms.get(admin, id).state;
  /** What a power cut does to the PC: the agent gone and every VM off. */
  const powerCut = async () => {
    await agent.stop();
    for (const d of agent.hypervisor!.domains.values()) d.state = 'shutoff';
  };

  beforeEach(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-boot-'));
    services = await createServices({ dataDir: dir, log: logger('test'), pollTimeoutMs: 5000 }); // a stopped agent refuses at once; a running one may answer late on a loaded machine
    admin = services.users.get('admin')!;
    agent = await new SimAgent({ hostname: 'lab-03' }).start();
    services.hosts.enroll({ hostId: agent.hostId, hostname: agent.hostname, agentUrl: agent.url, agentKey: agent.key, version: '1', joinToken: services.joinTokens.clusterToken() });
    await poll();
  });

  afterEach(async () => {
    await services.stop();
    await agent.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  /** Three VMs: `own` on by its own setting, `byTemplate` following the template's default, `off` off by its own; plus `stopped`, on but stopped before. */
  const fourVms = async () => {
    const ids: Record<string, string> = {};
    for (const name of ['own', 'by-template', 'off', 'stopped']) {
      ids[name] = (await services.vms.create(admin, { template: 'alpine', memoryMiB: 128, name })).vm.id;
    }
    services.store.run('INSERT INTO template_policies (template, start_on_boot) VALUES (?, 1) ON CONFLICT(template) DO UPDATE SET start_on_boot = 1', 'alpine');
    services.startOnBoot.set(services.vms.require(admin, ids.own!), true, 'admin');
    services.startOnBoot.set(services.vms.require(admin, ids.off!), false, 'admin');
    services.startOnBoot.set(services.vms.require(admin, ids.stopped!), true, 'admin');
    await services.vms.action(admin, ids.stopped!, 'poweroff');
    await poll();
    for (const n of ['own', 'by-template', 'off']) expect(state(ids[n]!), n).to.equal('running');
    return ids;
  };

  it('should start again, after the host was down, the VMs that ran and ask for it, and say so in the event log', async () => {
    const ids = await fourVms();
    await powerCut();
    for (let i = 0; i < MISSED_POLLS_FOR_DOWN; i++) await poll();
    expect(services.hosts.get(agent.hostId).state).to.equal('down');
    expect(state(ids.own!)).to.equal('unknown');
    await agent.start();
    await poll();
    await services.startOnBoot.settled();
    expect({ own: state(ids.own!), byTemplate: state(ids['by-template']!), off: state(ids.off!), stopped: state(ids.stopped!) })
      .to.deep.equal({ own: 'running', byTemplate: 'running', off: 'shutoff', stopped: 'shutoff' });
    expect(agent.hypervisor!.domains.get(ids.own!)!.state).to.equal('running');
    const messages = services.events.list({ limit: 200 }).map((e) => e.msg);
    expect(messages).to.include('VM own started again after host lab-03 came back');
    expect(messages).to.include('VM by-template started again after host lab-03 came back');
    expect(messages.filter((m) => /^VM (off|stopped) started again/.test(m))).to.deep.equal([]);
  });

  it('should start them again after a reboot quicker than three polls (the agent restarted between two)', async () => {
    const ids = await fourVms();
    await powerCut();
    await agent.start();
    const seen = services.hosts.require(agent.hostId).lastSeen;
    await new Promise((r) => setTimeout(r, 5)); // lastSeen has millisecond precision
    services.hosts.require(agent.hostId).status!.uptimeS += 3600; // the last answer came from an agent up for an hour
    // The first poll may find the pooled connection to the old agent closed: a missed poll, as on a real LAN.
    for (let i = 0; i < 2 && services.hosts.require(agent.hostId).lastSeen === seen; i++) await poll();
    expect(services.hosts.get(agent.hostId).state).to.equal('ready');
    await services.startOnBoot.settled();
    expect([state(ids.own!), state(ids['by-template']!), state(ids.off!)]).to.deep.equal(['running', 'running', 'shutoff']);
  });

  it('should leave alone a VM stopped on purpose while its host stays up, and let a VM follow its template again (null)', async () => {
    const ids = await fourVms();
    await services.vms.action(admin, ids.own!, 'poweroff');
    await poll();
    await services.startOnBoot.settled();
    expect(state(ids.own!)).to.equal('shutoff');
    services.startOnBoot.set(services.vms.require(admin, ids.own!), null, 'admin');
    expect(services.startOnBoot.setting(ids.own!)).to.equal(null);
    expect(services.startOnBoot.wanted(services.vms.require(admin, ids.own!))).to.equal(true); // the template's default
  });
});
