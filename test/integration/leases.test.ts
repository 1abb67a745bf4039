// Leases, housekeeping and quotas through the controller's API, with the controller in-process (real
// SQLite, real HTTP) over a simulated agent, and housekeeping's clock driven by the test
// (`services.housekeeping.sweep(now)`): the admin's policies (422 naming the field), a lease past
// the role's maximum refused with both numbers, extension within it, the warning, the shutdown on the
// host and the deletion after the grace period at the right moments, each in the event log as done by
// housekeeping; reaping of exactly the VMs stopped for longer than the policy; quotas at the boundary.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { DEFAULT_POLICIES, leaseDefaultsOf, type Policies } from '../../server/vms/leases.ts';
import { freePort } from '../support/net.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

interface Answer {
  status: number;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

describe('leases, housekeeping and quotas over the API', function () {
  this.timeout(60_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;
  let admin: string;
  let alice: string;

  async function api(method: string, p: string, token: string, body?: unknown): Promise<Answer> {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }
  const policies = (o: { lease?: Partial<Policies['lease']>; housekeeping?: Policies['housekeeping'] }): Policies => ({
    ...DEFAULT_POLICIES, lease: { ...DEFAULT_POLICIES.lease, ...o.lease }, housekeeping: o.housekeeping ?? DEFAULT_POLICIES.housekeeping,
  });
  const agentState = async (id: string) => {
    const res = await fetch(`${agent.url}/vms/${id}`, { headers: { authorization: `Bearer ${agent.key}` } });
    return res.status === 404 ? 'gone' : ((await res.json()) as { state: string }).state;
  };
  const sweep = (t: number) => ctl.services.housekeeping.sweep(new Date(t));
  const housekeepingEvents = async () => ((await api('GET', '/api/events?source=housekeeping&limit=100', admin)).json.events as Array<{ msg: string; vmId?: string }>).reverse();

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-leases-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    admin = ctl.services.secrets.adminToken;
    agent = await new SimAgent({ hostId: 'host-lease', memoryMiB: 65536, threads: 32, hypervisor: 'kvm', port: await freePort() }).start();
    await agent.enroll(ctl.url, ctl.services.secrets.joinToken);
    await ctl.services.hosts.pollAll();
    expect((await api('POST', '/api/users', admin, { username: 'alice', password: 'alice-password-1' })).status).to.equal(201);
    alice = ctl.services.users.createToken('alice', 'test').token;
  });

  after(async () => {
    await ctl?.stop();
    await agent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('the admin reads and sets the policies; a bad field is a 422 naming it; a student may not', async () => {
    expect((await api('GET', '/api/policies', admin)).json).to.deep.equal(DEFAULT_POLICIES);
    const bad = await api('PUT', '/api/policies', admin, { ...DEFAULT_POLICIES, lease: { ...DEFAULT_POLICIES.lease, warnMinutes: -1 } });
    expect(bad.status).to.equal(422);
    expect(bad.json.error.details.fields[0].field).to.equal('lease.warnMinutes');
    expect((await api('PUT', '/api/policies', alice, DEFAULT_POLICIES)).status).to.equal(403);
    const set = policies({ lease: { defaultMinutes: 60, maxMinutes: { student: 120, teacher: 600, admin: null }, warnMinutes: 15, deleteAfterMinutes: 60 } });
    expect((await api('PUT', '/api/policies', admin, set)).json).to.deep.equal(set);
    expect((await api('GET', '/api/policies', admin)).json).to.deep.equal(set);
  });

  it('a lease past the maximum is refused with both numbers; one within it is extended, warned, shut down and deleted at the right moments', async () => {
    const tooLong = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'too-long', leaseMinutes: 121 });
    expect(tooLong.status).to.equal(422);
    expect(tooLong.json.error.message).to.match(/^leaseMinutes: 121 minutes .*more than the 120 minutes/);
    expect(tooLong.json.error.details.fields[0].field).to.equal('leaseMinutes');

    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'lesson' });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const id = made.json.id as string;
    const created = Date.parse(made.json.createdAt);
    expect(Date.parse(made.json.expiresAt) - created).to.equal(60 * 60_000); // the cluster's default

    // Extend within the maximum (counted from now): +61 min would end 121 min after creation, past it.
    const over = await api('POST', `/api/vms/${id}/extend`, alice, { minutes: 61 });
    expect(over.status).to.equal(422);
    expect(over.json.error.details.fields[0].field).to.equal('minutes');
    expect(over.json.error.details).to.include({ allowed: 120 });
    expect(over.json.error.message).to.match(/more than the 120 minutes/);
    const extended = await api('POST', `/api/vms/${id}/extend`, alice, { minutes: 30 });
    expect(extended.status, JSON.stringify(extended.json)).to.equal(200);
    const end = created + 90 * 60_000;
    expect(extended.json.expiresAt).to.equal(new Date(end).toISOString());

    // 15 minutes before the end: a warning, once.
    expect((await sweep(end - 16 * 60_000)).warned).to.deep.equal([]);
    expect((await sweep(end - 15 * 60_000)).warned).to.deep.equal(['lesson']);
    expect((await sweep(end - 14 * 60_000)).warned).to.deep.equal([]);
    expect((await api('GET', `/api/vms/${id}`, alice)).json.leaseWarnedAt).to.be.a('string');

    // At the end: shut down on its host, not deleted.
    expect((await sweep(end - 1)).shutDown).to.deep.equal([]);
    expect(await agentState(id)).to.equal('running');
    expect((await sweep(end)).shutDown).to.deep.equal(['lesson']);
    expect(await agentState(id)).to.equal('shutoff');
    const ended = (await api('GET', `/api/vms/${id}`, alice)).json;
    expect(ended).to.include({ state: 'shutoff', leaseEndedAt: new Date(end).toISOString(), deleteAt: new Date(end + 60 * 60_000).toISOString() });

    // The grace period later: deleted on its host and from the records.
    expect((await sweep(end + 59 * 60_000)).deleted).to.deep.equal([]);
    expect((await sweep(end + 60 * 60_000)).deleted).to.deep.equal(['lesson']);
    expect(await agentState(id)).to.equal('gone');
    expect((await api('GET', `/api/vms/${id}`, alice)).status).to.equal(404);

    ctl.services.events.flush();
    const said = (await housekeepingEvents()).filter((e) => e.vmId === id).map((e) => e.msg);
    expect(said).to.have.length(3);
    expect(said[0]).to.match(/^lease of VM lesson \(owner alice\) ends in 15 min/);
    expect(said[1]).to.match(/^lease of VM lesson \(owner alice\) ended: shut down by housekeeping/);
    expect(said[2]).to.match(/^lease of VM lesson \(owner alice\) ended 1 h ago: deleted by housekeeping/);
  });

  it('extending a lease that ended rescues the VM from deletion', async () => {
    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'rescued', leaseMinutes: 10 });
    const id = made.json.id as string;
    const end = Date.parse(made.json.expiresAt);
    await sweep(end);
    expect(await agentState(id)).to.equal('shutoff');
    const back = await api('POST', `/api/vms/${id}/extend`, alice, { minutes: 60 });
    expect(back.status, JSON.stringify(back.json)).to.equal(200);
    expect(back.json.leaseEndedAt).to.equal(undefined);
    expect((await sweep(end + 61 * 60_000)).deleted).to.not.include('rescued');
    expect(await agentState(id)).to.equal('shutoff');
    expect((await api('DELETE', `/api/vms/${id}`, alice)).status).to.equal(204);
  });

  it('a teacher of the VM\'s class extends its lease within the teacher\'s maximum; another student cannot see it (404)', async () => {
    const { users, classes } = ctl.services;
    await users.create({ name: 'tom', password: 'tom-password-1', role: 'teacher' });
    await users.create({ name: 'bob', password: 'bob-password-1' });
    const cls = classes.create({ name: '7c', teachers: ['tom'] }, 'admin');
    classes.addMember(cls.id, 'alice', 'student', 'admin');
    const tom = users.createToken('tom', 'test').token;
    const bob = users.createToken('bob', 'test').token;
    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'homework-7c', leaseMinutes: 60 });
    const id = made.json.id as string;
    expect((await api('POST', `/api/vms/${id}/extend`, bob, { minutes: 10 })).status).to.equal(404);
    // Past the student's maximum (120) but within the teacher's (600).
    const byTeacher = await api('POST', `/api/vms/${id}/extend`, tom, { minutes: 300 });
    expect(byTeacher.status, JSON.stringify(byTeacher.json)).to.equal(200);
    expect(Date.parse(byTeacher.json.expiresAt) - Date.parse(made.json.expiresAt)).to.equal(300 * 60_000);
    const tooFar = await api('POST', `/api/vms/${id}/extend`, tom, { minutes: 300 });
    expect(tooFar.status).to.equal(422);
    expect(tooFar.json.error.details).to.include({ allowed: 600 });
    expect((await api('DELETE', `/api/vms/${id}`, alice)).status).to.equal(204);
  });

  it('a template\'s lease default applies to its new VMs, a class\'s comes before it; both set over the API', async () => {
    expect((await api('PUT', '/api/templates/no-such/lease', admin, { defaultMinutes: 45 })).status).to.equal(404);
    expect((await api('PUT', '/api/templates/alpine/lease', alice, { defaultMinutes: 45 })).status).to.equal(403);
    const bad = await api('PUT', '/api/templates/alpine/lease', admin, { defaultMinutes: 0 });
    expect(bad.status).to.equal(422);
    expect(bad.json.error.details.fields[0].field).to.equal('defaultMinutes');
    expect((await api('PUT', '/api/templates/alpine/lease', admin, { defaultMinutes: 45 })).status).to.equal(200);
    const t = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'template-lease' });
    expect(Date.parse(t.json.expiresAt) - Date.parse(t.json.createdAt)).to.equal(45 * 60_000);

    const cls = ctl.services.classes.create({ name: '7d', teachers: ['tom'] }, 'admin');
    const tom = ctl.services.users.createToken('tom', 'test').token;
    expect((await api('PUT', `/api/classes/${cls.id}/lease`, alice, { defaultMinutes: 30 })).status).to.equal(404);
    expect((await api('PUT', `/api/classes/${cls.id}/lease`, tom, { defaultMinutes: 30 })).status).to.equal(200);
    const { vm } = await ctl.services.vms.create(ctl.services.users.get('alice')!, { template: 'alpine', name: 'class-lease' }, undefined, { classId: cls.id });
    expect(Date.parse(vm.expiresAt!) - Date.parse(vm.createdAt)).to.equal(30 * 60_000);

    expect((await api('PUT', '/api/templates/alpine/lease', admin, { defaultMinutes: null })).status).to.equal(200);
    for (const id of [t.json.id, vm.id]) expect((await api('DELETE', `/api/vms/${id}`, alice)).status).to.equal(204);
  });

  it('housekeeping reaps exactly the VMs stopped for longer than the policy: not a running one, not one stopped for less', async () => {
    // Admin VMs without a lease, so that only the reaping acts.
    await api('PUT', '/api/policies', admin, policies({ lease: { defaultMinutes: null }, housekeeping: { reapStoppedAfterMinutes: 7 * 1440 } }));
    const ids: Record<string, string> = {};
    for (const name of ['stopped-long', 'stopped-later', 'still-running']) {
      const made = await api('POST', '/api/vms', admin, { template: 'alpine', name });
      expect(made.json.expiresAt).to.equal(undefined);
      ids[name] = made.json.id;
    }
    expect((await api('POST', `/api/vms/${ids['stopped-long']}/poweroff`, admin)).status).to.equal(200);
    const since = Date.parse((await api('GET', `/api/vms/${ids['stopped-long']}`, admin)).json.stoppedSince);
    const week = 7 * 1440 * 60_000;
    await new Promise((r) => setTimeout(r, 20));
    expect((await api('POST', `/api/vms/${ids['stopped-later']}/poweroff`, admin)).status).to.equal(200);

    expect((await sweep(since + week - 1)).reaped).to.deep.equal([]);
    expect((await sweep(since + week)).reaped).to.deep.equal(['stopped-long']);
    expect(await agentState(ids['stopped-long']!)).to.equal('gone');
    expect(await agentState(ids['stopped-later']!)).to.equal('shutoff');
    expect(await agentState(ids['still-running']!)).to.equal('running');
    // A VM that runs again stops counting.
    expect((await api('POST', `/api/vms/${ids['stopped-later']}/start`, admin)).json.stoppedSince).to.equal(undefined);
    expect((await sweep(since + 2 * week)).reaped).to.deep.equal([]);
    for (const name of ['stopped-later', 'still-running']) await api('DELETE', `/api/vms/${ids[name]}`, admin);
  });

  it('a quota: exactly at it succeeds, one over is refused with 403 quota_exceeded and both numbers', async () => {
    await api('PUT', '/api/policies', admin, DEFAULT_POLICIES);
    const bad = await api('PUT', '/api/users/alice/quota', admin, { quota: { vms: -1 } });
    expect(bad.status).to.equal(422);
    expect(bad.json.error.details.fields[0].field).to.equal('quota.vms');
    expect((await api('PUT', '/api/users/alice/quota', alice, { quota: null })).status).to.equal(403);
    const set = await api('PUT', '/api/users/alice/quota', admin, { quota: { vms: 2, memoryMiB: 1024 } });
    expect(set.status, JSON.stringify(set.json)).to.equal(200);
    expect((await api('POST', '/api/vms', alice, { template: 'alpine', name: 'q-1', memoryMiB: 512 })).status).to.equal(201);
    // Memory: 512 + 768 is one step over 1024.
    const memory = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'q-2', memoryMiB: 768 });
    expect(memory.status).to.equal(403);
    expect(memory.json.error).to.deep.include({ code: 'quota_exceeded' });
    expect(memory.json.error.details).to.deep.include({ resource: 'memoryMiB', used: 512, allowed: 1024, requested: 768 });
    expect((await api('POST', '/api/vms', alice, { template: 'alpine', name: 'q-2', memoryMiB: 512 })).status).to.equal(201);
    const third = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'q-3', memoryMiB: 256 });
    expect(third.status).to.equal(403);
    expect(third.json.error.message).to.match(/you have 2 of 2 VMs/);
    expect(third.json.error.details).to.deep.include({ resource: 'vms', used: 2, allowed: 2 });
    // Usage against the quota, for alice herself and the admin.
    const usage = (await api('GET', '/api/users/alice/quota', alice)).json;
    expect(usage.quota).to.deep.equal({ vms: 2, memoryMiB: 1024 });
    expect(usage.usage.map((u: { resource: string; used: number; allowed: number | null }) => [u.resource, u.used, u.allowed]))
      .to.deep.equal([['vms', 2, 2], ['vcpus', 2, null], ['memoryMiB', 1024, 1024], ['diskGiB', usage.usage[3].used, null]]);
    // Nothing was placed for the refused requests.
    expect(((await api('GET', '/api/vms', alice)).json.vms as Array<{ name: string }>).map((v) => v.name).sort()).to.deep.equal(['q-1', 'q-2']);
  });
});

