// The controller's pages in headless chromium against the real thing: a controller with its pages,
// a real agent on this machine (libvirt + QEMU under TCG) enrolled with the join token, and the test
// guest imported as a template. A teacher's first login, a student's VM request, the serial console
// (type a command, read its output, copy and paste), delete; screenshots on a desktop and a phone.
import { expect } from 'chai';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { defaults } from '../../base/config.ts';
import { logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { pageRouter } from '../../server/pages/index.ts';
import { firstLogin, launchBrowser, type TestBrowser } from '../support/browser.ts';
import { buildTestGuest, GUEST_PROMPT } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';

const SHOTS = path.resolve(import.meta.dirname, '../../.cache/screenshots');

describe('controller pages in a browser (real agent, real VM)', function () {
  this.timeout(240_000);
  const log = logger('e2e');
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-e2e-'));
  const hostId = 'e2e-controller-pages';
  let agent: RunningAgent | undefined;
  let controller: RunningController | undefined;
  let browser: TestBrowser | undefined;
  let page: Page;
  let base: string;
  const password = 'teacher-pass-1';

  before(async function () {
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    const guest = await buildTestGuest();
    // in the store before the agent starts: its first status lists them (the next sample is 5 s later)
    const store = new TemplateStore(path.join(work, 'agent'));
    await store.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox test guest', minMemoryMiB: 256 });
    await store.import({ name: 'guest-vnc', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox on a screen', minMemoryMiB: 256, console: 'vnc' });
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42000-42099' },
      log: log.child({ side: 'agent' }), hostId, port: 0, listen: '127.0.0.1', key: 'e2e-agent-key-0123456789',
    });
    for (const vm of agent.vms.list()) await agent.vms.delete(vm.id); // left by an earlier run that was killed
    controller = await startController({
      dataDir: path.join(work, 'controller'), log: log.child({ side: 'controller' }), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1,
      pages: (services) => pageRouter(services, { log }),
    });
    base = controller.url;
    const enrolled = await fetch(`${base}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: 'lab-pc-1', agentUrl: agent.url, agentKey: agent.key, joinToken: controller.services.joinTokens.clusterToken(), version: 'e2e' }),
    });
    expect(enrolled.status, await enrolled.clone().text()).to.be.oneOf([200, 201]);
    await waitFor('the host to report its template', () => controller!.services.templates.find('guest-vnc') !== undefined, 60_000, 250);
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
    mkdirSync(SHOTS, { recursive: true });
  });

  after(async function () {
    this.timeout(120_000);
    await browser?.close();
    // Teardown goes on past a failed step so that the rest is still removed; the test has reported already.
    await controller?.stop().catch(() => {});
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch(() => {});
      await agent.stop().catch(() => {});
    }
    await removeNetwork(networkName(hostId)).catch(() => {});
    rmSync(work, { recursive: true, force: true });
  });

  it('first login: admin with the admin token, then a new password', async () => {
    await page.goto(base + '/');
    expect(new URL(page.url()).pathname).to.equal('/login');
    await firstLogin(page, base, 'admin', controller!.services.secrets.adminToken, password);
    await page.waitForSelector('.tiles >> text=lab-pc-1');
    expect(await page.textContent('.tiles')).to.contain('ready');
  });

  it('the dashboard fits a phone (375 px) without horizontal scroll', async () => {
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-desktop.png'), fullPage: true });
    await page.setViewportSize({ width: 375, height: 812 });
    await page.reload();
    await page.waitForSelector('.tiles');
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    await page.screenshot({ path: path.join(SHOTS, 'dashboard-phone.png'), fullPage: true });
    expect(overflow).to.be.at.most(0);
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('a bad request keeps the input and says what is wrong; a good one starts a VM', async () => {
    await page.goto(base + '/vms');
    await page.fill('#vm-name', 'Bad Name!');
    await page.click('#vm-form button[type=submit]');
    await page.waitForSelector('#vm-form .field-error');
    expect(await page.inputValue('#vm-name')).to.equal('Bad Name!');
    await page.fill('#vm-name', 'e2e-vm');
    await page.selectOption('#vm-template', 'guest');
    await page.click('#vm-form button[type=submit]');
    await page.waitForSelector('#vm-form .flash.ok');
    await page.waitForSelector('#vm-list tr[data-state=running] >> text=e2e-vm', { timeout: 90_000 });
    await page.screenshot({ path: path.join(SHOTS, 'vms-desktop.png'), fullPage: true });
    await page.setViewportSize({ width: 375, height: 812 });
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    await page.screenshot({ path: path.join(SHOTS, 'vms-phone.png'), fullPage: true });
    expect(overflow).to.be.at.most(0);
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('the console runs a command and shows its output; paste reaches the VM', async () => {
    await page.click('#vm-list tr:has-text("e2e-vm") a:has-text("Console")');
    await page.waitForURL(/\/vms\/[a-z0-9]+$/);
    await page.waitForSelector('#console-status.open');
    await page.click('#terminal');
    // The guest may still be booting: wait for its prompt.
    await waitFor('the guest shell prompt', async () => {
      await page.keyboard.press('Enter');
      return (await terminalText(page)).includes(GUEST_PROMPT.trim());
    }, 90_000, 500);
    await page.keyboard.type('echo sky-$((6*7))');
    await page.keyboard.press('Enter');
    await waitFor('the command output', async () => (await terminalText(page)).includes('sky-42'), 60_000, 250); // a TCG guest on a loaded machine
    // Paste: the browser's paste event on the terminal sends the text to the VM.
    await page.evaluate(`(() => {
      const data = new DataTransfer();
      data.setData('text/plain', 'echo pasted-$((40+2))\\r');
      document.querySelector('#terminal textarea').dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }));
    })()`);
    await waitFor('the pasted command output', async () => (await terminalText(page)).includes('pasted-42'), 60_000, 250);
    await page.screenshot({ path: path.join(SHOTS, 'vm-console.png'), fullPage: true });
    // Copy: the selection is what the terminal shows.
    const selected = await page.evaluate<string>('(() => { skyhostConsole.term.selectAll(); return skyhostConsole.copySelection(); })()');
    expect(selected).to.contain('sky-42');
    // The 422 is the bad request above; ERR_NETWORK_CHANGED is chromium seeing the VMs' tap devices come and go.
    expect(browser!.errors.filter((e) => !e.includes('status of 422') && !e.includes('ERR_NETWORK_CHANGED'))).to.deep.equal([]);
  });

  it('delete asks, then the VM is gone from the list and from libvirt', async () => {
    await page.goto(base + '/vms');
    await page.click('#vm-list tr:has-text("e2e-vm") button:has-text("Delete")');
    await page.waitForSelector('#vm-list >> text=e2e-vm', { state: 'detached', timeout: 60_000 });
    expect(agent!.vms.list()).to.deep.equal([]);
  });

  it('a graphical template opens noVNC on the VM page; delete there goes back to the list', async () => {
    await page.goto(base + '/vms');
    await page.selectOption('#vm-template', 'guest-vnc');
    await page.fill('#vm-name', 'e2e-screen');
    await page.click('#vm-form button[type=submit]');
    await page.waitForSelector('#vm-list tr[data-state=running] >> text=e2e-screen', { timeout: 90_000 });
    await page.click('#vm-list tr:has-text("e2e-screen") a:has-text("Console")');
    await page.waitForSelector('#vnc-status.open', { timeout: 30_000 }).catch(async (e: Error) => {
      throw new Error(`${e.message}\nnoVNC status: ${await page.textContent('#vnc-status')}; browser errors: ${browser!.errors.join(' | ')}`);
    });
    await page.waitForSelector('#vnc canvas');
    await page.waitForTimeout(3000);
    await page.screenshot({ path: path.join(SHOTS, 'vm-vnc.png'), fullPage: true });
    await page.click('#vm-detail button:has-text("Delete")');
    await page.waitForURL(base + '/vms');
    await page.waitForSelector('#vm-list >> text=e2e-screen', { state: 'detached', timeout: 60_000 });
    expect(agent!.vms.list()).to.deep.equal([]);
  });

  it('the admin drains and undrains a host, the events page tails the log live, logout ends the session', async () => {
    await page.goto(base + '/hosts');
    // A refused request (a wrong CSRF token: the JSON side answers) shows its message and swaps nothing.
    await page.evaluate(`document.body.setAttribute('hx-headers', '{"X-CSRF-Token": "wrong"}')`);
    await page.click('#host-list button:has-text("Drain")');
    await page.waitForSelector('#flash >> text=CSRF');
    expect(await page.textContent('#host-list')).to.contain('ready');
    browser!.errors.length = 0;
    await page.reload();
    await page.click('#host-list button:has-text("Drain")');
    await page.waitForSelector('#host-list .badge.draining');
    await page.click('#host-list button:has-text("Undrain")');
    await page.waitForSelector('#host-list .badge.ready');
    // "Add a host" hands out a single-use token by default (htmx swaps the command in).
    await page.click('#host-install button:has-text("Make the install command")');
    await page.waitForSelector('#install-cmd');
    expect(await page.textContent('#install-cmd')).to.match(new RegExp(`^curl -fsSL '${base.replaceAll('.', '\\.')}/install\\.sh\\?token=shs_[0-9a-f]{12}_[\\w-]+' \\| sudo sh$`));
    await page.goto(base + '/admin/events');
    controller!.services.events.record({ source: 'e2e', level: 'warn', msg: 'a live event from the test' });
    await page.waitForSelector('#event-log >> text=a live event from the test', { timeout: 30_000 });
    await page.selectOption('#ev-level', 'error');
    await page.waitForSelector('#event-log >> text=a live event from the test', { state: 'detached' });
    expect(page.url()).to.contain('level=error');
    expect(browser!.errors.filter((e) => /Content Security Policy/i.test(e)), 'CSP violations').to.deep.equal([]);
    await page.click('header button:has-text("Log out")');
    await page.waitForURL('**/login');
    await page.goto(base + '/vms');
    expect(new URL(page.url()).pathname).to.equal('/login');
  });
});

async function terminalText(page: Page): Promise<string> {
  return (await page.textContent('#terminal .xterm-rows').catch(() => '')) ?? '';
}

