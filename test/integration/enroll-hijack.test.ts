// Enrollment as a stranger on the LAN would try it, through the real controller app over HTTP:
// nobody without the host's own key or a join token changes an enrolled host (its key, its URL,
// its state), a PC with a new address still moves by its key, a token allows a replacement, a
// pending host is never sent a key, and a flood of enrollments neither fills the controller nor
// holds up the polls of its hosts.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

interface Seen { method: string; path: string; authorization: string | undefined }

describe('enrollment cannot be hijacked (real controller app)', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  const agents: SimAgent[] = [];

  const call = async (method: string, route: string, body?: unknown, token?: string) => {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(ctl.url + route, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    return { status: res.status, json: (text ? JSON.parse(text) : undefined) as any };
  };
  const admin = (method: string, route: string, body?: unknown) => call(method, route, body, ctl.services.secrets.adminToken);
  const host = async (id: string) => (await admin('GET', `/api/hosts/${id}`)).json as { state: string; url: string; hostname: string; missedPolls: number };
  const agent = async (hostId: string, key?: string) => {
    const a = await new SimAgent({ hostId, hostname: `pc-${hostId}`, memoryMiB: 4096, hypervisor: 'tcg', port: await freePort(), ...(key ? { key } : {}) }).start();
    agents.push(a);
    return a;
  };
  const enroll = (a: { hostId: string; url: string; key: string }, extra: Record<string, unknown> = {}) =>
    call('POST', '/api/enroll', { hostId: a.hostId, hostname: `pc-${a.hostId}`, agentUrl: a.url, agentKey: a.key, version: 'test', ...extra });
  /** A stand-in for any machine on the LAN: answers /healthz as `hostId` and writes down what it was sent. */
  const recorder = async (hostId: string) => {
    const seen: Seen[] = [];
    const server: Server = createServer((req, res) => {
      seen.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization });
      if (req.url === '/healthz') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, hostId }));
      else res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'unauthorized', message: 'no' } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { seen, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((r) => server.close(r)) };
  };

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-hijack-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000 }); // a simulated agent's answer on a loaded machine; the hole test waits this once
  });
  after(async () => {
    await ctl?.stop();
    for (const a of agents) await a.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('should refuse an enrolled host id with another key and no token, keep the record, and keep polling the real agent with its key', async () => {
    const real = await agent('pc-1');
    expect((await enroll(real, { joinToken: ctl.services.secrets.joinToken })).json.state).to.equal('ready');
    await ctl.services.hosts.pollAll();
    for (const stranger of [
      { hostId: 'pc-1', url: 'http://127.0.0.1:9', key: 'stranger-key-0001' }, // moves it and takes it over
      { hostId: 'pc-1', url: real.url, key: 'stranger-key-0002' }, // only breaks the polls
    ]) {
      const r = await enroll(stranger);
      expect(r.status, JSON.stringify(r.json)).to.equal(409);
      expect(r.json.error).to.include({ code: 'host_already_enrolled' });
      expect(r.json.error.message).to.match(/already enrolled with another agent key.*join token/);
    }
    expect(await host('pc-1')).to.include({ state: 'ready', url: real.url, hostname: 'pc-pc-1' });
    await ctl.services.hosts.pollAll();
    expect(await host('pc-1')).to.include({ state: 'ready', missedPolls: 0 });
    expect(ctl.services.hosts.record('pc-1')!.agentKey).to.equal(real.key);
    const events = (await admin('GET', '/api/events?hostId=pc-1&level=warn')).json.events as { msg: string }[];
    expect(events.map((e) => e.msg).join('\n')).to.match(/refused enrollment as pc-pc-1 \(pc-1\) from 127\.0\.0\.1: another agent key and no join token/);
  });

  it('should refuse a stranger with a pending host\'s id too, so that the admin approves the machine that asked', async () => {
    const real = await agent('pc-2');
    expect((await enroll(real)).json.state).to.equal('pending');
    expect((await enroll({ hostId: 'pc-2', url: 'http://127.0.0.1:9', key: 'stranger-key-0003' })).status).to.equal(409);
    expect(await host('pc-2')).to.include({ state: 'pending', url: real.url });
    expect((await admin('POST', '/api/hosts/pc-2/approve')).json.state).to.equal('ready');
    await ctl.services.hosts.pollAll();
    expect(await host('pc-2')).to.include({ state: 'ready', missedPolls: 0 });
  });

  it('should let a host move to a new address with its own key and no token (a new DHCP address)', async () => {
    const old = agents[0]!;
    const moved = await agent('pc-1', old.key); // the same PC answering at another address
    const r = await enroll(moved);
    expect(r.status, JSON.stringify(r.json)).to.equal(200);
    expect(r.json.state).to.equal('ready');
    expect(await host('pc-1')).to.include({ url: moved.url, state: 'ready' });
    await ctl.services.hosts.pollAll();
    expect(await host('pc-1')).to.include({ state: 'ready', missedPolls: 0 });
  });

  it('should let a join token replace a host (a reinstalled PC: new key, new address)', async () => {
    await agents[2]!.stop(); // the PC as it was before the reinstall (a live one keeps its id: a cloned disk)
    await ctl.services.hosts.pollAll();
    const reinstalled = await agent('pc-1');
    const r = await enroll(reinstalled, { joinToken: ctl.services.secrets.joinToken });
    expect(r.json.state, JSON.stringify(r.json)).to.equal('ready');
    expect(await host('pc-1')).to.include({ url: reinstalled.url });
    expect(ctl.services.hosts.record('pc-1')!.agentKey).to.equal(reinstalled.key);
    await ctl.services.hosts.pollAll();
    expect(await host('pc-1')).to.include({ state: 'ready', missedPolls: 0 });
  });

  it('should poll a pending host without any key (only /healthz), and with its key once approved', async () => {
    const lan = await recorder('pc-3');
    try {
      expect((await enroll({ hostId: 'pc-3', url: lan.url, key: 'pending-host-key-01' })).json.state).to.equal('pending');
      await ctl.services.hosts.pollAll();
      await ctl.services.hosts.pollAll();
      expect(lan.seen).to.deep.equal([
        { method: 'GET', path: '/healthz', authorization: undefined },
        { method: 'GET', path: '/healthz', authorization: undefined },
      ]);
      expect(await host('pc-3')).to.include({ state: 'pending', missedPolls: 0 });
      await admin('POST', '/api/hosts/pc-3/approve');
      await ctl.services.hosts.pollAll();
      expect(lan.seen.slice(2).map((s) => [s.path, s.authorization])).to.deep.include(['/status', 'Bearer pending-host-key-01']);
    } finally {
      await lan.close();
    }
  });

  it('should poll approved hosts in a round of their own, which pending hosts that never answer do not reach', async () => {
    const sockets: Socket[] = [];
    const hole = createTcpServer((s) => sockets.push(s)); // accepts, never answers
    await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(hole.address() as AddressInfo).port}`;
    try {
      for (let i = 0; i < 3; i++) expect((await enroll({ hostId: `pc-hole-${i}`, url, key: `hole-key-000000${i}` })).json.state).to.equal('pending');
      await ctl.services.hosts.pollMembers();
      expect(sockets).to.have.length(0);
      expect(await host('pc-1')).to.include({ state: 'ready', missedPolls: 0 });
      await ctl.services.hosts.pollPending();
      expect(sockets).to.have.length(3);
      expect(await host('pc-hole-0')).to.include({ state: 'pending', missedPolls: 1 });
    } finally {
      for (const s of sockets) s.destroy(); // it never reads, so it would never see the poller hang up
      await new Promise((r) => hole.close(r));
    }
  });

  it('should let a 3-use token from POST /api/join-tokens enroll three hosts and refuse the fourth as used, and a 1-use token one', async () => {
    const made = await admin('POST', '/api/join-tokens', { label: 'room 12 stick', uses: 3 });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    expect(made.json.uses).to.equal(3);
    const pc = (n: string) => ({ hostId: `room12-${n}`, url: 'http://127.0.0.1:9', key: `room12-key-${n}-0123456789` });
    for (const n of ['a', 'b', 'c']) expect((await enroll(pc(n), { joinToken: made.json.token })).json.state, n).to.equal('ready');
    const fourth = await enroll(pc('d'), { joinToken: made.json.token });
    expect(fourth.status).to.equal(403);
    expect(fourth.json.error.code).to.equal('join_token_used');
    expect(fourth.json.error.message).to.match(/already used by all its 3 hosts \(room12-a, room12-b, room12-c\)/);
    const listed = (await admin('GET', '/api/join-tokens')).json.tokens.find((t: { id: string }) => t.id === made.json.id);
    expect(listed).to.deep.include({ state: 'used', uses: 3, usesLeft: 0 });
    const one = await admin('POST', '/api/join-tokens', {});
    expect(one.json.uses).to.equal(1);
    expect((await enroll(pc('e'), { joinToken: one.json.token })).json.state).to.equal('ready');
    const second = await enroll(pc('f'), { joinToken: one.json.token });
    expect(second.json.error).to.include({ code: 'join_token_used' });
    expect(second.json.error.message).to.match(/already used by host room12-e/);
    for (const h of ['a', 'b', 'c', 'e']) await admin('DELETE', `/api/hosts/room12-${h}`);
  });

  it('should refuse a number of uses that is not a whole number from 1 to 200 with 422 naming uses', async () => {
    for (const uses of [0, 201, 'three', 2.5]) {
      const r = await admin('POST', '/api/join-tokens', { uses });
      expect(r.status, String(uses)).to.equal(422);
      expect(JSON.stringify(r.json.error), String(uses)).to.contain('uses');
    }
  });

  it('should refuse a flood of enrollments from one address after 30 a minute, token or not, and say so once', async () => {
    let accepted = 0;
    let refused: { status: number; json: any } | undefined;
    for (let i = 0; i < 40 && !refused; i++) {
      const r = await enroll({ hostId: `flood-${i}`, url: 'http://127.0.0.1:9', key: `flood-key-00000${i}` });
      if (r.status === 200) accepted++;
      else refused = r;
    }
    // at most the limit; fewer when earlier tests here used part of this address's minute (whether they
    // did depends on how long they took: the window is a minute from its first enrollment)
    expect(accepted).to.be.within(1, 30);
    expect(refused?.status).to.equal(429);
    expect(refused?.json.error).to.include({ code: 'too_many_enrollments' });
    expect(refused?.json.error.message).to.match(/more than 30 enrollments a minute without a valid join token from 127\.0\.0\.1: try again in \d+ s/);
    const withToken = await enroll({ hostId: 'flood-x', url: 'http://127.0.0.1:9', key: 'flood-key-token01' }, { joinToken: ctl.services.secrets.joinToken });
    expect(withToken.status).to.equal(429);
    const hosts = (await admin('GET', '/api/hosts')).json.hosts as { id: string }[];
    expect(hosts.filter((h) => h.id.startsWith('flood-'))).to.have.length(accepted);
    // The controller's own agent (`skyhost up`) enrolls in-process, from no address.
    const local = await agent('pc-local');
    expect(ctl.services.hosts.enroll({ hostId: local.hostId, hostname: 'local', agentUrl: local.url, agentKey: local.key, version: 't',
      joinToken: ctl.services.secrets.joinToken }).state).to.equal('ready');
    const events = (await admin('GET', '/api/events?level=warn&limit=200')).json.events as { msg: string }[];
    expect(events.filter((e) => /^enrollments from 127\.0\.0\.1 refused for \d+ s/.test(e.msg))).to.have.length(1);
  });
});
