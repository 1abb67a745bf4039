// GET /api/vms in pages (server/vms/list-pages.ts): 500 VMs a page unless ?limit= (1-1,000) says
// otherwise, the next page in `next` and in `Link: rel="next"`, a cursor that survives VMs created and
// deleted between pages, a bad limit or cursor a 422 naming the field, gzip when the client asks.
// The controller runs in-process (real SQLite, real HTTP) over three simulated agents.
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

interface Page {
  status: number;
  headers: Headers;
  json: { vms: Array<{ id: string; createdAt: string; state: string }>; next?: string; error?: { code: string; message: string; details?: { fields: Array<{ field: string }> } } };
}

describe('GET /api/vms in pages', function () {
  this.timeout(120_000);
  const COUNT = 505;
  let dir: string;
  let ctl: RunningController;
  const agents: SimAgent[] = [];
  let token: string;

  async function get(p: string, headers: Record<string, string> = {}): Promise<Page> {
    const res = await fetch(ctl.url + p, { headers: { authorization: `Bearer ${token}`, ...headers } });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) as Page['json'] : { vms: [] } };
  }

  async function create(name: string): Promise<string> {
    const res = await fetch(`${ctl.url}/api/vms`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, template: 'alpine', memoryMiB: 256, diskGiB: 2 }),
    });
    const body = await res.json() as { id: string };
    expect(res.status, JSON.stringify(body)).to.be.oneOf([201, 202]);
    return body.id;
  }

  /** Every page from `first` on, following Link: rel="next" (and checking `next` says the same). */
  async function walk(first: string): Promise<{ pages: number[]; ids: string[] }> {
    const pages: number[] = [];
    const ids: string[] = [];
    for (let url: string | undefined = first; url !== undefined;) {
      const page = await get(url);
      expect(page.status).to.equal(200);
      pages.push(page.json.vms.length);
      ids.push(...page.json.vms.map((v) => v.id));
      const link = /^<([^>]+)>; rel="next"$/.exec(page.headers.get('link') ?? '')?.[1];
      expect(link).to.equal(page.json.next);
      url = link;
    }
    return { pages, ids };
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-paging-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 });
    token = ctl.services.secrets.adminToken;
    // A host's network has ~250 addresses: three hosts for the 505 VMs.
    for (const hostId of ['host-a', 'host-b', 'host-c']) {
      const agent = await new SimAgent({ hostId, memoryMiB: 256 * 1024, threads: 64, hypervisor: 'kvm', port: await freePort() }).start();
      agents.push(agent);
      await agent.enroll(ctl.url, ctl.services.secrets.joinToken);
    }
    await ctl.services.hosts.pollAll();
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < COUNT) await create(`vm-${String(next++).padStart(3, '0')}`);
    }));
  });

  after(async () => {
    await ctl?.stop();
    for (const agent of agents) await agent.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers 500 VMs a page by default, newest first, each VM once, the last page without a next', async () => {
    const { pages, ids } = await walk('/api/vms');
    expect(pages).to.deep.equal([500, 5]);
    expect(new Set(ids).size).to.equal(COUNT);
    const all = ctl.services.vms.records(ctl.services.users.get('admin')!);
    expect(ids).to.have.members(all.map((v) => v.id));
    const newestFirst = [...all].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id)).map((v) => v.id);
    expect(ids).to.deep.equal(newestFirst);
    expect((await walk('/api/vms?limit=1000')).ids).to.deep.equal(ids);
  });

  it('pages at the boundaries: limit equal to the count has no next, one fewer leaves one VM for the next page', async () => {
    expect((await walk(`/api/vms?limit=${COUNT}`)).pages).to.deep.equal([COUNT]);
    expect((await walk(`/api/vms?limit=${COUNT - 1}`)).pages).to.deep.equal([COUNT - 1, 1]);
    expect((await walk('/api/vms?limit=101')).pages).to.deep.equal([101, 101, 101, 101, 101]);
    const one = await get('/api/vms?limit=1');
    expect(one.json.vms).to.have.length(1);
    expect(one.json.next).to.match(/^\/api\/vms\?limit=1&after=[A-Za-z0-9_-]+$/);
  });

  it('keeps the filters and the limit in the next page\'s URL', async () => {
    const page = await get('/api/vms?owner=admin&state=running&limit=200');
    expect(page.json.vms).to.have.length(200);
    expect(page.json.next).to.match(/^\/api\/vms\?state=running&owner=admin&limit=200&after=/);
    const { pages } = await walk('/api/vms?owner=admin&state=running&limit=200');
    expect(pages).to.deep.equal([200, 200, 105]);
    expect((await walk('/api/vms?owner=nobody')).pages).to.deep.equal([0]);
  });

  it('a VM created or deleted between two pages neither repeats nor skips another', async () => {
    const first = await get('/api/vms?limit=10');
    const last = first.json.vms[9]!;
    const expected = (await get('/api/vms?limit=20')).json.vms.slice(10).map((v) => v.id);
    // The VM the cursor names is deleted, and a new one is created (it goes first in the order).
    const del = await fetch(`${ctl.url}/api/vms/${last.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(del.status).to.equal(204);
    const added = await create('vm-late');
    const second = await get(first.json.next!);
    expect(second.json.vms.map((v) => v.id)).to.deep.equal(expected);
    expect(second.json.vms.map((v) => v.id)).to.not.include(added);
  });

  it('refuses a bad limit or cursor with a 422 naming the field', async () => {
    for (const [query, field] of [['limit=0', 'query.limit'], ['limit=1001', 'query.limit'], ['limit=ten', 'query.limit'], ['limit=2.5', 'query.limit'],
      ['after=not-a-cursor', 'query.after'], [`after=${Buffer.from('yesterday\nabc').toString('base64url')}`, 'query.after']] as const) {
      const answer = await get(`/api/vms?${query}`);
      expect(answer.status, query).to.equal(422);
      expect(answer.json.error!.code).to.equal('invalid_field');
      expect(answer.json.error!.details!.fields.map((f) => f.field), query).to.deep.equal([field]);
    }
  });

  it('sends a page gzipped only when the client accepts gzip, and 304 for a page whose ETag is current', async () => {
    const raw = (acceptEncoding: string) => new Promise<{ headers: Record<string, unknown>; body: Buffer }>((resolve, reject) => {
      const req = request(`${ctl.url}/api/vms?limit=300`, { headers: { authorization: `Bearer ${token}`, 'accept-encoding': acceptEncoding } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end();
    });
    const plain = await raw('identity');
    expect(plain.headers['content-encoding']).to.equal(undefined);
    const zipped = await raw('gzip, deflate');
    expect(zipped.headers['content-encoding']).to.equal('gzip');
    expect(zipped.headers.vary).to.include('Accept-Encoding');
    expect(zipped.body.length).to.be.lessThan(plain.body.length / 4);
    expect(gunzipSync(zipped.body).equals(plain.body)).to.equal(true);

    const page = await get('/api/vms?limit=300');
    const etag = page.headers.get('etag')!;
    expect((await get('/api/vms?limit=300', { 'if-none-match': etag })).status).to.equal(304);
    await create('vm-changes-the-tag');
    expect((await get('/api/vms?limit=300', { 'if-none-match': etag })).status).to.equal(200);
  });
});
