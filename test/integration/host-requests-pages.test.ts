// The admin's explicit decisions on the hosts page, over real HTTP with the session cookie and CSRF
// token a browser has: a refused replacement enrollment (a known host id, a new key, no token) shown
// old and new side by side and approved or rejected, and VMs a host reports that the controller did not
// place (strangers) adopted for a user. The same through the JSON API, and refused to students.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { keyFingerprint, MAX_REPLACEMENTS_PER_HOST } from '../../server/hosts/registry.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort, jsonOrText, waitFor } from '../support/net.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('hosts page: replacement requests and strangers (HTTP, CSRF)', function () {
  this.timeout(60_000);
  let dir: string;
  let ctl: RunningController;
  let admin: PageClient;
  let alice: PageClient;
  const agents: SimAgent[] = [];

  const api = async (method: string, route: string, body?: unknown, token?: string) => {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(ctl.url + route, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    return { status: res.status, json: jsonOrText(await res.text()) };
  };
  const asAdmin = (method: string, route: string, body?: unknown) => api(method, route, body, ctl.services.secrets.adminToken);
  const enroll = (a: { hostId: string; url: string; key: string }, hostname = `pc-${a.hostId}`) =>
    api('POST', '/api/enroll', { hostId: a.hostId, hostname, agentUrl: a.url, agentKey: a.key, version: 'test' });
  const agent = async (hostId: string) => {
    const a = await new SimAgent({ hostId, hostname: `pc-${hostId}`, memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    agents.push(a);
    return a;
  };

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-hostreq-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000 }); // the simulated agent's answer on a loaded machine; strangers' ports refuse at once
    await ctl.services.users.create({ name: 'alice', password: 'alice-pass-1' });
    admin = new PageClient(ctl.url);
    await admin.firstAdminLogin(ctl.services.secrets.adminToken, 'teacher-pass-1');
    alice = new PageClient(ctl.url);
    await alice.login('alice', 'alice-pass-1');
  });

  after(async () => {
    await ctl?.stop();
    for (const a of agents) await a.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('should keep a refused replacement as a request, show old and new side by side, and reject it only with CSRF', async () => {
    const real = await agent('pc-1');
    expect((await api('POST', '/api/enroll', { hostId: 'pc-1', hostname: 'pc-pc-1', agentUrl: real.url, agentKey: real.key, version: 'test', joinToken: ctl.services.secrets.joinToken })).status).to.equal(200);
    await ctl.services.hosts.pollAll();
    expect((await admin.get('/hosts')).text).to.not.contain('Replacement requests');

    const refused = await enroll({ hostId: 'pc-1', url: 'http://127.0.0.1:9', key: 'stranger-key-0001' }, 'evil-pc');
    expect(refused.status).to.equal(409);
    expect(refused.json.error.code).to.equal('host_already_enrolled');
    const requestId = refused.json.error.details.replacementRequest as string;
    expect(requestId).to.match(/^r-[0-9a-f]{12}$/);
    // Asked again (an agent retries): still one request, counted.
    expect((await enroll({ hostId: 'pc-1', url: 'http://127.0.0.1:9', key: 'stranger-key-0001' }, 'evil-pc')).json.error.details.replacementRequest).to.equal(requestId);

    const listed = await asAdmin('GET', '/api/host-replacements');
    expect(listed.json.replacements).to.have.length(1);
    expect(listed.json.replacements[0]).to.deep.include({
      id: requestId, hostId: 'pc-1', from: '127.0.0.1', times: 2,
      requested: { hostname: 'evil-pc', url: 'http://127.0.0.1:9', keyFingerprint: keyFingerprint('stranger-key-0001'), version: 'test' },
    });
    expect(listed.json.replacements[0].current).to.include({ hostname: 'pc-pc-1', url: real.url, keyFingerprint: keyFingerprint(real.key), state: 'ready' });
    expect(JSON.stringify(listed.json)).to.not.contain('stranger-key-0001').and.not.contain(real.key);

    const page = await admin.get('/hosts');
    expect(page.text).to.contain('Replacement requests').and.contain(`id="replacement-${requestId}"`);
    for (const shown of [real.url, 'http://127.0.0.1:9', keyFingerprint(real.key), keyFingerprint('stranger-key-0001'), 'evil-pc']) expect(page.text).to.contain(shown);
    expect(page.text).to.not.contain('stranger-key-0001');

    // No CSRF token: refused, nothing changes. A student: refused.
    expect((await admin.post(`/hosts/replacements/${requestId}/reject`, {}, {}, { csrf: false })).status).to.equal(403);
    expect((await alice.post(`/hosts/replacements/${requestId}/reject`, {})).status).to.equal(403);
    expect((await api('GET', '/api/host-replacements', undefined, undefined)).status).to.equal(401);
    expect(ctl.services.hosts.replacements()).to.have.length(1);

    const rejected = await admin.post(`/hosts/replacements/${requestId}/reject`, {}, { 'HX-Request': 'true' });
    expect(rejected.status).to.equal(200);
    expect(rejected.text.trimStart()).to.match(/^<div id="host-replacements"/);
    expect(rejected.text).to.contain('Rejected pc-pc-1');
    expect(ctl.services.hosts.replacements()).to.deep.equal([]);
    expect(ctl.services.hosts.record('pc-1')).to.include({ agentUrl: real.url, agentKey: real.key, state: 'ready' });
    const events = (await asAdmin('GET', '/api/events?hostId=pc-1&limit=50')).json.events as { msg: string }[];
    expect(events.map((e) => e.msg).join('\n')).to.match(new RegExp(`replacement request ${requestId} .* rejected by admin`));
  });

  it('should swap the key and URL on approval (page), poll the new agent with its key, and keep the host\'s state', async () => {
    const old = agents[0]!;
    await old.stop(); // the PC is reinstalled: a new agent key, a new address
    const reinstalled = await agent('pc-1');
    const refused = await enroll(reinstalled);
    expect(refused.status).to.equal(409);
    const requestId = refused.json.error.details.replacementRequest as string;
    await admin.get('/hosts');
    const approved = await admin.post(`/hosts/replacements/${requestId}/approve`, {}, { 'HX-Request': 'true' });
    expect(approved.status, approved.text).to.equal(200);
    expect(approved.text).to.contain('Replaced pc-pc-1');
    expect(ctl.services.hosts.record('pc-1')).to.include({ agentUrl: reinstalled.url, agentKey: reinstalled.key });
    await ctl.services.hosts.pollAll();
    expect(ctl.services.hosts.get('pc-1')).to.include({ state: 'ready', missedPolls: 0, url: reinstalled.url });
    expect(reinstalled.hits.get('GET /status')).to.be.greaterThan(0);
    // The agent's next enrollment, with its own key now, goes through as usual.
    expect((await enroll(reinstalled)).status).to.equal(200);
    const events = (await asAdmin('GET', '/api/events?hostId=pc-1&limit=50')).json.events as { msg: string }[];
    expect(events.map((e) => e.msg).join('\n')).to.contain(`replaced by admin: agent key ${keyFingerprint(old.key)} -> ${keyFingerprint(reinstalled.key)}`);
  });

  it('should approve through the JSON API too, and bound the requests per host', async () => {
    const ids: string[] = [];
    const cert = 'c'.repeat(64); // an https:// agent: the replacement pins its certificate
    for (let i = 0; i < MAX_REPLACEMENTS_PER_HOST; i++) {
      const https = i === 1 ? { certFingerprint: cert } : {};
      const r = await api('POST', '/api/enroll', {
        hostId: 'pc-1', hostname: 'pc-pc-1', agentUrl: `${i === 1 ? 'https' : 'http'}://127.0.0.1:${1000 + i}`, agentKey: `flood-key-${i}-0000000`, version: 'test', ...https,
      });
      expect(r.status, JSON.stringify(r.json)).to.equal(409);
      ids.push(r.json.error.details.replacementRequest);
    }
    expect(ctl.services.hosts.replacements().find((x) => x.id === ids[1])!.requested).to.include({ certFingerprint: cert });
    const over = await enroll({ hostId: 'pc-1', url: 'http://127.0.0.1:2000', key: 'flood-key-over-000000' });
    expect(over.status).to.equal(503);
    expect(over.json.error.message).to.match(/replacement requests already wait for host pc-1/);
    expect((await api('POST', `/api/host-replacements/${ids[0]}/approve`, undefined, undefined)).status).to.equal(401);
    const approved = await asAdmin('POST', `/api/host-replacements/${ids[1]}/approve`);
    expect(approved.status).to.equal(200);
    expect(approved.json).to.include({ id: 'pc-1', url: 'https://127.0.0.1:1001', certFingerprint: cert });
    expect(ctl.services.hosts.record('pc-1')!.agentFingerprint).to.equal(cert);
    expect(ctl.services.hosts.replacements(), 'approval drops the host\'s other requests').to.deep.equal([]);
    expect((await asAdmin('POST', `/api/host-replacements/${ids[0]}/reject`)).status).to.equal(404);
    ctl.services.hosts.remove('pc-1');
  });

  it('should list strangers on the hosts page and adopt one for a user (CSRF, owner required, admin only)', async () => {
    const host = await agent('pc-2');
    expect((await api('POST', '/api/enroll', { hostId: 'pc-2', hostname: 'pc-pc-2', agentUrl: host.url, agentKey: host.key, version: 'test', joinToken: ctl.services.secrets.joinToken })).status).to.equal(200);
    await ctl.services.hosts.pollAll();
    const vmId = await host.addVm({ name: 'handmade', template: 'alpine' }); // made by hand on the PC
    await host.stop();
    await host.start(); // the agent takes the machine's VMs at its start
    await waitFor('the stranger reported', async () => {
      await ctl.services.hosts.pollAll(); // the first poll may meet the old agent's closed connection
      return ctl.services.vms.strangers(ctl.services.system).length === 1;
    }, 30_000);

    const page = await admin.get('/hosts');
    expect(page.text).to.contain('VMs SkyHost did not place').and.contain(`id="stranger-${vmId}"`).and.contain('handmade');
    expect(page.text).to.contain('<option value="alice">alice</option>');
    const adopt = `/hosts/pc-2/strangers/${vmId}/adopt`;
    expect((await admin.post(adopt, { owner: 'alice' }, {}, { csrf: false })).status).to.equal(403);
    expect((await alice.post(adopt, { owner: 'alice' })).status).to.equal(403);
    const noOwner = await admin.post(adopt, { owner: '' }, { 'HX-Request': 'true' });
    expect(noOwner.status).to.equal(422);
    expect(noOwner.text).to.contain('choose the user the VM becomes');
    const nobody = await admin.post(adopt, { owner: 'nobody' }, { 'HX-Request': 'true' });
    expect(nobody.status).to.equal(422);
    expect(nobody.text).to.contain('no user');
    expect(ctl.services.vms.strangers(ctl.services.system)).to.have.length(1);

    const done = await admin.post(adopt, { owner: 'alice', name: 'alice-handmade' }, { 'HX-Request': 'true' });
    expect(done.status, done.text).to.equal(200);
    expect(done.text).to.contain('VM alice-handmade now belongs to alice').and.not.contain(`id="stranger-${vmId}"`);
    expect(ctl.services.vms.list(ctl.services.users.get('alice')!).map((v) => [v.id, v.name, v.host])).to.deep.equal([[vmId, 'alice-handmade', 'pc-2']]);
    expect(ctl.services.vms.strangers(ctl.services.system)).to.deep.equal([]);
    await ctl.services.hosts.pollAll(); // the next report updates the record, no stranger again
    expect(ctl.services.vms.strangers(ctl.services.system)).to.deep.equal([]);
    expect((await alice.get('/vms', { 'HX-Request': 'true' })).text).to.contain('alice-handmade');
  });
});
