// Real SkyHost processes for the bench groups: a controller (and an agent) started from the sources
// with the pinned Node, each in its own process with its own data folder, stopped and removed after.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `check` every `everyMs` until it returns true; rejects naming `what` after `ms`. */
export async function waitUntil(what: string, ms: number, check: () => Promise<boolean>, everyMs = 200): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > until) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface SkyProcess {
  pid: number;
  /** The last lines the process wrote on stderr (its log). */
  stderr(): string;
  /** Called with every complete stderr line. */
  onLine(fn: (line: string) => void): void;
  exited(): boolean;
  stop(): Promise<void>;
}

/** Starts `node appliance/main.ts ARGS` in `root` with SKYHOST_* `env`. */
export function startSkyhost(root: string, args: string[], env: Record<string, string>): SkyProcess {
  const child: ResultPromise = execa(path.join(root, 'node_modules', '.bin', 'node'), ['appliance/main.ts', ...args], {
    cwd: root, env, reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe',
  });
  let tail = '';
  let partial = '';
  const listeners: Array<(line: string) => void> = [];
  child.stderr?.on('data', (d: Buffer) => {
    const text = String(d);
    tail = (tail + text).slice(-4000);
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) for (const fn of listeners) fn(line);
  });
  let done = false;
  void child.finally(() => { done = true; });
  return {
    pid: child.pid!,
    stderr: () => tail,
    onLine: (fn) => { listeners.push(fn); },
    exited: () => done,
    async stop() {
      if (done) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await child.catch(() => undefined);
      clearTimeout(killer);
    },
  };
}

export interface ControllerProcess extends SkyProcess {
  url: string;
  dataDir: string;
  /** The admin API token (Authorization: Bearer ...). */
  token: string;
  joinToken: string;
}

/** `skyhost controller` on a free loopback port with a fresh data folder, once it answers /healthz. */
export async function startControllerProcess(root: string, env: Record<string, string> = {}): Promise<ControllerProcess> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-controller-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = startSkyhost(root, ['controller', '--data', dataDir, '--port', String(port)], {
    SKYHOST_LISTEN: '127.0.0.1', SKYHOST_ADVERTISE: 'false', SKYHOST_LOG_LEVEL: 'warn', ...env,
  });
  const stop = async () => {
    await proc.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await waitUntil('the controller to answer /healthz', 30_000, async () => {
      if (proc.exited()) throw new Error('controller exited');
      return (await fetch(`${url}/healthz`)).ok;
    });
  } catch (err) {
    const said = proc.stderr().trim().split('\n').slice(-2).join(' | ');
    await stop();
    throw new Error(`${(err as Error).message}${said ? ` (controller said: ${said})` : ''}`);
  }
  const secret = (name: string) => readFileSync(path.join(dataDir, 'secrets', name), 'utf8').trim();
  return { ...proc, url, dataDir, token: secret('admin-token'), joinToken: secret('join-token'), stop };
}
