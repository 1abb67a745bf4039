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
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { ensureIdentity, PinnedAgent } from '../../base/tls.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { parseJoin } from '../../wire/join.ts';
import { buildTestGuest, ConsoleSession } from '../support/guest.ts';
import { freePort, waitFor } from '../support/net.ts';
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

  const api = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${admin}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  };

  before(async () => {
    configureLogging({ out: () => {} });
    chmodSync(work, 0o711); // QEMU (libvirt-qemu) walks into the agent's data folder below it
    const guest = await buildTestGuest();
    ctl = await startController({ dataDir: path.join(work, 'controller'), log: logger('controller'), port: 0, listen: '127.0.0.1', pollIntervalSeconds: 1, https: { port: 0 } });
    admin = ctl.services.secrets.adminToken;
    agentPort = await freePort();
    const joinString = ctl.services.joinTokens.joinString(ctl.services.joinTokens.clusterToken())!;
    expect(parseJoin(joinString)).to.deep.equal({ token: ctl.services.joinTokens.clusterToken(), addresses: [ctl.httpsUrl], fingerprint: ctl.fingerprint });
    agent = await startAgent({
      config: {
        ...defaults({ isRoot: true, cwd: work }), dataDir: path.join(work, 'agent'), listen: '127.0.0.1', sshPortRange: '42300-42399',
        agentUrl: `https://127.0.0.1:${agentPort}`, joinToken: joinString, advertise: false,
      },
      log: logger('agent'), hostId, port: agentPort, listen: '127.0.0.1', key, enroll: true,
    });
    await agent.templates.import({ name: 'guest', kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline, os: 'busybox', minMemoryMiB: 128 });
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
    const enrolled = await agent!.discovery!.enrolled(20_000);
    expect(enrolled).to.include({ state: 'ready', url: ctl.httpsUrl, clusterId: ctl.services.clusterId });
    const remembered = JSON.parse(readFileSync(path.join(work, 'agent', 'enrollment.json'), 'utf8')) as { fingerprint: string };
    expect(remembered.fingerprint).to.equal(ctl.fingerprint);
    const record = ctl.services.hosts.record(hostId)!;
    expect(record).to.include({ agentUrl: `https://127.0.0.1:${agentPort}`, agentFingerprint: agent!.fingerprint, state: 'ready' });
    await ctl.services.hosts.pollAll();
    expect(ctl.services.hosts.record(hostId)).to.include({ missedPolls: 0 });
    expect(ctl.services.hosts.record(hostId)!.status?.hostId).to.equal(hostId);
    expect((await api('GET', `/api/hosts/${hostId}`)).json).to.include({ certFingerprint: agent!.fingerprint, url: `https://127.0.0.1:${agentPort}` });
    await waitFor('the host to report its template', () => ctl.services.templates.find('guest') !== undefined, 20_000);
  });

  it('should serve a console from the controller\'s HTTPS port over wss, to the agent over wss pinned', async () => {
    const created = await api('POST', '/api/vms', { template: 'guest', name: 'tls-1', memoryMiB: 256 });
    expect(created.status, JSON.stringify(created.json)).to.be.oneOf([201, 202]);
    const vmId = created.json.id as string;
    await waitFor('the VM to run', async () => (await api('GET', `/api/vms/${vmId}`)).json.state === 'running', 60_000);
    // The client pins the controller as an agent would; the controller pins the agent.
    const session = await ConsoleSession.open(ctl.httpsUrl!, `/api/vms/${vmId}/console`, admin, { agent: new PinnedAgent(ctl.fingerprint) });
    try {
      expect(await session.run('echo tls-$((6*7))', 90_000)).to.include('tls-42');
    } finally {
      session.close();
    }
    expect((await api('DELETE', `/api/vms/${vmId}`)).status).to.be.oneOf([200, 202, 204]);
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
      for (let i = 0; i < 3; i++) await ctl.services.hosts.pollAll();
      const host = (await api('GET', `/api/hosts/${hostId}`)).json as { state: string; problem?: string };
      expect(host.state).to.equal('down');
      expect(host.problem).to.match(/certificate \(sha256 .*\) is not the pinned one/);
      expect(seen, 'requests that reached the impostor').to.deep.equal([]);
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
