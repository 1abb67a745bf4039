// The hosts page's replacement requests and strangers in headless chromium: both sections show with
// labelled controls, Reject and Adopt work through htmx (CSRF header and all) without page errors, and
// the page fits a phone. Screenshots in .cache/screenshots.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Page } from 'playwright-core';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { launchBrowser, type TestBrowser } from '../support/browser.ts';
import { freePort, waitFor } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

const SHOTS = path.resolve(import.meta.dirname, '../../.cache/screenshots');

describe('hosts page: replacement requests and strangers in a browser', function () {
  this.timeout(90_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-e2e-hostreq-'));
  let ctl: RunningController;
  let agent: SimAgent;
  let browser: TestBrowser;
  let page: Page;
  let vmId: string;

  before(async () => {
    configureLogging({ out: () => {} });
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000 }); // the simulated agent's answer on a loaded machine; the stranger's port refuses at once
    await ctl.services.users.create({ name: 'teacher', password: 'teacher-pass-1', role: 'admin' });
    await ctl.services.users.create({ name: 'alice', password: 'alice-pass-1' });
    agent = await new SimAgent({ hostId: 'pc-7', hostname: 'lab-pc-7', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    ctl.services.hosts.enroll({ hostId: 'pc-7', hostname: 'lab-pc-7', agentUrl: agent.url, agentKey: agent.key, version: 'e2e', joinToken: ctl.services.secrets.joinToken });
    vmId = await agent.addVm({ name: 'left-behind', template: 'alpine' });
    await agent.stop();
    await agent.start(); // the agent takes the machine's VMs at its start
    await waitFor('the stranger reported', async () => {
      await ctl.services.hosts.pollAll();
      return ctl.services.vms.strangers(ctl.services.system).length === 1;
    }, 30_000);
    const refused = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: 'pc-7', hostname: 'lab-pc-7', agentUrl: 'http://127.0.0.1:9', agentKey: 'someone-elses-key-01', version: 'e2e' }),
    });
    expect(refused.status).to.equal(409);
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
    mkdirSync(SHOTS, { recursive: true });
    await page.goto(`${ctl.url}/login`);
    await page.fill('#login-name', 'teacher');
    await page.fill('#login-password', 'teacher-pass-1');
    await page.click('#login-form button[type=submit]');
    await page.waitForURL(`${ctl.url}/`);
  });

  after(async () => {
    await browser?.close();
    await ctl?.stop();
    await agent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows the replacement request side by side and the stranger with labelled controls, and fits a phone', async () => {
    await page.goto(`${ctl.url}/hosts`);
    const request = page.locator('#host-replacements .replacement');
    expect(await request.count()).to.equal(1);
    const cells = (await request.locator('table tr').allTextContents()).map((c) => c.trim());
    expect(cells.find((c) => c.startsWith('Agent URL'))).to.contain(agent.url).and.contain('http://127.0.0.1:9');
    expect(await page.getByLabel('Owner').count()).to.equal(1);
    expect(await page.getByLabel('Name', { exact: true }).inputValue()).to.equal('left-behind');
    await page.screenshot({ path: path.join(SHOTS, 'hosts-requests-desktop.png'), fullPage: true });
    await page.setViewportSize({ width: 375, height: 812 });
    await page.reload();
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    await page.screenshot({ path: path.join(SHOTS, 'hosts-requests-phone.png'), fullPage: true });
    expect(overflow, 'horizontal scroll on a phone').to.be.at.most(0);
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('rejects the request and adopts the stranger for a user through htmx', async () => {
    await page.goto(`${ctl.url}/hosts`);
    await page.click('#host-replacements button:has-text("Reject")');
    await page.waitForSelector('#host-replacements >> text=Rejected lab-pc-7');
    expect(ctl.services.hosts.replacements()).to.deep.equal([]);
    await page.selectOption(`#owner-${vmId}`, 'alice');
    await page.click(`#stranger-${vmId} button:has-text("Adopt")`);
    await page.waitForSelector('#host-strangers >> text=now belongs to alice');
    expect(ctl.services.vms.list(ctl.services.users.get('alice')!).map((v) => v.id)).to.deep.equal([vmId]);
    expect(browser.errors).to.deep.equal([]);
  });
});
