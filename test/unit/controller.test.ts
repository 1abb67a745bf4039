// The controller's pieces on their own: the store and its migrations, users and sessions, the
// enrollment rules of the host registry, the event log, Wake-on-LAN packets, poll schedules.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { MIGRATIONS } from '../../server/db/migrations.ts';
import { Store } from '../../server/db/store.ts';
import { EventLog } from '../../server/events/events.ts';
import { HostRegistry, type RedeemJoinToken } from '../../server/hosts/registry.ts';
import { magicPacket } from '../../server/hosts/wol.ts';
import { repeatEvery } from '../../server/services.ts';
import { TestServices } from '../support/classroom.ts';
import { TestClock } from '../support/clock.ts';
import { hashPassword, LOGIN_ATTEMPTS, Users, verifyPassword } from '../../server/users/users.ts';

const quiet = () => configureLogging({ out: () => {} });
const loud = () => configureLogging({ out: (line) => process.stderr.write(line + '\n') });

describe('controller store', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'skyhost-store-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('should apply every migration once, in WAL mode, and keep data across reopening', () => {
    const file = path.join(dir, 'skyhost.db');
    const a = new Store(file);
    expect(a.version()).to.equal(MIGRATIONS.length);
    expect(a.get<{ journal_mode: string }>('PRAGMA journal_mode')!.journal_mode).to.equal('wal');
    a.run('INSERT INTO settings (key, value) VALUES (?, ?)', 'k', 'v');
    a.close();
    const b = new Store(file);
    expect(b.version()).to.equal(MIGRATIONS.length);
    expect(b.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', 'k')!.value).to.equal('v');
    b.close();
  });

  it('should roll a failed transaction back completely', () => {
    const s = new Store(':memory:');
    expect(() => s.tx(() => {
      s.run('INSERT INTO settings (key, value) VALUES (?, ?)', 'a', '1');
      throw new Error('boom');
    })).to.throw('boom');
    expect(s.get('SELECT * FROM settings WHERE key = ?', 'a')).to.equal(undefined);
    s.close();
  });
});

describe('controller users', function () {
  this.timeout(10_000);
  let store: Store;
  let users: Users;
  beforeEach(() => {
    store = new Store(':memory:');
    users = new Users(store);
  });
  afterEach(() => store.close());

  it('should hash passwords with scrypt and verify only the right one', async () => {
    const h = await hashPassword('correct horse');
    expect(h).to.match(/^scrypt\$16384\$8\$1\$/);
    expect(await verifyPassword('correct horse', h)).to.equal(true);
    expect(await verifyPassword('wrong horse', h)).to.equal(false);
    expect(await verifyPassword('x', 'garbage')).to.equal(false);
  });

  it('given the admin token as one-time password, should demand a new password and then forget it', async () => {
    await users.ensureAdmin('one-time-token-123');
    const { sessionId, session } = await users.login('admin', 'one-time-token-123');
    expect(session.user.mustChangePassword).to.equal(true);
    await users.changePassword('admin', 'brand-new-password', { keepSession: sessionId });
    expect(users.session(sessionId)!.user.mustChangePassword).to.equal(false);
    await expectReject(users.login('admin', 'one-time-token-123'), 401);
    await users.ensureAdmin('another-token-456'); // a restart does not reset the admin
    await expectReject(users.login('admin', 'another-token-456'), 401);
  });

  it('should end other sessions on a password change and resolve API tokens to their user', async () => {
    await users.create({ name: 'alice', password: 'alice-password' });
    const one = await users.login('alice', 'alice-password');
    const two = await users.login('alice', 'alice-password');
    await users.changePassword('alice', 'alice-password-2', { current: 'alice-password', keepSession: one.sessionId });
    expect(users.session(one.sessionId)).to.not.equal(undefined);
    expect(users.session(two.sessionId)).to.equal(undefined);
    const { token, info } = users.createToken('alice', 'laptop');
    expect(users.byToken(token)!.name).to.equal('alice');
    users.revokeToken('alice', info.id);
    expect(users.byToken(token)).to.equal(undefined);
    expect(store.get('SELECT * FROM api_tokens WHERE token_hash = ?', token)).to.equal(undefined);
  });

  it('should make a name wait after too many wrong passwords, and not tell whether it exists', async () => {
    await users.create({ name: 'carol', password: 'carol-password' });
    for (let i = 0; i < LOGIN_ATTEMPTS; i++) await expectReject(users.login('carol', 'wrong-password'), 401);
    await expectReject(users.login('carol', 'carol-password'), 429);
    await expectReject(users.login('nobody', 'whatever-password'), 401);
  });

  it('should refuse self-registration until it is switched on', async () => {
    await expectReject(users.register('bob', 'bob-password'), 403);
    users.setSelfRegistration(true);
    expect((await users.register('bob', 'bob-password')).role).to.equal('student');
    await expectReject(users.register('bob', 'bob-password'), 409);
  });
});

