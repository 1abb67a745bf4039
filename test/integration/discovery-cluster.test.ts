// Issue 5's scenario with the real `skyhost controller` and `skyhost agent` processes, each in its own
// network namespace on one bridge, real multicast between them, no configuration but a join token:
// enroll (ready / pending -> approved), controller SIGKILL + restart, an agent readdressed, and a
// second controller of another cluster on the LAN.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { ensureDaemons } from '../../host/hostsetup.ts';
import { LanProcesses, startAvahi, TestLan, waitFor } from '../support/netns.ts';

const MAIN = 'appliance/main.ts';
const ENV = { SKYHOST_LOG_FORMAT: 'json', SKYHOST_ACCEL: 'tcg' };

interface HostView { id: string; url: string; state: string }
interface AgentStatus { hostId: string; controller?: { state: string; url?: string; clusterId?: string; message?: string } }

describe('zero-config enrollment: real controller and agents across network namespaces', function () {
  this.timeout(180_000);
  const lan = new TestLan();
  let tmp: string;
  const procs = new LanProcesses(lan);

  // A host's log is kept across restarts: its end on failure shows the earlier run too.
  const spawn = (who: string, args: string[]) => procs.node(who, MAIN, args, ENV, { appendLog: true });
  const secret = (dir: string, name: string) => readFileSync(path.join(tmp, dir, 'secrets', name), 'utf8').trim();
  const startController = async (who: string) => {
    spawn(who, ['controller', '--data', path.join(tmp, who), '--port', '8080']);
    await waitFor(`${who} advertising`, () => procs.alive() ?? /advertising SkyHost controller/.test(procs.currentLog(who)), 60_000);
  };
  const startAgent = (who: string, token?: string) =>
    spawn(who, ['agent', '--host-id', `id-${who}`, '--data', path.join(tmp, who), '--port', '8081', ...(token ? ['--join-token', token] : [])]);
  // The HTTP port sends LAN clients to HTTPS (--location-trusted: with the Authorization header), whose
  // certificate is the controller's own (agents pin it; -k: curl here need not). 20 s for one answer from a
  // node process that a loaded machine schedules late (3 s was a quiet machine's figure).
  const curl = async (from: string, args: string[]) => (await lan.exec(from, 'curl', ['-sfk', '--location-trusted', '--max-time', '20', ...args])).stdout;
  const hosts = async (c = 'c'): Promise<HostView[]> =>
    (JSON.parse(await curl(c, ['-H', `authorization: Bearer ${secret(c, 'admin-token')}`, `http://${lan.host(c).ip}:8080/api/hosts`])) as { hosts: HostView[] }).hosts;
  const agentStatus = async (who: string): Promise<AgentStatus> =>
    JSON.parse(await curl('c', ['-H', `authorization: Bearer ${secret(who, 'agent-key')}`, `https://${lan.host(who).ip}:8081/status`])) as AgentStatus;
  const statesOf = async (c = 'c') => {
    procs.alive();
    return Object.fromEntries((await hosts(c)).map((h) => [h.id, h.state]));
  };
  const admin = async (method: string, route: string, body: unknown) =>
    JSON.parse(await curl('c', ['-X', method, '-H', `authorization: Bearer ${secret('c', 'admin-token')}`, '-H', 'content-type: application/json',
      '--data', JSON.stringify(body), `http://${lan.host('c').ip}:8080${route}`])) as Record<string, string>;

  before(async () => {
    // Agents start only with a libvirt that answers (they create no VM and no network here).
    await ensureDaemons();
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-enroll-'));
    await lan.create();
    for (const h of ['c', 'a1', 'a2', 'a3', 'a5', 'a6', 'c2', 'a4']) await lan.addHost(h);
  });
  afterEach(function () {
    procs.dumpIfFailed(this);
  });
  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('should make two agents with the join token ready and leave the third pending, each at its LAN address', async () => {
    await startController('c');
    const token = secret('c', 'join-token');
    startAgent('a1', token);
    startAgent('a2', token);
    startAgent('a3');
    await waitFor('three hosts enrolled', async () => {
      const s = await statesOf();
      return s['id-a1'] === 'ready' && s['id-a2'] === 'ready' && s['id-a3'] === 'pending';
    }, 60_000, 250);
    const list = await hosts();
    expect(list.map((h) => [h.id, h.url]).sort()).to.deep.equal(['a1', 'a2', 'a3'].map((a) => [`id-${a}`, `https://${lan.host(a).ip}:8081`]));
    const clusterId = secret('c', 'cluster-id');
    // the controller's record changes as it answers an enrollment; each agent reads that answer after
    const own = (who: string, state: string) => waitFor(`${who} ${state} by its own account`, async () => {
      const c = (await agentStatus(who)).controller;
      return c?.state === state ? c : undefined;
    }, 30_000, 250);
    expect(await own('a1', 'ready')).to.deep.include({ state: 'ready', clusterId, url: `https://${lan.host('c').ip}:8443` });
    expect(await own('a3', 'pending')).to.deep.include({ state: 'pending', clusterId });
    // A member's own log records reach the controller's event log (a pending host's do not).
    const agentEvents = async () => (JSON.parse(await curl('c', ['-H', `authorization: Bearer ${secret('c', 'admin-token')}`,
      `http://${lan.host('c').ip}:8080/api/events?source=agent&limit=200`])) as { events: Array<{ hostId?: string; msg: string }> }).events;
    await waitFor('a1 events at the controller', async () => (await agentEvents()).some((e) => e.hostId === 'id-a1' && /controller: ready/.test(e.msg)), 45_000, 250);
    expect((await agentEvents()).some((e) => e.hostId === 'id-a3')).to.equal(false);
  });

  it('should make the pending host ready when an admin approves it', async () => {
    await curl('c', ['-X', 'POST', '-H', `authorization: Bearer ${secret('c', 'admin-token')}`, `http://${lan.host('c').ip}:8080/api/hosts/id-a3/approve`]);
    await waitFor('a3 ready', async () => (await statesOf())['id-a3'] === 'ready', 45_000);
    await waitFor('a3 knows it', async () => (await agentStatus('a3')).controller?.state === 'ready', 45_000, 250);
  });

  it('should keep one record per host after the controller is killed with SIGKILL and restarted', async () => {
    const before = (await hosts()).map((h) => h.id).sort();
    procs.process('c').kill('SIGKILL');
    await procs.process('c');
    await startController('c');
    await waitFor('every host ready again', async () => Object.values(await statesOf()).every((s) => s === 'ready'), 60_000, 250);
    const after = await hosts();
    expect(after.map((h) => h.id).sort()).to.deep.equal(before);
    expect(after).to.have.length(3);
  });

  it('should update the host, not add one, when an agent comes back with a new address', async () => {
    const ip = await lan.readdress('a2');
    await waitFor('a2 at its new address', async () => (await hosts()).find((h) => h.id === 'id-a2')?.url === `https://${ip}:8081`, 30_000, 250);
    expect(await hosts()).to.have.length(3);
    await waitFor('a2 ready at its new address', async () => (await statesOf())['id-a2'] === 'ready', 45_000, 250);
  });

  it('should update the record of a host reinstalled with the same id (new key, no memory) and the join token', async () => {
    procs.process('a1').kill('SIGKILL');
    await procs.process('a1');
    rmSync(path.join(tmp, 'a1'), { recursive: true, force: true });
    startAgent('a1', secret('c', 'join-token'));
    await waitFor('a1 back', async () => (await agentStatus('a1')).controller?.state === 'ready', 60_000, 250);
    const list = await hosts();
    expect(list.filter((h) => h.id === 'id-a1')).to.have.length(1);
    expect(list).to.have.length(3);
    expect((await statesOf())['id-a1']).to.equal('ready');
  });

  it('should let a single-use token enroll one host and refuse it to the next with the reason', async () => {
    const t = await admin('POST', '/api/join-tokens', { ttlMinutes: 30, label: 'room 12' });
    startAgent('a5', t.token);
    await waitFor('a5 ready', async () => (await statesOf())['id-a5'] === 'ready', 60_000, 250);
    startAgent('a6', t.token);
    const s6 = await waitFor('a6 refused', async () => {
      const s = (await agentStatus('a6')).controller;
      return s?.state === 'refused' ? s : undefined;
    }, 60_000, 250);
    expect(s6.message).to.match(/refused enrollment \(403\): join token \w+ was already used by host id-a5/);
    expect((await statesOf())['id-a6']).to.equal(undefined);
    // Revoked: refused with the admin's reason (straight at the API: no agent needed to see the answer).
    const r = await admin('POST', '/api/join-tokens', { ttlMinutes: 30 });
    await admin('POST', `/api/join-tokens/${r.id}/revoke`, { reason: 'stick lost in room 12' });
    const refused = await lan.exec('a6', 'curl', ['-skL', '-H', 'content-type: application/json', '--data',
      JSON.stringify({ hostId: 'id-x', hostname: 'x', agentUrl: 'http://10.0.0.1:8081', agentKey: 'k'.repeat(32), joinToken: r.token, version: 't' }),
      `http://${lan.host('c').ip}:8080/api/enroll`]);
    expect(refused.stdout).to.match(/join_token_revoked.*stick lost in room 12/);
  });

  it('should keep enrolled agents with their cluster when a second controller advertises, and a new agent should not guess', async () => {
    await startController('c2');
    startAgent('a4', secret('c2', 'join-token'));
    const s4 = await waitFor('a4 refuses to choose', async () => {
      const s = (await agentStatus('a4')).controller;
      return s?.state === 'ambiguous' ? s : undefined;
    }, 60_000, 250);
    expect(s4.message).to.contain(secret('c', 'cluster-id')).and.to.contain(secret('c2', 'cluster-id'));
    expect(procs.log('a4')).to.match(/controller: ambiguous/);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await hosts('c2')).to.deep.equal([]);
    const mine = secret('c', 'cluster-id');
    for (const a of ['a1', 'a2', 'a3', 'a5']) expect((await agentStatus(a)).controller).to.deep.include({ state: 'ready', clusterId: mine });
    expect((await hosts()).map((h) => h.id).sort()).to.deep.equal(['id-a1', 'id-a2', 'id-a3', 'id-a5']);
  });

  it('should say goodbye when the second controller stops: the new agent then tries the one left, whose token it lacks', async () => {
    procs.process('c2').kill('SIGTERM');
    await procs.process('c2');
    expect(procs.log('c2')).to.match(/mDNS advertisement withdrawn/);
    const s4 = await waitFor('a4 turns to the remaining controller', async () => {
      const s = (await agentStatus('a4')).controller;
      return s?.state === 'refused' ? s : undefined;
    }, 45_000, 250);
    expect(s4).to.deep.include({ url: `https://${lan.host('c').ip}:8443` });
    expect(s4.message).to.match(/\(403\): join token is not known to this controller/);
    expect((await statesOf())['id-a4']).to.equal(undefined);
  });
});

