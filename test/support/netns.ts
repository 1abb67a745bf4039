// A throwaway LAN for tests with real multicast: one network namespace holding a bridge, and one
// namespace per "PC" joined to it by a veth pair, each with an address and a default route
// (bonjour-service sends nothing without one). Names are unique per run; `destroy()` kills every
// process started here, then removes the namespaces (which takes their links with them).
//
//   ns <run>-br:  br0 ─┬─ veth ── ns <run>-1: eth0 10.x.y.11/24, default dev eth0
//                      ├─ veth ── ns <run>-2: eth0 10.x.y.12/24
//                      └─ ...
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { run } from '../../appliance/exec.ts';

/** The pinned Node 24 (not `npx`: a SIGKILL must reach node itself, not a wrapper). */
export const NODE = path.resolve(import.meta.dirname, '../../node_modules/.bin/node');
export const REPO = path.resolve(import.meta.dirname, '../..');

export interface NetHost {
  /** Short name given by the test, e.g. `controller`. */
  name: string;
  /** Network namespace name. */
  ns: string;
  /** Current IPv4 address on the LAN. */
  ip: string;
}

export interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
}

export class TestLan {
  readonly runId: string;
  readonly prefix: string;
  readonly bridgeNs: string;
  private readonly hosts = new Map<string, NetHost>();
  private readonly children = new Set<ResultPromise>();
  private nextOctet = 11;
  private created = false;

  constructor() {
    this.runId = randomBytes(3).toString('hex');
    const b = randomBytes(2);
    // 10.200-249.x.0/24: private, and the namespaces never route to the machine's own network anyway.
    this.prefix = `10.${200 + (b[0]! % 50)}.${b[1]!}`;
    this.bridgeNs = `skyt-${this.runId}-br`;
  }

  /** Creates the bridge namespace. */
  async create(): Promise<this> {
    await run('ip', ['netns', 'add', this.bridgeNs]);
    this.created = true;
    await run('ip', ['-n', this.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
    // No multicast snooping: every namespace hears every mDNS packet, like a dumb switch.
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0']);
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', 'br0', 'up']);
    return this;
  }

  /** Adds a namespace on the LAN with the next free address. */
  async addHost(name: string): Promise<NetHost> {
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    const n = this.hosts.size + 1;
    const ns = `skyt-${this.runId}-${n}`;
    const ip = `${this.prefix}.${this.nextOctet++}`;
    const inner = `sv${this.runId}${n}a`;
    const outer = `sv${this.runId}${n}b`;
    await run('ip', ['netns', 'add', ns]);
    const host: NetHost = { name, ns, ip };
    this.hosts.set(name, host);
    await run('ip', ['link', 'add', inner, 'netns', ns, 'type', 'veth', 'peer', 'name', outer, 'netns', this.bridgeNs]);
    await run('ip', ['-n', this.bridgeNs, 'link', 'set', outer, 'master', 'br0', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', ns, 'link', 'set', inner, 'name', 'eth0']);
    await run('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await run('ip', ['-n', ns, 'route', 'add', 'default', 'dev', 'eth0']);
    return host;
  }

  host(name: string): NetHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  /** Gives a host a new address, as a DHCP lease change would: the old one is gone. */
  async readdress(name: string): Promise<string> {
    const h = this.host(name);
    const ip = `${this.prefix}.${this.nextOctet++}`;
    await run('ip', ['-n', h.ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', h.ns, 'addr', 'del', `${h.ip}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', h.ns, 'route', 'replace', 'default', 'dev', 'eth0']);
    h.ip = ip;
    return ip;
  }

  /** Runs a short command inside a host's namespace. */
  exec(name: string, cmd: string, args: string[], timeout = 30_000) {
    return run('ip', ['netns', 'exec', this.host(name).ns, cmd, ...args], { timeout });
  }

  /** Starts a long-lived process inside a host's namespace; `destroy()` kills it. */
  spawn(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): ResultPromise {
    const child = execa('ip', ['netns', 'exec', this.host(name).ns, cmd, ...args], {
      reject: false,
      env: { LC_ALL: 'C', ...opts.env },
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      stdin: 'ignore',
      buffer: false,
    });
    this.children.add(child);
    void child.finally(() => this.children.delete(child));
    return child;
  }

  /** Starts `node SCRIPT args...` (the pinned Node 24) inside a host's namespace. */
  spawnNode(name: string, script: string, args: string[], opts: SpawnOptions = {}): ResultPromise {
    return this.spawn(name, NODE, [path.resolve(REPO, script), ...args], { cwd: REPO, ...opts });
  }

  /** Kills every process started here and every process left in the run's namespaces, then removes them. */
  async destroy(): Promise<void> {
    if (process.env.SKYHOST_TEST_KEEP) return;
    for (const child of this.children) child.kill('SIGKILL');
    await Promise.allSettled([...this.children]);
    const all = [...[...this.hosts.values()].map((h) => h.ns), ...(this.created ? [this.bridgeNs] : [])];
    for (const ns of all) {
      const pids = await run('ip', ['netns', 'pids', ns], { okCodes: [1] }).catch(() => ({ stdout: '' }));
      for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await run('ip', ['netns', 'del', ns], { okCodes: [1] }).catch(() => undefined);
    }
    this.hosts.clear();
  }
}

/** A LAN with the given hosts; call `destroy()` in an after hook even if this throws half-way. */
export async function createLan(lan: TestLan, names: string[]): Promise<TestLan> {
  await lan.create();
  for (const n of names) await lan.addHost(n);
  return lan;
}

/** Polls `check` until it returns a value that is not undefined/false, or throws after `ms`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, ms = 15_000, every = 100): Promise<T> {
  const until = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
