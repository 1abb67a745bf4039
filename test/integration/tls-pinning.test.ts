// TLS between hosts, pinned by fingerprint (docs/security.md#tls-between-machines), with the real
// controller and the real agent:
//   in this process (loopback): an agent given a join string enrolls over HTTPS and is polled over
//   it; a console goes browser -> controller -> agent over wss://; a different certificate at the
//   host's address is refused by the controller before one byte of HTTP (counted).
//   across network namespaces (a real LAN): `skyhost controller` and `skyhost agent --join`; plain
//   HTTP from the LAN gets nothing from the agent; a rogue controller (its own certificate), heard
//   over mDNS or given by URL, never receives a request from an agent holding the fingerprint.
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { ResultPromise } from 'execa';
import WebSocket from 'ws';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { execa } from 'execa';
import { ensureIdentity, PinnedAgent, publicKeyPin } from '../../base/tls.ts';
import { installCommand } from '../../server/install.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { parseJoin } from '../../wire/join.ts';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { freePort, waitFor } from '../support/net.ts';
import { bearerApi } from '../support/real-pair.ts';
import { GiveUp, TestLan } from '../support/netns.ts';

describe('TLS between hosts, pinned: controller and agent in this process', function () {
  this.timeout(180_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-tls-'));
  const hostId = `tls-real-${process.pid}`;
  const key = 'tls-real-agent-key-0123456789';
  let ctl: RunningController;
  let agent: RunningAgent | undefined;
  let agentPort: number;
  let admin: string;

  const api = bearerApi(() => ctl.url, () => admin);

  before(async () => {
    configureLogging({ out: () => {} });
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    const guest = await buildTestGuest();
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1, https: { port: 0 } });
    admin = ctl.services.secrets.adminToken;
    agentPort = await freePort();
    const joinString = ctl.services.joinTokens.joinString(ctl.services.joinTokens.clusterToken())!;
    expect(parseJoin(joinString)).to.deep.equal({ token: ctl.services.joinTokens.clusterToken(), addresses: [ctl.httpsUrl], fingerprint: ctl.fingerprint });
    // in the store before the agent starts: its first status lists the template (the next sample is 5 s later)
    await new TemplateStore(path.join(work, 'agent')).import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
    agent = await startAgent({
      config: {
        ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42300-42399',
        agentUrl: `https://127.0.0.1:${agentPort}`, joinToken: joinString, advertise: false,
      },
      log: logger('agent'), hostId, port: agentPort, listen: '127.0.0.1', key, enroll: true,
    });
  });

  after(async function () {
    this.timeout(120_000);
    await ctl?.stop().catch(() => {});
    if (agent) {
      for (const vm of agent.vms.list()) await agent.vms.delete(vm.id).catch(() => {});
      await agent.stop().catch(() => {});
    }
    await removeNetwork(networkName(hostId));
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('should enroll with a join string over HTTPS, pin both certificates, and be polled over HTTPS', async () => {
    const enrolled = await agent!.discovery!.enrolled(60_000);
    expect(enrolled).to.include({ state: 'ready', url: ctl.httpsUrl, clusterId: ctl.services.clusterId });
    const remembered = JSON.parse(readFileSync(path.join(work, 'agent', 'enrollment.json'), 'utf8')) as { fingerprint: string };
    expect(remembered.fingerprint).to.equal(ctl.fingerprint);
    const record = ctl.services.hosts.record(hostId)!;
    expect(record).to.include({ agentUrl: `https://127.0.0.1:${agentPort}`, agentFingerprint: agent!.fingerprint, state: 'ready' });
    await ctl.services.hosts.pollAll();
    expect(ctl.services.hosts.record(hostId)).to.include({ missedPolls: 0 });
    expect(ctl.services.hosts.record(hostId)!.status?.hostId).to.equal(hostId);
    expect((await api('GET', `/api/hosts/${hostId}`)).json).to.include({ certFingerprint: agent!.fingerprint, url: `https://127.0.0.1:${agentPort}` });
    await waitFor('the host to report its template', () => ctl.services.templates.find('guest') !== undefined, 60_000);
  });

  it('should serve a console from the controller\'s HTTPS port over wss, to the agent over wss pinned', async function () {
    this.timeout(420_000); // a TCG guest on a machine shared with other test runs may take minutes to its prompt
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'tls-1', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const vmId = created.json.id as string;
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running', 60_000);
    // The client pins the controller as an agent would; the controller pins the agent.
    const session = await ConsoleSession.open(ctl.httpsUrl!, `/api/vms/${vmId}/console`, admin, { agent: new PinnedAgent(ctl.fingerprint) });
    try {
      expect(await session.run('echo tls-$((6*7))', 300_000)).to.include('tls-42');
    } finally {
      session.close();
    }
    expect((await api('DELETE', `/api/vms/${vmId}`)).status).to.be.oneOf([200, 202, 204]);
  });

  it('should hand out install.sh over HTTPS to curl pinned to the controller\'s key, carrying the join string', async () => {
    const pin = publicKeyPin(ctl.services.tls.cert);
    const token = ctl.services.joinTokens.issue({ label: 'tls' }).token;
    const command = installCommand({ base: ctl.url, token, httpsBase: ctl.httpsUrl, pinnedPubkey: pin });
    expect(command).to.equal(`curl -fsSLk --pinnedpubkey 'sha256//${pin}' '${ctl.httpsUrl}/install.sh?token=${token}' | sudo sh`);
    const url = `${ctl.httpsUrl}/install.sh?token=${token}`;
    const script = (await execa('curl', ['-fsSLk', '--pinnedpubkey', `sha256//${pin}`, url])).stdout;
    expect(script).to.contain(`CONTROLLER_URL='${ctl.httpsUrl}'`);
    expect(script).to.contain(`CURL_TLS='-k --pinnedpubkey sha256//${pin}'`);
    const join = /JOIN_TOKEN='(shk1\.[A-Za-z0-9_-]+)'/.exec(script)![1]!;
    expect(parseJoin(join)).to.deep.equal({ token, addresses: [ctl.httpsUrl], fingerprint: ctl.fingerprint });
    // Another key (a rogue answering at that address): curl refuses before sending the request.
    const wrong = await execa('curl', ['-fsSLk', '--pinnedpubkey', `sha256//${Buffer.alloc(32, 7).toString('base64')}`, url], { reject: false });
    expect(wrong.exitCode).to.equal(90); // CURLE_SSL_PINNEDPUBKEYNOTMATCH
  });

  it('should refuse the host once another certificate answers at its address, without sending it one request', async () => {
    await agent!.stop();
    agent = undefined;
    const other = await ensureIdentity(path.join(work, 'impostor'), { commonName: 'impostor' });
    const seen: string[] = [];
    const impostor: HttpsServer = createHttpsServer({ cert: other.cert, key: other.key }, (req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, hostId }));
    });
    await new Promise<void>((resolve) => impostor.listen(agentPort, '127.0.0.1', resolve));
    try {
      // Down takes three missed polls in a row; how many rounds that needs depends on the machine (a
      // round already under way when the agent stopped may still have had its answer), so poll until
      // the host is down for its certificate rather than counting rounds.
      const host = await waitFor('the host down, refused for its certificate', async () => {
        await ctl.services.hosts.pollAll();
        const h = (await api('GET', `/api/hosts/${hostId}`)).json as { state: string; problem?: string };
        return h.state === 'down' && h.problem !== undefined ? h : undefined;
      }, 60_000, 100);
      expect(host.problem).to.match(/certificate \(sha256 .*\) is not the pinned one/);
      expect(seen, 'requests that reached the impostor').to.deep.equal([]);
      const page = await (await fetch(`${ctl.url}/hosts`, { headers: { authorization: `Bearer ${admin}` } })).text();
      expect(page).to.contain('is not the pinned one');
      // Enrolling again with the host's own key but the impostor's certificate changes nothing.
      const res = await fetch(`${ctl.url}/api/enroll`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ hostId, hostname: 'impostor', agentUrl: `https://127.0.0.1:${agentPort}`, agentKey: key, version: 'test', certFingerprint: other.fingerprint }),
      });
      expect(res.status).to.equal(409);
      expect(((await res.json()) as { error: { code: string } }).error.code).to.equal('host_certificate_changed');
      expect(ctl.services.hosts.record(hostId)!.hostname).not.to.equal('impostor');
      expect(ctl.services.hosts.record(hostId)!.agentFingerprint).not.to.equal(other.fingerprint);
    } finally {
      await new Promise<void>((resolve) => impostor.close(() => resolve()));
      impostor.closeAllConnections();
    }
  });
});

