// The controller is the authority on VMs: an enrolled rogue host that reports another host's VM id
// and a VM of its own invention in /status neither moves nor creates a record, and what a host says
// when it fails (stderr, command lines) never reaches API clients. The rogue is a real simulated
// agent behind a small proxy that adds VMs to its /status answer and can answer a route with a
// failure (what a modified or broken agent could send); the controller runs in-process with real
// SQLite and HTTP.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { HostStatus, VmInfo } from '../../wire/api.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';
import { tokenApi } from '../support/real-pair.ts';

describe('controller: the authority on VMs (a rogue host\'s report)', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  let honest: SimAgent;
  let rogueAgent: SimAgent;
  let proxy: Server;
  const proxied: string[] = [];
  /** VMs the rogue adds to its agent's real /status answer. */
  const injected: VmInfo[] = [];
  /** Answers the rogue gives instead of its agent, by `METHOD /route` (`/vms/:id` for any VM). */
  const failures = new Map<string, { status: number; body: unknown }>();

  const api = tokenApi(() => ctl.url);

  async function enroll(hostId: string, url: string, key: string) {
    const res = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: `pc-${hostId}`, agentUrl: url, agentKey: key, version: 'test', joinToken: ctl.services.secrets.joinToken }),
    });
    expect(res.status, await res.clone().text()).to.equal(200);
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-vm-authority-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    honest = await new SimAgent({ hostId: 'host-honest', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    rogueAgent = await new SimAgent({ hostId: 'host-rogue', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    // The rogue host as the controller sees it: its agent, with the injected VMs added to /status and
    // the failures answered instead of the agent.
    proxy = createServer((req, res) => {
      const route = `${req.method} ${req.url?.replace(/\/vms\/[a-z0-9]+/, '/vms/:id')}`;
      proxied.push(route);
      const failure = failures.get(route);
      if (failure) return void res.writeHead(failure.status, { 'content-type': 'application/json' }).end(JSON.stringify(failure.body));
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
        fetch(rogueAgent.url + req.url, {
          method: req.method!, headers: { authorization: `Bearer ${rogueAgent.key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body } : {}),
        }).then(async (r) => {
          let text = await r.text();
          if (route === 'GET /status') {
            const status = JSON.parse(text) as HostStatus;
            status.vmList.push(...injected);
            text = JSON.stringify(status);
          }
          res.writeHead(r.status, { 'content-type': 'application/json' }).end(text);
        }).catch((err: unknown) => res.writeHead(502).end(String(err)));
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await ctl?.stop();
    proxy?.close();
    await honest?.stop();
    await rogueAgent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('a host that reports another host\'s VM id and an invented VM moves and creates nothing; both are listed as its strangers', async () => {
    const admin = ctl.services.secrets.adminToken;
    expect((await api('POST', '/api/users', admin, { username: 'alice', password: 'alice-password-1' })).status).to.equal(201);
    const alice = ctl.services.users.createToken('alice', 'test').token;

    await enroll('host-honest', honest.url, honest.key);
    await ctl.services.hosts.pollAll();
    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'homework' });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const victim = made.json as { id: string; host: string };
    expect(victim.host).to.equal('host-honest');

    // The rogue joins with a valid token and claims the VM (under another owner and name), plus one it made up.
    const real = await fetch(`${honest.url}/vms/${victim.id}`, { headers: { authorization: `Bearer ${honest.key}` } });
    const stolen = { ...(await real.json() as VmInfo), owner: 'mallory', name: 'stolen', state: 'shutoff' as const };
    const invented: VmInfo = { id: 'invented0001', name: 'evil', owner: 'alice', template: 'alpine', state: 'running', vcpus: 1, memoryMiB: 256,
      console: 'serial', createdAt: new Date().toISOString() };
    injected.push(stolen, invented);
    const rogueAddress = proxy.address() as AddressInfo;
    await enroll('host-rogue', `http://127.0.0.1:${rogueAddress.port}`, 'r'.repeat(24));
    for (let i = 0; i < 2; i++) await ctl.services.hosts.pollAll();
    expect(proxied.filter((p) => p === 'GET /status').length).to.be.greaterThan(0);

    // The record stays on its host, with its owner and name; the invented VM is no record.
    const got = await api('GET', `/api/vms/${victim.id}`, alice);
    expect(got.json).to.include({ id: victim.id, host: 'host-honest', owner: 'alice', name: 'homework', state: 'running' });
    const all = (await api('GET', '/api/vms', admin)).json.vms as Array<{ id: string }>;
    expect(all.map((v) => v.id)).to.deep.equal([victim.id]);
    expect((await api('GET', '/api/vms/invented0001', admin)).status).to.equal(404);

    // Consoles and actions still go to the honest host; the rogue never hears of them.
    expect(ctl.services.vms.consoleTarget(ctl.services.system, victim.id).host.id).to.equal('host-honest');
    expect((await api('POST', `/api/vms/${victim.id}/poweroff`, alice)).json).to.include({ state: 'shutoff', host: 'host-honest' });
    expect(proxied.every((p) => p === 'GET /status')).to.equal(true);

    // Both are the rogue host's strangers, each with its reason, and the event log says so.
    const strangers = ctl.services.vms.strangers(ctl.services.system, 'host-rogue');
    expect(strangers.map((s) => [s.id, s.reason])).to.have.deep.members([
      // the victim's host by its label (the hostname it enrolled with), as every reason names hosts
      [victim.id, 'its id belongs to VM homework on host pc-host-honest: a host cannot take another host\'s VM'],
      ['invented0001', 'the controller did not place it on this host'],
    ]);
    expect(ctl.services.vms.strangers(ctl.services.system, 'host-honest')).to.deep.equal([]);
    ctl.services.events.flush();
    const events = (await api('GET', '/api/events?level=warn&limit=500', admin)).json.events as Array<{ msg: string }>;
    expect(events.filter((e) => /reports VM .* that is not its/.test(e.msg))).to.have.length(2);

    // An admin cannot adopt the other host's VM from the rogue either.
    expect(() => ctl.services.vms.adopt(ctl.services.system, 'host-rogue', victim.id, { owner: 'alice' })).to.throw(/cannot be adopted/);
  });

  it('an admin lists the strangers and adopts one for a known user over the API; a student can do neither', async () => {
    const admin = ctl.services.secrets.adminToken;
    const alice = ctl.services.users.createToken('alice', 'test').token;
    const victim = (await api('GET', '/api/vms', admin)).json.vms[0] as { id: string };

    const listed = await api('GET', '/api/strangers', admin);
    expect(listed.status).to.equal(200);
    expect((listed.json.strangers as Array<{ id: string; host: string }>).map((s) => [s.id, s.host])).to.have.deep.members([
      [victim.id, 'host-rogue'], ['invented0001', 'host-rogue'],
    ]);
    expect((await api('GET', '/api/strangers?host=host-honest', admin)).json).to.deep.equal({ strangers: [] });
    expect((await api('GET', '/api/strangers', alice)).status).to.equal(403);
    expect((await api('POST', '/api/hosts/host-rogue/strangers/invented0001/adopt', alice, { owner: 'alice' })).status).to.equal(403);

    const unknown = await api('POST', '/api/hosts/host-rogue/strangers/invented0001/adopt', admin, { owner: 'nobody' });
    expect(unknown.status).to.equal(422);
    expect(unknown.json.error.details.fields.map((f: { field: string }) => f.field)).to.deep.equal(['owner']);
    // The other host's VM id stays that host's: refused, and still a stranger.
    const stolen = await api('POST', `/api/hosts/host-rogue/strangers/${victim.id}/adopt`, admin, { owner: 'alice' });
    expect(stolen.status).to.equal(409);
    expect((await api('GET', `/api/vms/${victim.id}`, alice)).json).to.include({ host: 'host-honest', name: 'homework' });

    const adopted = await api('POST', '/api/hosts/host-rogue/strangers/invented0001/adopt', admin, { owner: 'alice', name: 'adopted' });
    expect(adopted.status, JSON.stringify(adopted.json)).to.equal(201);
    expect(adopted.json).to.include({ id: 'invented0001', owner: 'alice', name: 'adopted', host: 'host-rogue' });
    const mine = (await api('GET', '/api/vms', alice)).json.vms as Array<{ id: string; owner: string }>;
    expect(mine.find((v) => v.id === 'invented0001')).to.include({ owner: 'alice' });
    expect((await api('GET', '/api/strangers?host=host-rogue', admin)).json.strangers.map((s: { id: string }) => s.id)).to.deep.equal([victim.id]);
    // Forget it again (the rogue's agent never had it) so the next test starts from the same cluster.
    expect((await api('DELETE', '/api/vms/invented0001', admin)).status).to.equal(204);
  });
  it('a host\'s failure reaches API clients without its stderr or command lines; a refusal keeps its field list', async () => {
    const admin = ctl.services.secrets.adminToken;
    await api('POST', '/api/hosts/host-honest/drain', admin);
    injected.length = 0;
    await ctl.services.hosts.pollAll();
    const leak = ['qemu-img', '/var/lib/skyhost', 'No space left', 'secret-arg'];
    const commandFailed = {
      status: 502,
      body: { error: { code: 'command_failed', message: 'qemu-img create -f qcow2 /var/lib/skyhost/vms/x.qcow2 secret-arg failed (exit 1): No space left on device',
        details: { command: 'qemu-img', args: ['create', '/var/lib/skyhost/vms/x.qcow2', 'secret-arg'], exitCode: 1, stderr: 'No space left on device' } } },
    };
    try {
      failures.set('POST /vms', commandFailed);
      const failed = await api('POST', '/api/vms', admin, { template: 'alpine', name: 'broken' });
      expect(failed.status).to.equal(502);
      expect(failed.json.error.code).to.equal('command_failed');
      expect(Object.keys(failed.json.error.details)).to.deep.equal(['vm']);
      expect(failed.json.error.details.vm).to.include({ host: 'host-rogue', state: 'error' });
      for (const word of leak) expect(JSON.stringify(failed.json), word).not.to.include(word);
      ctl.services.events.flush();
      const logged = (await api('GET', '/api/events?hostId=host-rogue&limit=500', admin)).json.events as Array<{ msg: string }>;
      expect(logged.some((e) => e.msg.includes('No space left on device')), 'the full text is in the event log').to.equal(true);

      failures.set('POST /vms', { status: 422, body: { error: { code: 'invalid_field', message: 'userData: not YAML',
        details: { fields: [{ field: 'userData', message: 'not YAML' }], stderr: 'secret-arg' } } } });
      const refused = await api('POST', '/api/vms', admin, { template: 'alpine', name: 'refused' });
      expect(refused.status).to.equal(422);
      expect(refused.json.error.details.fields).to.deep.equal([{ field: 'userData', message: 'not YAML' }]);
      expect(JSON.stringify(refused.json)).not.to.include('secret-arg');

      failures.delete('POST /vms');
      const vm = (await api('POST', '/api/vms', admin, { template: 'alpine', name: 'works' })).json as { id: string; host: string };
      expect(vm.host).to.equal('host-rogue');
      failures.set('POST /vms/:id/reboot', commandFailed);
      const action = await api('POST', `/api/vms/${vm.id}/reboot`, admin);
      expect(action.status).to.equal(502);
      expect(action.json.error.details).to.equal(undefined);
      for (const word of leak) expect(JSON.stringify(action.json), word).not.to.include(word);
      failures.set('DELETE /vms/:id', { ...commandFailed, status: 500 });
      const removal = await api('DELETE', `/api/vms/${vm.id}`, admin);
      expect(removal.status).to.equal(502);
      for (const word of leak) expect(JSON.stringify(removal.json), word).not.to.include(word);
      expect((await api('GET', `/api/vms/${vm.id}`, admin)).json.state).to.equal('running');
    } finally {
      failures.clear();
      await api('POST', '/api/hosts/host-honest/undrain', admin);
    }
  });
});
