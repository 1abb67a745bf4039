// A class in headless chromium: the admin makes a teacher on the Users page (the table shows them at
// once, no reload) and a class for them; the teacher chooses a CSV file with bad rows on the class's
// page, gets the printable sheet of one-time passwords (printed, the menus are hidden), and a new
// student's first login asks for their own password. A real controller in-process.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { firstLogin, launchBrowser, login, type TestBrowser } from '../support/browser.ts';

describe('classes pages in a browser', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-classes-page-'));
  let controller: RunningController;
  let browser: TestBrowser;
  let page: Page;
  let base: string;

  before(async () => {
    configureLogging({ out: () => {} });
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false,
      pages: (services) => pageRouter(services, { log: logger('pages') }),
    });
    base = controller.url;
    await controller.services.users.create({ name: 'admin2', password: 'admin2-pass-1', role: 'admin' });
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
  });

  after(async () => {
    await browser?.close();
    await controller?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('the admin creates a teacher (the table shows them without a reload) and a class for them', async () => {
    await login(page, base, 'admin2', 'admin2-pass-1');
    await page.waitForURL(base + '/');
    await page.goto(base + '/admin/users');
    await page.fill('#new-user-name', 'berg');
    await page.fill('#new-user-display', 'Ms Berg');
    await page.fill('#new-user-password', 'berg-pass-12');
    await page.selectOption('#new-user-role', 'teacher');
    await page.click('#user-form button[type=submit]');
    await page.waitForSelector('#user-form .flash.ok');
    // the same page, not reloaded: the table was swapped out of band
    await page.waitForSelector('#user-berg');
    expect(await page.locator('#user-berg').textContent()).to.contain('Ms Berg').and.contain('teacher');
    await page.goto(base + '/classes');
    await page.fill('#class-name', '7b');
    await page.selectOption('#class-teacher', 'berg');
    await page.click('#class-form button[type=submit]');
    await page.waitForURL(/\/classes\/[a-f0-9]{12}$/);
    expect(await page.locator('#class-members').textContent()).to.contain('berg');
  });

  it('the teacher imports a CSV file with bad rows; the sheet of one-time passwords prints without the menus; a student\'s first login asks for a password', async () => {
    await login(page, base, 'berg', 'berg-pass-12');
    await page.waitForURL(base + '/');
    expect(await page.locator('nav a[href="/classes"]').count(), 'a teacher has Classes in the menu').to.equal(1);
    await page.goto(base + '/classes');
    expect(await page.locator('#class-form').count(), 'a teacher does not create classes').to.equal(0);
    await page.click('#class-list a:has-text("7b")');
    const csv = path.join(work, '7b.csv');
    writeFileSync(csv, 'name;display name\nanna;Anna Ek\n\n<b>eve</b>;Eve\nanna;Anna again\nben\n');
    await page.setInputFiles('#import-file', csv);
    await page.click('#class-import button[type=submit]');
    await page.waitForSelector('#class-passwords');
    const rows = await page.$$eval('#class-passwords table.passwords tbody tr', (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent!.trim())));
    expect(rows.map((r) => [r[0], r[1]])).to.deep.equal([['anna', 'Anna Ek'], ['ben', '']]);
    const rejected = await page.locator('#class-passwords section').textContent();
    expect(rejected).to.contain('empty line').and.contain('contains markup').and.contain('the same name as line 2');
    await page.emulateMedia({ media: 'print' });
    expect(await page.locator('header.top').isVisible(), 'the menu bar is not printed').to.equal(false);
    expect(await page.locator('#class-passwords table.passwords').isVisible()).to.equal(true);
    await page.emulateMedia({ media: 'screen' });
    const annaPassword = rows[0]![2]!;
    await firstLogin(page, base, 'anna', annaPassword, 'anna-own-pass');
    expect(await page.locator('nav a[href="/classes"]').count(), 'a student has no Classes menu').to.equal(0);
    await page.goto(base + '/account');
    expect(await page.locator('main').textContent()).to.contain('a student').and.contain('7b');
  });
});
