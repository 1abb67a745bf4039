// A simulated agent for scale (fakes are for speed and scale, never to claim the real path works): the
// real agent app (agent/app.ts, agent/vms/) over the in-memory hypervisor (agent/hypervisor/fake.ts),
// with templates, SSH ports and the machine's resources kept in memory too. No libvirt, no disks, no
// guest. Hundreds run in one process, each on its own loopback port, so a controller sees each as a
// distinct agent URL.
//
//   const fleet = await SimFleet.start(200, (i) => ({ memoryMiB: 16384 }));
//   await fleet.enroll(controllerUrl, joinToken);   // POST /api/enroll for every agent
//   ... fleet.agents[0].url, fleet.agents[0].key ...
//   await fleet.stop();
//
// Run a fleet from a shell: `npx node test/support/sim-agent.ts --count 50 [--controller URL --join-token T] [--listen ADDR]`.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  EnrollResponse, TemplateInfo, TemplateName, VmCreateRequest, type EnrollRequest, type Hypervisor as Accel,
} from '../../wire/api.ts';
import { Conflict, InvalidField, NotFound, SkyError, Unavailable } from '../../base/errors.ts';
import { close, listen } from '../../base/http.ts';
import { Logger } from '../../base/log.ts';
import { VERSION } from '../../base/version.ts';
import { compareNames } from '../../base/order.ts';
import type { SshForwarder } from '../../agent/forwarder.ts';
import type { PowerState, VmMetadata } from '../../agent/hypervisor/driver.ts';
import type { FakeHypervisor } from '../../agent/hypervisor/fake.ts';
import { loadHypervisor } from '../../agent/hypervisor/load.ts';
import type { HostFacts, HostResources, HostSample } from '../../agent/resources.ts';
import { assembleAgent, stopServedAgent, type AssembledAgent } from '../../agent/service.ts';
import type { ImportOptions, TemplateCatalog } from '../../agent/templates.ts';
import { freeIp, newMac } from '../../agent/vms/addresses.ts';

export interface SimAgentOptions {
  /** Stable id, as /etc/machine-id would be (default: random 32 hex digits). */
  hostId?: string;
  hostname?: string;
  /** The bearer key every route but /healthz requires (default: random). */
  key?: string;
  threads?: number;
  memoryMiB?: number;
  /** Memory the host's own OS uses (default 512 MiB). */
  osMemoryMiB?: number;
  diskGiB?: number;
  hypervisor?: Accel;
  /** Templates present (default: alpine and a KVM-only desktop). */
  templates?: TemplateInfo[];
  /** VMs the agent already runs when it starts. */
  vms?: number;
  /** A VM's start takes this many ms (default 0): its create answers then. */
  createDelayMs?: number;
  /** Largest JSON body (default 512 KiB, as the real agent). */
  bodyLimitBytes?: number;
  /** Largest template upload (default 64 MiB: the simulation only hashes it). */
  maxUploadBytes?: number;
  /** Listening address (default 127.0.0.1) and port (default 0: any free port). */
  listenHost?: string;
  port?: number;
  /** The agent's log (default: errors only; a fleet's adoptions and creates would flood the test output). */
  log?: Logger;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SHA_EMPTY = createHash('sha256').digest('hex');

/** A log that keeps only errors. */
class ErrorsOnly extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
}

/** A template as a simulated host reports it. */
export function simTemplate(name: string, o: Partial<TemplateInfo> = {}): TemplateInfo {
  return {
    name,
    kind: 'disk',
    os: name,
    minMemoryMiB: 128,
    console: 'serial',
    needsKvm: false,
    files: [{ role: 'disk', file: `${name}.qcow2`, bytes: 64 * MiB, sha256: SHA_EMPTY, format: 'qcow2', virtualBytes: 2 * GiB }],
    createdAt: new Date(0).toISOString(),
    ...o,
  };
}

