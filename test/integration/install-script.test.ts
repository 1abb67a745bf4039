// The install script for real: rendered by the real controller (in-process, on loopback, with its
// join tokens), `sh -n`, then run in a throwaway root (SKYHOST_ROOT) where it downloads the real
// executable from that controller and runs its --version. Only apt-get is a stand-in (a recorder on PATH), so the test does not install
// packages on this machine; systemctl is the real one, used offline with --root.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import express, { type ErrorRequestHandler } from 'express';
import { toSkyError } from '../../base/errors.ts';
import { HOST_PACKAGES } from '../../host/hostsetup.ts';
import { close, jsonErrors, listen } from '../../base/http.ts';
import { addSink, configureLogging, logger, type LogRecord } from '../../base/log.ts';
import { VERSION } from '../../base/version.ts';
import { readJoinToken, startDiscovery } from '../../agent/discovery/index.ts';
import { hasCommand } from '../../base/exec.ts';
import { skyhostExecutable } from '../../base/executable.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { installRouter, renderInstallScript, shellQuote } from '../../server/install.ts';

const exec = promisify(execFile);
const GOOD = 'shj_good-token_0123456789';

async function sh(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await exec('sh', args, { env: { PATH: process.env.PATH!, ...env }, timeout: 120_000, maxBuffer: 1 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

function get(port: number, urlPath: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: urlPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), type: String(res.headers['content-type']) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('install script (/install.sh and /download/skyhost)', function () {
  this.timeout(120_000);
  let server: Server;
  let port: number;
  let dir: string;
  let binaryMissing = false;

  before(async function () {
    try {
      skyhostExecutable();
    } catch {
      binaryMissing = true;
    }
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-install-'));
    const app = express();
    app.use(installRouter({ checkJoinToken: (t) => (t === GOOD ? { ok: true } : { ok: false, message: 'join token expired at 2026-01-01' }) }));
    app.use(jsonErrors(logger('test')));
    server = createServer(app);
    port = await listen(server, 0, '127.0.0.1');
  });
  after(async () => {
    if (server) await close(server);
    rmSync(dir, { recursive: true, force: true });
  });

  describe('given quoting', () => {
    it('should single-quote any string so that sh reads it back unchanged', async () => {
      for (const s of ["it's", '$(touch /tmp/x)', '`id`', 'a\nb', "'; rm -rf / #", '']) {
        const r = await sh(['-c', `printf %s ${shellQuote(s)}`]);
        expect(r.stdout).to.equal(s);
      }
    });
    it('should refuse a token or URL that carries shell syntax instead of passing it through', () => {
      expect(() => renderInstallScript({ controllerUrl: 'http://c:8080', joinToken: "abc'; reboot; '12345" })).to.throw(/join token/);
      expect(() => renderInstallScript({ controllerUrl: 'http://c:8080/$(reboot)' })).to.throw(/controller URL/);
      expect(() => renderInstallScript({ controllerUrl: 'http://c:8080/?a=1' })).to.throw(/controller URL/);
    });
  });

  describe('given the real controller and a link with its join token', () => {
    let script: string;
    let controller: RunningController;
    let token: string;
    let cport: number;
    before(async () => {
      controller = await startController({ dataDir: path.join(dir, 'controller'), log: logger('install-test'), port: 0, listen: '127.0.0.1', poll: false, captureLogs: false });
      cport = controller.port;
      token = controller.services.joinTokens.clusterToken();
      const r = await get(cport, `/install.sh?token=${encodeURIComponent(token)}`);
      expect(r.status).to.equal(200);
      expect(r.type).to.match(/shellscript/);
      script = r.body;
    });
    after(async () => {
      await controller?.stop();
    });

    it('should refuse a revoked single-use token with a script that only explains', async () => {
      const issued = controller.services.joinTokens.issue({ label: 'room 12' });
      controller.services.joinTokens.revoke(issued.id, 'PC given away');
      const r = await get(cport, `/install.sh?token=${issued.token}`);
      expect(r.status).to.equal(403);
      expect(r.body).to.contain('revoked').and.contain('exit 1');
    });

    it('should carry the controller URL and the token, shell-quoted, and pass sh -n', async () => {
      expect(script).to.contain(`CONTROLLER_URL='http://127.0.0.1:${cport}'`);
      expect(script).to.contain(`JOIN_TOKEN='${token}'`);
      expect(script).to.contain(`PACKAGES='${HOST_PACKAGES.join(' ')}'`);
      const file = path.join(dir, 'syntax.sh');
      writeFileSync(file, script);
      const r = await sh(['-n', file]);
      expect(r.code, r.stderr).to.equal(0);
    });

    it('should install the packages, the downloaded executable and the unit into a throwaway root', async function () {
      if (binaryMissing) this.skip(); // needs dist/skyhost: npm test builds it first
      const root = path.join(dir, 'root');
      const stubs = path.join(dir, 'stubs');
      mkdirSync(root);
      mkdirSync(stubs);
      const aptLog = path.join(dir, 'apt.log');
      // The only stand-in: apt-get records its arguments instead of installing on this machine.
      writeFileSync(path.join(stubs, 'apt-get'), `#!/bin/sh\necho "$*" >> ${shellQuote(aptLog)}\n`);
      chmodSync(path.join(stubs, 'apt-get'), 0o755);
      // Exactly what a teacher types (the root prefix aside): curl piped into sh.
      const pipeline = ['-c', 'curl -fsSL "$1" | sh', 'sh', `http://127.0.0.1:${cport}/install.sh?token=${encodeURIComponent(token)}`];
      const env = { SKYHOST_ROOT: root, PATH: `${stubs}:${process.env.PATH}` };
      const r = await sh(pipeline, env);
      expect(r.code, r.stdout + r.stderr).to.equal(0);

      expect(readFileSync(aptLog, 'utf8').split('\n')).to.include.members(['update -q', `install -y -q ${HOST_PACKAGES.join(' ')}`]);
      const bin = path.join(root, 'usr/local/bin/skyhost');
      const version = await exec(bin, ['--version']);
      expect(version.stdout).to.match(/^skyhost \d+\.\d+\.\d+/);
      expect(readFileSync(bin).equals(readFileSync(skyhostExecutable()))).to.equal(true);

      // The token only in a file that only root reads; the unit (world-readable) runs the agent without it.
      const tokenFile = path.join(root, 'etc/skyhost/join-token');
      expect(readFileSync(tokenFile, 'utf8')).to.equal(token + '\n');
      expect(statSync(tokenFile).mode & 0o777).to.equal(0o600);
      expect(readdirSync(path.join(root, 'etc/skyhost'))).to.deep.equal(['join-token']);
      const unit = readFileSync(path.join(root, 'etc/systemd/system/skyhost-agent.service'), 'utf8');
      expect(unit).to.contain(`ExecStart=/usr/local/bin/skyhost agent --controller http://127.0.0.1:${cport}\n`);
      expect(unit).not.to.contain(token);
      expect(unit).to.contain('WantedBy=multi-user.target');
      if (await hasCommand('systemctl')) {
        const link = path.join(root, 'etc/systemd/system/multi-user.target.wants/skyhost-agent.service');
        expect(readlinkSync(link)).to.equal('/etc/systemd/system/skyhost-agent.service');
      }
      // No systemd is running here: the script says how to start the agent by hand.
      expect(r.stdout).to.contain('systemd is not running here').and.contain(`nohup /usr/local/bin/skyhost agent --controller http://127.0.0.1:${cport} >`);
      expect(r.stdout + r.stderr).not.to.contain(token);
      expect(readdirSync(path.join(root, 'usr/local/bin'))).to.deep.equal(['skyhost']);

      // A second run (an upgrade) replaces everything in place.
      const again = await sh(pipeline, env);
      expect(again.code, again.stdout + again.stderr).to.equal(0);
      expect(readdirSync(path.join(root, 'usr/local/bin'))).to.deep.equal(['skyhost']);
      expect(readdirSync(path.join(root, 'etc/skyhost'))).to.deep.equal(['join-token']);
      expect(statSync(tokenFile).mode & 0o777).to.equal(0o600);
    });

    it('should never put the token on a command line of anything the script runs (what `ps` shows)', async function () {
      if (binaryMissing) this.skip(); // needs dist/skyhost: npm test builds it first
      if (!(await hasCommand('strace'))) this.skip(); // strace records every program started, with its arguments
      const root = path.join(dir, 'root-ps');
      const stubs = path.join(dir, 'stubs-ps');
      mkdirSync(root);
      mkdirSync(stubs);
      writeFileSync(path.join(stubs, 'apt-get'), '#!/bin/sh\nexit 0\n');
      chmodSync(path.join(stubs, 'apt-get'), 0o755);
      const file = path.join(dir, 'install-ps.sh');
      writeFileSync(file, script);
      const trace = path.join(dir, 'execve.log');
      const r = await exec('strace', ['-f', '-qq', '-s', '4096', '-e', 'trace=execve', '-o', trace, 'sh', file], {
        env: { SKYHOST_ROOT: root, PATH: `${stubs}:${process.env.PATH}` }, timeout: 120_000, maxBuffer: 1 << 20,
      });
      expect(r.stdout + r.stderr).not.to.contain(token);
      const execs = readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes('execve('));
      expect(execs.length).to.be.greaterThan(5); // mkdir, curl, skyhost --version, mv, systemctl...
      expect(execs.filter((l) => l.includes(token))).to.deep.equal([]);
      expect(readFileSync(path.join(root, 'etc/skyhost/join-token'), 'utf8')).to.equal(token + '\n');
    });
  });

  describe('given an agent enrolling with the token from its file', () => {
    let controller: RunningController;
    before(async () => {
      controller = await startController({ dataDir: path.join(dir, 'controller-log'), log: logger('install-log-test'), port: 0, listen: '127.0.0.1', poll: false, captureLogs: false });
    });
    after(async () => {
      await controller?.stop();
    });

    it('should never write the token into a log line, accepted or refused, at debug level', async () => {
      const records: LogRecord[] = [];
      const removeSink = addSink((r) => records.push(r));
      configureLogging({ level: 'debug', out: () => {} });
      const enrollOnce = async (hostId: string, token: string, want: string) => {
        const tokenFile = path.join(dir, `${hostId}-join-token`);
        writeFileSync(tokenFile, token + '\n', { mode: 0o600 });
        const discovery = startDiscovery({
          hostId, hostname: hostId, agentKey: `key-${hostId}-0123456789abcdef`, version: VERSION, agentPort: 0,
          controllerUrl: controller.url, agentUrl: `http://127.0.0.1:9/${hostId}`, joinToken: readJoinToken(undefined, tokenFile),
          dataDir: path.join(dir, `agent-${hostId}`), log: logger('agent'), tickMs: 50,
        });
        try {
          // 30 s: an enrollment over loopback on a loaded machine (10 s was a quiet machine's bound)
          if (want === 'ready') return (await discovery.enrolled(30_000)).state;
          const end = Date.now() + 30_000;
          while (discovery.state().state !== want && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
          return discovery.state().state;
        } finally {
          await discovery.stop();
        }
      };
      const single = controller.services.joinTokens.issue({ label: 'log test' }).token;
      const cluster = controller.services.joinTokens.clusterToken();
      try {
        expect(await enrollOnce('h-log-1', single, 'ready')).to.equal('ready');
        expect(await enrollOnce('h-log-2', cluster, 'ready')).to.equal('ready');
        expect(await enrollOnce('h-log-3', single, 'refused')).to.equal('refused'); // used up by h-log-1
      } finally {
        configureLogging({ level: 'info', out: (line) => process.stderr.write(line + '\n') });
        removeSink();
      }
      const text = records.map((r) => JSON.stringify(r)).join('\n');
      expect(text).to.contain('h-log-3'); // the log did record the enrollments
      // shs_<12 hex id>_<secret>; the secret is base64url and may itself contain '_'
      const secret = single.slice('shs_'.length + 12 + 1);
      expect(secret).to.have.length.greaterThan(16);
      expect(text).not.to.contain(secret);
      expect(text).not.to.contain(cluster);
    });
  });

  describe('given a link without a token', () => {
    it('should make a script without a join token (the admin approves the host)', async () => {
      const r = await get(port, '/install.sh');
      expect(r.status).to.equal(200);
      expect(r.body).to.contain("JOIN_TOKEN=''").and.contain(`AGENT_ARGS='agent --controller http://127.0.0.1:${port}'`);
    });
    it('should leave no token file behind when it has no token', async function () {
      if (binaryMissing) this.skip();
      const root = path.join(dir, 'root-notoken');
      const stubs = path.join(dir, 'stubs-notoken');
      mkdirSync(root);
      mkdirSync(stubs);
      writeFileSync(path.join(stubs, 'apt-get'), '#!/bin/sh\nexit 0\n');
      chmodSync(path.join(stubs, 'apt-get'), 0o755);
      const r = await sh(['-c', 'curl -fsSL "$1" | sh', 'sh', `http://127.0.0.1:${port}/install.sh`], { SKYHOST_ROOT: root, PATH: `${stubs}:${process.env.PATH}` });
      expect(r.code, r.stdout + r.stderr).to.equal(0);
      expect(() => statSync(path.join(root, 'etc/skyhost/join-token'))).to.throw(/ENOENT/);
    });
  });

  describe('given a link with a token the controller does not accept', () => {
    it('should answer 403 with a script that only explains and exits 1', async () => {
      const r = await get(port, '/install.sh?token=shs_0123456789ab_nope');
      expect(r.status).to.equal(403);
      const file = path.join(dir, 'refused.sh');
      writeFileSync(file, r.body);
      const run = await sh([file]);
      expect(run.code).to.equal(1);
      expect(run.stderr).to.contain('not accepted: join token expired');
    });
    it('should answer 400 for a malformed token, never echoing it into the script', async () => {
      const r = await get(port, `/install.sh?token=${encodeURIComponent("x';reboot;'yyyyyy")}`);
      expect(r.status).to.equal(400);
      expect(r.body).not.to.contain('reboot');
    });
  });

  describe('given a hostile Host header', () => {
    it('should refuse to build a script from it', async () => {
      const r = await get(port, '/install.sh', { Host: "evil';reboot;'" });
      expect(r.status).to.equal(400);
      expect(r.body).not.to.contain('reboot;');
      expect((await sh(['-c', r.body])).code).to.equal(1);
    });
  });

  describe('given no executable to hand out', () => {
    it('should answer /download/skyhost with a clear 503', async () => {
      const app = express();
      app.use(installRouter({ binary: () => { throw new Error('no'); } }));
      // The same answer jsonErrors gives, without its error log line in the test output.
      app.use(((err, _req, res, _next) => void res.status(toSkyError(err).status).json(toSkyError(err).toBody())) as ErrorRequestHandler);
      const s = createServer(app);
      const p = await listen(s, 0, '127.0.0.1');
      try {
        const r = await get(p, '/download/skyhost');
        expect(r.status).to.equal(503);
        expect(JSON.parse(r.body).error.message).to.contain('npm run build');
      } finally {
        await close(s);
      }
    });
  });
});

