// Login back-off per source address and per name, on a clock the test moves: a guesser is slowed or
// refused, the real user from their own address gets in at once (or within the stated wait).
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { SkyError } from '../../base/errors.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { Store } from '../../server/db/store.ts';
import { ADDRESS_ATTEMPTS, CLEAN_ADDRESS_WAIT_MS, LOGIN_ATTEMPTS, LOGIN_WINDOW_MS, addressKey } from '../../server/users/login-throttle.ts';
import { Users, type AuditEvent } from '../../server/users/users.ts';

const A = '10.0.5.23';
const B = '10.0.5.40';

async function attempt(p: Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await p;
    return { status: 200, message: '' };
  } catch (err) {
    if (err instanceof SkyError) return { status: err.status, message: err.message };
    throw err;
  }
}

describe('login back-off per address and per name', function () {
  this.timeout(30_000);
  let store: Store;
  let users: Users;
  let now: number;
  let audit: AuditEvent[];

  beforeEach(async () => {
    store = new Store(':memory:');
    now = Date.parse('2025-03-03T08:00:00Z');
    audit = [];
    users = new Users(store, { now: () => now, audit: (e) => audit.push(e) });
    await users.create({ name: 'admin', password: 'the-admin-password', role: 'admin' });
    await users.create({ name: 'alice', password: 'alice-password' });
  });
  afterEach(() => store.close());

  it('given 50 wrong passwords for admin from address A, should let admin in from address B at once', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 50; i++) statuses.push((await attempt(users.login('admin', `guess-${i}`, A))).status);
    expect(statuses.filter((s) => s === 401)).to.have.length(LOGIN_ATTEMPTS);
    expect(statuses.filter((s) => s === 429)).to.have.length(50 - LOGIN_ATTEMPTS);
    expect((await attempt(users.login('admin', 'the-admin-password', A))).status).to.equal(429);
    expect(await attempt(users.login('admin', 'the-admin-password', B))).to.deep.equal({ status: 200, message: '' });
  });

  it('given address A sprays 200 names, should refuse it with 429 after the bound and leave a user at B alone', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) statuses.push((await attempt(users.login(`student${i}`, 'Summer2025!', A))).status);
    expect(statuses.slice(0, ADDRESS_ATTEMPTS).every((s) => s === 401)).to.equal(true);
    expect(statuses.slice(ADDRESS_ATTEMPTS).every((s) => s === 429)).to.equal(true);
    const refused = await attempt(users.login('alice', 'alice-password', A));
    expect(refused.status).to.equal(429);
    expect(refused.message).to.match(/from this address: try again in 1 s$/);
    expect((await attempt(users.login('alice', 'alice-password', B))).status).to.equal(200);
  });

  it('given an address in back-off, should double its wait with each further wrong password', async () => {
    for (let i = 0; i < ADDRESS_ATTEMPTS; i++) await attempt(users.login(`name${i}`, 'guess-password', A));
    const waits: string[] = [];
    for (let i = 0; i < 4; i++) {
      const refused = await attempt(users.login(`late${i}`, 'guess-password', A));
      waits.push(/try again in (\d+) s/.exec(refused.message)?.[1] ?? refused.message);
      now += Number(waits[i]) * 1000;
      expect((await attempt(users.login(`late${i}`, 'guess-password', A))).status).to.equal(401);
    }
    expect(waits).to.deep.equal(['1', '2', '4', '8']);
  });

  it('given the name is locked, should let one new address try every CLEAN_ADDRESS_WAIT_MS and say how long to wait', async () => {
    for (let i = 0; i < LOGIN_ATTEMPTS; i++) await attempt(users.login('admin', `guess-${i}`, A));
    expect((await attempt(users.login('admin', 'another-guess', '10.0.6.1'))).status).to.equal(401);
    const busy = await attempt(users.login('admin', 'the-admin-password', B));
    expect(busy.status).to.equal(429);
    expect(busy.message).to.equal(`someone is guessing the password of "admin": try again in ${CLEAN_ADDRESS_WAIT_MS / 1000} s`);
    now += CLEAN_ADDRESS_WAIT_MS;
    expect((await attempt(users.login('admin', 'the-admin-password', B))).status).to.equal(200);
  });

  it('given the name window has passed, should let the guessing address sign in with the right password', async () => {
    for (let i = 0; i < LOGIN_ATTEMPTS; i++) await attempt(users.login('alice', `guess-${i}`, A));
    const locked = await attempt(users.login('alice', 'alice-password', A));
    expect(locked.status).to.equal(429);
    expect(locked.message).to.equal('too many failed logins from this address: try again in 1 s');
    now += 1000;
    expect((await attempt(users.login('alice', 'alice-password', A))).message).to.equal(`too many wrong passwords for "alice" from this address: try again in ${LOGIN_WINDOW_MS / 1000 - 1} s`);
    now += LOGIN_WINDOW_MS;
    expect((await attempt(users.login('alice', 'alice-password', A))).status).to.equal(200);
  });

  it('should record sign-ins, failed sign-ins (name and address, never the password), refusals and role changes', async () => {
    await attempt(users.login('alice', 'not-the-password', A));
    await attempt(users.login('alice', 'alice-password', B));
    for (let i = 0; i < ADDRESS_ATTEMPTS + 5; i++) await attempt(users.login(`n${i}`, 'hunter2-password', A));
    users.setRole('alice', 'admin', 'admin');
    await users.changePassword('alice', 'alice-password-2', { by: 'admin' });
    const text = JSON.stringify(audit);
    expect(text).not.to.contain('not-the-password');
    expect(text).not.to.contain('hunter2');
    expect(audit[0]).to.deep.equal({ level: 'warn', msg: `failed sign-in as "alice" from ${A}`, data: { user: 'alice', from: A } });
    expect(audit[1]).to.deep.equal({ level: 'info', msg: `"alice" signed in from ${B}`, data: { user: 'alice', from: B } });
    expect(audit.filter((e) => e.msg.startsWith('sign-ins refused'))).to.have.length(1); // once per window, not per request
    expect(audit.at(-2)).to.deep.equal({ level: 'info', msg: 'role of "alice" changed from student to admin by "admin"', data: { user: 'alice', was: 'student', role: 'admin', by: 'admin' } });
    expect(audit.at(-1)).to.deep.equal({ level: 'info', msg: 'password of "alice" changed by "admin"', data: { user: 'alice', by: 'admin' } });
  });

  it('should count an IPv6 /64 as one address and an IPv4-mapped address as the IPv4 one', () => {
    expect(addressKey('2001:db8:1:2::1')).to.equal(addressKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'));
    expect(addressKey('2001:db8:1:2::1')).to.equal('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:3::1')).not.to.equal(addressKey('2001:db8:1:2::1'));
    expect(addressKey('::ffff:10.0.5.23')).to.equal('10.0.5.23');
    expect(addressKey('::1')).to.equal('0:0:0:0::/64');
  });
});

