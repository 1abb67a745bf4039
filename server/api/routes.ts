// The JSON API (DESIGN §4, contract): every route under /api plus the original `POST /request-vm`.
// Handlers only translate HTTP to the services and back; the rules live in the services.
import { Router, type Request, type Response } from 'express';
import type { z } from 'zod';
import { TemplateName, VmAction } from '../../wire/api.ts';
import { Conflict, NotFound, Unauthorized, fromZod } from '../../base/errors.ts';
import { EventQuery, type Event } from '../events/events.ts';
import type { ControllerServices } from '../services.ts';
import { TemplateImport } from '../templates/templates.ts';
import {
  authOf, clearSessionCookie, currentUser, requireAdmin, requireUser, setSessionCookie,
} from '../users/auth.ts';
import type { User } from '../users/users.ts';
import {
  AgentEvents, JoinTokenCreate, JoinTokenRevoke, LoginRequest, PasswordChange, RegisterRequest, Settings, TokenCreate, UserCreate,
  UserUpdate, WakeRequest,
} from './schemas.ts';

/** Parses `value` with `schema` or throws a 422 naming the field. */
export function parseBody<S extends z.ZodType>(schema: S, value: unknown, prefix = ''): z.output<S> {
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw fromZod(r.error, prefix);
  return r.data;
}

function me(res: Response): User {
  const user = currentUser(res);
  if (!user) throw new Unauthorized();
  return user;
}

/** The VM routes' `:id`, or a 404 (never echoed into anything but the message). */
function param(req: Request, name: string): string {
  const v = req.params[name];
  if (typeof v !== 'string' || v.length > 128) throw new NotFound(name);
  return v;
}

