// Headless Debian chromium through playwright-core, for every browser test: one chromium for the whole
// run (a launch costs seconds, paid once instead of per file), each launchBrowser() a fresh context of
// it (its own cookies, storage and cache, as a fresh profile had), closed on close(); signing in, and the
// first sign-in with a one-time password (the admin token, or one from a class import) that asks for a
// password of one's own.
//
//   const b = await launchBrowser();
//   try { const page = await b.newPage({ width: 375, height: 800 }); await page.goto(url); } finally { await b.close(); }
//   await firstLogin(page, base, 'admin', services.secrets.adminToken, 'teacher-pass-1');
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
];

export interface TestBrowser {
  context: BrowserContext;
  /** A new tab; `viewport` defaults to a desktop 1280x800. */
  newPage(viewport?: { width: number; height: number }): Promise<Page>;
  /** Page errors and console errors seen so far, for asserting a page ran cleanly. */
  errors: string[];
  close(): Promise<void>;
}

let shared: Promise<Browser> | undefined;

/** The run's chromium, launched at the first call (again after a failed launch, or if it went away). */
function sharedChromium(timeoutMs: number): Promise<Browser> {
  shared ??= chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: timeoutMs });
  const launching = shared;
  return launching.then((browser) => {
    if (browser.isConnected()) return browser;
    if (shared === launching) shared = undefined;
    return sharedChromium(timeoutMs);
  }, (err: unknown) => {
    if (shared === launching) shared = undefined;
    throw err;
  });
}

// Closed after the last test of the run (a root hook: this module is loaded while mocha reads the test
// files); playwright also kills it if the process exits first.
if (typeof after === 'function') {
  after(async () => {
    const running = await shared?.catch(() => undefined);
    shared = undefined;
    await running?.close();
  });
}

/** A fresh browser context (no cookies, storage or cache of any other) of the run's chromium. */
export async function launchBrowser(opts: { timeoutMs?: number } = {}): Promise<TestBrowser> {
  const browser = await sharedChromium(opts.timeoutMs ?? 30_000);
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(15_000);
  const errors: string[] = [];
  const watch = (page: Page) => {
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  };
  context.on('page', watch);
  return {
    context,
    errors,
    async newPage(viewport) {
      const page = await context.newPage();
      if (viewport) await page.setViewportSize(viewport);
      return page;
    },
    async close() {
      // a context already gone with its browser is closed: nothing else to do
      await context.close().catch((err: Error) => process.stderr.write(`browser context close: ${err.message}\n`));
    },
  };
}

/** Signs in as `name` on the login page of `base` (the cookies of whoever was signed in are cleared first); resolves once the page left /login. */
export async function login(page: Page, base: string, name: string, password: string): Promise<void> {
  await page.context().clearCookies();
  await page.goto(base + '/login');
  await page.fill('#login-name', name);
  await page.fill('#login-password', password);
  await page.click('#login-form button[type=submit]');
  await page.waitForURL((u) => !u.pathname.startsWith('/login'));
}

/**
 * A first sign-in: `name` with a one-time password, the page that asks for a password of one's own,
 * then `newPassword` typed twice; resolves on the dashboard. `onPasswordPage` runs on that page before
 * the new password is typed (an accessibility check, a mismatched try).
 */
export async function firstLogin(page: Page, base: string, name: string, oneTimePassword: string, newPassword: string,
  opts: { onPasswordPage?: () => Promise<void> } = {}): Promise<void> {
  await login(page, base, name, oneTimePassword);
  await page.waitForURL('**/account/password');
  await opts.onPasswordPage?.();
  await page.fill('#pw-new', newPassword);
  await page.fill('#pw-again', newPassword);
  await page.click('#password-form button[type=submit]');
  await page.waitForURL(base + '/');
}
