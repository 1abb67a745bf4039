// The routes Express actually has and the operations /api/openapi.json publishes are the same list,
// both ways: no route without its description, no description without its route.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Express, Router } from 'express';
import { close, listen } from '../../base/http.ts';
import { configureLogging, logger } from '../../base/log.ts';
import type { ApiRouter } from '../../server/api/route.ts';
import { buildApp } from '../../server/app.ts';
import { createServices, type ControllerServices } from '../../server/services.ts';

interface Layer {
  route?: { path: string; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
  slash?: boolean;
}

/** `METHOD /path/{param}` of every route in `stack`, and in the routers mounted at its root. */
function routesOf(stack: Layer[]): string[] {
  const out: string[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const p = layer.route.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      for (const [method, on] of Object.entries(layer.route.methods)) if (on) out.push(`${method.toUpperCase()} ${p}`);
    } else if (layer.handle?.stack) {
      expect(layer.slash, 'a router mounted under a path: its routes\' full paths are not visible here').to.equal(true);
      out.push(...routesOf(layer.handle.stack));
    }
  }
  return out.sort();
}

function operationsOf(doc: { paths: Record<string, Record<string, unknown>> }): string[] {
  return Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)).sort();
}

describe('OpenAPI document and router', function () {
  this.timeout(30_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-openapi-'));
  let services: ControllerServices;
  let app: Express;
  let server: Server;
  let doc: { paths: Record<string, Record<string, unknown>> };

  before(async () => {
    configureLogging({ out: () => {} });
    services = await createServices({ dataDir: dir, log: logger('openapi-test'), captureLogs: false });
    app = buildApp({ log: logger('openapi-test'), services });
    server = createServer(app);
    const port = await listen(server, 0, '127.0.0.1');
    const res = await fetch(`http://127.0.0.1:${port}/api/openapi.json`);
    expect(res.status).to.equal(200);
    doc = await res.json() as typeof doc;
  });

  after(async () => {
    if (server) await close(server);
    await services?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('the JSON API router has exactly the published operations', () => {
    const api = app.locals.api as ApiRouter;
    const routes = routesOf((api.router as unknown as { stack: Layer[] }).stack);
    const published = operationsOf(doc);
    expect(routes.filter((r) => !published.includes(r)), 'routes missing from /api/openapi.json').to.deep.equal([]);
    expect(published.filter((o) => !routes.includes(o)), 'documented operations without a route').to.deep.equal([]);
    expect(routes.length).to.be.greaterThan(40);
  });

  it('no route under /api/ anywhere in the app bypasses the document', () => {
    const all = routesOf((app as unknown as { router: { stack: Layer[] } }).router.stack);
    const published = operationsOf(doc);
    for (const op of published) expect(all, op).to.include(op);
    expect(all.filter((r) => / \/api\//.test(r) && !published.includes(r))).to.deep.equal([]);
    expect(all).to.include('POST /login'); // the walk sees the page routes too
  });

  it('a route added to the router directly shows up as undocumented', () => {
    const api = app.locals.api as ApiRouter;
    const router = api.router as Router;
    const before = routesOf((router as unknown as { stack: Layer[] }).stack);
    const probe = (router as unknown as { stack: Layer[] }).stack.length;
    router.get('/api/undocumented', (_req, res) => void res.end());
    try {
      const after = routesOf((router as unknown as { stack: Layer[] }).stack);
      expect(after.filter((r) => !before.includes(r))).to.deep.equal(['GET /api/undocumented']);
      expect(operationsOf(api.document() as typeof doc)).to.not.include('GET /api/undocumented');
    } finally {
      (router as unknown as { stack: Layer[] }).stack.splice(probe);
    }
  });

  it('describes bodies, queries and path parameters from the zod schemas the routes check with', () => {
    const vms = doc.paths['/api/vms'] as Record<string, any>;
    expect(vms.post.requestBody.content['application/json'].schema.properties).to.have.property('template');
    expect(vms.get.parameters.map((p: { name: string }) => p.name)).to.include.members(['host', 'state', 'owner', 'If-None-Match']);
    const action = (doc.paths['/api/vms/{id}/{action}'] as Record<string, any>).post;
    expect(action.parameters.find((p: { name: string }) => p.name === 'action').schema.enum).to.include.members(['start', 'shutdown', 'poweroff', 'reboot']);
    const events = (doc.paths['/api/events'] as Record<string, any>).get;
    expect(events.parameters.find((p: { name: string }) => p.name === 'limit').required).to.equal(false);
    expect((doc.paths['/api/templates'] as Record<string, any>).post.requestBody.content).to.have.keys('application/json', 'application/octet-stream');
    expect((doc.paths['/api/events'] as Record<string, any>).post.security).to.deep.equal([{ agentKey: [] }]);
  });
});
