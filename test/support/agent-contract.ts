// The agent's API contract (docs/design.md#agent-api): auth, status and template shapes, validation
// errors naming fields, 404s, hostile strings, body limits, and a VM through its whole life (create,
// power actions, the serial console, delete). It speaks only HTTP and WebSocket to a base URL with a
// key, so the real agent (libvirt, a booted guest) and the simulated one (the fake hypervisor) both run it:
//
//   agentContract('real agent', async () => ({ url, key, template: 'tiny' }));
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import WebSocket from 'ws';
import { HostStatus, TemplateInfo, VmInfo } from '../../wire/api.ts';
import { ConsoleSession } from './guest.ts';
import { makeDataIso } from './installer-iso.ts';
import { jsonOrText } from './net.ts';

export interface ContractTarget {
  /** Base URL of the agent, e.g. http://127.0.0.1:8081 */
  url: string;
  key: string;
  /** The name of a template present on the agent, with a serial console. */
  template: string;
}

interface Answer {
  status: number;
  body: unknown;
  headers: Headers;
}

/** Field paths named by an error answer's details. */
export function errorFields(body: unknown): string[] {
  const fields = (body as { error?: { details?: { fields?: { field: string }[] } } })?.error?.details?.fields ?? [];
  return fields.map((f) => f.field);
}

/** Strings a person or a script might try in any text field. */
export const HOSTILE_STRINGS = [
  'a;rm -rf /',
  '$(reboot)',
  '`id`',
  '<script>alert(1)</script>',
  "x' or '1'='1",
  '../../etc/passwd',
  'name with spaces',
  'ünïcødé-🚀',
  'A'.repeat(300),
  '',
  'a\nb',
  "</name><devices><disk type='file'/>",
];

