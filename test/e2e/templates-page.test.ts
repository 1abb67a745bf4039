// The templates page in headless chromium: an admin uploads a disk image with the page's form (the
// file goes as the raw body, a progress bar shows), an import by URL shows its progress while the list
// polls, a refused upload says why, and deleting a template a VM uses is refused in plain words.
// Every control has an accessible name. A real controller, a simulated host for the VM. Then, with two
// real agents: "Copy to every host" shows the hosts pulling, then the template on both; "Keep on
// every host" toggles.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { defaults } from '../../base/config.ts';
import { run } from '../../base/exec.ts';
import { listen } from '../../base/http.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { firstLogin, launchBrowser, type TestBrowser } from '../support/browser.ts';
import { freePort, waitFor } from '../support/net.ts';
import { SimAgent, simTemplate } from '../support/sim-agent.ts';

/** A browser signed in to the controller as the admin, for the first time: the admin token as a one-time password, then a password of our own. */
async function adminBrowser(controller: RunningController): Promise<{ browser: TestBrowser; page: Page }> {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await firstLogin(page, controller.url, 'admin', controller.services.secrets.adminToken, 'teacher-pass-1');
    return { browser, page };
  } catch (err) {
    await browser.close();
    throw err;
  }
}

describe('templates page in a browser', function () {
  this.timeout(120_000);
  // made in before(): a run that selects only the other describe (--grep) leaves no empty folder behind
  let work = '';
  let controller: RunningController;
  let host: SimAgent;
  let browser: TestBrowser;
  let page: Page;
  let files: Server;
  let base: string;
  const image = Buffer.alloc(2 * 1024 * 1024, 3);
  let imageFile = '';

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-tpl-page-'));
    imageFile = path.join(work, 'lesson.img');
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
    // A slow file server: 64 KiB every 120 ms (about 4 s for the image), so the import's progress can be
    // seen: at 40 ms a page refreshed late on a loaded machine could find the import already done.
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
      }, 120);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    ({ browser, page } = await adminBrowser(controller));
    page.on('dialog', (d) => void d.accept());
  });

  after(async () => {
    await browser?.close();
    files?.closeAllConnections();
    files?.close();
    await controller?.stop();
    await host?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    if (work) rmSync(work, { recursive: true, force: true });
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
    await page.waitForSelector('#template-list tr:has-text("lesson2") >> text=in the catalog', { timeout: 60_000 });
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

/** Forwards GET requests to `target` (keeping Range and Authorization) at `bytesPerS`: a slow link to watch a pull on. */
function slowLink(target: string, bytesPerS: number): Server {
  return createServer((req, res) => {
    const headers = { ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}), ...(req.headers.range ? { range: req.headers.range } : {}) };
    const up = httpRequest(target + req.url, { method: req.method, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.on('data', (chunk: Buffer) => {
        upRes.pause();
        res.write(chunk);
        setTimeout(() => upRes.resume(), (chunk.length / bytesPerS) * 1000);
      });
      upRes.on('end', () => res.end());
      upRes.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    up.end();
  });
}

describe('templates page in a browser: copy to every host, keep on every host (two real agents)', function () {
  this.timeout(180_000);
  let work = '';
  const runId = randomBytes(3).toString('hex');
  const agents: RunningAgent[] = [];
  let controller: RunningController;
  let link: Server;
  let browser: TestBrowser;
  let page: Page;

  const hostHas = (agent: RunningAgent, name: string) => controller.services.hosts.record(agent.hostId)?.status?.templates.some((t) => t.name === name) ?? false;

  before(async function () {
    this.timeout(300_000); // two agents starting on a machine other tests load too
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-tpl-copy-'));
    configureLogging({ out: () => {} });
    await ensureDaemons();
    chmodSync(work, 0o711);
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1,
      pages: (services) => pageRouter(services, { log: logger('pages') }),
    });
    for (const [label, ports] of [['a', '43600-43609'], ['b', '43610-43619']] as const) {
      const agent = await startAgent({
        config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, label), listen: '127.0.0.1', sshPortRange: ports },
        log: logger(`agent-${label}`), hostId: `tplcopy-${label}-${runId}`, port: 0, listen: '127.0.0.1', key: `tplcopy-key-${label}-0123456789abcdef`,
      });
      agents.push(agent);
      const fingerprint = (agent as { fingerprint?: string }).fingerprint;
      const enrolled = await fetch(`${controller.url}/api/enroll`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          hostId: agent.hostId, hostname: `room-${label}`, agentUrl: agent.url, agentKey: agent.key, joinToken: controller.services.secrets.joinToken, version: 'test',
          ...(agent.url.startsWith('https:') && fingerprint ? { certFingerprint: fingerprint } : {}),
        }),
      });
      expect(enrolled.status, await enrolled.text()).to.equal(200);
    }
    // 12 MiB in the catalog, which the hosts reach over a 3 MiB/s link: the pull lasts seconds.
    const upload = await fetch(`${controller.url}/api/templates?name=room-image&os=test`, {
      method: 'POST', headers: { authorization: `Bearer ${controller.services.secrets.adminToken}`, 'content-type': 'application/octet-stream' }, body: randomBytes(12 * 1024 * 1024),
    });
    expect(upload.status, await upload.text()).to.equal(201);
    link = slowLink(controller.url, 3 * 1024 * 1024);
    // these agents were enrolled by hand: their status names no controller, so the distributor's URL is used
    controller.services.distribute.controllerUrl = `http://127.0.0.1:${await listen(link, 0, '127.0.0.1')}`;
    await waitFor('both hosts to be ready', () => agents.every((a) => controller.services.hosts.record(a.hostId)?.state === 'ready'), 60_000);
    ({ browser, page } = await adminBrowser(controller));
  });

  after(async function () {
    this.timeout(120_000);
    await browser?.close();
    link?.closeAllConnections();
    link?.close();
    await controller?.stop().catch((err: Error) => console.warn(`stopping the controller: ${err.message}`));
    for (const agent of agents) {
      await agent.stop().catch((err: Error) => console.warn(`stopping ${agent.hostId}: ${err.message}`));
      await removeNetwork(networkName(agent.hostId));
    }
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('copies a template to every host: the list shows the hosts pulling, then the template on both', async () => {
    await page.goto(controller.url + '/templates');
    const row = '#template-list tr:has-text("room-image")';
    expect(await page.textContent(`${row} td[data-label=Hosts]`)).to.contain('0 of 2');
    await page.click(`${row} button:has-text("Copy room-image to every host")`);
    await page.waitForSelector('#template-list .flash.ok:has-text("Copying room-image to")');
    await page.waitForSelector(`${row} .pulling`);
    const pulling = await page.textContent(`${row} td[data-label=Hosts]`);
    expect(pulling).to.match(/room-[ab] (pulling \d+%|starting to pull)/);
    expect(pulling).to.not.contain('2 of 2');
    // the list polls while the pulls go on, and stops showing them when both hosts have the template
    await page.waitForSelector(`${row} td[data-label=Hosts]:has-text("2 of 2")`, { timeout: 90_000 });
    expect(await page.$$(`${row} .pulling`)).to.have.length(0);
    expect(agents.every((a) => hostHas(a, 'room-image'))).to.equal(true);
    expect(browser.errors).to.deep.equal([]);
  });

  it('toggles "keep on every host" and shows it', async () => {
    const button = '#template-list tr:has-text("room-image") button:has-text("Keep room-image on every host")';
    expect(await page.getAttribute(button, 'aria-pressed')).to.equal('false');
    await page.click(button);
    await page.waitForSelector(`${button}[aria-pressed=true]`);
    expect(await page.textContent('#template-list')).to.contain('Kept on every host');
    expect(controller.services.distribute.kept()).to.deep.equal(['room-image']);
    await page.click(button);
    await page.waitForSelector(`${button}[aria-pressed=false]`);
    expect(await page.textContent('#template-list')).to.not.contain('Kept on every host');
    expect(controller.services.distribute.kept()).to.deep.equal([]);
  });
});