describe('login back-off through the real app', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;

  /** POST /api/login from a chosen loopback address (127.0.0.2 is another machine to the controller). */
  function login(from: string, username: string, password: string): Promise<{ status: number; body: any }> {
    return new Promise((resolve, reject) => {
      const body = JSON.stringify({ username, password });
      const req = request(`${ctl.url}/api/login`, { method: 'POST', localAddress: from, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-login-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false });
    await ctl.services.users.create({ name: 'teacher', password: 'teacher-password' });
  });
  after(async () => {
    await ctl?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('should refuse the guessing address by its socket address, let another in, and keep audit events', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < ADDRESS_ATTEMPTS + 3; i++) statuses.push((await login('127.0.0.1', 'teacher', `guess-${i}`)).status);
    expect(statuses).to.deep.equal([...Array<number>(ADDRESS_ATTEMPTS).fill(401), 429, 429, 429]);
    const refused = await login('127.0.0.1', 'teacher', 'teacher-password');
    expect(refused.status).to.equal(429);
    expect(refused.body.error.message).to.match(/try again in \d+ s$/);
    expect((await login('127.0.0.2', 'teacher', 'teacher-password')).status).to.equal(200);
    const events = ctl.services.events.list({ source: 'users', limit: 100 }).map((e) => e.msg);
    expect(events).to.include('"teacher" signed in from 127.0.0.2');
    expect(events).to.include('failed sign-in as "teacher" from 127.0.0.1');
    expect(events.some((m) => m.startsWith('sign-ins refused: too many failed sign-ins from 127.0.0.1'))).to.equal(true);
    expect(JSON.stringify(ctl.services.events.list({ limit: 1000 }))).not.to.contain('guess-');
  });

  it('should record the use of a join token as an audit event', async () => {
    const res = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: 'lab-pc-7', hostname: 'lab-pc-7', agentUrl: 'http://127.0.0.1:9', agentKey: 'k'.repeat(43), version: 'test', joinToken: ctl.services.secrets.joinToken }),
    });
    expect(res.status, await res.text()).to.equal(200);
    const used = ctl.services.events.list({ source: 'tokens' });
    expect(used.map((e) => [e.msg, e.hostId])).to.deep.equal([['the cluster join token used by host lab-pc-7', 'lab-pc-7']]);
    expect(JSON.stringify(used)).not.to.contain(ctl.services.secrets.joinToken);
  });
});
