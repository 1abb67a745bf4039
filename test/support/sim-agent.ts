// A simulated agent for scale (fakes are for speed and scale, never to claim the real path
// works). It speaks the agent's wire contract (wire/api.ts: /healthz, /status, /vms, actions,
// /templates, consoles, bearer key) from memory: no libvirt, no disks, no guest. Hundreds run in one
// process, each on its own loopback port, so a controller sees each as a distinct agent URL.
//
//   const fleet = await SimFleet.start(200, (i) => ({ memoryMiB: 16384 }));
//   await fleet.enroll(controllerUrl, joinToken);   // POST /api/enroll for every agent
//   ... fleet.agents[0].url, fleet.agents[0].key ...
//   await fleet.stop();
//
// Run a fleet from a shell: `npx node test/support/sim-agent.ts --count 50 [--controller URL --join-token T]`.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';
import type { z } from 'zod';
import {
  EnrollResponse, TemplateImportRequest, TemplateName, VmAction, VmActionRequest, VmCreateRequest, VmId,
  type EnrollRequest, type HostStatus, type Hypervisor, type TemplateInfo, type VmInfo,
} from '../../wire/api.ts';
import {
  BadRequest, Conflict, fromZod, InvalidField, NotFound, PayloadTooLarge, SkyError, toSkyError, Unauthorized, Unavailable,
} from '../../base/errors.ts';
import { close, listen } from '../../base/http.ts';
import { admitVm } from '../../agent/admission.ts';
import { VERSION } from '../../base/version.ts';

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
  hypervisor?: Hypervisor;
  /** Templates present (default: alpine and a KVM-only desktop). */
  templates?: TemplateInfo[];
  /** VMs the agent already runs when it starts. */
  vms?: number;
  /** A create answers 201 `running` after this many ms (default 0). */
  createDelayMs?: number;
  /** Largest JSON body (default 512 KiB, as the real agent). */
  bodyLimitBytes?: number;
  /** Largest template upload (default 64 MiB: the simulation only hashes it). */
  maxUploadBytes?: number;
  /** Listening address (default 127.0.0.1) and port (default 0: any free port). */
  listenHost?: string;
  port?: number;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SHA_EMPTY = createHash('sha256').digest('hex');

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
  simTemplate('alpine', { os: 'alpine', description: 'Alpine Linux, serial console' }),
  simTemplate('desktop', { os: 'ubuntu-desktop', minMemoryMiB: 2048, console: 'vnc', needsKvm: true, description: 'Ubuntu desktop' }),
];

interface SimVm {
  info: VmInfo;
  diskGiB: number;
}

