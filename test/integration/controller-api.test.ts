// The controller's JSON API in-process (real SQLite, real HTTP, real WebSockets) against simulated
// agents (test/support/sim-agent.ts: the agent's wire contract in memory), and a kill -9 of a real
// controller process.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import WebSocket from 'ws';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort, GiveUp, jsonOrText, waitFor } from '../support/net.ts';
import { SimAgent, SimFleet } from '../support/sim-agent.ts';

async function simAgent(hostId: string): Promise<SimAgent> {
  return new SimAgent({ hostId, hostname: `pc-${hostId}`, memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
}

const creates = (list: SimAgent[]) => list.reduce((n, a) => n + (a.hits.get('POST /vms') ?? 0), 0);

describe('controller API (in-process, simulated agents)', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  let base: string;
  let adminToken: string;
  let joinToken: string;
  const agents: SimAgent[] = [];

  async function call(method: string, p: string, opts: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined || opts.raw !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(base + p, { method, headers, ...(opts.raw !== undefined ? { body: opts.raw } : opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
    const text = await res.text();
    const json = jsonOrText(text);
    return { status: res.status, json, headers: res.headers };
  }

  async function enroll(agent: SimAgent, withToken = true) {
    return call('POST', '/api/enroll', {
      body: { hostId: agent.hostId, hostname: `pc-${agent.hostId}`, agentUrl: agent.url, agentKey: agent.key, version: 'test', ...(withToken ? { joinToken } : {}) },
    });
  }

  async function userToken(name: string): Promise<string> {
    const made = await call('POST', '/api/users', { token: adminToken, body: { username: name, password: `${name}-password-1` } });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const login = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password: `${name}-password-1` }) });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const { csrfToken } = await login.json() as { csrfToken: string };
    const t = await fetch(`${base}/api/tokens`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrfToken, 'content-type': 'application/json' }, body: JSON.stringify({ label: 'test' }) });
    expect(t.status).to.equal(201);
    return ((await t.json()) as { token: string }).token;
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-ctl-'));
    // A simulated agent's answers on a loaded machine: polls get 5 s, creates 5 s before a 202 (1 s made a
    // create some tests expect as 201 a 202); the slow-agent test's createDelayMs is longer than that.
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 5000 });
    base = ctl.url;
    adminToken = ctl.services.secrets.adminToken;
    joinToken = ctl.services.secrets.joinToken;
    for (const id of ['host-a', 'host-b']) agents.push(await simAgent(id));
  });

  after(async () => {
    await ctl?.stop();
    for (const a of agents) await a.stop().catch(() => {});
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  describe('first start', () => {
    it('writes the admin and join tokens with mode 0600 and answers /healthz without auth', async () => {
      for (const f of ['admin-token', 'join-token']) expect(statSync(path.join(dir, 'secrets', f)).mode & 0o777).to.equal(0o600);
      const h = await call('GET', '/healthz');
      expect(h.status).to.equal(200);
      expect(h.json.ok).to.equal(true);
    });

    it('the first admin login uses the admin token once and requires a new password, with CSRF on every change', async () => {
      const login = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password: adminToken }) });
      expect(login.status).to.equal(200);
      const body = await login.json() as { mustChangePassword: boolean; csrfToken: string };
      expect(body.mustChangePassword).to.equal(true);
      const setCookie = login.headers.get('set-cookie')!;
      expect(setCookie).to.match(/HttpOnly/i).and.match(/SameSite=Lax/i);
      const cookie = setCookie.split(';')[0]!;
      const blocked = await fetch(`${base}/api/vms`, { headers: { cookie } });
      expect(blocked.status).to.equal(403);
      expect(((await blocked.json()) as any).error.code).to.equal('password_change_required');
      const noCsrf = await fetch(`${base}/api/me/password`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ newPassword: 'a-new-admin-password' }) });
      expect(noCsrf.status).to.equal(403);
      expect(((await noCsrf.json()) as any).error.code).to.equal('csrf');
      const ok = await fetch(`${base}/api/me/password`, { method: 'POST', headers: { cookie, 'x-csrf-token': body.csrfToken, 'content-type': 'application/json' }, body: JSON.stringify({ newPassword: 'a-new-admin-password' }) });
      expect(ok.status).to.equal(200);
      expect((await fetch(`${base}/api/vms`, { headers: { cookie } })).status).to.equal(200);
      // the one-time password is gone; the new one works; the admin token still works as an API token
      expect((await call('POST', '/api/login', { body: { username: 'admin', password: adminToken } })).status).to.equal(401);
      expect((await call('POST', '/api/login', { body: { username: 'admin', password: 'a-new-admin-password' } })).status).to.equal(200);
      expect((await call('GET', '/api/vms', { token: adminToken })).status).to.equal(200);
    });

    it('refuses anonymous and bad-token API calls with 401 JSON', async () => {
      const anon = await call('GET', '/api/vms');
      expect(anon.status).to.equal(401);
      expect(anon.json.error.code).to.equal('unauthorized');
      expect((await call('GET', '/api/vms', { token: 'nope' })).status).to.equal(401);
    });
  });

  describe('enrollment', () => {
    it('a join token makes a host ready, none leaves it pending, a wrong one is refused', async () => {
      const [a, b] = agents as [SimAgent, SimAgent];
      const ra = await enroll(a);
      expect(ra.status).to.equal(200);
      expect(ra.json).to.include({ hostId: 'host-a', state: 'ready', clusterId: ctl.services.clusterId });
      const rb = await enroll(b, false);
      expect(rb.json.state).to.equal('pending');
      const wrong = await call('POST', '/api/enroll', { body: { hostId: 'host-x', hostname: 'x', agentUrl: 'http://127.0.0.1:1', agentKey: 'k'.repeat(16), version: 't', joinToken: 'shj_not-the-token' } });
      expect(wrong.status).to.equal(403);
      expect(wrong.json.error.code).to.match(/^join_token_/);
      const hosts = (await call('GET', '/api/hosts', { token: adminToken })).json.hosts;
      expect(hosts.map((h: any) => h.id)).to.deep.equal(['host-a', 'host-b']);
      expect(JSON.stringify(hosts)).not.to.include(a.key);
    });

    it('re-enrolling updates the record (new URL) and never duplicates it; a new key without token is refused', async () => {
      const a = agents[0]!;
      const again = await call('POST', '/api/enroll', { body: { hostId: a.hostId, hostname: 'pc-a-renamed', agentUrl: a.url, agentKey: a.key, version: 'test2' } });
      expect(again.json.state).to.equal('ready');
      const hosts = (await call('GET', '/api/hosts', { token: adminToken })).json.hosts;
      expect(hosts.filter((h: any) => h.id === 'host-a')).to.have.length(1);
      expect(hosts.find((h: any) => h.id === 'host-a').hostname).to.equal('pc-a-renamed');
      const hijack = await call('POST', '/api/enroll', { body: { hostId: a.hostId, hostname: 'evil', agentUrl: 'http://127.0.0.1:9', agentKey: 'x'.repeat(20), version: 'x' } });
      expect(hijack.status).to.equal(409);
      expect((await call('GET', '/api/hosts/host-a', { token: adminToken })).json).to.include({ state: 'ready', url: a.url, hostname: 'pc-a-renamed' });
      expect((await enroll(a)).json.state).to.equal('ready');
    });

    it('approve makes a pending host ready; drain and undrain switch it; only admins may', async () => {
      const alice = await userToken('alice');
      expect((await call('POST', '/api/hosts/host-b/approve', { token: alice })).status).to.equal(403);
      const ok = await call('POST', '/api/hosts/host-b/approve', { token: adminToken });
      expect(ok.status).to.equal(200);
      expect(ok.json.state).to.equal('ready');
      expect((await call('POST', '/api/hosts/host-b/approve', { token: adminToken })).status).to.equal(409);
      expect((await call('POST', '/api/hosts/host-b/drain', { token: adminToken })).json.state).to.equal('draining');
      expect((await call('POST', '/api/hosts/host-b/undrain', { token: adminToken })).json.state).to.equal('ready');
      expect((await call('POST', '/api/hosts/nope/drain', { token: adminToken })).status).to.equal(404);
    });

    it('rejects a malformed enrollment with 422 naming the field', async () => {
      const r = await call('POST', '/api/enroll', { body: { hostId: '../etc', hostname: 'x', agentUrl: 'not a url', agentKey: 'short', version: 'x' } });
      expect(r.status).to.equal(422);
      const fields = r.json.error.details.fields.map((f: any) => f.field);
      expect(fields).to.include.members(['hostId', 'agentUrl', 'agentKey']);
    });
  });

  describe('VMs', () => {
    let alice: string;
    let bob: string;
    before(async () => {
      await ctl.services.hosts.pollAll();
      alice = await userToken('alice2');
      bob = await userToken('bob');
    });

    it('creates a VM on a host, answers 201 when it runs, and polls keep the record', async () => {
      const r = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'web-1', vcpus: 1, memoryMiB: 256 } });
      expect(r.status, JSON.stringify(r.json)).to.equal(201);
      expect(r.json).to.include({ name: 'web-1', owner: 'alice2', template: 'alpine', state: 'running' });
      expect(r.json.consoleUrl).to.equal(`/vms/${r.json.id}`);
      expect(r.json.ssh.command).to.match(/^ssh -p \d+ /);
      const got = await call('GET', `/api/vms/${r.json.id}`, { token: alice });
      expect(got.json.id).to.equal(r.json.id);
    });

    it('POST /request-vm answers { vm, host, consoleUrl }', async () => {
      const r = await call('POST', '/request-vm', { token: alice, body: { template: 'alpine' } });
      expect(r.status).to.equal(201);
      expect(r.json.vm.name).to.match(/^alpine-[a-z0-9]{4}$/);
      expect(r.json.host.id).to.equal(r.json.vm.host);
      expect(r.json.consoleUrl).to.equal(r.json.vm.consoleUrl);
    });

    it('another user\'s VM is a 404 for every verb; the admin sees every VM', async () => {
      const mine = (await call('GET', '/api/vms', { token: alice })).json.vms;
      expect(mine.length).to.be.greaterThan(0);
      const id = mine[0].id;
      expect((await call('GET', `/api/vms/${id}`, { token: bob })).status).to.equal(404);
      expect((await call('DELETE', `/api/vms/${id}`, { token: bob })).status).to.equal(404);
      expect((await call('POST', `/api/vms/${id}/reboot`, { token: bob })).status).to.equal(404);
      expect((await call('GET', '/api/vms', { token: bob })).json.vms).to.deep.equal([]);
      const all = await call('GET', '/api/vms', { token: adminToken });
      expect(all.json.vms.map((v: any) => v.id)).to.include(id);
      // a poller with the list's ETag gets 304 until a VM changes
      const etag = all.headers.get('etag')!;
      expect((await call('GET', '/api/vms', { token: adminToken, headers: { 'if-none-match': etag } })).status).to.equal(304);
      const zipped = await fetch(`${base}/api/vms`, { headers: { authorization: `Bearer ${adminToken}`, 'accept-encoding': 'gzip' } });
      expect(zipped.headers.get('content-encoding')).to.equal('gzip');
      expect(((await zipped.json()) as any).vms).to.have.length(all.json.vms.length);
    });

    it('an Idempotency-Key makes a retry return the first answer, not a second VM', async () => {
      const before = creates(agents);
      const body = { template: 'alpine', name: 'once' };
      const headers = { 'idempotency-key': 'retry-me-1' };
      const [one, two] = await Promise.all([
        call('POST', '/api/vms', { token: alice, body, headers }),
        call('POST', '/api/vms', { token: alice, body, headers }),
      ]);
      const three = await call('POST', '/api/vms', { token: alice, body, headers });
      expect(two.json.id).to.equal(one.json.id);
      expect(three.json.id).to.equal(one.json.id);
      expect(three.status).to.equal(one.status);
      expect(creates(agents) - before).to.equal(1);
      const reused = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'other' }, headers });
      expect(reused.status).to.equal(422);
      // the same key of another user is that user's own
      const bobs = await call('POST', '/api/vms', { token: bob, body: { template: 'alpine', name: 'once-bob' }, headers });
      expect(bobs.status).to.equal(201);
      expect(bobs.json.id).not.to.equal(one.json.id);
    });

    it('hostile input gets 422 naming the field and creates nothing; huge bodies 413; broken JSON 400', async () => {
      const count = () => ctl.services.vms.records(ctl.services.system).length;
      const before = count();
      const cases: Array<[unknown, string]> = [
        [{ template: 'alpine', memoryMiB: 'lots' }, 'memoryMiB'],
        [{ template: 'alpine', name: 'x; rm -rf /' }, 'name'],
        [{ template: '../../etc/passwd' }, 'template'],
        [{ template: 'alpine', vcpus: 1e9 }, 'vcpus'],
        [{ template: 'alpine', sshKey: 'ssh-ed25519 AAAA\nevil' }, 'sshKey'],
        [{ template: 'alpine', surprise: true }, '(body)'],
        [{}, 'template'],
        [[1, 2], '(body)'],
      ];
      for (const [body, field] of cases) {
        const r = await call('POST', '/api/vms', { token: alice, body });
        expect(r.status, JSON.stringify(body)).to.equal(422);
        expect(r.json.error.code).to.equal('invalid_field');
        expect(r.json.error.message.startsWith(field) || r.json.error.details.fields.some((f: any) => f.field === field),
          `${JSON.stringify(body)} -> ${r.json.error.message}`).to.equal(true);
      }
      const big = await call('POST', '/api/vms', { token: alice, raw: JSON.stringify({ template: 'alpine', userData: 'x'.repeat(2 * 1024 * 1024) }) });
      expect(big.status).to.equal(413);
      expect(big.json.error.code).to.equal('payload_too_large');
      const broken = await call('POST', '/api/vms', { token: alice, raw: '{"template": ' });
      expect(broken.status).to.equal(400);
      const badKey = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine' }, headers: { 'idempotency-key': 'x'.repeat(300) } });
      expect(badKey.status).to.equal(422);
      expect(badKey.json.error.message).to.match(/^Idempotency-Key/);
      expect(count()).to.equal(before);
    });

    it('"no host fits" is a 503 with a reason for every host', async () => {
      const r = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', memoryMiB: 200_000 } });
      expect(r.status).to.equal(503);
      expect(r.json.error.code).to.equal('no_host_fits');
      const rejected = r.json.error.details.rejected;
      expect(rejected.map((x: any) => x.host).sort()).to.deep.equal(['host-a', 'host-b']);
      expect(rejected.every((x: any) => x.reason === 'memory')).to.equal(true);
      const taken = await call('POST', '/api/vms', { token: bob, body: { template: 'alpine', name: 'web-1' } });
      expect(taken.status).to.equal(409);
      expect(taken.json.error.details.fields[0].field).to.equal('name');
      const missing = await call('POST', '/api/vms', { token: alice, body: { template: 'no-such-template' } });
      expect(missing.status).to.equal(503);
      expect(missing.json.error.details.rejected[0].reason).to.equal('missing_template');
    });

    it('a failed agent call leaves the record in error with the reason', async () => {
      // The controller's last poll still lists the template, but the hosts no longer have it.
      const saved = agents.map((a) => a.templates.get('alpine')!);
      for (const a of agents) a.templates.delete('alpine');
      try {
        const r = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'doomed' } });
        expect(r.status).to.equal(422);
        const vm = r.json.error.details.vm;
        expect(vm.state).to.equal('error');
        expect(vm.error).to.include('no template "alpine"');
        const got = await call('GET', `/api/vms/${vm.id}`, { token: alice });
        expect(got.json.state).to.equal('error');
        // an error record can be deleted (the agent does not know it: 404 there)
        expect((await call('DELETE', `/api/vms/${vm.id}`, { token: alice })).status).to.equal(204);
        expect((await call('GET', `/api/vms/${vm.id}`, { token: alice })).status).to.equal(404);
      } finally {
        agents.forEach((a, i) => a.templates.set('alpine', saved[i]!));
      }
    });

    it('an unreachable host fails the request with 503 and the record says why', async () => {
      const gone = await simAgent('host-gone');
      await enroll(gone);
      await ctl.services.hosts.pollAll();
      await gone.stop();
      for (const id of ['host-a', 'host-b']) await call('POST', `/api/hosts/${id}/drain`, { token: adminToken });
      try {
        const r = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'nowhere' } });
        expect(r.status).to.equal(503);
        expect(r.json.error.code).to.equal('agent_unreachable');
        expect(r.json.error.details.vm).to.include({ state: 'error', host: 'host-gone' });
      } finally {
        for (const id of ['host-a', 'host-b']) await call('POST', `/api/hosts/${id}/undrain`, { token: adminToken });
        await call('DELETE', '/api/hosts/host-gone?force=true', { token: adminToken });
      }
    });

    it('answers 202 creating when the agent is slow, and the record follows the agent', async () => {
      const slow = await simAgent('host-slow');
      agents.push(slow);
      slow.opts.createDelayMs = 7000;
      await enroll(slow);
      await call('POST', '/api/hosts/host-a/drain', { token: adminToken });
      await call('POST', '/api/hosts/host-b/drain', { token: adminToken });
      try {
        await ctl.services.hosts.pollAll();
        const r = await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'slowpoke' } });
        expect(r.status).to.equal(202);
        expect(r.json.state).to.equal('creating');
        expect(r.json.host).to.equal('host-slow');
        // the agent answers 7 s after the call (later on a loaded machine): the record follows it
        await waitFor('the record to follow the agent', async () => (await call('GET', `/api/vms/${r.json.id}`, { token: alice })).json.state === 'running', 30_000, 100);
      } finally {
        await call('POST', '/api/hosts/host-a/undrain', { token: adminToken });
        await call('POST', '/api/hosts/host-b/undrain', { token: adminToken });
        await call('POST', '/api/hosts/host-slow/drain', { token: adminToken });
      }
    });

    it('lifecycle actions go to the agent; unknown actions are 404', async () => {
      const vm = (await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'cycle' } })).json;
      const off = await call('POST', `/api/vms/${vm.id}/poweroff`, { token: alice });
      expect(off.status).to.equal(200);
      expect(off.json.state).to.equal('shutoff');
      expect((await call('POST', `/api/vms/${vm.id}/start`, { token: alice })).json.state).to.equal('running');
      expect((await call('POST', `/api/vms/${vm.id}/explode`, { token: alice })).status).to.equal(404);
      expect((await call('DELETE', `/api/vms/${vm.id}`, { token: alice })).status).to.equal(204);
      for (const a of agents) expect(a.vms.has(vm.id)).to.equal(false);
    });

    it('three missed polls make a host down and its VMs unknown; on return the agent\'s list wins for the VMs placed there', async () => {
      const vm = (await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'survivor' } })).json;
      const host = agents.find((x) => x.hostId === vm.host)!;
      const other = (await call('POST', '/api/vms', { token: alice, body: { template: 'alpine', name: 'vanisher' } })).json;
      await host.stop();
      try {
        for (let i = 0; i < 2; i++) await ctl.services.hosts.pollAll();
        expect((await call('GET', `/api/hosts/${host.hostId}`, { token: alice })).json.state).to.equal('ready');
        await ctl.services.hosts.pollAll();
        expect((await call('GET', `/api/hosts/${host.hostId}`, { token: alice })).json.state).to.equal('down');
        expect((await call('GET', `/api/vms/${vm.id}`, { token: alice })).json.state).to.equal('unknown');
        // the host is back: one VM stopped meanwhile, one is gone, one appeared that the records lack
        await host.hypervisor!.poweroff(vm.id);
        await agents.find((x) => x.hostId === other.host)!.dropVm(other.id);
        await host.addVm({ id: 'adopted00001', name: 'found', owner: 'alice2', template: 'alpine', memoryMiB: 128 });
      } finally {
        await host.start();
      }
      await ctl.services.hosts.pollAll();
      expect((await call('GET', `/api/hosts/${host.hostId}`, { token: alice })).json.state).to.equal('ready');
      expect((await call('GET', `/api/vms/${vm.id}`, { token: alice })).json.state).to.equal('shutoff');
      // a VM the records lack is a stranger of its host, never a record, until an admin adopts it
      expect((await call('GET', '/api/vms/adopted00001', { token: alice })).status).to.equal(404);
      expect(ctl.services.vms.strangers(ctl.services.system, host.hostId).map((s) => s.id)).to.deep.equal(['adopted00001']);
      ctl.services.vms.adopt(ctl.services.system, host.hostId, 'adopted00001', { owner: 'alice2' });
      expect((await call('GET', '/api/vms/adopted00001', { token: alice })).json.name).to.equal('found');
      expect((await call('GET', `/api/vms/${other.id}`, { token: alice })).status).to.equal(404);
    });

    it('the console WebSocket reaches the agent\'s for the owner and nobody else', async () => {
      const vm = (await call('GET', '/api/vms', { token: alice })).json.vms.find((v: any) => v.state === 'running' && v.host !== 'host-slow');
      const wsUrl = `${base.replace('http', 'ws')}/api/vms/${vm.id}/console`;
      const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${alice}` } });
      const lines: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.on('message', (d, binary) => {
          if (!binary) return; // the console's notices (docs/api.md#consoles-websocket): the guest's bytes are binary
          lines.push(String(d));
          if (lines.length === 1) ws.send('ls\n');
          if (lines.length === 2) resolve();
        });
        ws.on('error', reject);
      });
      ws.close();
      expect(lines[0]).to.include(`Simulated VM ${vm.name} (${vm.id})`);
      expect(lines[1]).to.equal('ls\n');
      const refused = await new Promise<number>((resolve) => {
        const other = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${bob}` } });
        other.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        other.on('open', () => resolve(101));
        other.on('error', () => {});
      });
      expect(refused).to.equal(404);
      const anon = await new Promise<number>((resolve) => {
        const other = new WebSocket(wsUrl);
        other.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        other.on('open', () => resolve(101));
        other.on('error', () => {});
      });
      expect(anon).to.equal(401);
    });

    it('the event log records what happened, filterable by host and level', async () => {
      ctl.services.events.flush();
      const all = await call('GET', '/api/events?limit=500', { token: adminToken });
      expect(all.status).to.equal(200);
      expect(all.json.events.some((e: any) => /is down/.test(e.msg))).to.equal(true);
      const warn = await call('GET', '/api/events?level=warn&limit=500', { token: adminToken });
      expect(warn.json.events.every((e: any) => e.level === 'warn' || e.level === 'error')).to.equal(true);
      const byHost = await call('GET', '/api/events?hostId=host-a', { token: adminToken });
      expect(byHost.json.events.every((e: any) => e.hostId === 'host-a')).to.equal(true);
      expect((await call('GET', '/api/events', { token: bob })).status).to.equal(403);
      // the live tail: server-sent events as they are recorded
      const ac = new AbortController();
      const stream = await fetch(`${base}/api/events/stream?source=test`, { headers: { authorization: `Bearer ${adminToken}` }, signal: ac.signal });
      expect(stream.headers.get('content-type')).to.match(/^text\/event-stream/);
      const reader = stream.body!.getReader();
      ctl.services.events.record({ source: 'other', msg: 'not this one' });
      ctl.services.events.record({ source: 'test', msg: 'live one' });
      let text = '';
      while (!text.includes('live one')) text += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
      expect(text).not.to.include('not this one');
      expect((await call('GET', '/api/events?limit=abc', { token: adminToken })).status).to.equal(422);
    });
  });

  describe('templates', () => {
    let dave: string;
    before(async () => {
      dave = await userToken('dave');
    });

    it('lists templates across hosts, imports from a URL with its sha256, takes an upload, deletes', async () => {
      const listed = (await call('GET', '/api/templates', { token: adminToken })).json.templates;
      const alpine = listed.find((t: any) => t.name === 'alpine');
      expect(alpine.hosts).to.include.members(['host-a', 'host-b']);
      expect(alpine.diskGiB).to.equal(2);

      const image = Buffer.alloc(4096, 7);
      const sha256 = (await import('node:crypto')).createHash('sha256').update(image).digest('hex');
      const files = createServer((_req, res) => res.end(image));
      await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
      try {
        const url = `http://127.0.0.1:${(files.address() as AddressInfo).port}/tiny.img`;
        const wrong = await call('POST', '/api/templates', { token: adminToken, body: { name: 'tiny', url, sha256: 'a'.repeat(64), host: 'host-a' } });
        expect(wrong.status).to.equal(422);
        expect(wrong.json.error.code).to.equal('checksum_mismatch');
        const ok = await call('POST', '/api/templates', { token: adminToken, body: { name: 'tiny', url, sha256, host: 'host-a', os: 'tiny' } });
        expect(ok.status, JSON.stringify(ok.json)).to.equal(200);
        expect(ok.json.results).to.deep.equal([{ host: 'host-a', ok: true }]);
      } finally {
        files.close();
      }
      expect((await call('GET', '/api/templates', { token: dave })).json.templates.find((t: any) => t.name === 'tiny').hosts).to.deep.equal(['host-a']);

      const up = await fetch(`${base}/api/templates?name=uploaded&os=tiny&host=host-b`, {
        method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/octet-stream' }, body: image,
      });
      expect(up.status, await up.clone().text()).to.equal(200);
      expect((await call('GET', '/api/templates', { token: adminToken })).json.templates.map((t: any) => t.name)).to.include('uploaded');

      expect((await call('POST', '/api/templates', { token: dave, body: { name: 'x', url: 'http://127.0.0.1:1/x', sha256 } })).status).to.equal(403);
      expect((await call('POST', '/api/templates', { token: adminToken, body: { name: '../x', url: 'ftp://x', sha256: 'nope' } })).json.error.details.fields
        .map((f: any) => f.field)).to.include.members(['name', 'url', 'sha256']);
      expect((await call('DELETE', '/api/templates/tiny', { token: adminToken })).json.results).to.deep.equal([{ host: 'host-a', ok: true }]);
      expect((await call('GET', '/api/templates', { token: adminToken })).json.templates.map((t: any) => t.name)).not.to.include('tiny');
      expect((await call('DELETE', '/api/templates/tiny', { token: adminToken })).status).to.equal(404);
    });

    it('wake needs a MAC address and refuses a malformed one, naming the field', async () => {
      const none = await call('POST', '/api/hosts/host-a/wake', { token: adminToken, body: {} });
      expect(none.status).to.equal(422);
      expect(none.json.error.details.fields[0].field).to.equal('mac');
      const bad = await call('POST', '/api/hosts/host-a/wake', { token: adminToken, body: { mac: 'zz:zz' } });
      expect(bad.status).to.equal(422);
      expect((await call('POST', '/api/hosts/host-a/wake', { token: dave, body: {} })).status).to.equal(403);
    });
  });

  describe('accounts and documents', () => {
    it('self-registration is off by default and an admin can switch it on', async () => {
      expect((await call('POST', '/api/register', { body: { username: 'carol', password: 'carol-password' } })).status).to.equal(403);
      expect((await call('PUT', '/api/settings', { token: adminToken, body: { selfRegistration: true } })).json.selfRegistration).to.equal(true);
      const r = await call('POST', '/api/register', { body: { username: 'carol', password: 'carol-password' } });
      expect(r.status).to.equal(201);
      expect(r.json.user.role).to.equal('student');
      expect((await call('POST', '/api/register', { body: { username: 'carol', password: 'carol-password' } })).status).to.equal(409);
      await call('PUT', '/api/settings', { token: adminToken, body: { selfRegistration: false } });
    });

    it('serves the OpenAPI document generated from the schemas, and Prometheus metrics', async () => {
      const doc = (await call('GET', '/api/openapi.json')).json;
      expect(doc.openapi).to.equal('3.1.0');
      expect(doc.paths['/api/vms'].post.requestBody.content['application/json'].schema.properties).to.have.property('template');
      expect(doc.paths['/request-vm'].post).to.be.an('object');
      const metrics = await fetch(`${base}/metrics`);
      const text = await metrics.text();
      expect(text).to.match(/^skyhost_vms\{state="running"\} \d+$/m);
      expect(text).to.match(/^skyhost_hosts\{state="ready"\} \d+$/m);
    });
  });
});

