// A real operating system end to end: the debian-12 template (`skyhost template build debian-12`'s
// recipe, cached per machine) on a real agent (libvirt + QEMU under TCG), requested through the
// controller with an SSH key and a startup script. The serial console shows a login prompt,
// cloud-init names the VM, and a real OpenSSH client logs in through the agent's forwarded port.
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { run } from '../../base/exec.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { buildDebianImage, type DebianImage } from '../support/debian-image.ts';
import { ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';

const MARKER = 'skyhost-startup-ran';

describe('debian-12 template: a real OS through the controller (TCG)', function () {
  // under TCG a Debian boot takes a minute or two on an idle 2-core PC, and many more when the machine is
  // busy: every wait below is bounded, generously
  this.timeout(1_800_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-debian-'));
  const hostId = `debian-${process.pid}`;
  let agent: RunningAgent | undefined;
  let ctl: RunningController | undefined;
  let token: string;
  let image: DebianImage;

  const api = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(ctl!.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  before(async function () {
    // a cold build (no cache on this machine yet) downloads and installs the packages: minutes
    this.timeout(1_800_000);
    image = await buildDebianImage();
    configureLogging({ out: () => {} });
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42400-42499' },
      log: logger('agent'), hostId, port: 0, listen: '127.0.0.1', key: 'debian-real-agent-key-0123456789',
    });
    await agent.templates.import({
      name: 'debian-12', kernel: image.kernel, initrd: image.initrd, disk: image.disk, cmdline: image.cmdline,
      os: 'debian', minMemoryMiB: image.recipe.minMemoryMiB,
    });
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1 });
    token = ctl.services.secrets.adminToken;
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: 'lab-pc-debian', agentUrl: agent.url, agentKey: agent.key, joinToken: ctl.services.secrets.joinToken, version: 'test' }),
    });
    expect(enrolled.status).to.equal(200);
    await waitFor('the host to report its template', () => ctl!.services.templates.find('debian-12') !== undefined, 20_000);
  });

  after(async function () {
    this.timeout(120_000);
    await ctl?.stop().catch((err: Error) => process.stderr.write(`controller stop: ${err.message}\n`));
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch((err: Error) => process.stderr.write(`delete ${vm.id}: ${err.message}\n`));
      await agent.stop().catch((err: Error) => process.stderr.write(`agent stop: ${err.message}\n`));
    }
    await removeNetwork(networkName(hostId));
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('boots to a login prompt, takes the hostname, the SSH key and the startup script from cloud-init', async () => {
    const keyFile = path.join(work, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'student@lab', '-f', keyFile]);
    const started = Date.now();
    const created = await api('POST', '/api/vms', {
      template: 'debian-12', name: 'deb-student', memoryMiB: 512,
      sshKey: readFileSync(`${keyFile}.pub`, 'utf8').trim(),
      userData: `#cloud-config\nruncmd:\n  - [sh, -c, "echo ${MARKER} > /var/tmp/marker"]\n`,
    });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const id = created.json.id as string;
    const vm = await waitFor('the VM to run', async () => {
      const v = (await api('GET', `/api/vms/${id}`)).json;
      return v.state === 'running' && v.ssh ? v : undefined;
    }, 60_000);

    const session = await ConsoleSession.open(ctl!.url, `/api/vms/${id}/console`, token);
    try {
      await session.waitFor(/ login: /, 900_000);
    } finally {
      session.close();
    }
    const consoleMs = Date.now() - started;

    // cloud-init's last stage runs the startup script: retry until the login and the marker are both there
    const ssh = async () => run('ssh', [
      '-i', keyFile, '-p', String(vm.ssh.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR',
      'debian@127.0.0.1', 'hostname; cat /var/tmp/marker',
    ], { timeout: 30_000 });
    let last = '';
    const out = await waitFor('an SSH login that finds the marker', async () => {
      try {
        const r = await ssh();
        return r.stdout.includes(MARKER) ? r.stdout : undefined;
      } catch (err) {
        last = (err as Error).message.split('\n').slice(-2).join(' ');
        return undefined;
      }
    }, 600_000, 3000).catch((err: Error) => {
      throw new Error(`${err.message}; last ssh error: ${last}`);
    });
    expect(out.split('\n')[0]).to.equal('deb-student');
    process.stderr.write(`      debian-12 under TCG: login prompt after ${consoleMs} ms, SSH with the marker after ${Date.now() - started} ms\n`);

    expect((await api('DELETE', `/api/vms/${id}`)).status).to.equal(204);
  });
});
