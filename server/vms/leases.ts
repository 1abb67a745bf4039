// Leases, and the policies the admin sets for them, for housekeeping and for quotas (one settings row,
// `policies`, edited on /admin/policies and through GET/PUT /api/policies).
//
// Every VM has an expiry: the lease its request asks for (at most its role's maximum, else 422
// `leaseMinutes` naming both numbers), else its class's default, else its template's, else the
// cluster's (a default above the role's maximum is cut to it). Then, by the clock housekeeping runs on:
//
//   expiresAt - warnMinutes ─▶ warn (an event, and a banner on the VM page)
//   expiresAt               ─▶ shut down (not deleted); leaseEndedAt = now   (grace 0: deleted at once)
//   leaseEndedAt + grace    ─▶ deleted                                        (extending before it rescues the VM)
//
// Everything here is pure but PolicyStore: `now` is always a parameter, so tests drive the clock.
import { z } from 'zod';
import { InvalidField, NotFound, SkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { VM_LIMITS } from '../../wire/api.ts';
import type { Store } from '../db/store.ts';
import type { Role } from '../users/users.ts';
import { Quota } from './quotas.ts';
import type { VmRecord } from './records.ts';

const Minutes = z.number().int().min(VM_LIMITS.leaseMinutes.min).max(VM_LIMITS.leaseMinutes.max);
const PerRole = <T extends z.ZodType>(t: T) => z.strictObject({ student: t, teacher: t, admin: t });

/** The admin's policies (`GET/PUT /api/policies`): leases, housekeeping, each role's default quota. */
export const Policies = z.strictObject({
  lease: z.strictObject({
    /** A new VM's lease when neither its request, its class nor its template says, e.g. `1440` (a day); null: none. */
    defaultMinutes: Minutes.nullable(),
    /** The longest lease each role may ask for or extend to, e.g. `{ student: 10080, teacher: 43200, admin: null }`; null: no maximum. */
    maxMinutes: PerRole(Minutes.nullable()),
    /** How long before its end a lease warns (event and banner), e.g. `15`; 0: no warning. */
    warnMinutes: z.number().int().min(0).max(VM_LIMITS.leaseMinutes.max),
    /** How long a VM shut down at its lease's end is kept before it is deleted, e.g. `1440`; 0: deleted at once. */
    deleteAfterMinutes: z.number().int().min(0).max(VM_LIMITS.leaseMinutes.max),
  }),
  housekeeping: z.strictObject({
    /** VMs stopped for longer than this are deleted, e.g. `10080` (7 days); null: never (the default). */
    reapStoppedAfterMinutes: Minutes.nullable(),
  }),
  /** Each role's quota where a user's own does not say, e.g. `{ student: { vms: 2 }, teacher: {}, admin: {} }`. */
  quota: PerRole(Quota),
});
export type Policies = z.infer<typeof Policies>;
export type LeasePolicy = Policies['lease'];

export const DEFAULT_POLICIES: Policies = {
  lease: { defaultMinutes: 1440, maxMinutes: { student: 7 * 1440, teacher: 30 * 1440, admin: null }, warnMinutes: 15, deleteAfterMinutes: 1440 },
  housekeeping: { reapStoppedAfterMinutes: null },
  quota: { student: {}, teacher: {}, admin: {} },
};

const SETTING = 'policies';

/**
 * The policies in the settings table (key `policies`), read once and kept; `set` checks a whole new
 * document (422 naming the field, e.g. `lease.maxMinutes.student`).
 */
export class PolicyStore {
  private readonly store: Store;
  private readonly log: Logger | undefined;
  private cached: Policies | undefined;

  constructor(store: Store, log?: Logger) {
    this.store = store;
    this.log = log;
  }

  current(): Policies {
    if (this.cached) return this.cached;
    const text = this.store.get('SELECT value FROM settings WHERE key = ?', SETTING)?.value;
    let policies = DEFAULT_POLICIES;
    if (typeof text === 'string') {
      // Sections missing from an older row take their defaults.
      const parsed = Policies.safeParse({ ...DEFAULT_POLICIES, ...parseJson(text) });
      if (parsed.success) policies = parsed.data;
      else this.log?.error(`the stored policies are not valid (${parsed.error.issues[0]?.message}); the defaults apply until an admin saves them`);
    }
    return this.cached = policies;
  }

  set(input: unknown): Policies {
    const parsed = Policies.safeParse(input);
    if (!parsed.success) throw fieldError(parsed.error);
    this.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', SETTING, JSON.stringify(parsed.data));
    this.cached = parsed.data;
    return parsed.data;
  }
}

/** A stored JSON object, or {} for text that is not one (then the checks that follow refuse or default it). */
function parseJson(text: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null ? v as Record<string, unknown> : {};
  } catch {
    return {}; // not JSON: treated as an empty document, which the caller reports or defaults
  }
}

