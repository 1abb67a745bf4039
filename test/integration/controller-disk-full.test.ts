// A real controller process whose data folder is a small tmpfs that the test fills: writes answer 507
// with a plain message, no temp files stay in DATA/secrets, SIGTERM exits within 5 s, and after
// freeing space the database is intact and serves. Needs root (mount).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, rmdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { inspectDatabase } from '../../server/db/store.ts';
import { freePort } from '../support/net.ts';

describe('controller on a full disk (tmpfs data folder, child process)', function () {
  this.timeout(90_000);
  let dir: string;
  let port: number;
  let base: string;
  let child: ChildProcess | undefined;
  let stderr = '';
  let token: string;

  async function startChild(): Promise<void> {
    stderr = '';
    child = spawn(process.execPath, ['appliance/main.ts', 'controller', '--data', dir, '--port', String(port)], {
      env: { ...process.env, SKYHOST_LISTEN: '127.0.0.1', SKYHOST_ADVERTISE: 'false', SKYHOST_POLL_INTERVAL_SECONDS: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr!.on('data', (d) => { stderr += String(d); });
    for (const end = Date.now() + 60_000; Date.now() < end;) { // a process start on a loaded machine: not 15 s
      try {
        if ((await fetch(`${base}/healthz`)).ok) return;
      } catch { /* not listening yet */ }
      if (child.exitCode !== null) throw new Error(`controller exited: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`controller did not start: ${stderr}`);
  }

  /** Sends `signal` and resolves with the milliseconds until the process exited (or kills it after `limitMs`). */
  function stopChild(signal: NodeJS.Signals, limitMs = 30_000): Promise<number> {
    const c = child!;
    child = undefined;
    if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve(0);
    const started = Date.now();
    return new Promise((resolve) => {
      const hard = setTimeout(() => c.kill('SIGKILL'), limitMs);
      c.once('exit', () => {
        clearTimeout(hard);
        resolve(Date.now() - started);
      });
      c.kill(signal);
    });
  }

  /**
   * The controller ended its stop itself: a stop that hangs is cut off STOP_LIMIT_MS (4 s) after the
   * signal with this log line. (A bound on the elapsed time measured a loaded machine as much.)
   */
  function expectStoppedByItself(): void {
    expect(stderr).to.contain('stopping on SIGTERM');
    expect(stderr, 'stopped by the limit, not by itself').not.to.match(/not stopped \d+ ms after SIGTERM/);
  }

  async function call(method: string, p: string, body?: unknown): Promise<{ status: number; json: any }> {
    const res = await fetch(base + p, {
      method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

  /** Writes zeros into DATA/filler until the filesystem says ENOSPC. */
  function fill(): void {
    const fd = openSync(path.join(dir, 'filler'), 'w');
    try {
      for (const size of [256 * 1024, 4096, 512, 1]) {
        const chunk = Buffer.alloc(size);
        for (;;) {
          try {
            writeSync(fd, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
            break;
          }
        }
      }
    } finally {
      closeSync(fd);
    }
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-full-'));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', dir]);
    port = await freePort();
    base = `http://127.0.0.1:${port}`;
    await startChild();
    const { readFileSync } = await import('node:fs');
    token = readFileSync(path.join(dir, 'secrets', 'admin-token'), 'utf8').trim();
    expect((await call('POST', '/api/users', { username: 'before', password: 'before-password' })).status).to.equal(201);
  });

  after(async () => {
    if (child) await stopChild('SIGKILL');
    await run('umount', [dir]).catch((err: unknown) => process.stderr.write(`umount ${dir}: ${(err as Error).message}\n`));
    rmdirSync(dir);
  });

  it('given the disk is full, should answer writes with 507 and a plain message and leave no temp files', async () => {
    fill();
    const writes = [
      await call('POST', '/api/users', { username: 'during', password: 'during-password' }),
      await call('POST', '/api/join-tokens', { label: 'room 12' }),
      await call('POST', '/api/join-tokens/rotate'),
      await call('POST', '/api/tokens', { label: 'script' }),
    ];
    for (const w of writes) {
      expect(w.status, JSON.stringify(w.json)).to.equal(507);
      expect(w.json.error.code).to.equal('disk_full');
      expect(w.json.error.message).to.match(/^the controller's disk is full: free space on /);
    }
    expect(readdirSync(path.join(dir, 'secrets')).filter((f) => f.includes('tmp'))).to.deep.equal([]);
    expect((await call('GET', '/api/users')).status).to.equal(200); // reads still work
  });

  it('given the disk is full and events are waiting to be written, should stop by itself on SIGTERM, before its 4 s limit', async () => {
    expect((await call('POST', '/api/users', { username: 'last', password: 'last-password' })).status).to.equal(507);
    await stopChild('SIGTERM'); // at once: the failed write's events are still buffered
    expectStoppedByItself();
    expect(stderr).not.to.contain('no transaction is active');
    expect(stderr).to.contain('stopping on SIGTERM');
  });

  it('given space was freed, should find the database intact and serve writes again', async () => {
    rmSync(path.join(dir, 'filler'));
    expect(inspectDatabase(path.join(dir, 'skyhost.db')).integrity).to.deep.equal(['ok']);
    await startChild();
    expect((await call('POST', '/api/users', { username: 'after', password: 'after-password' })).status).to.equal(201);
    const names = (await call('GET', '/api/users')).json.users.map((u: { name: string }) => u.name);
    expect(names).to.include.members(['admin', 'before', 'after']).and.not.include('during');
    expect((await call('POST', '/api/join-tokens', { label: 'room 12' })).status).to.equal(201);
    await stopChild('SIGTERM');
    expectStoppedByItself();
  });
});
