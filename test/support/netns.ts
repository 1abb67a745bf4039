// A throwaway LAN for tests with real multicast: one network namespace holding a bridge, and one
// namespace per "PC" joined to it by a veth pair, each with an address and a default route
// (bonjour-service sends nothing without one). Names are unique per run; `destroy()` kills every
// process started here, then removes the namespaces (which takes their links with them).
//
//   ns <run>-br:  br0 ─┬─ veth ── ns <run>-1: eth0 10.x.y.11/24, default dev eth0
//                      ├─ veth ── ns <run>-2: eth0 10.x.y.12/24
//                      └─ ...
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { run } from '../../base/exec.ts';
import { CONFIG_KEYS, envName } from '../../base/config.ts';
import { GiveUp, waitFor } from './net.ts';

// waitFor and GiveUp live in net.ts with the other polling helpers; kept importable from here.
export { GiveUp, waitFor } from './net.ts';

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

  /** Adds a bridge with an address to a host, like libvirt's virbr0 on a PC that runs VMs. */
  async addBridge(name: string, bridge: string, cidr: string): Promise<void> {
    const ns = this.host(name).ns;
    await run('ip', ['-n', ns, 'link', 'add', bridge, 'type', 'bridge']);
    await run('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', bridge]);
    await run('ip', ['-n', ns, 'link', 'set', bridge, 'up']);
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
    // Old one out first: deleting a primary address also deletes the secondaries of its subnet.
    await run('ip', ['-n', h.ns, 'addr', 'del', `${h.ip}/24`, 'dev', 'eth0']);
    await run('ip', ['-n', h.ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
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
      const pids = await run('ip', ['netns', 'pids', ns], { okCodes: [1] }).catch((err: Error) => {
        console.warn(`netns ${ns}: cannot list its processes (${err.message}); removing it anyway`);
        return { stdout: '' };
      });
      for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone (ESRCH): that is what we wanted
        }
      }
      await run('ip', ['netns', 'del', ns], { okCodes: [1] }).catch((err: Error) => {
        console.warn(`netns ${ns} left behind: ${err.message}`); // the next run's names differ: it does not get in the way
      });
    }
    this.hosts.clear();
  }
}

/** Environment for a controller that answers plain HTTP on its HTTP port (no HTTPS, LAN trusted), as far as its config knows those keys. */
export const PLAIN_HTTP: Record<string, string> = Object.fromEntries(
  ([['httpsPort', '0'], ['trustedLan', 'true']] as const).filter(([k]) => (CONFIG_KEYS as string[]).includes(k)).map(([k, v]) => [envName(k), v]));

/**
 * Talking to a controller on plain HTTP port 8080 of host `from`, from that same namespace: its address,
 * curl there, and its JSON API with the token `token()` gives at the time of the call.
 */
export function plainControllerApi(lan: TestLan, from: string, token: () => string) {
  const url = () => `http://${lan.host(from).ip}:8080`;
  // 20 s for one answer: a node process on a loaded machine (5 s was a quiet machine's figure)
  const curl = async (args: string[]) => (await lan.exec(from, 'curl', ['-sS', '--max-time', '20', ...args])).stdout;
  const api = async <T>(method: string, route: string, body?: unknown): Promise<T> =>
    JSON.parse(await curl(['-X', method, '-H', `authorization: Bearer ${token()}`, '-H', 'content-type: application/json',
      ...(body === undefined ? [] : ['--data', JSON.stringify(body)]), url() + route])) as T;
  return { url, curl, api };
}

export interface LanProcessOptions {
  /** Keep the log of this host's earlier process (a restart) instead of starting it afresh. */
  appendLog?: boolean;
}

/**
 * The long-lived processes of a test on a TestLan, one per host name, each with its output (stdout and
 * stderr, JSON log lines) kept in a log. `alive()` fails a wait at once when one of them has exited;
 * `dumpIfFailed(this)` in an afterEach prints the end of every log when the test failed.
 */
export class LanProcesses {
  private readonly logs = new Map<string, string>();
  /** Where the current process of each host starts in its log. */
  private readonly starts = new Map<string, number>();
  private readonly procs = new Map<string, ResultPromise>();
  private readonly lan: TestLan;

  constructor(lan: TestLan) {
    this.lan = lan;
  }

  /** Starts `cmd args...` in host `who`'s namespace (in the repository, JSON logs); the log of `who` starts afresh unless `appendLog`. */
  spawn(who: string, cmd: string, args: string[], env: Record<string, string> = {}, opts: LanProcessOptions = {}): ResultPromise {
    const child = this.lan.spawn(who, cmd, args, { cwd: REPO, env: { SKYHOST_LOG_FORMAT: 'json', ...env } });
    const earlier = opts.appendLog ? this.logs.get(who) : undefined;
    this.logs.set(who, earlier ? `${earlier}\n--- restarted\n` : '');
    this.starts.set(who, this.logs.get(who)!.length);
    const add = (d: Buffer) => this.logs.set(who, this.logs.get(who) + String(d));
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    void child.then((r) => {
      if (!r.isTerminated && r.exitCode !== 0) add(Buffer.from(`\n(exited ${r.exitCode})`));
    });
    this.procs.set(who, child);
    return child;
  }

  /** Starts `node SCRIPT args...` (the pinned Node 24, SCRIPT relative to the repository), as `spawn`. */
  node(who: string, script: string, args: string[], env: Record<string, string> = {}, opts: LanProcessOptions = {}): ResultPromise {
    return this.spawn(who, NODE, [path.resolve(REPO, script), ...args], env, opts);
  }

