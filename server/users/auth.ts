// Authentication for the API and the pages: a session cookie (browser) or `Authorization: Bearer`
// (API token). After `authenticate`, `res.locals.user` is the user (or undefined), `res.locals.auth`
// says how, and `res.locals.csrfToken` is the session's CSRF token for forms
// (`<input type="hidden" name="_csrf" value="{{csrfToken}}">`, or the `X-CSRF-Token` header for htmx).
import type { Request, RequestHandler, Response } from 'express';
import { Forbidden, SkyError, Unauthorized } from '../../base/errors.ts';
import type { Session, User, Users } from './users.ts';
import { sameSecret } from '../../base/secrets.ts';

export const SESSION_COOKIE = 'skyhost_session';
/** Where a page request of a user who must change their password is sent. */
export const PASSWORD_CHANGE_PATH = '/account/password';

export interface AuthInfo {
  user: User;
  via: 'session' | 'token';
  /** Set for a cookie session. */
  session?: Session;
  sessionId?: string;
}

/** The authenticated user of a request, or undefined. */
export function currentUser(res: Response): User | undefined {
  return (res.locals.auth as AuthInfo | undefined)?.user;
}

/** The authentication of a request, or undefined. */
export function authOf(res: Response): AuthInfo | undefined {
  return res.locals.auth as AuthInfo | undefined;
}

/** Reads one cookie from the Cookie header. */
export function readCookie(req: { headers: { cookie?: string | undefined } }, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** Sets the session cookie (httpOnly, SameSite=Lax; `Secure` when the request came over HTTPS). */
export function setSessionCookie(req: Request, res: Response, sessionId: string, expiresAt: string): void {
  res.cookie(SESSION_COOKIE, sessionId, { httpOnly: true, sameSite: 'lax', secure: req.secure, path: '/', expires: new Date(expiresAt) });
}

export function clearSessionCookie(res: Response): void {
  res.clearCookie(SESSION_COOKIE, { path: '/' });
}

/** Resolves the user of a request from a Bearer token or the session cookie (never rejects). */
export function resolveAuth(users: Users, req: { headers: { authorization?: string | undefined; cookie?: string | undefined } }): AuthInfo | undefined {
  const header = req.headers.authorization;
  if (header?.startsWith('Bearer ')) {
    const user = users.byToken(header.slice(7).trim());
    return user ? { user, via: 'token' } : undefined;
  }
  const sessionId = readCookie(req, SESSION_COOKIE);
  if (sessionId) {
    const session = users.session(sessionId);
    if (session) return { user: session.user, via: 'session', session, sessionId };
  }
  return undefined;
}

/** Sets `res.locals.auth`, `res.locals.user` and `res.locals.csrfToken` for every request. */
export function authenticate(users: Users): RequestHandler {
  return (req, res, next) => {
    const auth = resolveAuth(users, req);
    if (auth) {
      res.locals.auth = auth;
      res.locals.user = auth.user;
      if (auth.session) res.locals.csrfToken = auth.session.csrfToken;
    }
    if (req.headers.authorization?.startsWith('Bearer ') && !auth) res.locals.badToken = true;
    next();
  };
}

/** API requests get JSON errors; page requests get redirects. */
export function wantsJson(req: Request): boolean {
  return req.path.startsWith('/api/') || req.originalUrl.startsWith('/api/') || req.originalUrl === '/request-vm' ||
    req.headers.authorization !== undefined || (!req.accepts('html') && req.accepts('json') !== false);
}

export interface RequireOptions {
  /** Let a user who must still change their password through (the password page and logout). */
  allowPasswordChange?: boolean;
}

/**
 * Requires a signed-in user: an API request without one gets 401 JSON, a page request a redirect
 * to `/login?next=...`. A session whose user must change their password reaches only routes with
 * `allowPasswordChange` (pages are sent to PASSWORD_CHANGE_PATH, the API gets 403).
 */
export function requireUser(opts: RequireOptions = {}): RequestHandler {
  return (req, res, next) => {
    const auth = authOf(res);
    if (!auth) {
      if (wantsJson(req)) return next(new Unauthorized(res.locals.badToken ? 'the API token is not valid' : 'sign in or send Authorization: Bearer <api token>'));
      return res.redirect(303, `/login?next=${encodeURIComponent(req.originalUrl)}`);
    }
    if (auth.via === 'session' && auth.user.mustChangePassword && !opts.allowPasswordChange) {
      if (wantsJson(req)) return next(new SkyError(403, 'password_change_required', 'choose a new password first (POST /api/me/password)'));
      return res.redirect(303, PASSWORD_CHANGE_PATH);
    }
    next();
  };
}

/** Requires an admin (after requireUser's checks): 403 for a signed-in user who is not one. */
export function requireAdmin(opts: RequireOptions = {}): RequestHandler {
  const user = requireUser(opts);
  return (req, res, next) => {
    user(req, res, (err?: unknown) => {
      if (err) return next(err);
      if (currentUser(res)?.role !== 'admin') return next(new Forbidden('only an admin may do this'));
      next();
    });
  };
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * CSRF protection: a state-changing request authenticated by the session cookie must carry the
 * session's token in `X-CSRF-Token` or the form field `_csrf`. Bearer-token calls need none (a
 * browser never adds that header by itself). Mount after the body parsers and `authenticate`.
 */
export function csrfProtect(): RequestHandler {
  return (req, res, next) => {
    const auth = authOf(res);
    if (SAFE_METHODS.has(req.method) || auth?.via !== 'session') return next();
    const sent = req.get('x-csrf-token') ?? (typeof req.body?._csrf === 'string' ? req.body._csrf as string : undefined);
    if (!sent || !sameSecret(sent, auth.session!.csrfToken)) {
      return next(new SkyError(403, 'csrf', 'missing or wrong CSRF token: reload the page and try again'));
    }
    if (req.body && typeof req.body === 'object' && '_csrf' in req.body) delete (req.body as Record<string, unknown>)._csrf;
    next();
  };
}
