// Quotas: how many VMs, vCPUs, MiB of memory and GiB of disk a user (users.quota_json, else their
// role's default from the policies) and a class (classes.quota_json: the class's VMs together) may hold.
// Checked inside VM creation before placement; a refusal is 403 `quota_exceeded` that says what is
// used and what is allowed ("you have 2 of 2 VMs") with details { resource, used, allowed, requested }.
//
//   limit:  a number (exactly at it is allowed) | null (no limit) | absent (a user's: the role's default)
//   usage:  every VM record of the owner (or the class), whatever its state, but `deleting`
import { z } from 'zod';
import { InvalidField, NotFound, SkyError } from '../../base/errors.ts';
import { VM_LIMITS } from '../../wire/api.ts';
import type { Store } from '../db/store.ts';
import type { Role, User } from '../users/users.ts';
import type { VmRecord } from './records.ts';

export const RESOURCES = ['vms', 'vcpus', 'memoryMiB', 'diskGiB'] as const;
export type Resource = typeof RESOURCES[number];

const limit = (max: number) => z.number().int().min(0).max(max).nullable().optional();

/** A quota: each resource a limit (null: none; absent: the default applies), e.g. `{ vms: 2, memoryMiB: 4096 }`. */
export const Quota = z.strictObject({
  /** VMs at most, e.g. `2`. */
  vms: limit(100_000),
  /** vCPUs of all the VMs together, e.g. `4`. */
  vcpus: limit(VM_LIMITS.vcpus.max * 100_000),
  /** Memory of all the VMs together in MiB, e.g. `4096`. */
  memoryMiB: limit(VM_LIMITS.memoryMiB.max * 100_000),
  /** Disk of all the VMs together in GiB, e.g. `100`. */
  diskGiB: limit(VM_LIMITS.diskGiB.max * 100_000),
});
export type Quota = z.infer<typeof Quota>;

/** What a quota resolves to: a number or null (no limit) for every resource. */
export type Limits = Record<Resource, number | null>;
export type Usage = Record<Resource, number>;

/** What a new VM asks for (memory and disk as it will be recorded). */
export interface Ask {
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
}

/** One line of a usage table (views/partials/quota-usage.hbs). */
export interface UsageRow {
  resource: Resource;
  label: string;
  used: number;
  allowed: number | null;
  /** Text of `used` and `allowed`, e.g. `1.5 GiB` and `4 GiB` (`no limit`). */
  usedText: string;
  allowedText: string;
  /** 0-100 when there is a limit. */
  percent?: number;
  full?: boolean;
}

const LABELS: Record<Resource, string> = { vms: 'VMs', vcpus: 'vCPUs', memoryMiB: 'memory', diskGiB: 'disk' };

/** `2 VMs`, `4 vCPUs`, `1.5 GiB`, `20 GiB`: an amount of a resource as a person reads it. */
export function amount(resource: Resource, n: number): string {
  if (resource === 'memoryMiB') return n < 1024 ? `${n} MiB` : `${Math.round((n / 1024) * 10) / 10} GiB`;
  if (resource === 'diskGiB') return `${n} GiB`;
  if (resource === 'vms') return `${n} ${n === 1 ? 'VM' : 'VMs'}`;
  return `${n} ${n === 1 ? 'vCPU' : 'vCPUs'}`;
}

/** What the records hold (all states but `deleting`). */
export function usageFrom(records: Iterable<Readonly<VmRecord>>, counts: (vm: Readonly<VmRecord>) => boolean): Usage {
  const u: Usage = { vms: 0, vcpus: 0, memoryMiB: 0, diskGiB: 0 };
  for (const vm of records) {
    if (vm.state === 'deleting' || !counts(vm)) continue;
    u.vms++;
    u.vcpus += vm.vcpus;
    u.memoryMiB += vm.memoryMiB;
    u.diskGiB += vm.diskGiB;
  }
  return u;
}

