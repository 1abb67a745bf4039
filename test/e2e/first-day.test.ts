// A teacher's first day in headless Chromium, against a real controller and a real agent (libvirt +
// QEMU under TCG): the controller opened as http://localhost (as the README says), first login,
// the first-steps checklist, an empty Templates page, the Hosts page's commands and links, a student
// and the student's first VM, the event log, and the USB web installer opened from the Hosts page.
// The controller listens on every address and is told its LAN address explicitly (this machine's,
// or a stand-in when it has none): whatever it is, it must appear where 127.0.0.1 used to.
// Screenshots go to test-results/screenshots/ (ignored by git).
import { expect } from 'chai';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { buildSetupApp } from '../../appliance/setup/app.ts';
import { setupKey } from '../../appliance/setup/guard.ts';
import { SetupJobs } from '../../appliance/setup/jobs.ts';
import { defaults } from '../../base/config.ts';
import { close, listen } from '../../base/http.ts';
import { logger } from '../../base/log.ts';
import { lanAddress } from '../../base/net.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { firstLogin, launchBrowser, login, type TestBrowser } from '../support/browser.ts';
import { buildTestGuest, type TestGuest } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';

const SHOTS = path.resolve(import.meta.dirname, '../../test-results/screenshots');
const DAY = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)( \d{4})? \d{2}:\d{2}(:\d{2})?$/;
/** The states a teacher may read on a VM's badge (server/pages/words.ts), never libvirt's. */
const VM_WORDS = ['starting', 'running', 'rebooting', 'stopped', 'error', 'deleting', 'unknown'];

