// VM records and requests: validate, place (server/scheduler), reserve the placement at once, ask the
// host's agent to create it, record what happened. A failed agent call leaves the record in `error`
// with the reason, never a silent loss. Polls keep the records in step (reconcile.ts decides, this
// file applies); the controller is the authority on which VMs exist, where, and whose they are.
//
//   POST /api/vms ─▶ validate ─▶ Idempotency-Key seen? ─▶ place() ─▶ record `creating` + create operation
//        ─▶ agent POST /vms ─▶ record running | error      (polls then keep the record current)
import { randomBytes } from 'node:crypto';
import {
  effectiveMemory, IdempotencyKey, VmName, VmRequest, type VmAction, type VmInfo, type VmStranger, type VmView,
} from '../../wire/api.ts';
import { Conflict, Forbidden, InvalidField, NotFound, SkyError, Unavailable, fromZod, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { compareCodeUnits } from '../../base/order.ts';
import type { Store } from '../db/store.ts';
import { hostNames } from '../hosts/names.ts';
import { controllerAddressOf, reachableSsh } from '../install.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';
import { place, type InFlight, type Placement, type Policy } from '../scheduler/index.ts';
import type { TemplateDistributor } from '../templates/distribute.ts';
import type { Templates } from '../templates/templates.ts';
import type { User, Users } from '../users/users.ts';
import { diskSizeRefusal } from './disk-actions.ts';
import { IdempotencyKeys, requestHash, type KeyUse } from './idempotency.ts';
import { deletionTime, extendedExpiry, leaseDefaultsOf, leaseMinutesFor, minutesText, type PolicyStore } from './leases.ts';
import type { Quotas } from './quotas.ts';
import { hostDown, INTERRUPTED_CREATE, reconcile, reportedPatch, type Change, type CreateOperation, type Operation } from './reconcile.ts';
import { VmRecords, type LeasePatch, type VmPatch, type VmRecord } from './records.ts';

export type { VmRecord } from './records.ts';

/** Who the users are: VmService only looks names up (server/users `Users` fits). */
export type UserLookup = Pick<Users, 'get'>;

export interface VmServiceOptions {
  log: Logger;
  users: UserLookup;
  policy?: Policy;
  /** How long `create` waits for the agent before answering 202 `creating` (default 5000 ms). */
  answerWithinMs?: number;
  /** Pulls a template to a host lacking it before the VM is created there (server/templates/distribute.ts). */
  distribute?: Pick<TemplateDistributor, 'pullableBytes' | 'pull'>;
  /** Lease defaults and maximums (server/vms/leases.ts); without them a VM's lease is only what its request asks. */
  policies?: Pick<PolicyStore, 'current'>;
  /** Checked before placement (server/vms/quotas.ts): 403 `quota_exceeded`. */
  quotas?: Pick<Quotas, 'check'>;
  /** Whether a user may see and act on a VM (server/classes/access.ts); default: an admin, or the owner. */
  canAct?: (user: User, vm: VmRecord) => boolean;
}

/** What an in-process caller adds to a request (a class session). */
export interface CreateOptions {
  /** The class the VM is for: it counts against the class's quota and takes the class's lease default. */
  classId?: string;
  /** Who asks when it is not the owner (a teacher starting a class session): a quota refusal then names the owner, not "you". */
  actor?: string;
}

export interface CreateAnswer {
  /** 201 (running), 202 (creating) or the agent's error status. */
  status: number;
  vm: VmView;
  placement?: Placement;
}

/** A stranger as kept: what the API shows, and the host's report it came from (for adoption). */
interface Stranger {
  view: VmStranger;
  info: VmInfo;
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
 * VMs. Every read and action takes the acting user: a user sees and acts on the VMs `canAct` allows
 * (server/classes/access.ts: their own, a teacher their classes', an admin all); any other VM is a 404.
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
  private readonly stored: VmRecords;
  private readonly keys: IdempotencyKeys;
  /** Creates and deletes sent to agents whose outcome a poll may not contradict yet (by VM id). */
  private readonly operations = new Map<string, Operation>();
  /** VMs each host reports that are not its to report, by host id then VM id. */
  private readonly strangerLists = new Map<string, Map<string, Stranger>>();
  /** Host names are in VM views: a changed host makes cached lists stale. */
  private hostChanges = 0;
  /** What a VM being created waits for, e.g. `pulling 43%` (in memory: it only lasts the create). */
  private readonly progress = new Map<string, string>();
  private progressChanges = 0;

  constructor(store: Store, registry: HostRegistry, templates: Templates, opts: VmServiceOptions) {
    this.store = store;
    this.registry = registry;
    this.templates = templates;
    this.log = opts.log;
    this.opts = opts;
    this.stored = new VmRecords(store);
    this.keys = new IdempotencyKeys(store);
    registry.on('status', (host, status, sentAt) => {
      const changes = reconcile(this.stored, { hostId: host.id, sentAt, sample: status.sampledAt, vms: status.vmList }, this.operations, Date.now(), (id) => this.hostLabel(id));
      this.applyReport(host, changes);
    });
    registry.on('down', (host) => this.store.tx(() => this.apply(hostDown(this.stored, host.id, this.hostLabel(host.id)))));
    registry.on('removed', (hostId) => this.hostRemoved(hostId));
    registry.on('enrolled', () => this.hostChanges++);
  }

  private canAct(user: User, vm: VmRecord): boolean {
    return this.opts.canAct ? this.opts.canAct(user, vm) : user.role === 'admin' || vm.owner === user.name;
  }

  private get version(): number {
    return this.stored.version + this.hostChanges + this.progressChanges;
  }

  // ---- reading ----

  /** The VMs `user` may see, newest first. */
  records(user: User, filter: { host?: string; state?: string; owner?: string } = {}): VmRecord[] {
    const out: VmRecord[] = [];
    for (const vm of filter.host !== undefined ? this.stored.onHost(filter.host) : this.stored.values()) {
      if (!this.canAct(user, vm)) continue;
      if (filter.state && vm.state !== filter.state) continue;
      if (filter.owner && vm.owner !== filter.owner) continue;
      out.push(vm);
    }
    return out.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : compareCodeUnits(a.id, b.id)));
  }

  /** Every record, in no order: for sums and counts (quotas), where sorting 10,000 records per request is waste. */
  all(): Iterable<Readonly<VmRecord>> {
    return this.stored.values();
  }

  list(user: User, filter: { host?: string; state?: string; owner?: string } = {}): VmView[] {
    return this.records(user, filter).map((vm) => this.view(vm));
  }

  /** Changes whenever any VM record changes: an ETag for lists (`"vms-<n>"`). */
  listTag(): string {
    return `"vms-${this.version}"`;
  }

  /** A VM `user` may see, or a 404 (also for another user's VM: its existence is not disclosed). */
  require(user: User, id: string): VmRecord {
    const vm = this.stored.get(id);
    if (!vm || !this.canAct(user, vm)) throw new NotFound(`VM "${id}"`);
    return vm;
  }

  get(user: User, id: string): VmView {
    return this.view(this.require(user, id));
  }

  /** Counts by state (for /metrics and the dashboard). */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const vm of this.stored.values()) out[vm.state] = (out[vm.state] ?? 0) + 1;
    return out;
  }

  /** The API view of a record. */
  view(vm: VmRecord): VmView {
    const host = this.registry.record(vm.hostId);
    return {
      id: vm.id, name: vm.name, template: vm.template, vcpus: vm.vcpus, memoryMiB: vm.memoryMiB, diskGiB: vm.diskGiB,
      owner: vm.owner, host: vm.hostId, ...(host ? { hostname: hostNames({ store: this.store, hosts: this.registry }).label(host.id) } : {}), state: vm.state,
      ...(vm.ip ? { ip: vm.ip } : {}), ...(vm.ssh ? { ssh: reachableSsh(vm.ssh, controllerAddressOf(this.registry)) } : {}),
      consoleUrl: `/vms/${vm.id}`,
      console: vm.console, createdAt: vm.createdAt, ...(vm.expiresAt ? { expiresAt: vm.expiresAt } : {}),
      ...this.leaseView(vm),
      ...(vm.error ? { error: vm.error } : {}), ...(this.progress.has(vm.id) ? { progress: this.progress.get(vm.id)! } : {}),
    };
  }

  /** The lease marks of a VM's view: warned, ended, when it will be deleted, stopped since. */
  private leaseView(vm: VmRecord): Partial<VmView> {
    const policies = this.opts.policies?.current();
    const deleteAt = vm.leaseEndedAt && policies ? deletionTime(vm, policies.lease) : undefined;
    return {
      ...(vm.leaseWarnedAt ? { leaseWarnedAt: vm.leaseWarnedAt } : {}), ...(vm.leaseEndedAt ? { leaseEndedAt: vm.leaseEndedAt } : {}),
      ...(deleteAt ? { deleteAt } : {}), ...(vm.stoppedSince ? { stoppedSince: vm.stoppedSince } : {}),
    };
  }

  /** VMs that hosts report but the controller did not place there (admins only), oldest first. */
  strangers(user: User, hostId?: string): VmStranger[] {
    if (user.role !== 'admin') throw new Forbidden('only an admin sees the VMs hosts report that are not theirs');
    const lists = hostId !== undefined ? [this.strangerLists.get(hostId)] : [...this.strangerLists.values()];
    return lists.flatMap((l) => (l ? [...l.values()].map((s) => s.view) : [])).sort((a, b) => compareCodeUnits(a.firstSeen, b.firstSeen) || compareCodeUnits(a.id, b.id));
  }

  // ---- creating ----

  /**
   * Requests a VM for `user`. Validates `body` (422 naming the field), answers a retried
   * `idempotencyKey` with the first answer, places the VM (503 `no_host_fits` with a reason per
   * host), records it `creating`, then calls the agent. Resolves once the agent answered or after
   * `answerWithinMs` (202 `creating`; the call goes on and the record follows).
   */
  async create(user: User, body: unknown, idempotencyKey?: string, opts: CreateOptions = {}): Promise<CreateAnswer> {
    const parsed = VmRequest.safeParse(body);
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    let hash: string | undefined;
    if (idempotencyKey !== undefined) {
      if (!IdempotencyKey.safeParse(idempotencyKey).success) throw new InvalidField('Idempotency-Key', 'must be 1-255 visible ASCII characters');
      hash = requestHash(req);
      const seen = this.keys.find(user.name, idempotencyKey);
      const dead = seen && this.interrupted(seen, hash);
      if (seen && !dead) return this.replay(seen, hash);
      if (dead) {
        // Its create never reached the host (the controller stopped mid-create): the retry makes the VM, not the old failure.
        this.store.tx(() => {
          this.forget(dead, `VM ${dead.name}: its creation was interrupted; the retried Idempotency-Key makes it anew`);
          this.keys.forget(user.name, idempotencyKey);
        });
      }
    }

    // From here to the insert nothing awaits: a concurrent request sees this one's reservation.
    const template = this.templates.find(req.template);
    const noDiskSize = diskSizeRefusal(req.template, template?.kind, req.diskGiB);
    if (noDiskSize) throw noDiskSize;
    const memoryMiB = effectiveMemory(req.memoryMiB, template);
    const diskGiB = req.diskGiB ?? Math.max(1, template?.diskGiB ?? 1);
    // Names are unique in the cluster: an agent refuses a second VM of the same name on a host.
    let name = req.name ?? defaultName(req.template);
    for (let i = 0; !req.name && this.stored.nameTaken(name) && i < 10; i++) name = defaultName(req.template);
    if (this.stored.nameTaken(name)) {
      throw new Conflict(`a VM named "${name}" already exists: choose another name`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    // Lease and quota before placement: a refused request reserves nothing.
    const policies = this.opts.policies?.current();
    const leaseMinutes = policies
      ? leaseMinutesFor(policies.lease, user.role, req.leaseMinutes, leaseDefaultsOf(this.store, req.template, opts.classId))
      : req.leaseMinutes;
    this.opts.quotas?.check(user, { vcpus: req.vcpus, memoryMiB, diskGiB }, { classId: opts.classId, ...(opts.actor !== undefined ? { actor: opts.actor } : {}) });
    const id = newVmId();
    const templateBytes = this.opts.distribute?.pullableBytes(req.template);
    const placement = place(
      { key: idempotencyKey ?? id, template: req.template, vcpus: req.vcpus, memoryMiB, diskGiB, needsKvm: template?.needsKvm ?? false,
        ...(template ? { minMemoryMiB: template.minMemoryMiB } : {}), ...(templateBytes !== undefined ? { templateBytes } : {}) },
      this.registry.records(),
      this.inFlight(),
      { policy: this.opts.policy ?? 'least-loaded' },
    );
    if (!placement.ok) {
      const names = hostNames({ store: this.store, hosts: this.registry });
      throw new SkyError(503, 'no_host_fits', placement.explanation, { rejected: placement.rejected.map((r) => ({ ...r, hostname: names.label(r.host) })) });
    }
    const host = this.registry.require(placement.host);
    const now = new Date();
    const vm: VmRecord = {
      id, name, owner: user.name, template: req.template, hostId: host.id, state: 'creating', vcpus: req.vcpus,
      memoryMiB, diskGiB, console: template?.console ?? 'serial', createdAt: now.toISOString(),
      expiresAt: leaseMinutes ? new Date(now.getTime() + leaseMinutes * 60_000).toISOString() : undefined,
      ...(opts.classId !== undefined ? { classId: opts.classId } : {}),
    };
    this.store.tx(() => {
      this.stored.insert(vm);
      if (idempotencyKey !== undefined) this.keys.remember(user.name, idempotencyKey, hash!, id, vm.createdAt);
    });
    this.operations.set(id, { kind: 'create', hostId: host.id, sentAt: Date.now(), reserved: { vcpus: vm.vcpus, memoryMiB, diskGiB } });
    this.log.info(`VM ${name} placed on ${this.hostLabel(host.id)}: ${placement.explanation}`, { vmId: id, hostId: host.id, owner: user.name });

    const call = placement.pull && this.opts.distribute ? this.pullThenCreate(vm, host, req) : this.callCreate(vm, host, req);
    const timer = new Promise<'wait'>((resolve) => setTimeout(() => resolve('wait'), this.opts.answerWithinMs ?? 5000).unref());
    const outcome = await Promise.race([call, timer]);
    let status = 202;
    if (outcome instanceof SkyError) status = outcome.status;
    else if (outcome === 'ok' && vm.state === 'running') status = 201;
    if (idempotencyKey !== undefined) this.keys.answered(user.name, idempotencyKey, status);
    if (outcome instanceof SkyError) throw this.failure(outcome, vm);
    return { status, vm: this.view(vm), placement };
  }

  /** The reservations of creates whose VM the hosts' usage figures do not show yet (for the scheduler). */
  private inFlight(): InFlight[] {
    const out: InFlight[] = [];
    for (const op of this.operations.values()) if (op.kind === 'create') out.push({ hostId: op.hostId, ...op.reserved });
    return out;
  }

  /** The key's VM, if its create was interrupted before it reached the host (and the retry is the same request). */
  private interrupted(seen: KeyUse, hash: string): VmRecord | undefined {
    const vm = this.stored.get(seen.vmId);
    return seen.requestHash === hash && vm?.state === 'error' && vm.error === INTERRUPTED_CREATE && !this.operations.has(vm.id) ? vm : undefined;
  }

  private replay(seen: KeyUse, hash: string): CreateAnswer {
    if (seen.requestHash !== hash) {
      throw new SkyError(422, 'idempotency_key_reused', 'this Idempotency-Key was used with a different request body',
        { fields: [{ field: 'Idempotency-Key', message: 'already used for a different request' }] });
    }
    const vm = this.stored.get(seen.vmId);
    if (!vm) throw new SkyError(410, 'gone', `the VM made for this Idempotency-Key (${seen.vmId}) was deleted`);
    if (seen.status >= 400) throw this.failure(new SkyError(seen.status, 'agent_error', vm.error ?? 'the VM could not be created'), vm);
    // First answered 202 and failed since (its create call, or a controller stopped mid-create): say so.
    if (seen.status === 202 && vm.state === 'error') throw this.failure(new SkyError(502, 'create_failed', vm.error ?? 'the VM could not be created'), vm);
    return { status: seen.status, vm: this.view(vm) };
  }

  private failure(err: SkyError, vm: VmRecord): SkyError {
    return new SkyError(err.status, err.code, `VM ${vm.name} could not be created: ${err.message}`, { vm: this.view(vm), ...fieldsOf(err) });
  }

  /** The host lacks the template: it pulls it first (the VM shows `pulling N%`), then the create call. */
  private async pullThenCreate(vm: VmRecord, host: HostRecord, req: ReturnType<typeof VmRequest.parse>): Promise<'ok' | SkyError> {
    const show = (text: string | undefined) => {
      if (text === undefined) this.progress.delete(vm.id);
      else this.progress.set(vm.id, text);
      this.progressChanges++;
    };
    show('pulling 0%');
    try {
      await this.opts.distribute!.pull(host.id, vm.template, { onProgress: (percent) => show(`pulling ${percent}%`) });
    } catch (err) {
      show(undefined);
      this.operations.delete(vm.id);
      const sky = toSkyError(err);
      try {
        if (this.stored.get(vm.id) === vm) this.update(vm, { state: 'error', error: sky.message });
      } catch (writeErr) {
        // the store is closed (shutdown): the next start finds the record `creating` and reconciles it
        this.log.warn(`VM ${vm.name}: the failure of its template's pull was not recorded: ${(writeErr as Error).message}`, { vmId: vm.id });
      }
      this.log.error(`VM ${vm.name}: template ${vm.template} could not be pulled to ${this.hostLabel(host.id)}: ${sky.message}`, { vmId: vm.id, hostId: host.id });
      return sky;
    }
    show(undefined);
    return this.callCreate(vm, host, req);
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
      const op = this.operations.get(vm.id);
      if (op?.kind === 'create') {
        const settled: CreateOperation = { ...op, settledAt: Date.now(), sampleBefore: this.registry.record(host.id)?.status?.sampledAt };
        this.operations.set(vm.id, settled);
      }
      if (this.stored.get(vm.id) === vm) {
        this.update(vm, reportedPatch(vm, info));
        this.log.info(`VM ${vm.name} created on ${this.hostLabel(host.id)} (${vm.state})`, { vmId: vm.id, hostId: host.id });
      }
      return 'ok';
    } catch (err) {
      this.operations.delete(vm.id);
      const sky = this.fromAgent(err, host, `create VM ${vm.name}`);
      try {
        if (this.stored.get(vm.id) === vm) {
          this.update(vm, { state: 'error', error: sky.message });
          this.log.error(`VM ${vm.name} could not be created on ${this.hostLabel(host.id)}: ${sky.message}`, { vmId: vm.id, hostId: host.id });
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
  async action(user: User, id: string, action: VmAction): Promise<VmView> {
    const vm = this.require(user, id);
    if (vm.state === 'creating' || vm.state === 'deleting') throw new Conflict(`VM ${vm.name} is ${vm.state}`);
    const host = this.liveHost(vm);
    let info: VmInfo | undefined;
    try {
      info = await this.registry.client(host.id).vmAction(vm.id, action);
    } catch (err) {
      throw this.fromAgent(err, host, `${action} VM ${vm.name}`);
    }
    if (info) this.update(vm, reportedPatch(vm, info));
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
    const op = this.operations.get(id);
    if (op?.kind === 'create' && op.settledAt === undefined) throw new Conflict(`VM ${vm.name} is still being created: delete it when it is up`);
    if (op?.kind === 'delete') throw new Conflict(`VM ${vm.name} is already being deleted`);
    const host = this.registry.record(vm.hostId);
    if (host) {
      if (host.state === 'down') throw new Unavailable(`host ${this.hostLabel(host.id)} is down: the VM cannot be deleted now`);
      const before = vm.state;
      const sentAt = Date.now();
      this.operations.set(id, { kind: 'delete', hostId: host.id, sentAt });
      this.update(vm, { state: 'deleting' });
      try {
        await this.registry.client(host.id).deleteVm(vm.id);
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status !== 404) {
          this.operations.delete(id);
          if (this.stored.get(id) === vm) this.update(vm, { state: before });
          throw this.fromAgent(err, host, `delete VM ${vm.name}`);
        }
      }
      // Kept until a poll sent after now: an earlier one may still list the VM.
      this.operations.set(id, { kind: 'delete', hostId: host.id, sentAt, settledAt: Date.now() });
    }
    this.forget(vm, `VM ${vm.name} deleted by ${user.name}`);
  }

  /** What events and messages call a host: its label (another host may share its hostname, server/hosts/names.ts). */
  private hostLabel(hostId: string): string {
    return hostNames({ store: this.store, hosts: this.registry }).label(hostId);
  }

  /**
   * Makes a stranger a record (admins only): `owner` is a user of this controller, `name` defaults
   * to what the host calls it. A VM id that a record on another host has is never moved.
   */
  adopt(user: User, hostId: string, vmId: string, opts: { owner: string; name?: string }): VmView {
    if (user.role !== 'admin') throw new Forbidden('only an admin adopts VMs');
    const stranger = this.strangerLists.get(hostId)?.get(vmId);
    if (!stranger) throw new NotFound(`VM "${vmId}" among the strangers of host "${hostId}"`);
    const taken = this.stored.get(vmId);
    if (taken) throw new Conflict(`VM id ${vmId} belongs to VM ${taken.name} on host ${this.hostLabel(taken.hostId)}: it cannot be adopted from host ${this.hostLabel(hostId)}`);
    if (!this.opts.users.get(opts.owner)) throw new InvalidField('owner', `no user "${opts.owner}"`);
    const name = opts.name ?? stranger.info.name;
    if (!VmName.safeParse(name).success) throw new InvalidField('name', 'must be 1-63 lowercase letters, digits or "-"');
    if (this.stored.nameTaken(name)) throw new Conflict(`a VM named "${name}" already exists: give another name`, { fields: [{ field: 'name', message: 'already in use' }] });
    const info = stranger.info;
    const vm: VmRecord = {
      id: info.id, name, owner: opts.owner, template: info.template, hostId, state: info.state, vcpus: info.vcpus,
      memoryMiB: info.memoryMiB, diskGiB: Math.ceil(info.diskGiB ?? 1), ip: info.ip, ssh: info.ssh, console: info.console,
      error: info.error, createdAt: info.createdAt,
    };
    this.stored.insert(vm);
    this.strangerLists.get(hostId)!.delete(vmId);
    this.log.info(`VM ${name} on host ${this.hostLabel(hostId)} adopted by ${user.name} for ${opts.owner}`, { vmId, hostId });
    return this.view(vm);
  }

  /** Forgets Idempotency-Keys older than a day (run by the periodic job). */
  pruneIdempotencyKeys(now = new Date()): number {
    return this.keys.prune(now);
  }

  /**
   * Extends a VM's lease by `minutes` from its current end (or from now), within the maximum of the
   * acting user's role (422 naming `minutes` and both numbers). A VM whose lease ended but is not
   * deleted yet is rescued: it stays stopped, and is no longer deleted.
   */
  extend(user: User, id: string, minutes: number, now = new Date()): VmView {
    const vm = this.require(user, id);
    if (vm.state === 'creating' || vm.state === 'deleting') throw new Conflict(`VM ${vm.name} is ${vm.state}`);
    const policies = this.opts.policies?.current();
    if (!policies) throw new Conflict('leases are not managed by this controller');
    const expiresAt = extendedExpiry(policies.lease, user.role, vm.expiresAt, minutes, now);
    const rescued = vm.leaseEndedAt !== undefined;
    this.update(vm, { expiresAt, leaseWarnedAt: undefined, leaseEndedAt: undefined });
    this.log.info(`lease of VM ${vm.name} extended by ${user.name} by ${minutesText(minutes)}: it now ends at ${expiresAt}` +
      `${rescued ? ' (its lease had ended: it stays stopped and is no longer deleted)' : ''}`, { vmId: vm.id, by: user.name, expiresAt });
    return this.view(vm);
  }

  /** Sets a VM's lease marks (housekeeping: warned, ended). */
  markLease(id: string, patch: LeasePatch): void {
    const vm = this.stored.get(id);
    if (vm) this.update(vm, patch);
  }

  private liveHost(vm: VmRecord): HostRecord {
    const host = this.registry.record(vm.hostId);
    if (!host) throw new Unavailable(`VM ${vm.name}'s host is no longer in the cluster`);
    if (host.state === 'down') throw new Unavailable(`host ${this.hostLabel(host.id)} is down`);
    return host;
  }

  /** The agent target of a VM `user` may see (for the console proxy). */
  consoleTarget(user: User, id: string): { vm: VmRecord; host: HostRecord } {
    const vm = this.require(user, id);
    return { vm, host: this.liveHost(vm) };
  }

  /**
   * An agent's error as the controller answers it: the agent's refusal of a request keeps its words
   * (and a 422 its field list), a failure on the host never carries the host's stderr or command
   * lines (those go to the log, which only admins read).
   */
  private fromAgent(err: unknown, host: HostRecord, what: string): SkyError {
    const sky = toSkyError(err);
    if (!(err instanceof SkyError)) this.log.error(`${what} on ${this.hostLabel(host.id)} failed: ${(err as Error)?.stack ?? String(err)}`, { hostId: host.id });
    if (sky.status < 500) {
      const fields = fieldsOf(sky);
      return new SkyError(sky.status, sky.code, sky.message, fields.fields ? fields : undefined);
    }
    if (sky.code === 'agent_unreachable') return new SkyError(sky.status, sky.code, sky.message);
    if (sky.code === 'command_failed' || sky.details !== undefined) {
      this.log.warn(`${what} failed on ${this.hostLabel(host.id)}: ${sky.message}`, { hostId: host.id, code: sky.code, details: sky.details });
    }
    const message = sky.code === 'command_failed'
      ? `host ${this.hostLabel(host.id)} could not ${what}: a command failed there (the event log has its output)`
      : sky.message;
    return new SkyError(sky.status, sky.code, message);
  }

  // ---- keeping records in step with the hosts ----

  /** A poll answered: applies the reconciler's changes in one transaction (one disk sync), keeps the host's strangers. */
  private applyReport(host: HostRecord, changes: Change[]): void {
    const before = this.strangerLists.get(host.id);
    const after = new Map<string, Stranger>();
    for (const c of changes) {
      if (c.kind !== 'stranger') continue;
      const known = before?.get(c.vm.id);
      const view: VmStranger = {
        id: c.vm.id, host: host.id, name: c.vm.name, template: c.vm.template, state: c.vm.state, reason: c.reason,
        firstSeen: known?.view.firstSeen ?? c.seenAt,
      };
      after.set(c.vm.id, { view, info: c.vm });
      if (!known) this.log.warn(`host ${this.hostLabel(host.id)} reports VM ${c.vm.id} ("${c.vm.name}") that is not its: ${c.reason}; kept as a stranger`, { hostId: host.id });
    }
    if (after.size > 0) this.strangerLists.set(host.id, after);
    else this.strangerLists.delete(host.id);
    this.store.tx(() => this.apply(changes));
  }

  /** Applies the changes to records and operations, logging each (strangers are applyReport's). */
  private apply(changes: Change[]): void {
    for (const c of changes) {
      switch (c.kind) {
        case 'update': {
          const vm = this.stored.get(c.vmId);
          if (vm) this.update(vm, c.patch);
          this.log.debug(c.reason, { vmId: c.vmId });
          break;
        }
        case 'mark-error': {
          const vm = this.stored.get(c.vmId);
          if (vm) this.update(vm, { state: 'error', error: c.error });
          this.log.warn(c.reason, { vmId: c.vmId });
          break;
        }
        case 'forget': {
          const vm = this.stored.get(c.vmId);
          if (vm) this.forget(vm, c.reason, 'warn');
          break;
        }
        case 'settle':
          this.operations.delete(c.vmId);
          this.log.debug(c.reason, { vmId: c.vmId });
          break;
        case 'stranger':
          break;
      }
    }
  }

  private hostRemoved(hostId: string): void {
    this.store.tx(() => {
      for (const vm of [...this.stored.onHost(hostId)]) this.forget(vm, `VM ${vm.name} forgotten with its host`);
    });
    for (const [id, op] of this.operations) if (op.hostId === hostId) this.operations.delete(id);
    this.strangerLists.delete(hostId);
  }

  private update(vm: VmRecord, patch: VmPatch & LeasePatch): void {
    if (Object.keys(patch).length > 0) this.stored.update(vm, patch);
  }

  /** Drops a record (and a create in progress on it; a settled delete stays until a later poll). */
  private forget(vm: VmRecord, why: string, level: 'info' | 'warn' = 'info'): void {
    if (!this.stored.delete(vm)) return;
    if (this.operations.get(vm.id)?.kind === 'create') this.operations.delete(vm.id);
    this.log[level](why, { vmId: vm.id, hostId: vm.hostId });
  }
}

/** `{ fields }` of a 422's details, or nothing. */
function fieldsOf(err: SkyError): { fields?: unknown[] } {
  const fields = (err.details as { fields?: unknown } | undefined)?.fields;
  return err.status === 422 && Array.isArray(fields) ? { fields } : {};
}