/** A quota over a default: the quota's own limits win, an absent one takes the default's. */
export function resolve(own: Quota | undefined, fallback: Quota | undefined): Limits {
  const out = {} as Limits;
  for (const r of RESOURCES) out[r] = own?.[r] !== undefined ? own[r]! : fallback?.[r] ?? null;
  return out;
}

/**
 * The first resource `ask` would take past its limit, or nothing. Exactly at the limit is allowed.
 * @example overQuota({ vms: 2, ... }, { vms: 2, ... }, ask) // { resource: 'vms', used: 2, allowed: 2, requested: 1 }
 */
export function overQuota(limits: Limits, usage: Usage, ask: Ask): { resource: Resource; used: number; allowed: number; requested: number } | undefined {
  const wants: Usage = { vms: 1, ...ask };
  for (const r of RESOURCES) {
    const allowed = limits[r];
    if (allowed !== null && usage[r] + wants[r] > allowed) return { resource: r, used: usage[r], allowed, requested: wants[r] };
  }
  return undefined;
}

/**
 * The 403 of a refused request: `who` is "you", "alice" or "class 7b".
 * @example "quota exceeded: you have 2 of 2 VMs", "quota exceeded: class 7b uses 3.5 GiB of 4 GiB of memory and this VM asks for 1 GiB"
 */
export function quotaRefusal(who: string, over: NonNullable<ReturnType<typeof overQuota>>): SkyError {
  const { resource, used, allowed, requested } = over;
  const you = who === 'you';
  let message: string;
  if (resource === 'vms') message = `${who} ${you ? 'have' : 'has'} ${used} of ${allowed} VMs`;
  else if (resource === 'vcpus') message = `${who} ${you ? 'have' : 'has'} ${used} of ${allowed} vCPUs and this VM asks for ${requested}`;
  else message = `${who} ${you ? 'use' : 'uses'} ${amount(resource, used)} of ${amount(resource, allowed)} of ${LABELS[resource]} and this VM asks for ${amount(resource, requested)}`;
  return new SkyError(403, 'quota_exceeded', `quota exceeded: ${message}`, { resource, used, allowed, requested, who });
}

/** A usage table for the pages. */
export function usageRows(limits: Limits, usage: Usage): UsageRow[] {
  return RESOURCES.map((r) => {
    const allowed = limits[r];
    return {
      resource: r, label: LABELS[r], used: usage[r], allowed,
      usedText: amount(r, usage[r]), allowedText: allowed === null ? 'no limit' : amount(r, allowed),
      ...(allowed !== null ? { percent: allowed === 0 ? 100 : Math.min(100, Math.round((usage[r] / allowed) * 100)), full: usage[r] >= allowed } : {}),
    };
  });
}