export const DEFAULT_TEMPLATES: readonly TemplateInfo[] = [
  simTemplate('alpine', { os: 'alpine', description: 'Alpine Linux, serial console', ssh: true }),
  simTemplate('desktop', { os: 'ubuntu-desktop', minMemoryMiB: 2048, console: 'vnc', needsKvm: true, description: 'Ubuntu desktop' }),
];

/** Templates in memory; an import only hashes the file it is given. */
export class MemoryTemplates implements TemplateCatalog {
  /** Uploads wait here while they are hashed. */
  readonly dir = os.tmpdir();
  /** Templates by name: tests may add or take one away. */
  readonly byName = new Map<string, TemplateInfo>();

  constructor(templates: readonly TemplateInfo[]) {
    for (const t of templates) this.byName.set(t.name, t);
  }

  async list(): Promise<TemplateInfo[]> {
    return [...this.byName.values()].sort((a, b) => compareNames(a.name, b.name));
  }

  async get(name: string): Promise<TemplateInfo | undefined> {
    return this.byName.get(name);
  }

  pathOf(t: TemplateInfo, role: TemplateInfo['files'][number]['role']): string | undefined {
    const f = t.files.find((x) => x.role === role);
    return f ? `/simulated/templates/${t.name}/${f.file}` : undefined;
  }

  async import(o: ImportOptions): Promise<TemplateInfo> {
    const name = TemplateName.safeParse(o.name);
    if (!name.success) throw new InvalidField('name', name.error.issues[0]!.message);
    if (this.byName.has(o.name)) throw new Conflict(`template ${o.name} already exists`);
    const sources = [['kernel', o.kernel], ['initrd', o.initrd], ['disk', o.disk], ['iso', o.iso]].filter((x): x is ['kernel' | 'initrd' | 'disk' | 'iso', string] => x[1] !== undefined);
    if (sources.length === 0) throw new InvalidField('disk', 'give a disk image or a kernel');
    const files: TemplateInfo['files'] = [];
    for (const [i, [role, file]] of sources.entries()) {
      const bytes = await readFile(file);
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const want = o.sha256?.[i]?.toLowerCase();
      if (want && want !== sha256) {
        throw new SkyError(422, 'checksum_mismatch', `${role}: sha256 is ${sha256}, expected ${want}`, { fields: [{ field: 'sha256', message: 'does not match' }] });
      }
      const qcow2 = role === 'disk' && bytes.length >= 32 && bytes.readUInt32BE(0) === 0x514649fb;
      if (role === 'iso' && bytes.subarray(0x8001, 0x8006).toString('latin1') !== 'CD001') throw new InvalidField('iso', 'must be an ISO 9660 image');
      if (role === 'iso') files.push({ role, file: 'installer.iso', bytes: bytes.length, sha256 });
      else files.push(role === 'disk'
        ? { role, file: qcow2 ? 'disk.qcow2' : 'disk.raw', bytes: bytes.length, sha256, format: qcow2 ? 'qcow2' : 'raw', virtualBytes: qcow2 ? Number(bytes.readBigUInt64BE(24)) : bytes.length }
        : { role, file: role === 'kernel' ? 'vmlinuz' : 'initrd', bytes: bytes.length, sha256 });
    }
    const t = TemplateInfo.parse({
      name: o.name, kind: o.kernel ? 'kernel' : o.iso ? 'iso' : 'disk', os: o.os ?? 'linux', ...(o.description ? { description: o.description } : {}),
      minMemoryMiB: o.minMemoryMiB ?? 128, console: o.console ?? (o.iso ? 'vnc' : 'serial'), needsKvm: o.needsKvm ?? false, files,
      ...(o.cmdline !== undefined ? { cmdline: o.cmdline } : {}), createdAt: new Date().toISOString(),
    });
    this.byName.set(t.name, t);
    return t;
  }

  async remove(name: string, inUse: (name: string) => Promise<string[]>): Promise<void> {
    if (!this.byName.has(name)) throw new NotFound(`template ${name}`);
    const users = await inUse(name);
    if (users.length > 0) throw new Conflict(`template ${name} is used by VM(s) ${users.join(', ')}: delete them first`, { vms: users });
    this.byName.delete(name);
  }
}

