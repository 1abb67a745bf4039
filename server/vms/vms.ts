// VM records and requests: validate, place (server/scheduler), reserve the placement at once, ask the
// host's agent to create it, record what happened. A failed agent call leaves the record in `error`
// with the reason, never a silent loss. Records are kept in memory (every list and page reads them)
// and written through to SQLite before any answer.
//
//   POST /api/vms ─▶ validate ─▶ Idempotency-Key seen? ─▶ place() ─▶ record `creating` + in-flight
//        ─▶ agent POST /vms ─▶ record running | error      (polls then keep the record current)
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { VmAction, VmInfo } from '../../wire/api.ts';
import { Conflict, InvalidField, NotFound, SkyError, Unavailable, fromZod, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { Row, Store } from '../db/store.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';
import { place, type InFlight, type Placement, type Policy } from '../scheduler/index.ts';
import type { Templates } from '../templates/templates.ts';
import type { User } from '../users/users.ts';
import { IdempotencyKey, VmRequest, type Vm } from './schemas.ts';

type VmState = Vm['state'];

/** A VM's record in memory. */
export interface VmRecord {
  id: string;
  name: string;
  owner: string;
  template: string;
  hostId: string;
  state: VmState;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
  ip?: string | undefined;
  ssh?: Vm['ssh'] | undefined;
  console: 'serial' | 'vnc';
  error?: string | undefined;
  createdAt: string;
  expiresAt?: string | undefined;
}

export interface VmServiceOptions {
  log: Logger;
  policy?: Policy;
  /** How long `create` waits for the agent before answering 202 `creating` (default 5000 ms). */
  answerWithinMs?: number;
}

export interface CreateAnswer {
  /** 201 (running), 202 (creating) or the agent's error status. */
  status: number;
  vm: Vm;
  placement?: Placement;
}

interface Pending {
  flight: InFlight;
  /** When the agent's create call ended (ms); a poll sent after this sees the VM. */
  settledAt?: number;
}

/** Records kept when the host's list lacks the VM: an error stays until deleted, a create may still land. */
const KEPT_WHEN_MISSING: ReadonlySet<VmState> = new Set(['error', 'creating']);

function rowToVm(r: Row): VmRecord {
  return {
    id: String(r.id), name: String(r.name), owner: String(r.owner), template: String(r.template), hostId: String(r.host_id ?? ''),
    state: r.state as VmState, vcpus: Number(r.vcpus), memoryMiB: Number(r.memory_mib), diskGiB: Number(r.disk_gib ?? 0),
    ip: r.ip ? String(r.ip) : undefined, ssh: r.ssh_json ? JSON.parse(String(r.ssh_json)) as Vm['ssh'] : undefined,
    console: r.console === 'vnc' ? 'vnc' : 'serial', error: r.error ? String(r.error) : undefined, createdAt: String(r.created_at),
    expiresAt: r.expires_at ? String(r.expires_at) : undefined,
  };
}

/** A new VM id: 12 lowercase letters and digits (matches the agent's `VmId`). */
export function newVmId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(12);
  let id = '';
  for (const b of bytes) id += alphabet[b % 36];
  return id;
}

/** `alpine-k3x9`: the template's name (made a valid VM name) and four random characters. */
function defaultName(template: string): string {
  return `${template.replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 50) || 'vm'}-${newVmId().slice(0, 4)}`;
}

/**
 * VMs. Every read and action takes the acting user: a user sees and acts on their own VMs only
 * (another user's VM is a 404), an admin on all.
 *
 *   const { status, vm } = await services.vms.create(user, { template: 'alpine' }, idempotencyKey);
 *   services.vms.list(user); services.vms.get(user, id); await services.vms.action(user, id, 'reboot');
 */
export class VmService {
  private readonly store: Store;
  private readonly registry: HostRegistry;
  private readonly templates: Templates;
  private readonly log: Logger;
  private readonly opts: VmServiceOptions;
  private readonly vms = new Map<string, VmRecord>();
  private readonly pending = new Map<string, Pending>();
  /** VMs deleted recently: a poll sent before the deletion must not adopt them again. */
  private readonly deletedAt = new Map<string, number>();
  private version = 0;
  private listCache = new Map<string, { version: number; json: Buffer; gzip?: Buffer }>();

