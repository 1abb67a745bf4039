// The controller's VM records: kept in memory (every list and page reads them), indexed by host, and
// written through to SQLite. Only VmService changes them.
import type { ConsoleKind, SshAccess, VmState } from '../../wire/api.ts';
import type { Row, Store } from '../db/store.ts';

/** The controller's record of a VM it placed: the authority on where a VM is and whose it is. */
export interface VmRecord {
  id: string;
  name: string;
  owner: string;
  template: string;
  /** The host the controller placed it on (or an admin adopted it from); a host's report never changes it. */
  hostId: string;
  state: VmState;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
  ip?: string | undefined;
  ssh?: SshAccess | undefined;
  console: ConsoleKind;
  error?: string | undefined;
  createdAt: string;
  expiresAt?: string | undefined;
  /** The class it was made for (its VMs count against the class's quota and take its lease default). */
  classId?: string | undefined;
  /** When housekeeping warned that the lease ends soon; cleared when the lease is extended. */
  leaseWarnedAt?: string | undefined;
  /** When the lease ended and the VM was shut down (deleted after the grace period unless extended). */
  leaseEndedAt?: string | undefined;
  /** Since when the VM is stopped: set when first seen `shutoff`, cleared when it runs (housekeeping reaps by it). */
  stoppedSince?: string | undefined;
}

/** What a host's report or an agent's answer may change in a record. */
export type VmPatch = Partial<Pick<VmRecord, 'state' | 'vcpus' | 'memoryMiB' | 'ip' | 'ssh' | 'console' | 'error'>>;

/** What the lease logic changes in a record (server/vms/leases.ts); `undefined` clears a mark. */
export type LeasePatch = Partial<Pick<VmRecord, 'expiresAt' | 'leaseWarnedAt' | 'leaseEndedAt' | 'stoppedSince'>>;

/** Reading records by id and by host (what the reconciler needs). */
export interface RecordIndex {
  get(id: string): Readonly<VmRecord> | undefined;
  onHost(hostId: string): Iterable<Readonly<VmRecord>>;
}

function rowToRecord(r: Row): VmRecord {
  return {
    id: String(r.id), name: String(r.name), owner: String(r.owner), template: String(r.template), hostId: String(r.host_id ?? ''),
    state: r.state as VmState, vcpus: Number(r.vcpus), memoryMiB: Number(r.memory_mib), diskGiB: Number(r.disk_gib ?? 0),
    ip: r.ip ? String(r.ip) : undefined, ssh: r.ssh_json ? JSON.parse(String(r.ssh_json)) as SshAccess : undefined,
    console: r.console === 'vnc' ? 'vnc' : 'serial', error: r.error ? String(r.error) : undefined, createdAt: String(r.created_at),
    expiresAt: r.expires_at ? String(r.expires_at) : undefined, classId: r.class_id ? String(r.class_id) : undefined,
    leaseWarnedAt: r.lease_warned_at ? String(r.lease_warned_at) : undefined, leaseEndedAt: r.lease_ended_at ? String(r.lease_ended_at) : undefined,
    stoppedSince: r.stopped_since ? String(r.stopped_since) : undefined,
  };
}

/** VM records in memory and in the `vms` table. `version` changes with every write (list caches key on it). */
export class VmRecords implements RecordIndex {
  private readonly store: Store;
  private readonly byId = new Map<string, VmRecord>();
  private readonly byHost = new Map<string, Set<VmRecord>>();
  version = 0;

  constructor(store: Store) {
    this.store = store;
    for (const r of store.all('SELECT * FROM vms')) this.remember(rowToRecord(r));
  }

  get(id: string): VmRecord | undefined {
    return this.byId.get(id);
  }

  values(): IterableIterator<VmRecord> {
    return this.byId.values();
  }

  onHost(hostId: string): Iterable<VmRecord> {
    return this.byHost.get(hostId) ?? [];
  }

  /** Whether some VM in the cluster has this name (names are unique cluster-wide). */
  nameTaken(name: string): boolean {
    for (const vm of this.byId.values()) if (vm.name === name) return true;
    return false;
  }

  insert(vm: VmRecord): void {
    if (vm.state === 'shutoff') vm.stoppedSince ??= new Date().toISOString();
    this.store.run(`INSERT INTO vms (id, name, owner, template, host_id, state, vcpus, memory_mib, disk_gib, ip, ssh_json, console, error, created_at, expires_at, updated_at, class_id, stopped_since)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    vm.id, vm.name, vm.owner, vm.template, vm.hostId, vm.state, vm.vcpus, vm.memoryMiB, vm.diskGiB, vm.ip ?? null,
    vm.ssh ? JSON.stringify(vm.ssh) : null, vm.console, vm.error ?? null, vm.createdAt, vm.expiresAt ?? null, new Date().toISOString(),
    vm.classId ?? null, vm.stoppedSince ?? null);
    this.remember(vm);
    this.version++;
  }

  /**
   * Changes a record; a state other than `error` clears the error unless the patch sets one. A VM
   * first seen `shutoff` gets `stoppedSince`; running (or paused) clears it.
   */
  update(vm: VmRecord, patch: VmPatch & LeasePatch): void {
    Object.assign(vm, patch);
    if (vm.state !== 'error' && patch.state !== undefined && patch.error === undefined) vm.error = undefined;
    if (vm.state === 'shutoff') vm.stoppedSince ??= new Date().toISOString();
    else if (vm.state === 'running' || vm.state === 'paused') vm.stoppedSince = undefined;
    this.store.run(`UPDATE vms SET state = ?, vcpus = ?, memory_mib = ?, ip = ?, ssh_json = ?, console = ?, error = ?, updated_at = ?,
      expires_at = ?, lease_warned_at = ?, lease_ended_at = ?, stopped_since = ? WHERE id = ?`,
      vm.state, vm.vcpus, vm.memoryMiB, vm.ip ?? null, vm.ssh ? JSON.stringify(vm.ssh) : null, vm.console, vm.error ?? null,
      new Date().toISOString(), vm.expiresAt ?? null, vm.leaseWarnedAt ?? null, vm.leaseEndedAt ?? null, vm.stoppedSince ?? null, vm.id);
    this.version++;
  }

  /** Deletes the record; false if it was already gone (or replaced). */
  delete(vm: VmRecord): boolean {
    if (this.byId.get(vm.id) !== vm) return false;
    this.store.run('DELETE FROM vms WHERE id = ?', vm.id);
    this.byId.delete(vm.id);
    this.byHost.get(vm.hostId)?.delete(vm);
    if (this.byHost.get(vm.hostId)?.size === 0) this.byHost.delete(vm.hostId);
    this.version++;
    return true;
  }

  private remember(vm: VmRecord): void {
    this.byId.set(vm.id, vm);
    let set = this.byHost.get(vm.hostId);
    if (!set) this.byHost.set(vm.hostId, set = new Set());
    set.add(vm);
  }
}
