// Small helpers the page routes share: reading form fields, turning a SkyError's field list into
// inline messages, redirects that work for plain forms and for htmx, and the signed-in viewer.
import type { Request, RequestHandler, Response } from 'express';
import type { z } from 'zod';
import { toSkyError, type SkyError } from '../../base/errors.ts';
import { wantsFragment } from '../../base/views.ts';
import { currentUser } from '../users/auth.ts';
import type { User } from '../users/users.ts';
import type { Viewer } from './render.ts';

/** A form field as a trimmed string ('' when absent or not a string). */
export function field(req: Request, name: string, max = 65536): string {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v.trim().slice(0, max) : '';
}

/** Inline messages by form field from a SkyError (`details.fields`), renaming API fields to form fields. */
export function fieldErrors(err: SkyError, rename: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const details = err.details as { fields?: Array<{ field: string; message: string }> } | undefined;
  for (const f of details?.fields ?? []) {
    const name = rename[f.field] ?? f.field;
    out[name] ??= f.message;
  }
  return out;
}

/**
 * Sends the browser to `url`: 303 for a plain form post; for htmx, `HX-Redirect` (a whole-page
 * navigation) unless `swap` is set, where the 303 is kept so htmx swaps the target's partial.
 */
export function redirect(req: Request, res: Response, url: string, opts: { swap?: boolean } = {}): void {
  res.setHeader('Vary', 'HX-Request');
  if (wantsFragment(req) && !opts.swap) {
    res.setHeader('HX-Redirect', url);
    res.status(200).end();
    return;
  }
  res.redirect(303, url);
}

/** A `next` target that stays on this site. */
export function localPath(next: string, fallback = '/'): string {
  return next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') && !next.startsWith('/api/') ? next : fallback;
}

/** The signed-in user (routes behind requireUser). */
export function me(res: Response): User {
  const user = currentUser(res);
  if (!user) throw new Error('page route reached without a user');
  return user;
}

/** Puts the viewer (name, admin, CSRF token) where render() finds it. */
export const viewer: RequestHandler = (_req, res, next) => {
  const user = currentUser(res);
  if (user) {
    const v: Viewer = { name: user.name, admin: user.role === 'admin', role: user.role, csrf: String(res.locals.csrfToken ?? '') };
    res.locals.viewer = v;
  }
  next();
};

/** A SkyError a form shows inline (a 4xx, or 503 "no host fits"); anything else goes to the error page. */
export function formError(err: unknown): SkyError | undefined {
  const sky = toSkyError(err);
  return sky.status < 500 || sky.code === 'no_host_fits' ? sky : undefined;
}

/** Inline messages of the fields that fail their schema. */
export function schemaErrors(fields: Record<string, [z.ZodType, string]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, [schema, value]] of Object.entries(fields)) {
    const r = schema.safeParse(value);
    if (!r.success) out[name] = r.error.issues[0]?.message ?? 'not allowed';
  }
  return out;
}
