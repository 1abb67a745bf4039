// The users page (admin: create with a role, display name and one-time password, reset a password,
// change a role, delete, self-registration) and "My account" (everyone: role, classes, password,
// own API tokens).
import express, { type Request, type Response, type Router } from 'express';
import { InvalidField, NotFound, toSkyError } from '../../base/errors.ts';
import type { ControllerServices } from '../services.ts';
import { requireAdmin, requireUser } from '../users/auth.ts';
import { TokenCreate } from '../users/routes.ts';
import { DisplayName, Password, Role, UserName, type User } from '../users/users.ts';
import { field, fieldErrors, me, redirect, schemaErrors } from './forms.ts';
import { quotaUsageView } from './policies.ts';
import { render } from './render.ts';

/** The roles a form offers, with what each may do. */
export const ROLES = [
  { value: 'student', label: 'Student', hint: 'their own VMs' },
  { value: 'teacher', label: 'Teacher', hint: 'their own VMs and their classes\' VMs' },
  { value: 'admin', label: 'Admin', hint: 'everything' },
] as const;

/** The role a form asked for: `role`, or the older checkbox `admin=true|false`. */
function roleOf(req: Request, fallback: Role = 'student'): Role {
  const asked = Role.safeParse(field(req, 'role', 16));
  if (asked.success) return asked.data;
  const admin = field(req, 'admin');
  return admin === 'true' ? 'admin' : admin === 'false' ? 'student' : fallback;
}