describe('leases and policies on the pages', function () {
  this.timeout(60_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-lease-pages-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    agent = await new SimAgent({ hostId: 'host-pages', memoryMiB: 16384, hypervisor: 'kvm', port: await freePort() }).start();
    await agent.enroll(ctl.url, ctl.services.secrets.joinToken);
    await ctl.services.hosts.pollAll();
    await ctl.services.users.create({ name: 'bea', password: 'bea-password-1' });
    await ctl.services.users.create({ name: 'root', password: 'root-password-1', role: 'admin' });
  });

  after(async () => {
    await ctl?.stop();
    await agent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('the VM page shows the time left and extends the lease; the list shows the time left; a warned lease shows a banner', async () => {
    const bea = new PageClient(ctl.url);
    await bea.login('bea', 'bea-password-1');
    const { vm } = await ctl.services.vms.create(ctl.services.users.get('bea')!, { template: 'alpine', name: 'essay', leaseMinutes: 130 });
    const detail = await bea.get(`/vms/${vm.id}`);
    expect(detail.text).to.match(/Lease: <b>2 h (9|10) min left<\/b>/);
    expect(detail.text).to.include(`action="/vms/${vm.id}/extend"`);
    expect(detail.text).to.not.include('Its lease ends soon');
    expect((await bea.get('/vms')).text).to.match(/2 h (9|10) min left/);
    const extended = await bea.post(`/vms/${vm.id}/extend`, { minutes: '60' });
    expect(extended.status, extended.text).to.equal(303);
    expect(extended.headers.get('location')).to.equal(`/vms/${vm.id}`);
    expect(Date.parse(ctl.services.vms.get(ctl.services.system, vm.id).expiresAt!) - Date.parse(vm.expiresAt!)).to.equal(60 * 60_000);
    // Past the student's maximum (7 days): refused with the numbers, the lease unchanged.
    const refused = await bea.post(`/vms/${vm.id}/extend`, { minutes: '10080' });
    expect(refused.status).to.equal(422);
    expect(refused.text).to.match(/more than the 10080 minutes/);
    await ctl.services.housekeeping.sweep(new Date(Date.parse(vm.expiresAt!) + 60 * 60_000 - 10 * 60_000));
    expect((await bea.get(`/vms/${vm.id}`)).text).to.include('Its lease ends soon');
  });

  it('the admin\'s policies page saves valid policies and marks a wrong field without saving anything', async () => {
    const root = new PageClient(ctl.url);
    await root.login('root', 'root-password-1');
    const page = await root.get('/admin/policies');
    expect(page.status).to.equal(200);
    expect(page.text).to.include('name="lease.maxMinutes.student" type="text" inputmode="numeric" value="10080"');
    const form: Record<string, string> = {};
    for (const m of page.text.matchAll(/<input id="policy-[^"]+" name="([^"]+)" type="text" inputmode="numeric" value="([^"]*)"/g)) form[m[1]!] = m[2]!;
    expect(Object.keys(form)).to.have.length(19);
    const bad = await root.post('/admin/policies', { ...form, 'lease.warnMinutes': 'soon' });
    expect(bad.status).to.equal(422);
    expect(bad.text).to.match(/id="policy-lease-warnMinutes-err"/);
    expect(ctl.services.policies.current().lease.warnMinutes).to.equal(15);
    const ok = await root.post('/admin/policies', { ...form, 'housekeeping.reapStoppedAfterMinutes': '10080', 'quota.student.vms': '3' });
    expect(ok.status, ok.text).to.equal(200);
    expect(ctl.services.policies.current().housekeeping.reapStoppedAfterMinutes).to.equal(10080);
    expect(ctl.services.policies.current().quota.student).to.deep.equal({ vms: 3 });
    expect(ok.text).to.match(/<td>bea<\/td><td data-label="Role">student<\/td><td data-label="VMs">1 VM of 3 VMs<\/td>/);
    const student = new PageClient(ctl.url);
    await student.login('bea', 'bea-password-1');
    expect((await student.get('/admin/policies')).status).to.equal(403);

    // Each template's lease: a wrong value is marked and nothing is saved; empty clears it.
    const wrong = await root.post('/admin/policies/templates', { 'lease.alpine': '90', 'lease.desktop': 'x' });
    expect(wrong.status).to.equal(422);
    expect(wrong.text).to.match(/id="template-lease-desktop-err"/);
    expect(leaseDefaultsOf(ctl.services.store, 'alpine', undefined)).to.deep.equal({});
    expect((await root.post('/admin/policies/templates', { 'lease.alpine': '90', 'lease.desktop': '' })).status).to.equal(200);
    expect(leaseDefaultsOf(ctl.services.store, 'alpine', undefined)).to.deep.equal({ templateMinutes: 90 });
    expect((await root.get('/admin/policies')).text).to.include('name="lease.alpine" type="text" inputmode="numeric" value="90"');
    await root.post('/admin/policies/templates', { 'lease.alpine': '', 'lease.desktop': '' });
  });

  it('the users page shows each user\'s usage against their quota and sets it; the class page its VMs\' against the class\'s', async () => {
    const root = new PageClient(ctl.url);
    await root.login('root', 'root-password-1');
    ctl.services.policies.set({ ...ctl.services.policies.current(), quota: { student: { vms: 3 }, teacher: {}, admin: {} } });
    const users = await root.get('/admin/users');
    expect(users.text).to.match(/Quota: VMs 1 of 3/);
    expect(users.text).to.include('action="/admin/users/bea/quota"');
    const set = await root.post('/admin/users/bea/quota', { vms: '1', vcpus: '', memoryMiB: '', diskGiB: '', next: '/admin/users' });
    expect(set.status, set.text).to.equal(303);
    expect(ctl.services.quotas.ofUser('bea')).to.deep.equal({ vms: 1 });
    expect((await root.get('/admin/users')).text).to.match(/Quota: VMs 1 of 1 <b>\(full\)<\/b>/);
    const refused = await ctl.services.vms.create(ctl.services.users.get('bea')!, { template: 'alpine', name: 'one-too-many' }).catch((err: unknown) => err);
    expect(refused).to.include({ status: 403, code: 'quota_exceeded', message: 'quota exceeded: you have 1 of 1 VMs' });

    const cls = ctl.services.classes.create({ name: '7b' }, 'root');
    await ctl.services.vms.create(ctl.services.users.get('root')!, { template: 'alpine', name: 'class-vm', memoryMiB: 512 }, undefined, { classId: cls.id });
    expect((await root.post(`/classes/${cls.id}/quota`, { vms: '', vcpus: '', memoryMiB: '512', diskGiB: '', next: `/classes/${cls.id}` })).status).to.equal(303);
    ctl.services.classes.addMember(cls.id, 'bea', 'student', 'root');
    const page = await root.get(`/classes/${cls.id}`);
    expect(page.status).to.equal(200);
    expect(page.text).to.match(/<td data-label="VMs">1<div class="quota-usage">\s*<p class="small">Quota: VMs 1 of 1 <b>\(full\)<\/b>/);
    expect(page.text).to.match(/<td>memory<\/td><td data-label="Used">512 MiB<\/td><td data-label="Allowed">512 MiB <b>\(full\)<\/b>/);
    const classRefusal = await ctl.services.vms.create(ctl.services.users.get('root')!, { template: 'alpine', name: 'class-vm-2', memoryMiB: 256 }, undefined, { classId: cls.id })
      .catch((err: unknown) => err);
    expect(classRefusal).to.include({ status: 403, code: 'quota_exceeded' });
    expect((classRefusal as Error).message).to.equal('quota exceeded: class 7b uses 512 MiB of 512 MiB of memory and this VM asks for 256 MiB');
  });
});
