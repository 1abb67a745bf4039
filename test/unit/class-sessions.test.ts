// Class sessions without hosts: the VM names, the time-left words, the request's checks, and the end
// timer on a clock the test moves (at the end time exactly, and at once for a controller started
// after it). The VMs themselves are test/integration/class-sessions.test.ts's.
import { expect } from 'chai';
import { VmName } from '../../wire/api.ts';
import { sessionVmName } from '../../server/classes/sessions.ts';
import { timeLeft } from '../../server/pages/sessions.ts';
import type { ControllerServices } from '../../server/services.ts';
import type { User } from '../../server/users/users.ts';
import { makeClass, TestServices } from '../support/classroom.ts';
import { TestClock } from '../support/clock.ts';

describe('class session VM names', () => {
  it('should be the class and the student, lowercase, valid VM names of at most 63 characters', () => {
    expect(sessionVmName('7b', 'anna')).to.equal('7b-anna');
    expect(sessionVmName('Networking 2', 'anna.b_c')).to.equal('networking-2-anna-b-c');
    expect(sessionVmName('<b>', 'x')).to.equal('b-x');
    expect(sessionVmName('!!!', '...')).to.equal('class-student');
    expect(sessionVmName('7b', '7b-01')).to.equal('7b-01'); // a numbered import names students after the class
    expect(sessionVmName('7b', '7bx')).to.equal('7b-7bx');
    const long = sessionVmName('A very long class name that goes on and on and on', 'a-student-with-a-rather-long-name-too-x');
    expect(long.length).to.be.at.most(63);
    for (const name of [long, sessionVmName('ß-Ü', '7b-01'), sessionVmName('-x-', '-y-')]) expect(VmName.safeParse(name).success, name).to.equal(true);
  });
});

describe('class session time left', () => {
  it('should say hours and minutes, rounding up to the minute, and when time is up', () => {
    expect(timeLeft(45 * 60)).to.equal('45 min left');
    expect(timeLeft(44 * 60 + 1)).to.equal('45 min left');
    expect(timeLeft(3600)).to.equal('1 h left');
    expect(timeLeft(3600 + 5 * 60)).to.equal('1 h 5 min left');
    expect(timeLeft(59)).to.equal('less than a minute left');
    expect(timeLeft(0)).to.equal('time is up');
  });
});

describe('class sessions: checks and the end timer (no hosts)', function () {
  this.timeout(20_000);
  let controller: TestServices;
  let clock: TestClock;
  let services: ControllerServices;
  let teacher: User;
  let classId: string;

  const open = async () => {
    services = await controller.open({ clock });
    services.start();
  };

  beforeEach(async () => {
    controller = new TestServices('skyhost-sessions-unit-');
    clock = new TestClock(Date.parse('2026-12-02T08:00:00Z'));
    await open();
    classId = await makeClass(services, '7b', 'ms-berg', ['anna', 'ben']);
    teacher = services.users.get('ms-berg')!;
    // A template the catalog knows of: no host has it, so every student is refused with the scheduler's reasons.
    (services.templates as { find: (n: string) => unknown }).find = (n: string) => (n === 'tiny' ? { name: 'tiny' } : undefined);
  });

  afterEach(async () => {
    await controller.close();
  });

  it('should refuse what is not a session, naming the field, and a student starting one', async () => {
    const start = (body: unknown, who = teacher) => services.sessions.start(who, classId, body).then(() => 'started', (e: { status: number; details?: { fields?: Array<{ field: string }> } }) =>
      `${e.status} ${e.details?.fields?.map((f) => f.field).join(',') ?? ''}`);
    expect(await start({ template: 'tiny' })).to.equal('422 endsAt');
    expect(await start({ template: 'tiny', minutes: 30, endsAt: '2026-12-02T09:00:00Z' })).to.equal('422 endsAt');
    expect(await start({ template: 'tiny', endsAt: '2026-12-02T07:59:00Z' })).to.equal('422 endsAt');
    expect(await start({ template: 'tiny', endsAt: '2026-12-03T08:01:00Z' })).to.equal('422 endsAt');
    expect(await start({ template: 'tiny', minutes: 0 })).to.equal('422 minutes');
    expect(await start({ template: 'gone', minutes: 30 })).to.equal('422 template');
    expect(await start({ template: 'tiny', minutes: 30, extra: 1 })).to.match(/^422/);
    expect(await start({ template: 'tiny', minutes: 30 }, services.users.get('anna')!)).to.equal('403 ');
    expect(services.sessions.mine(teacher)).to.deep.equal([]);
  });

  it('should end at the end time, not a moment before, and list every student the scheduler refused', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'tiny', minutes: 45 });
    expect(view.endsAt).to.equal('2026-12-02T08:45:00.000Z');
    expect(view.failures.map((f) => [f.student, f.code])).to.deep.equal([['anna', 'no_host_fits'], ['ben', 'no_host_fits']]);
    await clock.advance(45 * 60_000 - 1);
    expect(services.sessions.view(teacher, view.id).state).to.equal('running');
    expect(services.sessions.view(teacher, view.id).secondsLeft).to.equal(0);
    await clock.advance(1);
    await services.sessions.settled(view.id);
    const ended = services.sessions.view(teacher, view.id);
    expect(ended.state).to.equal('ended');
    expect(ended.endedAt).to.equal('2026-12-02T08:45:00.000Z');
    // The student sees the session with their own tile and their own refusal only.
    const anna = services.sessions.view(services.users.get('anna')!, view.id);
    expect(anna.tiles.map((t) => t.student)).to.deep.equal(['anna']);
    expect(anna.failures.map((f) => f.student)).to.deep.equal(['anna']);
  });

  it('should end a session whose end time passed while the controller was off as soon as it starts again, keeping its failures', async () => {
    const view = await services.sessions.start(teacher, classId, { template: 'tiny', endsAt: '2026-12-02T09:30:00+01:00' });
    expect(view.endsAt).to.equal('2026-12-02T08:30:00.000Z');
    await controller.stop();
    clock = new TestClock(Date.parse('2026-12-02T10:00:00Z'));
    await open();
    await services.sessions.settled(view.id);
    const ended = services.sessions.view(teacher, view.id);
    expect(ended.state).to.equal('ended');
    expect(ended.endedAt).to.equal('2026-12-02T10:00:00.000Z');
    expect(ended.failures).to.have.length(2);
  });

  it('should end now at the teacher\'s word, and start the next session of the class after', async () => {
    const first = await services.sessions.start(teacher, classId, { template: 'tiny', minutes: 90 });
    await clock.advance(10 * 60_000);
    const ending = services.sessions.end(teacher, first.id);
    expect(ending.endsAt).to.equal('2026-12-02T08:10:00.000Z');
    await services.sessions.settled(first.id);
    expect(services.sessions.view(teacher, first.id).state).to.equal('ended');
    const second = await services.sessions.start(teacher, classId, { template: 'tiny', minutes: 30 });
    expect(services.sessions.list(teacher, classId).map((s) => s.id)).to.have.members([first.id, second.id]);
    expect(() => services.sessions.end(services.users.get('anna')!, second.id)).to.throw(/only a teacher/);
  });
});