/** A stored quota; text that is no valid quota counts as none set (the default applies), as a NULL does. */
function parseStored(text: unknown): Quota | undefined {
  if (typeof text !== 'string' || text === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined; // not JSON (written by hand): no quota of its own
  }
  const parsed = Quota.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

export interface QuotasOptions {
  store: Store;
  /** Every VM record (VmService's, for the usage). */
  records: () => Iterable<Readonly<VmRecord>>;
  /** Each role's default quota (the policies' `quota`). */
  roleDefaults: () => Record<Role, Quota>;
  /** Where changes are told (the event log). */
  audit?: (msg: string, data: Record<string, unknown>) => void;
}

/**
 * Quotas of users and classes, kept in `users.quota_json` and `classes.quota_json`.
 *
 *   quotas.check(owner, ask, { classId });  // throws 403 quota_exceeded
 *   quotas.usageOf(user)                    // rows for views/partials/quota-usage.hbs
 */
export class Quotas {
  private readonly opts: QuotasOptions;

  constructor(opts: QuotasOptions) {
    this.opts = opts;
  }

  /** A user's own quota (absent resources take their role's default). */
  ofUser(name: string): Quota | undefined {
    const row = this.opts.store.get('SELECT quota_json FROM users WHERE name = ?', name);
    if (!row) throw new NotFound(`user "${name}"`);
    return parseStored(row.quota_json);
  }

  ofClass(classId: string): Quota | undefined {
    const row = this.opts.store.get('SELECT quota_json FROM classes WHERE id = ?', classId);
    if (!row) throw new NotFound(`class "${classId}"`);
    return parseStored(row.quota_json);
  }

  /** What a user may hold: their own limits over their role's default. */
  limitsOf(user: Pick<User, 'name' | 'role'>): Limits {
    return resolve(this.ofUser(user.name), this.opts.roleDefaults()[user.role]);
  }

  limitsOfClass(classId: string): Limits {
    return resolve(this.ofClass(classId), undefined);
  }

  usageCounts(owner: string): Usage {
    return usageFrom(this.opts.records(), (vm) => vm.owner === owner);
  }

  classUsageCounts(classId: string): Usage {
    return usageFrom(this.opts.records(), (vm) => vm.classId === classId);
  }

  /** The user's usage against their quota, one row per resource. */
  usageOf(user: Pick<User, 'name' | 'role'>): UsageRow[] {
    return usageRows(this.limitsOf(user), this.usageCounts(user.name));
  }

  /** The class's VMs together against the class's quota. */
  usageOfClass(classId: string): UsageRow[] {
    return usageRows(this.limitsOfClass(classId), this.classUsageCounts(classId));
  }

  /**
   * Refuses (403 `quota_exceeded`) a new VM of `owner` that would go past the owner's quota or, for
   * a VM of a class, the class's. `actor` is who asks (the message says "you" to the owner).
   */
  check(owner: Pick<User, 'name' | 'role'>, ask: Ask, opts: { classId?: string | undefined; actor?: string } = {}): void {
    const over = overQuota(this.limitsOf(owner), this.usageCounts(owner.name), ask);
    if (over) throw quotaRefusal(opts.actor === undefined || opts.actor === owner.name ? 'you' : owner.name, over);
    if (opts.classId !== undefined) {
      const name = this.opts.store.get('SELECT name FROM classes WHERE id = ?', opts.classId)?.name;
      const classOver = overQuota(this.limitsOfClass(opts.classId), this.classUsageCounts(opts.classId), ask);
      if (classOver) throw quotaRefusal(`class ${String(name ?? opts.classId)}`, classOver);
    }
  }

  /** Sets (or with `null` clears) a user's own quota. */
  setUserQuota(name: string, quota: Quota | null, by: string): Quota | undefined {
    const checked = quota === null ? null : parseQuota(quota);
    if (this.opts.store.run('UPDATE users SET quota_json = ? WHERE name = ?', checked ? JSON.stringify(checked) : null, name).changes === 0) {
      throw new NotFound(`user "${name}"`);
    }
    this.opts.audit?.(`quota of user "${name}" set to ${describe(checked)} by ${by}`, { user: name, quota: checked, by });
    return checked ?? undefined;
  }

  setClassQuota(classId: string, quota: Quota | null, by: string): Quota | undefined {
    const checked = quota === null ? null : parseQuota(quota);
    if (this.opts.store.run('UPDATE classes SET quota_json = ? WHERE id = ?', checked ? JSON.stringify(checked) : null, classId).changes === 0) {
      throw new NotFound(`class "${classId}"`);
    }
    this.opts.audit?.(`quota of class ${classId} set to ${describe(checked)} by ${by}`, { classId, quota: checked, by });
    return checked ?? undefined;
  }
}

function parseQuota(q: unknown): Quota {
  const parsed = Quota.safeParse(q);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InvalidField(issue.path.map(String).join('.') || '(body)', issue.message);
  }
  return parsed.data;
}

/** `2 VMs, 4 vCPUs` or `the default`. */
export function describe(q: Quota | null | undefined): string {
  if (!q) return 'the default';
  const parts = RESOURCES.filter((r) => q[r] !== undefined).map((r) => (q[r] === null ? `no limit of ${LABELS[r]}` : amount(r, q[r]!)));
  return parts.length > 0 ? parts.join(', ') : 'the default';
}