function fieldError(err: z.ZodError): SkyError {
  const fields = err.issues.map((i) => ({ field: i.path.map(String).join('.') || '(body)', message: i.message }));
  return new SkyError(422, 'invalid_field', `${fields[0]!.field}: ${fields[0]!.message}`, { fields });
}

/** `90 min`, `4 h`, `7 days`, `1 day 2 h`. */
export function minutesText(minutes: number): string {
  const d = Math.floor(minutes / 1440);
  const h = Math.floor((minutes % 1440) / 60);
  const m = minutes % 60;
  const parts = [d ? `${d} ${d === 1 ? 'day' : 'days'}` : '', h ? `${h} h` : '', m ? `${m} min` : ''].filter(Boolean);
  return parts.length > 0 ? parts.slice(0, 2).join(' ') : '0 min';
}

/**
 * Time left until `expiresAt` as a list shows it: `2 h 10 min left`, `3 days 4 h left`, `ended`.
 * @example timeLeft('2026-01-01T12:10:00Z', new Date('2026-01-01T10:00:00Z')) // '2 h 10 min left'
 */
export function timeLeft(expiresAt: unknown, now = new Date()): string {
  if (typeof expiresAt !== 'string') return '';
  const ms = Date.parse(expiresAt) - now.getTime();
  if (!Number.isFinite(ms)) return '';
  if (ms <= 0) return 'lease ended';
  if (ms < 60_000) return 'less than a minute left';
  return `${minutesText(Math.floor(ms / 60_000))} left`;
}

/** The 422 of a lease past the role's maximum: names the field and both numbers. */
function tooLong(field: string, role: Role, minutes: number, max: number, extra = ''): SkyError {
  const message = `${minutes} minutes (${minutesText(minutes)}) is more than the ${max} minutes (${minutesText(max)}) a${role === 'admin' ? 'n' : ''} ${role}'s lease may last${extra}`;
  return new SkyError(422, 'invalid_field', `${field}: ${message}`, { fields: [{ field, message }], requested: minutes, allowed: max });
}

/** The defaults a VM's class and template set (template_policies, classes), read for a new VM. */
export function leaseDefaultsOf(store: Store, template: string, classId: string | undefined): { classMinutes?: number; templateMinutes?: number } {
  const t = store.get('SELECT lease_default_minutes AS m FROM template_policies WHERE template = ?', template)?.m;
  const c = classId !== undefined ? store.get('SELECT lease_default_minutes AS m FROM classes WHERE id = ?', classId)?.m : undefined;
  return { ...(typeof c === 'number' && c > 0 ? { classMinutes: c } : {}), ...(typeof t === 'number' && t > 0 ? { templateMinutes: t } : {}) };
}

/** Sets (or with null clears) a template's lease default: new VMs of it take it where their class has none. */
export function setTemplateLeaseDefault(store: Store, template: string, minutes: number | null): void {
  store.run(`INSERT INTO template_policies (template, lease_default_minutes) VALUES (?, ?)
    ON CONFLICT(template) DO UPDATE SET lease_default_minutes = excluded.lease_default_minutes`, template, minutes);
}

/** Sets (or with null clears) a class's lease default: new VMs of the class take it first; 404 for an unknown class. */
export function setClassLeaseDefault(store: Store, classId: string, minutes: number | null): void {
  if (store.run('UPDATE classes SET lease_default_minutes = ? WHERE id = ?', minutes, classId).changes === 0) throw new NotFound(`class "${classId}"`);
}