/** SSH ports booked in a range, nothing listening: a simulated VM has no guest to reach. */
export class BookedPorts implements SshForwarder {
  private readonly low: number;
  private readonly high: number;
  private readonly booked = new Set<number>();

  constructor(low = 22000, high = 22999) {
    this.low = low;
    this.high = high;
  }

  reserve(taken: Set<number> = new Set()): number {
    for (let p = this.low; p <= this.high; p++) {
      if (!this.booked.has(p) && !taken.has(p)) {
        this.booked.add(p);
        return p;
      }
    }
    throw new Unavailable(`no free SSH port left in ${this.low}-${this.high}`);
  }

  release(port: number): void {
    this.booked.delete(port);
  }

  async open(port: number): Promise<void> {
    this.booked.add(port);
  }

  async close(port: number): Promise<void> {
    this.booked.delete(port);
  }

  async closeAll(): Promise<void> {
    this.booked.clear();
  }
}

/** The simulated machine: its CPU, memory and disk, from the options and the VMs it runs. */
class SimResources implements HostResources {
  private readonly sim: SimAgent;

  constructor(sim: SimAgent) {
    this.sim = sim;
  }

  async facts(): Promise<HostFacts> {
    const o = this.sim.opts;
    return { hostname: this.sim.hostname, cpu: { model: 'Simulated CPU', cores: Math.max(1, o.threads >> 1), threads: o.threads }, gpus: [] };
  }

  async sample(): Promise<HostSample> {
    const o = this.sim.opts;
    const vms = this.sim.agentVms();
    let vcpus = 0;
    let diskUsed = 0;
    for (const v of vms?.list() ?? []) {
      diskUsed += (v.diskGiB ?? 2) * 0.1; // overlays hold only what the guest wrote
      if (v.state === 'running') vcpus += v.vcpus;
    }
    const used = vms?.memoryInUse() ?? 0;
    return {
      load: { loadPct: Math.min(100, (100 * vcpus) / (4 * o.threads)), load1: vcpus / 4 },
      memory: { totalMiB: o.memoryMiB, freeMiB: Math.max(0, o.memoryMiB - o.osMemoryMiB - used) },
      disk: { path: '/var/lib/skyhost', totalGiB: o.diskGiB, freeGiB: Math.max(0, Math.round((o.diskGiB - 20 - diskUsed) * 10) / 10) },
    };
  }
}

/** A VM the simulated machine already runs. */
export interface SimVm {
  id?: string;
  name: string;
  template: string;
  owner?: string;
  memoryMiB?: number;
  vcpus?: number;
}

/** One simulated agent on its own loopback port. */
export class SimAgent {
  readonly hostId: string;
  readonly hostname: string;
  readonly key: string;
  readonly opts: Required<Omit<SimAgentOptions, 'hostId' | 'hostname' | 'key' | 'templates' | 'vms' | 'log'>>;
  /** Templates present, by name: tests may add or take one away. */
  readonly templates: Map<string, TemplateInfo>;
  /** Requests answered, per `METHOD /route`, for tests and the bench. */
  readonly hits = new Map<string, number>();
  /** The simulated machine's hypervisor, once started; it keeps its VMs across stop and start, as libvirt does. */
  hypervisor: FakeHypervisor | undefined;
  private readonly log: Logger;
  private readonly catalog: MemoryTemplates;
  private readonly ports = new BookedPorts();
  private readonly initialVms: number;
  private agent: AssembledAgent | undefined;
  private server: Server | undefined;
  private port = 0;

