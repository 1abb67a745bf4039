// The controller is the authority on VMs: an enrolled rogue host that reports another host's VM id
// and a VM of its own invention in /status neither moves nor creates a record. The rogue is a real
// simulated agent behind a small proxy that adds the two VMs to its /status answer (what a modified
// agent could send); the controller runs in-process with real SQLite and HTTP.
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

  async function api(method: string, p: string, token: string, body?: unknown) {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

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
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 2000, answerWithinMs: 2000 });
    honest = await new SimAgent({ hostId: 'host-honest', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    rogueAgent = await new SimAgent({ hostId: 'host-rogue', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    // The rogue host as the controller sees it: its agent's /status plus the injected VMs; nothing else answers.
    proxy = createServer((req, res) => {
      proxied.push(`${req.method} ${req.url}`);
      if (req.method !== 'GET' || req.url !== '/status') return void res.writeHead(404).end();
      fetch(`${rogueAgent.url}/status`, { headers: { authorization: `Bearer ${rogueAgent.key}` } })
        .then(async (r) => {
          const status = await r.json() as HostStatus;
          status.vmList.push(...injected);
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(status));
        })
        .catch((err: unknown) => res.writeHead(502).end(String(err)));
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
      [victim.id, 'its id belongs to VM homework on host host-honest: a host cannot take another host\'s VM'],
      ['invented0001', 'the controller did not place it on this host'],
    ]);
    expect(ctl.services.vms.strangers(ctl.services.system, 'host-honest')).to.deep.equal([]);
    ctl.services.events.flush();
    const events = (await api('GET', '/api/events?level=warn&limit=500', admin)).json.events as Array<{ msg: string }>;
    expect(events.filter((e) => /reports VM .* that is not its/.test(e.msg))).to.have.length(2);

    // An admin cannot adopt the other host's VM from the rogue either.
    expect(() => ctl.services.vms.adopt(ctl.services.system, 'host-rogue', victim.id, { owner: 'alice' })).to.throw(/cannot be adopted/);
  });
});