  constructor(store: Store, registry: HostRegistry, templates: Templates, opts: VmServiceOptions) {
    this.store = store;
    this.registry = registry;
    this.templates = templates;
    this.log = opts.log;
    this.opts = opts;
    for (const r of store.all('SELECT * FROM vms')) {
      const vm = rowToVm(r);
      this.vms.set(vm.id, vm);
    }
    // One transaction per poll answer: one disk sync however many records change.
    registry.on('status', (host, status, startedAt) => store.tx(() => this.reconcile(host, status.vmList, startedAt, Date.parse(status.sampledAt))));
    registry.on('down', (host) => this.hostDown(host));
    registry.on('removed', (hostId) => this.hostRemoved(hostId));
    // VM views carry their host's name: a renamed host makes cached lists stale.
    registry.on('enrolled', () => this.version++);
  }

  // ---- reading ----

  /** The VMs `user` may see, newest first. */
  records(user: User, filter: { host?: string; state?: string; owner?: string } = {}): VmRecord[] {
    const out: VmRecord[] = [];
    for (const vm of this.vms.values()) {
      if (user.role !== 'admin' && vm.owner !== user.name) continue;
      if (filter.host && vm.hostId !== filter.host) continue;
      if (filter.state && vm.state !== filter.state) continue;
      if (filter.owner && vm.owner !== filter.owner) continue;
      out.push(vm);
    }
    return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : a.id.localeCompare(b.id)));
  }

  list(user: User, filter: { host?: string; state?: string; owner?: string } = {}): Vm[] {
    return this.records(user, filter).map((vm) => this.view(vm));
  }

  /**
   * `{"vms":[...]}` for `user` as bytes, serialized once per change of any VM and gzipped once on
   * demand (the API's hot path: a list of 2,000 VMs is ~0.8 MB of JSON, ~60 kB gzipped).
   */
  listJson(user: User, gzip = false): Buffer {
    const key = user.role === 'admin' ? '*' : user.name;
    let hit = this.listCache.get(key);
    if (!hit || hit.version !== this.version) {
      if (this.listCache.size > 1000) this.listCache.clear();
      hit = { version: this.version, json: Buffer.from(JSON.stringify({ vms: this.list(user) })) };
      this.listCache.set(key, hit);
    }
    if (!gzip) return hit.json;
    hit.gzip ??= gzipSync(hit.json, { level: 6 });
    return hit.gzip;
  }

  /** Changes whenever any VM record changes: an ETag for lists (`"vms-<n>"`). */
  listTag(): string {
    return `"vms-${this.version}"`;
  }

  /** A VM `user` may see, or a 404 (also for another user's VM: its existence is not disclosed). */
  require(user: User, id: string): VmRecord {
    const vm = this.vms.get(id);
    if (!vm || (user.role !== 'admin' && vm.owner !== user.name)) throw new NotFound(`VM "${id}"`);
    return vm;
  }

  get(user: User, id: string): Vm {
    return this.view(this.require(user, id));
  }

  /** Counts by state (for /metrics and the dashboard). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const vm of this.vms.values()) out[vm.state] = (out[vm.state] ?? 0) + 1;
    return out;
  }

  /** The API view of a record. */
  view(vm: VmRecord): Vm {
    const host = this.registry.record(vm.hostId);
    return {
      id: vm.id, name: vm.name, owner: vm.owner, template: vm.template, host: vm.hostId,
      ...(host ? { hostname: host.hostname } : {}),
      state: vm.state, vcpus: vm.vcpus, memoryMiB: vm.memoryMiB, diskGiB: vm.diskGiB,
      ...(vm.ip ? { ip: vm.ip } : {}), ...(vm.ssh ? { ssh: vm.ssh } : {}),
      consoleUrl: `/vms/${vm.id}`,
      console: vm.console, createdAt: vm.createdAt, ...(vm.expiresAt ? { expiresAt: vm.expiresAt } : {}),
      ...(vm.error ? { error: vm.error } : {}),
    };
  }

  // ---- creating ----

  /**
   * Requests a VM for `user`. Validates `body` (422 naming the field), answers a retried
   * `idempotencyKey` with the first answer, places the VM (503 `no_host_fits` with a reason per
   * host), records it `creating`, then calls the agent. Resolves once the agent answered or after
   * `answerWithinMs` (202 `creating`; the call goes on and the record follows).
   */
  async create(user: User, body: unknown, idempotencyKey?: string): Promise<CreateAnswer> {
    const parsed = VmRequest.safeParse(body);
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    let keyHash: string | undefined;
    if (idempotencyKey !== undefined) {
      if (!IdempotencyKey.safeParse(idempotencyKey).success) throw new InvalidField('Idempotency-Key', 'must be 1-255 visible ASCII characters');
      keyHash = createHash('sha256').update(JSON.stringify(req)).digest('hex');
      const seen = this.store.get('SELECT * FROM idempotency WHERE owner = ? AND key = ?', user.name, idempotencyKey);
      if (seen) return this.replay(user, seen, keyHash);
    }

    // From here to the insert nothing awaits: a concurrent request sees this one's reservation.
    const template = this.templates.find(req.template);
    const memoryMiB = req.memoryMiB ?? Math.max(256, template?.minMemoryMiB ?? 0);
    const diskGiB = req.diskGiB ?? Math.max(1, template?.diskGiB ?? 1);
    // Names are unique in the cluster: an agent refuses a second VM of the same name on a host.
    const taken = (n: string) => {
      for (const vm of this.vms.values()) if (vm.name === n) return true;
      return false;
    };
    let name = req.name ?? defaultName(req.template);
    for (let i = 0; !req.name && taken(name) && i < 10; i++) name = defaultName(req.template);
    if (taken(name)) {
      throw new Conflict(`a VM named "${name}" already exists: choose another name`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    const id = newVmId();
    const placement = place(
      { key: idempotencyKey ?? id, template: req.template, vcpus: req.vcpus, memoryMiB, diskGiB, needsKvm: template?.needsKvm ?? false,
        ...(template ? { minMemoryMiB: template.minMemoryMiB } : {}) },
      this.registry.records(),
      [...this.pending.values()].map((p) => p.flight),
      { policy: this.opts.policy ?? 'least-loaded' },
    );
    if (!placement.ok) {
      throw new SkyError(503, 'no_host_fits', placement.explanation, { rejected: placement.rejected });
    }
    const host = this.registry.require(placement.host);
    const now = new Date();
    const vm: VmRecord = {
      id, name, owner: user.name, template: req.template, hostId: host.id, state: 'creating', vcpus: req.vcpus,
      memoryMiB: Math.max(memoryMiB, template?.minMemoryMiB ?? 0), diskGiB, console: template?.console ?? 'serial', createdAt: now.toISOString(),
      expiresAt: req.leaseMinutes ? new Date(now.getTime() + req.leaseMinutes * 60_000).toISOString() : undefined,
    };
    this.store.tx(() => {
      this.insert(vm);
      if (idempotencyKey !== undefined) {
        this.store.run('INSERT INTO idempotency (owner, key, request_hash, vm_id, status, created_at) VALUES (?, ?, ?, ?, 202, ?)',
          user.name, idempotencyKey, keyHash!, id, vm.createdAt);
      }
    });
    this.pending.set(id, { flight: { hostId: host.id, vcpus: vm.vcpus, memoryMiB: vm.memoryMiB, diskGiB } });
    this.log.info(`VM ${name} placed on ${host.hostname}: ${placement.explanation}`, { vmId: id, hostId: host.id, owner: user.name });

    const call = this.callCreate(vm, host, req);
    const timer = new Promise<'wait'>((resolve) => setTimeout(() => resolve('wait'), this.opts.answerWithinMs ?? 5000).unref());
    const outcome = await Promise.race([call, timer]);
    let status = 202;
    if (outcome instanceof SkyError) status = outcome.status;
    else if (outcome === 'ok' && vm.state === 'running') status = 201;
    if (idempotencyKey !== undefined) {
      this.store.run('UPDATE idempotency SET status = ? WHERE owner = ? AND key = ?', status, user.name, idempotencyKey);
    }
    if (outcome instanceof SkyError) throw this.failure(outcome, vm);
    return { status, vm: this.view(vm), placement };
  }

  private replay(user: User, seen: Row, keyHash: string): CreateAnswer {
    if (seen.request_hash !== keyHash) {
      throw new SkyError(422, 'idempotency_key_reused', 'this Idempotency-Key was used with a different request body',
        { fields: [{ field: 'Idempotency-Key', message: 'already used for a different request' }] });
    }
    const vm = this.vms.get(String(seen.vm_id));
    if (!vm) throw new SkyError(410, 'gone', `the VM made for this Idempotency-Key (${String(seen.vm_id)}) was deleted`);
    const status = Number(seen.status);
    if (status >= 400) throw this.failure(new SkyError(status, 'agent_error', vm.error ?? 'the VM could not be created'), vm);
    return { status, vm: this.view(vm) };
  }

  private failure(err: SkyError, vm: VmRecord): SkyError {
    return new SkyError(err.status, err.code, `VM ${vm.name} could not be created: ${err.message}`, { vm: this.view(vm) });
  }

  /** The agent call of a create: resolves 'ok' or the error (also recorded on the VM). */
  private async callCreate(vm: VmRecord, host: HostRecord, req: ReturnType<typeof VmRequest.parse>): Promise<'ok' | SkyError> {
    try {
      const info = await this.registry.client(host.id).createVm({
        id: vm.id, name: vm.name, template: vm.template, vcpus: vm.vcpus, memoryMiB: vm.memoryMiB,
        // Without a size asked for, the agent gives the template's own.
        ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}),
        ...(req.sshKey ? { sshKey: req.sshKey } : {}), ...(req.userData ? { userData: req.userData } : {}),
        owner: vm.owner, ...(vm.expiresAt ? { expiresAt: vm.expiresAt } : {}),
      });
      const p = this.pending.get(vm.id);
      if (p) p.settledAt = Date.now();
      if (this.vms.get(vm.id) === vm) {
        this.apply(vm, info);
        this.log.info(`VM ${vm.name} created on ${host.hostname} (${vm.state})`, { vmId: vm.id, hostId: host.id });
      }
      return 'ok';
    } catch (err) {
      this.pending.delete(vm.id);
      const sky = toSkyError(err);
      try {
        if (this.vms.get(vm.id) === vm) {
          this.update(vm, { state: 'error', error: sky.message });
          this.log.error(`VM ${vm.name} could not be created on ${host.hostname}: ${sky.message}`, { vmId: vm.id, hostId: host.id });
        }
      } catch (writeErr) {
        // the store is closed (shutdown): the next start finds the record `creating` and reconciles it
        this.log.warn(`VM ${vm.name}: the outcome of its creation was not recorded: ${(writeErr as Error).message}`, { vmId: vm.id });
      }
      return sky;
    }
  }

  // ---- actions ----

  /** start | shutdown | poweroff | reboot, through the host's agent. */
  async action(user: User, id: string, action: VmAction): Promise<Vm> {
    const vm = this.require(user, id);
    if (vm.state === 'creating' || vm.state === 'deleting') throw new Conflict(`VM ${vm.name} is ${vm.state}`);
    const host = this.liveHost(vm);
    const info = await this.registry.client(host.id).vmAction(vm.id, action);
    if (info) this.apply(vm, info);
    else if (action === 'start' || action === 'reboot') this.update(vm, { state: 'running' });
    else if (action === 'poweroff') this.update(vm, { state: 'shutoff' });
    this.log.info(`VM ${vm.name}: ${action} by ${user.name}`, { vmId: vm.id, hostId: host.id });
    return this.view(vm);
  }

  /**
   * Deletes the VM on its host, then the record. A VM the agent does not know (it failed to
   * create, or vanished) just loses its record; an unreachable host is a 503 and changes nothing.
   */
  async remove(user: User, id: string): Promise<void> {
    const vm = this.require(user, id);
    if (vm.state === 'creating' && this.pending.has(id) && this.pending.get(id)!.settledAt === undefined) {
      throw new Conflict(`VM ${vm.name} is still being created: delete it when it is up`);
    }
    const host = this.registry.record(vm.hostId);
    if (host) {
      if (host.state === 'down') throw new Unavailable(`host ${host.hostname} is down: the VM cannot be deleted now`);
      const before = vm.state;
      this.update(vm, { state: 'deleting' });
      try {
        await this.registry.client(host.id).deleteVm(vm.id);
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status !== 404) {
          this.update(vm, { state: before });
          throw sky;
        }
      }
    }
    this.forget(vm, `VM ${vm.name} deleted by ${user.name}`);
  }

  /** Forgets Idempotency-Keys older than a day (run by the periodic job). */
  pruneIdempotencyKeys(now = new Date()): number {
    return this.store.run('DELETE FROM idempotency WHERE created_at < ?', new Date(now.getTime() - 86400_000).toISOString()).changes;
  }

  /** Deletes every VM whose lease ran out (run by the controller's periodic job). */
  async expireLeases(system: User, now = new Date()): Promise<number> {
    let n = 0;
    for (const vm of [...this.vms.values()]) {
      if (!vm.expiresAt || vm.expiresAt > now.toISOString() || vm.state === 'deleting' || vm.state === 'creating') continue;
      try {
        await this.remove(system, vm.id);
        n++;
      } catch (err) {
        this.log.warn(`lease of VM ${vm.name} ran out but it could not be deleted: ${(err as Error).message}`, { vmId: vm.id });
      }
    }
    return n;
  }

  private liveHost(vm: VmRecord): HostRecord {
    const host = this.registry.record(vm.hostId);
    if (!host) throw new Unavailable(`VM ${vm.name}'s host is no longer in the cluster`);
    if (host.state === 'down') throw new Unavailable(`host ${host.hostname} is down`);
    return host;
  }

  /** The agent target of a VM `user` may see (for the console proxy). */
  consoleTarget(user: User, id: string): { vm: VmRecord; host: HostRecord } {
    const vm = this.require(user, id);
    return { vm, host: this.liveHost(vm) };
  }

  // ---- keeping records in step with the hosts ----

  /**
   * A poll answered: the agent's VM list wins over the records of that host. A placement stops
   * counting as in flight once the host lists the VM and its sampled usage (memory, disk: sampled
   * every few seconds, unlike the live VM list) is newer than the creation, or 15 s after it
   * whatever the host's clock says.
   */
  private reconcile(host: HostRecord, list: VmInfo[], pollStartedAt: number, sampledAt: number): void {
    const seen = new Set<string>();
    const now = Date.now();
    for (const info of list) {
      seen.add(info.id);
      const vm = this.vms.get(info.id);
      const p = this.pending.get(info.id);
      if (p?.settledAt !== undefined && pollStartedAt > p.settledAt && (sampledAt > p.settledAt || now - p.settledAt > 15_000)) {
        this.pending.delete(info.id);
      }
      if (vm) {
        if (vm.state === 'deleting') continue;
        if (vm.hostId !== host.id) this.update(vm, { hostId: host.id });
        this.apply(vm, info);
      } else if ((this.deletedAt.get(info.id) ?? -Infinity) < pollStartedAt) {
        // Adopt a VM the records lack, unless it was deleted after this poll was sent.
        this.adopt(host, info);
      }
    }
    for (const vm of this.vms.values()) {
      if (vm.hostId !== host.id || seen.has(vm.id)) continue;
      const p = this.pending.get(vm.id);
      if (p && (p.settledAt === undefined || pollStartedAt <= p.settledAt)) continue;
      if (vm.state === 'creating' && Date.now() - Date.parse(vm.createdAt) < 5 * 60_000) continue;
      if (KEPT_WHEN_MISSING.has(vm.state)) {
        if (vm.state === 'creating') this.update(vm, { state: 'error', error: 'the host never reported this VM (creation was interrupted)' });
        continue;
      }
      this.pending.delete(vm.id);
      this.forget(vm, `VM ${vm.name} is gone from host ${host.hostname}: record removed`, 'warn');
    }
    for (const [id, t] of this.deletedAt) if (t < pollStartedAt - 60_000) this.deletedAt.delete(id);
  }

  private adopt(host: HostRecord, info: VmInfo): void {
    const owner = info.owner && this.store.get('SELECT 1 FROM users WHERE name = ?', info.owner) ? info.owner : 'admin';
    const vm: VmRecord = {
      id: info.id, name: info.name, owner, template: info.template, hostId: host.id, state: info.state, vcpus: info.vcpus,
      memoryMiB: info.memoryMiB, diskGiB: Math.ceil(info.diskGiB ?? 0), ip: info.ip, ssh: info.ssh, console: info.console,
      error: info.error, createdAt: info.createdAt, expiresAt: info.expiresAt,
    };
    this.insert(vm);
    this.log.info(`VM ${vm.name} found on host ${host.hostname}: record added`, { vmId: vm.id, hostId: host.id });
  }

  private hostDown(host: HostRecord): void {
    this.store.tx(() => {
      for (const vm of this.vms.values()) {
        if (vm.hostId === host.id && vm.state !== 'error' && vm.state !== 'unknown') this.update(vm, { state: 'unknown' });
      }
    });
  }

  private hostRemoved(hostId: string): void {
    this.store.tx(() => {
      for (const vm of [...this.vms.values()]) if (vm.hostId === hostId) this.forget(vm, `VM ${vm.name} forgotten with its host`);
    });
  }

  /** Copies what the agent reports into the record (writes only if something changed). */
  private apply(vm: VmRecord, info: VmInfo): void {
    const patch: Partial<VmRecord> = {};
    if (info.state !== vm.state) patch.state = info.state;
    if (info.ip !== vm.ip) patch.ip = info.ip;
    if (JSON.stringify(info.ssh) !== JSON.stringify(vm.ssh)) patch.ssh = info.ssh;
    if (info.vcpus !== vm.vcpus) patch.vcpus = info.vcpus;
    if (info.memoryMiB !== vm.memoryMiB) patch.memoryMiB = info.memoryMiB;
    if (info.console !== vm.console) patch.console = info.console;
    if (info.error !== vm.error && (info.error || vm.state !== 'error' || info.state !== 'error')) patch.error = info.error;
    if (Object.keys(patch).length > 0) this.update(vm, patch);
  }

  private insert(vm: VmRecord): void {
    this.store.run(`INSERT INTO vms (id, name, owner, template, host_id, state, vcpus, memory_mib, disk_gib, ip, ssh_json, console, error, created_at, expires_at, updated_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    vm.id, vm.name, vm.owner, vm.template, vm.hostId, vm.state, vm.vcpus, vm.memoryMiB, vm.diskGiB, vm.ip ?? null,
    vm.ssh ? JSON.stringify(vm.ssh) : null, vm.console, vm.error ?? null, vm.createdAt, vm.expiresAt ?? null, new Date().toISOString());
    this.vms.set(vm.id, vm);
    this.version++;
  }

  private update(vm: VmRecord, patch: Partial<VmRecord>): void {
    Object.assign(vm, patch);
    if (vm.state !== 'error' && patch.state !== undefined && patch.error === undefined) vm.error = undefined;
    this.store.run(`UPDATE vms SET host_id = ?, state = ?, vcpus = ?, memory_mib = ?, ip = ?, ssh_json = ?, console = ?, error = ?, updated_at = ? WHERE id = ?`,
      vm.hostId, vm.state, vm.vcpus, vm.memoryMiB, vm.ip ?? null, vm.ssh ? JSON.stringify(vm.ssh) : null, vm.console, vm.error ?? null,
      new Date().toISOString(), vm.id);
    this.version++;
  }

  private forget(vm: VmRecord, why: string, level: 'info' | 'warn' = 'info'): void {
    if (this.vms.get(vm.id) !== vm) return;
    this.store.run('DELETE FROM vms WHERE id = ?', vm.id);
    this.vms.delete(vm.id);
    this.pending.delete(vm.id);
    this.deletedAt.set(vm.id, Date.now());
    this.version++;
    this.log[level](why, { vmId: vm.id, hostId: vm.hostId });
  }
}
