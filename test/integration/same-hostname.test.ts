// Two lab PCs cloned from one image share a hostname: every list, event, filter and "no host fits"
// reason tells them apart (a short part of the host id), and an admin can rename one (the API and
// the hosts page), after which neither needs the suffix. Simulated agents on a real controller.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { bearerApi, type ApiCall } from '../support/real-pair.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('hosts with the same hostname', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-same-hostname-'));
  let controller: RunningController;
  let api: ApiCall;
  let admin: PageClient;
  const a = new SimAgent({ hostId: '3f2a9b7c0d1e2f3a', hostname: 'lab-pc', memoryMiB: 2048, threads: 2 });
  const b = new SimAgent({ hostId: '9c01d4e5f6a7b8c9', hostname: 'lab-pc', memoryMiB: 2048, threads: 2 });
  const labelA = 'lab-pc (3f2a)';
  const labelB = 'lab-pc (9c01)';

  before(async () => {
    controller = await startController({ dataDir: dir, log: logger('same-hostname'), port: 0, listen: '127.0.0.1', poll: false });
    api = bearerApi(() => controller.url, () => controller.services.secrets.adminToken);
    for (const agent of [a, b]) {
      await agent.start();
      await agent.enroll(controller.url, controller.services.joinTokens.clusterToken());
    }
    await controller.services.hosts.pollAll();
    admin = new PageClient(controller.url);
    await admin.firstAdminLogin(controller.services.secrets.adminToken, 'teacher-pass-1');
  });

  after(async () => {
    await controller?.stop();
    await a.stop();
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('should give each a distinct label in the API, keeping the hostname as reported', async () => {
    const { json } = await api('GET', '/api/hosts');
    const byId = new Map<string, { hostname: string; label: string }>(json.hosts.map((h: { id: string }) => [h.id, h]));
    expect(byId.get(a.hostId)).to.include({ hostname: 'lab-pc', label: labelA });
    expect(byId.get(b.hostId)).to.include({ hostname: 'lab-pc', label: labelB });
  });

  it('should show both labels on the hosts page, the dashboard tiles and the events filter', async () => {
    const hosts = (await admin.get('/hosts')).text;
    expect(hosts).to.contain(`>${labelA}</`).and.contain(`>${labelB}</`);
    const dash = (await admin.get('/')).text;
    expect(dash).to.contain(`>${labelA}</`).and.contain(`>${labelB}</`);
    const events = (await admin.get('/admin/events')).text;
    expect(events).to.contain(`<option value="${a.hostId}">${labelA}</option>`).and.contain(`<option value="${b.hostId}">${labelB}</option>`);
  });

  it('should name each in its events', async () => {
    controller.services.events.record({ source: 'test', msg: 'something on b', hostId: b.hostId });
    const events = (await admin.get('/admin/events')).text;
    expect(events).to.match(new RegExp(`test · host ${labelB.replace(/[()]/g, '\\$&')}</span><span class="msg">something on b`));
  });

  it('should name each in the reasons "no host fits" gives, in the API and on the request form', async () => {
    const big = await api('POST', '/api/vms', { template: 'alpine', name: 'too-big', memoryMiB: 8192 });
    expect(big.status).to.equal(503);
    const named = big.json.error.details.rejected.map((r: { hostname: string }) => r.hostname).sort();
    expect(named).to.deep.equal([labelA, labelB]);
    const form = await admin.post('/vms', { template: 'alpine', size: 'large', name: 'too-big' }, { 'HX-Request': 'true' });
    expect(form.status).to.equal(503);
    expect(form.text).to.contain(`<li><b>${labelA}</b>: `).and.contain(`<li><b>${labelB}</b>: `);
  });

  it('should let an admin rename one: the name shows instead, and the other needs no suffix any more', async () => {
    const renamed = await api('PUT', `/api/hosts/${a.hostId}/name`, { name: 'PC 7 (window)' });
    expect(renamed.status, JSON.stringify(renamed.json)).to.equal(200);
    expect(renamed.json).to.include({ hostname: 'lab-pc', displayName: 'PC 7 (window)', label: 'PC 7 (window)' });
    expect((await api('GET', `/api/hosts/${b.hostId}`)).json.label).to.equal('lab-pc');
    const bad = await api('PUT', `/api/hosts/${a.hostId}/name`, { name: 'x'.repeat(65) });
    expect(bad.status).to.equal(422);
    expect(JSON.stringify(bad.json)).to.contain('name');
    expect((await api('PUT', '/api/hosts/nosuchhost/name', { name: 'x' })).status).to.equal(404);
    // the hosts page's Rename form: empty gives the hostname back
    const page = await admin.post(`/hosts/${a.hostId}/name`, { name: '' });
    expect(page.status).to.equal(303);
    expect((await api('GET', `/api/hosts/${a.hostId}`)).json).to.include({ label: labelA }).and.not.have.property('displayName');
    const events = (await admin.get('/admin/events')).text;
    expect(events).to.contain('renamed back to its hostname by admin').and.contain('renamed &quot;PC 7 (window)&quot; by');
  });
  it('should tell them apart no more once one enrolls again under a new hostname, and again once it is gone', async () => {
    // b's PC was renamed in the OS and its agent enrolls again with its own key: the labels change at once, without a poll
    const renamedPc = new SimAgent({ hostId: b.hostId, key: b.key, hostname: 'lab-pc-2', memoryMiB: 2048, threads: 2 });
    await renamedPc.start();
    try {
      await renamedPc.enroll(controller.url);
      expect((await api('GET', `/api/hosts/${a.hostId}`)).json.label).to.equal('lab-pc');
      expect((await api('GET', `/api/hosts/${b.hostId}`)).json.label).to.equal('lab-pc-2');
      const back = new SimAgent({ hostId: b.hostId, key: b.key, hostname: 'lab-pc', memoryMiB: 2048, threads: 2 });
      await back.start();
      try {
        await back.enroll(controller.url);
        expect((await api('GET', `/api/hosts/${a.hostId}`)).json.label).to.equal(labelA);
        expect((await api('DELETE', `/api/hosts/${b.hostId}`)).status).to.be.oneOf([200, 204]);
        expect((await api('GET', `/api/hosts/${a.hostId}`)).json.label).to.equal('lab-pc');
      } finally {
        await back.stop();
      }
    } finally {
      await renamedPc.stop();
    }
  });
});
