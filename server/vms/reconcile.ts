// Keeping the controller's VM records in step with what a host reports, as one pure function: no I/O,
// no store, no logger. It returns the changes, each with its reason; VmService applies them in one
// transaction and logs them.
//
// The controller is the authority on VMs: a report updates only the records the controller placed on
// that host, and never a record's host, owner or name. Any other VM a host reports is a stranger.
//
// One timing rule. Every mark is a millisecond on the controller's own clock (when a poll was sent,
// when an operation was sent to an agent and when its answer came back); a host's clock is never
// compared with them. A report contradicts a pending operation only if its poll was sent after the
// operation settled: an earlier poll may predate the VM (create) or still show it (delete). If the
// controller's clock steps back, reports are ignored a little longer, never wrongly applied.
//
//   the host's list             record placed on this host                 no record here
//   ───────────────────────────────────────────────────────────────────────────────────────────────
//   has the VM                  update, unless a delete is pending         stranger, unless a delete
//                                                                          settled after the poll was sent
//   lacks the VM                create pending, or settled after the poll was sent: keep
//                               delete pending: keep (the delete call decides)
//                               `creating` with no operation: mark-error (the create never landed)
//                               `error`: keep until deleted; anything else: forget
import type { VmInfo } from '../../wire/api.ts';
import type { RecordIndex, VmPatch, VmRecord } from './records.ts';

/** What a create holds on its host until the host's usage figures include the VM. */
export interface Reservation {
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
}

/** A create sent to an agent: the VM may appear in reports before the answer, or after. */
export interface CreateOperation {
  kind: 'create';
  hostId: string;
  /** When the request was sent. */
  sentAt: number;
  /** When the agent's answer came back; undefined while the call runs. */
  settledAt?: number | undefined;
  /** The label of the host's last usage sample known when the answer came back (`status.sampledAt`). */
  sampleBefore?: string | undefined;
  /** Counted against the host by the scheduler until the operation settles. */
  reserved: Reservation;
}

/** A delete sent to an agent: a report may still list the VM until a poll sent after it settled. */
export interface DeleteOperation {
  kind: 'delete';
  hostId: string;
  sentAt: number;
  settledAt?: number | undefined;
}

export type Operation = CreateOperation | DeleteOperation;

/** One poll answer of one host. */
export interface HostReport {
  hostId: string;
  /** When the poll was sent. */
  sentAt: number;
  /** The label of the usage sample in the answer (`status.sampledAt`): only ever compared for equality. */
  sample: string;
  /** Every VM the host says it has. */
  vms: readonly VmInfo[];
}

export type Change =
  /** Copy what the host reports into a record it holds. */
  | { kind: 'update'; vmId: string; patch: VmPatch; reason: string }
  /** The host reports a VM that is not its to report: list it as a stranger of that host. */
  | { kind: 'stranger'; hostId: string; vm: VmInfo; seenAt: string; reason: string }
  /** The VM is gone from its host: drop the record (and any operation on it). */
  | { kind: 'forget'; vmId: string; reason: string }
  /** The VM never came to be: keep the record, in `error`, until someone deletes it. */
  | { kind: 'mark-error'; vmId: string; error: string; reason: string }
  /** The pending operation on this VM id is over (a create's reservation ends). */
  | { kind: 'settle'; vmId: string; reason: string };

export type ChangeKind = Change['kind'];

/** The error of a record left `creating` (the controller stopped mid-create) that its host does not have: a retry with its key makes it anew. */
export const INTERRUPTED_CREATE = 'the host never reported this VM (its creation was interrupted)';

/**
 * The changes one host's report makes to the records. `label` names a host in the reasons, which are
 * logged as events (server/hosts/names.ts: two PCs may share a hostname; default: its id).
 * @example reconcile(records, { hostId: 'pc-1', sentAt: Date.now(), sample: status.sampledAt, vms: status.vmList }, operations, Date.now(), names.label)
 */
