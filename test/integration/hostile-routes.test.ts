// Hostile input against every route of the JSON API, the list taken from the router's registry: for
// each operation, as an admin and as a student, fast-check generates bodies from the route's schema
// keys with wrong types, huge and odd unicode strings, nested junk and prototype keys, path parameters
// with traversal and markup, query junk, and wrong content types and encodings. No answer may be a
// 5xx or carry a stack trace, and nothing may change: ids are ones that do not exist, and a body that
// would happen to be valid is sent wrapped in an array instead (so the route still checks it).
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseForm } from 'node:querystring';
import { expect } from 'chai';
import type { Express } from 'express';
import fc from 'fast-check';
import { configureLogging, logger } from '../../base/log.ts';
import { TemplateName } from '../../wire/api.ts';
import type { ApiRouter, Operation } from '../../server/api/route.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

const TOTAL_INPUTS = 10_000;

/** Lone surrogates replaced (String#toWellFormed, not in the project's TypeScript lib yet). */
const wellFormed = (s: string): string => s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');

const WEIRD = [
  '../../etc/passwd', '..%2f..%2fetc%2fpasswd', '%2e%2e%2f', '..\\..\\windows', '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>',
  "'; DROP TABLE users; --", '$(id)', '`id`', '\u0000', '\u202e\u200b', '💥'.repeat(200), 'a'.repeat(70_000), '__proto__', 'constructor',
  'prototype', 'null', 'true', '-1', '1e309', 'NaN', ' ', '', '%', '%zz', '\r\nSet-Cookie: x=1', '{{7*7}}', '${jndi:ldap://x}',
];
const hostileString = fc.oneof(
  fc.constantFrom(...WEIRD),
  fc.string({ unit: 'grapheme', maxLength: 64 }),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ maxLength: 3000 }),
);
const junk: fc.Arbitrary<unknown> = fc.oneof(
  hostileString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 3 }),
  fc.array(hostileString, { maxLength: 5 }), fc.dictionary(hostileString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }),
);
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype', 'role', 'admin', 'owner', 'isAdmin'];
const RAW_BODIES = [
  '{"__proto__":{"role":"admin","admin":true}}', '{"constructor":{"prototype":{"admin":true}}}', '{"a":', '[', 'null', '"text"', '1',
  '['.repeat(50_000) + ']'.repeat(50_000), '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000), '\u0000\u0001\u0002', 'a=1&a=2&__proto__[x]=1',
];
const CONTENT_TYPES = [
  'application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=xyz', 'application/xml',
  'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/octet-stream', 'application/vnd.api+json', '',
];
const QUERY_KEYS = ['host', 'state', 'owner', 'source', 'level', 'hostId', 'vmId', 'after', 'limit', 'name', 'sha256', '__proto__', 'a[b]', 'x'];

interface Input {
  params: string[];
  query: Array<[string, string]>;
  rawQuery: boolean;
  body: { kind: 'json'; value: unknown } | { kind: 'raw'; text: string; type: string } | { kind: 'none' };
  encoding: string | undefined;
}

function inputs(op: Operation): fc.Arbitrary<Input> {
  const shape = (op.body as { shape?: Record<string, unknown> } | undefined)?.shape;
  const keys = [...Object.keys(shape ?? {}), ...PROTO_KEYS];
  const jsonBody = fc.oneof(
    fc.dictionary(fc.constantFrom(...keys), junk, { maxKeys: 8 }),
    junk,
  ).map((value) => ({ kind: 'json' as const, value }));
  const rawBody = fc.record({ text: fc.oneof(fc.constantFrom(...RAW_BODIES), hostileString), type: fc.constantFrom(...CONTENT_TYPES) })
    .map((r) => ({ kind: 'raw' as const, ...r }));
  return fc.record({
    params: fc.array(hostileString, { minLength: 2, maxLength: 2 }),
    query: fc.array(fc.tuple(fc.constantFrom(...QUERY_KEYS), hostileString), { maxLength: 4 }),
    rawQuery: fc.boolean(),
    body: fc.oneof({ weight: 3, arbitrary: jsonBody }, { weight: 2, arbitrary: rawBody }, { weight: 1, arbitrary: fc.constant({ kind: 'none' as const }) }),
    encoding: fc.option(fc.constantFrom('gzip', 'br', 'deflate', 'zstd', 'bogus', 'identity'), { freq: 8 }).map((e) => e ?? undefined),
  });
}

