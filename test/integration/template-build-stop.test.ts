// `skyhost template build debian-12` stopped by SIGTERM (the controller's cancel) or SIGINT (Ctrl-C) while
// the real mmdebstrap runs: the command stops mmdebstrap and waits for it, removes its work folder in
// the build cache (with mmdebstrap's temporary folders, which it puts there), leaves no process behind,
// and ends with 143/130 and one line saying it was stopped. The controller's cancel of a cold build (the
// built executable, dist/skyhost) leaves nothing either. A cache folder of its own (XDG_CACHE_HOME),
// so that the machine's cache and a build running there are left alone. Needs root, as the build does.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { TemplateBuilds } from '../../server/templates/builds.ts';
import { Catalog } from '../../server/templates/catalog.ts';
import { waitFor } from '../support/net.ts';

interface Stopped {
  code: number | null;
  stdout: string;
  stderr: string;
  /** mmdebstrap's own temporary folder (`I: using DIR as tempdir`). */
  tempdir: string;
  /** What the work folder's tmp held when the signal was sent. */
  tmpHeld: string[];
}

describe('template build debian-12: stopped by a signal, it keeps nothing', function () {
  this.timeout(300_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-build-stop-'));
  const cache = path.join(work, 'cache');
  const templates = path.join(cache, 'skyhost', 'templates');

  after(() => rmSync(work, { recursive: true, force: true }));

  /** Starts a real build, sends `sig` a few seconds after mmdebstrap has made its root folder, and waits for the end. */
  function buildAndStop(sig: NodeJS.Signals): Promise<Stopped> {
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: work, XDG_CACHE_HOME: cache, SKYHOST_LOG_FORMAT: 'json' };
    const child = spawn(process.execPath, ['appliance/main.ts', 'template', 'build', 'debian-12', '--data', path.join(work, 'data'), '--log-level', 'debug'],
      { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let tempdir = '';
    let tmpHeld: string[] = [];
    child.stdout.on('data', (d) => { stdout += String(d); });
    child.stderr.on('data', (d) => {
      stderr += String(d);
      const m = /"line":"I: using (\S+) as tempdir"/.exec(stderr);
      if (m && !tempdir) {
        tempdir = m[1]!;
        // apt is at work by then (its lists, the first packages)
        setTimeout(() => {
          tmpHeld = readdirSync(path.dirname(tempdir));
          child.kill(sig);
        }, 4000);
      }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the build did not end: ${stdout}\n${stderr.slice(-2000)}`)); }, 240_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr, tempdir, tmpHeld });
      });
    });
  }

  async function expectNothingLeft(ran: Stopped): Promise<void> {
    expect(ran.tempdir, `mmdebstrap never said where its root is:\n${ran.stderr.slice(-2000)}`).to.not.equal('');
    // mmdebstrap's root and gpg home were inside the build's work folder, not in the system's temp folder
    expect(path.dirname(path.dirname(ran.tempdir)).startsWith(path.join(templates, '.build-debian-bookworm-'))).to.equal(true);
    expect(ran.tmpHeld).to.include(path.basename(ran.tempdir));
    expect(ran.tmpHeld.some((n) => n.startsWith('mmdebstrap.gpghome.'))).to.equal(true);
    expect(existsSync(ran.tempdir)).to.equal(false);
    expect(readdirSync(templates)).to.deep.equal([]);
    // the package cache stays for the next build; the data folder has no template
    expect(readdirSync(path.join(cache, 'skyhost'))).to.have.members(['apt', 'templates']);
    expect(existsSync(path.join(work, 'data', 'templates', 'debian-12'))).to.equal(false);
    // no mmdebstrap (nor apt it started) of this build is running
    const ps = await run('pgrep', ['-f', templates], { okCodes: [1] });
    expect(ps.stdout).to.equal('');
  }

  it('on SIGTERM: stops mmdebstrap, removes the work folder with mmdebstrap\'s temporary folders, exits 143', async () => {
    const ran = await buildAndStop('SIGTERM');
    expect(ran.code, ran.stderr.slice(-2000)).to.equal(143);
    const said = ran.stderr.split('\n').filter((l) => l.startsWith('skyhost: '));
    expect(said).to.deep.equal(['skyhost: template build stopped by SIGTERM: its work folder was removed, nothing was kept']);
    await expectNothingLeft(ran);
  });

  it('on SIGINT (Ctrl-C): the same, exit 130', async () => {
    const ran = await buildAndStop('SIGINT');
    expect(ran.code, ran.stderr.slice(-2000)).to.equal(130);
    expect(ran.stderr).to.include('skyhost: template build stopped by SIGINT');
    await expectNothingLeft(ran);
  });

  it('a cold build cancelled through the controller while mmdebstrap runs: nothing in the build cache, cancel answers once it has ended', async () => {
    const data = path.join(work, 'controller');
    configureLogging({ out: () => {} });
    const before = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = cache; // the command inherits it: a build cache of the test's own
    try {
      const catalog = new Catalog(data, { log: logger('test') });
      const builds = new TemplateBuilds({ catalog, log: logger('test'), exists: () => false });
      const { build } = builds.start({ recipe: 'debian-12', name: 'deb-stop' }, 'tester');
      const tempdir = await waitFor('mmdebstrap to make its root folder', () => {
        const text = builds.get(build.id).lines.map((l) => l.text).join('\n');
        return /^I: using (\S+) as tempdir$/m.exec(text)?.[1];
      }, 120_000);
      await new Promise((r) => setTimeout(r, 4000));
      expect(readdirSync(templates)).to.have.length(1);
      const t0 = performance.now();
      const cancelled = await builds.cancel(build.id, 'tester');
      const ms = performance.now() - t0;
      expect(cancelled.state).to.equal('failed');
      expect(cancelled.error).to.deep.include({ code: 'cancelled' });
      // the command's own word, not the controller's SIGKILL
      expect(cancelled.lines.map((l) => l.text), cancelled.lines.map((l) => l.text).join('\n')).to.include('skyhost: template build stopped by SIGTERM: its work folder was removed, nothing was kept');
      expect(ms).to.be.below(30_000);
      expect(existsSync(tempdir)).to.equal(false);
      expect(readdirSync(templates)).to.deep.equal([]);
      expect(readdirSync(catalog.dir)).to.deep.equal([]);
      expect((await run('pgrep', ['-f', templates], { okCodes: [1] })).stdout).to.equal('');
    } finally {
      if (before === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = before;
      configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    }
  });
});