/** One simulated agent on its own loopback port. */
export class SimAgent {
  readonly hostId: string;
  readonly hostname: string;
  readonly key: string;
  readonly opts: Required<Omit<SimAgentOptions, 'hostId' | 'hostname' | 'key' | 'templates' | 'vms'>>;
  readonly templates = new Map<string, TemplateInfo>();
  readonly vms = new Map<string, SimVm>();
  /** Requests answered, per `METHOD /route`, for tests and the bench. */
  readonly hits = new Map<string, number>();
  private server: Server | undefined;
  private wss: WebSocketServer | undefined;
  private port = 0;
  private nextSshPort = 22000;
  private readonly started = Date.now();

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
    for (const t of o.templates ?? DEFAULT_TEMPLATES) this.templates.set(t.name, t);
    for (let i = 0; i < (o.vms ?? 0); i++) {
      const template = this.templates.has('alpine') ? 'alpine' : [...this.templates.keys()][0];
      if (!template) break;
      this.addVm(VmCreateRequest.parse({ name: `vm-${i}`, template, owner: `student${i % 30}` }));
    }
  }

  /** `http://127.0.0.1:PORT` once started. */
  get url(): string {
    return `http://${this.opts.listenHost}:${this.port}`;
  }

  async start(): Promise<this> {
    const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => sendError(res, err));
    });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    this.port = await listen(server, this.opts.port, this.opts.listenHost);
    this.server = server;
    return this;
  }

  async stop(): Promise<void> {
    for (const c of this.wss?.clients ?? []) c.terminate();
    this.wss?.close();
    if (this.server) await close(this.server);
    this.server = undefined;
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
    const json: unknown = await res.json().catch(() => undefined);
    if (!res.ok) throw new Error(`enroll of ${this.hostname} failed: HTTP ${res.status} ${JSON.stringify(json)}`);
    return EnrollResponse.parse(json);
  }

  /** `GET /status` as the real agent answers it, from the simulated state. */
  status(): HostStatus {
    let running = 0;
    let vcpus = 0;
    let usedMiB = 0;
    let diskUsed = 0;
    for (const { info, diskGiB } of this.vms.values()) {
      diskUsed += diskGiB * 0.1; // overlays hold only what the guest wrote
      if (info.state !== 'running' && info.state !== 'creating') continue;
      running += 1;
      vcpus += info.vcpus;
      usedMiB += info.memoryMiB;
    }
    const o = this.opts;
    return {
      hostId: this.hostId,
      hostname: this.hostname,
      version: VERSION,
      cpu: { model: 'Simulated CPU', cores: Math.max(1, o.threads >> 1), threads: o.threads, loadPct: Math.min(100, (100 * vcpus) / (4 * o.threads)), load1: vcpus / 4 },
      memory: { totalMiB: o.memoryMiB, freeMiB: Math.max(0, o.memoryMiB - o.osMemoryMiB - usedMiB), usedByVmsMiB: usedMiB },
      disk: { path: '/var/lib/skyhost', totalGiB: o.diskGiB, freeGiB: Math.max(0, Math.round((o.diskGiB - 20 - diskUsed) * 10) / 10) },
      gpus: [],
      vms: { running, total: this.vms.size, vcpus },
      hypervisor: o.hypervisor,
      ...(o.hypervisor !== 'kvm' ? { hypervisorReason: 'simulated host without KVM' } : {}),
      libvirtVersion: 'simulated',
      qemuVersion: 'simulated',
      templates: [...this.templates.values()],
      vmList: [...this.vms.values()].map((v) => v.info),
      uptimeS: Math.round((Date.now() - this.started) / 1000),
      sampledAt: new Date().toISOString(),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const method = req.method ?? 'GET';
    const parts = url.pathname.split('/').filter(Boolean).map(safeDecode);
    const route = routeOf(method, parts);
    this.hits.set(route, (this.hits.get(route) ?? 0) + 1);

    if (method === 'GET' && url.pathname === '/healthz') return send(res, 200, { ok: true, hostId: this.hostId });
    if (!keyMatches(req.headers.authorization, this.key)) throw new Unauthorized('missing or wrong agent key (Authorization: Bearer KEY)');

    const [head, id, action, extra] = parts;
    if (extra !== undefined) throw notFound(method, url.pathname);
    if (head === 'status' && id === undefined && method === 'GET') return send(res, 200, this.status());
    if ((head === 'vms' || head === 'start-vm') && id === undefined) {
      if (method === 'POST') return send(res, 201, await this.create(await this.jsonBody(req)));
      if (method === 'GET' && head === 'vms') return send(res, 200, [...this.vms.values()].map((v) => v.info));
    }
    if (head === 'vms' && id !== undefined) {
      if (action === undefined && method === 'GET') return send(res, 200, this.mustGet(id).info);
      if (action === undefined && method === 'DELETE') {
        this.mustGet(id);
        this.vms.delete(id);
        return send(res, 204);
      }
      if ((action === 'console' || action === 'vnc') && method === 'GET') {
        this.mustGet(id);
        return send(res, 426, { error: { code: 'upgrade_required', message: 'this is a WebSocket endpoint' } }, { Upgrade: 'websocket' });
      }
      if (action !== undefined && method === 'POST') {
        const vm = this.mustGet(id);
        const a = VmAction.safeParse(action);
        if (!a.success) throw new NotFound(`action ${JSON.stringify(action.slice(0, 32))} (use start, shutdown, poweroff or reboot)`);
        parse(VmActionRequest, await this.jsonBody(req));
        return send(res, 200, this.act(vm, a.data));
      }
    }
    if (head === 'templates' && action === undefined) {
      if (id === undefined && method === 'GET') return send(res, 200, [...this.templates.values()]);
      if (id === undefined && method === 'POST') return send(res, 201, await this.importTemplate(req, url));
      if (id !== undefined && method === 'DELETE') {
        if (!TemplateName.safeParse(id).success || !this.templates.has(id)) throw new NotFound(`template ${JSON.stringify(id.slice(0, 64))}`);
        const users = [...this.vms.values()].filter((v) => v.info.template === id).map((v) => v.info.name);
        if (users.length > 0) throw new Conflict(`template ${id} is used by VM(s) ${users.join(', ')}: delete them first`, { vms: users });
        this.templates.delete(id);
        return send(res, 204);
      }
    }
    throw notFound(method, url.pathname);
  }

  private mustGet(id: string): SimVm {
    const vm = VmId.safeParse(id).success ? this.vms.get(id) : undefined;
    if (!vm) throw new NotFound(`VM ${JSON.stringify(id.slice(0, 64))}`);
    return vm;
  }

  /** The same checks, in the same order and with the same answers, as the real agent's create. */
  private async create(body: unknown): Promise<VmInfo> {
    const req = parse(VmCreateRequest, body);
    const o = this.opts;
    const names = [...this.vms.values()].map((vm) => vm.info.name);
    admitVm(req, { hypervisor: o.hypervisor, template: this.templates.get(req.template), ids: new Set(this.vms.keys()), names });
    // Where a real host's QEMU would fail to allocate the guest's memory.
    if (this.status().memory.freeMiB < req.memoryMiB) throw new Unavailable(`not enough free memory for ${req.memoryMiB} MiB on ${this.hostname}`, undefined, 'insufficient_memory');
    const vm = this.addVm(req, o.createDelayMs > 0 ? 'creating' : 'running');
    if (o.createDelayMs > 0) {
      await new Promise((r) => setTimeout(r, o.createDelayMs));
      vm.info.state = 'running';
    }
    return vm.info;
  }

  private addVm(req: z.output<typeof VmCreateRequest>, state: VmInfo['state'] = 'running'): SimVm {
    const id = req.id ?? randomBytes(6).toString('hex');
    const t = this.templates.get(req.template);
    const n = this.vms.size + 2;
    const sshPort = this.nextSshPort++;
    const info: VmInfo = {
      id,
      name: req.name,
      ...(req.owner ? { owner: req.owner } : {}),
      template: req.template,
      state,
      vcpus: req.vcpus,
      memoryMiB: req.memoryMiB,
      ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}),
      mac: `52:54:00:${hex2(n >> 16)}:${hex2(n >> 8)}:${hex2(n)}`,
      ip: `10.77.${(n >> 8) & 255}.${n & 255}`,
      ssh: { host: this.opts.listenHost, port: sshPort, command: `ssh -p ${sshPort} sky@${this.opts.listenHost}` },
      console: t?.console ?? 'serial',
      hypervisor: this.opts.hypervisor,
      createdAt: new Date().toISOString(),
      ...(req.expiresAt ? { expiresAt: req.expiresAt } : {}),
    };
    const vm = { info, diskGiB: req.diskGiB ?? 2 };
    this.vms.set(id, vm);
    return vm;
  }

  private act(vm: SimVm, action: VmAction): VmInfo {
    const now = vm.info.state;
    if (now === 'deleting') throw new Conflict(`VM ${vm.info.id} is being deleted`);
    if (action === 'reboot' && now !== 'running') throw new Conflict(`VM ${vm.info.id} is not running (it is ${now}): start it instead`);
    if (action === 'start' || action === 'reboot') vm.info.state = 'running';
    else vm.info.state = 'shutoff';
    return vm.info;
  }

  private async importTemplate(req: IncomingMessage, url: URL): Promise<TemplateInfo> {
    const isUpload = (req.headers['content-type'] ?? '').split(';')[0]!.trim() === 'application/octet-stream';
    const desc = parse(TemplateImportRequest, isUpload ? importQuery(url) : await this.jsonBody(req));
    if (!isUpload && !desc.url) throw new InvalidField('url', 'give a URL to download (with sha256), or upload the image as application/octet-stream');
    if (desc.url && !desc.sha256) throw new InvalidField('sha256', 'is required with url');
    if (this.templates.has(desc.name)) throw new SkyError(409, 'conflict', `template ${desc.name} already exists`);
    const { sha256, bytes } = isUpload ? await hashStream(req, this.opts.maxUploadBytes) : await hashDownload(desc.url!, this.opts.maxUploadBytes);
    if (bytes === 0) throw new BadRequest('the upload is empty');
    if (desc.sha256 && desc.sha256 !== sha256) {
      throw new SkyError(422, 'checksum_mismatch', `disk: sha256 is ${sha256}, expected ${desc.sha256}`, { fields: [{ field: 'sha256', message: 'does not match' }] });
    }
    const t = simTemplate(desc.name, {
      os: desc.os ?? 'unknown',
      ...(desc.description ? { description: desc.description } : {}),
      minMemoryMiB: desc.minMemoryMiB ?? 128,
      console: desc.console ?? 'serial',
      needsKvm: desc.needsKvm ?? false,
      files: [{ role: 'disk', file: 'disk.qcow2', bytes, sha256, format: 'raw', virtualBytes: bytes }],
      createdAt: new Date().toISOString(),
    });
    this.templates.set(t.name, t);
    return t;
  }

  /** The request's JSON body, `{}` when it is not JSON (as express.json() leaves it). */
  private async jsonBody(req: IncomingMessage): Promise<unknown> {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const raw = await readBody(req, this.opts.bodyLimitBytes);
    if (type !== 'application/json' || raw.length === 0) return {};
    try {
      return JSON.parse(raw.toString('utf8'));
    } catch (err) {
      throw new BadRequest(`request body could not be read: ${(err as Error).message}`);
    }
  }

  /** Serial console: a WebSocket that greets and echoes what is typed, as a shell prompt would. */
  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    try {
      if (!keyMatches(req.headers.authorization, this.key)) throw new Unauthorized('missing or wrong agent key (Authorization: Bearer KEY)');
      const m = /^\/vms\/([^/]+)\/(console|vnc)$/.exec(new URL(req.url ?? '/', 'http://agent').pathname);
      if (!m) throw new NotFound('WebSocket route');
      const vm = this.mustGet(safeDecode(m[1]!));
      if (m[2] === 'vnc') throw new Conflict(`VM ${vm.info.id} is simulated: it has no graphical console`);
      this.wss!.handleUpgrade(req, socket, head, (ws) => {
        ws.send(Buffer.from(`\r\nSimulated VM ${vm.info.name} (${vm.info.id}) on ${this.hostname}\r\n# `));
        ws.on('message', (data: Buffer) => ws.send(Buffer.from(data.toString('utf8').replace(/\r/g, '\r\n# '))));
      });
    } catch (err) {
      const sky = toSkyError(err);
      const body = JSON.stringify(sky.toBody());
      socket.end(`HTTP/1.1 ${sky.status} ${sky.code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    }
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

/** Whether an Authorization header carries the key (compared in constant time). */
function keyMatches(header: string | undefined, key: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (!m) return false;
  return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), createHash('sha256').update(key).digest());
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) throw fromZod(r.error);
  return r.data;
}

function notFound(method: string, path: string): NotFound {
  return new NotFound(`${method} ${path.slice(0, 200)}`);
}

function routeOf(method: string, parts: string[]): string {
  const shape = parts.map((p, i) => (i === 1 && (parts[0] === 'vms' || parts[0] === 'templates') ? ':id' : p));
  return `${method} /${shape.join('/')}`;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function hex2(n: number): string {
  return (n & 255).toString(16).padStart(2, '0');
}

function importQuery(url: URL): unknown {
  const out: Record<string, unknown> = {};
  for (const k of new Set(url.searchParams.keys())) {
    const all = url.searchParams.getAll(k);
    if (all.length !== 1) throw new InvalidField(k, 'must be given once');
    const v = all[0]!;
    out[k] = k === 'minMemoryMiB' && /^\d+$/.test(v) ? Number(v) : k === 'needsKvm' && (v === 'true' || v === 'false') ? v === 'true' : v;
  }
  return out;
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers['content-length'] ?? 0) > limit) {
    req.resume();
    throw new PayloadTooLarge(`${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let seen = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    seen += chunk.length;
    if (seen > limit) {
      req.resume();
      throw new PayloadTooLarge(`${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function hashStream(src: AsyncIterable<Uint8Array>, limit: number): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of src) {
    bytes += chunk.length;
    if (bytes > limit) throw new PayloadTooLarge(`${limit} bytes`);
    h.update(chunk);
  }
  return { sha256: h.digest('hex'), bytes };
}

async function hashDownload(url: string, limit: number): Promise<{ sha256: string; bytes: number }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) }).catch((err: unknown) => {
    throw new SkyError(502, 'download_failed', `could not download ${url}: ${(err as Error).message}`);
  });
  if (!res.ok || !res.body) throw new SkyError(502, 'download_failed', `could not download ${url}: HTTP ${res.status}`);
  return hashStream(res.body as AsyncIterable<Uint8Array>, limit);
}

function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
  if (body === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers }).end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const sky = toSkyError(err);
  send(res, sky.status, sky.toBody());
}

// As a program: a fleet for manual tries (`--count N`), enrolled when given a controller.
if (import.meta.main) {
  const { values } = parseArgs({ options: { count: { type: 'string', default: '10' }, controller: { type: 'string' }, 'join-token': { type: 'string' }, vms: { type: 'string', default: '0' } } });
  const fleet = await SimFleet.start(Number(values.count), () => ({ vms: Number(values.vms) }));
  if (values.controller) await fleet.enroll(values.controller, values['join-token']);
  for (const a of fleet.agents) console.log(`${a.hostname} ${a.url} key=${a.key}`);
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()).once('SIGTERM', () => resolve()));
  await fleet.stop();
}