export function agentContract(label: string, setup: () => Promise<ContractTarget>): void {
  describe(`agent API contract: ${label}`, function () {
    this.timeout(30_000);
    let t: ContractTarget;

    const call = async (method: string, path: string, opts: { body?: unknown; raw?: string; key?: string | null; type?: string } = {}): Promise<Answer> => {
      const headers: Record<string, string> = {};
      const key = opts.key === undefined ? t.key : opts.key;
      if (key !== null) headers.authorization = `Bearer ${key}`;
      let body: string | undefined;
      if (opts.raw !== undefined) body = opts.raw;
      else if (opts.body !== undefined) body = JSON.stringify(opts.body);
      if (body !== undefined) headers['content-type'] = opts.type ?? 'application/json';
      const res = await fetch(t.url + path, { method, headers, ...(body !== undefined ? { body } : {}) });
      const text = await res.text();
      return { status: res.status, body: jsonOrText(text) as unknown, headers: res.headers };
    };

    const expectError = (a: Answer, status: number, field?: string) => {
      expect(a.status, JSON.stringify(a.body)).to.equal(status);
      const err = (a.body as { error?: { code?: unknown; message?: unknown } }).error;
      expect(err, 'an { error: { code, message } } body').to.be.an('object');
      expect(err!.code).to.be.a('string');
      expect(err!.message).to.be.a('string');
      expect(String(err!.message)).not.to.match(/\n\s+at /, 'no stack trace');
      if (field) expect(errorFields(a.body), JSON.stringify(a.body)).to.include(field);
    };

    const vmNames = async () => ((await call('GET', '/vms')).body as { name: string }[]).map((v) => v.name).sort();

    let startIds: string[] = [];
    before(async function () {
      t = await setup();
      startIds = ((await call('GET', '/vms')).body as { id: string }[]).map((v) => v.id);
    });

    // a check that fails by creating a VM must not leave it behind for the next check
    let lifeId: string | undefined;
    afterEach(async function () {
      for (const v of (await call('GET', '/vms')).body as { id: string }[]) {
        if (!startIds.includes(v.id) && v.id !== lifeId) await call('DELETE', `/vms/${v.id}`);
      }
    });

    describe('given no key or a wrong key', function () {
      it('should answer /healthz without a key', async function () {
        const a = await call('GET', '/healthz', { key: null });
        expect(a.status).to.equal(200);
      });
      for (const [method, path] of [['GET', '/status'], ['GET', '/vms'], ['POST', '/vms'], ['POST', '/start-vm'], ['GET', '/vms/abcdef123456'],
        ['DELETE', '/vms/abcdef123456'], ['POST', '/vms/abcdef123456/start'], ['GET', '/templates'], ['POST', '/templates'], ['DELETE', '/templates/x']] as const) {
        it(`should refuse ${method} ${path} with 401`, async function () {
          expectError(await call(method, path, { key: null, ...(method === 'POST' ? { body: {} } : {}) }), 401);
          expectError(await call(method, path, { key: 'wrong-key-0123456789', ...(method === 'POST' ? { body: {} } : {}) }), 401);
        });
      }
      it('should refuse a console WebSocket without the key', async function () {
        expect(await wsStatus(t.url, '/vms/abcdef123456/console', null)).to.equal(401);
      });
    });

    describe('GET /status', function () {
      it('should answer the HostStatus shape with CPU, memory, VM count, hypervisor and templates', async function () {
        const a = await call('GET', '/status');
        expect(a.status).to.equal(200);
        const s = HostStatus.parse(a.body);
        expect(s.cpu.cores).to.be.greaterThan(0);
        expect(s.memory.totalMiB).to.be.greaterThan(0);
        expect(['kvm', 'tcg', 'none']).to.include(s.hypervisor);
        expect(s.templates.map((x) => x.name)).to.include(t.template);
        expect(s.vms.total).to.equal(s.vmList.length);
      });
    });

    describe('templates', function () {
      it('should list the template with its manifest', async function () {
        const a = await call('GET', '/templates');
        expect(a.status).to.equal(200);
        const list = (a.body as unknown[]).map((x) => TemplateInfo.parse(x));
        const mine = list.find((x) => x.name === t.template);
        expect(mine, 'the template').to.not.equal(undefined);
        expect(mine!.files.length).to.be.greaterThan(0);
        for (const f of mine!.files) expect(f.sha256).to.match(/^[0-9a-f]{64}$/);
      });
      it('should answer 404 when removing a template that does not exist', async function () {
        expectError(await call('DELETE', '/templates/no-such-template'), 404);
      });
      it('should answer 404 for hostile template names in the path and keep every template', async function () {
        const before = (await call('GET', '/templates')).body;
        for (const s of ['..', '..%2F..%2Fetc', '%3Bx', 'a%20b', '%24(id)']) {
          const a = await call('DELETE', `/templates/${s}`);
          expect(a.status, s).to.be.within(400, 499);
        }
        expect((await call('GET', '/templates')).body).to.deep.equal(before);
      });
      it('should want a url (with sha256) or an upload to import', async function () {
        expectError(await call('POST', '/templates', { body: { name: 'new-one' } }), 422, 'url');
        expectError(await call('POST', '/templates', { body: { name: 'new-one', url: 'http://127.0.0.1:9/x.qcow2' } }), 422, 'sha256');
      });
      for (const s of HOSTILE_STRINGS) {
        it(`should refuse the template name ${JSON.stringify(s.slice(0, 30))} with 422 naming "name"`, async function () {
          expectError(await call('POST', '/templates', { body: { name: s, url: 'http://127.0.0.1:9/x', sha256: 'a'.repeat(64) } }), 422, 'name');
        });
      }
      it('should refuse a template upload with a hostile name before reading it', async function () {
        const a = await call('POST', `/templates?name=${encodeURIComponent('../../x')}`, { raw: 'not an image', type: 'application/octet-stream' });
        expectError(a, 422, 'name');
      });
    });

    describe('POST /vms validation', function () {
      it('should name every missing field', async function () {
        const a = await call('POST', '/vms', { body: {} });
        expectError(a, 422);
        expect(errorFields(a.body)).to.include.members(['name', 'template']);
      });
      it('should refuse an unknown template with 422 naming "template"', async function () {
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: 'no-such-template' } }), 422, 'template');
      });
      it('should refuse wrong types and out-of-range numbers naming the field', async function () {
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, memoryMiB: 'lots' } }), 422, 'memoryMiB');
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, vcpus: 0 } }), 422, 'vcpus');
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, vcpus: 1.5 } }), 422, 'vcpus');
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, diskGiB: -1 } }), 422, 'diskGiB');
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, expiresAt: 'tomorrow' } }), 422, 'expiresAt');
      });
      it('should refuse an unknown field', async function () {
        const a = await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, cdrom: '/etc/shadow' } });
        expectError(a, 422);
      });
      it('should refuse a bad SSH key naming "sshKey"', async function () {
        for (const k of ['not a key', 'ssh-ed25519 AAAA\nssh-rsa BBBB', 'ssh-ed25519 $(id)']) {
          expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, sshKey: k } }), 422, 'sshKey');
        }
      });
      it('should refuse malformed JSON with 400', async function () {
        expectError(await call('POST', '/vms', { raw: '{"name": "x",' }), 400);
      });
      it('should refuse a body that is not an object', async function () {
        expectError(await call('POST', '/vms', { body: ['a'] }), 422);
        const a = await call('POST', '/vms', { body: 'a string' });
        expect(a.status).to.be.oneOf([400, 422]);
      });
      it('should refuse a huge body with 413 and change nothing', async function () {
        const before = await vmNames();
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, userData: 'x'.repeat(2 * 1024 * 1024) } }), 413);
        expect(await vmNames()).to.deep.equal(before);
      });
      it('should refuse userData over 64 KiB naming "userData"', async function () {
        expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, userData: '#' + 'x'.repeat(70_000) } }), 422, 'userData');
      });
      for (const field of ['name', 'template', 'owner', 'id', 'sshKey'] as const) {
        it(`should refuse hostile strings in "${field}" with 422 naming it, changing nothing`, async function () {
          const before = await vmNames();
          for (const s of HOSTILE_STRINGS) {
            const body: Record<string, unknown> = { name: 'contract-a', template: t.template, [field]: s };
            for (const path of ['/vms', '/start-vm']) expectError(await call('POST', path, { body }), 422, field);
          }
          expect(await vmNames()).to.deep.equal(before);
        });
      }
      it('should refuse user-data that is not a #cloud-config mapping, naming "userData"', async function () {
        for (const s of ['$(reboot)', "'", 'a: [', '- just\n- a list']) {
          expectError(await call('POST', '/vms', { body: { name: 'contract-a', template: t.template, userData: s } }), 422, 'userData');
        }
      });
    });

    describe('VMs that do not exist', function () {
      for (const id of ['abcdef123456', 'no-such-vm', '..', '%2E%2E%2Fetc', '%3Bid', 'x'.repeat(200)]) {
        it(`should answer 404 for ${id.slice(0, 20)}`, async function () {
          expectError(await call('GET', `/vms/${id}`), 404);
          expectError(await call('DELETE', `/vms/${id}`), 404);
          expectError(await call('POST', `/vms/${id}/start`), 404);
        });
      }
      it('should answer 404 for an unknown action', async function () {
        expectError(await call('POST', '/vms/abcdef123456/explode'), 404);
      });
      it('should answer 404 for a console of an unknown VM', async function () {
        expect(await wsStatus(t.url, '/vms/abcdef123456/console', t.key)).to.equal(404);
        expect(await wsStatus(t.url, '/vms/abcdef123456/vnc', t.key)).to.equal(404);
      });
      it('should answer 404 JSON for an unknown route', async function () {
        expectError(await call('GET', '/no/such/route'), 404);
      });
    });

    describe('GET /vms', function () {
      it('should answer a list of VMs in the VmInfo shape', async function () {
        const a = await call('GET', '/vms');
        expect(a.status).to.equal(200);
        expect(a.body).to.be.an('array');
        for (const v of a.body as unknown[]) VmInfo.parse(v);
      });
    });

    // A VM made with a disk (diskGiB), saved as a template and reset to its template; an installer ISO.
    describe('save as template, reset to template, install from an ISO', function () {
      this.timeout(180_000);
      const suffix = randomBytes(3).toString('hex');
      const saved = `saved-${suffix}`;
      const iso = `installer-${suffix}`;
      let vm: VmInfo;

      before(async function () {
        const a = await call('POST', '/vms', { body: { name: `keeper-${suffix}`, template: t.template, diskGiB: 2 } });
        expect(a.status, JSON.stringify(a.body)).to.equal(201);
        vm = VmInfo.parse(a.body);
        startIds.push(vm.id);
      });

      after(async function () {
        for (const v of (await call('GET', '/vms')).body as VmInfo[]) if (v.template === saved || v.id === vm?.id) await call('DELETE', `/vms/${v.id}`);
        for (const name of [saved, iso]) await call('DELETE', `/templates/${name}`);
      });

      it('should refuse to save a running VM with 409 in plain words', async function () {
        const a = await call('POST', `/vms/${vm.id}/save-as-template`, { body: { name: saved } });
        expectError(a, 409);
        expect((a.body as { error: { code: string; message: string } }).error).to.include({ code: 'vm_running' });
        expect((a.body as { error: { message: string } }).error.message).to.match(/shut it down first/);
      });

      it('should refuse a name that escapes or is taken, and an unknown VM', async function () {
        expect((await call('POST', `/vms/${vm.id}/poweroff`)).status).to.equal(200);
        for (const name of ['../../etc', 'a/b', '', 'A'.repeat(80), '.hidden']) {
          expectError(await call('POST', `/vms/${vm.id}/save-as-template`, { body: { name } }), 422, 'name');
        }
        expectError(await call('POST', `/vms/${vm.id}/save-as-template`, { body: { name: saved, cdrom: '/etc/shadow' } }), 422);
        expectError(await call('POST', `/vms/${vm.id}/save-as-template`, { body: { name: t.template } }), 409, 'name');
        expectError(await call('POST', '/vms/abcdef123456/save-as-template', { body: { name: saved } }), 404);
        expectError(await call('POST', '/vms/abcdef123456/reset'), 404);
        expect(((await call('GET', '/templates')).body as { name: string }[]).map((x) => x.name)).not.to.include(saved);
      });

      it('should save a stopped VM as a template that keeps its source\'s kind, console, KVM need and minimum memory', async function () {
        const source = ((await call('GET', '/templates')).body as unknown[]).map((x) => TemplateInfo.parse(x)).find((x) => x.name === t.template)!;
        const a = await call('POST', `/vms/${vm.id}/save-as-template`, { body: { name: saved, description: 'after the lesson' } });
        expect(a.status, JSON.stringify(a.body)).to.equal(201);
        const made = TemplateInfo.parse(a.body);
        expect(made).to.include({ name: saved, kind: source.kind, console: source.console, needsKvm: source.needsKvm, minMemoryMiB: source.minMemoryMiB, description: 'after the lesson' });
        expect(made.files.find((f) => f.role === 'disk'), 'a disk of its own').to.include({ format: 'qcow2' });
        const status = HostStatus.parse((await call('GET', '/status')).body);
        expect(status.templates.map((x) => x.name)).to.include(saved);
        const child = await call('POST', '/vms', { body: { name: `child-${suffix}`, template: saved } });
        expect(child.status, JSON.stringify(child.body)).to.equal(201);
        expect(VmInfo.parse(child.body)).to.include({ template: saved, state: 'running' });
        // a template a VM uses stays
        expectError(await call('DELETE', `/templates/${saved}`), 409);
      });

      it('should reset a stopped VM and a running one, keeping its id, name, MAC, address and SSH port', async function () {
        const off = await call('POST', `/vms/${vm.id}/reset`);
        expect(off.status, JSON.stringify(off.body)).to.equal(200);
        const a = VmInfo.parse(off.body);
        expect(a).to.include({ id: vm.id, name: vm.name, mac: vm.mac, ip: vm.ip, state: 'shutoff' });
        expect(a.ssh?.port).to.equal(vm.ssh?.port);
        expect((await call('POST', `/vms/${vm.id}/start`)).status).to.equal(200);
        const on = await call('POST', `/vms/${vm.id}/reset`);
        expect(on.status, JSON.stringify(on.body)).to.equal(200);
        expect(VmInfo.parse(on.body)).to.include({ id: vm.id, name: vm.name, mac: vm.mac, ip: vm.ip, state: 'running' });
        expect(VmInfo.parse((await call('GET', `/vms/${vm.id}`)).body).state).to.equal('running');
      });

      it('should import an installer ISO as an iso template and refuse a file that is not one', async function () {
        const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-contract-iso-'));
        try {
          const file = path.join(dir, 'installer.iso');
          await makeDataIso(file);
          const notIso = await call('POST', `/templates?name=${iso}&kind=iso`, { raw: 'QFI\xfb not an ISO at all', type: 'application/octet-stream' });
          expectError(notIso, 422, 'iso');
          const res = await fetch(`${t.url}/templates?name=${iso}&kind=iso`, {
            method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/octet-stream' }, body: readFileSync(file),
          });
          const made = TemplateInfo.parse(await res.json());
          expect(res.status).to.equal(201);
          expect(made).to.include({ name: iso, kind: 'iso', console: 'vnc' });
          expect(made.files.map((f) => f.role)).to.deep.equal(['iso']);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });

      it('should want a disk size for a VM from an installer ISO, then give it an empty disk and a VNC console', async function () {
        expectError(await call('POST', '/vms', { body: { name: `install-${suffix}`, template: iso } }), 422, 'diskGiB');
        const a = await call('POST', '/vms', { body: { name: `install-${suffix}`, template: iso, diskGiB: 3 } });
        expect(a.status, JSON.stringify(a.body)).to.equal(201);
        const made = VmInfo.parse(a.body);
        try {
          expect(made).to.include({ template: iso, console: 'vnc', diskGiB: 3, state: 'running' });
          expect(await wsStatus(t.url, `/vms/${made.id}/vnc`, t.key)).to.equal(101);
        } finally {
          expect((await call('DELETE', `/vms/${made.id}`)).status).to.equal(204);
        }
      });
    });

    // The guest may boot for a while (TCG): the checks here wait as long as a slow lab PC needs.
    describe('a VM through its life: create, power actions, serial console, delete', function () {
      this.timeout(300_000);
      const name = `contract-life-${randomBytes(3).toString('hex')}`;
      let vm: VmInfo;

      after(async function () {
        if (lifeId) await call('DELETE', `/vms/${lifeId}`);
        lifeId = undefined;
      });

      it('should create it (201, running) and count it', async function () {
        const before = HostStatus.parse((await call('GET', '/status')).body).vms.total;
        const a = await call('POST', '/vms', { body: { name, template: t.template } });
        expect(a.status, JSON.stringify(a.body)).to.equal(201);
        vm = VmInfo.parse(a.body);
        lifeId = vm.id;
        expect(vm).to.include({ name, template: t.template, state: 'running', console: 'serial' });
        expect(vm.ssh?.command).to.match(/^ssh -p \d+ /);
        expect(HostStatus.parse((await call('GET', '/status')).body).vms.total).to.equal(before + 1);
      });

      it('should answer it by id and in the list', async function () {
        const a = await call('GET', `/vms/${vm.id}`);
        expect(a.status).to.equal(200);
        expect(VmInfo.parse(a.body)).to.include({ id: vm.id, name, state: 'running', ip: vm.ip, mac: vm.mac });
        expect(((await call('GET', '/vms')).body as VmInfo[]).map((v) => v.id)).to.include(vm.id);
      });

      it('should power it off, start it and reboot it, answering the state each time', async function () {
        const off = await call('POST', `/vms/${vm.id}/poweroff`);
        expect(off.status, JSON.stringify(off.body)).to.equal(200);
        expect((off.body as VmInfo).state).to.equal('shutoff');
        expect(((await call('GET', `/vms/${vm.id}`)).body as VmInfo).state).to.equal('shutoff');
        // a reboot needs a running guest: said in plain words, not a failure of the host
        const refused = await call('POST', `/vms/${vm.id}/reboot`);
        expectError(refused, 409);
        expect((refused.body as { error: { message: string } }).error.message).to.match(/not running/);
        const on = await call('POST', `/vms/${vm.id}/start`);
        expect(on.status, JSON.stringify(on.body)).to.equal(200);
        expect((on.body as VmInfo).state).to.equal('running');
        const again = await call('POST', `/vms/${vm.id}/start`);
        expect((again.body as VmInfo).state, 'start is idempotent').to.equal('running');
        const reboot = await call('POST', `/vms/${vm.id}/reboot`);
        expect(reboot.status, JSON.stringify(reboot.body)).to.equal(200);
        expect((reboot.body as VmInfo).state).to.equal('running');
      });

      it('should carry the serial console over a WebSocket: a command typed there answers', async function () {
        const session = await ConsoleSession.open(t.url, `/vms/${vm.id}/console`, t.key);
        try {
          const marker = `mark${randomBytes(4).toString('hex')}`;
          const from = session.output.length;
          // split by quotes, so that only the shell's answer matches and not the echo of the typing
          const command = `echo ${marker.slice(0, 4)}""${marker.slice(4)}\n`;
          const until = Date.now() + 240_000;
          for (;;) {
            session.send(command); // again every second until it answers: the guest may still be booting
            try {
              await session.waitFor(new RegExp(`[\r\n]${marker}\r?\n`), 1000, from);
              break;
            } catch (err) {
              if (Date.now() > until) throw err;
            }
          }
        } finally {
          session.close();
        }
      });

      it('should refuse the graphical console of a serial VM with 409', async function () {
        expect(await wsStatus(t.url, `/vms/${vm.id}/vnc`, t.key)).to.equal(409);
      });

      it('should delete it (204), then answer 404 for it everywhere', async function () {
        const del = await call('DELETE', `/vms/${vm.id}`);
        expect(del.status, JSON.stringify(del.body)).to.equal(204);
        lifeId = undefined;
        expectError(await call('GET', `/vms/${vm.id}`), 404);
        expectError(await call('DELETE', `/vms/${vm.id}`), 404);
        expectError(await call('POST', `/vms/${vm.id}/start`), 404);
        expect(await wsStatus(t.url, `/vms/${vm.id}/console`, t.key)).to.equal(404);
        expect(((await call('GET', '/vms')).body as VmInfo[]).map((v) => v.id)).not.to.include(vm.id);
      });
    });
  });
}

/** The HTTP status a WebSocket upgrade gets (101 when it opens). */
export function wsStatus(base: string, path: string, key: string | null): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base.replace(/^http/, 'ws') + path, key ? { headers: { authorization: `Bearer ${key}` } } : {});
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
    ws.on('error', (err) => reject(err));
  });
}