/** Every template's lease default that is set, by template name. */
export function templateLeaseDefaults(store: Store): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of store.all('SELECT template, lease_default_minutes AS m FROM template_policies WHERE lease_default_minutes IS NOT NULL')) out.set(String(r.template), Number(r.m));
  return out;
}

/**
 * A new VM's lease in minutes (undefined: no expiry). A request above the role's maximum is a 422
 * naming `leaseMinutes`; a default above it is cut to it.
 * @example leaseMinutesFor(DEFAULT_POLICIES.lease, 'student', 20160, {}) // throws 422 "leaseMinutes: 20160 minutes (14 days) is more than the 10080 ..."
 */
export function leaseMinutesFor(lease: LeasePolicy, role: Role, requested: number | undefined, defaults: { classMinutes?: number; templateMinutes?: number }): number | undefined {
  const max = lease.maxMinutes[role];
  if (requested !== undefined) {
    if (max !== null && requested > max) throw tooLong('leaseMinutes', role, requested, max);
    return requested;
  }
  const minutes = defaults.classMinutes ?? defaults.templateMinutes ?? lease.defaultMinutes ?? undefined;
  if (max === null) return minutes;
  return Math.min(minutes ?? max, max);
}

/**
 * The new expiry when `role` extends a lease by `minutes`: from its current end (or from now, if
 * that is past or there is none). Past the role's maximum counted from now: 422 naming `minutes`.
 */
export function extendedExpiry(lease: LeasePolicy, role: Role, expiresAt: string | undefined, minutes: number, now: Date): string {
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > VM_LIMITS.leaseMinutes.max) throw new InvalidField('minutes', `must be a whole number from 1 to ${VM_LIMITS.leaseMinutes.max}`);
  const from = Math.max(now.getTime(), expiresAt ? Date.parse(expiresAt) : 0);
  const end = from + minutes * 60_000;
  const max = lease.maxMinutes[role];
  const total = Math.ceil((end - now.getTime()) / 60_000);
  if (max !== null && total > max) {
    const room = Math.max(0, max - Math.ceil((from - now.getTime()) / 60_000));
    throw tooLong('minutes', role, total, max, `: the lease would end in ${total} minutes; it can be extended by at most ${room} more`);
  }
  return new Date(end).toISOString();
}

/** What housekeeping does about one VM's lease now. */
export type LeaseStep =
  | { kind: 'warn'; vm: Readonly<VmRecord> }
  | { kind: 'shut-down'; vm: Readonly<VmRecord> }
  | { kind: 'delete'; vm: Readonly<VmRecord> };

/**
 * The lease steps due at `now` (pure): a warning once `warnMinutes` before the end, the shutdown at
 * the end (deletion at once when the grace is 0), the deletion `deleteAfterMinutes` after the shutdown.
 */
export function leaseSteps(vms: Iterable<Readonly<VmRecord>>, lease: LeasePolicy, now: Date): LeaseStep[] {
  const t = now.getTime();
  const out: LeaseStep[] = [];
  for (const vm of vms) {
    if (!vm.expiresAt || vm.state === 'creating' || vm.state === 'deleting') continue;
    const end = Date.parse(vm.expiresAt);
    if (end <= t) {
      if (!vm.leaseEndedAt) out.push({ kind: lease.deleteAfterMinutes === 0 ? 'delete' : 'shut-down', vm });
      else if (Date.parse(vm.leaseEndedAt) + lease.deleteAfterMinutes * 60_000 <= t) out.push({ kind: 'delete', vm });
    } else if (lease.warnMinutes > 0 && !vm.leaseWarnedAt && end - lease.warnMinutes * 60_000 <= t) {
      out.push({ kind: 'warn', vm });
    }
  }
  return out;
}

/** When a VM whose lease ended will be deleted (for its page). */
export function deletionTime(vm: Pick<VmRecord, 'leaseEndedAt'>, lease: LeasePolicy): string | undefined {
  return vm.leaseEndedAt ? new Date(Date.parse(vm.leaseEndedAt) + lease.deleteAfterMinutes * 60_000).toISOString() : undefined;
}
