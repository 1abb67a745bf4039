// The web installer's guard (appliance/setup/guard.ts) on a real server on loopback: a Host that is not
// this machine (DNS rebinding), an Origin that is not the installer itself, a missing or wrong per-run
// key: each refused with a 403 and one plain line, and no build started. The same request from the
// teacher's browser (loopback Host, own Origin, the key's cookie) starts one.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { close, listen } from '../../base/http.ts';
import { logger } from '../../base/log.ts';
import { buildSetupApp } from '../../appliance/setup/app.ts';
import { OPEN_PRINTED, setupKey, setupUrl } from '../../appliance/setup/guard.ts';
import { SetupJobs } from '../../appliance/setup/jobs.ts';
import type { InstallerOptionsInput } from '../../autoinstall/index.ts';
import type { IsoSource } from '../../appliance/setup/plan.ts';

/** The real jobs, counting the builds started; the build itself is not this test's subject. */
class CountingJobs extends SetupJobs {
  started = 0;
  override start(options: InstallerOptionsInput, source: IsoSource, outFile?: string) {
    this.started++;
    return super.start(options, source, outFile);
  }
}

interface Answer { status: number; body: string; headers: Record<string, string | string[] | undefined> }

describe('web installer guard (Host, Origin, per-run key)', () => {
  let dir: string;
  let server: Server;
  let port: number;
  let jobs: CountingJobs;
  let isoFile: string;
  const key = setupKey();
  let cookie: string;
  let self: string;

  /** Raw HTTP, so that any Host header can be sent (fetch would fix it). */
  const send = (method: string, pathname: string, headers: Record<string, string>, body?: string) =>
    new Promise<Answer>((resolve, reject) => {
      const all: Record<string, string> = { Host: `127.0.0.1:${port}`, ...headers };
      if (!all.Host) delete all.Host; // sent with no Host line at all
      const req = request({ host: '127.0.0.1', port, method, path: pathname, headers: all, setHost: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const buildForm = () => new URLSearchParams({ plan: JSON.stringify({ role: 'controller' }), source: 'path', isoPath: isoFile }).toString();
  const postBuild = (headers: Record<string, string>) =>
    send('POST', '/build', { 'Content-Type': 'application/x-www-form-urlencoded', ...headers }, buildForm());

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-setup-guard-'));
    isoFile = path.join(dir, 'ubuntu.iso');
    writeFileSync(isoFile, 'not read: the build is not started by these tests, or fails at once');
    const log = logger('setup-guard-test');
    const never = () => new Promise<never>(() => undefined); // a build that never ends: nothing to clean up or log
    jobs = new CountingJobs({ buildIso: never, download: never, writeImage: never, workDir: path.join(dir, 'work'), log });
    server = createServer(buildSetupApp({ log, jobs, ubuntuMirror: 'https://releases.ubuntu.com', key }));
    port = await listen(server, 0, '127.0.0.1');
    self = `http://127.0.0.1:${port}`;
    cookie = `skyhost-setup-${port}=${key}`;
  });
  after(async () => {
    if (server) await close(server);
    rmSync(dir, { recursive: true, force: true });
  });

  const refused = (r: Answer, words: string | RegExp) => {
    expect(r.status).to.equal(403);
    expect(r.headers['content-type']).to.match(/^text\/plain/);
    expect(r.body.trim().split('\n')).to.have.length(1);
    if (typeof words === 'string') expect(r.body).to.contain(words);
    else expect(r.body).to.match(words);
    expect(r.headers['set-cookie']).to.equal(undefined);
    expect(jobs.started).to.equal(0);
  };

  describe('given a Host that is not this computer at this port', () => {
    for (const host of ['evil.example', '127.0.0.1.evil.example', 'localhost.evil.example', '192.168.1.20', '10.0.0.5', 'localhost']) {
      it(`should refuse Host ${host} even with the key, the cookie and its own Origin`, async () => {
        const h = host === 'localhost' ? `localhost:${port + 1}` : `${host}:${port}`;
        refused(await send('GET', `/?key=${key}`, { Host: h }), OPEN_PRINTED);
        refused(await postBuild({ Host: h, Origin: `http://${h}`, Cookie: cookie }), OPEN_PRINTED);
      });
    }
    it('should refuse a request without Host (Node answers 400 before the guard)', async () => {
      const r = await postBuild({ Host: '', Origin: self, Cookie: cookie });
      expect(r.status).to.be.oneOf([400, 403]);
      expect(jobs.started).to.equal(0);
    });
  });

  describe('given a state-changing request whose Origin is not the installer itself', () => {
    const origins: Array<[string, () => string]> = [
      ['null', () => 'null'],
      ['another site', () => 'http://evil.example'],
      ['another port of this computer', () => `http://127.0.0.1:${port + 1}`],
      ['https', () => `https://127.0.0.1:${port}`],
      ['another loopback name', () => `http://localhost:${port}`],
    ];
    for (const [what, origin] of origins) {
      it(`should refuse POST /build with Origin: ${what}`, async () => {
        refused(await postBuild({ Origin: origin(), Cookie: cookie }), 'sent from another web site');
      });
    }
    it('should refuse POST /build without Origin', async () => {
      refused(await postBuild({ Cookie: cookie }), 'without its Origin');
    });
    it('should refuse a job poll fetched by another origin', async () => {
      refused(await send('GET', '/jobs/0123456789abcdef', { Origin: 'null', Cookie: cookie }), 'another web site');
    });
  });

  describe('given no key, or the wrong one', () => {
    it('should refuse the page without the key or its cookie', async () => {
      refused(await send('GET', '/', {}), OPEN_PRINTED);
      refused(await send('GET', '/setup.css', {}), OPEN_PRINTED);
      refused(await postBuild({ Origin: self }), OPEN_PRINTED);
    });
    it('should refuse a wrong key and a wrong cookie', async () => {
      refused(await send('GET', `/?key=${setupKey()}`, {}), `wrong key: ${OPEN_PRINTED}`);
      refused(await send('GET', '/', { Cookie: `skyhost-setup-${port}=${setupKey()}` }), OPEN_PRINTED);
      refused(await postBuild({ Origin: self, Cookie: `skyhost-setup-${port}=${key.slice(0, -1)}` }), OPEN_PRINTED);
      refused(await send('POST', `/build?key=${key}`, { Origin: self, 'Content-Type': 'application/x-www-form-urlencoded' }, buildForm()), 'wrong key');
    });
    it('should reload once, without showing anything, a link from another site (the Strict cookie comes with the reload)', async () => {
      const r = await send('GET', '/?controllerUrl=x', { 'Sec-Fetch-Mode': 'navigate', 'Sec-Fetch-Site': 'cross-site' });
      expect(r.status).to.equal(200);
      expect(r.body).to.contain('http-equiv="refresh"').and.not.contain('controller');
      refused(await send('GET', '/', { 'Sec-Fetch-Mode': 'navigate', 'Sec-Fetch-Site': 'same-origin' }), OPEN_PRINTED);
    });
  });

  describe('given the printed address', () => {
    it('should print a random base64url key of at least 128 bits', () => {
      expect(key).to.match(/^[A-Za-z0-9_-]{22,}$/);
      expect(setupKey()).to.not.equal(key);
      expect(setupUrl('127.0.0.1', 8090, key)).to.equal(`http://127.0.0.1:8090/?key=${key}`);
      expect(setupUrl('::1', 8090, key)).to.equal(`http://[::1]:8090/?key=${key}`);
    });
    it('should set a SameSite=Strict HttpOnly cookie and take the key out of the address', async () => {
      const r = await send('GET', `/?controllerUrl=http%3A%2F%2Fctl%3A8080&key=${key}`, {});
      expect(r.status).to.equal(303);
      expect(r.headers.location).to.equal('/?controllerUrl=http%3A%2F%2Fctl%3A8080');
      const set = String(r.headers['set-cookie']);
      expect(set).to.contain(`skyhost-setup-${port}=${key}`).and.contain('HttpOnly').and.contain('SameSite=Strict');
      expect(r.headers['referrer-policy']).to.equal('no-referrer');
      const page = await send('GET', '/', { Cookie: set.split(';')[0]! });
      expect(page.status).to.equal(200);
      expect(page.body).to.contain('Choose what to set up');
    });
    for (const host of ['127.0.0.1', 'localhost', '[::1]', '127.0.0.2']) {
      it(`should start a build from its own origin at ${host} with the cookie`, async () => {
        const before = jobs.started;
        const h = `${host}:${port}`;
        const r = await postBuild({ Host: h, Origin: `http://${h}`, Cookie: cookie });
        expect(r.status, r.body).to.equal(303);
        expect(r.headers.location).to.match(/^\/jobs\/[0-9a-f]{16}$/);
        expect(jobs.started).to.equal(before + 1);
        jobs.started = 0; // the refusals above and below expect none
      });
    }
  });
});