  constructor(o: SimAgentOptions = {}) {
    this.hostId = o.hostId ?? randomBytes(16).toString('hex');
    this.hostname = o.hostname ?? `sim-${this.hostId.slice(0, 8)}`;
    this.key = o.key ?? randomBytes(24).toString('base64url');
    this.opts = {
      threads: o.threads ?? 8,
      memoryMiB: o.memoryMiB ?? 16384,
      osMemoryMiB: o.osMemoryMiB ?? 512,
      diskGiB: o.diskGiB ?? 500,
      hypervisor: o.hypervisor ?? 'kvm',
      createDelayMs: o.createDelayMs ?? 0,
      bodyLimitBytes: o.bodyLimitBytes ?? 512 * 1024,
      maxUploadBytes: o.maxUploadBytes ?? 64 * MiB,
      listenHost: o.listenHost ?? '127.0.0.1',
      port: o.port ?? 0,
    };
    this.log = o.log ?? new ErrorsOnly('sim-agent', { host: this.hostname });
    this.catalog = new MemoryTemplates(o.templates ?? DEFAULT_TEMPLATES);
    this.templates = this.catalog.byName;
    this.initialVms = o.vms ?? 0;
  }

  /** `http://127.0.0.1:PORT` once started. */
  get url(): string {
    return `http://${this.opts.listenHost}:${this.port}`;
  }

  /** The VMs on the simulated machine, by id (what its hypervisor holds). */
  get vms(): ReadonlyMap<string, { metadata: VmMetadata; state: PowerState }> {
    return this.hypervisor?.domains ?? new Map();
  }

  /** The running agent's VM manager (for the simulated resources). */
  agentVms(): AssembledAgent['vms'] | undefined {
    return this.agent?.vms;
  }

  /** Starts the agent: it adopts the VMs the simulated machine has, then listens (again, after a stop). */
  async start(): Promise<this> {
    if (!this.hypervisor) {
      this.hypervisor = await loadHypervisor({
        kind: 'fake', hostId: this.hostId, dataDir: '/var/lib/skyhost', log: this.log,
        fake: { memoryMiB: this.opts.memoryMiB - this.opts.osMemoryMiB, startDelayMs: () => this.opts.createDelayMs },
      });
      const template = this.templates.has('alpine') ? 'alpine' : [...this.templates.keys()][0];
      for (let i = 0; i < this.initialVms && template; i++) await this.addVm({ name: `vm-${i}`, template, owner: `student${i % 30}` });
    }
    const agent = await assembleAgent({
      hostId: this.hostId, key: this.key, dataDir: '/var/lib/skyhost',
      accel: { accel: this.opts.hypervisor, reason: this.opts.hypervisor !== 'kvm' ? 'simulated host without KVM' : '' },
      hypervisor: this.hypervisor, templates: this.catalog, forwarder: this.ports, resources: new SimResources(this),
      sshHost: this.opts.listenHost, log: this.log, bodyLimit: this.opts.bodyLimitBytes, maxUploadBytes: this.opts.maxUploadBytes,
    });
    this.agent = agent;
    const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
      const route = routeOf(req.method ?? 'GET', req.url ?? '/');
      this.hits.set(route, (this.hits.get(route) ?? 0) + 1);
      agent.app(req, res);
    });
    server.on('upgrade', agent.onUpgrade);
    try {
      this.port = await listen(server, this.port || this.opts.port, this.opts.listenHost);
    } catch (err) {
      await agent.stop();
      throw err;
    }
    this.server = server;
    return this;
  }

  /** Stops the agent; the simulated machine keeps its VMs for the next start. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (this.agent) await stopServedAgent(this.agent, server ? () => close(server) : undefined);
    this.agent = undefined;
  }

  /**
   * A VM running on the simulated machine, as if made by an earlier agent: the agent takes it at its
   * next start (as the real agent adopts libvirt's domains).
   */
  async addVm(vm: SimVm): Promise<string> {
    const hv = this.hypervisor;
    if (!hv) throw new Error('addVm: start the simulated agent first');
    const req = VmCreateRequest.parse(vm);
    const id = req.id ?? randomBytes(6).toString('hex');
    const net = await hv.ensureNetwork();
    const taken = [...hv.domains.values()].map((d) => d.metadata);
    const metadata = {
      hostId: this.hostId, dataDir: '/var/lib/skyhost', id, name: req.name, ...(req.owner ? { owner: req.owner } : {}), template: req.template,
      vcpus: req.vcpus, memoryMiB: req.memoryMiB, mac: newMac(new Set(taken.map((m) => m.mac))), ip: freeIp(net, new Set(taken.map((m) => m.ip))),
      sshPort: this.ports.reserve(new Set(taken.map((m) => m.sshPort ?? 0))), console: this.templates.get(req.template)?.console ?? 'serial',
      network: net.name, createdAt: new Date().toISOString(),
    } as const;
    await hv.createFolder(id);
    await hv.addReservation(metadata.mac, metadata.ip);
    await hv.define({ metadata, accel: this.opts.hypervisor === 'kvm' ? 'kvm' : 'tcg', disk: true });
    await hv.start(id);
    return id;
  }

  /** The VM disappears from the simulated machine (as if removed by hand); the agent notices at once. */
  async dropVm(id: string): Promise<void> {
    await this.hypervisor?.destroy(id);
    await this.agent?.status.refresh();
  }

  /** Enrolls with a controller as the real agent does (`POST /api/enroll`). */
  async enroll(controllerUrl: string, joinToken?: string): Promise<EnrollResponse> {
    const body: EnrollRequest = {
      hostId: this.hostId, hostname: this.hostname, agentUrl: this.url, agentKey: this.key, version: VERSION,
      ...(joinToken ? { joinToken } : {}),
    };
    const res = await fetch(new URL('/api/enroll', controllerUrl), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`enroll of ${this.hostname} failed: HTTP ${res.status} ${text.slice(0, 500)}`);
    return EnrollResponse.parse(JSON.parse(text));
  }
}

