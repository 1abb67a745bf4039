// Classes end to end on an in-process controller (real SQLite, HTTP and WebSockets) with a simulated
// agent: an admin makes classes and teachers, a teacher imports students from a CSV with bad rows,
// a teacher sees and acts on their classes' VMs and opens their consoles; a student of another class
// sees none of them and a classmate's console WebSocket is refused.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import WebSocket from 'ws';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('classes: roles, bulk students, who sees which VM', function () {
  this.timeout(60_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;
  let admin: string;
  const tokens = new Map<string, string>();
  let classA: string;
  let classB: string;

  async function api(method: string, p: string, token: string, body?: unknown) {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined, headers: res.headers };
  }
  const tokenOf = (name: string) => {
    if (!tokens.has(name)) tokens.set(name, ctl.services.users.createToken(name, 'test').token);
    return tokens.get(name)!;
  };
  /** The status a console WebSocket gets: 101 when it opens, else the refusal's status. */
  function consoleStatus(vmId: string, headers: Record<string, string>): Promise<{ status: number }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`${ctl.url.replace('http', 'ws')}/api/vms/${vmId}/console`, { headers });
      ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0 }));
      ws.on('message', () => { // the agent's console answered through the controller
        resolve({ status: 101 });
        ws.close();
      });
      ws.on('error', () => {}); // the refusal arrives as unexpected-response
    });
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-classes-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    agent = await new SimAgent({ hostId: 'host-a', hostname: 'pc-a', memoryMiB: 16384, hypervisor: 'tcg', port: await freePort() }).start();
    admin = ctl.services.secrets.adminToken;
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: 'host-a', hostname: 'pc-a', agentUrl: agent.url, agentKey: agent.key, version: 'test', joinToken: ctl.services.secrets.joinToken }),
    });
    expect(enrolled.status).to.equal(200);
    await ctl.services.hosts.pollAll();
  });

  after(async () => {
    await ctl?.stop();
    await agent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('an admin creates teachers with every role the API offers, and classes with their teachers', async () => {
    for (const [name, role] of [['berg', 'teacher'], ['lund', 'teacher'], ['boss', 'admin'], ['solo', 'student']] as const) {
      const made = await api('POST', '/api/users', admin, { username: name, password: `${name}-password-1`, role });
      expect(made.status, JSON.stringify(made.json)).to.equal(201);
      expect(made.json.user.role).to.equal(role);
    }
    expect((await api('PUT', '/api/users/solo/role', admin, { role: 'teacher' })).json.user.role).to.equal('teacher');
    expect((await api('PUT', '/api/users/solo/role', admin, { role: 'student' })).json.user.role).to.equal('student');
    expect((await api('PUT', '/api/users/solo/role', admin, { role: 'user' })).status, 'the old role name is refused').to.equal(422);
    const a = await api('POST', '/api/classes', admin, { name: '7b', teachers: ['berg'] });
    expect(a.status, JSON.stringify(a.json)).to.equal(201);
    classA = a.json.class.id;
    const b = await api('POST', '/api/classes', admin, { name: '8a', teachers: ['lund'] });
    classB = b.json.class.id;
    expect((await api('POST', '/api/classes', admin, { name: '7b' })).status).to.equal(409);
    expect((await api('POST', '/api/classes', tokenOf('berg'), { name: '9c' })).status, 'a teacher does not create classes').to.equal(403);
    expect((await api('POST', `/api/classes/${classA}/teachers`, admin, { user: 'solo' })).status, 'a student cannot teach').to.equal(422);
  });

  it('a teacher imports a CSV with bad rows: the good rows are created, the bad listed with a reason, nothing else changes', async () => {
    const before = (await api('GET', '/api/users', admin)).json.users;
    const csv = ['name,display name', 'anna,Anna Berg', '', 'ben', '<b>mallory</b>', 'anna,Anna twice', 'solo', 'x'.repeat(40), 'cleo-a'].join('\n');
    const res = await api('POST', `/api/classes/${classA}/students/bulk`, tokenOf('berg'), { csv });
    expect(res.status, JSON.stringify(res.json)).to.equal(201);
    expect(res.headers.get('cache-control')).to.equal('no-store');
    expect(res.json.created.map((c: any) => c.name)).to.deep.equal(['anna', 'ben', 'cleo-a']);
    expect(res.json.rejected.map((r: any) => [r.line, r.reason])).to.deep.equal([
      [3, 'empty line'], [5, 'contains markup (< or >)'], [6, 'the same name as line 2'], [7, 'a user with this name already exists'],
      [8, 'too long: at most 32 characters (it has 40)'],
    ]);
    const after = (await api('GET', '/api/users', admin)).json.users;
    expect(after.filter((u: any) => !['anna', 'ben', 'cleo-a'].includes(u.name)), 'nothing else changed').to.deep.equal(before);
    expect(after.find((u: any) => u.name === 'anna')).to.include({ role: 'student', displayName: 'Anna Berg', mustChangePassword: true });
    // The first login with the one-time password asks for a new one.
    const anna = res.json.created[0];
    const login = await fetch(`${ctl.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'anna', password: anna.password }) });
    expect(((await login.json()) as { mustChangePassword: boolean }).mustChangePassword).to.equal(true);
    // A teacher of another class cannot import into this one (404: it is not theirs to know of).
    expect((await api('POST', `/api/classes/${classA}/students/bulk`, tokenOf('lund'), { prefix: 'x-', count: 2 })).status).to.equal(404);
    const pattern = await api('POST', `/api/classes/${classB}/students/bulk`, tokenOf('lund'), { prefix: '8a-', count: 3 });
    expect(pattern.json.created.map((c: any) => c.name)).to.deep.equal(['8a-01', '8a-02', '8a-03']);
    const textCsv = await fetch(`${ctl.url}/api/classes/${classB}/students/bulk`, {
      method: 'POST', headers: { authorization: `Bearer ${tokenOf('lund')}`, 'content-type': 'text/csv' }, body: 'dora;Dora\n',
    });
    expect(textCsv.status).to.equal(201);
    expect(((await textCsv.json()) as any).created[0].name).to.equal('dora');
  });

  it('a teacher sees and acts on every VM of their classes; a student of another class sees none of them', async () => {
    const made: Record<string, string> = {};
    for (const who of ['anna', 'ben', '8a-01', 'berg']) {
      const r = await api('POST', '/api/vms', tokenOf(who), { template: 'alpine', name: `${who.replace(/[^a-z0-9]/g, '')}-vm` });
      expect(r.status, JSON.stringify(r.json)).to.equal(201);
      made[who] = r.json.id;
    }
    const names = async (who: string) => ((await api('GET', '/api/vms', tokenOf(who))).json.vms as any[]).map((v) => v.owner).sort();
    expect(await names('berg')).to.deep.equal(['anna', 'ben', 'berg']);
    expect(await names('lund')).to.deep.equal(['8a-01']);
    expect(await names('8a-01'), 'a student of another class sees none of 7b\'s VMs').to.deep.equal(['8a-01']);
    expect(await names('ben'), 'a classmate sees only their own').to.deep.equal(['ben']);
    expect((await api('GET', `/api/vms/${made.anna}`, tokenOf('8a-01'))).status).to.equal(404);
    expect((await api('POST', `/api/vms/${made.anna}/shutdown`, tokenOf('ben'))).status).to.equal(404);
    const stopped = await api('POST', `/api/vms/${made.anna}/poweroff`, tokenOf('berg'));
    expect(stopped.status, JSON.stringify(stopped.json)).to.equal(200);
    expect(stopped.json.state).to.equal('shutoff');
    expect((await api('POST', `/api/vms/${made.anna}/start`, tokenOf('berg'))).json.state).to.equal('running');
    // A student joining the class later: their teacher's list shows their VM at once (the list cache follows the classes).
    const solo = await api('POST', '/api/vms', tokenOf('solo'), { template: 'alpine', name: 'solo-vm' });
    expect(solo.status).to.equal(201);
    expect(await names('berg')).to.not.include('solo');
    expect((await api('POST', `/api/classes/${classA}/students`, tokenOf('berg'), { user: 'solo' })).status).to.equal(200);
    expect(await names('berg')).to.include('solo');
    expect((await api('DELETE', `/api/classes/${classA}/students/solo`, tokenOf('berg'))).status).to.equal(200);
    expect(await names('berg')).to.not.include('solo');
    // A student lists only their own classes, without their classmates; a class's own routes are a 404 to them.
    const theirs = (await api('GET', '/api/classes', tokenOf('anna'))).json.classes as any[];
    expect(theirs.map((c) => [c.name, c.teachers, c.students])).to.deep.equal([['7b', ['berg'], ['anna']]]);
    expect((await api('GET', `/api/classes/${classA}`, tokenOf('anna'))).status).to.equal(404);
    expect((await api('POST', `/api/classes/${classA}/students`, tokenOf('anna'), { user: 'solo' })).status).to.equal(404);
  });

  it('a student cannot open a classmate\'s console (WebSocket refused); their teacher and they themselves can', async () => {
    const annaVm = ((await api('GET', '/api/vms', tokenOf('anna'))).json.vms as any[])[0];
    expect((await consoleStatus(annaVm.id, { authorization: `Bearer ${tokenOf('ben')}` })).status, 'classmate').to.equal(404);
    expect((await consoleStatus(annaVm.id, { authorization: `Bearer ${tokenOf('8a-01')}` })).status, 'another class').to.equal(404);
    expect((await consoleStatus(annaVm.id, { authorization: `Bearer ${tokenOf('lund')}` })).status, 'another class\'s teacher').to.equal(404);
    expect((await consoleStatus(annaVm.id, { authorization: `Bearer ${tokenOf('berg')}` })).status, 'their teacher').to.equal(101);
    expect((await consoleStatus(annaVm.id, { authorization: `Bearer ${tokenOf('anna')}` })).status).to.equal(101);
    // A classmate signed in with a browser session (password changed) is refused the same way.
    const benPage = new PageClient(ctl.url);
    await ctl.services.users.changePassword('ben', 'ben-own-password');
    await benPage.login('ben', 'ben-own-password');
    expect((await consoleStatus(annaVm.id, { cookie: benPage.cookie, origin: ctl.url })).status).to.equal(404);
  });

  it('pages: a teacher\'s Classes shows only their classes; a student gets 403; another class is a 404', async () => {
    const berg = new PageClient(ctl.url);
    await berg.login('berg', 'berg-password-1');
    const nav = await berg.get('/');
    expect(nav.text).to.contain('href="/classes"').and.contain('href="/account"');
    const list = await berg.get('/classes');
    expect(list.status).to.equal(200);
    expect(list.text).to.contain('7b').and.not.contain('8a');
    expect(list.text).to.not.contain('id="class-form"');
    expect((await berg.get(`/classes/${classB}`)).status).to.equal(404);
    const vms = await berg.get('/vms?all=1', { 'HX-Request': 'true' });
    expect(vms.text).to.contain('anna-vm').and.contain('ben-vm').and.not.contain('8a01-vm');
    expect((await berg.get('/vms', { 'HX-Request': 'true' })).text, 'My VMs stays mine').to.not.contain('anna-vm');
    const page = await berg.get(`/classes/${classA}`);
    expect(page.text).to.contain('Anna Berg').and.contain('id="class-import"');
    const ben = new PageClient(ctl.url);
    await ben.login('ben', 'ben-own-password');
    expect((await ben.get('/')).text).to.not.contain('href="/classes"');
    expect((await ben.get('/classes')).status).to.equal(403);
    expect((await ben.get('/vms?all=1', { 'HX-Request': 'true' })).text).to.contain('ben-vm').and.not.contain('anna-vm');
    expect((await ben.get(`/classes/${classA}`)).status).to.equal(403);
  });

  it('pages: an import shows the one-time passwords once on a printable sheet, and the bad rows with their reason', async () => {
    const berg = new PageClient(ctl.url);
    await berg.login('berg', 'berg-password-1');
    await berg.get(`/classes/${classA}`);
    const sheet = await berg.post(`/classes/${classA}/import`, { csv: 'emil,Emil E\n\n<b>x</b>\nemil\n' });
    expect(sheet.status, sheet.text).to.equal(200);
    expect(sheet.headers.get('cache-control')).to.equal('no-store');
    expect(sheet.text).to.contain('@media print').and.contain('Emil E').and.contain('contains markup').and.contain('the same name as line 1');
    expect(sheet.text).to.contain('&lt;b&gt;x&lt;/b&gt;').and.not.contain('<b>x</b>');
    const password = /class="pw">([a-z2-9-]{14})</.exec(sheet.text)![1]!;
    await ctl.services.users.authenticate('emil', password);
    expect((await berg.get(`/classes/${classA}`)).text, 'the class page does not show it again').to.not.contain(password);
    // Through htmx the form is multipart, with a chosen file.
    const form = new FormData();
    form.set('file', new Blob(['name\nfrida,Frida F\n'], { type: 'text/csv' }), 'class.csv');
    form.set('csv', '');
    form.set('prefix', '');
    const res = await fetch(`${ctl.url}/classes/${classA}/import`, {
      method: 'POST', body: form, headers: { cookie: berg.cookie, 'x-csrf-token': berg.csrf, 'hx-request': 'true', accept: 'text/html' },
    });
    const text = await res.text();
    expect(res.status, text).to.equal(200);
    expect(res.headers.get('hx-retarget')).to.equal('#main');
    expect(text).to.contain('Frida F').and.not.contain('<html');
    const none = await berg.post(`/classes/${classA}/import`, { csv: '', prefix: '' }, { 'HX-Request': 'true' });
    expect(none.status).to.equal(422);
    expect(none.text).to.contain('id="class-import"').and.contain('field-error');
    const badCount = await berg.post(`/classes/${classA}/import`, { prefix: '7b-', count: 'lots' }, { 'HX-Request': 'true' });
    expect(badCount.status).to.equal(422);
    expect(badCount.text).to.contain('id="import-count-err"');
  });

  it('pages: the users table shows a new user right after the create, with every role offered; My account lists tokens and classes', async () => {
    const boss = new PageClient(ctl.url);
    await boss.login('boss', 'boss-password-1');
    const page = await boss.get('/admin/users');
    expect(page.text).to.contain('<option value="teacher"').and.contain('<option value="student"').and.contain('<option value="admin"');
    expect(page.text, 'dates with their day').to.match(/<time datetime="[^"]+">(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} [A-Z][a-z]{2}( \d{4})? \d\d:\d\d<\/time>/);
    const made = await boss.post('/admin/users', { name: 'gus', password: 'gus-password-1', role: 'teacher', displayName: 'Gus G' }, { 'HX-Request': 'true' });
    expect(made.status).to.equal(200);
    expect(made.text).to.contain('Created gus').and.contain('hx-swap-oob="true"').and.contain('id="user-gus"');
    expect(ctl.services.users.get('gus')).to.include({ role: 'teacher', displayName: 'Gus G' });
    expect((await boss.post('/admin/users/gus/role', { role: 'student' }, { 'HX-Request': 'true' })).text).to.contain('gus is now a student');
    const berg = new PageClient(ctl.url);
    await berg.login('berg', 'berg-password-1');
    const account = await berg.get('/account');
    expect(account.status).to.equal(200);
    expect(account.text).to.contain('a teacher').and.contain(`href="/classes/${classA}"`).and.contain('id="password-form"');
    const tok = await berg.post('/account/tokens', { label: 'lesson script' }, { 'HX-Request': 'true' });
    expect(tok.headers.get('cache-control')).to.equal('no-store');
    const token = /<code class="secret">([^<]+)</.exec(tok.text)![1]!;
    expect((await api('GET', '/api/me', token)).json.user.name).to.equal('berg');
    const id = ctl.services.users.tokens('berg').find((t) => t.label === 'lesson script')!.id;
    expect((await berg.post(`/account/tokens/${id}/revoke`, {})).status).to.equal(303);
    expect((await api('GET', '/api/me', token)).status).to.equal(401);
    expect((await berg.post('/account/tokens', { label: '' }, { 'HX-Request': 'true' })).status).to.equal(422);
  });
});