/** What the route's body check would see (express.json / express.urlencoded / nothing), or `unreadable`. */
function bodyAsParsed(body: Input['body'], encoding: string | undefined): unknown {
  if (body.kind === 'none') return {};
  const type = body.kind === 'json' ? 'application/json' : body.type;
  const text = body.kind === 'json' ? JSON.stringify(body.value) ?? '' : body.text;
  const read = /^application\/json\b/.test(type) || type === 'application/x-www-form-urlencoded';
  if (!read) return {}; // another type: the parsers leave the body alone
  if (encoding && encoding !== 'identity') return 'unreadable';
  if (/^application\/json\b/.test(type)) {
    if (/charset=(?!utf-8)/i.test(type)) return 'unreadable';
    try {
      const v: unknown = JSON.parse(text);
      return typeof v === 'object' && v !== null ? v : 'unreadable';
    } catch {
      return 'unreadable';
    }
  }
  if (type === 'application/x-www-form-urlencoded') return { ...parseForm(text) };
  return {};
}

describe('hostile input against every route (property-based, from the router)', function () {
  this.timeout(180_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;
  let operations: Operation[];
  let port: number;
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const tokens: Record<'admin' | 'student', string> = { admin: '', student: '' };
  /** Ids and names that exist: a generated parameter never names one. */
  const existing = new Set<string>();

  let resets = 0;

  /**
   * One request over a kept-alive connection. A connection the server closed (Node's own 431 for a
   * request line over 16 KiB, or a GET whose body it did not read) is not an answer of the app's:
   * the first is counted as a 431, the second retried once on a fresh connection.
   */
  async function send(method: string, p: string, headers: Record<string, string>, body?: Buffer | string): Promise<{ status: number; text: string; type: string }> {
    try {
      return await sendOnce(method, p, headers, body, keepAlive);
    } catch (err) {
      if (!/ECONNRESET|socket hang up|EPIPE/.test((err as Error).message)) throw err;
      resets++;
      if (p.length > 16_000) return { status: 431, text: '', type: '' };
      return sendOnce(method, p, headers, body, false);
    }
  }

  function sendOnce(method: string, p: string, headers: Record<string, string>, body: Buffer | string | undefined, agent: http.Agent | false) {
    return new Promise<{ status: number; text: string; type: string }>((resolve, reject) => {
      // With its length, as curl sends it (a chunked DELETE is refused by Node's parser before the app).
      const sized = body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) };
      const req = http.request({ host: '127.0.0.1', port, method: method.toUpperCase(), path: p, headers: sized, agent }, (res) => {
        const type = String(res.headers['content-type'] ?? '');
        if (type.startsWith('text/event-stream')) {
          res.destroy(); // a live stream never ends: its status is the answer
          return resolve({ status: res.statusCode!, text: '', type });
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString('utf8'), type }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${p}: no answer in 10 s`)));
      req.end(body);
    });
  }

  async function json(method: string, p: string, token: string, body?: unknown) {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await send(method, p, headers, body === undefined ? undefined : JSON.stringify(body));
    return { status: r.status, json: r.text ? JSON.parse(r.text) as any : undefined };
  }

  async function snapshot(): Promise<string> {
    const lists: unknown[] = [];
    for (const p of ['/api/users', '/api/hosts', '/api/vms', '/api/templates', '/api/join-tokens', '/api/settings', '/api/tokens']) {
      lists.push(await json('get', p, tokens.admin));
    }
    lists.push(await json('get', '/api/tokens', tokens.student), await json('get', '/api/vms', tokens.student));
    return JSON.stringify(lists);
  }

  function request(op: Operation, input: Input): { path: string; headers: Record<string, string>; body?: string; wrapped: boolean } {
    let i = 0;
    let p = op.path.replace(/:([A-Za-z]+)/g, () => {
      // (lone surrogates cannot be percent-encoded: a URL carries well-formed text only)
      let v = wellFormed(input.params[i++] ?? 'x');
      if (existing.has(v) || existing.has(v.toLowerCase())) v = `not-${v}`;
      // Raw traversal and markup in the path itself, or the same percent-encoded.
      return input.rawQuery ? v.replace(/[\s?#\u{0}-\u{1f}\u{7f}-\u{10ffff}]/gu, encodeURIComponent) : encodeURIComponent(v);
    });
    const query = input.query.map(([k, raw]) => {
      let v = wellFormed(raw);
      // An upload's name must never be a valid template name: nothing is imported.
      if (k === 'name' && TemplateName.safeParse(v).success) v = `../${v}`;
      return input.rawQuery ? `${k}=${v.replace(/[\s#&\u{0}-\u{1f}\u{7f}-\u{10ffff}]/gu, encodeURIComponent)}` : `${encodeURIComponent(k)}=${encodeURIComponent(v)}`;
    });
    if (query.length > 0) p += `?${query.join('&')}`;
    const headers: Record<string, string> = {};
    let body: string | undefined;
    let sent = input.body;
    let wrapped = false;
    // A body the route would accept is sent in an array: still checked, never acted on.
    if (op.body && op.body.safeParse(bodyAsParsed(sent, input.encoding)).success) {
      sent = { kind: 'json', value: [sent.kind === 'json' ? sent.value : {}] };
      wrapped = true;
    }
    if (sent.kind === 'json') {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(sent.value) ?? 'null';
    } else if (sent.kind === 'raw') {
      if (sent.type) headers['content-type'] = sent.type;
      body = sent.text;
    }
    if (body !== undefined && input.encoding && !wrapped) headers['content-encoding'] = input.encoding;
    return { path: p, headers, ...(body !== undefined ? { body } : {}), wrapped };
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-hostile-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 }); // a simulated agent's answers on a loaded machine
    port = ctl.port;
    operations = [...((ctl.server.listeners('request')[0] as Express).locals.api as ApiRouter).operations];
    tokens.admin = ctl.services.secrets.adminToken;
    agent = await new SimAgent({ hostId: 'hostile-host', hostname: 'pc-hostile', memoryMiB: 65_536, hypervisor: 'tcg', port: await freePort() }).start();
    const enrolled = await json('post', '/api/enroll', '', {
      hostId: agent.hostId, hostname: 'pc-hostile', agentUrl: agent.url, agentKey: agent.key, version: 'test', joinToken: ctl.services.secrets.joinToken,
    });
    expect(enrolled.status, JSON.stringify(enrolled.json)).to.be.oneOf([200, 201]);
    await ctl.services.hosts.pollAll();
    const made = await json('post', '/api/users', tokens.admin, { username: 'alice', password: 'alice-password-1' });
    expect(made.status).to.equal(201);
    const login = await fetch(`${ctl.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-password-1' }) });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const { csrfToken } = await login.json() as { csrfToken: string };
    const t = await fetch(`${ctl.url}/api/tokens`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrfToken, 'content-type': 'application/json' }, body: JSON.stringify({ label: 'hostile' }) });
    tokens.student = ((await t.json()) as { token: string }).token;
    const vm = await json('post', '/api/vms', tokens.student, { template: 'alpine', name: 'target' });
    expect(vm.status, JSON.stringify(vm.json)).to.be.oneOf([201, 202]);
    for (const v of [agent.hostId, 'admin', 'alice', 'alpine', 'target', vm.json.id, ...ctl.services.templates.list().map((x) => x.name)]) existing.add(v);
  });

  after(async () => {
    keepAlive.destroy();
    await ctl?.stop();
    await agent?.stop().catch(() => {}); // teardown: the test has reported already
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses bad userData with 422 naming userData before any host is called', async () => {
    const calls = () => [...agent.hits.values()].reduce((a, b) => a + b, 0);
    const before = calls();
    for (const userData of ['#cloud-config\nkey: [unclosed', '- just\n- a list', 'plain words', '#cloud-config\n*undefined_alias']) {
      const r = await json('post', '/api/vms', tokens.student, { template: 'alpine', userData });
      expect(r.status, userData).to.equal(422);
      expect(r.json.error.details.fields.map((f: { field: string }) => f.field)).to.deep.equal(['userData']);
      expect(JSON.stringify(r.json)).not.to.match(/xorriso|\/var\/lib|seed\.iso/);
    }
    expect(calls() - before, 'requests to the agent').to.equal(0);
    // A good #cloud-config still goes through.
    const ok = await json('post', '/api/vms', tokens.student, { template: 'alpine', name: 'with-user-data', userData: '#cloud-config\npackages: [git]\n' });
    expect(ok.status, JSON.stringify(ok.json)).to.be.oneOf([201, 202]);
    expect((await json('delete', `/api/vms/${ok.json.id}`, tokens.student)).status).to.equal(204);
  });

  it(`answers ${TOTAL_INPUTS.toLocaleString('en')}+ hostile inputs on every route without a 5xx, a stack trace or a change`, async () => {
    const before = await snapshot();
    const roles = ['admin', 'student'] as const;
    // Rotating the join token takes no input at all: as an admin it would only ever do its job.
    const targets = operations.flatMap((op) => roles.filter((role) => !(role === 'admin' && op.path === '/api/join-tokens/rotate')).map((role) => ({ op, role })));
    const runs = Math.ceil(TOTAL_INPUTS / targets.length);
    let tried = 0;
    let wrapped = 0;
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    const created = new Set<string>();
    const started = Date.now();
    for (const { op, role } of targets) {
      await fc.assert(fc.asyncProperty(inputs(op), async (input) => {
        let r: ReturnType<typeof request>;
        try {
          r = request(op, input);
        } catch (err) {
          failures.push(`making the request for ${op.method} ${op.path}: ${(err as Error).message}`);
          return false;
        }
        const headers = { ...r.headers, authorization: `Bearer ${tokens[role]}` };
        let res: Awaited<ReturnType<typeof send>>;
        try {
          res = await send(op.method, r.path, headers, r.body);
        } catch (err) {
          failures.push(`${op.method.toUpperCase()} ${r.path.slice(0, 120)} as ${role} ${JSON.stringify(r.headers)}: ${(err as Error).message}`);
          return false;
        }
        tried++;
        if (r.wrapped) wrapped++;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        if (res.status === 201) created.add(`${op.method.toUpperCase()} ${op.path} as ${role}: ${r.body?.slice(0, 200)} ${JSON.stringify(r.headers)}`);
        const problem = res.status >= 500 ? `status ${res.status}`
          : /\n\s+at |node:internal|\.ts:\d+|\/node_modules\/|\/work\//.test(res.text) ? 'a stack trace or source path in the body' : undefined;
        if (problem) {
          failures.push(`${op.method.toUpperCase()} ${r.path.slice(0, 120)} as ${role}: ${problem}: ${res.text.slice(0, 200)}`);
          return false;
        }
        return true;
      }), { numRuns: runs, seed: 20_251_201, endOnFailure: true }).catch((err: Error) => {
        if (failures.length === 0) failures.push(`${op.method.toUpperCase()} ${op.path} as ${role}: ${err.message.slice(0, 400)}`);
      });
    }
    const fives = [...statuses].filter(([s]) => s >= 500).reduce((n, [, c]) => n + c, 0);
    const spread = [...statuses].sort(([a], [b]) => a - b).map(([s, c]) => `${s}×${c}`).join(' ');
    console.log(`      ${tried} hostile inputs on ${operations.length} routes as admin and student in ${((Date.now() - started) / 1000).toFixed(1)} s: ${fives} 5xx; ${wrapped} valid-looking bodies sent wrapped; ${resets} connections closed by Node's HTTP parser; statuses ${spread}`);
    expect(failures.slice(0, 10)).to.deep.equal([]);
    expect([...created].slice(0, 5), 'created by hostile input').to.deep.equal([]);
    expect(tried).to.be.at.least(TOTAL_INPUTS);
    expect(await snapshot(), 'users, hosts, VMs, templates, tokens and settings after').to.equal(before);
  });
});
