// Class sessions over simulated hosts (test/support/sim-agent.ts: the real agent app over the in-memory
// hypervisor), the controller in-process with real SQLite and HTTP and a clock the test moves: a
// teacher starts a session of 30 students in one call, the VMs spread over the hosts, the grid shows
// 30 tiles, the end time shuts them down; a student of another class sees none of them; refusals
// are listed per student with the scheduler's reasons; a controller back after the end time ends
// the session at once.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { makeClass, password } from '../support/classroom.ts';
import { TestClock } from '../support/clock.ts';
import { waitFor } from '../support/net.ts';
import { PageClient } from '../support/page-client.ts';
import { SimFleet } from '../support/sim-agent.ts';

const HOSTS = 8;
const STUDENTS = 30;

describe('class sessions (simulated hosts)', function () {
  this.timeout(120_000);
  let dir: string;
  let clock: TestClock;
  let ctl: RunningController;
  let fleet: SimFleet;
  let classId: string;
  const tokens: Record<string, string> = {};
  const students = Array.from({ length: STUDENTS }, (_, i) => `pupil-${String(i + 1).padStart(2, '0')}`);

  async function api(method: string, p: string, who: string, body?: unknown) {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${tokens[who]}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

  async function start(opts: { clock: TestClock }) {
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000, clock: opts.clock });
    ctl.services.sessions.startTimer();
    tokens.admin = ctl.services.secrets.adminToken;
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-class-sessions-'));
    clock = new TestClock(Date.now());
    await start({ clock });
    fleet = await SimFleet.start(HOSTS, () => ({ memoryMiB: 8192, threads: 8 }));
    await fleet.enroll(ctl.url, ctl.services.secrets.joinToken);
    await ctl.services.hosts.pollAll();
    const s = ctl.services;
    classId = await makeClass(s, '7b', 'ms-berg', students);
    await makeClass(s, '8a', 'mr-lund', ['8a-01']);
    for (const name of ['ms-berg', 'mr-lund', '8a-01', students[0]!]) tokens[name] = s.users.createToken(name, 'test').token;
  });

  after(async () => {
    await ctl?.stop();
    await fleet?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts 30 VMs in one call, spread over the hosts; the grid shows 30 tiles; the end time shuts them down', async () => {
    const t0 = clock.now();
    // The class's lease default is shorter than the lesson: the session's VMs last until its end anyway.
    ctl.services.store.run('UPDATE classes SET lease_default_minutes = 30 WHERE id = ?', classId);
    const started = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', { template: 'alpine', vcpus: 1, memoryMiB: 256, minutes: 45, keepDisks: true });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const session = started.json;
    expect(session).to.include({ classId, className: '7b', teacher: 'ms-berg', state: 'running', keepDisks: true, endsAt: new Date(t0 + 45 * 60_000).toISOString() });
    expect(session.secondsLeft).to.equal(45 * 60);
    expect(session.failures).to.deep.equal([]);
    expect(session.tiles.map((t: { student: string }) => t.student)).to.deep.equal(students);
    // Every student has a VM of their own, named after the class and the student, all requested by that one call.
    for (const tile of session.tiles) expect(tile.vm?.name, tile.student).to.equal(`7b-${tile.student}`);
    const ids: string[] = session.tiles.map((t: { vm: { id: string } }) => t.vm.id);
    const records = ids.map((id) => ctl.services.vms.require(ctl.services.system, id));
    expect(records.map((r) => r.owner)).to.deep.equal(students);

    // Spread: every host got some, none more than one above another.
    const perHost = new Map<string, number>();
    for (const r of records) perHost.set(r.hostId, (perHost.get(r.hostId) ?? 0) + 1);
    expect(perHost.size).to.equal(HOSTS);
    expect(Math.max(...perHost.values()) - Math.min(...perHost.values())).to.be.at.most(1);
    // Tagged: the class, the session, started again after a host's reboot while the session runs.
    const tags = ctl.services.store.all('SELECT class_id, session_id, start_on_boot FROM vms WHERE session_id = ?', session.id);
    expect(tags).to.have.length(STUDENTS);
    expect(tags.every((t) => t.class_id === classId && t.start_on_boot === 1)).to.equal(true);
    expect(records.every((r) => r.classId === classId)).to.equal(true); // in memory too: the class's quota counts them
    expect(records.map((r) => r.expiresAt)).to.deep.equal(students.map(() => session.endsAt));

    // The VMs come up; the teacher's grid page shows a tile per student with a console button.
    await waitFor('every VM running', () => records.every((r) => r.state === 'running'), 60_000, 50);
    const teacher = new PageClient(ctl.url);
    await teacher.login('ms-berg', password('ms-berg'));
    const page = await teacher.get(`/sessions/${session.id}`);
    expect(page.status).to.equal(200);
    expect(page.text.match(/<li class="tile /g)).to.have.length(STUDENTS);
    expect(page.text.match(/>Console<\/a>/g)).to.have.length(STUDENTS);
    expect(page.text).to.contain('45 min left').and.contain('End now');
    // The grid is polled: the partial alone for htmx; the teacher opens any student's VM page (its console).
    const part = await teacher.get(`/sessions/${session.id}`, { 'HX-Request': 'true' });
    expect(part.text.trimStart()).to.match(/^<div id="session-grid"[^>]* hx-trigger="every 3s"/);
    expect((await teacher.get(`/vms/${ids[7]}`)).status).to.equal(200);
    // A second session of the same class while this one runs is refused.
    const again = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', { template: 'alpine', minutes: 30 });
    expect(again.status).to.equal(409);

    // The end time: every VM is shut down, the disks kept, start on boot off.
    await clock.advance(44 * 60_000);
    expect(ctl.services.sessions.view(ctl.services.system, session.id).secondsLeft).to.equal(60);
    expect(records.every((r) => r.state === 'running')).to.equal(true);
    await clock.advance(60_000);
    await ctl.services.sessions.settled(session.id);
    const ended = (await api('GET', `/api/sessions/${session.id}`, 'ms-berg')).json;
    expect(ended.state).to.equal('ended');
    expect(ended.tiles.map((t: { vm: { state: string } }) => t.vm.state)).to.deep.equal(students.map(() => 'shutoff'));
    const onHosts = fleet.agents.flatMap((a) => [...a.vms.entries()]).filter(([id]) => ids.includes(id));
    expect(onHosts.map(([, v]) => v.state)).to.deep.equal(ids.map(() => 'shutoff'));
    expect(ctl.services.store.all('SELECT DISTINCT start_on_boot FROM vms WHERE session_id = ?', session.id)).to.deep.equal([{ start_on_boot: -1 }]);
    // The kept disks outlive the lesson's lease: a teacher's longest lease (30 days) from the end.
    const keptUntil = new Date(Date.parse(session.endsAt) + 30 * 1440 * 60_000).toISOString();
    expect(records.map((r) => r.expiresAt)).to.deep.equal(students.map(() => keptUntil));
  });

  it('a student of another class sees none of it; a student of the class sees only their own tile', async () => {
    const [session] = (await api('GET', `/api/classes/${classId}/sessions`, 'ms-berg')).json.sessions;
    expect(session.tiles).to.have.length(STUDENTS);
    // 8a-01 (class 8a) and mr-lund (teacher of 8a): no VM of 7b, no session, no class.
    for (const outsider of ['8a-01', 'mr-lund']) {
      expect((await api('GET', '/api/vms', outsider)).json.vms, outsider).to.deep.equal([]);
      expect((await api('GET', `/api/sessions/${session.id}`, outsider)).status, outsider).to.equal(404);
      expect((await api('GET', `/api/classes/${classId}/sessions`, outsider)).status, outsider).to.equal(404);
      expect((await api('POST', `/api/sessions/${session.id}/end`, outsider)).status, outsider).to.equal(404);
      expect((await api('POST', `/api/classes/${classId}/sessions`, outsider, { template: 'alpine', minutes: 30 })).status, outsider).to.equal(404);
    }
    const other = new PageClient(ctl.url);
    await other.login('8a-01', password('8a-01'));
    expect((await other.get(`/sessions/${session.id}`)).status).to.equal(404);
    expect((await other.get('/sessions')).text).to.not.contain(session.id);
    expect((await other.get(`/vms/${session.tiles[0].vm.id}`)).status).to.equal(404);
    // pupil-01 of 7b: the session with their own tile; they start and end nothing.
    const mine = await api('GET', `/api/sessions/${session.id}`, students[0]!);
    expect(mine.status).to.equal(200);
    expect(mine.json.tiles.map((t: { student: string }) => t.student)).to.deep.equal([students[0]]);
    expect((await api('POST', `/api/classes/${classId}/sessions`, students[0]!, { template: 'alpine', minutes: 30 })).status).to.equal(403);
  });

  it('lists the students no host can take, with the scheduler\'s reason for every host', async () => {
    const s = ctl.services;
    const id = await makeClass(s, '9c', 'ms-berg', ['9c-01', '9c-02']);
    const big = await api('POST', `/api/classes/${id}/sessions`, 'ms-berg', { template: 'alpine', vcpus: 1, memoryMiB: 16_384, minutes: 30 });
    expect(big.status, JSON.stringify(big.json)).to.equal(201);
    expect(big.json.failures.map((f: { student: string; code: string }) => [f.student, f.code])).to.deep.equal([['9c-01', 'no_host_fits'], ['9c-02', 'no_host_fits']]);
    for (const f of big.json.failures) {
      expect(f.reasons).to.have.length(HOSTS);
      expect(f.reasons.every((r: { reason: string; hostname: string }) => r.reason === 'memory' && r.hostname.startsWith('sim-'))).to.equal(true);
    }
    expect(big.json.tiles.map((t: { failure?: { code: string }; vm?: unknown }) => [t.failure?.code, t.vm])).to.deep.equal([['no_host_fits', undefined], ['no_host_fits', undefined]]);
    const teacher = new PageClient(ctl.url);
    await teacher.login('ms-berg', password('ms-berg'));
    const page = await teacher.get(`/sessions/${big.json.id}`);
    expect(page.text).to.contain('Students without a working VM (2)').and.contain('Why each host was left out').and.contain('sim-0000');
    // Bad requests name their field.
    for (const [body, field] of [[{ template: 'alpine' }, 'endsAt'], [{ template: 'alpine', minutes: 30, endsAt: new Date(clock.now() + 3_600_000).toISOString() }, 'endsAt'],
      [{ template: 'alpine', endsAt: new Date(clock.now() - 60_000).toISOString() }, 'endsAt'], [{ template: 'no-such', minutes: 30 }, 'template'],
      [{ template: 'alpine', minutes: 30, vcpus: 0 }, 'vcpus']] as const) {
      const r = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', body);
      expect(r.status, JSON.stringify(body)).to.equal(422);
      expect(JSON.stringify(r.json.error.details), JSON.stringify(body)).to.contain(`"${field}"`);
    }
    expect((await api('POST', `/api/sessions/${big.json.id}/end`, 'ms-berg')).status).to.equal(202);
    await s.sessions.settled(big.json.id);
  });

  it('lists a student their quota refuses, with the quota\'s words; the others get their VMs', async () => {
    const s = ctl.services;
    const id = await makeClass(s, 'q1', 'ms-berg', ['q1-01', 'q1-02']);
    expect((await api('PUT', '/api/users/q1-02/quota', 'admin', { quota: { vms: 0 } })).status).to.equal(200);
    const started = await api('POST', `/api/classes/${id}/sessions`, 'ms-berg', { template: 'alpine', memoryMiB: 256, minutes: 30 });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    expect(started.json.failures.map((f: { student: string; code: string }) => [f.student, f.code])).to.deep.equal([['q1-02', 'quota_exceeded']]);
    expect(started.json.failures[0].message).to.match(/quota exceeded: .*0 of 0 VMs/);
    expect(started.json.failures[0].message, 'names the student, not "you": the teacher asked').to.contain('q1-02').and.not.match(/\byou\b/);
    expect(started.json.tiles.map((t: { student: string; vm?: unknown }) => [t.student, t.vm !== undefined])).to.deep.equal([['q1-01', true], ['q1-02', false]]);
    expect((await api('POST', `/api/sessions/${started.json.id}/end`, 'ms-berg')).status).to.equal(202);
    await s.sessions.settled(started.json.id);
  });

  it('"End now" with disks deleted: every VM of the session goes; the kept VMs of the last session stay', async () => {
    const started = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', { template: 'alpine', memoryMiB: 256, minutes: 90 });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const session = started.json;
    expect(session.failures).to.deep.equal([]);
    // The kept VMs hold the names "7b-<student>": this session's are "-2".
    expect(session.tiles[0].vm.name).to.equal(`7b-${students[0]}-2`);
    const ids: string[] = session.tiles.map((t: { vm: { id: string } }) => t.vm.id);
    const ending = await api('POST', `/api/sessions/${session.id}/end`, 'ms-berg');
    expect(ending.status).to.equal(202);
    expect(ending.json.state).to.equal('ending');
    await ctl.services.sessions.settled(session.id);
    const ended = (await api('GET', `/api/sessions/${session.id}`, 'ms-berg')).json;
    expect(ended.state).to.equal('ended');
    expect(ended.counts).to.deep.equal({ deleted: STUDENTS });
    expect(fleet.agents.flatMap((a) => [...a.vms.keys()]).filter((id) => ids.includes(id))).to.deep.equal([]);
    const kept = (await api('GET', '/api/vms?limit=1000', 'admin')).json.vms.filter((v: { name: string }) => /^7b-pupil-\d+$/.test(v.name));
    expect(kept).to.have.length(STUDENTS);
    expect(kept.every((v: { state: string }) => v.state === 'shutoff')).to.equal(true);
  });

  it('a VM whose host is down at the end is deleted when the host is back: the session stays ending until then', async () => {
    const started = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', { template: 'alpine', memoryMiB: 256, minutes: 30 });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const session = started.json;
    await ctl.services.sessions.settled(session.id);
    const away = fleet.agents[0]!;
    const onAway = session.tiles.filter((t: { vm: { host: string } }) => t.vm.host === away.hostId).map((t: { vm: { id: string } }) => t.vm.id);
    expect(onAway).to.not.have.length(0);
    await away.stop();
    for (let i = 0; i < 3; i++) await ctl.services.hosts.pollAll();
    expect(ctl.services.hosts.record(away.hostId)?.state).to.equal('down');
    await api('POST', `/api/sessions/${session.id}/end`, 'ms-berg');
    await ctl.services.sessions.settled(session.id);
    let now = (await api('GET', `/api/sessions/${session.id}`, 'ms-berg')).json;
    expect(now.state).to.equal('ending');
    expect(now.tiles.filter((t: { vm?: unknown }) => t.vm).map((t: { vm: { id: string } }) => t.vm.id)).to.have.members(onAway);
    await away.start();
    await ctl.services.hosts.pollAll();
    await clock.advance(60_000); // the retry a minute later
    await ctl.services.sessions.settled(session.id);
    now = (await api('GET', `/api/sessions/${session.id}`, 'ms-berg')).json;
    expect(now.state).to.equal('ended');
    expect(now.counts).to.deep.equal({ deleted: STUDENTS });
    expect([...away.vms.keys()].filter((id) => onAway.includes(id))).to.deep.equal([]);
  });

  it('a controller back after the end time ends the session at once', async () => {
    const started = await api('POST', `/api/classes/${classId}/sessions`, 'ms-berg', { template: 'alpine', memoryMiB: 256, minutes: 30 });
    expect(started.status, JSON.stringify(started.json)).to.equal(201);
    const id = started.json.id;
    await ctl.stop();
    clock = new TestClock(clock.now() + 31 * 60_000);
    await start({ clock });
    await ctl.services.hosts.pollAll();
    await ctl.services.sessions.settled(id);
    const ended = (await api('GET', `/api/sessions/${id}`, 'ms-berg')).json;
    expect(ended.state).to.equal('ended');
    expect(ended.counts).to.deep.equal({ deleted: STUDENTS });
  });
});