describe('controller host registry: enrollment', () => {
  let store: Store;
  let registry: HostRegistry;
  const redeem: RedeemJoinToken = (token) => token === 'shj_good_token' ? { ok: true } : { ok: false, code: 'unknown', message: 'not known' };
  const req = (o: Record<string, unknown> = {}) => ({
    hostId: 'pc-1', hostname: 'pc-1', agentUrl: 'http://10.0.0.2:8081', agentKey: 'k'.repeat(20), version: '1', ...o,
  });
  before(quiet);
  after(loud);
  beforeEach(() => {
    store = new Store(':memory:');
    registry = new HostRegistry(store, { clusterId: 'c1', redeemJoinToken: redeem, log: logger('test') });
  });
  afterEach(() => store.close());

  it('given a join token, should make the host ready; given none, pending', () => {
    expect(registry.enroll(req({ joinToken: 'shj_good_token' })).state).to.equal('ready');
    expect(registry.enroll(req({ hostId: 'pc-2' })).state).to.equal('pending');
  });

  it('given an agent URL that is not http(s), should refuse it naming the field', () => {
    expect(() => registry.enroll(req({ agentUrl: 'file:///etc/passwd' }))).to.throw('agentUrl');
  });

  it('should list the hosts by name, and keep the order true as hosts enroll, change their name, come again with a new key and go', () => {
    const token = { joinToken: 'shj_good_token' };
    const names = () => registry.records().map((h) => h.hostname);
    registry.enroll(req({ ...token, hostId: 'id-b', hostname: 'Lab-b' }));
    registry.enroll(req({ ...token, hostId: 'id-a', hostname: 'lab-a' }));
    expect(names()).to.deep.equal(['lab-a', 'Lab-b']);
    registry.enroll(req({ ...token, hostId: 'id-c', hostname: 'aula-1' }));
    expect(names()).to.deep.equal(['aula-1', 'lab-a', 'Lab-b']);
    registry.enroll(req({ ...token, hostId: 'id-a', hostname: 'zz-renamed' })); // same key, new hostname
    expect(names()).to.deep.equal(['aula-1', 'Lab-b', 'zz-renamed']);
    registry.enroll(req({ ...token, hostId: 'id-b', hostname: 'aaa-new-disk', agentKey: 'n'.repeat(20) })); // a new key with a token
    expect(names()).to.deep.equal(['aaa-new-disk', 'aula-1', 'zz-renamed']);
    expect(registry.records().find((h) => h.id === 'id-b')).to.equal(registry.record('id-b')); // the record as it is now
    registry.remove('id-c');
    expect(names()).to.deep.equal(['aaa-new-disk', 'zz-renamed']);
    registry.records().reverse(); // a caller's copy: sorting or reversing it leaves the registry's order alone
    expect(names()).to.deep.equal(['aaa-new-disk', 'zz-renamed']);
  });

  it('given a wrong token, should refuse with the reason and record nothing', () => {
    expect(() => registry.enroll(req({ joinToken: 'shj_bad_token' }))).to.throw('not known');
    expect(registry.records()).to.have.length(0);
  });

  it('given the same host id again, should update the record instead of adding one', () => {
    registry.enroll(req({ joinToken: 'shj_good_token' }));
    const again = registry.enroll(req({ agentUrl: 'http://10.0.0.99:8081' }));
    expect(again.state).to.equal('ready');
    expect(registry.records()).to.have.length(1);
    expect(registry.record('pc-1')!.agentUrl).to.equal('http://10.0.0.99:8081');
    expect(new HostRegistry(store, { clusterId: 'c1', redeemJoinToken: redeem, log: logger('test') }).record('pc-1')!.agentUrl)
      .to.equal('http://10.0.0.99:8081');
  });

  it('given another agent key and no token, should refuse it and leave the record as it was', () => {
    registry.enroll(req({ joinToken: 'shj_good_token' }));
    expect(() => registry.enroll(req({ agentKey: 'x'.repeat(20), agentUrl: 'http://10.0.0.66:8081' }))).to.throw('already enrolled');
    expect(registry.record('pc-1')).to.deep.include({ state: 'ready', agentKey: 'k'.repeat(20), agentUrl: 'http://10.0.0.2:8081' });
  });

  it('given a second machine with the same id while the first is up, should refuse it (a cloned machine-id)', () => {
    registry.enroll(req({ joinToken: 'shj_good_token' }));
    const h = registry.record('pc-1')!;
    h.lastSeen = new Date().toISOString();
    expect(() => registry.enroll(req({ joinToken: 'shj_good_token', agentKey: 'c'.repeat(20), agentUrl: 'http://10.0.0.3:8081' })))
      .to.throw('belongs to pc-1');
    h.lastSeen = new Date(Date.now() - 60_000).toISOString(); // the first one is gone: a reinstall may take the id
    expect(registry.enroll(req({ joinToken: 'shj_good_token', agentKey: 'c'.repeat(20), agentUrl: 'http://10.0.0.3:8081' })).state).to.equal('ready');
  });

  it('should keep a drained host draining when it enrolls again', () => {
    registry.enroll(req({ joinToken: 'shj_good_token' }));
    registry.drain('pc-1');
    expect(registry.enroll(req()).state).to.equal('draining');
    expect(registry.undrain('pc-1').state).to.equal('ready');
  });
});

