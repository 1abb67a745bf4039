// Classes: a named group with teachers and students (tables `classes` and `class_members`). Kept in
// memory (every VM list asks who teaches whom) and read again from SQLite after each committed
// change, so the copy never holds what a rolled-back transaction wrote.
//
//   const c = services.classes.create({ name: '7b', teachers: ['ms-berg'] }, admin.name);
//   services.classes.addMember(c.id, 'anna', 'student', admin.name);
//   services.classes.ofUser('anna');   // { teaching: [], attending: ['<id>'] }
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { Conflict, InvalidField, NotFound } from '../../base/errors.ts';
import type { Store } from '../db/store.ts';
import { oneTimePassword, type AuditEvent, type HashedAccount, type Users } from '../users/users.ts';
import { checkStudentRows, type RejectedRow, type StudentRow } from './import.ts';

/** A class's name as people write it (7b, Networking 2): printable, no markup. */
export const ClassName = z.string().trim().min(1, 'must not be empty').max(64, 'must be at most 64 characters')
  .regex(/^[^\u0000-\u001f\u007f<>]*$/, 'must be printable, without < or >');
export const MemberRole = z.enum(['teacher', 'student']);
export type MemberRole = z.infer<typeof MemberRole>;
/** A class id: 12 lowercase hex digits, like join token ids. */
export const ClassId = z.string().regex(/^[a-f0-9]{12}$/);

/** A class as the API returns it. */
export const ClassInfo = z.object({
  id: z.string().describe('12 hex digits, e.g. 3f9c0a12b7de'),
  name: z.string().describe('e.g. 7b'),
  teachers: z.array(z.string()).describe('user names, sorted'),
  students: z.array(z.string()).describe('user names, sorted'),
  createdAt: z.string(),
});
export type ClassInfo = z.infer<typeof ClassInfo>;

/** A student account made by an import, with its one-time password (shown once, never stored). */
export interface CreatedStudent {
  name: string;
  displayName?: string;
  password: string;
}

export interface ImportResult {
  created: CreatedStudent[];
  rejected: RejectedRow[];
}

export interface ClassesOptions {
  /** To check that members exist and have a role that fits, and to make accounts in bulk. */
  users: Pick<Users, 'get' | 'hash' | 'insertHashed'>;
  audit?: (e: AuditEvent) => void;
}

export class Classes {
  private readonly store: Store;
  private readonly opts: ClassesOptions;
  private byId = new Map<string, ClassInfo>();
  private byUser = new Map<string, { teaching: Set<string>; attending: Set<string> }>();
  /** Changes with every change of a class or its members (list caches key on it). */
  version = 0;

  constructor(store: Store, opts: ClassesOptions) {
    this.store = store;
    this.opts = opts;
    this.reload();
  }

  /** Reads every class and member again (after a change, or a user's removal cascaded in SQLite). */
  reload(): void {
    const byId = new Map<string, ClassInfo>();
    for (const r of this.store.all('SELECT id, name, created_at FROM classes ORDER BY name')) {
      byId.set(String(r.id), { id: String(r.id), name: String(r.name), teachers: [], students: [], createdAt: String(r.created_at) });
    }
    const byUser = new Map<string, { teaching: Set<string>; attending: Set<string> }>();
    for (const r of this.store.all('SELECT class_id, user_name, role FROM class_members ORDER BY user_name')) {
      const c = byId.get(String(r.class_id));
      if (!c) continue;
      const name = String(r.user_name);
      let mine = byUser.get(name);
      if (!mine) byUser.set(name, mine = { teaching: new Set(), attending: new Set() });
      if (r.role === 'teacher') {
        c.teachers.push(name);
        mine.teaching.add(c.id);
      } else {
        c.students.push(name);
        mine.attending.add(c.id);
      }
    }
    this.byId = byId;
    this.byUser = byUser;
    this.version++;
  }

  /** Every class, by name. */
  list(): ClassInfo[] {
    return [...this.byId.values()];
  }

  get(id: string): ClassInfo | undefined {
    return this.byId.get(id);
  }

  /** The class, or a 404. */
  require(id: string): ClassInfo {
    const c = this.byId.get(id);
    if (!c) throw new NotFound(`class "${id.slice(0, 64)}"`);
    return c;
  }

  /** The ids of the classes a user teaches and attends. */
  ofUser(name: string): { teaching: ReadonlySet<string>; attending: ReadonlySet<string> } {
    return this.byUser.get(name) ?? { teaching: new Set(), attending: new Set() };
  }

