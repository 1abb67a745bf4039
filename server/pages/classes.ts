// The classes pages: /classes (an admin's every class, a teacher's own; an admin creates classes and
// names their teachers) and /classes/:id (teachers, students, adding students one by one or in bulk
// from a CSV or a pattern, with the one-time passwords on a printable sheet shown once).
import express, { type Request, type Response, type Router } from 'express';
import { BadRequest, Forbidden, toSkyError } from '../../base/errors.ts';
import { manageableClass, requireTeacher } from '../classes/routes.ts';
import type { ImportResult } from '../classes/classes.ts';
import { MAX_CSV_CHARS, MAX_ROWS, parseStudentCsv, patternRows } from '../classes/import.ts';
import type { ControllerServices } from '../services.ts';
import { requireUser } from '../users/auth.ts';
import type { User } from '../users/users.ts';
import { field, fieldErrors, me, redirect } from './forms.ts';
import { quotaUsageView } from './policies.ts';
import { render } from './render.ts';

interface ImportForm {
  values: { csv?: string; prefix?: string; count?: string; start?: string };
  errors: Record<string, string>;
  error?: string | undefined;
}

interface CreateForm {
  values: { name?: string; teacher?: string };
  errors: Record<string, string>;
  error?: string | undefined;
}

export function classPages(services: ControllerServices): Router {
  const r = express.Router();
  const { classes, access, users } = services;

  /** Classes are for teachers and admins: a student gets 403. */
  const teacher = (res: Response): User => {
    const user = me(res);
    requireTeacher(user);
    return user;
  };

  const listPage = (req: Request, res: Response, form: CreateForm = { values: {}, errors: {} }, status = 200, partial = 'class-list') => {
    const user = teacher(res);
    const rows = access.classesOf(user).map((c) => ({ ...c, studentCount: c.students.length }));
    const teachers = user.role === 'admin' ? users.list().filter((u) => u.role !== 'student') : [];
    render(req, res, {
      page: 'classes', partial, status, title: 'Classes',
      data: { classes: rows, isAdmin: user.role === 'admin', teachers: teachers.map((t) => ({ ...t, selected: t.name === form.values.teacher })), form },
    });
  };
  r.get('/classes', requireUser(), (req, res) => listPage(req, res));

  r.post('/classes', requireUser(), (req, res) => {
    const user = teacher(res);
    if (user.role !== 'admin') throw new Forbidden('only an admin creates classes');
    const values = { name: field(req, 'name', 100), teacher: field(req, 'teacher', 64) };
    try {
      const c = classes.create({ name: values.name, ...(values.teacher ? { teachers: [values.teacher] } : {}) }, user.name);
      redirect(req, res, `/classes/${c.id}`);
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      const errors = fieldErrors(sky, { user: 'teacher' });
      listPage(req, res, { values, errors, error: Object.keys(errors).length ? undefined : sky.message }, sky.status, 'class-form');
    }
  });

  const classPage = (req: Request, res: Response, id: string, extra: { form?: ImportForm; notice?: string; error?: string; status?: number; partial?: string } = {}) => {
    const user = teacher(res);
    const c = manageableClass(classes, access, user, id);
    const isAdmin = user.role === 'admin';
    const members = new Set([...c.teachers, ...c.students]);
    const everyone = users.list();
    const byName = new Map(everyone.map((u) => [u.name, u]));
    // Each student's usage against their quota (the admin can set it here too).
    const studentQuota = (u: User | undefined) => (u ? { quota: quotaUsageView(services.quotas.usageOf(u), services.quotas.ofUser(u.name), { action: `/admin/users/${u.name}/quota`, admin: isAdmin, next: `/classes/${c.id}`, title: u.name }) } : {});
    const vmCount = new Map<string, number>();
    for (const vm of services.vms.records(user)) vmCount.set(vm.owner, (vmCount.get(vm.owner) ?? 0) + 1);
    render(req, res, {
      page: 'class', partial: extra.partial ?? 'class-members', title: `Class ${c.name}`, status: extra.status ?? 200,
      data: {
        cls: c, isAdmin, notice: extra.notice, error: extra.error,
        students: c.students.map((n) => ({ ...byName.get(n), name: n, vms: vmCount.get(n) ?? 0, ...studentQuota(byName.get(n)) })),
        teachers: c.teachers.map((n) => ({ ...byName.get(n), name: n })),
        teacherOptions: isAdmin ? everyone.filter((u) => u.role !== 'student' && !members.has(u.name)) : [],
        studentOptions: everyone.filter((u) => u.role === 'student' && !members.has(u.name)).slice(0, 1000),
        form: extra.form ?? { values: { count: '30', start: '1' }, errors: {} }, maxRows: MAX_ROWS,
        quota: quotaUsageView(services.quotas.usageOfClass(c.id), services.quotas.ofClass(c.id), { action: `/classes/${c.id}/quota`, admin: isAdmin, next: `/classes/${c.id}`, title: 'Quota of the class (its VMs together)' }),
      },
    });
  };
  const classId = (req: Request) => String(req.params.id).slice(0, 64);
  r.get('/classes/:id', requireUser(), (req, res) => classPage(req, res, classId(req)));

  /** A member change; its refusal (no such user, wrong role) shows above the members list. */
  const memberChange = (req: Request, res: Response, change: (id: string, user: User) => string) => {
    const id = classId(req);
    const user = teacher(res);
    manageableClass(classes, access, user, id);
    try {
      classPage(req, res, id, { notice: change(id, user) });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500 || (sky.status === 404 && !classes.get(id))) throw err;
      classPage(req, res, id, { error: sky.message, status: sky.status });
    }
  };
  const adminOnly = (user: User) => {
    if (user.role !== 'admin') throw new Forbidden('only an admin names a class\'s teachers');
  };

  r.post('/classes/:id/teachers', requireUser(), (req, res) => memberChange(req, res, (id, user) => {
    adminOnly(user);
    const name = field(req, 'user', 64);
    classes.addMember(id, name, 'teacher', user.name);
    return `${name} now teaches this class.`;
  }));
  r.post('/classes/:id/teachers/:user/remove', requireUser(), (req, res) => memberChange(req, res, (id, user) => {
    adminOnly(user);
    const name = String(req.params.user).slice(0, 64);
    classes.removeMember(id, name, user.name, 'teacher');
    return `${name} no longer teaches this class.`;
  }));
  r.post('/classes/:id/students', requireUser(), (req, res) => memberChange(req, res, (id, user) => {
    const name = field(req, 'user', 64).toLowerCase();
    classes.addMember(id, name, 'student', user.name);
    return `${name} joined the class.`;
  }));
  r.post('/classes/:id/students/:user/remove', requireUser(), (req, res) => memberChange(req, res, (id, user) => {
    const name = String(req.params.user).slice(0, 64);
    classes.removeMember(id, name, user.name, 'student');
    return `${name} left the class (the account stays).`;
  }));

  r.post('/classes/:id/delete', requireUser(), (req, res) => {
    const user = teacher(res);
    if (user.role !== 'admin') throw new Forbidden('only an admin deletes classes');
    classes.remove(classId(req), user.name);
    redirect(req, res, '/classes');
  });

  // Students in bulk. A plain form sends the pasted CSV or the pattern; through htmx the form is
  // multipart, so a chosen file comes along. The answer is the sheet of one-time passwords (shown
  // once: it is not kept), or the form again with its errors.
  r.post('/classes/:id/import', requireUser(), express.raw({ type: 'multipart/form-data', limit: MAX_CSV_CHARS * 4 + 16_384 }), async (req, res) => {
    const id = classId(req);
    const user = teacher(res);
    const c = manageableClass(classes, access, user, id);
    const fields = Buffer.isBuffer(req.body) ? multipartFields(req) : {
      csv: field(req, 'csv', MAX_CSV_CHARS + 1), prefix: field(req, 'prefix', 64), count: field(req, 'count', 10), start: field(req, 'start', 10),
    };
    const csv = (fields.file?.trim() ? fields.file : fields.csv ?? '').slice(0, MAX_CSV_CHARS + 1);
    const values = { csv: fields.file?.trim() ? '' : csv, prefix: fields.prefix?.trim() ?? '', count: fields.count?.trim() ?? '', start: fields.start?.trim() ?? '' };
    const form: ImportForm = { values, errors: {} };
    let result: ImportResult;
    try {
      let rows;
      if (csv.trim() !== '') rows = parseStudentCsv(csv);
      else if (values.prefix !== '') rows = patternRows(values.prefix, wholeNumber(values.count), values.start === '' ? 1 : wholeNumber(values.start));
      else {
        form.errors.csv = 'paste or choose a CSV, or give a start of the names and a count';
        return classPage(req, res, id, { form, status: 422, partial: 'class-import' });
      }
      result = await classes.importStudents(c.id, rows, user.name);
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      Object.assign(form.errors, fieldErrors(sky));
      if (Object.keys(form.errors).length === 0) form.error = sky.message;
      return classPage(req, res, id, { form, status: sky.status, partial: 'class-import' });
    }
    res.setHeader('Cache-Control', 'no-store'); // it holds passwords
    res.setHeader('HX-Retarget', '#main');
    res.setHeader('HX-Reswap', 'innerHTML show:window:top');
    render(req, res, {
      page: 'passwords-print', partial: 'class-passwords', title: `New students of ${c.name}`,
      data: { cls: classes.get(c.id) ?? c, created: result.created, rejected: result.rejected, by: user.name, at: new Date().toISOString() },
    });
  });

  return r;
}

/** A count typed in a form: a whole number, else NaN (patternRows refuses it naming the field). */
function wholeNumber(text: string): number {
  return /^\d{1,6}$/.test(text) ? Number(text) : Number.NaN;
}

/**
 * The text fields and the file of a multipart/form-data body (what a browser sends for a form with
 * a file): each part's name and its content as UTF-8; the file's content comes as `file`.
 */
export function multipartFields(req: Request): Record<string, string | undefined> {
  const boundary = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(req.get('content-type') ?? '');
  const body = req.body as Buffer;
  const out: Record<string, string | undefined> = {};
  if (!boundary) throw new BadRequest('a multipart form without its boundary');
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]}`);
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    const start = at + delimiter.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(delimiter, start);
    if (next < 0) break;
    const part = body.subarray(start + 2, next - 2); // after CRLF, before the CRLF ahead of the next delimiter
    const split = part.indexOf('\r\n\r\n');
    if (split >= 0) {
      const head = part.subarray(0, split).toString('utf8');
      const name = /name="([^"]*)"/i.exec(head)?.[1];
      if (name && ['csv', 'prefix', 'count', 'start', 'file'].includes(name)) out[name] = part.subarray(split + 4).toString('utf8');
    }
    at = next;
  }
  return out;
}
