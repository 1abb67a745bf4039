// The enroll loop against a small controller on loopback (`--controller URL`, so no multicast here;
// the mDNS side is in test/integration/discovery*.test.ts).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, Logger } from '../../base/log.ts';
import { enrollmentFile, loadRemembered, startDiscovery, type Discovery } from '../../agent/discovery/index.ts';

interface Answer { status: number; body: unknown }

describe('discovery: the enroll loop', () => {
  let server: Server;
  let url: string;
  let dir: string;
  let received: Record<string, unknown>[];
  let answer: (req: Record<string, unknown>) => Answer;
  let discovery: Discovery | undefined;

  const start = (extra: { joinToken?: string } = {}) => {
    discovery = startDiscovery({
      dataDir: dir, hostId: 'pc-12', hostname: 'pc-12', agentKey: 'k'.repeat(32), version: 'test', agentPort: 8081,
      controllerUrl: url, log: new Logger('test'), tickMs: 20, ...extra,
    });
    return discovery;
  };
  const until = async (what: string, ok: () => boolean, ms = 20_000) => { // generous: a loaded machine; the wrong outcomes never arrive
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(discovery?.state())}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  let logged: string[] = [];
  before(() => configureLogging({ out: (line) => logged.push(line) }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));

  beforeEach(async () => {
    logged = [];
    dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-enroll-'));
    received = [];
    server = createServer((req, res) => {
      let s = '';
      req.on('data', (c: Buffer) => (s += String(c)));
      req.on('end', () => {
        const body = JSON.parse(s) as Record<string, unknown>;
        received.push(body);
        const a = answer(body);
        res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await discovery?.stop();
    discovery = undefined;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('should enroll with its id, URL, key and token, and remember the cluster', async () => {
    answer = () => ({ status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-one' } });
    const st = await start({ joinToken: 'shj_token-0001' }).enrolled(3000);
    expect(st).to.deep.include({ state: 'ready', url, clusterId: 'c-one' });
    expect(received[0]).to.deep.include({ hostId: 'pc-12', hostname: 'pc-12', agentUrl: 'http://127.0.0.1:8081', agentKey: 'k'.repeat(32), joinToken: 'shj_token-0001' });
    expect(loadRemembered(dir)).to.deep.include({ clusterId: 'c-one', url, agentUrl: 'http://127.0.0.1:8081' });
  });

  it('given a cluster, should refuse an answer from another cluster at the same address and say how to reset', async () => {
    answer = () => ({ status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-one' } });
    await start().enrolled(3000);
    await discovery!.stop();
    answer = () => ({ status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-evil' } });
    const d = start();
    await until('refusal', () => d.state().state === 'refused');
    expect(d.state().message).to.match(/answered for cluster c-evil, but this host belongs to cluster c-one.*enrollment\.json/);
    expect(loadRemembered(dir)?.clusterId).to.equal('c-one');
  });

  it('should ask again while pending and notice the approval', async () => {
    let approved = false;
    answer = () => ({ status: 200, body: { hostId: 'pc-12', state: approved ? 'ready' : 'pending', clusterId: 'c-one' } });
    const d = start();
    expect((await d.enrolled(3000)).state).to.equal('pending');
    approved = true;
    await until('ready', () => d.state().state === 'ready');
  });

  it('given a member whose token was rotated since, should enroll again by its key without the token', async () => {
    answer = () => ({ status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-one' } });
    await start({ joinToken: 'shj_old-token-01' }).enrolled(3000);
    await discovery!.stop();
    received = [];
    answer = (req) => req.joinToken
      ? { status: 403, body: { error: { code: 'join_token_rotated', message: 'this cluster join token was replaced' } } }
      : { status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-one' } };
    const st = await start({ joinToken: 'shj_old-token-01' }).enrolled(3000);
    expect(st.state).to.equal('ready');
    expect(received.map((r) => 'joinToken' in r)).to.deep.equal([true, false]);
  });

  it('given no cluster yet, should show the controller refusal with its reason', async () => {
    answer = () => ({ status: 403, body: { error: { code: 'join_token_expired', message: 'join token 0a1b2c3d4e5f expired at 2026-01-01T10:01:00.000Z' } } });
    const d = start({ joinToken: 'shs_0a1b2c3d4e5f_secret' });
    await until('refusal', () => d.state().state === 'refused');
    expect(d.state().message).to.equal('controller refused enrollment (403): join token 0a1b2c3d4e5f expired at 2026-01-01T10:01:00.000Z');
    expect(logged.join('\n')).to.match(/refused.*expired at/);
    expect(existsSync(enrollmentFile(dir))).to.equal(false);
  });
});