/** Many simulated agents in this process, each on its own port. */
export class SimFleet {
  readonly agents: SimAgent[];

  private constructor(agents: SimAgent[]) {
    this.agents = agents;
  }

  /** Starts `count` agents; `options(i)` shapes agent i (e.g. a mix of strong and weak hosts). */
  static async start(count: number, options: (i: number) => SimAgentOptions = () => ({})): Promise<SimFleet> {
    const agents = Array.from({ length: count }, (_, i) => new SimAgent({ hostname: `sim-${String(i).padStart(4, '0')}`, ...options(i) }));
    const fleet = new SimFleet([]);
    try {
      for (const a of agents) fleet.agents.push(await a.start());
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  /** Enrolls every agent with the controller, `concurrency` at a time. */
  async enroll(controllerUrl: string, joinToken?: string, concurrency = 20): Promise<EnrollResponse[]> {
    const out: EnrollResponse[] = new Array(this.agents.length);
    let next = 0;
    const worker = async () => {
      while (next < this.agents.length) {
        const i = next++;
        out[i] = await this.agents[i]!.enroll(controllerUrl, joinToken);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, this.agents.length) }, worker));
    return out;
  }

  get vmCount(): number {
    return this.agents.reduce((s, a) => s + a.vms.size, 0);
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.agents.map((a) => a.stop()));
  }
}

/** `METHOD /route` with ids as `:id`, e.g. `POST /vms`, `GET /vms/:id`. */
function routeOf(method: string, url: string): string {
  const parts = url.split('?')[0]!.split('/').filter(Boolean);
  const shape = parts.map((p, i) => (i === 1 && (parts[0] === 'vms' || parts[0] === 'templates') ? ':id' : p));
  return `${method} /${shape.join('/')}`;
}

// As a program: a fleet for manual tries (`--count N`), enrolled when given a controller.
if (import.meta.main) {
  const { values } = parseArgs({ options: {
    count: { type: 'string', default: '10' }, controller: { type: 'string' }, 'join-token': { type: 'string' }, vms: { type: 'string', default: '0' },
    listen: { type: 'string', default: '127.0.0.1' },
  } });
  const fleet = await SimFleet.start(Number(values.count), () => ({ vms: Number(values.vms), listenHost: values.listen }));
  if (values.controller) await fleet.enroll(values.controller, values['join-token']);
  for (const a of fleet.agents) console.log(`${a.hostname} ${a.url} key=${a.key}`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()).once('SIGTERM', () => resolve()));
  await fleet.stop();
}
