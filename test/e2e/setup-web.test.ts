// The web installer in headless Chromium, end to end with the real pieces: the real remaster
// (xorriso) of the stand-in Ubuntu ISO, downloaded from a stand-in mirror on loopback with its
// SHA256SUMS checked; the real download of the result; the real USB writer on a loop device.
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { run } from '../../base/exec.ts';
import { close, listen } from '../../base/http.ts';
import { logger } from '../../base/log.ts';
import { buildSetupApp } from '../../appliance/setup/app.ts';
import { setupKey } from '../../appliance/setup/guard.ts';
import { downloadUbuntuIso } from '../../appliance/setup/download.ts';
import { SetupJobs } from '../../appliance/setup/jobs.ts';
import { buildInstallerIso, inspectUbuntuIso } from '../../iso/remaster.ts';
import { writeImage } from '../../iso/usb.ts';
import { launchBrowser, type TestBrowser } from '../support/browser.ts';
import { fakeUbuntuIso } from '../support/fake-ubuntu-iso.ts';
import { startFakeMirror, type FakeMirror } from '../support/fake-ubuntu-mirror.ts';
import { createLoopDevice, sha256OfPrefix, type LoopDevice } from '../support/loop-device.ts';

const SCREENS = path.resolve(import.meta.dirname, '../../.cache/screens');
const TOKEN = 'shj_e2e-join-token-0001';
const CONTROLLER = 'http://skyhost-controller.local:8080';