export function userPages(services: ControllerServices): Router {
  const r = express.Router();
  const { users, classes } = services;

  /** Every user with the names of the classes they teach or attend. */
  const userRows = () => {
    const names = new Map(classes.list().map((c) => [c.id, c.name]));
    return users.list().map((u) => {
      const mine = classes.ofUser(u.name);
      const named = (ids: ReadonlySet<string>) => [...ids].map((id) => names.get(id) ?? id).sort();
      return { ...u, teaching: named(mine.teaching), attending: named(mine.attending), roles: ROLES.map((x) => ({ ...x, selected: x.value === u.role })),
        quota: quotaUsageView(services.quotas.usageOf(u), services.quotas.ofUser(u.name), { action: `/admin/users/${u.name}/quota`, admin: true, next: '/admin/users', title: u.name }) };
    });
  };

  const usersPage = (req: Request, res: Response, extra: { form?: object; notice?: string; status?: number; partial?: string } = {}) => {
    const form = { values: { role: 'student' }, errors: {}, ...extra.form } as { values: { role?: string } };
    render(req, res, {
      page: 'users', partial: extra.partial ?? 'user-list', title: 'Users', status: extra.status ?? 200,
      data: {
        users: userRows(), selfRegistration: users.selfRegistration(), notice: extra.notice,
        form, roles: ROLES.map((x) => ({ ...x, selected: x.value === (form.values.role ?? 'student') })),
      },
    });
  };
  r.get('/admin/users', requireAdmin(), (req, res) => usersPage(req, res));

  // The answer to an htmx create is the form and (out of band) the refreshed table.
  r.post('/admin/users', requireAdmin(), async (req, res) => {
    const values = {
      name: field(req, 'name', 64), displayName: field(req, 'displayName', 100), role: roleOf(req), mustChange: field(req, 'mustChange') === 'true',
    };
    const password = field(req, 'password', 256);
    const errors = schemaErrors({ name: [UserName, values.name], password: [Password, password], ...(values.displayName ? { displayName: [DisplayName, values.displayName] } : {}) });
    if (Object.keys(errors).length > 0) return usersPage(req, res, { partial: 'user-form', status: 422, form: { values, errors } });
    try {
      await users.create({ name: values.name, password, role: values.role, displayName: values.displayName || undefined, mustChangePassword: values.mustChange });
      usersPage(req, res, { partial: 'user-created', form: { values: { role: values.role }, errors: {}, created: values.name } });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      const fields = sky.status === 409 ? { name: 'this name is taken' } : fieldErrors(sky);
      usersPage(req, res, { partial: 'user-form', status: sky.status === 409 ? 409 : 422, form: { values, errors: fields, error: Object.keys(fields).length ? undefined : sky.message } });
    }
  });

  r.post('/admin/users/registration', requireAdmin(), (req, res) => {
    users.setSelfRegistration(field(req, 'on') === 'true');
    redirect(req, res, '/admin/users', { swap: true });
  });

  r.post('/admin/users/:name/:action', requireAdmin(), async (req, res) => {
    const name = String(req.params.name);
    const action = String(req.params.action);
    const before = users.get(name);
    if (!before) throw new NotFound(`user "${name.slice(0, 64)}"`);
    let notice: string;
    if (action === 'password') {
      const errors = schemaErrors({ password: [Password, field(req, 'password', 256)] });
      if (errors.password) throw new InvalidField('password', errors.password);
      await users.changePassword(name, field(req, 'password', 256), { by: me(res).name });
      notice = `New password set for ${name}.`;
    } else if (action === 'role') {
      const role = users.setRole(name, roleOf(req, before.role), me(res).name).role;
      notice = `${name} is now ${role === 'admin' ? 'an admin' : `a ${role}`}.`;
    } else if (action === 'delete') {
      users.remove(name);
      return redirect(req, res, '/admin/users', { swap: true });
    } else {
      throw new NotFound(`action "${action.slice(0, 32)}"`);
    }
    usersPage(req, res, { notice });
  });

  // ---- my account ----
  const accountPage = (req: Request, res: Response, extra: { made?: object; tokenError?: string; label?: string; status?: number; partial?: string } = {}) => {
    const user = me(res);
    const mine = classes.ofUser(user.name);
    const classRows = services.access.classesOf(user)
      .filter((c) => user.role !== 'admin' || mine.teaching.has(c.id))
      .map((c) => ({ id: c.id, name: c.name, teaching: mine.teaching.has(c.id), teachers: c.teachers }));
    render(req, res, {
      page: 'account', partial: extra.partial ?? 'user-tokens', title: 'My account', status: extra.status ?? 200,
      data: {
        user, roleText: roleText(user), classes: classRows, canManageClasses: user.role !== 'student',
        tokens: users.tokens(user.name), made: extra.made, tokenError: extra.tokenError, label: extra.label ?? '', errors: {},
      },
    });
  };
  r.get('/account', requireUser(), (req, res) => accountPage(req, res));

  r.post('/account/tokens', requireUser(), (req, res) => {
    const label = field(req, 'label', 200);
    const parsed = TokenCreate.safeParse({ label });
    if (!parsed.success) {
      return accountPage(req, res, { partial: 'user-tokens', status: 422, label, tokenError: label ? 'a label must be 1-100 printable characters' : 'give the token a label, e.g. "lesson script"' });
    }
    const { token, info } = users.createToken(me(res).name, parsed.data.label);
    res.setHeader('Cache-Control', 'no-store'); // the answer holds the token
    services.events.record({ source: 'users', msg: `API token "${info.label}" (${info.id}) made by "${me(res).name}"` });
    accountPage(req, res, { partial: 'user-tokens', made: { token, ...info } });
  });

  r.post('/account/tokens/:id/revoke', requireUser(), (req, res) => {
    const id = String(req.params.id).slice(0, 64);
    users.revokeToken(me(res).name, id);
    services.events.record({ source: 'users', msg: `API token ${id} revoked by "${me(res).name}"` });
    redirect(req, res, '/account', { swap: true });
  });

  return r;
}

/** "a teacher" / "an admin": what the account page says a role may do. */
function roleText(user: User): string {
  const role = ROLES.find((x) => x.value === user.role);
  return `${user.role === 'admin' ? 'an admin' : `a ${user.role}`}: ${role?.hint ?? ''}`;
}
