// mDNS across network namespaces, for real: bonjour-service on both sides, Avahi (with its own
// D-Bus) as a third party. The controller and agents here are test/support/discovery-peer.ts
// processes running the real advertise/browse/enroll code against a small enroll endpoint; the
// whole cluster with the real controller and agent (and an Avahi-published controller) is in
// discovery-cluster.test.ts.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { ResultPromise } from 'execa';
import { startAvahi, TestLan, waitFor, type TestAvahi } from '../support/netns.ts';

const PEER = 'test/support/discovery-peer.ts';
const TOKEN = 'shj_test-token-0001';

describe('discovery over real multicast (network namespaces)', function () {
  this.timeout(120_000);
  const lan = new TestLan();
  let tmp: string;
  let avahi: TestAvahi;
  const logs = new Map<string, string>();
  const procs = new Map<string, ResultPromise>();

  const watch = (who: string, child: ResultPromise) => {
    logs.set(who, '');
    procs.set(who, child);
    child.stderr?.on('data', (d: Buffer) => logs.set(who, logs.get(who) + String(d)));
    return child;
  };
  const controller = (host: string, cluster: string, extra: string[] = []) => {
    const ip = lan.host(host).ip;
    return watch(host, lan.spawnNode(host, PEER, ['advertise', '--cluster', cluster, '--url', `http://${ip}:8080`, '--port', '8080', '--token', TOKEN, ...extra]));
  };
  const agent = (host: string, extra: string[] = []) =>
    watch(host, lan.spawnNode(host, PEER, ['agent', '--host-id', `id-${host}`, '--data', path.join(tmp, host), '--port', '8081', ...extra]));
  const status = async (host: string) => {
    const r = await fetchIn('c1', `http://${lan.host(host).ip}:8081/status`);
    return (JSON.parse(r) as { controller: { state: string; url?: string; clusterId?: string; message?: string } }).controller;
  };
  // one answer from a node process a loaded machine schedules late: 20 s, not 2
  const fetchIn = async (from: string, url: string) => (await lan.exec(from, 'curl', ['-sf', '--max-time', '20', url])).stdout;
  const hostsOf = async (c: string) => JSON.parse(await fetchIn(c, `http://${lan.host(c).ip}:8080/api/hosts`)) as { hostId: string; agentUrl: string; state: string }[];

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-disc-'));
    await lan.create();
    for (const h of ['c1', 'c2', 'a1', 'a2', 'a3', 'av', 'c3']) await lan.addHost(h);
    // Multi-homed like a real host: a VM bridge next to the LAN, on the controller and on an agent.
    await lan.addBridge('c1', 'virbr0', '192.168.122.1/24');
    await lan.addBridge('a1', 'virbr0', '192.168.122.1/24');
    avahi = await startAvahi(lan, 'av', path.join(tmp, 'avahi'));
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') for (const [k, v] of logs) console.log(`--- ${k}\n${v.slice(-3000)}`);
  });
  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('should enroll agents with no configuration: ready with the join token, pending without, over the LAN and not the VM bridge', async () => {
    controller('c1', 'cluster-one', ['--enroll-endpoint']);
    agent('a1', ['--join-token', TOKEN]);
    agent('a2');
    // the waits below that include starting a node process allow for a loaded machine (45 s)
    const s1 = await waitFor('a1 ready', async () => ((await status('a1')).state === 'ready' ? status('a1') : undefined), 45_000);
    expect(s1).to.deep.include({ url: `http://${lan.host('c1').ip}:8080`, clusterId: 'cluster-one' });
    await waitFor('a2 pending', async () => (await status('a2')).state === 'pending', 45_000);
    const hosts = await hostsOf('c1');
    expect(hosts.map((h) => [h.hostId, h.state, h.agentUrl]).sort()).to.deep.equal([
      ['id-a1', 'ready', `http://${lan.host('a1').ip}:8081`],
      ['id-a2', 'pending', `http://${lan.host('a2').ip}:8081`],
    ]);
  });

  it('should keep one record per host id when an agent comes back with a new address', async () => {
    const old = lan.host('a1').ip;
    const ip = await lan.readdress('a1');
    await waitFor('c1 has a1 at its new address', async () => {
      const h = (await hostsOf('c1')).find((x) => x.hostId === 'id-a1');
      return h?.agentUrl === `http://${ip}:8081`;
    }, 30_000);
    const hosts = await hostsOf('c1');
    expect(hosts.filter((h) => h.hostId === 'id-a1')).to.have.length(1);
    expect(hosts.map((h) => h.agentUrl)).not.to.include(`http://${old}:8081`);
    expect(await status('a1')).to.deep.include({ state: 'ready', clusterId: 'cluster-one' });
  });

  it('should be seen by Avahi: _skyhost._tcp with v, cluster and url, and _http._tcp', async () => {
    const sky = await waitFor('avahi sees _skyhost._tcp', async () => {
      const s = await avahi.browse('_skyhost._tcp');
      return s.length > 0 ? s : undefined;
    }, 30_000);
    expect(sky[0]).to.deep.include({ name: 'SkyHost controller clustero', address: lan.host('c1').ip, port: 8080 });
    expect(sky.map((s) => s.address)).not.to.include('192.168.122.1');
    expect(sky[0]!.txt).to.include.members(['v=1', 'cluster=cluster-one', `url=http://${lan.host('c1').ip}:8080`]);
    const http = await avahi.browse('_http._tcp');
    expect(http.map((s) => [s.name, s.address, s.port])).to.deep.include(['SkyHost clustero', lan.host('c1').ip, 8080]);
  });

  it('should keep enrolled agents with their cluster when a second controller advertises, and not guess for a new one', async () => {
    controller('c2', 'cluster-two', ['--enroll-endpoint']);
    await waitFor('avahi sees both controllers', async () => (await avahi.browse('_skyhost._tcp')).length === 2, 45_000);
    agent('a3', ['--join-token', TOKEN]);
    const s3 = await waitFor('a3 says it will not choose', async () => {
      const s = await status('a3');
      return s.state === 'ambiguous' ? s : undefined;
    }, 45_000);
    expect(s3.message).to.match(/2 SkyHost controllers.*cluster-one.*cluster-two.*not choosing/);
    expect(logs.get('a3')).to.match(/controller: ambiguous/);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await status('a1')).to.deep.include({ state: 'ready', clusterId: 'cluster-one' });
    expect(await status('a2')).to.deep.include({ state: 'pending', clusterId: 'cluster-one' });
    expect(await hostsOf('c2')).to.deep.equal([]);
  });

  it('should say goodbye on SIGTERM: Avahi drops the controller at once', async () => {
    expect((await avahi.browse('_skyhost._tcp')).map((s) => s.name)).to.include('SkyHost controller clustert');
    procs.get('c2')!.kill('SIGTERM');
    await procs.get('c2');
    expect(logs.get('c2')).to.match(/advertisement withdrawn/);
    await waitFor('avahi forgets the second controller', async () => {
      const names = (await avahi.browse('_skyhost._tcp')).map((s) => s.name);
      return names.length === 1 && names[0] === 'SkyHost controller clustero';
    }, 30_000); // "at once": without the goodbye Avahi keeps the records for their TTL (minutes)
    // The agent that would not guess now hears one cluster only, and joins it.
    await waitFor('a3 ready with cluster-one', async () => {
      const s = await status('a3');
      return s.state === 'ready' && s.clusterId === 'cluster-one';
    }, 30_000);
  });

  it('should re-announce periodically, unasked', async () => {
    // The library's own announcements come at 0, 1, 4 and 13 s after the controller publishes: count
    // those heard in 3 s from 4.5 s after its first one. The times are the controller's own, not the
    // test's: a loaded machine takes seconds to start node (the window once opened 4.5 s after the
    // spawn, and a controller that published late had missed most of it).
    const heard: { from?: string; ready?: boolean; at: number }[] = [];
    const listener = lan.spawnNode('av', PEER, ['listen', '--lan-ip', lan.host('av').ip]);
    listener.stdout?.on('data', (d: Buffer) => heard.push(...String(d).trim().split('\n').map((l) => ({ ...(JSON.parse(l) as { from?: string }), at: performance.now() }))));
    await waitFor('the listener ready', () => heard.some((h) => h.ready), 45_000, 20);
    controller('c3', 'cluster-three', ['--reannounce-ms', '700']);
    const first = await waitFor('the first announcement of c3', () => heard.find((h) => h.from === lan.host('c3').ip), 45_000, 20);
    const opens = first.at + 4500;
    await new Promise((r) => setTimeout(r, opens + 3000 - performance.now()));
    listener.kill('SIGTERM');
    procs.get('c3')!.kill('SIGTERM');
    // Every 700 ms makes 3 or more; the library alone would send at most one in this window.
    const inWindow = heard.filter((h) => h.from === lan.host('c3').ip && h.at >= opens && h.at <= opens + 3000);
    expect(inWindow.length).to.be.at.least(3);
  });

  it('should not knock out a controller whose name is taken, and say so', async () => {
    await procs.get('c3');
    controller('c3', 'cluster-one');
    await waitFor('c3 warns', () => /not advertised on mDNS: \\"SkyHost controller clustero\._skyhost\._tcp\.local\\" is in use/.test(logs.get('c3')!), 45_000);
    const sky = await avahi.browse('_skyhost._tcp');
    expect(sky.filter((x) => x.name === 'SkyHost controller clustero').map((x) => x.txt.find((t) => t.startsWith('url=')))).to.deep.equal([`url=http://${lan.host('c1').ip}:8080`]);
    procs.get('c3')!.kill('SIGTERM');
  });

  it('should follow its controller to a new address (same cluster, new TXT url)', async () => {
    procs.get('c1')!.kill('SIGTERM');
    await procs.get('c1');
    const ip = await lan.readdress('c1');
    controller('c1', 'cluster-one', ['--enroll-endpoint']);
    // The restarted stand-in remembers nothing: a host in its list has enrolled again.
    const h = await waitFor('a1 enrolled with the moved controller', async () => (await hostsOf('c1')).find((x) => x.hostId === 'id-a1'), 45_000);
    expect(h).to.deep.include({ state: 'ready', agentUrl: `http://${lan.host('a1').ip}:8081` });
    expect(await status('a1')).to.deep.include({ state: 'ready', url: `http://${ip}:8080`, clusterId: 'cluster-one' });
  });
});
