// Classes and the access rules by role and class: who sees and acts on which VM.
import { expect } from 'chai';
import { SkyError } from '../../base/errors.ts';
import { classAccess, type ClassAccess } from '../../server/classes/access.ts';
import { Classes } from '../../server/classes/classes.ts';
import { parseStudentCsv, patternRows } from '../../server/classes/import.ts';
import { Store } from '../../server/db/store.ts';
import { Users, type Role, type User } from '../../server/users/users.ts';

function statusOf(fn: () => unknown): number {
  try {
    fn();
    return 200;
  } catch (err) {
    if (err instanceof SkyError) return err.status;
    throw err;
  }
}

describe('classes and access', () => {
  let store: Store;
  let users: Users;
  let classes: Classes;
  let access: ClassAccess;
  const u = (name: string) => users.get(name)!;
  const seed = (name: string, role: Role) => users.insertHashed([{ name, role, hash: 'x', mustChangePassword: false }]);

  beforeEach(() => {
    store = new Store(':memory:');
    users = new Users(store);
    classes = new Classes(store, { users });
    users.onRemoved(() => classes.reload());
    access = classAccess(classes);
    seed('admin', 'admin');
    seed('berg', 'teacher');
    seed('lund', 'teacher');
    for (const s of ['anna', 'ben', 'cleo', 'dan']) seed(s, 'student');
  });
  afterEach(() => store.close());

  function twoClasses() {
    const a = classes.create({ name: '7b', teachers: ['berg'] }, 'admin');
    const b = classes.create({ name: '8a', teachers: ['lund'] }, 'admin');
    classes.addMember(a.id, 'anna', 'student', 'admin');
    classes.addMember(a.id, 'ben', 'student', 'berg');
    classes.addMember(b.id, 'cleo', 'student', 'admin');
    return { a, b };
  }

  it('should make a class with an id of 12 hex digits, and refuse a taken name (409) or markup (422 naming name)', () => {
    const c = classes.create({ name: '7b', teachers: ['berg'] }, 'admin');
    expect(c.id).to.match(/^[a-f0-9]{12}$/);
    expect(c.teachers).to.deep.equal(['berg']);
    expect(statusOf(() => classes.create({ name: '7B' }, 'admin'))).to.equal(409);
    expect(statusOf(() => classes.create({ name: '<b>x</b>' }, 'admin'))).to.equal(422);
    expect(statusOf(() => classes.create({ name: '8a', teachers: ['anna'] }, 'admin')), 'a student cannot teach').to.equal(422);
    expect(classes.list().map((x) => x.name)).to.deep.equal(['7b']);
  });

  it('should take a student only with the role student, and refuse a member twice in two roles', () => {
    const c = classes.create({ name: '7b' }, 'admin');
    expect(statusOf(() => classes.addMember(c.id, 'berg', 'student', 'admin'))).to.equal(422);
    expect(statusOf(() => classes.addMember(c.id, 'nobody', 'student', 'admin'))).to.equal(422);
    classes.addMember(c.id, 'anna', 'student', 'admin');
    classes.addMember(c.id, 'anna', 'student', 'admin'); // again: nothing changes
    expect(classes.get(c.id)!.students).to.deep.equal(['anna']);
    classes.addMember(c.id, 'admin', 'teacher', 'admin');
    expect(statusOf(() => classes.removeMember(c.id, 'ben', 'admin'))).to.equal(404);
  });

  it('given two classes, a teacher acts on their students\' VMs and their classes\' VMs only', () => {
    const { a, b } = twoClasses();
    const berg = u('berg');
    expect(access.canActOnVm(berg, { owner: 'berg' })).to.equal(true);
    expect(access.canActOnVm(berg, { owner: 'anna' })).to.equal(true);
    expect(access.canActOnVm(berg, { owner: 'cleo' })).to.equal(false);
    expect(access.canActOnVm(berg, { owner: 'dan' }), 'a student in no class').to.equal(false);
    expect(access.canActOnVm(berg, { owner: 'lund' })).to.equal(false);
    expect(access.canActOnVm(berg, { owner: 'dan', classId: a.id }), 'made for the class').to.equal(true);
    expect(access.canActOnVm(berg, { owner: 'dan', classId: b.id })).to.equal(false);
    expect(access.teaches(berg, 'anna')).to.equal(true);
    expect(access.teaches(berg, 'cleo')).to.equal(false);
    expect(access.teaches(berg, { id: a.id })).to.equal(true);
    expect(access.teaches(berg, { id: b.id })).to.equal(false);
    expect(access.classesOf(berg).map((c) => c.name)).to.deep.equal(['7b']);
  });

  it('a student acts on their own VMs only, not a classmate\'s nor their class\'s; an admin on all', () => {
    const { a } = twoClasses();
    const anna = u('anna');
    expect(access.canActOnVm(anna, { owner: 'anna' })).to.equal(true);
    expect(access.canActOnVm(anna, { owner: 'ben' })).to.equal(false);
    expect(access.canActOnVm(anna, { owner: 'berg', classId: a.id })).to.equal(false);
    expect(access.teaches(anna, 'ben')).to.equal(false);
    expect(access.classesOf(anna).map((c) => c.name)).to.deep.equal(['7b']);
    expect(access.canActOnVm(u('admin'), { owner: 'cleo' })).to.equal(true);
    expect(access.classesOf(u('admin'))).to.have.length(2);
    expect(access.studentsOf(a.id)).to.deep.equal(['anna', 'ben']);
  });

  it('a teacher made a student loses their classes\' VMs; a removed student leaves their class', () => {
    twoClasses();
    const demoted: User = { ...u('berg'), role: 'student' };
    expect(access.canActOnVm(demoted, { owner: 'anna' })).to.equal(false);
    const before = access.version();
    users.remove('anna');
    expect(access.version()).to.not.equal(before);
    expect(classes.list().find((c) => c.name === '7b')!.students).to.deep.equal(['ben']);
  });

  it('removing a class keeps its accounts', () => {
    const { a } = twoClasses();
    classes.remove(a.id, 'admin');
    expect(classes.get(a.id)).to.equal(undefined);
    expect(u('anna').role).to.equal('student');
    expect(access.canActOnVm(u('berg'), { owner: 'anna' })).to.equal(false);
  });

  it('given a CSV with bad rows, should create the good ones (one-time passwords) in the class, list the bad with a reason, and change nothing else', async () => {
    const { a, b } = twoClasses();
    const before = { users: users.list(), other: classes.get(b.id) };
    const csv = 'name,display name\nella,Ella Ek\n\nfinn\n<b>x</b>\nella\nanna\n';
    const result = await classes.importStudents(a.id, parseStudentCsv(csv), 'berg');
    expect(result.created.map((c) => [c.name, c.displayName])).to.deep.equal([['ella', 'Ella Ek'], ['finn', undefined]]);
    expect(result.rejected.map((r) => [r.line, r.name, r.reason])).to.deep.equal([
      [3, '', 'empty line'], [5, '<b>x</b>', 'contains markup (< or >)'], [6, 'ella', 'the same name as line 2'], [7, 'anna', 'a user with this name already exists'],
    ]);
    for (const c of result.created) {
      expect(c.password).to.match(/^[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}$/);
      const made = await users.authenticate(c.name, c.password);
      expect(made).to.include({ role: 'student', mustChangePassword: true });
    }
    expect(u('ella').displayName).to.equal('Ella Ek');
    expect(classes.get(a.id)!.students).to.deep.equal(['anna', 'ben', 'ella', 'finn']);
    // nothing else: the users that were there are as they were, the other class too
    expect(users.list().filter((x) => !['ella', 'finn'].includes(x.name))).to.deep.equal(before.users);
    expect(classes.get(b.id)).to.deep.equal(before.other);
    expect(access.canActOnVm(u('berg'), { owner: 'finn' })).to.equal(true);
  });

  it('given a pattern whose names partly exist, should create the others', async () => {
    const { a } = twoClasses();
    seed('7b-02', 'student');
    const result = await classes.importStudents(a.id, patternRows('7b-', 3), 'admin');
    expect(result.created.map((c) => c.name)).to.deep.equal(['7b-01', '7b-03']);
    expect(result.rejected).to.deep.equal([{ line: 2, name: '7b-02', reason: 'a user with this name already exists' }]);
  });

  it('given an import into a class removed meanwhile, should create nobody', async () => {
    const { a } = twoClasses();
    const pending = classes.importStudents(a.id, patternRows('zz', 2), 'admin');
    classes.remove(a.id, 'admin');
    try {
      await pending;
      expect.fail('should have thrown');
    } catch (err) {
      expect((err as SkyError).status).to.equal(404);
    }
    expect(users.get('zz01')).to.equal(undefined);
  });
});