export function reconcile(records: RecordIndex, report: HostReport, pending: ReadonlyMap<string, Operation>, now: number,
  label: (hostId: string) => string = (id) => id): Change[] {
  const changes: Change[] = [];
  const sentAfter = (op: Operation | undefined): boolean => op?.settledAt !== undefined && report.sentAt > op.settledAt;
  const listed = new Set<string>();

  for (const info of report.vms) {
    if (listed.has(info.id)) continue;
    listed.add(info.id);
    const vm = records.get(info.id);
    const op = pending.get(info.id);
    if (vm && vm.hostId === report.hostId) {
      if (op?.kind === 'delete') continue;
      const patch = reportedPatch(vm, info);
      if (Object.keys(patch).length > 0) {
        const why = vm.state === 'deleting' ? 'the host still has it (its deletion was interrupted)' : 'the host reports it';
        changes.push({ kind: 'update', vmId: vm.id, patch, reason: `VM ${vm.name}: ${describe(patch)}: ${why}` });
      }
      if (op?.kind === 'create' && sentAfter(op) && report.sample !== op.sampleBefore) {
        changes.push({ kind: 'settle', vmId: vm.id, reason: `VM ${vm.name} is in the host's usage figures: its reservation ends` });
      }
      continue;
    }
    if (!vm && op?.kind === 'delete' && op.hostId === report.hostId && !sentAfter(op)) continue; // deleted while this poll was out
    const reason = vm
      ? `its id belongs to VM ${vm.name} on host ${label(vm.hostId)}: a host cannot take another host's VM`
      : op?.kind === 'delete' && op.hostId === report.hostId
        ? 'the host still reports it after it was deleted'
        : 'the controller did not place it on this host';
    changes.push({ kind: 'stranger', hostId: report.hostId, vm: info, seenAt: new Date(now).toISOString(), reason });
  }

  for (const vm of records.onHost(report.hostId)) {
    if (listed.has(vm.id)) continue;
    const op = pending.get(vm.id);
    if (op?.kind === 'delete') continue;
    if (op?.kind === 'create') {
      if (sentAfter(op)) changes.push({ kind: 'forget', vmId: vm.id, reason: `VM ${vm.name} was created, then disappeared from host ${label(report.hostId)}: record removed` });
      continue; // created while this poll was out
    }
    if (vm.state === 'creating') {
      changes.push({ kind: 'mark-error', vmId: vm.id, error: INTERRUPTED_CREATE, reason: `VM ${vm.name}: ${INTERRUPTED_CREATE}` });
    } else if (vm.state !== 'error') {
      changes.push({ kind: 'forget', vmId: vm.id, reason: `VM ${vm.name} is gone from host ${label(report.hostId)}: record removed` });
    }
  }

  for (const [vmId, op] of pending) {
    if (op.kind === 'delete' && op.hostId === report.hostId && sentAfter(op)) {
      changes.push({ kind: 'settle', vmId, reason: `the deletion of VM ${vmId} is in a report of host ${label(report.hostId)}` });
    }
  }
  return changes;
}

/** A host went down: what it ran is now unknown (a create or delete in progress keeps its state: its call decides). `hostLabel` names it in the reasons. */
export function hostDown(records: RecordIndex, hostId: string, hostLabel = hostId): Change[] {
  const changes: Change[] = [];
  for (const vm of records.onHost(hostId)) {
    if (vm.state === 'error' || vm.state === 'unknown' || vm.state === 'creating' || vm.state === 'deleting') continue;
    changes.push({ kind: 'update', vmId: vm.id, patch: { state: 'unknown' }, reason: `VM ${vm.name}: unknown while host ${hostLabel} is down` });
  }
  return changes;
}

/** What differs between a record and its host's report of it (never host, owner or name). */
export function reportedPatch(vm: Readonly<VmRecord>, info: VmInfo): VmPatch {
  const patch: VmPatch = {};
  if (info.state !== vm.state) patch.state = info.state;
  if (info.ip !== vm.ip) patch.ip = info.ip;
  if (JSON.stringify(info.ssh) !== JSON.stringify(vm.ssh)) patch.ssh = info.ssh;
  if (info.vcpus !== vm.vcpus) patch.vcpus = info.vcpus;
  if (info.memoryMiB !== vm.memoryMiB) patch.memoryMiB = info.memoryMiB;
  if (info.console !== vm.console) patch.console = info.console;
  // A record in error keeps the controller's own reason when the host gives none.
  if (info.error !== vm.error && (info.error || vm.state !== 'error' || info.state !== 'error')) patch.error = info.error;
  return patch;
}

function describe(patch: VmPatch): string {
  return Object.entries(patch).map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ');
}

/** A VM to start again because it ran when its host went away (see `startAgain`). */
export interface StartAgain {
  vmId: string;
  reason: string;
}

/**
 * A host came back (from down or asleep, or its agent restarted): the VMs to start again. Decided here,
 * on the controller, not by the agent at its start: only the controller knows the intent (the VM's
 * own setting, its template's default, whether its class session has ended), and it alone knew which
 * VMs ran before the host went away. A VM is started again when it ran then (`wasRunning`), is still
 * this host's, the host now reports it shut off, and `wanted(vm)` says its setting asks for it.
 * @example startAgain(records, 'pc-3', ['k3x9...'], status.vmList, (vm) => policy(vm), 'lab-03')
 */
export function startAgain(records: RecordIndex, hostId: string, wasRunning: Iterable<string>, report: readonly VmInfo[],
  wanted: (vm: Readonly<VmRecord>) => boolean, hostname = hostId): StartAgain[] {
  const reported = new Map(report.map((v) => [v.id, v]));
  const out: StartAgain[] = [];
  for (const id of new Set(wasRunning)) {
    const vm = records.get(id);
    if (!vm || vm.hostId !== hostId || reported.get(id)?.state !== 'shutoff' || !wanted(vm)) continue;
    out.push({ vmId: id, reason: `VM ${vm.name} started again after host ${hostname} came back` });
  }
  return out;
}
