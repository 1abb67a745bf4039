// Real SkyHost processes for the bench groups: a controller (and an agent) started from the sources
// with the pinned Node, each in its own process with its own data folder, stopped and removed after.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { hostTag } from '../agent/hypervisor/libvirt/domain.ts';
import { listDomains, removeDomain } from '../agent/hypervisor/libvirt/libvirt.ts';
import { networkName, removeNetwork } from '../agent/hypervisor/libvirt/network.ts';
import { TemplateStore, type ImportOptions } from '../agent/templates.ts';
import { ensureDaemons } from '../host/hostsetup.ts';
import { skyhostCommand } from './discovery.ts';
import type { BenchContext } from './group.ts';
import { freePort, waitFor } from '../test/support/net.ts';

export { freePort };

/** Polls `check` every `everyMs` until it returns true; rejects naming `what` after `ms`. */
export async function waitUntil(what: string, ms: number, check: () => Promise<boolean>, everyMs = 200): Promise<void> {
  await waitFor(what, check, ms, everyMs);
}

export interface SkyProcess {
  pid: number;
  /** What runs: `dist/skyhost`, or node + sources when the binary is missing or stale. */
  what: string;
  /** The last lines the process wrote on stderr (its log). */
  stderr(): string;
  /** Called with every complete stderr line. */
  onLine(fn: (line: string) => void): void;
  exited(): boolean;
  stop(): Promise<void>;
}

