// The console tells the truth, in headless chromium against a real VM (the busybox test guest under
// TCG, real libvirt, a controller and a real agent: test/support/real-pair.ts). Reopened, it replays
// the guest's old output and types nothing back into the guest (no answer to an old ESC[6n); after
// Reboot the status goes rebooting -> connected by itself and a command typed then prints exactly its
// output; after Shut down it says stopped, and after Start it is connected again by itself.
import { expect } from 'chai';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { firstLogin, launchBrowser, type TestBrowser } from '../support/browser.ts';
import { buildTestGuest, ConsoleSession, GUEST_PROMPT } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

const SHOTS = path.resolve(import.meta.dirname, '../../.cache/screenshots');

describe('the VM page\'s console tells the truth (real VM, chromium)', function () {
  this.timeout(300_000);
  let pair: RealPair;
  let browser: TestBrowser | undefined;
  let page: Page;
  let vmId: string;
  /** Every status the page showed, in order (recorded in the page: htmx swaps and notices come fast). */
  const shown = async () => page.evaluate<string[]>('window.__states');

  before(async function () {
    this.timeout(240_000);
    const guest = await buildTestGuest();
    pair = await startRealPair({
      name: 'console-truth', sshPortRange: '42300-42349', waitForTemplate: 'guest',
      templates: async (agent) => {
        await agent.templates.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
      },
    });
    const created = await pair.api('POST', '/api/vms', { template: 'guest', name: 'truth', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    vmId = created.json.id as string;
    await waitFor('the VM to run', async () => (await pair.api('GET', `/api/vms/${vmId}`)).json.state === 'running', 90_000);
    // The guest prints a cursor-position query into its console's history, with no terminal to answer it.
    const session = await ConsoleSession.open(pair.ctl.url, `/api/vms/${vmId}/console`, pair.ctl.services.secrets.adminToken);
    try {
      expect(await session.run('printf "query:\\033[6n:end\\n"', 120_000)).to.include('query:');
    } finally {
      session.close();
    }
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on('dialog', (d) => void d.accept());
    mkdirSync(SHOTS, { recursive: true });
    await firstLogin(page, pair.ctl.url, 'admin', pair.ctl.services.secrets.adminToken, 'teacher-pass-1');
  });

  after(async function () {
    this.timeout(120_000);
    await browser?.close();
    await pair?.stop();
  });

  it('replays the history and types nothing back into the guest', async () => {
    // what the page sends on the console's WebSocket, byte for byte
    const sent: string[] = [];
    page.on('websocket', (ws) => ws.on('framesent', (f) => sent.push(typeof f.payload === 'string' ? f.payload : f.payload.toString('latin1'))));
    await page.goto(`${pair.ctl.url}/vms/${vmId}`);
    await page.evaluate(`(() => {
      window.__states = [];
      const el = document.getElementById('console-status');
      const note = () => { if (window.__states.at(-1) !== el.dataset.state) window.__states.push(el.dataset.state); };
      note();
      new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ['data-state'] });
    })()`);
    await page.waitForSelector('#console-status[data-state=connected]');
    await waitFor('the replayed history', async () => (await terminalLines(page)).some((l) => l.includes('query:')), 30_000, 200);
    await page.waitForTimeout(500);
    // xterm answers a cursor-position query with ESC[row;colR: none may go out for a replay
    expect(sent.filter((f) => /\x1b\[\d+;\d+R/.test(f)), 'terminal answers sent to the guest').to.deep.equal([]);
    // Had xterm's answer to the replayed ESC[6n (ESC[row;colR) reached the guest, its shell would say so.
    await runInTerminal(page, 'echo first');
    expect((await terminalLines(page)).join('\n')).not.to.match(/not found|\d+;\d+R/);
  });

  it('after Reboot goes rebooting -> connected by itself, and a command prints exactly its output', async () => {
    await page.click('#vm-detail button:has-text("Reboot")');
    await page.waitForSelector('#console-status[data-state=rebooting]', { timeout: 30_000 });
    await page.screenshot({ path: path.join(SHOTS, 'console-rebooting.png'), fullPage: true });
    await page.waitForSelector('#console-status[data-state=connected]', { timeout: 180_000 });
    expect((await shown()).slice(-2)).to.deep.equal(['rebooting', 'connected']);
    const out = await runInTerminal(page, 'echo ok');
    expect(out).to.deep.equal(['ok']);
    expect((await terminalLines(page)).join('\n')).not.to.match(/not found/);
    await page.screenshot({ path: path.join(SHOTS, 'console-after-reboot.png'), fullPage: true });
  });

  it('after Shut down says stopped', async () => {
    await page.click('#vm-detail button:has-text("Shut down")');
    await page.waitForSelector('#console-status[data-state=stopped]', { timeout: 90_000 });
    expect(await page.textContent('#console-status')).to.match(/stopped/);
    await page.screenshot({ path: path.join(SHOTS, 'console-stopped.png'), fullPage: true });
  });

  it('after Start reconnects by itself and the guest answers', async () => {
    await page.waitForSelector('#vm-detail button:has-text("Start")', { timeout: 30_000 });
    await page.click('#vm-detail button:has-text("Start")');
    await page.waitForSelector('#console-status[data-state=connected]', { timeout: 60_000 });
    // Start says reconnecting from the moment it is asked for (the agent announces it before libvirt
    // starts QEMU, so a retry of the line that gets there first cannot skip it), connected once the line is up.
    expect((await shown()).slice(-3)).to.deep.equal(['stopped', 'reconnecting', 'connected']);
    expect(await runInTerminal(page, 'echo again')).to.deep.equal(['again']);
    expect(browser!.errors.filter((e) => !e.includes('ERR_NETWORK_CHANGED'))).to.deep.equal([]);
  });
});

/** The terminal's lines as xterm holds them (scrollback included), trailing blanks trimmed. */
async function terminalLines(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(`(() => {
    const b = skyhostConsole.term.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    while (lines.length && lines.at(-1) === '') lines.pop();
    return lines;
  })()`);
}

/** Types `command` at a fresh prompt and answers the lines between the command and the next prompt. */
async function runInTerminal(page: Page, command: string): Promise<string[]> {
  await page.click('#terminal');
  await waitFor('the guest shell prompt', async () => {
    await page.keyboard.press('Enter');
    await page.waitForTimeout(300);
    return (await terminalLines(page)).at(-1) === GUEST_PROMPT.trim() || (await terminalLines(page)).at(-1) === GUEST_PROMPT;
  }, 60_000, 1000);
  const before = (await terminalLines(page)).length;
  await page.keyboard.type(command);
  await page.keyboard.press('Enter');
  // From the line that shows the command at a prompt: an Enter pressed above whose prompt a slow guest
  // echoed only after `before` was read puts one more empty prompt before it.
  let lines: string[] = [];
  await waitFor(`the output of ${command}`, async () => {
    const since = (await terminalLines(page)).slice(before - 1);
    const at = since.lastIndexOf(GUEST_PROMPT + command);
    lines = at < 0 ? [] : since.slice(at);
    return lines.length >= 2 && lines.at(-1)!.startsWith(GUEST_PROMPT.trim());
  }, 60_000, 200); // a TCG guest on a loaded machine
  // lines: the command line, its output, the next prompt
  return lines.slice(1, -1);
}
