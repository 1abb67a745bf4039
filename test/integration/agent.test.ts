// The host agent against the real libvirt + QEMU (TCG) of this machine, through its HTTP API:
// a VM from the test guest (console, a command, the SSH forward, shutdown, delete, nothing left),
// SIGKILL and restart of the agent while the VM runs, five creates at once, a failure injected at
// every create step, hostile input. Every libvirt object is named per run and removed in after hooks.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer as createNetServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { execa, type ResultPromise } from 'execa';
import { configSchema, defaults } from '../../base/config.ts';
import { SkyError } from '../../base/errors.ts';
import { run } from '../../base/exec.ts';
import { ACCEL_MARKER, probeBootSector } from '../../host/accel.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { Logger } from '../../base/log.ts';
import { hostTag } from '../../agent/hypervisor/libvirt/domain.ts';
import { listDomains, removeDomain } from '../../agent/hypervisor/libvirt/libvirt.ts';
import { networkName, removeNetwork, reservations } from '../../agent/hypervisor/libvirt/network.ts';
import { virsh } from '../../agent/hypervisor/libvirt/virsh.ts';
import { agentKey, startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { CREATE_STEPS, type CreateStep } from '../../agent/vms/create.ts';
import { agentContract, HOSTILE_STRINGS, wsStatus } from '../support/agent-contract.ts';
import { buildTestGuest, ConsoleSession, GUEST_BANNER, IGNORE_ACPI, type TestGuest } from '../support/guest.ts';
import { freePort, waitForHttp } from '../support/net.ts';
import { NODE, REPO } from '../support/netns.ts';

const TEMPLATE = 'test-guest';

/** The agents' log in these tests: errors only, and not the failures the tests cause on purpose. */
class TestLog extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
  override error(msg: string, fields?: Record<string, unknown>): void {
    const code = (fields?.err as { code?: string } | undefined)?.code;
    if (code !== 'injected_failure' && code !== 'hypervisor_failed') super.error(msg, fields);
  }
}

interface Site {
  hostId: string;
  dataDir: string;
  ports: { low: number; high: number };
  /** Ports of the range that another program listened on before the test. */
  busy: number[];
}

