// The web installer with no network: a download that fails (the mirror's name is not found) keeps
// every option typed and offers the Ubuntu ISOs already on this PC; the build from one of them ends
// on a recap of what goes onto the stick; Erase is disabled with no drive to choose. Over HTTP
// against the real app (appliance/setup/app.ts) and the real downloader; the build is a stand-in.
import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { buildSetupApp } from '../../appliance/setup/app.ts';
import { downloadUbuntuIso } from '../../appliance/setup/download.ts';
import { setupKey } from '../../appliance/setup/guard.ts';
import { SetupJobs } from '../../appliance/setup/jobs.ts';
import { close, listen } from '../../base/http.ts';
import { logger } from '../../base/log.ts';

describe('web installer offline (appliance/setup)', function () {
  this.timeout(90_000); // a job on a loaded machine: jobPage waits up to 40 s
  const key = setupKey();
  let dir: string;
  let server: Server;
  let base: string;
  let iso: string;
  const plan = { role: 'agent', hostnamePrefix: 'lab', controllerUrl: 'http://10.0.0.5:8080', joinToken: 'shj_offline-token-0123456789' };
  const asBrowser = (p: string, init: RequestInit = {}) => fetch(base + p, {
    redirect: 'manual', ...init,
    headers: { Cookie: `skyhost-setup-${new URL(base).port}=${key}`, ...(init.method === 'POST' ? { Origin: base } : {}), 'HX-Request': 'true', ...(init.headers as Record<string, string>) },
  });

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-setup-offline-'));
    mkdirSync(path.join(dir, 'Downloads'));
    iso = path.join(dir, 'Downloads', 'ubuntu-24.04.1-live-server-amd64.iso');
    writeFileSync(iso, 'stand-in ISO');
    const log = logger('setup-offline');
    const jobs = new SetupJobs({
      download: downloadUbuntuIso,
      // the pages are under test, not the remaster: a stand-in build writes a small file at once
      buildIso: async (opts) => {
        writeFileSync(opts.out, 'stand-in installer');
        return { out: opts.out, seconds: 0, bytes: 18, release: '24.04', volumeId: 'Ubuntu-Server 24.04 LTS amd64', grubEntries: 1, files: [], warnings: [] };
      },
      writeImage: () => Promise.reject(new Error('no USB writing in this test')),
      workDir: path.join(dir, 'work'), log,
    });
    server = createServer(buildSetupApp({ log, jobs, ubuntuMirror: 'https://releases.ubuntu.com', key, isoFolders: [path.join(dir, 'Downloads')] }));
    base = `http://127.0.0.1:${await listen(server, 0, '127.0.0.1')}`;
  });

  after(async () => {
    if (server) await close(server);
    rmSync(dir, { recursive: true, force: true });
  });

  /** Polls a job's page until `done` says so (or 40 s have passed: a loaded machine, not 10 s of polls). */
  async function jobPage(jobPath: string, done: (html: string) => boolean): Promise<string> {
    let html = '';
    for (const end = Date.now() + 40_000; !done(html) && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 100));
      html = await (await asBrowser(jobPath)).text();
    }
    return html;
  }

  it('should keep every option after a download that fails, and offer the ISOs already on this PC', async () => {
    const started = await asBrowser('/build', {
      method: 'POST', headers: { 'HX-Request': '' },
      body: new URLSearchParams({ plan: JSON.stringify(plan), source: 'download', ubuntuMirror: 'http://skyhost-mirror.invalid', release: '24.04' }),
    });
    expect(started.status).to.equal(303);
    const jobPath = started.headers.get('location')!;
    const failed = await jobPage(jobPath, (h) => h.includes('did not work'));
    expect(failed).to.contain('The download did not work').and.match(/skyhost-mirror\.invalid\/24\.04\/SHA256SUMS: (ENOTFOUND|EAI_AGAIN)/);
    expect(failed).to.contain(`href="${jobPath}/iso"`);
    const again = await (await asBrowser(`${jobPath}/iso`)).text();
    expect(again).to.contain('id="iso-form"').and.contain('Every option you typed is kept');
    const kept = /name="plan" value="([^"]+)"/.exec(again)![1]!.replace(/&quot;/g, '"').replace(/&#x3D;/g, '=');
    expect(JSON.parse(kept)).to.deep.equal(plan);
    expect(again).to.contain(`<code>${iso}</code>`).and.contain(`name="isoChoice" value="${iso}"`);
    expect(again, 'the mirror typed is kept').to.contain('value="http://skyhost-mirror.invalid"');
  });

  it('should build from an ISO chosen in that list and recap role, controller, token (in part) and PC names', async () => {
    const built = await asBrowser('/build', {
      method: 'POST', headers: { 'HX-Request': '' },
      body: new URLSearchParams({ plan: JSON.stringify(plan), source: 'download', isoChoice: iso, ubuntuMirror: 'http://skyhost-mirror.invalid', release: '24.04' }),
    });
    expect(built.status).to.equal(303);
    const html = await jobPage(built.headers.get('location')!, (h) => h.includes('installer is ready'));
    const recap = /<table class="recap"[\s\S]*?<\/table>/.exec(html)![0];
    expect(recap).to.contain('<td>host node</td>').and.contain('http://10.0.0.5:8080').and.contain('lab-xxxxxx');
    expect(recap).to.contain('shj_o…6789').and.not.contain(plan.joinToken);
    expect(html, 'no drive to write: Erase is disabled').to.match(/<button type="submit" id="usb-write" disabled>/);
  });

  it('should refuse a loopback controller on the options step, naming the field', async () => {
    const r = await asBrowser('/options', { method: 'POST', body: new URLSearchParams({ role: 'agent', controllerUrl: 'http://127.0.0.1:8080', hostnamePrefix: 'lab' }) });
    expect(r.status).to.equal(422);
    const html = await r.text();
    expect(html).to.match(/<em class="error" id="error-controllerUrl">http:\/\/127\.0\.0\.1:8080 is this PC&#x27;s own address/);
    expect(html).to.contain('value="lab"');
  });

  it('should refuse a controller that does not answer from this PC, unless the teacher says it is not running yet', async () => {
    const form = { role: 'agent', controllerUrl: 'http://no-such-controller.invalid:8080', hostnamePrefix: 'lab', joinToken: plan.joinToken };
    const refused = await asBrowser('/options', { method: 'POST', body: new URLSearchParams(form) });
    expect(refused.status).to.equal(422);
    const html = await refused.text();
    expect(html).to.match(/<em class="error" id="error-controllerUrl">[^<]*no-such-controller\.invalid[^<]*not running yet/);
    expect(html).to.contain('id="controller-not-running"').and.contain('value="lab"').and.not.contain('id="iso-form"');
    const anyway = await asBrowser('/options', { method: 'POST', body: new URLSearchParams({ ...form, controllerNotRunning: 'yes' }) });
    expect(anyway.status).to.equal(200);
    expect(await anyway.text()).to.contain('id="iso-form"');
  });

  it('should go on to the ISO step when the controller answers from this PC', async () => {
    // a stand-in controller on this machine's first non-loopback address (loopback is refused as such)
    const lan = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    if (!lan) throw new Error('this test needs a non-loopback IPv4 address on this machine');
    const controller = createServer((_req, res) => res.end(JSON.stringify({ ok: true, version: '0.0.0-test', clusterId: '0123456789abcdef' })));
    const port = await listen(controller, 0, lan);
    try {
      const r = await asBrowser('/options', { method: 'POST', body: new URLSearchParams({ role: 'agent', controllerUrl: `http://${lan}:${port}`, hostnamePrefix: 'lab' }) });
      expect(r.status).to.equal(200);
      expect(await r.text()).to.contain('id="iso-form"');
    } finally {
      await close(controller);
    }
  });
});