describe('controller placement under a burst (in-flight reservations)', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  let fleet: SimFleet;

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-ctl-burst-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false });
    fleet = await SimFleet.start(3, () => ({ memoryMiB: 8192, threads: 8, hypervisor: 'tcg' }));
    await fleet.enroll(ctl.url, ctl.services.secrets.joinToken);
    await ctl.services.hosts.pollAll();
  });

  after(async () => {
    await ctl?.stop();
    await fleet?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('12 simultaneous requests on 3 equal hosts land 4/4/4, with no poll in between', async () => {
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => fetch(`${ctl.url}/api/vms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ctl.services.secrets.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ template: 'alpine', name: `burst-${i}`, memoryMiB: 512 }),
    })));
    expect(answers.map((a) => a.status)).to.deep.equal(Array(12).fill(201));
    expect(fleet.agents.map((a) => a.vms.size)).to.deep.equal([4, 4, 4]);
  });
});

describe('controller durability (child process, kill -9)', function () {
  this.timeout(150_000); // two starts of a controller process, each as slow as a loaded machine makes it
  let dir: string;
  let child: import('node:child_process').ChildProcess | undefined;
  let agent: SimAgent;
  let port: number;

  async function startChild(): Promise<void> {
    const { spawn } = await import('node:child_process');
    child = spawn(process.execPath, ['appliance/main.ts', 'controller', '--data', dir, '--port', String(port)], {
      env: { ...process.env, SKYHOST_LISTEN: '127.0.0.1', SKYHOST_ADVERTISE: 'false', SKYHOST_POLL_INTERVAL_SECONDS: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => { err += String(d); });
    const started = child;
    await waitFor('the controller to answer /healthz', async () => {
      if (started.exitCode !== null) throw new GiveUp(`controller exited: ${err}`);
      return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok;
    }, 60_000, 100).catch((e: Error) => { throw e instanceof GiveUp ? e : new Error(`${e.message}; its log: ${err}`); });
  }

  function killHard(): Promise<void> {
    const c = child!;
    child = undefined;
    if (c.exitCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-ctl-kill-'));
    port = await freePort();
    agent = await simAgent('host-k');
  });

  after(async () => {
    if (child) await killHard();
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a VM request that was answered survives kill -9 of the controller', async () => {
    await startChild();
    const base = `http://127.0.0.1:${port}`;
    const token = readFileSync(path.join(dir, 'secrets', 'admin-token'), 'utf8').trim();
    const joinToken = readFileSync(path.join(dir, 'secrets', 'join-token'), 'utf8').trim();
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    expect((await agent.enroll(base, joinToken)).state).to.equal('ready');
    await waitFor('the host to report its template', async () => {
      const hosts = await (await fetch(`${base}/api/hosts`, { headers: auth })).json() as { hosts: Array<{ templates: string[] }> };
      return hosts.hosts[0]?.templates.includes('alpine');
    }, 30_000, 100);
    const created = await fetch(`${base}/api/vms`, { method: 'POST', headers: auth, body: JSON.stringify({ template: 'alpine', name: 'durable' }) });
    expect(created.status).to.equal(201);
    const vm = await created.json() as { id: string };
    await killHard();
    await startChild();
    const got = await fetch(`${base}/api/vms/${vm.id}`, { headers: auth });
    expect(got.status).to.equal(200);
    expect(await got.json()).to.include({ id: vm.id, name: 'durable', owner: 'admin', host: 'host-k' });
    const hosts = await (await fetch(`${base}/api/hosts`, { headers: auth })).json() as { hosts: Array<{ id: string; state: string }> };
    expect(hosts.hosts.map((h) => [h.id, h.state])).to.deep.equal([['host-k', 'ready']]);
    await killHard();
  });
});