/** A fresh data folder (traversable by libvirt-qemu) holding the test guest as a template. */
async function newSite(guest: TestGuest, label: string): Promise<Site> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `skyhost-agent-${label}-`));
  chmodSync(dataDir, 0o711);
  await new TemplateStore(dataDir).import({ name: TEMPLATE, kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox' });
  // below Linux's ephemeral ports (32768+), which outgoing connections take
  const low = 22000 + Math.floor(Math.random() * 1000) * 10;
  const ports = { low, high: low + 9 };
  const busy: number[] = [];
  for (let p = low; p <= ports.high; p++) if (await portAnswers(p)) busy.push(p);
  return { hostId: `itest-${label}-${randomBytes(3).toString('hex')}`, dataDir, ports, busy };
}

function siteConfig(site: Site) {
  return configSchema.parse({
    ...defaults({ isRoot: true, cwd: REPO }),
    dataDir: site.dataDir,
    listen: '127.0.0.1',
    sshPortRange: `${site.ports.low}-${site.ports.high}`,
    logLevel: 'warn',
  });
}

/** Removes every domain, the network and the data folder of a site. */
async function cleanSite(site: Site | undefined): Promise<void> {
  if (!site) return;
  const prefix = `sky-${hostTag(site.hostId)}-`;
  for (const name of (await listDomains().catch(() => new Map())).keys()) if (name.startsWith(prefix)) await removeDomain(name).catch(() => undefined);
  await removeNetwork(networkName(site.hostId));
  if (!process.env.SKYHOST_TEST_KEEP) rmSync(site.dataDir, { recursive: true, force: true });
}

async function domainsOf(site: Site): Promise<string[]> {
  const prefix = `sky-${hostTag(site.hostId)}-`;
  return [...(await listDomains()).keys()].filter((n) => n.startsWith(prefix));
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Reads the first line the VM's forwarded port answers. */
function readBanner(port: number, timeoutMs = 30_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  const once = () =>
    new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      let got = '';
      s.on('data', (d) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(''));
      setTimeout(() => s.destroy(), 3000);
    });
  return (async () => {
    for (;;) {
      const line = await once();
      if (line.includes('SSH-')) return line.trim();
      if (Date.now() > until) throw new Error(`port ${port} gave no banner within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
}

/** Nothing of a site's VMs is left: no domain, no VM folder, no DHCP entry, no listening SSH port. */
async function expectNothingLeft(site: Site): Promise<void> {
  expect(await domainsOf(site), 'domains').to.deep.equal([]);
  const vmsDir = path.join(site.dataDir, 'vms');
  expect(existsSync(vmsDir) ? readdirSync(vmsDir) : [], 'VM folders').to.deep.equal([]);
  const net = networkName(site.hostId);
  if ((await virsh(['net-list', '--all', '--name'])).split('\n').includes(net)) {
    expect([...(await reservations(net)).keys()], 'DHCP reservations').to.deep.equal([]);
  }
  for (let p = site.ports.low; p <= site.ports.high; p++) if (!site.busy.includes(p)) expect(await portAnswers(p), `port ${p}`).to.equal(false);
}

async function api(base: string, key: string, method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

describe('host agent on real libvirt/QEMU', function () {
  this.timeout(120_000);
  let guest: TestGuest;

  before(async function () {
    await ensureDaemons();
    guest = await buildTestGuest();
  });

  it('should create the standalone key in DATA/secrets/agent-key (0600) once and keep it', async function () {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-agent-key-'));
    try {
      const first = await agentKey(dir);
      expect(first.length).to.be.at.least(16);
      expect(statSync(path.join(dir, 'secrets/agent-key')).mode & 0o777).to.equal(0o600);
      expect(await agentKey(dir)).to.equal(first);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('in-process agent', function () {
    let site: Site | undefined;
    let agent: RunningAgent | undefined;
    let failAt: CreateStep | undefined;
    const key = randomBytes(16).toString('hex');

    before(async function () {
      site = await newSite(guest, 'inproc');
      agent = await startAgent({
        config: siteConfig(site),
        log: new TestLog('agent-test'),
        key,
        hostId: site.hostId,
        port: 0,
        listen: '127.0.0.1',
        accel: { accel: 'tcg', reason: 'tests run under TCG' },
        afterStep: (step) => {
          if (step === failAt) throw new SkyError(500, 'injected_failure', `failure injected after step ${step}`);
        },
      });
    });

    after(async function () {
      await agent?.stop();
      await cleanSite(site);
    });

    agentContract('real agent (libvirt, TCG)', async () => ({ url: `http://127.0.0.1:${agent!.port}`, key, template: TEMPLATE }));

    it('should leave libvirt and the data folder untouched after hostile requests', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      const before = { domains: await domainsOf(site!), files: readdirSync(site!.dataDir).sort() };
      for (const s of HOSTILE_STRINGS) {
        for (const field of ['name', 'template', 'owner', 'id', 'sshKey', 'userData']) {
          if (field === 'userData' && s === '') continue; // empty user-data is fine
          const a = await api(base, key, 'POST', '/vms', { name: 'ok-name', template: TEMPLATE, [field]: s });
          expect(a.status, `${field}=${JSON.stringify(s)}`).to.be.within(400, 499);
        }
      }
      expect(await domainsOf(site!)).to.deep.equal(before.domains);
      expect(readdirSync(site!.dataDir).sort()).to.deep.equal(before.files);
      expect(existsSync(path.join(site!.dataDir, 'vms')) ? readdirSync(path.join(site!.dataDir, 'vms')) : []).to.deep.equal([]);
    });

    it('should import a template over HTTP by upload and by URL, checking the sha256', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      const img = path.join(site!.dataDir, 'upload-src.qcow2');
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '32M']);
      const bytes = readFileSync(img);
      const sum = createHash('sha256').update(bytes).digest('hex');
      const upload = (name: string, sha: string) => fetch(`${base}/templates?name=${name}&sha256=${sha}&os=alpine&minMemoryMiB=64`, {
        method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' }, body: bytes,
      });
      const bad = await upload('up-bad', '0'.repeat(64));
      expect(bad.status).to.equal(422);
      expect(((await bad.json()) as any).error.code).to.equal('checksum_mismatch');
      const ok = await upload('up-ok', sum);
      expect(ok.status).to.equal(201);
      expect(((await ok.json()) as any).files[0]).to.include({ role: 'disk', sha256: sum, format: 'qcow2' });
      // by URL from a little HTTP server on loopback
      const server = createHttpServer((_q, r) => r.end(bytes));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      try {
        const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/disk.qcow2`;
        const a = await api(base, key, 'POST', '/templates', { name: 'by-url', url, sha256: sum });
        expect(a.status, JSON.stringify(a.body)).to.equal(201);
      } finally {
        server.close();
      }
      const names = ((await api(base, key, 'GET', '/templates')).body as { name: string }[]).map((t) => t.name);
      expect(names).to.include.members(['up-ok', 'by-url']).and.not.include('up-bad');
      expect(readdirSync(path.join(site!.dataDir, 'templates')).filter((n) => n.startsWith('.'))).to.deep.equal([]);
      for (const n of ['up-ok', 'by-url']) expect((await api(base, key, 'DELETE', `/templates/${n}`)).status).to.equal(204);
      rmSync(img);
    });

    it('should refuse a template that needs KVM on this TCG host with a clear message', async function () {
      const store = new TemplateStore(site!.dataDir);
      await store.import({ name: 'desktop', kernel: guest.kernel, initrd: guest.initrd, needsKvm: true, console: 'vnc', os: 'ubuntu-desktop' });
      try {
        const a = await api(`http://127.0.0.1:${agent!.port}`, key, 'POST', '/vms', { name: 'desk', template: 'desktop' });
        expect(a.status).to.equal(409);
        expect(a.body.error.code).to.equal('no_kvm');
        expect(a.body.error.message).to.match(/KVM/).and.to.match(/TCG/);
        await expectNothingLeft(site!);
      } finally {
        await store.remove('desktop', async () => []);
      }
    });

    for (const step of CREATE_STEPS) {
      it(`should undo everything when create fails after step "${step}"`, async function () {
        failAt = step;
        try {
          const a = await api(`http://127.0.0.1:${agent!.port}`, key, 'POST', '/vms', { name: `fail-${step}`, template: TEMPLATE });
          expect(a.status).to.equal(500);
          expect(a.body.error.code).to.equal('injected_failure');
        } finally {
          failAt = undefined;
        }
        expect((await api(`http://127.0.0.1:${agent!.port}`, key, 'GET', '/vms')).body).to.deep.equal([]);
        await expectNothingLeft(site!);
      });
    }

    it('should create five VMs at once without a clash of names, MACs, IPs or ports, then delete them all', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      // another program holds the first port of the range: VMs get the next free ones
      const squatter = createNetServer();
      await new Promise<void>((r) => squatter.listen(site!.ports.low, '127.0.0.1', () => r()));
      const answers = await Promise.all([0, 1, 2, 3, 4].map((i) => api(base, key, 'POST', '/vms', { name: `burst-${i}`, template: TEMPLATE, memoryMiB: 128 })));
      try {
        for (const a of answers) expect(a.status, JSON.stringify(a.body)).to.equal(201);
        const vms = answers.map((a) => a.body);
        for (const k of ['id', 'name', 'mac', 'ip'] as const) expect(new Set(vms.map((v) => v[k])).size, k).to.equal(5);
        expect(new Set(vms.map((v) => v.ssh.port)).size, 'ports').to.equal(5);
        expect(vms.map((v) => v.ssh.port)).not.to.include(site!.ports.low);
        // no SSH key asked for: no user of ours in the command
        expect(vms[0].ssh.command).to.equal(`ssh -p ${vms[0].ssh.port} ${vms[0].ssh.host}`);
        expect(vms.every((v) => v.state === 'running')).to.equal(true);
        expect(await domainsOf(site!)).to.have.length(5);
        // the same name again is a conflict, not a sixth VM
        expect((await api(base, key, 'POST', '/vms', { name: 'burst-0', template: TEMPLATE })).status).to.equal(409);
        const status = (await api(base, key, 'GET', '/status')).body;
        expect(status.vms.total).to.equal(5);
        // a template in use stays
        const rm = await api(base, key, 'DELETE', `/templates/${TEMPLATE}`);
        expect(rm.status).to.equal(409);
        expect(rm.body.error.message).to.include('burst-');
      } finally {
        squatter.close();
        const dels = await Promise.all(answers.filter((a) => a.status === 201).map((a) => api(base, key, 'DELETE', `/vms/${a.body.id}`)));
        for (const d of dels) expect(d.status).to.equal(204);
      }
      await expectNothingLeft(site!);
    });

    it('should answer a clear 409 when the guest ignores the ACPI shutdown, and power it off on request', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      await new TemplateStore(site!.dataDir).import({ name: 'stubborn', kernel: guest.kernel, initrd: guest.initrd, cmdline: `${guest.cmdline} ${IGNORE_ACPI}` });
      const vm = (await api(base, key, 'POST', '/vms', { name: 'stubborn', template: 'stubborn' })).body;
      const session = await ConsoleSession.open(base, `/vms/${vm.id}/console`, key);
      try {
        // booted or still booting, this guest never acts on the power button
        const a = await api(base, key, 'POST', `/vms/${vm.id}/shutdown`, { timeoutSeconds: 2 });
        expect(a.status).to.equal(409);
        expect(a.body.error.code).to.equal('shutdown_timeout');
        expect(a.body.error.message).to.match(/still running/).and.to.match(/poweroff/);
        expect((await api(base, key, 'GET', `/vms/${vm.id}`)).body.state).to.equal('running');
        const off = await api(base, key, 'POST', `/vms/${vm.id}/poweroff`);
        expect(off.body.state).to.equal('shutoff');
        const on = await api(base, key, 'POST', `/vms/${vm.id}/start`);
        expect(on.body.state).to.equal('running');
        // the console bridge reconnects to the new QEMU by itself
        await session.waitFor(/SKYGUEST-READY/, 90_000, session.output.length);
      } finally {
        session.close();
        expect((await api(base, key, 'DELETE', `/vms/${vm.id}`)).status).to.equal(204);
        await new TemplateStore(site!.dataDir).remove('stubborn', async () => []);
      }
      await expectNothingLeft(site!);
    });

    it('should answer a start libvirt refuses with 502 and libvirt\'s reason in plain words', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      const vm = (await api(base, key, 'POST', '/vms', { name: 'refused', template: TEMPLATE })).body;
      try {
        expect((await api(base, key, 'POST', `/vms/${vm.id}/poweroff`)).body.state).to.equal('shutoff');
        rmSync(path.join(site!.dataDir, 'vms', vm.id, 'seed.iso'));
        const a = await api(base, key, 'POST', `/vms/${vm.id}/start`);
        expect(a.status, JSON.stringify(a.body)).to.equal(502);
        expect(a.body.error.code).to.equal('hypervisor_failed');
        expect(a.body.error.message).to.match(new RegExp(`^libvirt could not start VM ${vm.id}: .*seed\\.iso`));
        expect(a.body.error.message).not.to.match(/virsh|qemu:\/\/\/system/);
        expect(a.body.error.details).to.equal(undefined);
        expect((await api(base, key, 'GET', `/vms/${vm.id}`)).body.state).to.equal('shutoff');
      } finally {
        expect((await api(base, key, 'DELETE', `/vms/${vm.id}`)).status).to.equal(204);
      }
      await expectNothingLeft(site!);
    });

    it('should boot a disk template (a raw boot sector) from a qcow2 overlay and show its serial output', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      const raw = path.join(site!.dataDir, 'bootsector.raw');
      const image = Buffer.alloc(1024 * 1024);
      probeBootSector().copy(image, 0);
      writeFileSync(raw, image);
      await new TemplateStore(site!.dataDir).import({ name: 'boot-sector', disk: raw, os: 'none' });
      rmSync(raw);
      const a = await api(base, key, 'POST', '/vms', { name: 'disk-boot', template: 'boot-sector', diskGiB: 1 });
      expect(a.status, JSON.stringify(a.body)).to.equal(201);
      const session = await ConsoleSession.open(base, `/vms/${a.body.id}/console`, key);
      try {
        await session.waitFor(new RegExp(ACCEL_MARKER), 30_000);
        const info = await run('qemu-img', ['info', '--output=json', '-U', path.join(site!.dataDir, 'vms', a.body.id, 'disk.qcow2')]);
        const j = JSON.parse(info.stdout);
        expect(j['backing-filename-format']).to.equal('raw');
        expect(j['virtual-size']).to.equal(1024 ** 3);
      } finally {
        session.close();
        expect((await api(base, key, 'DELETE', `/vms/${a.body.id}`)).status).to.equal(204);
        await new TemplateStore(site!.dataDir).remove('boot-sector', async () => []);
      }
      await expectNothingLeft(site!);
    });

    it('should bridge the VNC console of a graphical template to a WebSocket (RFB)', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      await new TemplateStore(site!.dataDir).import({ name: 'graphical', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, console: 'vnc' });
      const vm = (await api(base, key, 'POST', '/vms', { name: 'graphical', template: 'graphical' })).body;
      try {
        expect(vm.console).to.equal('vnc');
        const { WebSocket } = await import('ws');
        const ws = new WebSocket(`ws://127.0.0.1:${agent!.port}/vms/${vm.id}/vnc`, { headers: { authorization: `Bearer ${key}` } });
        const banner = await new Promise<string>((resolve, reject) => {
          ws.once('message', (d: Buffer) => resolve(d.toString('latin1')));
          ws.once('error', reject);
          ws.once('unexpected-response', (_q, r) => reject(new Error(`HTTP ${r.statusCode}`)));
        });
        ws.close();
        expect(banner).to.match(/^RFB 003\.00\d\n/);
      } finally {
        expect((await api(base, key, 'DELETE', `/vms/${vm.id}`)).status).to.equal(204);
        await new TemplateStore(site!.dataDir).remove('graphical', async () => []);
      }
      await expectNothingLeft(site!);
    });

    it('should delete a VM that is still being created, and answer 404 to a second delete', async function () {
      const base = `http://127.0.0.1:${agent!.port}`;
      const id = 'halfmade0001';
      const creating = api(base, key, 'POST', '/vms', { id, name: 'half-made', template: TEMPLATE });
      let seen = await api(base, key, 'GET', `/vms/${id}`);
      while (seen.status === 404) seen = await api(base, key, 'GET', `/vms/${id}`);
      expect(seen.body.state).to.equal('creating');
      const del = await api(base, key, 'DELETE', `/vms/${id}`);
      const created = await creating;
      expect(created.status).to.equal(201);
      expect(del.status).to.equal(204);
      expect((await api(base, key, 'DELETE', `/vms/${id}`)).status).to.equal(404);
      await expectNothingLeft(site!);
    });
  });

  describe('agent process: a VM through its life, across a SIGKILL of the agent', function () {
    let site: Site | undefined;
    let child: ResultPromise | undefined;
    let port = 0;
    const key = randomBytes(16).toString('hex');
    let base = '';
    let vm: any;
    let consoleSession: ConsoleSession | undefined;

    const spawnAgent = async () => {
      child = execa(NODE, [path.join(REPO, 'appliance/main.ts'), 'agent', '--data', site!.dataDir, '--port', String(port), '--key', key,
        '--host-id', site!.hostId, '--ssh-ports', `${site!.ports.low}-${site!.ports.high}`, '--log-level', 'warn',
        // a controller that is never there: no mDNS browsing, no enrolling with another test's controller
        '--controller', 'http://127.0.0.1:9'], {
        env: { SKYHOST_ACCEL: 'tcg', SKYHOST_LISTEN: '127.0.0.1' },
        reject: false,
        stdout: 'ignore',
        stderr: 'pipe',
        cwd: REPO,
      });
      await waitForHttp(`${base}/healthz`, 30_000);
    };

    before(async function () {
      site = await newSite(guest, 'proc');
      port = await freePort();
      base = `http://127.0.0.1:${port}`;
      await spawnAgent();
    });

    after(async function () {
      consoleSession?.close();
      child?.kill('SIGKILL');
      await child?.catch(() => undefined);
      await cleanSite(site);
    });

    it('should create a VM (201, running) with an SSH port and an address of its own', async function () {
      const a = await api(base, key, 'POST', '/start-vm', { name: 'life', template: TEMPLATE, owner: 'student1', sshKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5 student@lab' });
      expect(a.status, JSON.stringify(a.body)).to.equal(201);
      vm = a.body;
      expect(vm.state).to.equal('running');
      expect(vm.ssh.port).to.be.within(site!.ports.low, site!.ports.high);
      expect(vm.ssh.command).to.equal(`ssh -p ${vm.ssh.port} sky@${vm.ssh.host}`);
      expect(vm.hypervisor).to.equal('tcg');
      const meta = await virsh(['metadata', `sky-${hostTag(site!.hostId)}-${vm.id}`, 'https://skyhost.dev/xmlns/vm/1']);
      expect(meta).to.include(`<hostId>${site!.hostId}</hostId>`).and.to.include('<owner>student1</owner>');
    });

    it('should show the shell prompt on the console WebSocket and run a command', async function () {
      consoleSession = await ConsoleSession.open(base, `/vms/${vm.id}/console`, key);
      const out = await consoleSession.run('echo hi-$((6*7)); uname -s', 90_000);
      expect(out).to.include('hi-42').and.to.include('Linux');
    });

    it('should answer 409 for the graphical console of a serial VM', async function () {
      expect(await wsStatus(base, `/vms/${vm.id}/vnc`, key)).to.equal(409);
    });

    it('should reach the guest\'s port 22 through the forwarded port', async function () {
      expect(await readBanner(vm.ssh.port)).to.equal(GUEST_BANNER);
    });

    it('should share the machine with a second agent that never sees or touches this one\'s VM', async function () {
      const other = await newSite(guest, 'other');
      const otherKey = randomBytes(16).toString('hex');
      const b = await startAgent({ config: siteConfig(other), log: new TestLog('agent-test-b'), key: otherKey, hostId: other.hostId, port: 0, listen: '127.0.0.1',
        accel: { accel: 'tcg', reason: 'tests run under TCG' } });
      try {
        const bBase = `http://127.0.0.1:${b.port}`;
        expect((await api(bBase, otherKey, 'GET', '/vms')).body).to.deep.equal([]);
        expect((await api(bBase, otherKey, 'GET', `/vms/${vm.id}`)).status).to.equal(404);
        expect((await api(bBase, otherKey, 'DELETE', `/vms/${vm.id}`)).status).to.equal(404);
        expect((await api(base, otherKey, 'GET', '/vms')).status, 'one agent\'s key is no good at the other').to.equal(401);
      } finally {
        await b.stop();
        await cleanSite(other);
      }
      expect((await virsh(['domstate', `sky-${hostTag(site!.hostId)}-${vm.id}`])).trim()).to.equal('running');
      expect((await api(base, key, 'GET', `/vms/${vm.id}`)).body.state).to.equal('running');
    });

    it('should give a late viewer the scrollback', async function () {
      const late = await ConsoleSession.open(base, `/vms/${vm.id}/console`, key);
      try {
        await late.waitFor(/hi-42/, 5000);
      } finally {
        late.close();
      }
    });

    it('should keep the VM running through a SIGKILL of the agent and adopt it again on restart', async function () {
      consoleSession?.close();
      child!.kill('SIGKILL');
      await child!.catch(() => undefined);
      expect(await portAnswers(port)).to.equal(false);
      const dom = `sky-${hostTag(site!.hostId)}-${vm.id}`;
      expect((await virsh(['domstate', dom])).trim()).to.equal('running');
      await spawnAgent();
      const a = await api(base, key, 'GET', `/vms/${vm.id}`);
      expect(a.status).to.equal(200);
      expect(a.body).to.include({ id: vm.id, name: 'life', state: 'running', owner: 'student1', ip: vm.ip, mac: vm.mac });
      expect(a.body.ssh.port).to.equal(vm.ssh.port);
      consoleSession = await ConsoleSession.open(base, `/vms/${vm.id}/console`, key);
      const out = await consoleSession.run('echo back-$((40+2))', 30_000);
      expect(out).to.include('back-42');
      expect(await readBanner(vm.ssh.port)).to.equal(GUEST_BANNER);
    });

    it('should notice at once a VM powered off from inside, and start it again with its console', async function () {
      const from = consoleSession!.output.length;
      consoleSession!.send('poweroff -f\n');
      let state = '';
      for (const end = Date.now() + 30_000; Date.now() < end && state !== 'shutoff';) { // a TCG guest's poweroff on a loaded machine: not 10 s
        await new Promise((r) => setTimeout(r, 250));
        state = (await api(base, key, 'GET', `/vms/${vm.id}`)).body.state;
      }
      expect(state).to.equal('shutoff');
      const on = await api(base, key, 'POST', `/vms/${vm.id}/start`);
      expect(on.body.state).to.equal('running');
      await consoleSession!.waitFor(/SKYGUEST-READY/, 90_000, from);
    });

    it('should shut the VM down through ACPI', async function () {
      const a = await api(base, key, 'POST', `/vms/${vm.id}/shutdown`, { timeoutSeconds: 60 });
      expect(a.status, JSON.stringify(a.body)).to.equal(200);
      expect(a.body.state).to.equal('shutoff');
    });

    it('should delete it and leave nothing: no domain, no files, no DHCP entry, no port', async function () {
      consoleSession?.close();
      expect((await api(base, key, 'DELETE', `/vms/${vm.id}`)).status).to.equal(204);
      expect((await api(base, key, 'DELETE', `/vms/${vm.id}`)).status).to.equal(404);
      await expectNothingLeft(site!);
      expect((await api(base, key, 'GET', '/vms')).body).to.deep.equal([]);
    });
  });
});
