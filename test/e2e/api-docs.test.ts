// /docs in headless chromium: Swagger UI shows the controller's API and the agent's, served by the
// controller alone (every request that would leave this machine is refused and recorded: none may
// happen), under the pages' CSP, and every route of the controller's API router and of the agent's
// app is there. The route lists are read from the routers themselves, so a route added tomorrow
// must show too. The page meets WCAG 2 AA as the others do (test/support/axe.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { close, listen } from '../../base/http.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { buildAgentApp, type AgentAppDeps } from '../../agent/app.ts';
import type { ApiRouter } from '../../server/api/route.ts';
import { buildApp, CONTENT_SECURITY_POLICY } from '../../server/app.ts';
import { createServices, type ControllerServices } from '../../server/services.ts';
import { axeViolations, formatViolations } from '../support/axe.ts';
import { launchBrowser, type TestBrowser } from '../support/browser.ts';

interface Layer {
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** `METHOD /path/{param}` of every route in an Express router's stack (and routers mounted in it). */
function routesOf(stack: Layer[]): string[] {
  const out: string[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
      for (const p of paths) {
        for (const [method, on] of Object.entries(layer.route.methods)) {
          if (on && method !== '_all') out.push(`${method.toUpperCase()} ${p.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
        }
      }
    } else if (layer.handle?.stack) {
      out.push(...routesOf(layer.handle.stack));
    }
  }
  return [...new Set(out)].sort();
}

/** `METHOD /path` of every operation Swagger UI shows on the page. */
async function shownOperations(page: Page): Promise<string[]> {
  const ops = await page.locator('.opblock .opblock-summary').evaluateAll((els) => els.map((el) => {
    const method = el.querySelector('.opblock-summary-method')?.textContent?.trim() ?? '?';
    const p = el.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '?';
    return `${method.toUpperCase()} ${p}`;
  }));
  return [...new Set(ops)].sort();
}

describe('/docs: the API documents in Swagger UI, served locally', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-apidocs-'));
  let services: ControllerServices;
  let server: Server;
  let base: string;
  let controllerRoutes: string[];
  let agentRoutes: string[];
  let browser: TestBrowser;
  const leaving: string[] = [];

  before(async () => {
    configureLogging({ out: () => {} });
    services = await createServices({ dataDir: dir, log: logger('api-docs-test'), captureLogs: false });
    const app = buildApp({ log: logger('api-docs-test'), services });
    controllerRoutes = routesOf(((app.locals.api as ApiRouter).router as unknown as { stack: Layer[] }).stack);
    // The agent app's routes are declared when it is built; no handler runs here.
    const agent = buildAgentApp({ key: 'k'.repeat(32), hostId: 'docs-test', log: logger('agent') } as unknown as AgentAppDeps);
    agentRoutes = routesOf((agent.app as unknown as { router: { stack: Layer[] } }).router.stack);
    agent.close();
    server = createServer(app);
    base = `http://127.0.0.1:${await listen(server, 0, '127.0.0.1')}`;
    browser = await launchBrowser();
    // Anything not for this machine is refused, and recorded.
    await browser.context.route('**/*', async (route) => {
      const url = new URL(route.request().url());
      if (url.protocol === 'data:' || url.protocol === 'blob:' || ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) return route.continue();
      leaving.push(route.request().url());
      await route.abort('blockedbyclient');
    });
  });

  after(async () => {
    await browser?.close();
    if (server) await close(server);
    await services?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves /docs under the pages\' CSP, with the viewer from the controller itself', async () => {
    const res = await fetch(`${base}/docs`);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-security-policy')).to.equal(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).to.not.include('unsafe-eval');
    const html = await res.text();
    for (const src of html.matchAll(/(?:src|href)="([^"]+)"/g)) expect(src[1], 'a local URL').to.match(/^(\/|data:)/);
    const bundle = await fetch(`${base}/static/vendor/swagger-ui/swagger-ui-bundle.js`);
    expect(bundle.status).to.equal(200);
    expect(bundle.headers.get('content-type')).to.match(/javascript/);
  });

  it('shows every route of the controller\'s API router, then every agent route after choosing the agent API, with no request leaving the machine', async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/docs`);
    await page.locator('.opblock').first().waitFor({ timeout: 30_000 });
    const shown = await shownOperations(page);
    expect(controllerRoutes.length).to.be.greaterThan(40);
    expect(controllerRoutes).to.include('GET /api/openapi-agent.json');
    expect(controllerRoutes.filter((r) => !shown.includes(r)), 'controller routes missing on /docs').to.deep.equal([]);
    expect(formatViolations(await axeViolations(page), '/docs')).to.equal('/docs: no WCAG 2 AA violations');

    await page.locator('select#select').selectOption({ label: 'Agent API' });
    await page.locator('.opblock-summary-path[data-path="/templates/pull"]').waitFor({ timeout: 30_000 });
    const shownAgent = await shownOperations(page);
    expect(agentRoutes).to.include('GET /status');
    expect(agentRoutes.filter((r) => !shownAgent.includes(r)), 'agent routes missing on /docs (describe them in server/api/docs.ts)').to.deep.equal([]);
    expect(shownAgent.filter((r) => !agentRoutes.includes(r)), 'agent operations described without a route').to.deep.equal([]);

    expect(formatViolations(await axeViolations(page), '/docs (agent API)')).to.equal('/docs (agent API): no WCAG 2 AA violations');
    expect(leaving, 'requests that left the machine').to.deep.equal([]);
    expect(browser.errors, 'page errors (a CSP refusal shows here)').to.deep.equal([]);
  });
});
