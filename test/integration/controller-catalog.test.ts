// The controller's template catalog: uploads and imports by URL into DATA/templates (resumed with
// Range after a cut connection, checked, nothing half-made kept), refusals (sha256, backing file,
// unknown format, names that escape), the files served to enrolled hosts with HTTP Range, and
// deletion refused while a VM uses the template. Real controller, real qemu-img, real HTTP.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { Catalog } from '../../server/templates/catalog.ts';
import { pullsReported } from '../../server/templates/templates.ts';
import { jsonOrText, freePort } from '../support/net.ts';
import { SimAgent, simTemplate } from '../support/sim-agent.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A file server whose answers the test shapes: `cutAfter` bytes of the first answer, then the connection is cut. */
async function fileServer(body: Buffer, opts: { cutFirstAfter?: number; cutEveryAfter?: number } = {}): Promise<{ url: string; ranges: (string | undefined)[]; close(): Promise<void> }> {
  const ranges: (string | undefined)[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    ranges.push(req.headers.range);
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    } else {
      res.writeHead(200, { 'content-length': body.length });
    }
    const cut = ranges.length === 1 ? opts.cutFirstAfter : opts.cutEveryAfter;
    if (cut === undefined) return res.end(body.subarray(start));
    res.write(body.subarray(start, start + cut), () => setTimeout(() => res.socket?.destroy(), 50));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.img`,
    ranges,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

describe('controller template catalog', function () {
  this.timeout(60_000);
  let dir: string;
  let work: string;
  let ctl: RunningController;
  let base: string;
  let admin: string;
  let host: SimAgent;
  let pending: SimAgent;
  let raw: Buffer;
  let qcow2: string;
  let overlay: string;
  let vmdk: string;

  async function call(method: string, p: string, opts: { token?: string; body?: unknown; raw?: Buffer; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    if (opts.raw !== undefined) headers['content-type'] ??= 'application/octet-stream';
    const res = await fetch(base + p, { method, headers, ...(opts.raw !== undefined ? { body: opts.raw } : opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: res.status, json: jsonOrText(bytes.toString('utf8')), bytes, headers: res.headers };
  }
  const upload = (query: string, file: Buffer) => call('POST', `/api/templates?${query}`, { token: admin, raw: file });
  const listed = async () => (await call('GET', '/api/templates', { token: admin })).json as { templates: any[]; imports: any[] };
  /** What is in DATA/templates: every entry, hidden ones included. */
  const onDisk = () => (existsSync(path.join(dir, 'templates')) ? readdirSync(path.join(dir, 'templates')).sort() : []);

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-'));
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-files-'));
    raw = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < raw.length; i += 4) raw.writeUInt32LE((i * 2654435761) >>> 0, i);
    qcow2 = path.join(work, 'base.qcow2');
    overlay = path.join(work, 'overlay.qcow2');
    vmdk = path.join(work, 'disk.vmdk');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '32M']);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', qcow2, overlay]);
    await run('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '8M']);
    // what a controller killed mid-import leaves, and an agent's own upload in progress (skyhost up shares the folder)
    mkdirSync(path.join(dir, 'templates', '.incoming-old-0bad'), { recursive: true });
    writeFileSync(path.join(dir, 'templates', '.incoming-old-0bad', 'image.part'), 'half');
    mkdirSync(path.join(dir, 'templates', '.upload-agent'), { recursive: true });
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 500, answerWithinMs: 2000 });
    base = ctl.url;
    admin = ctl.services.secrets.adminToken;
    host = await new SimAgent({ hostId: 'host-a', hostname: 'pc-a', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort(), templates: [simTemplate('busy')] }).start();
    pending = await new SimAgent({ hostId: 'host-p', hostname: 'pc-p', memoryMiB: 8192, hypervisor: 'tcg', port: await freePort() }).start();
    const enroll = (a: SimAgent, joinToken?: string) => call('POST', '/api/enroll', {
      body: { hostId: a.hostId, hostname: `pc-${a.hostId}`, agentUrl: a.url, agentKey: a.key, version: 'test', ...(joinToken ? { joinToken } : {}) },
    });
    expect((await enroll(host, ctl.services.secrets.joinToken)).json.state).to.equal('ready');
    expect((await enroll(pending)).json.state).to.equal('pending');
    await ctl.services.hosts.pollAll();
  });

  after(async () => {
    await ctl?.stop();
    await host?.stop();
    await pending?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  });

  it('takes an upload into DATA/templates/NAME with a manifest, and lists it as held by the controller', async () => {
    expect(onDisk(), 'a killed import is swept at start, an agent\'s upload is not').to.deep.equal(['.upload-agent']);
    const up = await upload(`name=up&os=tiny&sha256=${sha(raw)}&console=vnc&needsKvm=true&minMemoryMiB=256`, raw);
    expect(up.status, JSON.stringify(up.json)).to.equal(201);
    expect(up.json.template).to.include({ name: 'up', os: 'tiny', console: 'vnc', needsKvm: true, controller: true, bytes: raw.length });
    const manifest = JSON.parse(readFileSync(path.join(dir, 'templates', 'up', 'manifest.json'), 'utf8'));
    expect(manifest.files).to.deep.equal([{ role: 'disk', file: 'disk.raw', bytes: raw.length, sha256: sha(raw), format: 'raw', virtualBytes: raw.length }]);
    expect(readFileSync(path.join(dir, 'templates', 'up', 'disk.raw')).equals(raw)).to.equal(true);
    const t = (await listed()).templates.find((x) => x.name === 'up');
    expect(t).to.include({ controller: true, needsKvm: true, console: 'vnc', bytes: raw.length });
    expect(t.hosts).to.deep.equal([]);
    expect(t.pulling).to.deep.equal([]);
    const q = await upload('name=q&os=tiny', readFileSync(qcow2));
    expect(q.status, JSON.stringify(q.json)).to.equal(201);
    expect(q.json.template.diskGiB).to.equal(1);
    expect((await upload('name=up', raw)).status).to.equal(409);
  });

  it('refuses a bad sha256, a backing file, an unknown format and an empty upload, keeping nothing', async () => {
    rmSync(path.join(dir, 'templates', '.upload-agent'), { recursive: true });
    const before = onDisk();
    const bad = await upload(`name=bad&sha256=${'0'.repeat(64)}`, raw);
    expect(bad.status).to.equal(422);
    expect(bad.json.error.code).to.equal('checksum_mismatch');
    expect(bad.json.error.message).to.contain(sha(raw));
    const backed = await upload('name=backed', readFileSync(overlay));
    expect(backed.status).to.equal(422);
    expect(backed.json.error.code).to.equal('backing_file');
    expect(backed.json.error.message).to.contain('backing file');
    const odd = await upload('name=odd', readFileSync(vmdk));
    expect(odd.status).to.equal(422);
    expect(odd.json.error.code).to.equal('unsupported_format');
    expect(odd.json.error.message).to.contain('vmdk');
    expect((await upload('name=empty', Buffer.alloc(0))).status).to.equal(400);
    expect(onDisk()).to.deep.equal(before);
    const names = (await listed()).templates.map((t) => t.name);
    for (const n of ['bad', 'backed', 'odd', 'empty']) expect(names).to.not.include(n);
  });

  it('takes an installer ISO as an iso template (vnc console), and refuses a raw disk that claims to be one', async () => {
    const tree = path.join(work, 'iso-tree');
    mkdirSync(tree, { recursive: true });
    writeFileSync(path.join(tree, 'README'), 'an installer\n');
    const isoFile = path.join(work, 'installer.iso');
    await run('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'INSTALLER', '-o', isoFile, tree]);
    const iso = readFileSync(isoFile);
    const ok = await upload(`name=installer&kind=iso&sha256=${sha(iso)}`, iso);
    expect(ok.status, JSON.stringify(ok.json)).to.equal(201);
    expect(ok.json.template).to.include({ kind: 'iso', console: 'vnc', controller: true, bytes: iso.length });
    expect(JSON.parse(readFileSync(path.join(dir, 'templates', 'installer', 'manifest.json'), 'utf8')).files)
      .to.deep.equal([{ role: 'iso', file: 'installer.iso', bytes: iso.length, sha256: sha(iso) }]);
    const before = onDisk();
    const fake = await upload('name=not-an-iso&kind=iso', raw);
    expect(fake.status).to.equal(422);
    expect(fake.json.error.code).to.equal('unsupported_format');
    expect(fake.json.error.message).to.contain('CD001');
    expect(onDisk()).to.deep.equal(before);
  });

  it('refuses names that would leave the templates folder, and serves only files a manifest names', async () => {
    for (const name of ['../evil', '..', '.hidden', 'a/b', 'UP']) {
      const r = await upload(`name=${encodeURIComponent(name)}`, raw);
      expect(r.status, name).to.equal(422);
      expect(r.json.error.details.fields[0].field).to.equal('query.name');
    }
    const json = await call('POST', '/api/templates', { token: admin, body: { name: '../../etc', url: 'http://127.0.0.1:1/x', sha256: sha(raw) } });
    expect(json.status).to.equal(422);
    expect(existsSync(path.join(dir, 'evil'))).to.equal(false);
    expect(existsSync(path.join(dir, 'etc'))).to.equal(false);
    const key = host.key;
    for (const p of ['/api/templates/up/files/manifest.json', '/api/templates/up/files/..%2F..%2Fskyhost.db', '/api/templates/..%2Fsecrets/files/admin-token',
      '/api/templates/up/files/.', '/api/templates/..%2F..%2F/manifest', '/api/templates/nothere/manifest']) {
      expect((await call('GET', p, { token: key })).status, p).to.equal(404);
    }
    expect((await call('DELETE', '/api/templates/..%2Fsecrets', { token: admin })).status).to.equal(404);
    expect(existsSync(path.join(dir, 'secrets', 'admin-token'))).to.equal(true);
  });

  it('serves a manifest and files to enrolled hosts only (401 without the agent key, 403 while pending)', async () => {
    const file = '/api/templates/up/files/disk.raw';
    expect((await call('GET', file)).status).to.equal(401);
    expect((await call('GET', file, { token: 'not-a-key-of-any-host' })).status).to.equal(401);
    expect((await call('GET', file, { token: admin })).status, 'a user token is not a host').to.equal(401);
    expect((await call('GET', file, { token: pending.key })).status).to.equal(403);
    expect((await call('GET', '/api/templates/up/manifest')).status).to.equal(401);
    const m = await call('GET', '/api/templates/up/manifest', { token: host.key });
    expect(m.status).to.equal(200);
    expect(m.json.files[0]).to.include({ file: 'disk.raw', sha256: sha(raw), bytes: raw.length });
    const whole = await call('GET', file, { token: host.key });
    expect(whole.status).to.equal(200);
    expect(whole.headers.get('accept-ranges')).to.equal('bytes');
    expect(whole.headers.get('etag')).to.equal(`"${sha(raw)}"`);
    expect(Number(whole.headers.get('content-length'))).to.equal(raw.length);
    expect(whole.bytes.equals(raw)).to.equal(true);
  });

  it('answers Range requests: 206 with Content-Range, 416 for a range it cannot serve', async () => {
    const file = '/api/templates/up/files/disk.raw';
    const get = (range: string, extra: Record<string, string> = {}) => call('GET', file, { token: host.key, headers: { range, ...extra } });
    const size = raw.length;
    const first = await get('bytes=0-99');
    expect(first.status).to.equal(206);
    expect(first.headers.get('content-range')).to.equal(`bytes 0-99/${size}`);
    expect(first.bytes.equals(raw.subarray(0, 100))).to.equal(true);
    const rest = await get(`bytes=${size - 1000}-`);
    expect(rest.status).to.equal(206);
    expect(rest.headers.get('content-range')).to.equal(`bytes ${size - 1000}-${size - 1}/${size}`);
    expect(rest.bytes.equals(raw.subarray(size - 1000))).to.equal(true);
    const tail = await get('bytes=-10');
    expect(tail.status).to.equal(206);
    expect(tail.bytes.equals(raw.subarray(size - 10))).to.equal(true);
    const past = await get(`bytes=${size - 5}-${size + 1000}`);
    expect(past.status).to.equal(206);
    expect(past.headers.get('content-range')).to.equal(`bytes ${size - 5}-${size - 1}/${size}`);
    for (const bad of [`bytes=${size}-`, 'bytes=10-5', 'bytes=0-1,5-6', 'bytes=-0', 'items=0-5', 'bytes=x-y']) {
      const r = await get(bad);
      expect(r.status, bad).to.equal(416);
      expect(r.headers.get('content-range'), bad).to.equal(`bytes */${size}`);
    }
    // If-Range with another ETag: the file changed, so the whole file comes back
    const stale = await get('bytes=0-99', { 'if-range': '"0000"' });
    expect(stale.status).to.equal(200);
    expect(stale.bytes.length).to.equal(size);
    const head = await fetch(base + file, { method: 'HEAD', headers: { authorization: `Bearer ${host.key}`, range: 'bytes=0-9' } });
    expect(head.status).to.equal(206);
    expect(head.headers.get('content-length')).to.equal('10');
  });

  it('imports by URL: a connection cut midway is resumed with Range, the result checked against the sha256', async () => {
    const files = await fileServer(raw, { cutFirstAfter: 1024 * 1024 });
    try {
      const r = await call('POST', '/api/templates', { token: admin, body: { name: 'by-url', url: files.url, sha256: sha(raw), os: 'tiny' } });
      expect(r.status, JSON.stringify(r.json)).to.equal(201);
      expect(r.json.template).to.include({ name: 'by-url', controller: true, bytes: raw.length });
      expect(files.ranges.length).to.equal(2);
      expect(files.ranges[0]).to.equal(undefined);
      const resumedAt = Number(/^bytes=(\d+)-$/.exec(files.ranges[1] ?? '')?.[1]);
      expect(resumedAt).to.be.greaterThan(0).and.at.most(1024 * 1024);
      expect(readFileSync(path.join(dir, 'templates', 'by-url', 'disk.raw')).equals(raw)).to.equal(true);
      const job = (await listed()).imports.find((j) => j.name === 'by-url');
      expect(job).to.include({ state: 'done', attempts: 2, bytes: raw.length, totalBytes: raw.length, percent: 100 });
    } finally {
      await files.close();
    }
  });

  it('refuses a download tampered with on the way, and keeps nothing', async () => {
    const tampered = Buffer.from(raw);
    tampered.writeUInt8(tampered.readUInt8(12345) ^ 0xff, 12345);
    const files = await fileServer(tampered);
    try {
      const before = onDisk();
      const r = await call('POST', '/api/templates', { token: admin, body: { name: 'tampered', url: files.url, sha256: sha(raw) } });
      expect(r.status).to.equal(422);
      expect(r.json.error.code).to.equal('checksum_mismatch');
      expect(onDisk()).to.deep.equal(before);
      const l = await listed();
      expect(l.templates.map((t) => t.name)).to.not.include('tampered');
      expect(l.imports.find((j) => j.name === 'tampered')).to.deep.include({ state: 'failed', error: { code: 'checksum_mismatch', message: r.json.error.message } });
      expect((await call('GET', '/api/templates/tampered/manifest', { token: host.key })).status).to.equal(404);
    } finally {
      await files.close();
    }
  });

  it('gives up on a download that keeps breaking off, naming it truncated, and removes the partial file', async () => {
    const files = await fileServer(raw, { cutFirstAfter: 64 * 1024, cutEveryAfter: 64 * 1024 });
    const own = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-own-'));
    try {
      const catalog = new Catalog(own, { log: logger('catalog'), downloadAttempts: 3, retryDelayMs: 10 });
      const { job, done } = catalog.startImport({ name: 'cut', url: files.url, sha256: sha(raw) });
      const err = await done.then(() => undefined, (e: unknown) => e as { status: number; code: string; message: string });
      expect(err?.status).to.equal(422);
      expect(err?.code).to.equal('download_truncated');
      expect(err?.message).to.contain(`of ${raw.length} bytes`);
      expect(job).to.include({ state: 'failed', attempts: 3 });
      expect(files.ranges).to.have.length(3);
      expect(files.ranges.slice(1).every((r) => /^bytes=\d+-$/.test(r ?? ''))).to.equal(true);
      expect(readdirSync(path.join(own, 'templates'))).to.deep.equal([]);
      await catalog.close();
    } finally {
      await files.close();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('refuses a file that changed on the server between a cut connection and its resumption', async () => {
    const longer = Buffer.concat([raw, Buffer.from('more')]);
    let calls = 0;
    const server = createServer((req, res) => {
      calls++;
      if (!req.headers.range) {
        res.writeHead(200, { 'content-length': raw.length });
        res.write(raw.subarray(0, 65536), () => setTimeout(() => res.socket?.destroy(), 50));
        return;
      }
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range)?.[1]);
      res.writeHead(206, { 'content-length': longer.length - start, 'content-range': `bytes ${start}-${longer.length - 1}/${longer.length}` });
      res.end(longer.subarray(start));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const own = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-own-'));
    try {
      const catalog = new Catalog(own, { log: logger('catalog'), retryDelayMs: 10 });
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.img`;
      const err = await catalog.startImport({ name: 'moving', url, sha256: sha(raw) }).done.then(() => undefined, (e: unknown) => e as { code: string; message: string });
      expect(err?.code).to.equal('download_failed');
      expect(err?.message).to.contain('changed during the download');
      expect(calls).to.equal(2);
      expect(readdirSync(path.join(own, 'templates'))).to.deep.equal([]);
    } finally {
      server.closeAllConnections();
      server.close();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('resumes with If-Range: a file replaced on the server meanwhile is downloaded again whole, never stitched', async () => {
    const v1 = Buffer.from(raw);
    const v2 = Buffer.from(raw);
    v2.writeUInt8(v2.readUInt8(raw.length - 1) ^ 0xff, raw.length - 1);
    const seen: { range?: string; ifRange?: string }[] = [];
    const server = createServer((req, res) => {
      seen.push({ range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined });
      if (seen.length === 1) {
        res.writeHead(200, { 'content-length': v1.length, etag: '"v1"' });
        res.write(v1.subarray(0, 65536), () => setTimeout(() => res.socket?.destroy(), 50));
        return;
      }
      // by now the file is v2: a range asked for "if still v1" gets the whole new file
      res.writeHead(200, { 'content-length': v2.length, etag: '"v2"' });
      res.end(v2);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const own = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-own-'));
    try {
      const catalog = new Catalog(own, { log: logger('catalog'), retryDelayMs: 10 });
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.img`;
      const t = await catalog.startImport({ name: 'replaced', url, sha256: sha(v2) }).done;
      expect(t.files[0]!.sha256).to.equal(sha(v2));
      expect(seen[1]!.ifRange).to.equal('"v1"');
      expect(seen[1]!.range).to.match(/^bytes=\d+-$/);
      expect(readFileSync(path.join(own, 'templates', 'replaced', 'disk.raw')).equals(v2)).to.equal(true);
    } finally {
      server.closeAllConnections();
      server.close();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('keeps what a stopped controller downloaded, and the same import after a restart resumes it with Range', async () => {
    const seen: { range?: string; ifRange?: string }[] = [];
    const server = createServer((req, res) => {
      seen.push({ range: req.headers.range, ifRange: req.headers['if-range'] as string | undefined });
      const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
      if (start > 0 && req.headers['if-range'] === '"one"') {
        res.writeHead(206, { 'content-length': raw.length - start, 'content-range': `bytes ${start}-${raw.length - 1}/${raw.length}`, etag: '"one"' });
        res.end(raw.subarray(start));
        return;
      }
      // the first answer trickles: the controller stops in the middle of it
      res.writeHead(200, { 'content-length': raw.length, etag: '"one"' });
      res.write(raw.subarray(0, 512 * 1024));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const own = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-own-'));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.img`;
    try {
      const first = new Catalog(own, { log: logger('catalog'), retryDelayMs: 10 });
      const { job, done } = first.startImport({ name: 'long', url, sha256: sha(raw) });
      const stopped = done.then(() => undefined, (e: unknown) => e as { status: number });
      // wait for the whole trickle (a busy machine can take seconds); the resume is checked against what was kept
      for (let i = 0; i < 1000 && job.bytes < 512 * 1024; i++) await new Promise((r) => setTimeout(r, 20));
      await first.close();
      expect((await stopped)?.status).to.equal(503);
      const kept = readdirSync(path.join(own, 'templates'));
      expect(kept).to.deep.equal([`.partial-${sha(raw)}`]);
      const keptBytes = statSync(path.join(own, 'templates', kept[0]!, 'image.part')).size;
      expect(keptBytes).to.be.greaterThan(0);
      // a new controller on the same folder: the same import resumes where the first one stopped
      const second = new Catalog(own, { log: logger('catalog'), retryDelayMs: 10 });
      await second.refresh();
      const resumed = second.startImport({ name: 'long', url, sha256: sha(raw) });
      const t = await resumed.done;
      expect(t.files[0]!.sha256).to.equal(sha(raw));
      expect(seen[1]).to.deep.equal({ range: `bytes=${keptBytes}-`, ifRange: '"one"' });
      expect(resumed.job.attempts).to.equal(1);
      expect(readdirSync(path.join(own, 'templates'))).to.deep.equal(['long']);
      await second.close();
    } finally {
      server.closeAllConnections();
      server.close();
      rmSync(own, { recursive: true, force: true });
    }
  });

  it('stops at once on a full disk (507), for a download and an upload, keeping nothing', async () => {
    const small = mkdtempSync(path.join(tmpdir(), 'skyhost-catalog-full-'));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
    const files = await fileServer(raw);
    try {
      const catalog = new Catalog(small, { log: logger('catalog'), retryDelayMs: 10 });
      const down = await catalog.startImport({ name: 'big', url: files.url, sha256: sha(raw) }).done.then(() => undefined, (e: unknown) => e as { status: number; code: string });
      expect(down).to.include({ status: 507, code: 'disk_full' });
      expect(files.ranges).to.have.length(1);
      const { Readable } = await import('node:stream');
      const up = await catalog.upload({ name: 'big2' }, Readable.from([raw])).then(() => undefined, (e: unknown) => e as { status: number; code: string });
      expect(up).to.include({ status: 507, code: 'disk_full' });
      expect(readdirSync(path.join(small, 'templates'))).to.deep.equal([]);
      await catalog.close();
    } finally {
      await files.close();
      await run('umount', [small]);
      rmSync(small, { recursive: true, force: true });
    }
  });

  it('refuses to delete a template a VM uses, naming the VM; deletes it from the catalog and the hosts after', async () => {
    expect((await upload('name=busy&os=tiny', raw)).status).to.equal(201);
    const vm = await call('POST', '/api/vms', { token: admin, body: { template: 'busy', name: 'lesson-vm' } });
    expect(vm.status, JSON.stringify(vm.json)).to.be.oneOf([201, 202]);
    const t = (await listed()).templates.find((x) => x.name === 'busy');
    expect(t).to.include({ controller: true });
    expect(t.hosts).to.deep.equal(['host-a']);
    const refused = await call('DELETE', '/api/templates/busy', { token: admin });
    expect(refused.status).to.equal(409);
    expect(refused.json.error.message).to.contain('lesson-vm');
    expect(refused.json.error.details.vms).to.deep.equal(['lesson-vm']);
    expect(existsSync(path.join(dir, 'templates', 'busy', 'manifest.json'))).to.equal(true);
    // the page says it in plain words
    const page = await fetch(`${base}/templates/busy/delete`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'HX-Request': 'true' } });
    expect(page.status).to.equal(409);
    expect(await page.text()).to.contain('the VM lesson-vm still uses it. Delete that VM first.');
    expect((await call('DELETE', `/api/vms/${vm.json.id ?? vm.json.vm?.id}`, { token: admin })).status).to.be.oneOf([200, 202, 204]);
    const gone = await call('DELETE', '/api/templates/busy', { token: admin });
    expect(gone.status, JSON.stringify(gone.json)).to.equal(200);
    expect(gone.json).to.deep.equal({ controller: true, results: [{ host: 'host-a', ok: true }] });
    expect(existsSync(path.join(dir, 'templates', 'busy'))).to.equal(false);
    expect((await call('DELETE', '/api/templates/busy', { token: admin })).status).to.equal(404);
  });

  it('a template the CLI imports into the same data folder (skyhost up, skyhost template import) is in the catalog', async () => {
    const file = path.join(work, 'cli.img');
    writeFileSync(file, raw);
    await new TemplateStore(dir).import({ name: 'from-cli', disk: file, os: 'tiny' });
    const t = (await listed()).templates.find((x) => x.name === 'from-cli');
    expect(t).to.include({ controller: true, bytes: raw.length });
    expect((await call('GET', '/api/templates/from-cli/files/disk.raw', { token: host.key, headers: { range: 'bytes=0-3' } })).bytes.equals(raw.subarray(0, 4))).to.equal(true);
  });

  it('shows the catalog on the templates page: where each template is, and the upload form for admins', async () => {
    const page = await fetch(`${base}/templates`, { headers: { authorization: `Bearer ${admin}` } });
    const html = await page.text();
    expect(page.status).to.equal(200);
    expect(html).to.contain('by-url').and.contain('in the catalog').and.contain('id="template-upload"').and.contain('/static/templates.js');
  });

  it("lists the hosts pulling a template, with their progress, from what they report in /status pulls", async () => {
    const record = ctl.services.hosts.record('host-a')!;
    const reported = record.status as unknown as { pulls?: unknown };
    reported.pulls = [{ name: 'up', state: 'pulling', doneBytes: 430, totalBytes: 1000 }, { name: 'by-url', state: 'failed', doneBytes: 5, totalBytes: 10 }];
    try {
      const l = await listed();
      expect(l.templates.find((t) => t.name === 'up').pulling).to.deep.equal([{ host: 'host-a', percent: 43 }]);
      expect(l.templates.find((t) => t.name === 'by-url').pulling).to.deep.equal([]);
      const page = await fetch(`${base}/templates`, { headers: { authorization: `Bearer ${admin}`, 'HX-Request': 'true' } });
      const html = await page.text();
      expect(html).to.contain('pulling 43%').and.contain('every 2s');
    } finally {
      delete reported.pulls;
    }
  });

  it("reads hosts' pull progress from /status pulls", () => {
    expect(pullsReported({ pulls: [{ name: 'a', state: 'pulling', doneBytes: 43, totalBytes: 100 }, { name: 'b', state: 'done', doneBytes: 1, totalBytes: 1 }] } as never))
      .to.deep.equal([{ template: 'a', percent: 43 }]);
    expect(pullsReported(null)).to.deep.equal([]);
  });
});
