// Templates moving between hosts: real agents on loopback pulling from each other (HTTP Range, sha256,
// resume, relay of a file still arriving), pull tickets, and the controller placing a VM on a host
// that lacks its template (it pulls, verifies and boots the test guest under TCG).
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { defaults } from '../../base/config.ts';
import { listen } from '../../base/http.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { makeTicket } from '../../base/tickets.ts';
import type { PullProgress, PullRequest, TemplateInfo } from '../../wire/api.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { buildTestGuest, ConsoleSession, sha256File } from '../support/guest.ts';
import { GiveUp, waitFor } from '../support/net.ts';

/** An agent's URL for this test's own calls: plain HTTP, which an agent takes from loopback. */
const plain = (agent: RunningAgent) => agent.url.replace(/^https:/, 'http:');
/** What pins an https:// agent (its certificate's sha256), nothing for a plain one. */
const pin = (agent: RunningAgent): { fingerprint?: string } => {
  const fingerprint = (agent as { fingerprint?: string }).fingerprint;
  return agent.url.startsWith('https:') && fingerprint ? { fingerprint } : {};
};

/** A stand-in source in front of a real agent: forwards Range requests, and can throttle, cut or corrupt. */
class Relay {
  server: Server;
  url = '';
  /** Range headers asked, in order. */
  asked: string[] = [];
  /** Bytes/s (0: as fast as it comes). */
  rate = 0;
  /** Cut every answer after this many bytes (undefined: never). */
  cutAfter: number | undefined;
  /** Bytes it sends over all its answers, then none (undefined: no limit). */
  budget: number | undefined;
  /** Flip one byte at this offset of the file. */
  corruptAt: number | undefined;
  private readonly target: string;
  private readonly auth: string;

