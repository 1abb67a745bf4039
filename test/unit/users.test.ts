// Login lockout: a name that is locked (or close to it) stays so however many other names fail meanwhile.
import { expect } from 'chai';
import { SkyError, Unauthorized } from '../../base/errors.ts';
import { Store } from '../../server/db/store.ts';
import { LOGIN_ATTEMPTS, Users, type User } from '../../server/users/users.ts';

/** Users whose password check for sprayed names is instant: 10,000 scrypt runs would take minutes. */
class SprayableUsers extends Users {
  override async authenticate(name: string, password: string): Promise<User> {
    if (name.startsWith('spray-')) throw new Unauthorized('wrong user name or password');
    return super.authenticate(name, password);
  }
}

async function statusOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof SkyError) return err.status;
    throw err;
  }
}

/** One wrong password for each of `count` distinct made-up names. */
async function spray(users: Users, count: number): Promise<void> {
  for (let i = 0; i < count; i++) expect(await statusOf(users.login(`spray-${i}`, 'guess-password'))).to.equal(401);
}

describe('login lockout', () => {
  let store: Store;
  let users: SprayableUsers;
  beforeEach(async () => {
    store = new Store(':memory:');
    users = new SprayableUsers(store);
    await users.create({ name: 'admin', password: 'the-admin-password', role: 'admin' });
  });
  afterEach(() => store.close());

  it('given the admin is locked out, should keep the lockout while 12,000 other names fail', async () => {
    for (let i = 0; i < LOGIN_ATTEMPTS; i++) expect(await statusOf(users.login('admin', 'wrong-password'))).to.equal(401);
    expect(await statusOf(users.login('admin', 'the-admin-password'))).to.equal(429);
    await spray(users, 12_000);
    expect(await statusOf(users.login('admin', 'the-admin-password'))).to.equal(429);
  });

  it('given a name one guess short of the limit, should keep its count while 12,000 other names fail', async () => {
    for (let i = 0; i < LOGIN_ATTEMPTS - 1; i++) expect(await statusOf(users.login('admin', 'wrong-password'))).to.equal(401);
    await spray(users, 12_000);
    expect(await statusOf(users.login('admin', 'wrong-password'))).to.equal(401);
    expect(await statusOf(users.login('admin', 'the-admin-password'))).to.equal(429);
  });

  it('given 12,000 names failed, should still lock a new name that reaches the limit', async () => {
    await spray(users, 12_000);
    for (let i = 0; i < LOGIN_ATTEMPTS; i++) expect(await statusOf(users.login('spray-late', 'guess-password'))).to.equal(401);
    expect(await statusOf(users.login('spray-late', 'guess-password'))).to.equal(429);
  });
});