describe('TLS between hosts, pinned: `skyhost controller` and `skyhost agent --join` on a LAN of network namespaces', function () {
  this.timeout(180_000);
  const lan = new TestLan();
  let tmp: string;
  const logs = new Map<string, string>();
  const procs = new Map<string, ResultPromise>();
  const ENV = { SKYHOST_LOG_FORMAT: 'json', SKYHOST_ACCEL: 'tcg' };
  let joinString: string;
  let fingerprint: string;

  const watch = (who: string, child: ResultPromise) => {
    logs.set(who, '');
    procs.set(who, child);
    child.stderr?.on('data', (d: Buffer) => logs.set(who, logs.get(who) + String(d)));
    child.stdout?.on('data', (d: Buffer) => logs.set(who, logs.get(who) + String(d)));
    return child;
  };
  const alive = () => {
    for (const [who, p] of procs) if (p.exitCode !== null && p.exitCode !== undefined && !p.killed) throw new GiveUp(`${who} exited (${p.exitCode}):\n${logs.get(who)!.slice(-2000)}`);
  };
  const secret = (dir: string, name: string) => readFileSync(path.join(tmp, dir, 'secrets', name), 'utf8').trim();
  // a generous limit: one answer from a node process that a loaded machine (2 cores, load 5+) schedules late
  const curl = async (from: string, args: string[]) => (await lan.exec(from, 'curl', ['-s', '--max-time', '20', ...args])).stdout;
  /** The controller's API from its own machine (loopback: plain HTTP is served in full there). */
  const adminGet = async (route: string) => JSON.parse(await curl('c', ['-f', '-H', `authorization: Bearer ${secret('c', 'admin-token')}`, `http://127.0.0.1:8080${route}`]));
  const hostsAtController = async () => (await adminGet('/api/hosts') as { hosts: { id: string; url: string; state: string; certFingerprint?: string }[] }).hosts;
  const agentController = async (who: string) =>
    (JSON.parse(await curl(who, ['-k', '-H', `authorization: Bearer ${secret(who, 'agent-key')}`, `https://127.0.0.1:8081/status`])) as { controller: { state: string; url?: string; message?: string } }).controller;
  /** Requests the rogue controller received (it logs one line per request). */
  const rogueRequests = () => logs.get('r')!.split('\n').filter((l) => l.includes('"msg":"request"'));

  before(async () => {
    await ensureDaemons(); // agents start only with a libvirt that answers
    tmp = mkdtempSync(path.join(tmpdir(), 'skyhost-tls-lan-'));
    await lan.create();
    for (const h of ['c', 'a', 'b', 'r']) await lan.addHost(h);
    watch('c', lan.spawnNode('c', 'appliance/main.ts', ['controller', '--data', path.join(tmp, 'c'), '--port', '8080'], { env: ENV }));
    await waitFor('controller advertising', () => alive() ?? /advertising SkyHost controller/.test(logs.get('c')!), 60_000);
    const tokens = await adminGet('/api/join-tokens') as { clusterJoinString: string; fingerprint: string };
    joinString = tokens.clusterJoinString;
    fingerprint = tokens.fingerprint;
    expect(parseJoin(joinString)).to.deep.include({ addresses: [`https://${lan.host('c').ip}:8443`], fingerprint });
    // A rogue controller: its own certificate and cluster, an enroll endpoint that counts. Were the
    // fingerprint not used to choose, a new agent would hear two clusters and choose neither.
    watch('r', lan.spawnNode('r', 'test/support/discovery-peer.ts', ['advertise', '--cluster', 'rogue-cluster', '--url', `https://${lan.host('r').ip}:8443`,
      '--port', '8443', '--enroll-endpoint', '--tls', path.join(tmp, 'r'), '--token', 'rogue-accepts-anything']));
    await waitFor('rogue advertising', () => alive() ?? /advertising SkyHost controller/.test(logs.get('r')!), 60_000);
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') for (const [k, v] of logs) console.log(`--- ${k}\n${v.split('\n').filter((l) => !l.includes('"debug"')).slice(-25).join('\n')}`);
  });
  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('should enroll an agent given the join string over HTTPS, never asking the rogue advertised beside it', async () => {
    watch('a', lan.spawnNode('a', 'appliance/main.ts', ['agent', '--host-id', 'id-a', '--data', path.join(tmp, 'a'), '--port', '8081', '--join', joinString], { env: ENV }));
    const host = await waitFor('a ready at the controller', async () => {
      alive();
      return (await hostsAtController()).find((h) => h.id === 'id-a' && h.state === 'ready');
    }, 60_000, 250);
    expect(host.url).to.equal(`https://${lan.host('a').ip}:8081`);
    expect(host.certFingerprint).to.match(/^[0-9a-f]{64}$/);
    // the controller records the host ready as it answers the enrollment; the agent reads that answer after
    const own = await waitFor('a ready by its own account', async () => { const s = await agentController('a'); return s.state === 'ready' ? s : undefined; }, 30_000, 250);
    expect(own).to.include({ state: 'ready', url: `https://${lan.host('c').ip}:8443` });
    // polled over TLS: seen again after enrollment
    const seen = (await hostsAtController()).find((h) => h.id === 'id-a') as { lastSeen?: string };
    await waitFor('a polled again', async () => ((await hostsAtController()).find((h) => h.id === 'id-a') as { lastSeen?: string }).lastSeen !== seen.lastSeen, 60_000, 250);
    expect(rogueRequests()).to.deep.equal([]);
  });

  it('should answer plain HTTP from the LAN with nothing but a refusal, and HTTPS with the API', async () => {
    const plain = await curl('c', ['-w', '\n%{http_code}', `http://${lan.host('a').ip}:8081/healthz`]);
    expect(plain).to.match(/https_required[\s\S]*\n403$/);
    const secure = await curl('c', ['-k', `https://${lan.host('a').ip}:8081/healthz`]);
    expect(JSON.parse(secure)).to.include({ ok: true, hostId: 'id-a' });
    // The controller's HTTP port sends LAN clients to HTTPS.
    const redirect = await curl('a', ['-o', '/dev/null', '-w', '%{http_code} %{redirect_url}', `http://${lan.host('c').ip}:8080/login`]);
    expect(redirect).to.equal(`308 https://${lan.host('c').ip}:8443/login`);
  });

  it('should refuse a rogue controller given by URL to an agent holding the fingerprint: not one request reaches it', async () => {
    watch('b', lan.spawnNode('b', 'appliance/main.ts', ['agent', '--host-id', 'id-b', '--data', path.join(tmp, 'b'), '--port', '8081',
      '--controller', `https://${lan.host('r').ip}:8443`, '--join', joinString], { env: ENV }));
    const state = await waitFor('b refusing the rogue', async () => {
      alive();
      const s = await agentController('b');
      return s.state === 'unreachable' && /not the pinned one/.test(s.message ?? '') ? s : undefined;
    }, 120_000, 250);
    expect(state.message).to.contain(fingerprint.match(/.{4}/g)!.join(' '));
    await new Promise((r) => setTimeout(r, 2000)); // and it keeps asking: still nothing gets through
    expect(rogueRequests()).to.deep.equal([]);
    expect((await hostsAtController()).map((h) => h.id)).not.to.include('id-b');
  });
});