describe('web installer (skyhost setup) in headless Chromium', function () {
  this.timeout(240_000);
  let dir: string;
  let mirror: FakeMirror;
  let loop: LoopDevice;
  let server: Server;
  let base: string;
  let browser: TestBrowser;
  let page: Page;
  let downloaded: string;
  const offsite: string[] = [];
  const key = setupKey();
  /** What the teacher's browser sends after opening the printed address: the cookie, and its Origin on posts. */
  const asBrowser = (url: string, init: RequestInit = {}) => fetch(url, {
    ...init,
    headers: { Cookie: `skyhost-setup-${new URL(base).port}=${key}`, ...(init.method === 'POST' ? { Origin: base } : {}), ...(init.headers as Record<string, string>) },
  });

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-setup-e2e-'));
    const iso = await fakeUbuntuIso({ release: '24.04' });
    mirror = await startFakeMirror({ iso, bytesPerTick: 256 * 1024 }); // ~2 s: the progress bar has time to show
    loop = await createLoopDevice(256 * 1024 * 1024);
    const log = logger('setup-test');
    const jobs = new SetupJobs({ buildIso: buildInstallerIso, download: downloadUbuntuIso, writeImage, workDir: path.join(dir, 'work'), log });
    server = createServer(buildSetupApp({ log, jobs, ubuntuMirror: 'https://releases.ubuntu.com', inspectIso: inspectUbuntuIso, allowLoop: true, key }));
    base = `http://127.0.0.1:${await listen(server, 0, '127.0.0.1')}`;
    browser = await launchBrowser();
    page = await browser.newPage({ width: 1100, height: 900 });
    // Everything must come from this machine: note any request elsewhere.
    await browser.context.route('**/*', (route) => {
      const url = new URL(route.request().url());
      if (url.hostname !== '127.0.0.1') {
        offsite.push(url.href);
        return route.abort();
      }
      return route.continue();
    });
  });

  after(async () => {
    await browser?.close();
    if (server) await close(server);
    await mirror?.close();
    await loop?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('should open from the printed address plus a controller link with its URL and join token filled in, then take the Host node role', async () => {
    await page.goto(`${base}/?key=${key}&controllerUrl=${encodeURIComponent(CONTROLLER)}&joinToken=${TOKEN}`);
    expect(page.url(), 'the key is taken out of the address bar').to.not.contain('key=');
    await page.click('#role-agent');
    await page.waitForSelector('#options-form');
    expect(await page.inputValue('input[name=controllerUrl]')).to.equal(CONTROLLER);
    expect(await page.inputValue('input[name=joinToken]')).to.equal(TOKEN);
    expect(page.url()).to.contain('/options?role=agent');
  });

  it('should show a bad option next to its field and keep what was typed', async () => {
    await page.fill('input[name=hostnamePrefix]', 'Lab PC 1');
    await page.fill('input[name=timezone]', 'Europe/Paris');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('#options-next');
    await page.waitForSelector('#error-hostnamePrefix');
    expect(await page.textContent('#error-hostnamePrefix')).to.contain('lower-case letters');
    expect(await page.inputValue('input[name=hostnamePrefix]')).to.equal('Lab PC 1');
    expect(await page.inputValue('input[name=timezone]')).to.equal('Europe/Paris');
    expect(await page.inputValue('input[name=joinToken]')).to.equal(TOKEN);
    mkdirSync(SCREENS, { recursive: true });
    await page.screenshot({ path: path.join(SCREENS, 'setup-options-error.png'), fullPage: true });

    await page.fill('input[name=hostnamePrefix]', 'lab');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('#options-next');
    // The controller's address does not answer from this PC: refused in plain words, everything kept.
    await page.waitForSelector('#controller-not-running');
    expect(await page.textContent('#error-controllerUrl')).to.contain(CONTROLLER).and.contain('not running yet');
    expect(await page.inputValue('input[name=hostnamePrefix]')).to.equal('lab');
    // The teacher makes the sticks before the controller runs: said so, the next step comes.
    await page.check('#controller-not-running');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('#options-next');
    await page.waitForSelector('#iso-form');
  });

  it('should download Ubuntu from the mirror, check SHA256SUMS, and build with a progress bar that reaches done', async () => {
    await page.check('input[name=source][value=download]');
    await page.fill('input[name=ubuntuMirror]', mirror.url);
    await page.selectOption('select[name=release]', '24.04');
    // What the job page showed, recorded by the page itself at every change: sampling it from here
    // (every 100 ms, 50 ms allowed per read) saw nothing when a loaded machine made each read slower.
    const seen = new Set<string>();
    const percents: number[] = [];
    await page.exposeFunction('skyJobShown', (heading: string | null, percent: string | null) => {
      if (heading) seen.add(heading.trim());
      if (percent) percents.push(Number(percent));
    });
    const observe = `if (!window.skyObserving) {
      window.skyObserving = true;
      new MutationObserver(() => window.skyJobShown(document.querySelector('#job h1')?.textContent ?? null,
        document.querySelector('#build-progress')?.getAttribute('value') ?? null))
        .observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    }`;
    await page.addInitScript(observe); // the job page the build leads to
    await page.click('#build');
    await page.waitForSelector('#build-progress');
    await page.evaluate(observe); // in case it was reached without a new document
    await page.waitForFunction("Number(document.querySelector('#build-progress')?.getAttribute('value')) > 0", undefined, { timeout: 60_000 })
      .then(() => page.screenshot({ path: path.join(SCREENS, 'setup-progress.png') }), () => undefined);
    await page.waitForSelector('#download', { timeout: 180_000 });
    expect(seen.has('Downloading Ubuntu') || seen.has('Building the installer')).to.equal(true);
    expect(percents.some((p) => p > 0 && p < 100), `progress seen: ${percents.join(' ')}`).to.equal(true);
    expect(mirror.requests).to.include.members(['/24.04/SHA256SUMS', `/24.04/${mirror.name}`]);
    expect(await page.textContent('#job')).to.contain('ERASES THE LARGEST DISK');
    expect(page.url()).to.match(/\/jobs\/[0-9a-f]{16}$/);
  });

  it('should download the installer, with the controller URL and join token inside', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    downloaded = path.join(dir, 'installer.iso');
    await download.saveAs(downloaded);
    expect(download.suggestedFilename()).to.match(/^skyhost-agent-.*\.iso$/);
    const extract = async (isoPath: string) => {
      const out = path.join(dir, path.basename(isoPath));
      await run('xorriso', ['-osirrox', 'on', '-indev', downloaded, '-extract', isoPath, out]);
      return readFileSync(out, 'utf8');
    };
    expect(await extract('/nocloud/user-data')).to.match(/^#cloud-config/).and.contain('hostname');
    expect(await extract('/skyhost/config.yaml')).to.contain(CONTROLLER).and.not.contain(TOKEN);
    expect(await extract('/skyhost/join-token')).to.equal(TOKEN + '\n'); // installed 0600, never in the world-readable config
  });

  it('should explain refused drives, refuse a wrong confirmation, then write the loop device and verify it', async () => {
    await page.click('button:has-text("Look again")');
    const radio = `input[name=device][value="${loop.device}"]`;
    await page.waitForSelector(radio);
    const refusedRoot = await page.locator('.drive.refused', { hasText: 'running from' }).count();
    const rootDisk = (await run('findmnt', ['-n', '-o', 'SOURCE', '/'])).stdout.trim();
    if (rootDisk.startsWith('/dev/')) expect(refusedRoot).to.be.greaterThan(0);

    expect(await page.isDisabled('#usb-write'), 'Erase before a drive is chosen').to.equal(true);
    await page.check(radio);
    await page.fill('input[name=confirm]', 'not-the-name');
    expect(await page.isDisabled('#usb-write'), 'Erase before the name is typed exactly').to.equal(true);
    // The server refuses a wrong name too (a browser without the page's script), keeping the choice.
    const jobId = /\/jobs\/([0-9a-f]{16})/.exec(page.url())![1];
    const refused = await asBrowser(`${base}/jobs/${jobId}/usb`, { method: 'POST', headers: { 'HX-Request': 'true' }, body: new URLSearchParams({ device: loop.device, confirm: 'not-the-name' }) });
    expect(refused.status).to.equal(422);
    const again = await refused.text();
    expect(again).to.contain(`type “${loop.name}”`).and.match(/value="[^"]*"[^>]* checked/);
    expect(await page.isChecked(radio)).to.equal(true);

    await page.fill('input[name=confirm]', loop.name);
    await page.click('#usb-write');
    await page.waitForSelector('#usb-done', { timeout: 180_000 });
    await page.screenshot({ path: path.join(SCREENS, 'setup-usb-done.png'), fullPage: true });
    const size = statSync(downloaded).size;
    const expected = createHash('sha256').update(readFileSync(downloaded)).digest('hex');
    expect(sha256OfPrefix(loop.device, size)).to.equal(expected);
    expect(await page.textContent('#usb-done')).to.contain(expected.slice(0, 16));
  });

  it('should answer one URL both ways: the step alone for htmx, the whole page for a plain or boosted request', async () => {
    const get = (headers: Record<string, string>) => asBrowser(`${base}/options?role=agent`, { headers });
    const step = await get({ 'HX-Request': 'true' });
    const boosted = await get({ 'HX-Request': 'true', 'HX-Boosted': 'true' });
    const plain = await get({});
    for (const r of [step, boosted, plain]) expect(r.headers.get('vary')).to.match(/HX-Request/);
    const stepHtml = await step.text();
    expect(stepHtml).to.contain('id="options-form"');
    expect(stepHtml).to.not.contain('<html');
    expect(await boosted.text()).to.match(/^<!doctype html>/).and.contain('id="options-form"');
    expect(await plain.text()).to.match(/^<!doctype html>/);
  });

  it('should refuse a form posted from another web site (this server can erase drives)', async () => {
    const r = await asBrowser(`${base}/options`, {
      method: 'POST',
      headers: { Origin: 'http://evil.example', 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'role=agent',
    });
    expect(r.status).to.equal(403);
    expect(await r.text()).to.contain('sent from another web site');
  });

  it('should refuse options tampered with between the steps (the hidden plan is checked again)', async () => {
    const tampered = JSON.stringify({ role: 'agent', hostnamePrefix: 'lab\nautoinstall: {}' });
    const r = await asBrowser(`${base}/build`, { method: 'POST', body: new URLSearchParams({ plan: tampered, source: 'path', isoPath: '/etc/hostname' }) });
    expect(r.status).to.equal(400);
    expect(await r.text()).to.contain('start again');
  });

  it('should show a damaged Ubuntu download as a failed build, in plain words', async () => {
    // 22.04: the 24.04 ISO verified above is in the cache and would be reused without a download.
    const bad = await startFakeMirror({ iso: await fakeUbuntuIso({ release: '22.04' }), release: '22.04', corrupt: true });
    try {
      const plan = JSON.stringify({ role: 'controller' });
      const r = await asBrowser(`${base}/build`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ plan, source: 'download', ubuntuMirror: bad.url, release: '22.04' }) });
      expect(r.status).to.equal(303);
      const jobUrl = `${base}${r.headers.get('location')}`;
      let body = '';
      for (const end = Date.now() + 60_000; Date.now() < end && !body.includes('did not work');) { // 20 s of polls was a quiet machine's
        await new Promise((res) => setTimeout(res, 200));
        body = await (await asBrowser(jobUrl, { headers: { 'HX-Request': 'true' } })).text();
      }
      expect(body).to.contain('The download did not work').and.contain('does not match the mirror&#x27;s SHA256SUMS');
      expect(body, 'the options are kept: back to the ISO step').to.contain('Back to the ISO step');
      const iso = await (await asBrowser(`${jobUrl}/iso`, { headers: { 'HX-Request': 'true' } })).text();
      expect(iso).to.contain('id="iso-form"').and.contain('The download did not work').and.contain(plan.replace(/"/g, '&quot;'));
    } finally {
      await bad.close();
    }
  });

  it('should answer an unknown build with a 404 page, not a stack trace', async () => {
    const r = await asBrowser(`${base}/jobs/0123456789abcdef/download`);
    expect(r.status).to.equal(404);
    const body = await r.text();
    expect(body).to.contain('start again').and.not.contain('    at ');
  });

  it('should open from the controller\'s "Add a host" link on another site, with the cookie (SameSite=Strict) sent after one reload', async () => {
    const link = `${base}/?controllerUrl=${encodeURIComponent(CONTROLLER)}&joinToken=${TOKEN}`;
    await page.route('http://controller.test/**', (route) => route.fulfill({ contentType: 'text/html', body: `<a id="add" href="${link}">Add a host</a>` }));
    await page.goto('http://controller.test/hosts');
    await page.click('#add');
    await page.waitForSelector('#role-agent');
    await page.click('#role-agent');
    await page.waitForSelector('#options-form');
    expect(await page.inputValue('input[name=controllerUrl]')).to.equal(CONTROLLER);
    await page.unroute('http://controller.test/**');
  });

  it('should refuse a browser without the cookie (one that never opened the printed address)', async () => {
    await browser.context.clearCookies();
    const r = await page.goto(`${base}/`);
    expect(r?.status()).to.equal(403);
    expect(await page.textContent('body')).to.contain('open the address skyhost setup printed');
  });

  it('should have loaded nothing from outside this machine and logged no page errors', () => {
    expect(offsite).to.deep.equal([]);
    // Chromium logs every 4xx answer; the 422s of the two validation steps and the 403 above are expected.
    expect(browser.errors.filter((e) => !/status of (422|403)/.test(e))).to.deep.equal([]);
  });
});
