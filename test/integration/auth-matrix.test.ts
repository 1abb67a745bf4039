// Who may call what, generated from the router itself: every registered operation × anonymous, a
// student, another student, the student's teacher, a teacher of another class, an admin and an enrolled
// host's agent key, with the answer each must get derived from the operation's declared `auth` (and,
// for a VM's routes, who owns the VM and who teaches its owner). A route
// added later is in the matrix without anyone typing it here.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import type { Express } from 'express';
import { configureLogging, logger } from '../../base/log.ts';
import type { ApiRouter, Operation } from '../../server/api/route.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { freePort, jsonOrText } from '../support/net.ts';
import { SimAgent } from '../support/sim-agent.ts';

type Role = 'anonymous' | 'student' | 'other student' | 'teacher' | 'other teacher' | 'admin' | 'agent key';
const ROLES: Role[] = ['anonymous', 'student', 'other student', 'teacher', 'other teacher', 'admin', 'agent key'];

/** What a role must get: `refused` with exactly this status, or `allowed` (anything but 401/403 and 5xx). */
type Expected = { refused: 401 | 403 | 404 } | 'allowed';

/** Bodies that pass a route's schema, so that the answer is about who calls (a body is checked before the VM is looked up). */
const VALID_BODIES: Record<string, unknown> = { '/api/vms/:id/save-as-template': { name: 'matrix-template' }, '/api/vms/:id/extend': { minutes: 60 } };

/** The answer the declared `auth` promises; routes on one VM hide it (404) from all but its owner, the owner's teacher and an admin. */
function expected(op: Operation, role: Role): Expected {
  if (op.auth === 'none') return 'allowed';
  if (role === 'anonymous') return { refused: 401 };
  if (op.auth === 'agent') return role === 'agent key' ? 'allowed' : { refused: 401 };
  if (role === 'agent key') return { refused: 401 };
  if (op.auth === 'admin') return role === 'admin' ? 'allowed' : { refused: 403 };
  if ((role === 'other student' || role === 'other teacher') && op.path.startsWith('/api/vms/:id')) return { refused: 404 };
  return 'allowed';
}

describe('authorization matrix (generated from the router)', function () {
  this.timeout(60_000);
  let dir: string;
  let ctl: RunningController;
  let agent: SimAgent;
  let operations: Operation[];
  const tokens: Partial<Record<Role, string>> = {};

  async function call(method: string, p: string, token?: string, body?: unknown) {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(ctl.url + p, { method: method.toUpperCase(), headers, ...(method === 'get' || method === 'delete' ? {} : { body: JSON.stringify(body ?? {}) }) });
    // A live stream (server-sent events) never ends: its status and type are the answer.
    if (res.headers.get('content-type')?.startsWith('text/event-stream')) {
      await res.body?.cancel();
      return { status: res.status, json: 'event stream' };
    }
    const text = await res.text();
    const json = jsonOrText(text);
    return { status: res.status, json };
  }

  async function userToken(name: string, role: 'student' | 'teacher' = 'student'): Promise<string> {
    const made = await call('post', '/api/users', tokens.admin, { username: name, password: `${name}-password-1`, role });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const login = await fetch(`${ctl.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password: `${name}-password-1` }) });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const { csrfToken } = await login.json() as { csrfToken: string };
    const t = await fetch(`${ctl.url}/api/tokens`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrfToken, 'content-type': 'application/json' }, body: JSON.stringify({ label: 'matrix' }) });
    expect(t.status).to.equal(201);
    return ((await t.json()) as { token: string }).token;
  }

  /** A VM of the first student (a fresh one for routes that would use it up). */
  async function studentVm(): Promise<string> {
    const r = await call('post', '/api/vms', tokens.student, { template: 'alpine' });
    expect(r.status, JSON.stringify(r.json)).to.be.oneOf([201, 202]);
    return r.json.id as string;
  }

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-authz-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, pollTimeoutMs: 5000, answerWithinMs: 10_000 }); // a simulated agent's answers on a loaded machine
    operations = [...((ctl.server.listeners('request')[0] as Express).locals.api as ApiRouter).operations];
    tokens.admin = ctl.services.secrets.adminToken;
    agent = await new SimAgent({ hostId: 'matrix-host', hostname: 'pc-matrix', memoryMiB: 65_536, hypervisor: 'tcg', port: await freePort() }).start();
    const enrolled = await call('post', '/api/enroll', undefined, {
      hostId: agent.hostId, hostname: 'pc-matrix', agentUrl: agent.url, agentKey: agent.key, version: 'test', joinToken: ctl.services.secrets.joinToken,
    });
    expect(enrolled.status, JSON.stringify(enrolled.json)).to.be.oneOf([200, 201]);
    await ctl.services.hosts.pollAll();
    tokens['agent key'] = agent.key;
    tokens.student = await userToken('alice');
    tokens['other student'] = await userToken('bob');
    tokens.teacher = await userToken('tess', 'teacher');
    tokens['other teacher'] = await userToken('otto', 'teacher');
    // tess teaches alice; otto teaches a class without her
    const made = await call('post', '/api/classes', tokens.admin, { name: '7b', teachers: ['tess'] });
    expect(made.status, JSON.stringify(made.json)).to.equal(201);
    const added = await call('post', `/api/classes/${made.json.class.id}/students`, tokens.admin, { user: 'alice' });
    expect(added.status, JSON.stringify(added.json)).to.equal(200);
    expect((await call('post', '/api/classes', tokens.admin, { name: '8c', teachers: ['otto'] })).status).to.equal(201);
  });

  after(async () => {
    await ctl?.stop();
    await agent?.stop().catch(() => {}); // teardown: the test has reported already
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('every route × 7 roles answers as its declared auth says', async () => {
    const sharedVm = await studentVm();
    const failures: string[] = [];
    let cells = 0;
    for (const op of operations) {
      for (const role of ROLES) {
        // Routes that use their VM up (delete) get a fresh one per role; ids of other things are made up.
        const vmId = op.method === 'delete' && op.path === '/api/vms/:id' ? await studentVm() : sharedVm;
        const p = op.path.replace(':id', op.path.startsWith('/api/vms/') ? vmId : 'no-such-id').replace(':action', 'reboot').replace(/:[a-z]+/gi, 'no-such-thing');
        const want = expected(op, role);
        const got = await call(op.method, p, tokens[role], VALID_BODIES[op.path]);
        cells++;
        // The VM exists: those who may see it never get 404 for it (a teacher of its owner included).
        const hidden = got.status === 404 && op.path.startsWith('/api/vms/:id');
        const ok = want === 'allowed' ? got.status < 500 && got.status !== 401 && got.status !== 403 && !hidden : got.status === want.refused;
        if (!ok) failures.push(`${op.method.toUpperCase()} ${op.path} as ${role} (auth ${op.auth}): want ${want === 'allowed' ? 'allowed' : want.refused}, got ${got.status} ${(JSON.stringify(got.json) ?? "").slice(0, 160)}`);
      }
    }
    console.log(`      ${operations.length} routes × ${ROLES.length} roles = ${cells} calls, ${failures.length} wrong`);
    expect(cells).to.equal(operations.length * ROLES.length);
    expect(failures).to.deep.equal([]);
  });
});
