// A lesson in headless chromium: a teacher logs in, imports the students of their class on the class
// page (numbered names), starts a session on the sessions page, watches the grid go from starting to
// running by itself (htmx polling, no reload), opens one student's console, and ends the session.
// A real controller in-process; two simulated hosts whose VMs take 2 s to start, so the grid has
// something to update.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { launchBrowser, type TestBrowser } from '../support/browser.ts';
import { freePort, waitFor } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

const STUDENTS = 6;

describe('a class session in a browser', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-class-session-'));
  let controller: RunningController;
  const hosts: SimAgent[] = [];
  let browser: TestBrowser;
  let page: Page;
  let base: string;
  let classId: string;

  /** The grid's tiles' states, in order. */
  const tileStates = async () => page.locator('#session-grid li.tile').evaluateAll((els) => els.map((e) => e.getAttribute('data-state') ?? ''));

  before(async () => {
    configureLogging({ out: () => {} });
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, answerWithinMs: 500,
      pages: (services) => pageRouter(services, { log: logger('pages') }),
    });
    base = controller.url;
    for (const i of [1, 2]) {
      // VMs take 6 s to start: the grid's first view must come before that, which 2 s did not leave a loaded machine
      const host = await new SimAgent({ hostId: `lab-pc-${i}`, hostname: `lab-pc-${i}`, memoryMiB: 8192, hypervisor: 'tcg', port: await freePort(), createDelayMs: 6000 }).start();
      hosts.push(host);
      controller.services.hosts.enroll({
        hostId: host.hostId, hostname: host.hostname, agentUrl: host.url, agentKey: host.key, version: 'test', joinToken: controller.services.secrets.joinToken,
      });
    }
    await controller.services.hosts.pollAll();
    // The admin made the teacher's account and the class (the class pages' own tests cover those forms).
    await controller.services.users.create({ name: 'ms-berg', password: 'ms-berg-pass-1', role: 'teacher' });
    classId = controller.services.classes.create({ name: '7b', teachers: ['ms-berg'] }, 'admin').id;
    browser = await launchBrowser({ timeoutMs: 60_000 });
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
  });

  after(async () => {
    await browser?.close();
    await controller?.stop();
    for (const h of hosts) await h.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('the teacher imports the class, starts a session, sees the grid come up live, opens a console and ends it', async () => {
    await page.goto(base + '/login');
    await page.fill('#login-name', 'ms-berg');
    await page.fill('#login-password', 'ms-berg-pass-1');
    await page.click('#login-form button[type=submit]');
    await page.waitForURL(base + '/');

    // Import the class: numbered names on the class page; the one-time passwords come back to print.
    await page.goto(`${base}/classes/${classId}`);
    await page.fill('#import-prefix', '7b-');
    await page.fill('#import-count', String(STUDENTS));
    await page.click('#class-import button[type=submit]');
    await page.waitForSelector('#class-passwords');
    expect(await page.locator('#class-passwords').textContent()).to.contain('7b-01').and.contain(`7b-0${STUDENTS}`);

    // Start the session: the class is the teacher's only one, so it is chosen already.
    await page.goto(base + '/sessions');
    await page.selectOption('#session-template', 'alpine');
    await page.click('#session-form button[type=submit]');
    await page.waitForURL(/\/sessions\/[0-9a-f]{12}$/);
    const gridUrl = page.url();
    expect(await page.locator('#session-grid li.tile').count()).to.equal(STUDENTS);
    const first = await tileStates();
    expect(first.filter((s) => s === 'creating'), 'VMs take 6 s to start: the grid first shows them starting').to.not.have.length(0);
    expect(await page.textContent('#session-time-left')).to.match(/^4[45] min left$/);

    // The grid updates by itself: the same document (a mark set in it survives), every tile running.
    await page.evaluate('window.__stillTheSamePage = true');
    await waitFor('every tile running', async () => (await tileStates()).every((s) => s === 'running'), 60_000, 250); // the VMs of a whole class on a loaded machine
    expect(page.url()).to.equal(gridUrl);
    expect(await page.evaluate('window.__stillTheSamePage === true')).to.equal(true);
    expect(await page.locator('#session-grid li.tile a:has-text("Console")').count()).to.equal(STUDENTS);

    // One student's console: the VM page with its serial console connected.
    await page.click('#session-grid li.tile[data-student="7b-03"] a:has-text("Console")');
    await page.waitForURL(/\/vms\/[a-z0-9]{12}$/);
    expect(await page.textContent('h1')).to.contain('7b-03');
    await page.waitForSelector('#console-status[data-state=connected]', { timeout: 30_000 });

    // End now (confirmed): the VMs are deleted, the grid says so and stops polling.
    await page.goto(gridUrl);
    await page.click('#session-grid button:has-text("End now")');
    await page.waitForSelector('#session-grid[data-state=ended]', { timeout: 30_000 });
    expect(await page.locator('#session-grid').getAttribute('hx-trigger')).to.equal(null);
    expect(new Set(await tileStates())).to.deep.equal(new Set(['none']));
    expect(hosts.reduce((n, h) => n + h.vms.size, 0)).to.equal(0);
    expect(browser.errors).to.deep.equal([]);
  });
});
