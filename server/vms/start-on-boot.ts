// VMs come back after a host reboots. When a host goes down (or is put to sleep) the VMs it runs are
// remembered (settings `boot.running.<hostId>`, so a controller restart in between forgets nothing);
// when it returns, those it reports shut off and whose setting asks for it are started again, and the
// event log says so. Which ones: reconcile.ts `startAgain` (pure); whether a VM asks for it:
//
//   vms.start_on_boot   1 on, -1 off, 0 the template's default (template_policies.start_on_boot, else off)
//   a VM of a class session that has ended is never started again
import type { VmInfo } from '../../wire/api.ts';
import type { Logger } from '../../base/log.ts';
import type { Store } from '../db/store.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';
import { hostNames } from '../hosts/names.ts';
import type { User } from '../users/users.ts';
import { startAgain } from './reconcile.ts';
import type { VmRecord, VmService } from './vms.ts';

const KEY_PREFIX = 'boot.running.';

/** A VM's own start-on-boot setting: on, off, or as its template says (null). */
export type StartOnBoot = boolean | null;

export interface StartOnBootOptions {
  store: Store;
  hosts: HostRegistry;
  vms: VmService;
  /** The user the starts are made as. */
  system: User;
  log: Logger;
}

/** Listens to the registry: remembers what ran when a host went away, starts it again when the host is back. */
export class StartOnBootService {
  private readonly opts: StartOnBootOptions;
  /** Hosts back whose next report is to be checked: the VMs that ran before. */
  private readonly returning = new Map<string, string[]>();
  /** Starts under way (tests wait for them). */
  private readonly underWay = new Set<Promise<void>>();

  constructor(opts: StartOnBootOptions) {
    this.opts = opts;
    // Before VmService's own listener, which marks the host's VMs unknown: their states are still those of before.
    opts.hosts.prependListener('down', (h) => this.wentAway(h));
    opts.hosts.on('returned', (h, from) => this.cameBack(h, from));
    // After VmService's listener: the records hold the report by now.
    opts.hosts.on('status', (h, status) => this.checkReport(h, status.vmList));
  }

  /** A VM's own setting (null: its template's default). */
  setting(vmId: string): StartOnBoot {
    const row = this.opts.store.get<{ start_on_boot: number }>('SELECT start_on_boot FROM vms WHERE id = ?', vmId);
    const v = Number(row?.start_on_boot ?? 0);
    return v > 0 ? true : v < 0 ? false : null;
  }

  /** Sets a VM's own setting (null: follow its template). */
  set(vm: Readonly<VmRecord>, value: StartOnBoot, by: string): void {
    this.opts.store.run('UPDATE vms SET start_on_boot = ? WHERE id = ?', value === null ? 0 : value ? 1 : -1, vm.id);
    const what = value === null ? `as its template says (${this.templateDefault(vm.template) ? 'on' : 'off'})` : value ? 'on' : 'off';
    this.opts.log.info(`VM ${vm.name}: start on boot ${what}, set by ${by}`, { vmId: vm.id });
  }

  /** Whether the VM is started again when its host comes back. */
  wanted(vm: Readonly<VmRecord>): boolean {
    const row = this.opts.store.get<{ start_on_boot: number; ended: number | null }>(
      `SELECT v.start_on_boot, (SELECT s.state = 'ended' FROM class_sessions s WHERE s.id = v.session_id) AS ended FROM vms v WHERE v.id = ?`, vm.id);
    if (!row || Number(row.ended) === 1) return false;
    const own = Number(row.start_on_boot);
    return own !== 0 ? own > 0 : this.templateDefault(vm.template);
  }

  /** The template's default (template_policies.start_on_boot; off when none). */
  templateDefault(template: string): boolean {
    const row = this.opts.store.get<{ start_on_boot: number | null }>('SELECT start_on_boot FROM template_policies WHERE template = ?', template);
    return Number(row?.start_on_boot ?? 0) > 0;
  }

  /** Resolves when the starts under way are done (tests). */
  async settled(): Promise<void> {
    while (this.underWay.size > 0) await Promise.all([...this.underWay]);
  }

  private wentAway(h: HostRecord): void {
    const running = this.opts.vms.records(this.opts.system, { host: h.id }).filter((vm) => vm.state === 'running').map((vm) => vm.id);
    if (running.length === 0) return;
    this.opts.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
      KEY_PREFIX + h.id, JSON.stringify(running));
  }

  private cameBack(h: HostRecord, from: 'down' | 'asleep' | 'restart'): void {
    // A quick reboot (never down): its records still say what ran, as this report has not been applied yet.
    const ran = from === 'restart'
      ? this.opts.vms.records(this.opts.system, { host: h.id }).filter((vm) => vm.state === 'running').map((vm) => vm.id)
      : this.remembered(h.id);
    if (ran.length > 0) this.returning.set(h.id, ran);
  }

  private remembered(hostId: string): string[] {
    const row = this.opts.store.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', KEY_PREFIX + hostId);
    try {
      const ids: unknown = row ? JSON.parse(row.value) : [];
      return Array.isArray(ids) ? ids.filter((x): x is string => typeof x === 'string') : [];
    } catch {
      return []; // written by this file only: unreadable means nothing worth starting
    }
  }

  private checkReport(h: HostRecord, report: readonly VmInfo[]): void {
    const ran = this.returning.get(h.id);
    if (!ran) return;
    this.returning.delete(h.id);
    this.opts.store.run('DELETE FROM settings WHERE key = ?', KEY_PREFIX + h.id);
    const index = { get: (id: string) => this.find(id), onHost: () => [] };
    for (const { vmId, reason } of startAgain(index, h.id, ran, report, (vm) => this.wanted(vm), hostNames(this.opts).label(h.id))) {
      const p = this.opts.vms.action(this.opts.system, vmId, 'start').then(
        () => this.opts.log.info(reason, { vmId, hostId: h.id }),
        (err: Error) => this.opts.log.warn(`${reason.replace('started again', 'was not started again')}: ${err.message}`, { vmId, hostId: h.id }),
      ).finally(() => this.underWay.delete(p));
      this.underWay.add(p);
    }
  }

  private find(id: string): VmRecord | undefined {
    try {
      return this.opts.vms.require(this.opts.system, id);
    } catch {
      return undefined; // deleted since the host went away: nothing to start
    }
  }
}
