// The controller's Express app, built from its dependencies so that tests run it in-process.
import express, { type Express } from 'express';
import { VERSION } from '../appliance/version.ts';
import { jsonErrors, notFoundRoute } from '../appliance/http.ts';
import type { Logger } from '../appliance/log.ts';
import { staticAssets } from './static.ts';

export interface ControllerDeps {
  log: Logger;
}

export function buildApp(deps: ControllerDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ ok: true, version: VERSION });
  });
  app.use('/static', staticAssets());
  app.use(notFoundRoute);
  app.use(jsonErrors(deps.log));
  return app;
}
