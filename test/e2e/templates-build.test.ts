// Building a template on the templates page in headless chromium: an admin picks debian-12 in the
// Build form (with the note that a desktop needs KVM hosts), the build panel's log (role=log,
// aria-live polite) tails the real `skyhost template build` line by line while a progress bar moves,
// and the panel ends with the template in the list. A taken name is refused as text under its field.
// axe-core checks the page with the form, with the running panel and with the finished one. The image
// comes from the machine's build cache (test/support/debian-image.ts fills it when cold).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { axeViolations, formatViolations } from '../support/axe.ts';
import { firstLogin, launchBrowser, type TestBrowser } from '../support/browser.ts';
import { buildDebianImage } from '../support/debian-image.ts';

describe('templates page: build a template with its log tailing live (browser)', function () {
  this.timeout(300_000); // a template build from the cache, which a loaded machine makes several times slower
  let work = '';
  let controller: RunningController;
  let browser: TestBrowser;
  let page: Page;
  let base: string;

  const axe = async (where: string) => {
    const found = await axeViolations(page, { needsReview: true });
    expect(found, formatViolations(found, where)).to.deep.equal([]);
  };

  before(async function () {
    this.timeout(40 * 60_000);
    await buildDebianImage();
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-tpl-build-'));
    configureLogging({ out: () => {} });
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false,
      pages: (services) => pageRouter(services, { log: logger('pages') }),
    });
    base = controller.url;
    browser = await launchBrowser();
    page = await browser.newPage();
    await firstLogin(page, base, 'admin', controller.services.secrets.adminToken, 'teacher-pass-1');
  });

  after(async () => {
    await browser?.close();
    await controller?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('shows the Build form to admins: a recipe, the desktop box with its KVM note', async () => {
    await page.goto(base + '/templates');
    expect(await page.$$eval('#build-recipe option', (os) => os.map((o) => o.getAttribute('value')))).to.include('debian-12');
    expect(await page.getAttribute('#build-desktop', 'aria-describedby')).to.equal('build-desktop-note');
    expect(await page.textContent('#build-desktop-note')).to.contain('KVM');
    await axe('the templates page with the Build form');
  });

  it('tails the build log live in a role=log region, moves the progress bar, and ends with the template listed', async () => {
    await page.goto(base + '/templates');
    await page.selectOption('#build-recipe', 'debian-12');
    await page.fill('#build-name', 'deb-page');
    // every line the log region ever shows, in order, as the page shows them
    await page.evaluate(`window.__seen = []; new MutationObserver((ms) => { for (const m of ms) for (const n of m.addedNodes) if (n.nodeType === 1 && n.closest('#build-log')) window.__seen.push(n.textContent); })
      .observe(document.body, { childList: true, subtree: true });`);
    await page.click('#build-form button[type=submit]');
    await page.waitForSelector('#build-log');
    expect(await page.getAttribute('#build-log', 'role')).to.equal('log');
    expect(await page.getAttribute('#build-log', 'aria-live')).to.equal('polite');
    expect(await page.textContent('#build-log')).to.contain('building debian-12 as template deb-page');
    await axe('the templates page with a running build');
    // lines arrive by the poll, appended (the region is not replaced)
    const region = await page.$('#build-log');
    await page.waitForSelector('#build-log >> text=/\\[\\d\\/\\d\\]/', { timeout: 60_000 });
    const percents: number[] = [];
    const done = page.waitForSelector('#build-status:has-text("Done")', { timeout: 240_000 });
    for (const end = Date.now() + 240_000; Date.now() < end && !(await page.$('#build-status:has-text("Done")'));) {
      const v = await page.getAttribute('#build-progress', 'value');
      if (v !== null) percents.push(Number(v));
      if (await page.$('#build-status:has-text("Failed")')) break;
      await page.waitForTimeout(250);
    }
    await done;
    expect(await region!.evaluate((el) => el.isConnected)).to.equal(true);
    expect(percents).to.deep.equal([...percents].sort((a, b) => a - b));
    expect(Number(await page.getAttribute('#build-progress', 'value'))).to.equal(100);
    const log = await page.$$eval('#build-log > div', (ds) => ds.map((d) => d.textContent ?? ''));
    expect(log.join('\n')).to.contain('is in the catalog');
    expect(new Set(log).size, 'no line shown twice').to.equal(log.length);
    expect(await page.evaluate<number>('window.__seen.length')).to.be.greaterThan(1);
    expect(await page.textContent('#build-status')).to.match(/sha256 [0-9a-f]{64}/);
    await page.waitForSelector('#template-list tr:has-text("deb-page") >> text=in the catalog');
    // the list names the build for everyone who looks at the page
    expect(await page.textContent('#template-list li:has-text("deb-page")')).to.match(/from the recipe debian-12:\s+done/);
    // the poll has stopped, and nothing on the page shows a stack
    expect(await page.getAttribute('#build-poll', 'hx-get')).to.equal(null);
    expect(await page.textContent('body')).to.not.match(/\n\s+at /);
    await axe('the templates page with a finished build');
    expect(browser.errors).to.deep.equal([]);
  });

  it('fits a phone (375 px) with the build panel and its long log lines, without horizontal scroll', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    try {
      await page.goto(base + '/templates');
      await page.fill('#build-name', 'deb-phone');
      await page.click('#build-form button[type=submit]');
      await page.waitForSelector('#build-log >> text=--data', { timeout: 30_000 });
      const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
      expect(overflow).to.be.at.most(0);
      await page.waitForSelector('#build-status:has-text("Done")', { timeout: 240_000 });
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  it('refuses a taken name as text under the name field', async () => {
    await page.goto(base + '/templates');
    await page.selectOption('#build-recipe', 'debian-12');
    await page.fill('#build-name', 'deb-page');
    await page.click('#build-form button[type=submit]');
    await page.waitForSelector('#build-form .field-error');
    expect(await page.textContent('#build-form .field-error')).to.contain('already in use');
    expect(await page.textContent('#build-form .flash.error')).to.contain('template deb-page already exists');
    expect(await page.getAttribute('#build-name', 'aria-invalid')).to.equal('true');
    await axe('the Build form with an error');
  });
});
