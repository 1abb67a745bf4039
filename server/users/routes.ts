// The JSON API of accounts: sessions, my password and API tokens; users and settings for admins.
import { z } from 'zod';
import { Conflict, NotFound } from '../../base/errors.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { authOf, clearSessionCookie, setSessionCookie } from './auth.ts';
import { ApiToken, DisplayName, Password, Role, User, UserName } from './users.ts';

export const LoginRequest = z.strictObject({ username: z.string().min(1).max(64), password: z.string().min(1).max(256) });
export const RegisterRequest = z.strictObject({ username: UserName, password: Password });
export const PasswordChange = z.strictObject({
  /** Required unless the user must change a one-time password they just signed in with. */
  currentPassword: z.string().max(256).optional(),
  newPassword: Password,
});
export const UserCreate = z.strictObject({
  username: UserName, password: Password, role: Role.default('student').describe('admin, teacher or student'),
  displayName: DisplayName.optional().describe('how people call them, e.g. Anna Berg'),
  mustChangePassword: z.boolean().optional().describe('the password is a one-time one: they choose their own at the first login'),
});
export const UserUpdate = z.strictObject({
  role: Role.optional(), password: Password.optional(), displayName: z.union([DisplayName, z.literal('')]).optional().describe('"" clears it'),
});
export const RoleChange = z.strictObject({ role: Role });
export const TokenCreate = z.strictObject({ label: z.string().min(1).max(100).regex(/^[^\u0000-\u001f]*$/, 'must be printable') });
export const Settings = z.strictObject({ selfRegistration: z.boolean() });

const OneUser = z.object({ user: User });

export function userRoutes(api: ApiRouter, services: ControllerServices): void {
  const { users, vms } = services;

  // ---- sessions and my account ----
  api.route({
    method: 'post', path: '/api/login', summary: 'Sign in; sets the session cookie and returns the CSRF token', auth: 'none', body: LoginRequest,
    responses: { 200: z.object({ user: User, csrfToken: z.string(), mustChangePassword: z.boolean() }) },
  }, async (req, res, { body }) => {
    const { sessionId, session } = await users.login(body.username, body.password, req.ip); // 'trust proxy' is off: the socket's address
    setSessionCookie(req, res, sessionId, session.expiresAt);
    res.json({ user: session.user, csrfToken: session.csrfToken, mustChangePassword: session.user.mustChangePassword });
  });
  api.route({ method: 'post', path: '/api/logout', summary: 'End the session', auth: 'none', responses: { 204: 'signed out' } }, (_req, res) => {
    const auth = authOf(res);
    if (auth?.sessionId) users.logout(auth.sessionId);
    clearSessionCookie(res);
    res.status(204).end();
  });
  api.route({
    method: 'post', path: '/api/register', summary: 'Create an account (only when self-registration is on)', auth: 'none', body: RegisterRequest,
    responses: { 201: OneUser },
  }, async (_req, res, { body }) => {
    res.status(201).json({ user: await users.register(body.username, body.password) });
  });
  api.route({
    method: 'get', path: '/api/me', summary: 'The signed-in user', auth: 'user', allowPasswordChange: true,
    responses: { 200: z.object({ user: User, csrfToken: z.string().optional() }) },
  }, (_req, res) => {
    const auth = authOf(res)!;
    res.json({ user: auth.user, ...(auth.session ? { csrfToken: auth.session.csrfToken } : {}) });
  });
  api.route({
    method: 'post', path: '/api/me/password', summary: 'Change my password (the first admin login must)', auth: 'user', allowPasswordChange: true,
    body: PasswordChange, responses: { 200: OneUser },
  }, async (_req, res, { body }) => {
    const auth = authOf(res)!;
    // A one-time password was just proven by signing in; any other change needs the current one.
    const current = auth.user.mustChangePassword && auth.via === 'session' ? undefined : body.currentPassword ?? '';
    const updated = await users.changePassword(auth.user.name, body.newPassword, {
      ...(current !== undefined ? { current } : {}), ...(auth.sessionId ? { keepSession: auth.sessionId } : {}),
    });
    res.json({ user: updated });
  });
  api.route({ method: 'get', path: '/api/tokens', summary: 'My API tokens', auth: 'user', responses: { 200: z.object({ tokens: z.array(ApiToken) }) } }, (_req, res) => {
    res.json({ tokens: users.tokens(me(res).name) });
  });
  api.route({
    method: 'post', path: '/api/tokens', summary: 'Make an API token (shown once)', auth: 'user', body: TokenCreate,
    responses: { 201: ApiToken.extend({ token: z.string() }) },
  }, (_req, res, { body }) => {
    const { token, info } = users.createToken(me(res).name, body.label);
    res.status(201).json({ token, ...info });
  });
  api.route({ method: 'delete', path: '/api/tokens/:id', summary: 'Revoke one of my API tokens', auth: 'user', responses: { 204: 'revoked' } }, (req, res) => {
    users.revokeToken(me(res).name, param(req, 'id'));
    res.status(204).end();
  });

  // ---- users and settings (admin) ----
  api.route({ method: 'get', path: '/api/users', summary: 'Every user', auth: 'admin', responses: { 200: z.object({ users: z.array(User) }) } }, (_req, res) => {
    res.json({ users: users.list() });
  });
  api.route({ method: 'post', path: '/api/users', summary: 'Create a user', auth: 'admin', body: UserCreate, responses: { 201: OneUser } }, async (_req, res, { body }) => {
    res.status(201).json({
      user: await users.create({
        name: body.username, password: body.password, role: body.role, displayName: body.displayName, mustChangePassword: body.mustChangePassword ?? false,
      }),
    });
  });
  api.route({
    method: 'patch', path: '/api/users/:name', summary: 'Change a user\'s role or password', auth: 'admin', body: UserUpdate, responses: { 200: OneUser },
  }, async (req, res, { body }) => {
    const name = param(req, 'name');
    if (!users.get(name)) throw new NotFound(`user "${name}"`);
    if (body.role) users.setRole(name, body.role, me(res).name);
    if (body.displayName !== undefined) users.setDisplayName(name, body.displayName || undefined);
    if (body.password) await users.changePassword(name, body.password, { by: me(res).name });
    res.json({ user: users.get(name) });
  });
  api.route({
    method: 'put', path: '/api/users/:name/role', summary: 'Set a user\'s role: admin, teacher or student', auth: 'admin', body: RoleChange, responses: { 200: OneUser },
  }, (req, res, { body }) => {
    res.json({ user: users.setRole(param(req, 'name'), body.role, me(res).name) });
  });
  api.route({ method: 'delete', path: '/api/users/:name', summary: 'Remove a user (who has no VMs)', auth: 'admin', responses: { 204: 'removed' } }, (req, res) => {
    const name = param(req, 'name');
    if (vms.records(services.system, { owner: name }).length > 0) throw new Conflict(`user "${name}" still has VMs: delete them first`);
    users.remove(name);
    res.status(204).end();
  });
  api.route({ method: 'get', path: '/api/settings', summary: 'Cluster settings', auth: 'admin', responses: { 200: Settings } }, (_req, res) => {
    res.json({ selfRegistration: users.selfRegistration() });
  });
  api.route({ method: 'put', path: '/api/settings', summary: 'Change cluster settings', auth: 'admin', body: Settings, responses: { 200: Settings } }, (_req, res, { body }) => {
    users.setSelfRegistration(body.selfRegistration);
    res.json({ selfRegistration: users.selfRegistration() });
  });
}