  /** The current process of host `who`. */
  process(who: string): ResultPromise {
    const p = this.procs.get(who);
    if (!p) throw new Error(`no process on ${who}`);
    return p;
  }

  /** Everything host `who`'s processes wrote (earlier runs too where started with `appendLog`). */
  log(who: string): string {
    return this.logs.get(who) ?? '';
  }

  /** What host `who`'s current process wrote. */
  currentLog(who: string): string {
    return this.log(who).slice(this.starts.get(who) ?? 0);
  }

  /** Every process started is expected to keep running until killed: one that exited fails the wait at once. */
  alive(): void {
    for (const [who, p] of this.procs) {
      if (p.exitCode !== null && p.exitCode !== undefined && !p.killed) throw new GiveUp(`${who} exited (${p.exitCode}):\n${this.log(who).slice(-2000)}`);
    }
  }

  /** For an afterEach: when the test failed, prints the last 25 lines of each log that are not debug records. */
  dumpIfFailed(ctx: Mocha.Context): void {
    if (ctx.currentTest?.state !== 'failed') return;
    for (const [k, v] of this.logs) console.log(`--- ${k}\n${v.split('\n').filter((l) => !l.includes('"debug"')).slice(-25).join('\n')}`);
  }
}

/** A LAN with the given hosts; call `destroy()` in an after hook even if this throws half-way. */
export async function createLan(lan: TestLan, names: string[]): Promise<TestLan> {
  await lan.create();
  for (const n of names) await lan.addHost(n);
  return lan;
}


/** avahi-daemon with a private D-Bus system bus, inside one host of a TestLan. */
export interface TestAvahi {
  /** Environment that points avahi-* tools at this daemon's bus. */
  env: Record<string, string>;
  /** `avahi-browse -rpt TYPE` (resolved, parsable, terminate after the cache is dumped). */
  browse(type: string): Promise<AvahiService[]>;
  /** `avahi-publish -s NAME TYPE PORT TXT...`: runs until the LAN is destroyed or `stop()`. */
  publish(name: string, type: string, port: number, txt: string[]): { stop(): void };
}

export interface AvahiService {
  iface: string;
  name: string;
  type: string;
  host: string;
  address: string;
  port: number;
  txt: string[];
}

/** Starts dbus-daemon + avahi-daemon in host `name`'s namespace (files under `dir`). */
export async function startAvahi(lan: TestLan, name: string, dir: string): Promise<TestAvahi> {
  mkdirSync(dir, { recursive: true });
  const bus = path.join(dir, 'bus');
  writeFileSync(path.join(dir, 'bus.conf'), `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`);
  writeFileSync(path.join(dir, 'avahi.conf'), [
    '[server]', `host-name=skyt-avahi-${lan.runId}`, 'use-ipv4=yes', 'use-ipv6=no', 'allow-interfaces=eth0', 'enable-dbus=yes',
    'ratelimit-interval-usec=1000000', 'ratelimit-burst=1000',
    '[wide-area]', 'enable-wide-area=no', '[publish]', 'publish-hinfo=no', 'publish-workstation=no', '',
  ].join('\n'));
  const env = { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${bus}` };
  lan.spawn(name, 'dbus-daemon', ['--config-file', path.join(dir, 'bus.conf'), '--nofork']);
  await waitFor('dbus-daemon socket', () => existsSync(bus), 5000, 50);
  // avahi-daemon's pid file path is fixed: give it a private /run/avahi-daemon. `ip netns exec` already
  // runs in its own mount namespace, so the tmpfs never shows outside. No user text reaches the shell.
  await run('mkdir', ['-p', '/run/avahi-daemon']);
  const daemon = lan.spawn(name, 'sh', ['-c', 'mount -t tmpfs tmpfs /run/avahi-daemon && exec "$@"', 'sh',
    'avahi-daemon', '-f', path.join(dir, 'avahi.conf'), '--no-drop-root', '--no-chroot', '--no-rlimits', '--no-proc-title'], { env });
  let log = '';
  daemon.stderr!.on('data', (d: Buffer) => (log += String(d)));
  await waitFor('avahi-daemon startup', () => /Server startup complete/.test(log) || (daemon.exitCode !== null ? Promise.reject(new Error(log)) : false), 10_000, 50);
  return {
    env,
    async browse(type) {
      const r = await run('ip', ['netns', 'exec', lan.host(name).ns, 'avahi-browse', '-rpt', type], { env, timeout: 15_000 });
      return parseAvahiBrowse(r.stdout);
    },
    publish(svcName, type, port, txt) {
      const child = lan.spawn(name, 'avahi-publish', ['-s', svcName, type, String(port), ...txt], { env });
      return { stop: () => void child.kill('SIGTERM') };
    },
  };
}

/** Parses `avahi-browse -p` lines of resolved services (`=;iface;proto;name;type;domain;host;addr;port;"txt" ...`). */
export function parseAvahiBrowse(out: string): AvahiService[] {
  return out.split('\n').filter((l) => l.startsWith('=;')).map((l) => {
    const f = l.split(';');
    const unescape = (s: string) => s.replace(/\\(\d{3})/g, (_, d: string) => String.fromCharCode(Number(d)));
    return {
      iface: f[1]!, name: unescape(f[3]!), type: f[4]!, host: f[6]!, address: f[7]!, port: Number(f[8]),
      txt: [...(f.slice(9).join(';').matchAll(/"((?:[^"\\]|\\.)*)"/g))].map((m) => unescape(m[1]!)),
    };
  });
}
