// The templates page in headless chromium: an admin uploads a disk image with the page's form (the
// file goes as the raw body, a progress bar shows), an import by URL shows its progress while the list
// polls, a refused upload says why, and deleting a template a VM uses is refused in plain words.
// Every control has an accessible name. A real controller, a simulated host for the VM.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { launchBrowser, type TestBrowser } from '../support/browser.ts';
import { freePort } from '../support/net.ts';
import { SimAgent, simTemplate } from '../support/sim-agent.ts';

describe('templates page in a browser', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-tpl-page-'));
  let controller: RunningController;
  let host: SimAgent;
  let browser: TestBrowser;
  let page: Page;
  let files: Server;
  let base: string;
  const image = Buffer.alloc(2 * 1024 * 1024, 3);
  const imageFile = path.join(work, 'lesson.img');

  before(async () => {
    configureLogging({ out: () => {} });
    writeFileSync(imageFile, image);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(work, 'base.qcow2'), '16M']);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(work, 'base.qcow2'), path.join(work, 'overlay.qcow2')]);
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false,
      pages: (services) => pageRouter(services, { log: logger('pages') }),
    });
    base = controller.url;
    host = await new SimAgent({ hostId: 'lab-pc-1', hostname: 'lab-pc-1', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort(), templates: [simTemplate('busy')] }).start();
    const enrolled = await fetch(`${base}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: host.hostId, hostname: 'lab-pc-1', agentUrl: host.url, agentKey: host.key, joinToken: controller.services.secrets.joinToken, version: 'test' }),
    });
    expect(enrolled.status).to.equal(200);
    await controller.services.hosts.pollAll();
    // A slow file server: 64 KiB every 40 ms, so the import's progress can be seen.
    files = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': image.length });
      let at = 0;
      const timer = setInterval(() => {
        if (at >= image.length) {
          clearInterval(timer);
          res.end();
          return;
        }
        res.write(image.subarray(at, at + 65536));
        at += 65536;
      }, 40);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
    // first login: the admin token as a one-time password, then a password of our own
    await page.goto(base + '/login');
    await page.fill('#login-name', 'admin');
    await page.fill('#login-password', controller.services.secrets.adminToken);
    await page.click('#login-form button[type=submit]');
    await page.waitForURL('**/account/password');
    await page.fill('#pw-new', 'teacher-pass-1');
    await page.fill('#pw-again', 'teacher-pass-1');
    await page.click('#password-form button[type=submit]');
    await page.waitForURL(base + '/');
  });

  after(async () => {
    await browser?.close();
    files?.closeAllConnections();
    files?.close();
    await controller?.stop();
    await host?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('every control on the page has an accessible name', async () => {
    await page.goto(base + '/templates');
    const unnamed = await page.$$eval('input:not([type=hidden]), select, textarea, button, progress', (els) => els.filter((el) => {
      const e = el as unknown as { labels?: { length: number } | null; getAttribute(name: string): string | null };
      const labelled = (e.labels && e.labels.length > 0) || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby');
      const text = el.tagName === 'BUTTON' && (el.textContent ?? '').trim() !== '';
      return !labelled && !text;
    }).map((el) => el.outerHTML.slice(0, 120)));
    expect(unnamed).to.deep.equal([]);
    expect(await page.getAttribute('html', 'lang')).to.equal('en');
  });

  it('uploads a disk image with the form: progress, then the template is listed as in the catalog', async () => {
    await page.goto(base + '/templates');
    await page.setInputFiles('#up-file', imageFile);
    await page.fill('#up-name', 'lesson');
    await page.fill('#up-os', 'tiny');
    await page.fill('#up-sha', createHash('sha256').update(image).digest('hex'));
    await page.click('#template-upload button[type=submit]');
    await page.waitForSelector('#upload-status:has-text("is in the catalog")');
    await page.waitForSelector('#template-list tr:has-text("lesson") >> text=in the catalog');
    expect(browser.errors).to.deep.equal([]);
  });

  it('says why an upload is refused (a backing file) and lists nothing', async () => {
    await page.setInputFiles('#up-file', path.join(work, 'overlay.qcow2'));
    await page.fill('#up-name', 'backed');
    await page.click('#template-upload button[type=submit]');
    await page.waitForSelector('#upload-status:has-text("Not uploaded")');
    expect(await page.textContent('#upload-status')).to.contain('backing file');
    expect(await page.textContent('#template-list')).to.not.contain('backed');
  });

  it('imports by URL and shows the progress while it downloads', async () => {
    const url = `http://127.0.0.1:${(files.address() as AddressInfo).port}/lesson2.img`;
    await page.fill('#tpl-name', 'lesson2');
    await page.fill('#tpl-url', url);
    await page.fill('#tpl-sha', createHash('sha256').update(image).digest('hex'));
    await page.click('#template-form button[type=submit]');
    await page.waitForSelector('#template-form .flash.ok:has-text("Import of lesson2 started")');
    await page.waitForSelector('#template-list progress[aria-label="Import of lesson2"]');
    await page.waitForSelector('#template-list tr:has-text("lesson2") >> text=in the catalog', { timeout: 30_000 });
    expect(await page.textContent('#template-list')).to.contain('done');
  });

  it('fits a phone (375 px) without horizontal scroll, imports and hosts listed', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    try {
      await page.goto(base + '/templates');
      await page.waitForSelector('#template-list tr:has-text("lesson2")');
      const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
      expect(overflow).to.be.at.most(0);
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  it('refuses to delete a template a VM uses, in plain words', async () => {
    const upload = await fetch(`${base}/api/templates?name=busy`, {
      method: 'POST', headers: { authorization: `Bearer ${controller.services.secrets.adminToken}`, 'content-type': 'application/octet-stream' }, body: image,
    });
    expect(upload.status).to.equal(201);
    const vm = await fetch(`${base}/api/vms`, {
      method: 'POST', headers: { authorization: `Bearer ${controller.services.secrets.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ template: 'busy', name: 'lesson-vm' }),
    });
    expect(vm.status).to.be.oneOf([201, 202]);
    await page.goto(base + '/templates');
    await page.click('#template-list tr:has-text("busy") button:has-text("Delete")');
    await page.waitForSelector('#template-list .flash.error');
    expect(await page.textContent('#template-list .flash.error')).to.contain('the VM lesson-vm still uses it. Delete that VM first.');
    expect(await page.textContent('#template-list')).to.contain('busy');
  });
});
