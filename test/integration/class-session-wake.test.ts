// A class session in a room that sleeps, over simulated hosts (the real agent app over the in-memory
// hypervisor) and the controller in-process on a clock the test moves: the students no awake host fits
// wake the sleeping hosts and wait on their tiles, and get their VMs when a host comes up; past the
// deadline, or at the end of the session, they fail with the reason and no VM is left half-made.
// Magic packets go to a recorder (test/integration/wake-on-lan.test.ts sends real ones).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { WAKE_WAIT_MS } from '../../server/classes/sessions.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import type { ControllerServices } from '../../server/services.ts';
import type { User } from '../../server/users/users.ts';
import { makeClass, password } from '../support/classroom.ts';
import { TestClock } from '../support/clock.ts';
import { waitFor } from '../support/net.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

const MACS: Record<string, string> = { 'lab-awake': '52:54:00:00:0a:01', 'lab-b': '52:54:00:00:0a:02', 'lab-c': '52:54:00:00:0a:03' };
const WAITING = 'waiting for a host to wake (lab-b, lab-c)';

describe('class sessions wake sleeping hosts (simulated hosts)', function () {
  this.timeout(60_000);
  let dir: string;
  let controller: RunningController;
  let clock: TestClock;
  let services: ControllerServices;
  let teacher: User;
  let classId: string;
  let sent: string[];
  const agents: Record<string, SimAgent> = {};

  /** Lets the work that timers and host events started run to its end (no agent call is involved). */
  const settle = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  };
  const poll = (name: string) => services.hosts.pollOne(services.hosts.require(name));
  const vmsOf = (student: string) => services.vms.records(services.system, { owner: student });
  const tiles = () => services.sessions.mine(teacher)[0]!.tiles.map((t) => [t.student, t.vm ? t.vm.host : t.waiting?.message ?? t.failure?.code]);

  const open = async () => {
    controller = await startController({
      dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, clock, pollTimeoutMs: 5000, answerWithinMs: 2000, // polls: a simulated agent's answer on a loaded machine; the sleeping hosts refuse at once
      sendWake: async (mac) => void sent.push(mac),
    });
    services = controller.services;
    services.sessions.startTimer();
  };

  beforeEach(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-session-wake-'));
    clock = new TestClock(Date.now());
    sent = [];
    await open();
    // lab-awake has room for one VM of 512 MiB; lab-b and lab-c for two each, but they sleep.
    for (const [name, memoryMiB] of [['lab-awake', 1536], ['lab-b', 2560], ['lab-c', 2560]] as const) {
      const a = agents[name] = await new SimAgent({ hostId: name, hostname: name, memoryMiB }).start();
      services.hosts.enroll({ hostId: name, hostname: name, agentUrl: a.url, agentKey: a.key, version: 'test', joinToken: services.secrets.joinToken, mac: MACS[name] });
      await poll(name);
    }
    for (const name of ['lab-b', 'lab-c']) {
      await services.hosts.sleep(name, 'admin');
      await agents[name]!.stop();
      await poll(name);
      expect(services.hosts.get(name).state).to.equal('asleep');
    }
    classId = await makeClass(services, '7b', 'ms-berg', ['anna', 'ben', 'cleo']);
    teacher = services.users.get('ms-berg')!;
  });

  afterEach(async () => {
    await controller?.stop();
    for (const a of Object.values(agents)) await a.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('wakes the sleeping hosts for the students no awake host fits, shows them waiting, and places their VMs as a host comes up', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'alpine', memoryMiB: 512, minutes: 45 });
    expect(view.failures).to.deep.equal([]);
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', WAITING], ['cleo', WAITING]]);
    expect(view.tiles[1]!.waiting).to.include({ since: new Date(clock.now()).toISOString(), until: new Date(clock.now() + WAKE_WAIT_MS).toISOString() });
    expect(view.counts.waiting).to.equal(2);
    expect(sent).to.have.members([MACS['lab-b'], MACS['lab-c']]);
    expect(vmsOf('ben').concat(vmsOf('cleo')), 'nothing is made while waiting').to.deep.equal([]);
    const page = new PageClient(controller.url);
    await page.login('ms-berg', password('ms-berg'));
    const grid = (await page.get(`/sessions/${view.id}`)).text;
    const ben = grid.slice(grid.indexOf('data-student="ben"'), grid.indexOf('</li>', grid.indexOf('data-student="ben"')));
    expect(ben).to.contain('data-state="waiting"').and.contain('>waiting for a host</span>').and.contain(`${WAITING}; given up at`);
    expect(grid).to.contain('2 waiting for a host to wake');

    // lab-b boots and answers its first poll: both waiting students fit there.
    await agents['lab-b']!.start();
    await poll('lab-b');
    await settle();
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', 'lab-b'], ['cleo', 'lab-b']]);
    const placed = [...vmsOf('ben'), ...vmsOf('cleo')];
    expect(placed.map((v) => v.name)).to.deep.equal(['7b-ben', '7b-cleo']);
    expect(services.store.all('SELECT session_id, start_on_boot FROM vms WHERE id IN (?, ?)', placed[0]!.id, placed[1]!.id))
      .to.deep.equal([{ session_id: view.id, start_on_boot: 1 }, { session_id: view.id, start_on_boot: 1 }]);
    // made on lab-b over HTTP: as long as a loaded machine takes (the test's timeout bounds it)
    await waitFor('both VMs running', () => placed.every((v) => v.state === 'running'), 50_000, 20);
    const now = services.sessions.view(teacher, view.id);
    expect(now.failures).to.deep.equal([]);
    expect(now.counts).to.deep.equal({ running: 3 });
    expect(sent).to.have.length(2);
  });

  it('gives a waiting student up at the deadline with the scheduler\'s reasons, leaving no VM behind', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'alpine', memoryMiB: 512, minutes: 45 });
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', WAITING], ['cleo', WAITING]]);
    await clock.advance(WAKE_WAIT_MS - 1000); // tried again every 30 s meanwhile: still nothing awake fits
    await settle();
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', WAITING], ['cleo', WAITING]]);
    await clock.advance(1000);
    await settle();
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', 'wake_timeout'], ['cleo', 'wake_timeout']]);
    const failures = services.sessions.view(teacher, view.id).failures;
    expect(failures[0]!.message).to.match(/^no host woke in time: waited 10 min for lab-b, lab-c to wake and take this VM, and none did: /);
    expect(failures[0]!.reasons?.map((r) => r.hostname)).to.have.members(['lab-awake', 'lab-b', 'lab-c']);
    expect(vmsOf('ben').concat(vmsOf('cleo'))).to.deep.equal([]);
    expect(services.store.get("SELECT 1 FROM settings WHERE key LIKE 'class-session-waiting:%'")).to.equal(undefined);
    // A host that wakes after the deadline places nobody: the session lists the failures.
    await agents['lab-b']!.start();
    await poll('lab-b');
    await settle();
    expect([...agents['lab-b']!.vms.keys()]).to.deep.equal([]);
  });

  it('lists the students still waiting when the session ends, and makes nothing for them', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'alpine', memoryMiB: 512, minutes: 45 });
    services.sessions.end(teacher, view.id);
    await services.sessions.settled(view.id);
    const ended = services.sessions.view(teacher, view.id);
    expect(ended.state).to.equal('ended');
    expect(ended.failures.map((f) => [f.student, f.code, f.message])).to.deep.equal([
      ['ben', 'session_ended', 'the session ended before a host woke for this VM (lab-b, lab-c were being woken)'],
      ['cleo', 'session_ended', 'the session ended before a host woke for this VM (lab-b, lab-c were being woken)'],
    ]);
    await agents['lab-b']!.start();
    await poll('lab-b');
    await settle();
    expect(vmsOf('ben').concat(vmsOf('cleo'))).to.deep.equal([]);
  });

  it('keeps the students waiting through a restart of the controller', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'alpine', memoryMiB: 512, minutes: 45 });
    await controller.stop();
    await open();
    teacher = services.users.get('ms-berg')!;
    for (const name of ['lab-awake', 'lab-b', 'lab-c']) await poll(name);
    await settle();
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', WAITING], ['cleo', WAITING]]);
    expect(services.sessions.view(teacher, view.id).tiles[1]!.waiting?.until).to.equal(new Date(Date.parse(view.createdAt) + WAKE_WAIT_MS).toISOString());
    await agents['lab-c']!.start();
    await poll('lab-c');
    await settle();
    expect(tiles()).to.deep.equal([['anna', 'lab-awake'], ['ben', 'lab-c'], ['cleo', 'lab-c']]);
  });
});
