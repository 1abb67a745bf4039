// The controller's pages on the shared view helper (base/views.ts): one call renders either the
// whole page (layout + page template) or, for an htmx request, only the partial that the page swaps;
// the page template includes that same partial, so both answers come from one template.
//
//   render(req, res, { page: 'vms', partial: 'vm-list', title: 'My VMs', data: { vms } });
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { ErrorRequestHandler, Request, Response } from 'express';
import { errorHandler } from '../../base/http.ts';
import type { Logger } from '../../base/log.ts';
import { Views, htmlAnswer, wantsFragment } from '../../base/views.ts';
import { wordHelpers } from './words.ts';
import { timeLeft } from '../vms/leases.ts';

const views = new Views({
  partials: 'views/partials/',
  layout: 'views/layouts/main.hbs',
  helpers: { pct, barLevel, mib, ago: (v: unknown) => ago(v), ...wordHelpers, left: (v: unknown) => timeLeft(v) },
});

/** What every page knows about the signed-in user (absent on the login page). */
export interface Viewer {
  name: string;
  admin: boolean;
  /** admin, teacher or student (which nav entries show). */
  role?: string;
  csrf: string;
}

export interface View {
  /** `views/pages/<page>.hbs` for a whole page. */
  page: string;
  /** `views/partials/<partial>.hbs`: the answer to an htmx request (HX-Request) instead of the page. */
  partial?: string;
  title: string;
  status?: number;
  data?: object;
  /** Extra module scripts and stylesheets of this page (local /static/ paths only). */
  scripts?: string[];
  styles?: string[];
  /**
   * Keep the rendered partial for `ms` (per `scope` and `key`): a classroom polling the dashboard
   * costs one render a second, and the whole page shows the same kept partial.
   */
  memo?: { scope: object; key: string; ms: number };
  /**
   * What the page shows outside a kept partial that is this request's own (the dashboard's notice for
   * an address opened through loopback). With `memo`, the page around the partial is kept as long as
   * the partial, per viewer (name, role, CSRF token), path and this value; without it, merged into `data`.
   */
  pageData?: object;
}

/** Compiles every view now, so a broken template fails at start and the first request is fast. */
export function precompileViews(): number {
  return views.precompile(['views/pages/', 'views/partials/', 'views/layouts/']);
}

/** Renders `view` as the whole page or (htmx) its partial. Always varies on HX-Request. */
export function render(req: Request, res: Response, view: View): void {
  const viewer = res.locals.viewer as Viewer | undefined;
  const context = { ...view.data, ...view.pageData, me: viewer, csrf: viewer?.csrf, title: view.title, path: req.path };
  const answer = htmlAnswer(req, res, { status: view.status, hasFragment: view.partial !== undefined });
  const partialKey = `views/partials/${view.partial}.hbs`;
  const renderPartial = () => stamp(views.render(partialKey, context));
  const memo = view.partial && view.memo ? memoized(view.memo, renderPartial) : undefined;
  if (answer === 'fragment') {
    const part = memo ?? renderPartial();
    // A poll of a partial the browser already shows gets 204 (htmx swaps nothing).
    if (req.method === 'GET' && res.statusCode === 200 && req.get('X-SkyHost-Version') === part.version) {
      res.status(204).end();
      return;
    }
    if ('html' in part) {
      res.send(part.html);
      return;
    }
    // A polled partial goes out gzipped (compressed once per memo) to browsers that take it.
    res.setHeader('Vary', 'HX-Request, Accept-Encoding');
    if (req.acceptsEncodings('gzip') === 'gzip') {
      part.gz ??= gzipSync(part.bytes, { level: 6 });
      res.setHeader('Content-Encoding', 'gzip');
      res.send(part.gz);
      return;
    }
    res.send(part.bytes);
    return;
  }
  const layout = { ...context, nav: navFor(viewer, req.path), scripts: view.scripts ?? [], styles: view.styles ?? [] };
  const page = `views/pages/${view.page}.hbs`;
  if (!memo) {
    res.send(views.page(page, context, layout));
    return;
  }
  // The page shows the kept partial where it says {{> partial}}: the page is rendered around a
  // stand-in and sent as its own bytes around the partial's shared ones. Copied into each answer
  // instead, the dashboard's partial made a page cost ~180 us instead of ~10 at 200 hosts, ~2.7 ms at 1,000.
  // The page around it is kept with the partial, per viewer, path and pageData: rendering it for each
  // request was ~17 us and two buffers, ~8 % of the controller's CPU at 5,000 dashboard requests a second.
  const aroundKey = JSON.stringify([view.page, view.title, req.path, viewer?.name, viewer?.role, viewer?.admin, viewer?.csrf, view.pageData ?? null, view.scripts ?? [], view.styles ?? []]);
  let around = memo.around.get(aroundKey);
  if (!around) {
    const [head, tail, extra] = views.page(page, context, layout, { [view.partial!]: STAND_IN }).split(STAND_IN);
    if (tail === undefined || extra !== undefined) throw new Error(`page ${view.page} must show {{> ${view.partial}}} exactly once`);
    around = { head: Buffer.from(head!), tail: Buffer.from(tail) };
    if (memo.around.size < AROUND_KEPT) memo.around.set(aroundKey, around);
  }
  sendPieces(req, res, [around.head, memo.bytes, around.tail]);
}

