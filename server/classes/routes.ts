// The JSON API of classes: list, create, rename, delete (admin); teachers (admin); students, one by
// one or in bulk from a CSV or a pattern (admin, or a teacher of the class). A class a teacher does
// not teach is a 404 to them, as another user's VM is; so is every class to a student, who only lists
// the classes they are in.
import type { Request, Response } from 'express';
import { z } from 'zod';
import { Forbidden, InvalidField, NotFound, PayloadTooLarge } from '../../base/errors.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import type { User } from '../users/users.ts';
import { UserName } from '../users/users.ts';
import { ClassInfo, ClassName, type Classes } from './classes.ts';
import type { ClassAccess } from './access.ts';
import { MAX_CSV_CHARS, MAX_ROWS, parseStudentCsv, patternRows } from './import.ts';

export const ClassCreate = z.strictObject({
  name: ClassName.describe('e.g. 7b'),
  teachers: z.array(UserName).max(20).optional().describe('user names of teachers (role teacher or admin)'),
});
export const ClassUpdate = z.strictObject({ name: ClassName });
export const MemberAdd = z.strictObject({ user: UserName.describe('an existing account') });
export const StudentImport = z.union([
  z.strictObject({ csv: z.string().max(MAX_CSV_CHARS).describe('one student a line: name[,display name]; a header line is skipped; , ; or tab') }),
  z.strictObject({
    prefix: z.string().min(1).max(30).describe('the start of every name, e.g. 7b-'),
    count: z.number().int().min(1).max(MAX_ROWS).describe('how many: 30 makes 7b-01 … 7b-30'),
    start: z.number().int().min(0).max(99_999).optional().describe('the first number (default 1)'),
  }),
]);
export const ImportAnswer = z.object({
  created: z.array(z.object({ name: z.string(), displayName: z.string().optional(), password: z.string().describe('one-time: shown once, changed at the first login') })),
  rejected: z.array(z.object({ line: z.number().describe('line of the CSV (or position in the pattern)'), name: z.string(), reason: z.string() })),
});
const OneClass = z.object({ class: ClassInfo });

/** The class `user` may manage (an admin: any; a teacher: one they teach), else a 404 (its existence is not disclosed). */
export function manageableClass(classes: Classes, access: ClassAccess, user: User, id: string): ClassInfo {
  const c = classes.get(id);
  if (!c || !access.teaches(user, { id })) throw new NotFound(`class "${id.slice(0, 64)}"`);
  return c;
}

/** Throws 403 for a student: classes are for teachers and admins. */
export function requireTeacher(user: User): void {
  if (user.role === 'student') throw new Forbidden('only teachers and admins manage classes');
}

export function classRoutes(api: ApiRouter, services: ControllerServices): void {
  const { classes, access } = services;
  const mine = (res: Response, id: string) => manageableClass(classes, access, me(res), id);

  api.route({
    method: 'get', path: '/api/classes', auth: 'user',
    summary: 'Classes: every class (admin), the classes I teach (teacher), the classes I am in (student: with myself as the only student listed)',
    responses: { 200: z.object({ classes: z.array(ClassInfo) }) },
  }, (_req, res) => {
    const user = me(res);
    const list = access.classesOf(user);
    res.json({ classes: user.role === 'student' ? list.map((c) => ({ ...c, students: [user.name] })) : list });
  });
  api.route({ method: 'post', path: '/api/classes', summary: 'Create a class (409 naming name when it is taken)', auth: 'admin', body: ClassCreate, responses: { 201: OneClass } },
    (_req, res, { body }) => {
      const c = classes.create({ name: body.name, ...(body.teachers ? { teachers: body.teachers } : {}) }, me(res).name);
      res.status(201).location(`/api/classes/${c.id}`).json({ class: c });
    });
  api.route({ method: 'get', path: '/api/classes/:id', summary: 'One class with its teachers and students', auth: 'user', responses: { 200: OneClass } }, (req, res) => {
    res.json({ class: mine(res, param(req, 'id')) });
  });
  api.route({ method: 'patch', path: '/api/classes/:id', summary: 'Rename a class', auth: 'admin', body: ClassUpdate, responses: { 200: OneClass } }, (req, res, { body }) => {
    res.json({ class: classes.rename(param(req, 'id'), body.name, me(res).name) });
  });
  api.route({ method: 'delete', path: '/api/classes/:id', summary: 'Delete a class (its accounts and VMs stay)', auth: 'admin', responses: { 204: 'deleted' } }, (req, res) => {
    classes.remove(param(req, 'id'), me(res).name);
    res.status(204).end();
  });
  api.route({
    method: 'post', path: '/api/classes/:id/teachers', summary: 'Add a teacher (an account with the role teacher or admin; 422 naming user otherwise)',
    auth: 'admin', body: MemberAdd, responses: { 200: OneClass },
  }, (req, res, { body }) => {
    res.json({ class: classes.addMember(param(req, 'id'), body.user, 'teacher', me(res).name) });
  });
  api.route({ method: 'delete', path: '/api/classes/:id/teachers/:user', summary: 'Take a teacher out of a class', auth: 'admin', responses: { 200: OneClass } }, (req, res) => {
    res.json({ class: classes.removeMember(param(req, 'id'), param(req, 'user'), me(res).name, 'teacher') });
  });
  api.route({
    method: 'post', path: '/api/classes/:id/students', summary: 'Add an existing student (role student; 422 naming user otherwise)', auth: 'user',
    body: MemberAdd, responses: { 200: OneClass },
  }, (req, res, { body }) => {
    const c = mine(res, param(req, 'id'));
    res.json({ class: classes.addMember(c.id, body.user, 'student', me(res).name) });
  });
  api.route({
    method: 'delete', path: '/api/classes/:id/students/:user', summary: 'Take a student out of a class (the account stays)', auth: 'user', responses: { 200: OneClass },
  }, (req, res) => {
    const c = mine(res, param(req, 'id'));
    res.json({ class: classes.removeMember(c.id, param(req, 'user'), me(res).name, 'student') });
  });
  api.route({
    method: 'post', path: '/api/classes/:id/students/bulk',
    summary: 'Create students in the class from a CSV (JSON {csv}, or the file as text/csv) or a pattern {prefix, count}: the good rows in one go, ' +
      'each with a one-time password shown only in this answer; the bad rows listed with a reason (nothing else changes)',
    auth: 'user', body: StudentImport, upload: 'text/csv: the CSV file itself', responses: { 201: ImportAnswer },
  }, async (req, res, { body }) => {
    const c = mine(res, param(req, 'id'));
    const rows = body === undefined ? parseStudentCsv(await readText(req))
      : 'csv' in body ? parseStudentCsv(body.csv) : patternRows(body.prefix, body.count, body.start ?? 1);
    const result = await classes.importStudents(c.id, rows, me(res).name);
    res.setHeader('Cache-Control', 'no-store'); // it holds passwords
    res.status(201).json(result);
  });
}

/** A text body sent as a file (text/csv), at most MAX_CSV_CHARS characters. */
async function readText(req: Request): Promise<string> {
  if (!req.is('text/*') && !req.is('application/csv')) throw new InvalidField('body', 'send JSON {csv} or {prefix, count}, or the CSV file as text/csv');
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > MAX_CSV_CHARS * 4) throw new PayloadTooLarge(`${MAX_CSV_CHARS * 4} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