  /** Makes a class, with its first teachers; a taken name is a 409 naming `name`. */
  create(input: { name: string; teachers?: string[] }, by: string): ClassInfo {
    const name = parseField(ClassName, 'name', input.name);
    if (this.list().some((c) => c.name.toLowerCase() === name.toLowerCase())) {
      throw new Conflict(`a class named "${name}" already exists`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    const teachers = [...new Set(input.teachers ?? [])];
    for (const t of teachers) this.checkMember(t, 'teacher');
    const id = randomBytes(6).toString('hex');
    this.store.tx(() => {
      this.store.run('INSERT INTO classes (id, name, created_at) VALUES (?, ?, ?)', id, name, new Date().toISOString());
      for (const t of teachers) this.store.run('INSERT INTO class_members (class_id, user_name, role) VALUES (?, ?, ?)', id, t, 'teacher');
    });
    this.reload();
    this.said(`class ${name} (${id}) created by "${by}"${teachers.length ? `, teachers ${teachers.join(', ')}` : ''}`, { classId: id, by });
    return this.require(id);
  }

  /** Removes a class and its memberships (the accounts stay). */
  remove(id: string, by: string): void {
    const c = this.require(id);
    this.store.run('DELETE FROM classes WHERE id = ?', id);
    this.reload();
    this.said(`class ${c.name} (${id}) removed by "${by}"`, { classId: id, by });
  }

  /** Renames a class (a taken name is a 409 naming `name`). */
  rename(id: string, newName: string, by: string): ClassInfo {
    const c = this.require(id);
    const name = parseField(ClassName, 'name', newName);
    if (this.list().some((o) => o.id !== id && o.name.toLowerCase() === name.toLowerCase())) {
      throw new Conflict(`a class named "${name}" already exists`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    this.store.run('UPDATE classes SET name = ? WHERE id = ?', name, id);
    this.reload();
    this.said(`class ${c.name} (${id}) renamed to ${name} by "${by}"`, { classId: id, by });
    return this.require(id);
  }

  /**
   * Adds a user to a class as a teacher (an account with the role teacher or admin) or a student
   * (role student). Adding someone already in it with that role changes nothing; with the other role, 409.
   */
  addMember(classId: string, userName: string, role: MemberRole, by: string): ClassInfo {
    const c = this.require(classId);
    this.checkMember(userName, role);
    const had = this.store.get<{ role: string }>('SELECT role FROM class_members WHERE class_id = ? AND user_name = ?', classId, userName);
    if (had?.role === role) return c;
    if (had) throw new Conflict(`${userName} is already a ${had.role} of ${c.name}`);
    this.store.run('INSERT INTO class_members (class_id, user_name, role) VALUES (?, ?, ?)', classId, userName, role);
    this.reload();
    this.said(`${userName} added to class ${c.name} as a ${role} by "${by}"`, { classId, user: userName, role, by });
    return this.require(classId);
  }

  /**
   * Makes student accounts from rows (server/classes/import.ts) and puts them in the class: the good
   * rows all in one transaction, each with a one-time password they change at their first login;
   * the bad rows (empty, invalid, twice in the file, taken) come back with a reason and change nothing.
   */
  async importStudents(classId: string, rows: StudentRow[], by: string): Promise<ImportResult> {
    const c = this.require(classId);
    const { good, rejected } = checkStudentRows(rows, (name) => this.opts.users.get(name) !== undefined);
    const made = await Promise.all(good.map(async (row) => {
      const password = oneTimePassword();
      return { row, password, hash: await this.opts.users.hash(password) };
    }));
    // Hashing took a while: a name someone took meanwhile is rejected too, not the whole import.
    const fresh = made.filter(({ row }) => {
      const taken = this.opts.users.get(row.name) !== undefined;
      if (taken) rejected.push({ line: row.line, name: row.name, reason: 'a user with this name already exists' });
      return !taken;
    });
    rejected.sort((a, b) => a.line - b.line);
    const accounts: HashedAccount[] = fresh.map(({ row, hash }) => ({ name: row.name, displayName: row.displayName, role: 'student', hash, mustChangePassword: true }));
    this.store.tx(() => {
      this.require(classId); // still there after the hashing
      this.opts.users.insertHashed(accounts);
      for (const a of accounts) this.store.run('INSERT INTO class_members (class_id, user_name, role) VALUES (?, ?, ?)', classId, a.name, 'student');
    });
    this.reload();
    if (accounts.length > 0 || rejected.length > 0) {
      this.said(`${accounts.length} student(s) created in class ${c.name} by "${by}"${rejected.length ? `, ${rejected.length} row(s) rejected` : ''}`,
        { classId, by, created: accounts.length, rejected: rejected.length });
    }
    return {
      created: fresh.map(({ row, password }) => ({ name: row.name, ...(row.displayName ? { displayName: row.displayName } : {}), password })),
      rejected,
    };
  }

  /** Takes a user out of a class (their account and VMs stay); with `role`, only a member in that role (else 404). */
  removeMember(classId: string, userName: string, by: string, role?: MemberRole): ClassInfo {
    const c = this.require(classId);
    const sql = `DELETE FROM class_members WHERE class_id = ? AND user_name = ?${role ? ' AND role = ?' : ''}`;
    if (this.store.run(sql, classId, userName, ...(role ? [role] : [])).changes === 0) {
      throw new NotFound(`${role ?? 'member'} "${userName.slice(0, 64)}" of class ${c.name}`);
    }
    this.reload();
    this.said(`${userName} removed from class ${c.name} by "${by}"`, { classId, user: userName, by });
    return this.require(classId);
  }

  /** Throws a 422 naming `user` unless `name` is an account that may be a member in `role`. */
  checkMember(name: string, role: MemberRole): void {
    const user = this.opts.users.get(name);
    if (!user) throw new InvalidField('user', `no user "${name.slice(0, 64)}"`);
    if (role === 'teacher' && user.role === 'student') throw new InvalidField('user', `${name} is a student: make them a teacher first (Users page)`);
    if (role === 'student' && user.role !== 'student') throw new InvalidField('user', `${name} is ${user.role === 'admin' ? 'an admin' : 'a teacher'}, not a student`);
  }

  private said(msg: string, data: Record<string, unknown>): void {
    this.opts.audit?.({ level: 'info', msg, data });
  }
}

/** Parses one field or throws a 422 naming it with the schema's message. */
function parseField<S extends z.ZodType>(schema: S, field: string, value: unknown): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new InvalidField(field, r.error.issues[0]?.message ?? 'not allowed');
  return r.data;
}