describe('controller event log', () => {
  let store: Store;
  let events: EventLog;
  beforeEach(() => {
    store = new Store(':memory:');
    events = new EventLog(store);
  });
  afterEach(() => {
    events.close();
    store.close();
  });

  it('should tell subscribers at once and filter by source, level, host and id', () => {
    const seen: number[] = [];
    events.on('event', (e) => seen.push(e.id));
    const a = events.record({ source: 'hosts', msg: 'host pc-1 is down', level: 'warn', hostId: 'pc-1' });
    events.record({ source: 'vms', msg: 'VM created', vmId: 'abcdefgh1' });
    events.record({ source: 'agent', msg: 'disk full', level: 'error', hostId: 'pc-2' });
    expect(seen).to.deep.equal([a.id, a.id + 1, a.id + 2]);
    expect(events.list({ level: 'warn' }).map((e) => e.msg)).to.deep.equal(['disk full', 'host pc-1 is down']);
    expect(events.list({ source: 'vms' })).to.have.length(1);
    expect(events.list({ hostId: 'pc-1' })[0]!.msg).to.equal('host pc-1 is down');
    expect(events.list({ after: a.id })).to.have.length(2);
    events.flush();
    const reopened = new EventLog(store);
    expect(reopened.record({ source: 'x', msg: 'y' }).id).to.equal(a.id + 3);
    reopened.close();
  });
});

describe('controller helpers', () => {
  it('should build a Wake-on-LAN magic packet: 6 x FF, then the MAC 16 times', () => {
    const p = magicPacket('AA:bb:cc:dd:ee:01');
    expect(p.length).to.equal(102);
    expect(p.subarray(0, 6).equals(Buffer.alloc(6, 0xff))).to.equal(true);
    for (let i = 0; i < 16; i++) expect(p.subarray(6 + 6 * i, 12 + 6 * i).toString('hex')).to.equal('aabbccddee01');
    expect(() => magicPacket('aa:bb:cc')).to.throw();
  });

});

describe('controller poll schedule', () => {
  const starts = async (intervalMs: number, forMs: number, roundMs = 0) => {
    const clock = new TestClock();
    const at: number[] = [];
    const r = repeatEvery(intervalMs, async () => {
      at.push(clock.now());
      if (roundMs) await clock.sleep(roundMs);
    }, { name: 'test', log: logger('test'), clock });
    await clock.advance(forMs);
    r.stop();
    return at;
  };

  it('should start polls exactly every 7 s and every 90 s (cron made 7 s uneven and 90 s into 2 min)', async () => {
    expect(await starts(7000, 63_000)).to.deep.equal([0, 7000, 14_000, 21_000, 28_000, 35_000, 42_000, 49_000, 56_000, 63_000]);
    expect(await starts(90_000, 360_000)).to.deep.equal([0, 90_000, 180_000, 270_000, 360_000]);
  });

  it('should never overlap: a round longer than the interval is followed right after it ends, then on time again', async () => {
    expect(await starts(5000, 30_000, 12_000)).to.deep.equal([0, 12_000, 24_000]);
    expect(await starts(5000, 20_000, 3000)).to.deep.equal([0, 5000, 10_000, 15_000, 20_000]);
  });

  it('should keep polling after a failed round', async () => {
    const clock = new TestClock();
    const at: number[] = [];
    quiet();
    const r = repeatEvery(1000, async () => {
      at.push(clock.now());
      throw new Error('boom');
    }, { name: 'test', log: logger('test'), clock });
    await clock.advance(3000);
    r.stop();
    loud();
    expect(at).to.deep.equal([0, 1000, 2000, 3000]);
  });

  it('should poll the hosts at pollIntervalSeconds, in a loop that slow pending hosts do not hold up', async () => {
    const clock = new TestClock();
    const controller = new TestServices('skyhost-polls-');
    try {
      const services = await controller.open({ pollIntervalSeconds: 7, clock });
      const members: number[] = [];
      const pending: number[] = [];
      services.hosts.pollMembers = async () => { members.push(clock.now()); };
      services.hosts.pollPending = async () => { pending.push(clock.now()); await clock.sleep(20_000); }; // slow strangers
      services.start();
      await clock.advance(70_000);
      expect(members).to.deep.equal([0, 7000, 14_000, 21_000, 28_000, 35_000, 42_000, 49_000, 56_000, 63_000, 70_000]);
      expect(pending).to.deep.equal([0, 20_000, 40_000, 60_000]);
    } finally {
      await controller.close();
    }
  });
});

async function expectReject(p: Promise<unknown>, status: number): Promise<void> {
  try {
    await p;
  } catch (err) {
    expect((err as { status?: number }).status).to.equal(status);
    return;
  }
  expect.fail(`expected a ${status}`);
}