  constructor(target: string, auth: string) {
    this.target = target;
    this.auth = auth;
    this.server = createServer((req, res) => {
      this.asked.push(String(req.headers.range ?? ''));
      const start = Number(/bytes=(\d+)-/.exec(String(req.headers.range ?? ''))?.[1] ?? 0);
      const up = httpRequest(`${this.target}${req.url!.replace(/^\/t/, '')}`, { headers: { authorization: this.auth, ...(req.headers.range ? { range: req.headers.range } : {}) } }, (upRes: IncomingMessage) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        let sent = 0;
        let pos = start;
        upRes.on('data', (chunk: Buffer) => {
          if (this.corruptAt !== undefined && this.corruptAt >= pos && this.corruptAt < pos + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[this.corruptAt - pos] = chunk[this.corruptAt - pos]! ^ 0xff;
          }
          pos += chunk.length;
          const limit = Math.min(this.cutAfter ?? Infinity, sent + (this.budget ?? Infinity));
          if (sent + chunk.length > limit) {
            const part = chunk.subarray(0, limit - sent);
            if (this.budget !== undefined) this.budget -= part.length;
            res.write(part);
            upRes.destroy();
            res.destroy();
            return;
          }
          sent += chunk.length;
          if (this.budget !== undefined) this.budget -= chunk.length;
          // Paused until both the reader drained and the rate allows more.
          let waits = 0;
          const wait = () => {
            waits++;
            upRes.pause();
          };
          const done = () => {
            if (--waits === 0) upRes.resume();
          };
          if (!res.write(chunk)) {
            wait();
            res.once('drain', done);
          }
          if (this.rate > 0) {
            wait();
            setTimeout(done, (chunk.length / this.rate) * 1000);
          }
        });
        upRes.on('end', () => res.end());
        upRes.on('error', () => res.destroy());
      });
      up.on('error', () => res.destroy());
      up.end();
    });
  }

  async start(): Promise<this> {
    const port = await listen(this.server, 0, '127.0.0.1');
    this.url = `http://127.0.0.1:${port}/t`;
    return this;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

describe('template distribution between real agents', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-distrib-'));
  const run = randomBytes(3).toString('hex');
  const agents: RunningAgent[] = [];
  const relays: Relay[] = [];
  let a: RunningAgent;
  let b: RunningAgent;
  let c: RunningAgent;
  let manifest: TemplateInfo;
  const SIZE = 24 * 1024 * 1024 + 12345;

  const startOne = async (label: string, ports: string) => {
    const dataDir = path.join(work, label);
    const agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir, listen: '127.0.0.1', sshPortRange: ports },
      log: logger(`agent-${label}`), hostId: `distrib-${label}-${run}`, port: 0, listen: '127.0.0.1', key: `distrib-key-${label}-0123456789abcdef`,
    });
    agents.push(agent);
    return agent;
  };
  const call = async (agent: RunningAgent, method: string, p: string, body?: unknown, auth = `Bearer ${agent.key}`) => {
    const res = await fetch(plain(agent) + p, {
      method, headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined, text };
  };
  const ticket = (source: RunningAgent, template: string, reader: RunningAgent, ttlS = 600) => makeTicket(source.key, { t: template, h: reader.hostId, exp: Math.floor(Date.now() / 1000) + ttlS });
  const peer = (source: RunningAgent, reader: RunningAgent, template = manifest.name) => ({ url: `${source.url}/templates/${template}`, authorization: ticket(source, template, reader), ...pin(source) });
  const pullTo = async (agent: RunningAgent, body: PullRequest): Promise<PullProgress> => {
    const started = await call(agent, 'POST', '/templates/pull', body);
    expect(started.status, started.text).to.be.oneOf([200, 202]);
    return waitFor(`the pull of ${body.manifest.name} on ${agent.hostId} to end`, async () => {
      const p = (await call(agent, 'GET', `/templates/pulls/${body.manifest.name}`)).json as PullProgress;
      return p.state !== 'pulling' ? p : undefined;
    }, 60_000, 50);
  };
  const hidden = (agent: RunningAgent) => readdirSync(path.join(work, agentLabel(agent), 'templates')).filter((n) => n.startsWith('.'));
  const agentLabel = (agent: RunningAgent) => agent.hostId.split('-')[1]!;
  const relay = async (source: RunningAgent, reader: RunningAgent) => {
    const r = await new Relay(`${plain(source)}/templates/${manifest.name}`, ticket(source, manifest.name, reader)).start();
    relays.push(r);
    return { r, source: { url: r.url } };
  };
  const removeTemplate = async (agent: RunningAgent, name = manifest.name) => {
    const del = await call(agent, 'DELETE', `/templates/${name}`);
    expect(del.status, del.text).to.be.oneOf([204, 404]);
  };

  before(async function () {
    this.timeout(300_000); // three agents starting on a machine other tests load too
    configureLogging({ out: () => {} });
    await ensureDaemons();
    chmodSync(work, 0o711);
    a = await startOne('a', '42300-42309');
    b = await startOne('b', '42310-42319');
    c = await startOne('c', '42320-42329');
    // A raw disk image of random bytes: qemu-img reads it as raw, and every byte counts in the sha256.
    const image = path.join(work, 'image.raw');
    writeFileSync(image, randomBytes(SIZE));
    manifest = await a.templates.import({ name: 'room-image', disk: image, os: 'test' });
  });

  after(async function () {
    this.timeout(60_000);
    for (const r of relays) await r.close();
    for (const agent of agents) {
      await agent.stop().catch((err: Error) => console.warn(`stopping ${agent.hostId}: ${err.message}`));
      await removeNetwork(networkName(agent.hostId));
    }
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  afterEach(async () => {
    for (const r of relays.splice(0)) await r.close();
  });

  it('pulls a template held only by a peer, with a ticket, verifies it and installs it', async () => {
    const done = await pullTo(b, { manifest, sources: [peer(a, b)] });
    expect(done).to.deep.include({ state: 'done', doneBytes: SIZE, totalBytes: SIZE });
    const got = await b.templates.get(manifest.name);
    expect(got?.files).to.deep.equal(manifest.files);
    expect(sha256File(path.join(work, 'b', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    expect(hidden(b)).to.deep.equal([]);
    const status = await call(b, 'GET', '/status');
    expect(status.json.templates.map((t: TemplateInfo) => t.name)).to.include(manifest.name);
    expect(status.json.pulls).to.deep.include({ name: manifest.name, state: 'done', doneBytes: SIZE, totalBytes: SIZE });
    // Pulling what is already here is done at once; other files under the same name are refused.
    expect((await call(b, 'POST', '/templates/pull', { manifest, sources: [peer(a, b)] })).json.state).to.equal('done');
    const other = { ...manifest, files: [{ ...manifest.files[0]!, sha256: 'f'.repeat(64) }] };
    const refused = await call(b, 'POST', '/templates/pull', { manifest: other, sources: [peer(a, b)] });
    expect(refused.status).to.equal(409);
    expect(refused.json.error.code).to.equal('template_differs');
    await removeTemplate(b);
  });

  it('lets a ticket open only its template\'s files, until it expires; the key opens them too', async () => {
    const file = `/templates/${manifest.name}/files/disk.raw`;
    const range = { range: 'bytes=0-9' };
    const get = (p: string, auth?: string) => fetch(plain(a) + p, { headers: { ...range, ...(auth ? { authorization: auth } : {}) } });
    expect((await get(file)).status).to.equal(401);
    expect((await get(file, ticket(a, 'other', b))).status).to.equal(401);
    expect((await get(file, ticket(a, manifest.name, b, -5))).status).to.equal(401);
    expect((await get(file, ticket(b, manifest.name, b))).status, 'signed for another agent').to.equal(401);
    const ok = await get(file, ticket(a, manifest.name, b));
    expect(ok.status).to.equal(206);
    expect(ok.headers.get('content-range')).to.equal(`bytes 0-9/${SIZE}`);
    expect((await ok.arrayBuffer()).byteLength).to.equal(10);
    expect((await get(file, `Bearer ${a.key}`)).status).to.equal(206);
    // A ticket is no key: the rest of the API refuses it.
    expect((await call(a, 'GET', '/status', undefined, ticket(a, manifest.name, b))).status).to.equal(401);
    expect((await call(a, 'GET', `/templates/pulls/${manifest.name}`, undefined, ticket(a, manifest.name, b))).status).to.equal(401);
    const beyond = await get(file, `Bearer ${a.key}`).then(() => fetch(plain(a) + file, { headers: { authorization: `Bearer ${a.key}`, range: `bytes=${SIZE}-` } }));
    expect(beyond.status).to.equal(416);
  });

  it('refuses a download tampered with on the way and keeps nothing; another source then succeeds', async () => {
    const { r, source } = await relay(a, b);
    r.corruptAt = 5_000_000;
    const failed = await pullTo(b, { manifest, sources: [source] });
    expect(failed).to.include({ state: 'failed', code: 'checksum_mismatch' });
    expect(await b.templates.get(manifest.name)).to.equal(undefined);
    expect(hidden(b), 'no staging folder left').to.deep.equal([]);
    // The tampering source first, an honest one second: the file is fetched again from the second.
    const done = await pullTo(b, { manifest, sources: [source, peer(a, b)] });
    expect(done.state).to.equal('done');
    expect(sha256File(path.join(work, 'b', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    await removeTemplate(b);
  });

  it('resumes an interrupted pull where it stopped: from the next source, and in a later pull', async () => {
    const { r, source } = await relay(a, b);
    r.budget = 7_000_000;
    // The one source stops sending for good: the pull gives up, but keeps the bytes it has for the next one.
    const cut = await pullTo(b, { manifest, sources: [source] });
    expect(cut).to.include({ state: 'failed', code: 'pull_failed' });
    expect(await b.templates.get(manifest.name)).to.equal(undefined);
    // (the relay's last write before it cuts may not reach the socket: what arrived is somewhat less than its budget)
    const stoppedAt = Number(/^bytes=(\d+)-$/.exec(r.asked[1]!)?.[1]);
    expect(stoppedAt).to.be.within(1, 7_000_000);
    expect(r.asked).to.deep.equal(['bytes=0-', ...Array(r.asked.length - 1).fill(`bytes=${stoppedAt}-`)]);
    r.asked = [];
    r.budget = undefined;
    const resumed = await pullTo(b, { manifest, sources: [source] });
    expect(resumed.state).to.equal('done');
    expect(r.asked).to.deep.equal([`bytes=${stoppedAt}-`]);
    expect(sha256File(path.join(work, 'b', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    await removeTemplate(b);

    // Cut mid-way, then the next source continues at the same offset.
    const cutter = await relay(a, b);
    cutter.r.cutAfter = 9_000_000;
    const honest = await relay(a, b);
    const mixed = await pullTo(b, { manifest, sources: [cutter.source, honest.source] });
    expect(mixed.state).to.equal('done');
    expect(cutter.r.asked).to.deep.equal(['bytes=0-']);
    expect(Number(/^bytes=(\d+)-$/.exec(honest.r.asked[0]!)?.[1])).to.be.within(1, 9_000_000);
    expect(honest.r.asked).to.have.length(1);
    expect(sha256File(path.join(work, 'b', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    await removeTemplate(b);
  });

  it('serves a file still arriving: C pulls from B while B pulls from A, and a second request joins the first', async () => {
    const slow = await relay(a, b);
    slow.r.rate = 8 * 1024 * 1024; // ~3 s for the file: C starts long before B has it
    const started = await call(b, 'POST', '/templates/pull', { manifest, sources: [slow.source] });
    expect(started.status).to.equal(202);
    const joined = await call(b, 'POST', '/templates/pull', { manifest, sources: [slow.source] });
    expect(joined.json.state).to.equal('pulling');
    // C asks at once, before B has a byte (as the hosts of a chain do): B's answer waits for the bytes.
    const fromB = await relay(b, c);
    const cDone = await pullTo(c, { manifest, sources: [fromB.source] });
    const bState = (await call(b, 'GET', `/templates/pulls/${manifest.name}`)).json as PullProgress;
    expect(cDone.state).to.equal('done');
    expect(bState.state).to.equal('done');
    expect(slow.r.asked, 'one download from A for both requests').to.deep.equal(['bytes=0-']);
    // C asked B once, from the start, while B was still pulling: the bytes were relayed as they came.
    expect(fromB.r.asked).to.deep.equal(['bytes=0-']);
    expect(sha256File(path.join(work, 'c', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    expect(existsSync(path.join(work, 'c', 'templates', `.pull-${manifest.name}`))).to.equal(false);
    await removeTemplate(b);
    await removeTemplate(c);
  });

  it('makes a reader that asks before the pull started here wait for it, and streams to it before the pull ends', async () => {
    // The controller starts a chain's pulls together: C may ask B before B had its own request.
    const fromB = await relay(b, c);
    const cStarted = await call(c, 'POST', '/templates/pull', { manifest, sources: [fromB.source] });
    expect(cStarted.status).to.equal(202);
    // C's request has reached B (on a loaded machine that is not at once), and then longer than C's
    // rounds over a source that answers 404 at once
    await waitFor('C to ask B', () => fromB.r.asked.length > 0, 30_000, 20);
    await new Promise((r) => setTimeout(r, 2500));
    const slow = await relay(a, b);
    slow.r.rate = 8 * 1024 * 1024; // ~3 s for the file
    expect((await call(b, 'POST', '/templates/pull', { manifest, sources: [slow.source] })).status).to.equal(202);
    // C has bytes while B is still pulling: the relay streams, it does not wait for B's copy to be whole.
    const overlap = await waitFor('C to have bytes while B still pulls', async () => {
      const [bp, cp] = await Promise.all([b, c].map(async (x) => (await call(x, 'GET', `/templates/pulls/${manifest.name}`)).json as PullProgress));
      expect(cp!.state, cp!.error).to.not.equal('failed');
      if (bp!.state !== 'pulling') throw new Error(`B's pull ended (${bp!.state}) before C had a byte`);
      return cp!.doneBytes > 0 && cp!.doneBytes < SIZE ? { b: bp!.doneBytes, c: cp!.doneBytes } : undefined;
    }, 20_000, 20);
    expect(overlap.c).to.be.below(SIZE);
    const cDone = await waitFor('C\'s pull to end', async () => {
      const p = (await call(c, 'GET', `/templates/pulls/${manifest.name}`)).json as PullProgress;
      return p.state !== 'pulling' ? p : undefined;
    }, 60_000, 50);
    expect(cDone.state, cDone.error).to.equal('done');
    expect(fromB.r.asked, 'C asked B once and waited for its pull').to.deep.equal(['bytes=0-']);
    expect(sha256File(path.join(work, 'c', 'templates', manifest.name, 'disk.raw'))).to.equal(manifest.files[0]!.sha256);
    await waitFor('B\'s pull to end', async () => ((await call(b, 'GET', `/templates/pulls/${manifest.name}`)).json as PullProgress).state === 'done', 60_000, 50);
    await removeTemplate(b);
    await removeTemplate(c);
  });
});

describe('the controller putting templates on hosts (real agents, libvirt + QEMU under TCG)', function () {
  this.timeout(240_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-distrib-ctl-'));
  const run = randomBytes(3).toString('hex');
  const agents: RunningAgent[] = [];
  let ctl: RunningController;
  let token: string;
  let a: RunningAgent;
  let b: RunningAgent;

  const api = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined, text };
  };
  const startOne = async (label: string, ports: string) => {
    const agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, label), listen: '127.0.0.1', sshPortRange: ports },
      log: logger(`agent-${label}`), hostId: `distctl-${label}-${run}`, port: 0, listen: '127.0.0.1', key: `distctl-key-${label}-0123456789abcdef`,
    });
    agents.push(agent);
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        hostId: agent.hostId, hostname: `lab-${label}`, agentUrl: agent.url, agentKey: agent.key, joinToken: ctl.services.secrets.joinToken, version: 'test',
        ...(pin(agent).fingerprint ? { certFingerprint: pin(agent).fingerprint } : {}),
      }),
    });
    expect(enrolled.status, await enrolled.text()).to.equal(200);
    return agent;
  };
  const hostHas = (agent: RunningAgent, name: string) => ctl.services.hosts.record(agent.hostId)?.status?.templates.some((t) => t.name === name) ?? false;

  before(async () => {
    configureLogging({ out: () => {} });
    await ensureDaemons();
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agents' data folders below it
    // answerWithinMs 0: a request is answered at once (202), showing what the VM waits for
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1, answerWithinMs: 0 });
    token = ctl.services.secrets.adminToken;
    // A's templates are in its store before it starts, so its first status lists them (the next sample is 5 s later)
    const storeA = new TemplateStore(path.join(work, 'a'));
    const guest = await buildTestGuest();
    await storeA.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
    const image = path.join(work, 'image.raw');
    writeFileSync(image, randomBytes(8 * 1024 * 1024));
    await storeA.import({ name: 'lab-image', disk: image, os: 'test' });
    a = await startOne('a', '42330-42339');
    b = await startOne('b', '42340-42349');
    await waitFor('host A to report its templates, and B its status', () => hostHas(a, 'guest') && hostHas(a, 'lab-image') && ctl.services.hosts.record(b.hostId)?.status != null, 60_000);
  });

  after(async function () {
    this.timeout(120_000);
    await ctl?.stop().catch((err: Error) => console.warn(`stopping the controller: ${err.message}`));
    for (const agent of agents) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch((err: Error) => console.warn(`deleting VM ${vm.id}: ${err.message}`));
      await agent.stop().catch((err: Error) => console.warn(`stopping ${agent.hostId}: ${err.message}`));
      await removeNetwork(networkName(agent.hostId));
    }
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('places a VM on a host lacking its template: the host pulls it from its peer (pulling N%), verifies it, and the VM boots', async () => {
    // A holds the template but takes no new VMs: the scheduler picks B, which can pull it.
    expect((await api('POST', `/api/hosts/${a.hostId}/drain`)).status).to.equal(200);
    expect(hostHas(b, 'guest')).to.equal(false);
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'pulled-1', memoryMiB: 256 });
    expect(created.status, created.text).to.equal(202);
    expect(created.json).to.deep.include({ host: b.hostId, state: 'creating', progress: 'pulling 0%' });
    const id = created.json.id as string;
    const seen = new Set<string>(['pulling 0%']);
    await waitFor('the VM to run on B', async () => {
      const vm = (await api('GET', `/api/vms/${id}`)).json;
      seen.add(vm.progress ?? vm.state);
      // any other state is final: say it, with the VM's error, at once
      if (vm.state !== 'creating' && vm.state !== 'running') throw new GiveUp(`the VM is ${vm.state}${vm.error ? `: ${vm.error}` : ''}`);
      return vm.state === 'running';
    }, 120_000, 20);
    expect([...seen].filter((s) => !/^pulling \d+%$/.test(s)), 'pulling, then creating, then running').to.deep.equal(['creating', 'running']);
    const guestOnB = await b.templates.get('guest');
    expect(guestOnB?.files).to.deep.equal((await a.templates.get('guest'))?.files);
    const session = await ConsoleSession.open(ctl.url, `/api/vms/${id}/console`, token);
    try {
      expect(await session.run('echo pulled-$((6*7))', 90_000)).to.include('pulled-42');
    } finally {
      session.close();
    }
    expect((await api('DELETE', `/api/vms/${id}`)).status).to.equal(204);
    expect((await api('POST', `/api/hosts/${a.hostId}/undrain`)).status).to.equal(200);
  });

  it('places a VM whose template only the controller\'s catalog holds: the host pulls it from the controller and the VM runs', async () => {
    const guest = await buildTestGuest();
    await new TemplateStore(path.join(work, 'controller')).import({ name: 'catalog-guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
    await ctl.services.templates.catalog.refresh();
    ctl.services.distribute.controllerUrl = ctl.url; // these agents were enrolled by hand: their status does not name the controller
    expect((await api('POST', `/api/hosts/${a.hostId}/drain`)).status).to.equal(200);
    const created = await api('POST', '/api/vms', { template: 'catalog-guest', name: 'from-catalog', memoryMiB: 256 });
    expect(created.status, created.text).to.equal(202);
    expect(created.json).to.deep.include({ host: b.hostId, progress: 'pulling 0%' });
    await waitFor('the VM to run on B', async () => (await api('GET', `/api/vms/${created.json.id}`)).json.state === 'running', 120_000, 100);
    expect((await b.templates.get('catalog-guest'))?.files).to.deep.equal(ctl.services.templates.catalog.snapshot().find((t) => t.name === 'catalog-guest')?.files);
    expect((await api('DELETE', `/api/vms/${created.json.id}`)).status).to.equal(204);
    expect((await api('POST', `/api/hosts/${a.hostId}/undrain`)).status).to.equal(200);
  });

  it('copies a template to all hosts from the host that has it, and keeps a marked one on a host that joins later', async () => {
    const copy = await api('POST', '/api/templates/lab-image/copy-to-all');
    expect(copy.status, copy.text).to.equal(202);
    expect(copy.json).to.deep.equal({ template: 'lab-image', skipped: [a.hostId], chains: [[{ host: b.hostId, from: a.hostId }]] });
    await waitFor('B to have lab-image', () => hostHas(b, 'lab-image'), 60_000);
    expect((await b.templates.get('lab-image'))?.files).to.deep.equal((await a.templates.get('lab-image'))?.files);
    expect((await api('POST', '/api/templates/no-such/copy-to-all')).status).to.equal(404);

    const keep = await api('PUT', '/api/templates/lab-image/keep', { keep: true });
    expect(keep.status, keep.text).to.equal(200);
    expect((await api('GET', '/api/templates-kept')).json).to.deep.equal({ templates: ['lab-image'] });
    const c = await startOne('c', '42350-42359');
    await waitFor('the new host C to pull the kept template', () => hostHas(c, 'lab-image'), 60_000);
    expect((await c.templates.get('lab-image'))?.files).to.deep.equal((await a.templates.get('lab-image'))?.files);
  });
});
