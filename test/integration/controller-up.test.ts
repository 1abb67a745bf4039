// `skyhost up` as a process: the controller and the local agent in one, one --data folder, the agent
// enrolled and polled at once, its log lines in the controller's event log, a clean stop on SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { freePort } from '../support/net.ts';

describe('skyhost up (controller + local agent, one process)', function () {
  this.timeout(90_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-up-'));
  let child: ChildProcess | undefined;
  let stderr = '';

  after(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('enrolls the local agent from the same --data folder and stops cleanly on SIGTERM', async () => {
    const [port, agentPort] = [await freePort(), await freePort()];
    const hostId = `up-test-${process.pid}`;
    child = spawn(process.execPath, ['appliance/main.ts', 'up', '--data', dir, '--port', String(port), '--agent-port', String(agentPort)], {
      env: { ...process.env, SKYHOST_LISTEN: '127.0.0.1', SKYHOST_ADVERTISE: 'false', SKYHOST_HOST_ID: hostId, SKYHOST_SSH_PORT_RANGE: '42300-42399', SKYHOST_LOG_FORMAT: 'json' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (d) => { stderr += String(d); });
    const base = `http://127.0.0.1:${port}`;
    let hosts: Array<{ id: string; state: string; url: string; hypervisor?: string }> = [];
    for (const end = Date.now() + 75_000; Date.now() < end && !(hosts[0]?.hypervisor);) { // the start of `up` on a loaded machine: not 30 s
      await new Promise((r) => setTimeout(r, 200));
      if (child.exitCode !== null) throw new Error(`skyhost up exited ${child.exitCode}: ${stderr.slice(-1000)}`);
      try {
        const token = readFileSync(path.join(dir, 'secrets', 'admin-token'), 'utf8').trim();
        hosts = ((await (await fetch(`${base}/api/hosts`, { headers: { authorization: `Bearer ${token}` } })).json()) as { hosts: typeof hosts }).hosts;
      } catch { /* not up yet */ }
    }
    expect(hosts.map((h) => [h.id, h.state, h.url])).to.deep.equal([[hostId, 'ready', `http://127.0.0.1:${agentPort}`]]);
    expect(hosts[0]!.hypervisor).to.be.oneOf(['kvm', 'tcg', 'none']);
    // one folder: the controller's secrets and the agent's key side by side
    for (const f of ['admin-token', 'join-token', 'agent-key']) expect(readFileSync(path.join(dir, 'secrets', f), 'utf8').trim()).to.not.equal('');
    const token = readFileSync(path.join(dir, 'secrets', 'admin-token'), 'utf8').trim();
    const events = ((await (await fetch(`${base}/api/events?source=agent&limit=10`, { headers: { authorization: `Bearer ${token}` } })).json()) as { events: Array<{ msg: string }> }).events;
    expect(events.some((e) => /agent listening/.test(e.msg))).to.equal(true);

    const code = await new Promise<number | null>((resolve) => {
      child!.once('exit', (c) => resolve(c));
      child!.kill('SIGTERM');
    });
    expect(code, stderr.slice(-1000)).to.equal(0);
  });
});
