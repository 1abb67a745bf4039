// Who a token or a session cookie is, read from memory between writes (server/users/users.ts,
// RecentCredentials): each change to users, sessions or tokens counts from the next request on.
import { expect } from 'chai';
import { Store } from '../../server/db/store.ts';
import { Users } from '../../server/users/users.ts';

describe('credentials read between writes (Users.byToken, Users.session)', () => {
  let store: Store;
  let users: Users;
  let clock: number;
  beforeEach(async () => {
    store = new Store(':memory:');
    clock = Date.parse('2026-12-02T12:00:00Z');
    users = new Users(store, { now: () => clock });
    await users.create({ name: 'admin', password: 'the-admin-password', role: 'admin' });
    await users.create({ name: 'anna', password: 'annas-password', role: 'student' });
  });
  afterEach(() => store.close());

  it('should answer a token again without the database, and refuse it at once once revoked', () => {
    const { token, info } = users.createToken('anna', 'laptop');
    expect(users.byToken(token)?.name).to.equal('anna');
    // what the answer is read from: a row changed behind the class's back is not seen while the entry lives
    store.run('UPDATE users SET display_name = ? WHERE name = ?', 'Changed Behind', 'anna');
    expect(users.byToken(token)?.displayName).to.equal(undefined);
    users.revokeToken('anna', info.id);
    expect(users.byToken(token)).to.equal(undefined);
  });

  it('should see a change made by another process on the same database within two seconds', () => {
    const { token } = users.createToken('anna', 'laptop');
    expect(users.byToken(token)?.role).to.equal('student');
    store.run('UPDATE users SET role = ? WHERE name = ?', 'teacher', 'anna');
    clock += 1999;
    expect(users.byToken(token)?.role).to.equal('student');
    clock += 1;
    expect(users.byToken(token)?.role).to.equal('teacher');
  });

  it('should show a role change and a new display name on the next request', () => {
    const { token } = users.createToken('anna', 'laptop');
    expect(users.byToken(token)?.role).to.equal('student');
    users.setRole('anna', 'teacher', 'admin');
    expect(users.byToken(token)?.role).to.equal('teacher');
    users.setDisplayName('anna', 'Anna Berg');
    expect(users.byToken(token)?.displayName).to.equal('Anna Berg');
  });

  it('should refuse a removed user\'s token and session at once', async () => {
    const { token } = users.createToken('anna', 'laptop');
    const { sessionId } = await users.login('anna', 'annas-password');
    expect(users.byToken(token)?.name).to.equal('anna');
    expect(users.session(sessionId)?.user.name).to.equal('anna');
    users.remove('anna');
    expect(users.byToken(token)).to.equal(undefined);
    expect(users.session(sessionId)).to.equal(undefined);
  });

  it('should end a session at logout and the others at a password change, keeping the one that changed it', async () => {
    const a = await users.login('anna', 'annas-password');
    const b = await users.login('anna', 'annas-password');
    const c = await users.login('anna', 'annas-password');
    for (const s of [a, b, c]) expect(users.session(s.sessionId)?.csrfToken).to.equal(s.session.csrfToken);
    users.logout(a.sessionId);
    expect(users.session(a.sessionId)).to.equal(undefined);
    await users.changePassword('anna', 'a-new-password', { current: 'annas-password', keepSession: c.sessionId });
    expect(users.session(b.sessionId)).to.equal(undefined);
    expect(users.session(c.sessionId)?.user.mustChangePassword).to.equal(false);
  });

  it('should not let a session cookie pass as a token, nor a token as a cookie', async () => {
    const { token } = users.createToken('anna', 'laptop');
    const { sessionId } = await users.login('anna', 'annas-password');
    expect(users.byToken(token)?.name).to.equal('anna');
    expect(users.session(sessionId)?.user.name).to.equal('anna');
    expect(users.byToken(sessionId)).to.equal(undefined);
    expect(users.session(token)).to.equal(undefined);
  });

  it('should refuse a session past its end, also one read a moment before it ended', async () => {
    const { sessionId, session } = await users.login('anna', 'annas-password');
    clock = Date.parse(session.expiresAt) - 1000;
    expect(users.session(sessionId)?.user.name).to.equal('anna'); // read, and kept for up to 2 s
    clock += 1001;
    expect(users.session(sessionId)).to.equal(undefined);
    expect(store.get('SELECT 1 FROM sessions')).to.equal(undefined); // and the ended session is gone
  });

  it('should share one frozen answer, so no request can change what the next one sees', () => {
    const { token } = users.createToken('anna', 'laptop');
    const first = users.byToken(token)!;
    expect(Object.isFrozen(first)).to.equal(true);
    expect(() => { (first as { role: string }).role = 'admin'; }).to.throw(TypeError);
    expect(users.byToken(token)?.role).to.equal('student');
  });
});
