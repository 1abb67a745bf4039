// The pages over real HTTP against the real controller (no agent needed): the htmx partial and the
// whole page come from one route with Vary: HX-Request; validation errors are 422 with the input
// kept; error pages never show a stack; a user cannot open another user's VM page; CSRF is required.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { createServices } from '../../server/services.ts';
import { PageClient as Client } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('controller pages (HTTP)', function () {
  this.timeout(60_000);
  const log = logger('pages-test');
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-pages-'));
  let controller: RunningController;
  let admin: Client;
  let alice: Client;
  let bob: Client;
  const aliceVm = 'alicevm00001';

  before(async () => {
    // A VM of alice's in the records (as if created earlier), so that page access can be checked without an agent.
    const seed = await createServices({ dataDir: dir, log, captureLogs: false });
    await seed.users.create({ name: 'alice', password: 'alice-pass-1' });
    await seed.users.create({ name: 'bob', password: 'bob-pass-12' });
    const now = new Date().toISOString();
    seed.store.run(`INSERT INTO vms (id, name, owner, template, host_id, state, vcpus, memory_mib, disk_gib, console, created_at, updated_at)
      VALUES (?, 'alice-box', 'alice', 'guest', 'nohost', 'shutoff', 1, 512, 1, 'serial', ?, ?)`, aliceVm, now, now);
    await seed.stop();
    controller = await startController({ dataDir: dir, log, port: 0, listen: '127.0.0.1', poll: false });
    admin = new Client(controller.url);
    alice = new Client(controller.url);
    bob = new Client(controller.url);
    await alice.login('alice', 'alice-pass-1');
    await bob.login('bob', 'bob-pass-12');
  });

  after(async () => {
    await controller?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends a page without a session to the login page, and the login page renders', async () => {
    const res = await new Client(controller.url).get('/vms');
    expect(res.status).to.equal(303);
    expect(res.headers.get('location')).to.equal('/login?next=%2Fvms');
    // An htmx poll whose session ended lands on the login page as a whole page, not inside the polled element.
    const hx = await new Client(controller.url).get('/login?next=%2F', { 'HX-Request': 'true' });
    expect(hx.headers.get('hx-redirect')).to.equal('/login?next=%2F');
    expect(hx.text).to.equal('');
    const login = await new Client(controller.url).get('/login');
    expect(login.status).to.equal(200);
    expect(login.text).to.contain('<form id="login-form"').and.contain('/static/vendor/htmx.min.js');
  });

  it('first login with the admin token asks for a new password, then lets the admin in', async () => {
    const res = await admin.post('/login', { name: 'admin', password: controller.services.secrets.adminToken });
    expect(res.status).to.equal(303);
    expect(res.headers.get('location')).to.equal('/account/password');
    expect((await admin.get('/hosts')).headers.get('location')).to.equal('/account/password');
    await admin.get('/account/password');
    const short = await admin.post('/account/password', { password: 'short', again: 'short' });
    expect(short.status).to.equal(422);
    expect(short.text).to.contain('at least 8 characters');
    const ok = await admin.post('/account/password', { password: 'teacher-pass-1', again: 'teacher-pass-1' });
    expect(ok.status).to.equal(303);
    expect((await admin.get('/hosts')).status).to.equal(200);
  });

  it('answers an htmx request with the partial only, the same URL with the whole page, both Vary: HX-Request', async () => {
    const page = await alice.get('/vms');
    const part = await alice.get('/vms', { 'HX-Request': 'true' });
    for (const r of [page, part]) {
      expect(r.status).to.equal(200);
      expect(r.headers.get('vary')).to.match(/HX-Request/);
    }
    expect(page.text).to.match(/^<!doctype html>/).and.contain('<div id="vm-list"').and.contain('id="vm-form"');
    expect(part.text.trimStart()).to.match(/^<div id="vm-list"/);
    expect(part.text).to.not.contain('<html').and.not.contain('vm-form');
    expect(part.text).to.contain('alice-box');
    // A boosted link replaces the whole body: it gets the whole page.
    expect((await alice.get('/vms', { 'HX-Request': 'true', 'HX-Boosted': 'true' })).text).to.match(/^<!doctype html>/);
    const dash = await alice.get('/', { 'HX-Request': 'true', 'accept-encoding': 'gzip' });
    expect(dash.text.trimStart()).to.match(/^<div id="dashboard"/);
    expect(dash.text).to.not.contain('Recent events'); // the event log is the admin's
    expect(dash.headers.get('content-encoding')).to.equal('gzip'); // the polled partial, compressed once a second
    expect(dash.headers.get('vary')).to.equal('HX-Request, Accept-Encoding');
    // The next poll of an unchanged partial is a 204 with nothing to swap.
    const version = /data-version="([^"]+)"/.exec(part.text)![1]!;
    const same = await alice.get('/vms', { 'HX-Request': 'true', 'X-SkyHost-Version': version });
    expect(same.status).to.equal(204);
    expect(same.text).to.equal('');
    expect((await alice.get('/vms', { 'HX-Request': 'true', 'X-SkyHost-Version': 'stale' })).status).to.equal(200);
  });

  it('renders the whole dashboard page with the partial a poll gets: the partial once, the right length, HEAD without a body', async () => {
    const url = `${controller.url}/`;
    const headers = { accept: 'text/html', cookie: alice.cookie };
    const page = await fetch(url, { headers });
    const bytes = Buffer.from(await page.arrayBuffer());
    expect(page.status).to.equal(200);
    expect(page.headers.get('content-type')).to.match(/^text\/html/);
    expect(Number(page.headers.get('content-length'))).to.equal(bytes.length);
    const html = bytes.toString('utf8');
    expect(html).to.match(/^<!doctype html>/).and.match(/<\/html>\s*$/);
    expect(html.split('<div id="dashboard"').length).to.equal(2);
    expect(html).to.not.contain('<!--skyhost:'); // the stand-in for the kept partial is gone
    // The partial inside the page is the one an htmx poll gets (same version stamp).
    const part = await alice.get('/', { 'HX-Request': 'true' });
    expect(html).to.contain(/data-version="[^"]+"/.exec(part.text)![0]);
    const head = await fetch(url, { method: 'HEAD', headers });
    expect(head.status).to.equal(200);
    expect(head.headers.get('content-length')).to.equal(String(bytes.length));
    expect((await head.arrayBuffer()).byteLength).to.equal(0);
  });

  it('keeps the page around the kept dashboard per viewer: users asking within the same second each get their own name and CSRF token', async () => {
    const pageOf = async (c: Client) => (await fetch(`${controller.url}/`, { headers: { accept: 'text/html', cookie: c.cookie } })).text();
    const csrfOf = (html: string) => /hx-headers='\{"X-CSRF-Token": "([^"]+)"\}'/.exec(html)?.[1];
    const whoOf = (html: string) => /<span>([a-z0-9._-]+)(?: <span class="badge admin">admin<\/span>)?<\/span>/.exec(html)?.[1];
    const [a1, b1, a2, b2] = await Promise.all([pageOf(alice), pageOf(bob), pageOf(alice), pageOf(bob)]);
    expect([whoOf(a1), whoOf(b1), whoOf(a2), whoOf(b2)]).to.deep.equal(['alice', 'bob', 'alice', 'bob']);
    expect(csrfOf(a1)).to.be.a('string').and.equal(csrfOf(a2)).and.not.equal(csrfOf(b1));
    expect(csrfOf(b1)).to.be.a('string').and.equal(csrfOf(b2));
    expect(a1).to.contain(`name="_csrf" value="${csrfOf(a1)}"`).and.not.contain(csrfOf(b1)!);
    expect(b1).to.not.contain(csrfOf(a1)!);
  });

  it('re-renders the request form with 422, the messages inline and the input kept', async () => {
    await alice.get('/vms');
    const res = await alice.post('/vms', { template: '', size: 'huge', name: 'my <b>box</b>', sshKey: 'ssh-ed25519 AAAA x', lease: '7' });
    expect(res.status).to.equal(422);
    expect(res.text).to.contain('choose a template').and.contain('choose small, medium or large').and.contain('choose one of the offered lease times');
    expect(res.text).to.contain('value="my &lt;b&gt;box&lt;/b&gt;"').and.not.contain('<b>box</b>');
    expect(res.text).to.contain('ssh-ed25519 AAAA x');
    const part = await alice.post('/vms', { template: 'guest', size: 'small', name: 'Bad Name!' }, { 'HX-Request': 'true' });
    expect(part.status).to.be.oneOf([422, 503]);
    expect(part.text.trimStart()).to.match(/^<form id="vm-form"/);
    expect(part.text).to.contain('value="Bad Name!"');
  });

  it('shows the scheduler\'s answer when no host fits, with a reason per host', async () => {
    const res = await alice.post('/vms', { template: 'guest', size: 'small', name: 'fits-nowhere' }, { 'HX-Request': 'true' });
    expect(res.status).to.equal(503);
    expect(res.text).to.contain('No host can take this VM').and.contain('value="fits-nowhere"');
    // A small simulated host (the agent's contract stand-in): a large VM does not fit in its memory.
    const small = await new SimAgent({ hostname: 'weak-pc', memoryMiB: 2048, threads: 2 }).start();
    try {
      await small.enroll(controller.url, controller.services.joinTokens.clusterToken());
      await controller.services.hosts.pollAll();
      const big = await alice.post('/vms', { template: 'alpine', size: 'large', name: 'too-big' }, { 'HX-Request': 'true' });
      expect(big.status).to.equal(503);
      expect(big.text).to.match(/<li><b>weak-pc<\/b>: needs 4096 MiB[^<]*free<\/li>/);
    } finally {
      controller.services.hosts.remove(small.hostId);
      await small.stop();
    }
  });

  it('keeps another user\'s VM page and actions out of reach (404)', async () => {
    expect((await alice.get(`/vms/${aliceVm}`)).status).to.equal(200);
    const page = await bob.get(`/vms/${aliceVm}`);
    expect(page.status).to.equal(404);
    expect(page.text).to.not.contain('alice-box');
    expect((await bob.post(`/vms/${aliceVm}/delete`, {})).status).to.equal(404);
    expect((await bob.get('/vms', { 'HX-Request': 'true' })).text).to.not.contain('alice-box');
    expect((await admin.get(`/vms/${aliceVm}`)).status).to.equal(200);
    // An admin's list shows their own VMs, and every user's on request.
    expect((await admin.get('/vms', { 'HX-Request': 'true' })).text).to.not.contain('alice-box');
    expect((await admin.get('/vms?all=1', { 'HX-Request': 'true' })).text).to.contain('alice-box');
    expect((await bob.get('/vms?all=1', { 'HX-Request': 'true' })).text).to.not.contain('alice-box');
  });

  it('error pages are friendly: the message for a 4xx, no stack trace, htmx errors go to #flash', async () => {
    const missing = await bob.get('/vms/doesnotexist');
    expect(missing.status).to.equal(404);
    expect(missing.text).to.contain('<!doctype html>').and.contain('not found');
    expect(missing.text).to.not.match(/at \w+ \(|node:internal|\.ts:\d+/);
    const forbidden = await bob.get('/admin/users');
    expect(forbidden.status).to.equal(403);
    expect(forbidden.text).to.contain('only an admin').and.not.match(/\.ts:\d+/);
    const nowhere = await bob.get('/no/such/page');
    expect(nowhere.status).to.equal(404);
    expect(nowhere.text).to.contain('<!doctype html>');
    const hx = await bob.post('/vms/doesnotexist/start', {}, { 'HX-Request': 'true' });
    expect(hx.status).to.equal(404);
    expect(hx.headers.get('hx-retarget')).to.equal('#flash');
    expect(hx.text.trimStart()).to.match(/^<div class="flash error"/);
  });

  it('refuses a form post without the CSRF token and changes nothing', async () => {
    const res = await fetch(controller.url + '/admin/users', {
      method: 'POST', redirect: 'manual',
      headers: { cookie: admin.cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ name: 'mallory', password: 'mallory-pass-1' }),
    });
    expect(res.status).to.equal(403);
    expect(controller.services.users.get('mallory')).to.equal(undefined);
  });

  it('admin creates a user (422 keeps the name), toggles admin, resets a password, switches self-registration', async () => {
    await admin.get('/admin/users');
    const bad = await admin.post('/admin/users', { name: 'Carol!', password: 'x' }, { 'HX-Request': 'true' });
    expect(bad.status).to.equal(422);
    expect(bad.text).to.contain('value="Carol!"').and.contain('at least 8 characters');
    const ok = await admin.post('/admin/users', { name: 'carol', password: 'carol-pass-1' }, { 'HX-Request': 'true' });
    expect(ok.status).to.equal(200);
    expect(ok.text).to.contain('Created carol');
    expect((await admin.post('/admin/users/carol/role', { admin: 'true' })).status).to.equal(200);
    expect(controller.services.users.get('carol')?.role).to.equal('admin');
    expect((await admin.post('/admin/users/carol/password', { password: 'new-carol-pass' })).status).to.equal(200);
    await controller.services.users.authenticate('carol', 'new-carol-pass');
    expect((await admin.post('/admin/users/registration', { on: 'true' })).status).to.equal(303);
    expect(controller.services.users.selfRegistration()).to.equal(true);
    const newcomer = new Client(controller.url);
    expect((await newcomer.get('/login')).text).to.contain('id="register-form"');
    const taken = await newcomer.post('/register', { name: 'alice', password: 'whatever-123' });
    expect(taken.status).to.equal(409);
    expect(taken.text).to.contain('value="alice"');
    const badName = await newcomer.post('/register', { name: 'Not A Name!', password: 'short' });
    expect(badName.status, 'bad input is a 422 with the fields\' messages, not a 500').to.equal(422);
    expect(badName.text).to.contain('class="field-error"').and.contain('value="Not A Name!"');
    const joined = await newcomer.post('/register', { name: 'dave', password: 'dave-pass-12' });
    expect(joined.status).to.equal(303);
    expect((await newcomer.get('/vms')).status).to.equal(200);
    expect((await admin.post('/admin/users/carol/delete', {})).status).to.equal(303);
    expect(controller.services.users.get('carol')).to.equal(undefined);
  });

  it('renders the hosts, templates and events pages; the events filter keeps its choice', async () => {
    const hosts = await admin.get('/hosts');
    const token = controller.services.joinTokens.clusterToken();
    // The page itself carries no token; "Make the install command" picks a single-use token by default.
    expect(hosts.text).to.contain('id="host-install"').and.not.contain(token).and.not.contain('shs_');
    expect(hosts.text).to.match(/name="kind" value="single-use" checked/);
    const made = await admin.post('/hosts/install', { kind: 'single-use', label: 'room 12 PC 3' }, { 'HX-Request': 'true' });
    expect(made.status).to.equal(200);
    expect(made.headers.get('cache-control')).to.equal('no-store');
    expect(made.text.trimStart()).to.match(/^<div id="host-install"/);
    expect(made.text).to.not.contain(token);
    const unescape = (html: string) => html.replaceAll('&#x3D;', '=').replaceAll('&#x27;', "'");
    const oneTime = /install\.sh\?token=(shs_[0-9a-f]{12}_[A-Za-z0-9_-]+)' \| sudo sh/.exec(unescape(made.text))?.[1];
    expect(oneTime, made.text).to.be.a('string');
    const issued = controller.services.joinTokens.list().find((t) => oneTime!.startsWith(`shs_${t.id}_`));
    expect(issued).to.include({ label: 'room 12 PC 3', state: 'unused' });
    expect(issued).to.include({ uses: 1 });
    // A USB stick for a room: one token for 20 PCs, listed with its uses left; a bad number is 422 naming it.
    const room = await admin.post('/hosts/install', { kind: 'single-use', label: 'room 12 stick', uses: '20' }, { 'HX-Request': 'true' });
    expect(room.text).to.contain('This command joins 20 PCs (room 12 stick)').and.match(/class="token-uses">20 of 20</);
    expect(controller.services.joinTokens.list()[0]).to.include({ label: 'room 12 stick', uses: 20, usesLeft: 20 });
    for (const uses of ['0', '201', 'twenty']) {
      const bad = await admin.post('/hosts/install', { kind: 'single-use', uses }, { 'HX-Request': 'true' });
      expect(bad.status, uses).to.equal(422);
      expect(bad.text, uses).to.contain('uses: must be a whole number of PCs from 1 to 200');
    }
    // The USB web installer link carries this controller and the same single-use token.
    const href = /href="(http:\/\/127\.0\.0\.1:8090\/[^"]*)"/.exec(made.text)![1]!.replaceAll('&amp;', '&').replaceAll('&#x3D;', '=');
    expect(Object.fromEntries(new URL(href).searchParams)).to.deep.equal({ controllerUrl: controller.url, joinToken: oneTime });
    // The cluster token only when asked for; a rotation replaces it without showing the new one.
    expect(unescape((await admin.post('/hosts/install', { kind: 'cluster' }, { 'HX-Request': 'true' })).text)).to.contain(`install.sh?token=${token}' | sudo sh`);
    const rotated = await admin.post('/hosts/join-token/rotate', {}, { 'HX-Request': 'true' });
    expect(rotated.status).to.equal(200);
    expect(rotated.text).to.contain('old one is refused');
    const fresh = controller.services.joinTokens.clusterToken();
    expect(fresh).to.not.equal(token);
    expect(rotated.text).to.not.contain(fresh);
    expect(controller.services.joinTokens.redeem(token, 'h-rogue')).to.include({ ok: false, code: 'rotated' });
    expect((await alice.post('/hosts/join-token/rotate', {})).status).to.equal(403);
    expect((await alice.post('/hosts/install', {})).status).to.equal(403);
    expect((await admin.get('/templates')).text).to.contain('id="template-form"');
    expect((await alice.get('/templates')).text).to.not.contain('id="template-form"');
    const bad = await admin.post('/templates', { name: 'Alpine!', url: 'ftp://x', sha256: 'abc', os: '' }, { 'HX-Request': 'true' });
    expect(bad.status).to.equal(422);
    expect(bad.text.trimStart()).to.match(/^<form id="template-form"/);
    expect(bad.text).to.contain('value="Alpine!"').and.contain('value="ftp://x"').and.contain('64 lowercase hex digits');
    // An import goes to the controller's catalog (no host needed): it starts, and the list shows how it goes.
    const started = await admin.post('/templates', { name: 'alpine', url: 'http://127.0.0.1:1/a.qcow2', sha256: 'a'.repeat(64) }, { 'HX-Request': 'true' });
    expect(started.status).to.equal(200);
    expect(started.text).to.contain('Import of alpine started');
    expect((await admin.get('/templates', { 'HX-Request': 'true' })).text).to.contain('http://127.0.0.1:1/a.qcow2');
    expect((await admin.post('/templates/nothere/delete', {}, { 'HX-Request': 'true' })).status).to.equal(404);
    expect((await alice.post('/templates/nothere/delete', {})).status).to.equal(403);
    const events = await admin.get('/admin/events?level=warn&source=vms');
    expect(events.status).to.equal(200);
    expect(events.text).to.contain('<option value="warn" selected>');
    const live = await admin.get('/admin/events?level=info', { 'HX-Request': 'true' });
    expect(live.text.trimStart()).to.match(/^<div id="event-log"/);
  });

  it('escapes user text everywhere (a VM name with markup)', async () => {
    const res = await alice.post('/vms', { template: 'guest', size: 'small', name: '<script>alert(1)</script>' }, { 'HX-Request': 'true' });
    expect(res.text).to.not.contain('<script>alert(1)</script>');
    expect(res.text).to.contain('&lt;script&gt;');
  });
});
