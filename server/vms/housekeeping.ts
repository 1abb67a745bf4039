// Housekeeping: the periodic sweep (node-cron, server/services.ts) that carries out the lease steps
// (server/vms/leases.ts: warn, shut down, delete after the grace period) and reaps VMs stopped for
// longer than the policy says (off by default). Every action is an event naming the VM, what
// happened and that housekeeping did it ("lease of VM x ended: shut down by housekeeping").
//
//   sweep(now) ─▶ leaseSteps(records, policy, now) + reapSteps(records, policy, now) ─▶ agent calls ─▶ events
//
// The deciding is pure (the *Steps functions); `now` is a parameter, so tests drive the clock.
import type { EventInput } from '../events/events.ts';
import type { Logger } from '../../base/log.ts';
import { toSkyError } from '../../base/errors.ts';
import type { User } from '../users/users.ts';
import { leaseSteps, minutesText, type LeaseStep, type PolicyStore } from './leases.ts';
import type { VmRecord } from './records.ts';
import type { VmService } from './vms.ts';

/** Who housekeeping acts as: an admin named so in the log ("deleted by housekeeping"). */
export const HOUSEKEEPER: User = { name: 'housekeeping', role: 'admin', mustChangePassword: false, createdAt: '1970-01-01T00:00:00.000Z' };

/**
 * The stopped VMs to delete at `now` (pure): `shutoff` since more than `afterMinutes` (null: none).
 * A running VM, or one stopped for less, is never among them.
 */
export function reapSteps(vms: Iterable<Readonly<VmRecord>>, afterMinutes: number | null, now: Date): Array<Readonly<VmRecord>> {
  if (afterMinutes === null) return [];
  const limit = now.getTime() - afterMinutes * 60_000;
  const out: Array<Readonly<VmRecord>> = [];
  for (const vm of vms) if (vm.state === 'shutoff' && vm.stoppedSince && Date.parse(vm.stoppedSince) <= limit) out.push(vm);
  return out;
}

/** What one sweep did, by VM name. */
export interface SweepReport {
  warned: string[];
  shutDown: string[];
  deleted: string[];
  reaped: string[];
  /** Steps that failed (a host down, an agent error): tried again at the next sweep. */
  failed: Array<{ vm: string; step: string; message: string }>;
}

export interface HousekeepingOptions {
  vms: Pick<VmService, 'records' | 'action' | 'remove' | 'markLease'>;
  policies: Pick<PolicyStore, 'current'>;
  /** The event log. */
  record: (e: EventInput) => void;
  log: Logger;
  /** Agent calls under way at once (default 8). */
  concurrency?: number;
}

export class Housekeeping {
  private readonly opts: HousekeepingOptions;

  constructor(opts: HousekeepingOptions) {
    this.opts = opts;
  }

  /**
   * One sweep at `now`: every lease step due and every stopped VM past the policy. A step that
   * fails is logged and tried again at the next sweep (its mark is only set once it succeeded).
   * @example await services.housekeeping.sweep(new Date())
   */
  async sweep(now = new Date()): Promise<SweepReport> {
    const policies = this.opts.policies.current();
    const report: SweepReport = { warned: [], shutDown: [], deleted: [], reaped: [], failed: [] };
    const all = this.opts.vms.records(HOUSEKEEPER);
    // A VM stopped before `stoppedSince` existed (records from an older controller) starts counting now.
    for (const vm of all) if (vm.state === 'shutoff' && !vm.stoppedSince) this.opts.vms.markLease(vm.id, { stoppedSince: now.toISOString() });
    const steps = leaseSteps(all, policies.lease, now);
    const leased = new Set(steps.map((s) => s.vm.id));
    const reaps = reapSteps(all, policies.housekeeping.reapStoppedAfterMinutes, now).filter((vm) => !leased.has(vm.id));
    const jobs: Array<() => Promise<void>> = [
      ...steps.map((step) => () => this.leaseStep(step, now, policies.lease.deleteAfterMinutes, report)),
      ...reaps.map((vm) => () => this.reap(vm, now, policies.housekeeping.reapStoppedAfterMinutes!, report)),
    ];
    await pool(jobs, this.opts.concurrency ?? 8);
    const did = report.warned.length + report.shutDown.length + report.deleted.length + report.reaped.length;
    if (did > 0 || report.failed.length > 0) {
      this.opts.log.debug(`housekeeping: ${report.warned.length} warned, ${report.shutDown.length} shut down, ${report.deleted.length} deleted at lease end, ` +
        `${report.reaped.length} stopped VMs deleted, ${report.failed.length} failed`);
    }
    return report;
  }

