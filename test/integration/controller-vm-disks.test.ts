// The controller's "save as template" and "reset to template" and its rule for installer ISOs, over
// HTTP with real SQLite, against a simulated agent (the real app over the fake hypervisor): who may,
// what is refused and how, and what the records and the template list show afterwards.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { errorFields } from '../support/agent-contract.ts';
import { freePort } from '../support/net.ts';
import { DEFAULT_TEMPLATES, SimAgent, simTemplate } from '../support/sim-agent.ts';
import { tokenApi } from '../support/real-pair.ts';

describe('controller: save a VM as a template, reset it, install from an ISO', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;
  let admin: string;
  let alice: string;
  let bob: string;

  const api = tokenApi(() => ctl.url);

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-vm-disks-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    const installer = simTemplate('installer', {
      kind: 'iso', console: 'vnc', os: 'alpine-installer',
      files: [{ role: 'iso', file: 'installer.iso', bytes: 60 * 1024 * 1024, sha256: 'a'.repeat(64) }],
    });
    agent = await new SimAgent({ hostId: 'host-a', memoryMiB: 16384, hypervisor: 'tcg', port: await freePort(), templates: [...DEFAULT_TEMPLATES, installer] }).start();
    const res = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId: 'host-a', hostname: 'pc-a', agentUrl: agent.url, agentKey: agent.key, version: 'test', joinToken: ctl.services.secrets.joinToken }),
    });
    expect(res.status, await res.clone().text()).to.equal(200);
    await ctl.services.hosts.pollAll();
    admin = ctl.services.secrets.adminToken;
    for (const name of ['alice', 'bob']) expect((await api('POST', '/api/users', admin, { username: name, password: `${name}-password-1` })).status).to.equal(201);
    alice = ctl.services.users.createToken('alice', 'test').token;
    bob = ctl.services.users.createToken('bob', 'test').token;
  });

  after(async () => {
    await ctl?.stop();
    await agent?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('should let the owner save her stopped VM as a template on its host, refusing a running VM, a taken name and an escaping one', async () => {
    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'lesson' });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const id = made.json.id as string;

    // another user's VM does not exist for bob
    expect((await api('POST', `/api/vms/${id}/save-as-template`, bob, { name: 'mine' })).status).to.equal(404);
    expect((await api('POST', `/api/vms/${id}/reset`, bob)).status).to.equal(404);

    const running = await api('POST', `/api/vms/${id}/save-as-template`, alice, { name: 'lesson-done' });
    expect(running.status).to.equal(409);
    expect(running.json.error).to.include({ code: 'vm_running' });
    expect(running.json.error.message).to.match(/shut it down first/);

    expect((await api('POST', `/api/vms/${id}/poweroff`, alice)).json.state).to.equal('shutoff');
    for (const name of ['../../etc/x', 'A/B', '']) {
      const bad = await api('POST', `/api/vms/${id}/save-as-template`, alice, { name });
      expect(bad.status, name).to.equal(422);
      expect(errorFields(bad.json), name).to.include('name');
    }
    const taken = await api('POST', `/api/vms/${id}/save-as-template`, alice, { name: 'alpine' });
    expect(taken.status).to.equal(409);
    expect(errorFields(taken.json)).to.include('name');

    const saved = await api('POST', `/api/vms/${id}/save-as-template`, alice, { name: 'lesson-done' });
    expect(saved.status, JSON.stringify(saved.json)).to.equal(201);
    expect(saved.json.template).to.include({ name: 'lesson-done', kind: 'disk', console: 'serial' });
    expect(saved.json.host).to.deep.equal({ id: 'host-a', hostname: 'pc-a' });
    // the simulated host serves no template files: the template stays there, and the answer says why
    expect(saved.json.catalog).to.equal(false);
    expect(saved.json.catalogNote).to.match(/could not be copied into the controller's catalog.*pc-a only/);
    const listed = (await api('GET', '/api/templates', alice)).json.templates as Array<{ name: string; hosts: string[] }>;
    expect(listed.find((t) => t.name === 'lesson-done')?.hosts).to.deep.equal(['host-a']);
    // a VM can start from it
    const child = await api('POST', '/api/vms', alice, { template: 'lesson-done', name: 'lesson-2' });
    expect(child.status, JSON.stringify(child.json)).to.equal(201);
  });

  it('should reset a VM for its owner and an admin, keeping its id, name and address, and refuse one being created', async () => {
    const made = await api('POST', '/api/vms', alice, { template: 'alpine', name: 'to-reset' });
    expect(made.status).to.equal(201);
    const vm = made.json;
    const a = await api('POST', `/api/vms/${vm.id}/reset`, alice);
    expect(a.status, JSON.stringify(a.json)).to.equal(200);
    expect(a.json).to.include({ id: vm.id, name: 'to-reset', ip: vm.ip, state: 'running', host: 'host-a' });
    expect((await api('POST', `/api/vms/${vm.id}/reset`, admin)).status).to.equal(200);

    // a record still `creating` (its agent call not answered yet) is refused without asking the host
    const record = ctl.services.vms.require(ctl.services.system, vm.id);
    const state = record.state;
    record.state = 'creating';
    try {
      const busy = await api('POST', `/api/vms/${vm.id}/reset`, alice);
      expect(busy.status).to.equal(409);
      expect(busy.json.error.message).to.match(/creating/);
      expect((await api('POST', `/api/vms/${vm.id}/save-as-template`, alice, { name: 'too-early' })).status).to.equal(409);
    } finally {
      record.state = state;
    }
  });

  describe('given the pages', () => {
    let cookie = '';
    let csrf = '';
    const page = async (method: 'GET' | 'POST', p: string, form?: Record<string, string>, headers: Record<string, string> = {}) => {
      const res = await fetch(ctl.url + p, {
        method, redirect: 'manual',
        headers: { accept: 'text/html', cookie, ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}), ...headers },
        ...(form ? { body: new URLSearchParams({ _csrf: csrf, ...form }) } : {}),
      });
      const set = res.headers.get('set-cookie');
      if (set) cookie = set.split(';')[0]!;
      const text = await res.text();
      csrf = /name="_csrf" value="([^"]+)"/.exec(text)?.[1] ?? csrf;
      return { status: res.status, location: res.headers.get('location'), text };
    };

    before(async () => {
      await page('GET', '/login');
      expect((await page('POST', '/login', { name: 'alice', password: 'alice-password-1', next: '/' })).status).to.equal(303);
      await page('GET', '/');
    });

    it('should show the save form with the note on machine ids, save from it, and reset with a confirmation', async () => {
      const vm = (await api('POST', '/api/vms', alice, { template: 'alpine', name: 'from-page' })).json;
      const shown = await page('GET', `/vms/${vm.id}`);
      expect(shown.text).to.include('Save as template').and.to.include('cloud-init clean').and.to.include('/etc/machine-id');
      expect(shown.text).to.match(/hx-confirm="Reset from-page to template alpine\?/);
      const htmx = { 'HX-Request': 'true' };
      const bad = await page('POST', `/vms/${vm.id}/save-as-template`, { name: '../up' }, htmx);
      expect(bad.status).to.equal(422);
      expect(bad.text).to.include('field-error').and.not.to.include('<html');
      const running = await page('POST', `/vms/${vm.id}/save-as-template`, { name: 'page-saved' }, htmx);
      expect(running.status).to.equal(409);
      expect(running.text).to.match(/shut it down first/);
      await api('POST', `/api/vms/${vm.id}/poweroff`, alice);
      const ok = await page('POST', `/vms/${vm.id}/save-as-template`, { name: 'page-saved' }, htmx);
      expect(ok.status, ok.text).to.equal(200);
      expect(ok.text).to.include('Saved as template <b>page-saved</b>').and.to.include('pc-a');
      const reset = await page('POST', `/vms/${vm.id}/reset`, { from: 'detail' });
      expect(reset.status).to.equal(303);
      expect(reset.location).to.equal(`/vms/${vm.id}`);
    });

    it('should ask a disk size on the request form for an installer ISO', async () => {
      const form = await page('GET', '/vms');
      expect(form.text).to.include('name="disk"').and.to.include('installer ISO');
      const none = await page('POST', '/vms', { template: 'installer', size: 'small', disk: '', lease: '', idempotencyKey: 'k-iso-1' }, { 'HX-Request': 'true' });
      expect(none.status).to.equal(422);
      expect(none.text).to.match(/field-error"[^>]*>[^<]*installer ISO/);
      const made = await page('POST', '/vms', { template: 'installer', size: 'small', disk: '20', lease: '', name: 'page-install', idempotencyKey: 'k-iso-2' }, { 'HX-Request': 'true' });
      expect(made.status, made.text).to.equal(200);
      expect((await api('GET', '/api/vms', alice)).json.vms.find((v: { name: string }) => v.name === 'page-install')).to.include({ diskGiB: 20, console: 'vnc' });
    });
  });

  it('should want a disk size for a VM of an installer ISO (422 naming diskGiB) and give it a VNC console', async () => {
    const none = await api('POST', '/api/vms', alice, { template: 'installer', name: 'install-1' });
    expect(none.status).to.equal(422);
    expect(none.json.error.code).to.equal('disk_size_required');
    expect(errorFields(none.json)).to.deep.equal(['diskGiB']);
    expect((await api('GET', '/api/vms', alice)).json.vms.map((v: { name: string }) => v.name)).not.to.include('install-1');
    const made = await api('POST', '/api/vms', alice, { template: 'installer', name: 'install-1', diskGiB: 20 });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    expect(made.json).to.include({ template: 'installer', diskGiB: 20, console: 'vnc' });
    // on the host: an empty disk of that size and the installer on the CD-ROM
    const hv = agent.hypervisor!;
    expect(hv.folderContents.get(made.json.id)?.disk).to.include({ kind: 'blank', sizeBytes: 20 * 1024 ** 3 });
    expect(hv.domains.get(made.json.id)?.spec.installer).to.match(/\/installer\/installer\.iso$/);
  });
});