/** Starts `skyhost ARGS` (the built binary when fresh, else the sources) in `root` with SKYHOST_* `env`. */
export function startSkyhost(root: string, args: string[], env: Record<string, string>): SkyProcess {
  const { cmd, pre, what } = skyhostCommand();
  const child: ResultPromise = execa(cmd, [...pre, ...args], {
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
    what,
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

/** Waits for `url`/healthz; if the process dies or stays silent, `stop()`s it and throws with its last words. */
async function healthy(what: string, proc: SkyProcess, url: string, ms: number, stop: () => Promise<void>): Promise<void> {
  try {
    await waitUntil(`the ${what} to answer /healthz`, ms, async () => {
      if (proc.exited()) throw new Error(`${what} exited`);
      return (await fetch(`${url}/healthz`)).ok;
    });
  } catch (err) {
    const said = proc.stderr().trim().split('\n').slice(-2).join(' | ');
    await stop();
    throw new Error(`${(err as Error).message}${said ? ` (${what} said: ${said})` : ''}`);
  }
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
  await healthy('controller', proc, url, 30_000, stop);
  const secret = (name: string) => readFileSync(path.join(dataDir, 'secrets', name), 'utf8').trim();
  return { ...proc, url, dataDir, token: secret('admin-token'), joinToken: secret('join-token'), stop };
}

export interface AgentProcess extends SkyProcess {
  url: string;
  hostId: string;
  /** The agent's bearer key (DATA/secrets/agent-key, or the one given). */
  key: string;
}

/**
 * `skyhost agent` on a free loopback port, enrolled with `controller`, logging JSON on stderr at
 * `logLevel`; resolves once it answers /healthz.
 */
export async function startAgentProcess(root: string, o: { dataDir: string; hostId: string; controller: ControllerProcess; key: string; logLevel?: string }): Promise<AgentProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const sshLow = 31000 + Math.floor(Math.random() * 900) * 10;
  const proc = startSkyhost(root, [
    'agent', '--data', o.dataDir, '--port', String(port), '--host-id', o.hostId, '--key', o.key,
    '--controller', o.controller.url, '--join-token', o.controller.joinToken, '--ssh-ports', `${sshLow}-${sshLow + 9}`,
  ], { SKYHOST_LISTEN: '127.0.0.1', SKYHOST_LOG_LEVEL: o.logLevel ?? 'warn', SKYHOST_LOG_FORMAT: 'json' });
  await healthy('agent', proc, url, 60_000, () => proc.stop());
  return { ...proc, url, hostId: o.hostId, key: o.key };
}

/** Resident memory of process `pid` in MB, from /proc. */
export function rssMb(pid: number): number {
  return statusMb(pid, 'VmRSS');
}

/**
 * The private (anonymous) part of that: what the process costs the machine. The rest of RSS is pages
 * of the executable file itself, clean and shared with the page cache.
 */
export function privateMb(pid: number): number {
  return statusMb(pid, 'RssAnon');
}

function statusMb(pid: number, field: string): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** CPU seconds (user + system) process `pid` has used so far, from /proc (clock ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Removes every libvirt domain and the NAT network an agent with `hostId` may have left. */
export async function removeAgentLeftovers(hostId: string): Promise<void> {
  const prefix = `sky-${hostTag(hostId)}-`;
  for (const name of (await listDomains().catch(() => new Map<string, string>())).keys()) {
    if (name.startsWith(prefix)) await removeDomain(name).catch(() => undefined);
  }
  await removeNetwork(networkName(hostId)).catch(() => undefined);
}

/** A JSON call to the controller's API as its admin: the status and the parsed body. */
export type ControllerApi = (method: string, p: string, body?: unknown) => Promise<{ status: number; body: Record<string, any> }>;

/** `ControllerApi` for `c` (its admin token), each call bounded to 60 s. */
export function controllerApi(c: { url: string; token: string }): ControllerApi {
  return async (method, p, body) => {
    const res = await fetch(c.url + p, {
      method, headers: { authorization: `Bearer ${c.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(60_000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) as Record<string, any> : {} };
  };
}

/** Requests a VM (`POST /api/vms`) and waits until it runs with its SSH port forwarded: its id and that port. */
export async function requestVmWithSsh(api: ControllerApi, request: Record<string, unknown>): Promise<{ id: string; port: number }> {
  const created = await api('POST', '/api/vms', request);
  if (created.status !== 201 && created.status !== 202) throw new Error(`POST /api/vms answered ${created.status}: ${JSON.stringify(created.body)}`);
  const id = String(created.body.id);
  let port = 0;
  await waitUntil(`VM ${id} to run`, 120_000, async () => {
    const vm = (await api('GET', `/api/vms/${id}`)).body;
    if (vm.state === 'error') throw new Error(`VM ${id} failed: ${String(vm.error ?? '')}`);
    port = vm.ssh?.port ?? 0;
    return vm.state === 'running' && port > 0;
  }, 100);
  return { id, port };
}

/** A controller process and a real agent beside it, enrolled, whose templates hold the one given. */
export interface RealAgent {
  controller: ControllerProcess;
  agent: AgentProcess;
  /** The controller's API as its admin. */
  api: ControllerApi;
  /** The agent's data folder, removed afterwards: room for the bench's own files (an SSH key). */
  dataDir: string;
}

/**
 * Runs `use` with a controller process and a real agent on this machine's libvirt, `o.template`
 * imported into the agent's data folder before it starts, once the agent has enrolled and the
 * controller lists that template; then stops both and removes the agent's VMs, network and folder.
 */
export async function withRealAgent<T>(
  ctx: BenchContext, o: { hostIdPrefix: string; template: ImportOptions; logLevel?: string }, use: (r: RealAgent) => Promise<T>,
): Promise<T> {
  await ensureDaemons();
  const hostId = `${o.hostIdPrefix}-${randomBytes(3).toString('hex')}`;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `skyhost-${o.hostIdPrefix}-`));
  chmodSync(dataDir, 0o711); // libvirt-qemu reaches the VM folders inside
  let controller: ControllerProcess | undefined;
  let agent: AgentProcess | undefined;
  try {
    await new TemplateStore(dataDir).import(o.template);
    const c = controller = await startControllerProcess(ctx.root);
    const api = controllerApi(c);
    const a = agent = await startAgentProcess(ctx.root, { dataDir, hostId, controller: c, key: randomBytes(24).toString('hex'), ...(o.logLevel ? { logLevel: o.logLevel } : {}) });
    await waitUntil('the agent to enroll and report the template', 60_000, async () => {
      if (a.exited()) throw new Error(`agent exited: ${a.stderr().trim().split('\n').pop()}`);
      return JSON.stringify((await api('GET', '/api/templates')).body).includes(`"${o.template.name}"`);
    });
    return await use({ controller: c, agent: a, api, dataDir });
  } finally {
    await agent?.stop();
    await controller?.stop();
    await removeAgentLeftovers(hostId);
    rmSync(dataDir, { recursive: true, force: true });
  }
}
