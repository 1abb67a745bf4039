// The controller's Express app, built from its services so that tests run it in-process; listening
// (and the console WebSocket upgrade, server/console/proxy.ts) live in server/commands.ts.
//
//   request ─▶ security headers ─▶ metrics ─▶ /healthz, /static ─▶ body (1 MiB JSON, 64 KiB forms) ─▶ authenticate
//           ─▶ CSRF ─▶ /metrics ─▶ JSON API (server/api, each component's routes.ts) ─▶ pages ─▶ errors
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import { SkyError } from '../base/errors.ts';
import { VERSION } from '../base/version.ts';
import { jsonErrors, notFoundRoute } from '../base/http.ts';
import type { Logger } from '../base/log.ts';
import { pageRouter } from './pages/index.ts';
import { controllerAddressOf, installRouter } from './install.ts';
import { apiRoutes } from './api/routes.ts';
import { docsPage } from './api/docs.ts';
import { sessionRoutes } from './classes/session-routes.ts';
import { Metrics } from './metrics.ts';
import type { ControllerServices } from './services.ts';
import { sameSecret } from '../base/secrets.ts';
import { publicKeyPin } from '../base/tls.ts';
import { staticAssets } from './static.ts';
import { authenticate, csrfProtect } from './users/auth.ts';

export interface ControllerDeps {
  log: Logger;
  services: ControllerServices;
  /** The page routes, mounted after the API (default: server/pages `pageRouter`). */
  pages?: RequestHandler;
  /** Largest JSON body (default 1 MiB); bigger ones get 413. */
  jsonLimit?: string;
  /** The URL agents and people reach this controller at (config `publicUrl`). */
  publicUrl?: string | undefined;
}

/** The controller app. `app.locals.services` is `deps.services`; `app.locals.api` the JSON API's ApiRouter. */
export function buildApp(deps: ControllerDeps): Express {
  const { services, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.locals.services = services;
  app.use(securityHeaders);
  const metrics = new Metrics();
  app.use(metrics.middleware());
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, version: VERSION, clusterId: services.clusterId });
  });
  app.use('/static', staticAssets());
  // `curl http://controller/install.sh | sudo sh` (no auth: a join token in the link is checked, not used up).
  app.use(installRouter({
    ...(deps.publicUrl ? { publicUrl: deps.publicUrl } : {}),
    lanAddresses: () => ({ http: controllerAddressOf(services.hosts).url, https: services.joinTokens.addresses[0] }),
    checkJoinToken: (token) => usableJoinToken(services, token),
    joinString: (token) => services.joinTokens.joinString(token),
    pinnedPubkey: publicKeyPin(services.tls.cert),
  }));
  app.use(express.json({ limit: deps.jsonLimit ?? '1mb' }));
  app.use(express.urlencoded({ extended: false, limit: '64kb', parameterLimit: 100 }));
  app.use(authenticate(services.users));
  app.use(csrfProtect());
  app.get('/metrics', (_req, res) => {
    res.type('text/plain; version=0.0.4').send(metrics.scrape(services));
  });
  const api = apiRoutes(services);
  sessionRoutes(api, services.sessions);
  app.locals.api = api;
  app.use(api.router);
  app.use('/api', notFoundRoute);
  app.use(docsPage());
  if (deps.pages) app.use(deps.pages);
  else app.use(pageRouter(services, { log }));
  app.use(notFoundRoute);
  app.use(quietExpectedErrors(log));
  app.use(jsonErrors(log));
  return app;
}

/**
 * Everything the pages load comes from the controller itself; scripts only from files (no inline
 * script, no eval). Styles allow inline: the pages' bars set their width in a style attribute and
 * htmx and xterm.js add <style> elements. Consoles' WebSockets are same-origin ('self').
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:", "font-src 'self'",
  "connect-src 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

/** On every answer: the CSP, no framing, no content sniffing, no referrer to other sites. */
const securityHeaders: RequestHandler = (_req, res, next) => {
  res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'same-origin');
  next();
};

/**
 * 502/503 answers the controller gives on purpose (an agent is unreachable, no host fits) are
 * logged as one warning line, not as a failure with a stack; anything else goes on to jsonErrors.
 */
function quietExpectedErrors(log: Logger): ErrorRequestHandler {
  return (err, req, res, next) => {
    if (!(err instanceof SkyError) || (err.status !== 502 && err.status !== 503) || res.headersSent) return next(err);
    log.warn(`${req.method} ${req.path}: ${err.message}`, { code: err.code, noEvent: true });
    res.status(err.status).json(err.toBody());
  };
}

/**
 * Whether an install link's join token would be accepted, without using it up: the cluster token,
 * or a single-use token that is still unused (its secret is checked when the host enrolls).
 */
function usableJoinToken(services: ControllerServices, token: string): { ok: true } | { ok: false; message: string } {
  if (sameSecret(token, services.joinTokens.clusterToken())) return { ok: true };
  const id = /^shs_([0-9a-f]{12})_/.exec(token)?.[1];
  const info = id ? services.joinTokens.list().find((t) => t.id === id) : undefined;
  if (info?.state === 'unused') return { ok: true };
  return { ok: false, message: info ? `join token ${info.id} is ${info.state}` : 'join token is not known to this controller' };
}
