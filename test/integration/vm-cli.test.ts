// `skyhost vm ...` as a person or a script runs it: the CLI as a child process (node appliance/main.ts)
// against a real controller with a simulated host. Create (waiting until it runs), list as a table and
// as JSON, stop/start, the serial console (a line typed, its echo read back, Ctrl-] leaves), ssh with
// the VM's command, delete; a bad token or a missing one in one line with the right exit code; the
// token from the environment or the token file; HTTPS pinned to the controller's fingerprint.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb2lJ9Y5rG4lX0mN7V3w6b4T1x8k2Qe7vZc5pR1sYtU teacher@laptop';

describe('skyhost vm (the API client) against a controller', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-vmcli-'));
  const home = path.join(work, 'home');
  let controller: RunningController;
  let host: SimAgent;
  let token: string;

  /** Runs `skyhost ARGS` with a clean environment (no SKYHOST_* of the test run, HOME in the work folder). */
  function skyhost(args: string[], opts: { env?: Record<string, string>; input?: (child: ReturnType<typeof spawn>, out: () => string) => void; timeoutMs?: number } = {}): Promise<Ran> {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_CONFIG_HOME: path.join(home, '.config'), SKYHOST_LOG_LEVEL: 'warn', ...opts.env };
    const child = spawn(process.execPath, ['appliance/main.ts', ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { stdout += String(d); });
    child.stderr!.on('data', (d) => { stderr += String(d); });
    if (opts.input) opts.input(child, () => stdout);
    else child.stdin!.end();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`skyhost ${args.join(' ')} did not end: ${stdout.slice(-500)} ${stderr.slice(-500)}`));
      }, opts.timeoutMs ?? 60_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        // the streams may still hold the last bytes
        setImmediate(() => resolve({ code, stdout, stderr }));
      });
    });
  }

  const at = () => ['--controller', controller.url];

  before(async () => {
    configureLogging({ out: () => {} });
    controller = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', https: { port: 0 } });
    token = controller.services.secrets.adminToken;
    host = await new SimAgent({ hostId: 'lab-pc-1', hostname: 'lab-pc-1', port: await freePort() }).start();
    await host.enroll(controller.url, controller.services.secrets.joinToken);
    await controller.services.hosts.pollAll();
    mkdirSync(home, { recursive: true });
    writeFileSync(path.join(work, 'key.pub'), ED25519 + '\n');
  });

  after(async () => {
    await host?.stop();
    await controller?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('refuses a wrong token in one line, with the API\'s message and exit code 2', async () => {
    const r = await skyhost(['vm', 'list', ...at(), '--token', 'sha_not-a-real-token']);
    expect(r.code).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr.trim().split('\n'), r.stderr).to.have.length(1);
    expect(r.stderr).to.match(/^skyhost: controller http:\/\/127\.0\.0\.1:\d+: the API token is not valid \(the token comes from --token, SKYHOST_TOKEN or .*token\)\n$/);
  });

  it('says where a token comes from when none is given (exit code 2)', async () => {
    const r = await skyhost(['vm', 'list', ...at()]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.match(/^skyhost: no API token: give --token T, set SKYHOST_TOKEN, or put it in .*\/home\/\.config\/skyhost\/token/);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
  });

  it('refuses bad flags before calling anyone (exit code 2, one line)', async () => {
    for (const args of [['vm', 'create', ...at(), '--token', token], ['vm', 'create', ...at(), '--token', token, '--template', 'alpine', '--vcpus', 'many'], ['vm', 'list', '--bogus']]) {
      const r = await skyhost(args);
      expect(r.code, args.join(' ')).to.equal(2);
      expect(r.stderr.trim().split('\n'), r.stderr).to.have.length(1);
    }
  });

  it('creates a VM and waits until it runs, printing its SSH command', async () => {
    const r = await skyhost(['vm', 'create', ...at(), '--token', token, '--template', 'alpine', '--name', 'lesson-1', '--vcpus', '2', '--memory', '512', '--lease', '90', '--ssh-key', path.join(work, 'key.pub')]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^VM lesson-1 \([a-z0-9]+\) on lab-pc-1: running\n/);
    expect(r.stdout).to.match(/lease ends .* \((1 h 2\d|1 h 30) min left\)/);
    expect(r.stdout).to.match(/ssh: ssh -p \d+ \S+@127\.0\.0\.1/);
    const vm = [...host.vms.values()].find((v) => v.metadata.name === 'lesson-1');
    expect(vm?.state).to.equal('running');
    expect(vm?.metadata.vcpus).to.equal(2);
  });

  it('lists VMs as a table and as JSON, with the token from SKYHOST_TOKEN or the token file', async () => {
    const table = await skyhost(['vm', 'list', ...at()], { env: { SKYHOST_TOKEN: token } });
    expect(table.code, table.stderr).to.equal(0);
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).to.match(/^NAME\s+ID\s+STATE\s+OWNER\s+HOST\s+TEMPLATE\s+VCPUS\s+MIB\s+LEASE LEFT\s+SSH$/);
    expect(lines.find((l) => l.startsWith('lesson-1 '))).to.match(/lesson-1\s+[a-z0-9]+\s+running\s+admin\s+lab-pc-1\s+alpine\s+2\s+512\s+1 h \d+ min\s+ssh -p/);
    mkdirSync(path.join(home, '.config', 'skyhost'), { recursive: true });
    writeFileSync(path.join(home, '.config', 'skyhost', 'token'), token + '\n', { mode: 0o600 });
    try {
      const json = await skyhost(['vm', 'list', ...at(), '--json']);
      expect(json.code, json.stderr).to.equal(0);
      const vms = JSON.parse(json.stdout) as Array<{ name: string; state: string }>;
      expect(vms.map((v) => [v.name, v.state])).to.deep.equal([['lesson-1', 'running']]);
    } finally {
      rmSync(path.join(home, '.config'), { recursive: true, force: true });
    }
  });

  it('attaches to the serial console: a line typed comes back from the guest, Ctrl-] leaves', async () => {
    const r = await skyhost(['vm', 'console', 'lesson-1', ...at(), '--token', token], {
      input: (child, out) => {
        child.stdin!.write('echo hello-from-the-cli\n');
        const wait = setInterval(() => {
          // the guest's answer, not the echo of what was typed
          if (/(^|\n)hello-from-the-cli\r?\n/.test(out())) {
            clearInterval(wait);
            child.stdin!.write(Buffer.from([0x1d]));
          }
        }, 50);
        child.on('exit', () => clearInterval(wait));
      },
    });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/(^|\n)hello-from-the-cli\r?\n/);
    expect(r.stdout, 'the notices of the line are not printed as output').to.not.match(/\{"(history|console)"/);
    expect(r.stderr).to.include('connected to the serial console of lesson-1 (Ctrl-] leaves)');
    expect(r.stderr).to.include('left the console of lesson-1');
  });

  it('runs ssh with the VM\'s command as arguments, and ssh\'s exit code is the command\'s', async () => {
    // the simulated host forwards nothing: the real ssh client says it could not connect to that port
    const vm = [...host.vms.values()].find((v) => v.metadata.name === 'lesson-1')!;
    const r = await skyhost(['vm', 'ssh', 'lesson-1', ...at(), '--token', token, '--', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', 'true']);
    expect(r.code).to.equal(255);
    expect(r.stderr).to.match(new RegExp(`port ${vm.metadata.sshPort}`));
  });

  it('stops and starts a VM by name, and says which VM is unknown', async () => {
    const stop = await skyhost(['vm', 'stop', 'lesson-1', '--force', ...at(), '--token', token]);
    expect(stop.code, stop.stderr).to.equal(0);
    expect(stop.stdout).to.match(/^VM lesson-1 \([a-z0-9]+\): shutoff\n$/);
    const start = await skyhost(['vm', 'start', 'lesson-1', ...at(), '--token', token]);
    expect(start.stdout).to.match(/: running\n$/);
    const none = await skyhost(['vm', 'start', 'no-such-vm', ...at(), '--token', token]);
    expect(none.code).to.equal(2);
    expect(none.stderr).to.equal('skyhost: no VM named or with id "no-such-vm" that you may see (skyhost vm list shows them)\n');
  });

  it('talks HTTPS pinned to the controller\'s fingerprint, and refuses another certificate', async () => {
    const pinned = await skyhost(['vm', 'list', '--controller', controller.httpsUrl!, '--controller-fingerprint', controller.fingerprint, '--token', token, '--json']);
    expect(pinned.code, pinned.stderr).to.equal(0);
    expect((JSON.parse(pinned.stdout) as unknown[]).length).to.equal(1);
    const wrong = await skyhost(['vm', 'list', '--controller', controller.httpsUrl!, '--controller-fingerprint', 'ab'.repeat(32), '--token', token]);
    expect(wrong.code).to.equal(1);
    expect(wrong.stderr).to.match(/^skyhost: .*certificate/);
    expect(wrong.stderr.trim().split('\n')).to.have.length(1);
    const unpinned = await skyhost(['vm', 'list', '--controller', controller.httpsUrl!, '--token', token]);
    expect(unpinned.code).to.equal(1);
    expect(unpinned.stderr.trim().split('\n')).to.have.length(1);
    expect(wrong.stderr).to.match(/is not the pinned one/);
    expect(unpinned.stderr).to.match(/not signed by a CA this machine trusts \(self-signed certificate\); give --controller-fingerprint/);
  });

  it('checks HTTPS with this machine\'s CAs when no fingerprint is given: a school\'s certificate from a trusted CA passes', async () => {
    const dir = path.join(work, 'school');
    mkdirSync(dir);
    const f = (n: string) => path.join(dir, n);
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=Test School CA']);
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('site.key'), '-out', f('site.csr'), '-subj', '/CN=localhost']);
    writeFileSync(f('ext'), 'subjectAltName=DNS:localhost\n');
    await run('openssl', ['x509', '-req', '-in', f('site.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('site.pem'), '-days', '2', '-extfile', f('ext')]);
    const school = await startController({
      dataDir: f('controller'), log: logger('school'), port: 0, listen: '127.0.0.1',
      https: { port: 0, school: { cert: readFileSync(f('site.pem'), 'utf8'), key: readFileSync(f('site.key'), 'utf8') } },
    });
    try {
      const url = `https://localhost:${school.httpsPort}`;
      const args = ['vm', 'list', '--controller', url, '--token', school.services.secrets.adminToken];
      // SSL_CERT_FILE stands for this machine's CA store (OpenSSL's default file)
      const trusted = await skyhost(args, { env: { SSL_CERT_FILE: f('ca.pem') } });
      expect(trusted.code, trusted.stderr).to.equal(0);
      expect(trusted.stdout).to.match(/^no VMs/);
      const untrusted = await skyhost(args);
      expect(untrusted.code).to.equal(1);
      expect(untrusted.stderr).to.match(/not signed by a CA this machine trusts \(unable to (get local issuer certificate|verify the first certificate)\)/);
    } finally {
      await school.stop();
    }
  });

  it('deletes a VM', async () => {
    const r = await skyhost(['vm', 'delete', 'lesson-1', ...at(), '--token', token]);
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^deleted VM lesson-1 \([a-z0-9]+\)\n$/);
    expect([...host.vms.values()].some((v) => v.metadata.name === 'lesson-1')).to.equal(false);
    const list = await skyhost(['vm', 'list', ...at(), '--token', token]);
    expect(list.stdout).to.match(/^no VMs/);
  });
});