describe('a teacher’s first day, from localhost (real controller, real agent, Chromium)', function () {
  this.timeout(300_000);
  const log = logger('first-day');
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-first-day-'));
  const hostId = `first-day-${process.pid}`;
  /** This machine's LAN address, or a stand-in the test gives the controller when it has none. */
  const realLan = lanAddress()?.ip;
  const lanIp = realLan ?? '10.254.77.1';
  let lanUrl: string;
  let agent: RunningAgent | undefined;
  let controller: RunningController | undefined;
  let setupServer: Server | undefined;
  let browser: TestBrowser | undefined;
  let page: Page;
  let base: string;
  let guest: TestGuest;
  const password = 'teacher-pass-1';
  /** Addresses the pages asked for that answered 404. */
  const missing: string[] = [];
  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `first-day-${name}.png`), fullPage: true });

  before(async function () {
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    guest = await buildTestGuest();
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '43400-43449' },
      log: logger('agent'), hostId, port: 0, listen: '127.0.0.1', key: 'first-day-agent-key-0123456789',
    });
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: log.child({ side: 'controller' }), port: 0, listen: '0.0.0.0', lanIp, pollIntervalSeconds: 1,
    });
    base = `http://localhost:${controller.port}`;
    lanUrl = `http://${lanIp}:${controller.port}`;
    const enrolled = await fetch(`${controller.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: 'lab-pc-1', agentUrl: agent.url, agentKey: agent.key, joinToken: controller.services.joinTokens.clusterToken(), version: 'e2e' }),
    });
    expect(enrolled.status, await enrolled.clone().text()).to.equal(200);
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
    page.on('console', (m) => { if (m.type() === 'error' && /404/.test(m.text())) missing.push(m.location().url); });
    mkdirSync(SHOTS, { recursive: true });
  });

  after(async function () {
    this.timeout(120_000);
    await browser?.close();
    if (setupServer) await close(setupServer).catch((err: Error) => process.stderr.write(`setup stop: ${err.message}\n`));
    // each step is tried whatever the one before did: a leftover domain or NAT network would outlive the run
    await controller?.stop().catch((err: Error) => process.stderr.write(`controller stop: ${err.message}\n`));
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch((err: Error) => process.stderr.write(`delete ${vm.id}: ${err.message}\n`));
      await agent.stop().catch((err: Error) => process.stderr.write(`agent stop: ${err.message}\n`));
    }
    await removeNetwork(networkName(hostId)).catch((err: Error) => process.stderr.write(`network: ${err.message}\n`));
    rmSync(work, { recursive: true, force: true });
  });

  it('should take the first login at http://localhost: the admin token, then a new password', async () => {
    await page.goto(base + '/');
    expect(new URL(page.url()).pathname).to.equal('/login');
    await firstLogin(page, base, 'admin', controller!.services.secrets.adminToken, password);
  });

  it('should say on the dashboard that the page came through loopback, and list the first steps', async () => {
    await page.waitForSelector('#first-steps');
    expect(await page.textContent('#loopback-notice')).to.contain("this PC's own address").and.contain(lanUrl);
    const steps = await page.locator('#first-steps li').allTextContents();
    expect(steps).to.have.length(3);
    expect(steps[0]).to.contain('Add a template');
    expect(steps[1]).to.contain('A host is there');
    expect(steps[2]).to.contain('Add students');
    await page.waitForSelector('.tiles >> text=lab-pc-1');
    await shot('dashboard');
  });

  it('should offer the no-download template commands on the empty Templates page, then list the template', async () => {
    await page.goto(base + '/templates');
    const empty = await page.textContent('#templates-empty');
    expect(empty).to.contain('sudo skyhost template build tiny --busybox').and.contain('sudo skyhost template build debian-12');
    await shot('templates-empty');
    // what `skyhost template build tiny --busybox` leaves on the host: the agent reports it, the controller lists it
    await agent!.templates.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox test guest', minMemoryMiB: 256 });
    await waitFor('the host to report its template', () => controller!.services.templates.find('guest') !== undefined, 60_000, 250);
  });

  it('should give the Hosts page’s commands and links with the LAN address, not 127.0.0.1, and the one-liner whole in its box', async () => {
    await page.goto(base + '/hosts');
    expect(await page.textContent('#loopback-notice')).to.contain(`lab PCs will use ${lanUrl}`);
    await page.click('#host-install button[type=submit]');
    await page.waitForSelector('#install-cmd');
    const command = (await page.textContent('#install-cmd'))!;
    expect(command).to.contain(`'${lanUrl}/install.sh?token=`).and.not.contain('127.0.0.1').and.not.contain('localhost');
    const box = await page.locator('#install-cmd').evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    expect(box.scroll, 'the one-liner is not cut off').to.be.at.most(box.client + 1);
    expect(await page.isVisible('button[data-copy=install-cmd]')).to.equal(true);
    expect(await page.textContent('#by-hand')).to.equal(`skyhost agent --controller ${lanUrl}`);
    const setupLink = new URL((await page.getAttribute('#setup-link', 'href'))!);
    expect(setupLink.searchParams.get('controllerUrl')).to.equal(lanUrl);
    await shot('hosts-install');
    await page.setViewportSize({ width: 375, height: 812 });
    const phone = await page.locator('#install-cmd').evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    expect(phone.scroll, 'the one-liner is not cut off on a phone').to.be.at.most(phone.client + 1);
    await shot('hosts-install-phone');
    await page.setViewportSize({ width: 1280, height: 800 });
    // the script the one-liner fetches, asked for at localhost too, sends the PC to the LAN address
    const script = await (await fetch(`${base}/install.sh`)).text();
    expect(script).to.contain(`CONTROLLER_URL='${lanUrl}'`).and.not.contain('127.0.0.1');
  });

  it('should add a student, after which the first-steps list is gone', async () => {
    await page.goto(base + '/admin/users');
    await page.fill('#new-user-name', 'student1');
    await page.fill('#new-user-password', 'student-pass-1');
    await page.click('#user-form button[type=submit]');
    await page.waitForSelector('#user-form .flash.ok');
    await page.goto(base + '/');
    await page.waitForSelector('.tiles');
    await page.waitForTimeout(1100); // the dashboard's partial is kept for a second
    await page.reload();
    await page.waitForSelector('.tiles');
    expect(await page.locator('#first-steps').count()).to.equal(0);
  });

  it('should show a student’s first VM in plain words from request to running', async () => {
    await login(page, base, 'student1', 'student-pass-1');
    await page.waitForURL(base + '/');
    await page.goto(base + '/vms');
    await page.fill('#vm-name', 'first-vm');
    await page.selectOption('#vm-template', 'guest');
    await page.click('#vm-form button[type=submit]');
    await page.waitForSelector('#vm-form .flash.ok');
    const seen = new Set<string>();
    const watch = setInterval(() => {
      void page.textContent('#vm-list tr:has-text("first-vm") .badge', { timeout: 100 }).then((t) => t && seen.add(t.trim()), () => undefined);
    }, 150);
    try {
      await page.waitForSelector('#vm-list tr[data-state=running] >> text=first-vm', { timeout: 120_000 });
    } finally {
      clearInterval(watch);
    }
    seen.add((await page.textContent('#vm-list tr:has-text("first-vm") .badge'))!.trim());
    for (const word of seen) expect(VM_WORDS, `badge "${word}" (seen: ${[...seen].join(', ')})`).to.include(word);
    expect(seen.has('running')).to.equal(true);
    await shot('student-vm');
  });

  it('should show the events in time order, each naming its VM, host and user, with the day in every date', async () => {
    await login(page, base, 'admin', password);
    await page.waitForURL(base + '/');
    await waitFor('the agent’s "created VM" record', () => controller!.services.events.list({ source: 'agent', limit: 50 }).some((e) => e.msg === 'created VM first-vm'), 60_000, 250);
    await page.goto(base + '/admin/events');
    const created = page.locator('#event-log li', { hasText: 'created VM first-vm' }).first();
    const row = (await created.textContent())!;
    expect(row).to.contain('host lab-pc-1').and.contain('VM first-vm').and.contain('student1');
    const times = await page.locator('#event-log li > span:first-child').allTextContents();
    expect(times.length).to.be.greaterThan(3);
    for (const t of times) expect(t.trim()).to.match(DAY);
    const api = await (await fetch(`${controller!.url}/api/events?limit=200`, { headers: { authorization: `Bearer ${controller!.services.secrets.adminToken}` } })).json() as { events: Array<{ time: string }> };
    const ms = api.events.map((e) => Date.parse(e.time));
    for (let i = 1; i < ms.length; i++) expect(ms[i - 1]!, `event ${i} is newer than the one listed above it`).to.be.at.least(ms[i]!);
    await shot('events');
  });

  it('should open the USB web installer from the Hosts page with the LAN address, test it, and refuse http://127.0.0.1:8080', async () => {
    const key = setupKey();
    const jobs = new SetupJobs({
      workDir: path.join(work, 'setup'), log,
      buildIso: () => Promise.reject(new Error('no build in this test')), download: () => Promise.reject(new Error('no download in this test')),
      writeImage: () => Promise.reject(new Error('no USB in this test')),
    });
    setupServer = createServer(buildSetupApp({ log, jobs, ubuntuMirror: 'https://releases.ubuntu.com', key }));
    const setupPort = await listen(setupServer, 0, '127.0.0.1');
    await page.goto(base + '/hosts');
    await page.click('#host-install button[type=submit]');
    await page.waitForSelector('#setup-link');
    // the link names `skyhost setup`'s usual port; this test's installer listens on another, with its per-run key
    const link = new URL((await page.getAttribute('#setup-link', 'href'))!);
    link.port = String(setupPort);
    link.searchParams.set('key', key);
    await page.goto(link.href);
    await page.click('#role-agent');
    await page.waitForSelector('#options-form');
    expect(await page.inputValue('input[name=controllerUrl]')).to.equal(lanUrl);
    await page.click('#test-controller');
    await page.waitForSelector('#controller-check:not(:empty)', { timeout: 30_000 });
    const tested = (await page.textContent('#controller-check'))!;
    if (realLan) expect(tested).to.contain(`The controller at ${lanUrl} answers: SkyHost`);
    else expect(tested).to.contain(`No answer from ${lanUrl}`);
    await shot('installer-test');
    await page.fill('input[name=controllerUrl]', 'http://127.0.0.1:8080');
    await page.fill('input[name=password]', 'correct horse battery');
    await page.click('#options-next');
    await page.waitForSelector('#error-controllerUrl');
    expect(await page.textContent('#error-controllerUrl')).to.contain("http://127.0.0.1:8080 is this PC's own address");
    expect(await page.inputValue('input[name=controllerUrl]')).to.equal('http://127.0.0.1:8080');
    await shot('installer-loopback-refused');
  });

  it('should have logged no page errors', () => {
    // Chromium logs every 4xx answer: the installer's 422 above is expected.
    expect(missing, 'nothing the pages load is missing').to.deep.equal([]);
    expect(browser!.errors.filter((e) => !/status of 422/.test(e))).to.deep.equal([]);
  });
});