/** How many pages around one kept partial are kept (one per signed-in browser in that second). */
const AROUND_KEPT = 256;

/** What a page shows in place of a kept partial until the two are sent; no rendered text contains it. */
const STAND_IN = '<!--skyhost:kept-partial:7f3c-->';

/** Sends `pieces` as one body (Content-Length, one corked write). */
function sendPieces(req: Request, res: Response, pieces: Buffer[]): void {
  res.setHeader('Content-Length', pieces.reduce((n, p) => n + p.length, 0));
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  res.cork();
  for (const p of pieces.slice(0, -1)) res.write(p);
  res.end(pieces.at(-1)); // end() uncorks
}

interface Rendered {
  html: string;
  /** A short hash of `html`; the browser sends it back with its next poll (skyhost.js). */
  version: string;
}

/** Puts `data-version` on the partial's root element. */
function stamp(html: string): Rendered {
  const version = createHash('sha1').update(html).digest('base64url').slice(0, 16);
  return { html: html.replace(/^(\s*<[a-z][^>]*?)(\/?>)/i, `$1 data-version="${version}"$2`), version };
}

/** A rendered partial kept for everyone: only its bytes (encoded once), and gzipped on first demand. */
interface Memo {
  at: number;
  version: string;
  bytes: Buffer;
  gz?: Buffer;
  /** The page's bytes before and after the partial, per viewer, path and pageData (render). */
  around: Map<string, { head: Buffer; tail: Buffer }>;
}
const memos = new WeakMap<object, Map<string, Memo>>();

function memoized(memo: NonNullable<View['memo']>, make: () => Rendered): Memo {
  let scope = memos.get(memo.scope);
  if (!scope) memos.set(memo.scope, scope = new Map());
  const hit = scope.get(memo.key);
  const now = Date.now();
  if (hit && now - hit.at < memo.ms) return hit;
  const { html, version } = make();
  const fresh: Memo = { at: now, version, bytes: Buffer.from(html), around: new Map() };
  scope.set(memo.key, fresh);
  return fresh;
}

const NAV = [
  { href: '/', label: 'Dashboard' },
  { href: '/vms', label: 'My VMs' },
  { href: '/templates', label: 'Templates' },
  { href: '/hosts', label: 'Hosts', admin: true },
  { href: '/classes', label: 'Classes', teacher: true },
  { href: '/sessions', label: 'Sessions', teacher: true },
  { href: '/admin/users', label: 'Users', admin: true },
  { href: '/admin/events', label: 'Events', admin: true },
  { href: '/admin/policies', label: 'Policies', admin: true },
  { href: '/account', label: 'My account' },
];

function navFor(viewer: Viewer | undefined, current: string) {
  if (!viewer) return [];
  return NAV.filter((n) => (!n.admin || viewer.admin) && (!n.teacher || viewer.admin || viewer.role === 'teacher')).map((n) => ({
    ...n,
    current: n.href === '/' ? current === '/' : current === n.href || current.startsWith(n.href + '/'),
  }));
}

/**
 * Page errors as a friendly HTML page: the message for a 4xx, a generic text for a 5xx (logged, never
 * shown). For htmx requests the message goes into the layout's #flash area instead of the target.
 */
export function pageErrors(log: Logger): ErrorRequestHandler {
  return errorHandler(log, 'page failed', (sky, req, res) => {
    if (sky.status === 401 && req.method === 'GET' && !wantsFragment(req)) {
      res.redirect(303, '/login?next=' + encodeURIComponent(req.originalUrl));
      return;
    }
    if (sky.status === 401 && wantsFragment(req)) {
      res.setHeader('HX-Redirect', '/login');
    }
    const message = sky.status >= 500
      ? 'Something went wrong on the controller. The error was logged; try again, or ask your admin to look at the events page.'
      : sky.message;
    if (wantsFragment(req)) {
      res.setHeader('HX-Retarget', '#flash');
      res.setHeader('HX-Reswap', 'innerHTML');
    }
    render(req, res, {
      page: 'error',
      partial: 'flash',
      title: sky.status === 404 ? 'Not found' : 'Error',
      status: sky.status,
      data: { status: sky.status, message, kind: 'error' },
    });
  });
}

// ---- helpers the templates use besides the common ones ----

/** Whole percent of `part` in `whole`, 0..100. */
export function pct(part: unknown, whole: unknown): number {
  const p = Number(part);
  const w = Number(whole);
  if (!Number.isFinite(p) || !Number.isFinite(w) || w <= 0) return 0;
  return Math.max(0, Math.min(100, Math.round((p / w) * 100)));
}

/** The colour class of a load bar. */
export function barLevel(percent: unknown): string {
  const p = Number(percent);
  return p >= 90 ? 'bad' : p >= 70 ? 'warn' : 'ok';
}

/** MiB as a short human size: 512 MiB, 1.5 GiB. */
export function mib(v: unknown): string {
  const n = Number(v);
  if (!Number.isFinite(n)) return '?';
  if (n < 1024) return `${Math.round(n)} MiB`;
  const g = n / 1024;
  return `${g >= 100 ? Math.round(g) : Math.round(g * 10) / 10} GiB`;
}

/** Relative "3 s ago" / "5 min ago" for a last-seen time. */
export function ago(v: unknown, now = Date.now()): string {
  if (typeof v !== 'string') return 'never';
  const t = Date.parse(v);
  if (!Number.isFinite(t)) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
