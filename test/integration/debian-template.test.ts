// A real operating system end to end: the debian-12 template (`skyhost template build debian-12`'s
// recipe, cached per machine) on a real agent (libvirt + QEMU under TCG), requested through the
// controller with an SSH key and a startup script. The serial console shows a login prompt,
// cloud-init names the VM, and a real OpenSSH client logs in through the agent's forwarded port.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { buildDebianImage } from '../support/debian-image.ts';
import { ConsoleSession } from '../support/guest.ts';
import { waitFor } from '../support/net.ts';
import { startRealPair, type RealPair } from '../support/real-pair.ts';

const MARKER = 'skyhost-startup-ran';

describe('debian-12 template: a real OS through the controller (TCG)', function () {
  // under TCG a Debian boot takes a minute or two on an idle 2-core PC, and many more when the machine is
  // busy: every wait below is bounded, generously
  this.timeout(1_800_000);
  let pair: RealPair;
  const api: RealPair['api'] = (...args) => pair.api(...args);

  before(async function () {
    // a cold build (no cache on this machine yet) downloads and installs the packages: minutes
    this.timeout(1_800_000);
    const image = await buildDebianImage();
    pair = await startRealPair({
      name: 'debian', sshPortRange: '42400-42499', waitForTemplate: 'debian-12',
      templates: async (agent) => {
        await agent.templates.import({
          name: 'debian-12', kernel: image.kernel, initrd: image.initrd, disk: image.disk, cmdline: image.cmdline,
          os: 'debian', minMemoryMiB: image.recipe.minMemoryMiB,
        });
      },
    });
  });

  after(async function () {
    this.timeout(120_000);
    await pair?.stop();
  });

  it('boots to a login prompt, takes the hostname, the SSH key and the startup script from cloud-init', async () => {
    const keyFile = path.join(pair.work, 'id_ed25519');
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

    const session = await ConsoleSession.open(pair.ctl.url, `/api/vms/${id}/console`, pair.ctl.services.secrets.adminToken);
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
    }, 600_000, 1000).catch((err: Error) => {
      throw new Error(`${err.message}; last ssh error: ${last}`);
    });
    expect(out.split('\n')[0]).to.equal('deb-student');
    process.stderr.write(`      debian-12 under TCG: login prompt after ${consoleMs} ms, SSH with the marker after ${Date.now() - started} ms\n`);

    expect((await api('DELETE', `/api/vms/${id}`)).status).to.equal(204);
  });
});
