// The controller's pages (docs/design.md#json-api lists them): one Express router mounted by the app. Every page is a route
// here that reads the services and renders a Handlebars view (render.ts); an htmx request for the
// same URL gets only the partial the page swaps.
//
//   /login /register /logout /account/password   account.ts-like flow below
//   /                                             dashboard (polled partial: hosts, totals, events)
//   /vms /vms/:id                                 vms.ts
//   /hosts /admin/events                          admin.ts
//   /admin/users /account                         users.ts
//   /classes /classes/:id                         classes.ts
//   /templates                                    templates.ts
import express, { type Router } from 'express';
import { NotFound, SkyError, Unauthorized, toSkyError } from '../../base/errors.ts';
import { wantsFragment } from '../../base/views.ts';
import type { Logger } from '../../base/log.ts';
import type { ControllerServices } from '../services.ts';
import { PASSWORD_CHANGE_PATH, authOf, clearSessionCookie, requireUser, setSessionCookie } from '../users/auth.ts';
import { Password, UserName } from '../users/users.ts';
import { adminPages } from './admin.ts';
import { hostPages } from './hosts.ts';
import { dashboardData, loopbackFor } from './dashboard.ts';
import { field, localPath, me, redirect, schemaErrors, viewer } from './forms.ts';
import { pageErrors, precompileViews, render } from './render.ts';
import { sessionPages } from './sessions.ts';
import { templatePages } from './templates.ts';
import { classPages } from './classes.ts';
import { userPages } from './users.ts';
import { policyPages } from './policies.ts';
import { vmPages } from './vms.ts';

export interface PageOptions {
  log: Logger;
}

/** Every page route, with its own HTML error handler (the API keeps its JSON errors). Mount after the body parsers, `authenticate` and `csrfProtect`. */
export function pageRouter(services: ControllerServices, opts: PageOptions): Router {
  precompileViews();
  const r = express.Router();
  r.use(viewer);

  // ---- signing in ----
  r.get('/login', (req, res) => {
    if (authOf(res)) return redirect(req, res, '/');
    // A poll whose session ended was sent here: the whole page goes to the login page.
    if (wantsFragment(req)) return redirect(req, res, req.originalUrl);
    render(req, res, {
      page: 'login', partial: 'login-form', title: 'Log in',
      data: { next: localPath(String(req.query.next ?? '/')), values: {}, errors: {}, selfRegistration: services.users.selfRegistration() },
    });
  });

  r.post('/login', async (req, res) => {
    const name = field(req, 'name', 64);
    const password = field(req, 'password', 256);
    const next = localPath(field(req, 'next', 2000));
    const errors: Record<string, string> = {};
    if (!name) errors.name = 'enter your user name';
    if (!password) errors.password = 'enter your password';
    const again = (status: number, error?: string) => render(req, res, {
      page: 'login', partial: 'login-form', title: 'Log in', status,
      data: { next, values: { name }, errors, error, selfRegistration: services.users.selfRegistration() },
    });
    if (Object.keys(errors).length > 0) return again(422);
    try {
      const { sessionId, session } = await services.users.login(name, password, req.ip);
      setSessionCookie(req, res, sessionId, session.expiresAt);
      redirect(req, res, session.user.mustChangePassword ? PASSWORD_CHANGE_PATH : next);
    } catch (err) {
      if (err instanceof SkyError && err.status === 429) return again(429, err.message);
      if (!(err instanceof Unauthorized)) throw err;
      again(401, 'Wrong user name or password.');
    }
  });

  r.post('/register', async (req, res) => {
    const name = field(req, 'name', 64);
    const password = field(req, 'password', 256);
    // Checked here: Users.create would throw a schema error that is no SkyError (a 500).
    const registerErrors = schemaErrors({ name: [UserName, name], password: [Password, password] });
    const again = (status: number, registerError?: string) => render(req, res, {
      page: 'login', partial: 'register-form', title: 'Log in', status,
      data: {
        next: '/', values: {}, errors: {}, selfRegistration: services.users.selfRegistration(),
        registerValues: { name }, registerErrors, registerError,
      },
    });
    if (Object.keys(registerErrors).length > 0) return again(422);
    try {
      await services.users.register(name, password);
      const { sessionId, session } = await services.users.login(name, password, req.ip);
      setSessionCookie(req, res, sessionId, session.expiresAt);
      redirect(req, res, '/');
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      again(sky.status === 409 || sky.status === 403 ? sky.status : 422, sky.message);
    }
  });

  r.post('/logout', requireUser({ allowPasswordChange: true }), (req, res) => {
    const auth = authOf(res);
    if (auth?.sessionId) services.users.logout(auth.sessionId);
    clearSessionCookie(res);
    redirect(req, res, '/login');
  });

  // ---- password (forced at the first login with a one-time password) ----
  const passwordView = (forced: boolean) => ({ page: 'password', partial: 'password-form', title: 'Password', data: { forced, errors: {} as Record<string, string> } });
  r.get(PASSWORD_CHANGE_PATH, requireUser({ allowPasswordChange: true }), (req, res) => {
    if (wantsFragment(req)) return redirect(req, res, PASSWORD_CHANGE_PATH);
    render(req, res, passwordView(me(res).mustChangePassword));
  });
  r.post(PASSWORD_CHANGE_PATH, requireUser({ allowPasswordChange: true }), async (req, res) => {
    const user = me(res);
    const forced = user.mustChangePassword;
    const current = field(req, 'current', 256);
    const password = field(req, 'password', 256);
    const view = passwordView(forced);
    const errors = view.data.errors;
    Object.assign(errors, schemaErrors({ password: [Password, password] }));
    if (!errors.password && field(req, 'again', 256) !== password) errors.again = 'the two passwords differ';
    if (!forced && !current) errors.current = 'enter your current password';
    if (Object.keys(errors).length === 0) {
      try {
        await services.users.changePassword(user.name, password, { ...(forced ? {} : { current }), ...(authOf(res)?.sessionId ? { keepSession: authOf(res)!.sessionId! } : {}) });
        return redirect(req, res, '/');
      } catch (err) {
        if (!(err instanceof Unauthorized)) throw err;
        errors.current = 'this is not your current password';
      }
    }
    render(req, res, { ...view, status: 422 });
  });

  // ---- everything else needs a signed-in user ----
  r.get('/', requireUser(), (req, res) => {
    const admin = me(res).role === 'admin';
    render(req, res, {
      page: 'dashboard', partial: 'dashboard', title: 'Dashboard', memo: { scope: services, key: `dashboard:${admin}`, ms: 1000 },
      data: dashboardData(services), pageData: { loopback: loopbackFor(req, services) },
    });
  });
  r.use(policyPages(services)); // before vmPages: its /vms/:id/:action would take /vms/:id/extend
  r.use(vmPages(services));
  r.use(adminPages(services));
  r.use(hostPages(services)); // after adminPages: its GET /hosts/replacements and /hosts/strangers come first
  r.use(userPages(services));
  r.use(classPages(services));
  r.use(templatePages(services));
  r.use(sessionPages(services));
  // An unknown address in a browser gets the friendly 404 page, not the API's JSON.
  r.use((req, _res, next) => next(req.method === 'GET' && (req.get('accept') ?? '').includes('text/html') ? new NotFound(`the page ${req.path}`) : undefined));

  r.use(pageErrors(opts.log));
  return r;
}
