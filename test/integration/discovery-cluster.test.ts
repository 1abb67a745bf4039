// Issue 5's scenario with the real `skyhost controller` and `skyhost agent` processes, each in its own
// network namespace on one bridge, real multicast between them, no configuration but a join token:
// enroll (ready / pending -> approved), controller SIGKILL + restart, an agent readdressed, and a
// second controller of another cluster on the LAN.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { ResultPromise } from 'execa';
import { TestLan, waitFor } from '../support/netns.ts';

const MAIN = 'appliance/main.ts';
const ENV = { SKYHOST_LOG_FORMAT: 'json', SKYHOST_ACCEL: 'tcg' };

interface HostView { id: string; url: string; state: string }
interface AgentStatus { hostId: string; controller?: { state: string; url?: string; clusterId?: string; message?: string } }

describe('zero-config enrollment: real controller and agents across network namespaces', function () {
  this.timeout(180_000);
  const lan = new TestLan();
  let tmp: string;
  const logs = new Map<string, string>();
  const procs = new Map<string, ResultPromise>();

  const spawn = (who: string, args: string[]) => {
    const child = lan.spawnNode(who, MAIN, args, { env: ENV });
    logs.set(who, logs.get(who) ?? '');
    child.stderr?.on('data', (d: Buffer) => logs.set(who, logs.get(who) + String(d)));
    procs.set(who, child);
    return child;
  };
  const secret = (dir: string, name: string) => readFileSync(path.join(tmp, dir, 'secrets', name), 'utf8').trim();
  const startController = async (who: string) => {
    spawn(who, ['controller', '--data', path.join(tmp, who), '--port', '8080']);
    await waitFor(`${who} advertising`, () => /advertising SkyHost controller/.test(logs.get(who)!.split('"stopping').at(-1)!), 30_000);
  };
  const startAgent = (who: string, token?: string) =>
    spawn(who, ['agent', '--host-id', `id-${who}`, '--data', path.join(tmp, who), '--port', '8081', ...(token ? ['--join-token', token] : [])]);
  const curl = async (from: string, args: string[]) => (await lan.exec(from, 'curl', ['-sf', '--max-time', '3', ...args])).stdout;
  const hosts = async (c = 'c'): Promise<HostView[]> =>
    (JSON.parse(await curl(c, ['-H', `authorization: Bearer ${secret(c, 'admin-token')}`, `http://${lan.host(c).ip}:8080/api/hosts`])) as { hosts: HostView[] }).hosts;
  const agentStatus = async (who: string): Promise<AgentStatus> =>
    JSON.parse(await curl('c', ['-H', `authorization: Bearer ${secret(who, 'agent-key')}`, `http://${lan.host(who).ip}:8081/status`])) as AgentStatus;
  const statesOf = async (c = 'c') => Object.fromEntries((await hosts(c)).map((h) => [h.id, h.state]));

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-enroll-'));
    await lan.create();
    for (const h of ['c', 'a1', 'a2', 'a3', 'c2', 'a4']) await lan.addHost(h);
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') {
      for (const [k, v] of logs) console.log(`--- ${k}\n${v.split('\n').filter((l) => !l.includes('"debug"')).slice(-25).join('\n')}`);
    }
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
    expect(list.map((h) => [h.id, h.url]).sort()).to.deep.equal(['a1', 'a2', 'a3'].map((a) => [`id-${a}`, `http://${lan.host(a).ip}:8081`]));
    const clusterId = secret('c', 'cluster-id');
    expect((await agentStatus('a1')).controller).to.deep.include({ state: 'ready', clusterId, url: `http://${lan.host('c').ip}:8080` });
    expect((await agentStatus('a3')).controller).to.deep.include({ state: 'pending', clusterId });
  });

  it('should make the pending host ready when an admin approves it', async () => {
    await curl('c', ['-X', 'POST', '-H', `authorization: Bearer ${secret('c', 'admin-token')}`, `http://${lan.host('c').ip}:8080/api/hosts/id-a3/approve`]);
    await waitFor('a3 ready', async () => (await statesOf())['id-a3'] === 'ready');
    await waitFor('a3 knows it', async () => (await agentStatus('a3')).controller?.state === 'ready', 20_000, 250);
  });

  it('should keep one record per host after the controller is killed with SIGKILL and restarted', async () => {
    const before = (await hosts()).map((h) => h.id).sort();
    procs.get('c')!.kill('SIGKILL');
    await procs.get('c');
    logs.set('c', logs.get('c') + '\n"stopping": killed\n');
    await startController('c');
    await waitFor('every host ready again', async () => Object.values(await statesOf()).every((s) => s === 'ready'), 30_000, 250);
    const after = await hosts();
    expect(after.map((h) => h.id).sort()).to.deep.equal(before);
    expect(after).to.have.length(3);
  });

  it('should update the host, not add one, when an agent comes back with a new address', async () => {
    const ip = await lan.readdress('a2');
    await waitFor('a2 at its new address', async () => (await hosts()).find((h) => h.id === 'id-a2')?.url === `http://${ip}:8081`, 30_000, 250);
    const list = await hosts();
    expect(list).to.have.length(3);
    await waitFor('a2 ready at its new address', async () => (await statesOf())['id-a2'] === 'ready', 20_000, 250);
  });

  it('should keep enrolled agents with their cluster when a second controller advertises, and a new agent should not guess', async () => {
    await startController('c2');
    startAgent('a4', secret('c2', 'join-token'));
    const s4 = await waitFor('a4 refuses to choose', async () => {
      const s = (await agentStatus('a4')).controller;
      return s?.state === 'ambiguous' ? s : undefined;
    }, 30_000, 250);
    expect(s4.message).to.contain(secret('c', 'cluster-id')).and.to.contain(secret('c2', 'cluster-id'));
    expect(logs.get('a4')).to.match(/controller: ambiguous/);
    await new Promise((r) => setTimeout(r, 3000));
    expect(await hosts('c2')).to.deep.equal([]);
    const mine = secret('c', 'cluster-id');
    for (const a of ['a1', 'a2', 'a3']) expect((await agentStatus(a)).controller).to.deep.include({ state: 'ready', clusterId: mine });
    expect((await hosts()).map((h) => h.id).sort()).to.deep.equal(['id-a1', 'id-a2', 'id-a3']);
  });
});
