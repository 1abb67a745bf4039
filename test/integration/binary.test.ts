// The built single executable: it runs from an empty folder with an empty environment, with no
// node_modules anywhere near it, and serves its embedded assets.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { checkoutRoot } from '../../base/assets.ts';
import { buildBinary } from '../../appliance/build.ts';
import { VERSION } from '../../base/version.ts';
import { freePort, waitForHttp } from '../support/net.ts';

const exec = promisify(execFile);

describe('the skyhost executable', function () {
  this.timeout(180_000);
  let dir: string;
  let binary: string;
  let child: ChildProcess | undefined;

  before(async () => {
    const built = path.join(checkoutRoot(), 'dist/skyhost');
    if (!existsSync(built)) await buildBinary({ quiet: true });
    // A copy in an empty folder far from the checkout: nothing to find in node_modules.
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bin-'));
    binary = path.join(dir, 'skyhost');
    copyFileSync(built, binary);
  });

  after(() => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the binary with an empty environment (like `env -i`) in the empty folder. */
  async function runBinary(args: string[]) {
    try {
      const r = await exec(binary, args, { cwd: dir, env: {}, timeout: 30_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const err = e as { code: number; stdout: string; stderr: string };
      return { code: err.code, stdout: err.stdout, stderr: err.stderr };
    }
  }

  it('should print its version under an empty environment', async () => {
    const r = await runBinary(['--version']);
    expect(r).to.include({ code: 0, stdout: `skyhost ${VERSION}\n` });
  });

  it('should be one stripped executable with Node 24 inside', async () => {
    const { stdout } = await exec('file', [binary]);
    expect(stdout).to.contain('ELF 64-bit').and.contain('stripped').and.not.contain('not stripped');
    const r = await runBinary(['--help']);
    expect(r.code).to.equal(0);
    expect(r.stdout).to.contain('host setup').and.contain('controller');
  });

  it('should exit 2 with one line naming the key of a bad config file', async () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'port: 8080\nprot: 1\n');
    const r = await runBinary(['controller', '--config', bad]);
    expect(r.code).to.equal(2);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.contain('"prot"');
  });

  it('should serve its embedded assets over HTTP', async () => {
    const port = await freePort();
    const config = path.join(dir, 'config.yaml');
    writeFileSync(config, `listen: 127.0.0.1\nadvertise: false\ndataDir: ${path.join(dir, 'data')}\n`);
    child = spawn(binary, ['controller', '--config', config, '--port', String(port)], { cwd: dir, env: {}, stdio: 'ignore' });
    await waitForHttp(`http://127.0.0.1:${port}/healthz`, 20_000);
    const htmx = await fetch(`http://127.0.0.1:${port}/static/vendor/htmx.min.js`);
    expect(htmx.status).to.equal(200);
    expect(htmx.headers.get('content-type')).to.contain('javascript');
    const expected = readFileSync(path.join(checkoutRoot(), 'node_modules/htmx.org/dist/htmx.min.js'));
    expect(Buffer.from(await htmx.arrayBuffer()).equals(expected)).to.equal(true);
    const css = await fetch(`http://127.0.0.1:${port}/static/skyhost.css`);
    expect(css.status).to.equal(200);
    expect(await css.text()).to.contain('SkyHost');
    const missing = await fetch(`http://127.0.0.1:${port}/static/../package.json`);
    expect(missing.status).to.equal(404);
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).to.equal(0);
    child = undefined;
  });
});