describe('zero-config enrollment with the advertisement published by Avahi', function () {
  this.timeout(180_000);
  const lan = new TestLan();
  let tmp: string;
  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('should enroll a real agent with a real controller that avahi-publish advertises', async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-enroll-avahi-'));
    await lan.create();
    const c = await lan.addHost('c');
    const a = await lan.addHost('a');
    const avahi = await startAvahi(lan, 'c', path.join(tmp, 'avahi'));
    let clog = '';
    const controller = lan.spawnNode('c', MAIN, ['controller', '--data', path.join(tmp, 'c'), '--port', '8080'], { env: { ...ENV, SKYHOST_ADVERTISE: 'false' } });
    controller.stderr?.on('data', (d: Buffer) => (clog += String(d)));
    await waitFor('controller listening', () => /controller listening/.test(clog), 60_000);
    expect(clog).not.to.match(/advertising/);
    const read = (name: string) => readFileSync(path.join(tmp, 'c', 'secrets', name), 'utf8').trim();
    avahi.publish('SkyHost controller via Avahi', '_skyhost._tcp', 8443, ['v=1', `cluster=${read('cluster-id')}`, `url=https://${c.ip}:8443`]);
    lan.spawnNode('a', MAIN, ['agent', '--host-id', 'id-a', '--data', path.join(tmp, 'a'), '--port', '8081', '--join-token', read('join-token')], { env: ENV });
    const host = await waitFor('agent ready on the controller', async () => {
      const r = await lan.exec('c', 'curl', ['-sfk', '--location-trusted', '--max-time', '20', '-H', `authorization: Bearer ${read('admin-token')}`, `http://${c.ip}:8080/api/hosts`]);
      return (JSON.parse(r.stdout) as { hosts: HostView[] }).hosts.find((h) => h.id === 'id-a' && h.state === 'ready');
    }, 90_000, 250);
    expect(host.url).to.equal(`https://${a.ip}:8081`);
  });
});