export function apiRoutes(services: ControllerServices): Router {
  const { users, hosts, vms, templates, events, joinTokens } = services;
  const r = Router();
  const user = requireUser();
  const admin = requireAdmin();

  // ---- sessions and accounts ----
  r.post('/api/login', async (req, res) => {
    const body = parseBody(LoginRequest, req.body);
    const { sessionId, session } = await users.login(body.username, body.password);
    setSessionCookie(req, res, sessionId, session.expiresAt);
    res.json({ user: session.user, csrfToken: session.csrfToken, mustChangePassword: session.user.mustChangePassword });
  });
  r.post('/api/logout', (req, res) => {
    const auth = authOf(res);
    if (auth?.sessionId) users.logout(auth.sessionId);
    clearSessionCookie(res);
    res.status(204).end();
  });
  r.post('/api/register', async (req, res) => {
    const body = parseBody(RegisterRequest, req.body);
    res.status(201).json({ user: await users.register(body.username, body.password) });
  });
  r.get('/api/me', requireUser({ allowPasswordChange: true }), (_req, res) => {
    const auth = authOf(res)!;
    res.json({ user: auth.user, ...(auth.session ? { csrfToken: auth.session.csrfToken } : {}) });
  });
  r.post('/api/me/password', requireUser({ allowPasswordChange: true }), async (req, res) => {
    const auth = authOf(res)!;
    const body = parseBody(PasswordChange, req.body);
    // A one-time password was just proven by signing in; any other change needs the current one.
    const current = auth.user.mustChangePassword && auth.via === 'session' ? undefined : body.currentPassword ?? '';
    const updated = await users.changePassword(auth.user.name, body.newPassword, {
      ...(current !== undefined ? { current } : {}), ...(auth.sessionId ? { keepSession: auth.sessionId } : {}),
    });
    res.json({ user: updated });
  });
  r.get('/api/tokens', user, (_req, res) => {
    res.json({ tokens: users.tokens(me(res).name) });
  });
  r.post('/api/tokens', user, (req, res) => {
    const body = parseBody(TokenCreate, req.body);
    const { token, info } = users.createToken(me(res).name, body.label);
    res.status(201).json({ token, ...info });
  });
  r.delete('/api/tokens/:id', user, (req, res) => {
    users.revokeToken(me(res).name, param(req, 'id'));
    res.status(204).end();
  });

  // ---- users and settings (admin) ----
  r.get('/api/users', admin, (_req, res) => {
    res.json({ users: users.list() });
  });
  r.post('/api/users', admin, async (req, res) => {
    const body = parseBody(UserCreate, req.body);
    res.status(201).json({ user: await users.create({ name: body.username, password: body.password, role: body.role }) });
  });
  r.patch('/api/users/:name', admin, async (req, res) => {
    const name = param(req, 'name');
    const body = parseBody(UserUpdate, req.body);
    if (!users.get(name)) throw new NotFound(`user "${name}"`);
    if (body.role) users.setRole(name, body.role);
    if (body.password) await users.changePassword(name, body.password);
    res.json({ user: users.get(name) });
  });
  r.delete('/api/users/:name', admin, (req, res) => {
    const name = param(req, 'name');
    if (vms.records(services.system, { owner: name }).length > 0) throw new Conflict(`user "${name}" still has VMs: delete them first`);
    users.remove(name);
    res.status(204).end();
  });
  r.get('/api/settings', admin, (_req, res) => {
    res.json({ selfRegistration: users.selfRegistration() });
  });
  r.put('/api/settings', admin, (req, res) => {
    const body = parseBody(Settings, req.body);
    users.setSelfRegistration(body.selfRegistration);
    res.json({ selfRegistration: users.selfRegistration() });
  });

  // ---- hosts ----
  r.post('/api/enroll', (req, res) => {
    res.json(hosts.enroll(req.body));
  });
  r.get('/api/hosts', user, (_req, res) => {
    res.json({ hosts: hosts.list() });
  });
  r.get('/api/hosts/:id', user, (req, res) => {
    res.json(hosts.get(param(req, 'id')));
  });
  r.post('/api/hosts/:id/approve', admin, (req, res) => {
    res.json(hosts.approve(param(req, 'id')));
  });
  r.post('/api/hosts/:id/drain', admin, (req, res) => {
    res.json(hosts.drain(param(req, 'id')));
  });
  r.post('/api/hosts/:id/undrain', admin, (req, res) => {
    res.json(hosts.undrain(param(req, 'id')));
  });
  r.post('/api/hosts/:id/wake', admin, async (req, res) => {
    const body = parseBody(WakeRequest, req.body);
    res.json(await hosts.wake(param(req, 'id'), body.mac));
  });
  r.delete('/api/hosts/:id', admin, (req, res) => {
    const id = param(req, 'id');
    hosts.require(id);
    const held = vms.records(services.system, { host: id }).length;
    if (held > 0 && req.query.force !== 'true') {
      throw new Conflict(`host ${id} still has ${held} VM record(s): drain it and delete them, or add ?force=true to forget them`);
    }
    hosts.remove(id);
    res.status(204).end();
  });

  // ---- join tokens (admin) ----
  r.get('/api/join-tokens', admin, (_req, res) => {
    res.json({ clusterToken: joinTokens.clusterToken(), tokens: joinTokens.list() });
  });
  r.post('/api/join-tokens', admin, (req, res) => {
    const body = parseBody(JoinTokenCreate, req.body);
    res.status(201).json(joinTokens.issue({ ...(body.ttlMinutes ? { ttlMinutes: body.ttlMinutes } : {}), ...(body.label ? { label: body.label } : {}) }));
  });
  r.post('/api/join-tokens/rotate', admin, (_req, res) => {
    res.json({ clusterToken: joinTokens.rotateClusterToken() });
  });
  r.post('/api/join-tokens/:id/revoke', admin, (req, res) => {
    const body = parseBody(JoinTokenRevoke, req.body);
    res.json(joinTokens.revoke(param(req, 'id'), body.reason));
  });

  // ---- VMs ----
  r.get('/api/vms', user, (req, res) => {
    const u = me(res);
    const filter = {
      ...(typeof req.query.host === 'string' ? { host: req.query.host } : {}),
      ...(typeof req.query.state === 'string' ? { state: req.query.state } : {}),
      ...(typeof req.query.owner === 'string' ? { owner: req.query.owner } : {}),
    };
    if (Object.keys(filter).length > 0) return void res.json({ vms: vms.list(u, filter) });
    // Pollers send the ETag back: nothing changed is a 304 without a body.
    const tag = vms.listTag();
    res.setHeader('ETag', tag);
    res.setHeader('Cache-Control', 'private, no-cache');
    res.setHeader('Vary', 'Accept-Encoding, Authorization, Cookie');
    if (req.get('if-none-match') === tag) return void res.status(304).end();
    const gzip = /\bgzip\b/.test(req.get('accept-encoding') ?? '');
    if (gzip) res.setHeader('Content-Encoding', 'gzip');
    res.type('application/json').send(vms.listJson(u, gzip));
  });
  r.post('/api/vms', user, async (req, res) => {
    const { status, vm } = await vms.create(me(res), req.body, req.get('idempotency-key'));
    res.status(status).location(`/api/vms/${vm.id}`).json(vm);
  });
  r.post('/request-vm', user, async (req, res) => {
    const { status, vm } = await vms.create(me(res), req.body, req.get('idempotency-key'));
    const host = hosts.record(vm.host);
    res.status(status).json({ vm, host: { id: vm.host, hostname: host?.hostname ?? vm.host }, consoleUrl: vm.consoleUrl });
  });
  r.get('/api/vms/:id', user, (req, res) => {
    res.json(vms.get(me(res), param(req, 'id')));
  });
  r.delete('/api/vms/:id', user, async (req, res) => {
    await vms.remove(me(res), param(req, 'id'));
    res.status(204).end();
  });
  r.post('/api/vms/:id/:action', user, async (req, res) => {
    const action = VmAction.safeParse(req.params.action);
    if (!action.success) throw new NotFound(`action "${String(req.params.action).slice(0, 32)}" (use start, shutdown, poweroff or reboot)`);
    res.json(await vms.action(me(res), param(req, 'id'), action.data));
  });

  // ---- templates ----
  r.get('/api/templates', user, (_req, res) => {
    res.json({ templates: templates.list() });
  });
  r.post('/api/templates', admin, async (req, res) => {
    if (req.is('application/json')) {
      res.json(await templates.import(parseBody(TemplateImport, req.body)));
      return;
    }
    // An upload: the file is the body, the rest is in the query (?name=...&sha256=...&host=...).
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(req.query)) if (typeof v === 'string' && k !== 'host') query.set(k, v);
    parseBody(TemplateName, query.get('name') ?? undefined, 'query.name');
    const host = typeof req.query.host === 'string' ? req.query.host : undefined;
    res.json(await templates.upload(query, req, req.get('content-type') ?? 'application/octet-stream', req.get('content-length'), host));
  });
  r.delete('/api/templates/:name', admin, async (req, res) => {
    res.json(await templates.remove(param(req, 'name')));
  });

  // ---- events ----
  r.get('/api/events', admin, (req, res) => {
    res.json({ events: events.list(parseBody(EventQuery, req.query, 'query')) });
  });
  r.get('/api/events/stream', admin, (req, res) => {
    const q = parseBody(EventQuery, req.query, 'query');
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': live events\n\n');
    const levels = ['debug', 'info', 'warn', 'error'];
    const send = (e: Event) => {
      if (q.source && e.source !== q.source) return;
      if (q.hostId && e.hostId !== q.hostId) return;
      if (q.level && levels.indexOf(e.level) < levels.indexOf(q.level)) return;
      res.write(`id: ${e.id}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    events.on('event', send);
    const ping = setInterval(() => res.write(': ping\n\n'), 25_000);
    req.on('close', () => {
      clearInterval(ping);
      events.off('event', send);
    });
  });
  // Agents forward their own log records, authenticated with the key they enrolled with.
  r.post('/api/events', (req, res) => {
    const key = req.get('authorization')?.replace(/^Bearer /, '') ?? '';
    const host = key ? hosts.byAgentKey(key) : undefined;
    if (!host) throw new Unauthorized('send the agent key of an enrolled host as Authorization: Bearer');
    const body = parseBody(AgentEvents, req.body);
    for (const e of body.events) {
      events.record({ level: e.level, source: 'agent', hostId: host.id, vmId: e.vmId, msg: e.msg, time: e.time,
        data: e.component ? { component: e.component } : undefined });
    }
    res.status(202).json({ accepted: body.events.length });
  });

  return r;
}