  private event(level: 'info' | 'warn', vm: Readonly<VmRecord>, msg: string, data: Record<string, unknown>): void {
    this.opts.record({ level, source: 'housekeeping', msg, vmId: vm.id, hostId: vm.hostId, data: { vm: vm.name, owner: vm.owner, by: 'housekeeping', ...data } });
  }

  private failed(vm: Readonly<VmRecord>, step: string, err: unknown, report: SweepReport): void {
    const message = toSkyError(err).message;
    report.failed.push({ vm: vm.name, step, message });
    this.opts.log.warn(`housekeeping could not ${step} VM ${vm.name}: ${message}; tried again at the next sweep`, { vmId: vm.id, hostId: vm.hostId });
  }

  private async leaseStep(step: LeaseStep, now: Date, graceMinutes: number, report: SweepReport): Promise<void> {
    const { vm } = step;
    const at = now.toISOString();
    if (step.kind === 'warn') {
      const left = Math.max(1, Math.round((Date.parse(vm.expiresAt!) - now.getTime()) / 60_000));
      this.opts.vms.markLease(vm.id, { leaseWarnedAt: at });
      this.event('warn', vm, `lease of VM ${vm.name} (owner ${vm.owner}) ends in ${minutesText(left)}, at ${vm.expiresAt}: ` +
        'it is shut down then unless its lease is extended (on its page)', { step: 'warn', expiresAt: vm.expiresAt });
      report.warned.push(vm.name);
      return;
    }
    if (step.kind === 'shut-down') {
      try {
        if (vm.state === 'running' || vm.state === 'paused' || vm.state === 'unknown') await this.shutDown(vm);
      } catch (err) {
        return this.failed(vm, 'shut down', err, report);
      }
      this.opts.vms.markLease(vm.id, { leaseEndedAt: at });
      this.event('info', vm, `lease of VM ${vm.name} (owner ${vm.owner}) ended: shut down by housekeeping; ` +
        `deleted in ${minutesText(graceMinutes)} unless its lease is extended`, { step: 'shut-down', expiresAt: vm.expiresAt });
      report.shutDown.push(vm.name);
      return;
    }
    try {
      await this.opts.vms.remove(HOUSEKEEPER, vm.id);
    } catch (err) {
      return this.failed(vm, 'delete', err, report);
    }
    const why = vm.leaseEndedAt ? `ended ${minutesText(Math.round((now.getTime() - Date.parse(vm.leaseEndedAt)) / 60_000))} ago` : 'ended (no grace period)';
    this.event('info', vm, `lease of VM ${vm.name} (owner ${vm.owner}) ${why}: deleted by housekeeping`, { step: 'delete', expiresAt: vm.expiresAt });
    report.deleted.push(vm.name);
  }

  /** ACPI shutdown; a guest that ignores it (409 shutdown_timeout) is powered off. */
  private async shutDown(vm: Readonly<VmRecord>): Promise<void> {
    try {
      await this.opts.vms.action(HOUSEKEEPER, vm.id, 'shutdown');
    } catch (err) {
      if (toSkyError(err).code !== 'shutdown_timeout') throw err;
      this.opts.log.info(`VM ${vm.name} ignored the ACPI shutdown at its lease's end: powered off`, { vmId: vm.id });
      await this.opts.vms.action(HOUSEKEEPER, vm.id, 'poweroff');
    }
  }

  private async reap(vm: Readonly<VmRecord>, now: Date, afterMinutes: number, report: SweepReport): Promise<void> {
    const since = vm.stoppedSince!;
    try {
      await this.opts.vms.remove(HOUSEKEEPER, vm.id);
    } catch (err) {
      return this.failed(vm, 'delete', err, report);
    }
    this.event('info', vm, `VM ${vm.name} (owner ${vm.owner}) stopped for ${minutesText(Math.round((now.getTime() - Date.parse(since)) / 60_000))} ` +
      `(since ${since}, the policy says ${minutesText(afterMinutes)}): deleted by housekeeping`, { step: 'reap', stoppedSince: since });
    report.reaped.push(vm.name);
  }
}

/** Runs `jobs`, at most `limit` at once. */
async function pool(jobs: Array<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}
