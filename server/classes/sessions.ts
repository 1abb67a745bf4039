// Class sessions: a teacher starts one VM per student of a class in one action, watches them as a grid,
// and at the end time (or "End now") every VM is shut down, its disk kept or deleted as chosen.
//
//   start ─▶ check (teacher of the class, template, end time, no other running session)
//         ─▶ session row `running` ─▶ VmService.create per student, all at once (each records `creating`
//            before its agent call, so the scheduler spreads them) ─▶ VMs tagged class_id, session_id,
//            start_on_boot=1 ─▶ refusals listed per student (scheduler's reasons, quota, name)
//   timer (clock) at ends_at, or end() ─▶ `ending` (start_on_boot=-1, off) ─▶ each VM shut down (keep) or
//            deleted ─▶ `ended`; a VM that cannot be reached yet is retried every minute
//   controller start ─▶ sessions past ends_at still `running` end at once; `ending` ones resume
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { TemplateName, VM_LIMITS, type VmState } from '../../wire/api.ts';
import { Conflict, Forbidden, InvalidField, NotFound, fromZod, toSkyError, type SkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { Row, Store } from '../db/store.ts';
import type { Clock } from '../services.ts';
import type { HostRegistry } from '../hosts/registry.ts';
import type { Templates } from '../templates/templates.ts';
import type { User, Users } from '../users/users.ts';
import type { VmRecord, VmService } from '../vms/vms.ts';
import type { ClassAccess } from './access.ts';
import type { Classes } from './classes.ts';
import type { PolicyStore } from '../vms/leases.ts';

/** The longest session, start to end (a school day and then some). */
export const MAX_SESSION_MINUTES = 24 * 60;
/** How soon a session that could not shut every VM down tries again. */
export const END_RETRY_MS = 60_000;
/** Timers are set at most this far ahead (then set again): Node's timers overflow past ~24.8 days. */
const MAX_TIMER_MS = 60 * 60_000;

/** What a teacher asks for: `POST /api/classes/:id/sessions`. */
export const SessionRequest = z.strictObject({
  template: TemplateName.describe('the template every VM starts from, e.g. "tiny"'),
  vcpus: z.number().int().min(VM_LIMITS.vcpus.min).max(VM_LIMITS.vcpus.max).default(1).describe('virtual CPUs of each VM'),
  memoryMiB: z.number().int().min(VM_LIMITS.memoryMiB.min).max(VM_LIMITS.memoryMiB.max).default(512).describe('memory of each VM in MiB'),
  diskGiB: z.number().int().min(VM_LIMITS.diskGiB.min).max(VM_LIMITS.diskGiB.max).optional().describe("each VM's disk in GiB (default: the template's)"),
  endsAt: z.iso.datetime({ offset: true }).optional().describe('when the session ends, e.g. "2026-12-02T10:45:00Z" (or give minutes)'),
  minutes: z.number().int().min(1).max(MAX_SESSION_MINUTES).optional().describe('the session ends this many minutes from now (or give endsAt)'),
  keepDisks: z.boolean().default(false).describe('at the end, shut the VMs down and keep their disks (true) or delete them (false)'),
});
export type SessionRequest = z.input<typeof SessionRequest>;

export type SessionState = 'running' | 'ending' | 'ended';

/** A session as kept (the `class_sessions` table, mirrored in memory). */
export interface ClassSession {
  id: string;
  classId: string;
  teacher: string;
  template: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB?: number | undefined;
  endsAt: string;
  keepDisks: boolean;
  state: SessionState;
  createdAt: string;
  endedAt?: string | undefined;
}

/** A student the session could not give a VM (or whose VM failed), with the reason in full. */
export interface SessionFailure {
  student: string;
  /** The error code: `no_host_fits`, a quota refusal, `conflict`, an agent's error... */
  code: string;
  message: string;
  /** For `no_host_fits`: why each host was left out, as the scheduler said. */
  reasons?: Array<{ host: string; hostname: string; reason: string; message: string }>;
}

/** One student's tile of the grid. */
export interface SessionTile {
  student: string;
  displayName?: string | undefined;
  vm?: {
    id: string; name: string; state: VmState; host: string; hostname?: string | undefined;
    error?: string | undefined; progress?: string | undefined; consoleUrl: string;
  } | undefined;
  /** Why this student has no VM (or a failed one), when that is the case. */
  failure?: SessionFailure | undefined;
}

/** A session as the API and the pages show it. */
export interface SessionView extends ClassSession {
  className: string;
  /** Whole seconds until `endsAt` (0 once passed). */
  secondsLeft: number;
  tiles: SessionTile[];
  failures: SessionFailure[];
  /** VMs by state, for the summary line. */
  counts: Record<string, number>;
}

/** Who is in which class, as sessions need it (`classRoster` over the Classes service; tests may give their own). */
export interface Roster {
  classInfo(classId: string): { id: string; name: string } | undefined;
  students(classId: string): Array<{ name: string; displayName?: string | undefined }>;
  /** Whether `user` teaches the class (an admin counts as one). */
  teaches(user: User, classId: string): boolean;
  /** Whether `user` is a student of the class. */
  isStudent(user: User, classId: string): boolean;
  /** The classes `user` teaches or is a student of (an admin: every class). */
  classesOf(user: User): string[];
}

/** The roster from the Classes service (server/classes/classes.ts) and its access rules (access.ts). */
export function classRoster(classes: Pick<Classes, 'get' | 'ofUser'>, access: Pick<ClassAccess, 'teaches' | 'classesOf'>, users: Pick<Users, 'get'>): Roster {
  return {
    classInfo(classId) {
      const c = classes.get(classId);
      return c ? { id: c.id, name: c.name } : undefined;
    },
    students(classId) {
      return (classes.get(classId)?.students ?? []).map((name) => {
        const displayName = users.get(name)?.displayName;
        return { name, ...(displayName ? { displayName } : {}) };
      });
    },
    teaches: (user, classId) => access.teaches(user, { id: classId }),
    isStudent: (user, classId) => classes.ofUser(user.name).attending.has(classId),
    classesOf(user) {
      const mine = classes.ofUser(user.name);
      return user.role === 'admin' ? access.classesOf(user).map((c) => c.id) : [...new Set([...mine.teaching, ...mine.attending])];
    },
  };
}

export interface SessionServiceOptions {
  store: Store;
  vms: VmService;
  users: Pick<Users, 'get'>;
  templates: Pick<Templates, 'find'>;
  hosts: Pick<HostRegistry, 'record'>;
  log: Logger;
  /** The user the end-of-session job acts as. */
  system: User;
  roster: Roster;
  /** The timers the end of sessions runs on (tests pass one they control). */
  clock?: Clock;
  /** The lease policy: how long kept disks stay after the end (a teacher's longest lease). */
  policies?: Pick<PolicyStore, 'current'>;
}

const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};

function rowToSession(r: Row): ClassSession {
  return {
    id: String(r.id), classId: String(r.class_id), teacher: String(r.teacher), template: String(r.template),
    vcpus: Number(r.vcpus), memoryMiB: Number(r.memory_mib), diskGiB: r.disk_gib === null || r.disk_gib === undefined ? undefined : Number(r.disk_gib),
    endsAt: String(r.ends_at), keepDisks: Number(r.keep_disks) === 1, state: r.state as SessionState, createdAt: String(r.created_at),
    endedAt: r.ended_at ? String(r.ended_at) : undefined,
  };
}

/**
 * `7b-alice`: a valid VM name from the class's and the student's names (at most 63 characters); a
 * student named after the class already (`7b-01`, from a numbered import) keeps their name alone.
 */
export function sessionVmName(className: string, student: string): string {
  const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-{2,}/g, '-').replace(/^-+|-+$/g, '');
  const who = slug(student).slice(0, 40).replace(/-+$/, '') || 'student';
  const cls = slug(className).slice(0, 62 - who.length).replace(/-+$/, '') || 'class';
  return who.startsWith(`${cls}-`) ? who : `${cls}-${who}`;
}

/** `name`, or `name-2`, `name-3`... whichever is free (kept within 63 characters). */
function freeName(name: string, taken: Set<string>): string {
  if (!taken.has(name)) return name;
  for (let i = 2; ; i++) {
    const suffix = `-${i}`;
    const candidate = name.slice(0, 63 - suffix.length).replace(/-+$/, '') + suffix;
    if (!taken.has(candidate)) return candidate;
  }
}

/**
 * Class sessions. Reads and actions take the acting user: a teacher of the class (or an admin) sees
 * every tile and acts; a student of the class sees the session with their own tile only; anyone
 * else gets a 404.
 *
 *   const view = await services.sessions.start(teacher, classId, { template: 'tiny', minutes: 45 });
 *   services.sessions.view(teacher, view.id); await services.sessions.end(teacher, view.id);
 */
export class SessionService {
  private readonly opts: SessionServiceOptions;
  private readonly store: Store;
  private readonly log: Logger;
  private readonly clock: Clock;
  roster: Roster;
  private readonly sessions = new Map<string, ClassSession>();
  /** Each session's VMs by student (from vms.session_id; a VM deleted since is simply missing from VmService). */
  private readonly vmsOf = new Map<string, Map<string, string>>();
  private readonly failuresOf = new Map<string, SessionFailure[]>();
  /** The creates of a session just started, settled (an end waits for them: a VM being created cannot be deleted yet). */
  private readonly creating = new Map<string, Promise<unknown>>();
  /** Ends under way, by session id. */
  private readonly ending = new Map<string, Promise<void>>();
  /** When an `ending` session tries its VMs again. */
  private readonly retryAt = new Map<string, number>();
  /** Sessions being started: their refusals are saved once, together, not one write each. */
  private readonly batching = new Set<string>();
  private timer: unknown;
  private started = false;
  /** Changes with every session change: a version for the pages' polls. */
  version = 0;

  constructor(opts: SessionServiceOptions) {
    this.opts = opts;
    this.store = opts.store;
    this.log = opts.log;
    this.clock = opts.clock ?? realClock;
    this.roster = opts.roster;
    for (const r of this.store.all('SELECT * FROM class_sessions')) this.sessions.set(String(r.id), rowToSession(r));
    for (const r of this.store.all('SELECT id, owner, session_id FROM vms WHERE session_id IS NOT NULL')) {
      this.vmMap(String(r.session_id)).set(String(r.owner), String(r.id));
    }
    for (const r of this.store.all("SELECT key, value FROM settings WHERE key LIKE 'class-session-failures:%'")) {
      try {
        this.failuresOf.set(String(r.key).slice('class-session-failures:'.length), JSON.parse(String(r.value)) as SessionFailure[]);
      } catch (err) {
        this.log.warn(`the failures list of a class session could not be read and is left out: ${(err as Error).message}`, { key: String(r.key) });
      }
    }
  }

  private vmMap(sessionId: string): Map<string, string> {
    let m = this.vmsOf.get(sessionId);
    if (!m) this.vmsOf.set(sessionId, m = new Map());
    return m;
  }

  // ---- the end timer ----

  /** Ends the sessions whose time is up (at once after a controller restart), then keeps the timer set. */
  startTimer(): void {
    this.started = true;
    this.tick();
  }

  /** Stops the timer; ends under way finish on their own (awaited up to `waitMs`). */
  async stop(waitMs = 1500): Promise<void> {
    this.started = false;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const under = [...this.ending.values()];
    if (under.length === 0) return;
    let wait: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(under), new Promise((r) => { wait = setTimeout(r, waitMs); })]);
    clearTimeout(wait);
  }

  /** Ends what is due and sets the timer for the next due moment. */
  private tick(): void {
    if (!this.started) return;
    const now = this.clock.now();
    for (const s of this.sessions.values()) {
      if (s.state === 'running' && Date.parse(s.endsAt) <= now) this.beginEnd(s, 'its end time came');
      else if (s.state === 'ending' && !this.ending.has(s.id) && (this.retryAt.get(s.id) ?? 0) <= now) this.runEnd(s);
    }
    this.schedule();
  }

  private schedule(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.started) return;
    let next = Infinity;
    for (const s of this.sessions.values()) {
      if (s.state === 'running') next = Math.min(next, Date.parse(s.endsAt));
      else if (s.state === 'ending' && !this.ending.has(s.id)) next = Math.min(next, this.retryAt.get(s.id) ?? 0);
    }
    if (next === Infinity) return;
    const delay = Math.min(Math.max(0, next - this.clock.now()), MAX_TIMER_MS);
    this.timer = this.clock.setTimeout(() => this.tick(), delay);
  }

  // ---- reading ----

  private requireSession(user: User, id: string): { session: ClassSession; teacher: boolean } {
    const session = this.sessions.get(id);
    if (session) {
      if (this.roster.teaches(user, session.classId)) return { session, teacher: true };
      if (this.roster.isStudent(user, session.classId)) return { session, teacher: false };
    }
    throw new NotFound(`class session "${id}"`);
  }

  private requireClass(user: User, classId: string): { id: string; name: string; teacher: boolean } {
    const cls = this.roster.classInfo(classId);
    if (cls) {
      if (this.roster.teaches(user, classId)) return { ...cls, teacher: true };
      if (this.roster.isStudent(user, classId)) return { ...cls, teacher: false };
    }
    throw new NotFound(`class "${classId}"`);
  }

  /** A session with its grid: every student's tile for a teacher, only their own for a student. */
  view(user: User, id: string): SessionView {
    const { session, teacher } = this.requireSession(user, id);
    return this.render(session, teacher ? undefined : user.name);
  }

  /** The sessions of a class, newest first (tiles as `view` gives them). */
  list(user: User, classId: string): SessionView[] {
    const cls = this.requireClass(user, classId);
    return [...this.sessions.values()].filter((s) => s.classId === classId)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id))
      .map((s) => this.render(s, cls.teacher ? undefined : user.name));
  }

  /** The newest `limit` sessions of every class `user` teaches or is in (an admin: all), newest first. */
  mine(user: User, limit = 50): SessionView[] {
    const classes = user.role === 'admin' ? undefined : new Set(this.roster.classesOf(user));
    return [...this.sessions.values()].filter((s) => !classes || classes.has(s.classId))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id))
      .slice(0, limit)
      .map((s) => this.render(s, this.roster.teaches(user, s.classId) ? undefined : user.name));
  }

  /** The classes `user` may start a session for (id and name). */
  classesToTeach(user: User): Array<{ id: string; name: string }> {
    return this.roster.classesOf(user).filter((id) => this.roster.teaches(user, id)).map((id) => this.roster.classInfo(id))
      .filter((c): c is { id: string; name: string } => c !== undefined).sort((a, b) => a.name.localeCompare(b.name));
  }

  private vmRecord(id: string): VmRecord | undefined {
    try {
      return this.opts.vms.require(this.opts.system, id);
    } catch (err) {
      if ((err as SkyError).status === 404) return undefined; // deleted since: the tile says so
      throw err;
    }
  }

  private render(session: ClassSession, onlyStudent?: string): SessionView {
    const cls = this.roster.classInfo(session.classId);
    const vmIds = this.vmsOf.get(session.id) ?? new Map<string, string>();
    const failures = this.failuresOf.get(session.id) ?? [];
    // Every student of the class, and anyone who had a VM in it and has left the class since.
    const students = this.roster.students(session.classId);
    const known = new Set(students.map((s) => s.name));
    for (const name of [...vmIds.keys(), ...failures.map((f) => f.student)]) {
      if (!known.has(name)) {
        known.add(name);
        students.push({ name });
      }
    }
    const counts: Record<string, number> = {};
    const tiles: SessionTile[] = [];
    for (const s of students) {
      if (onlyStudent !== undefined && s.name !== onlyStudent) continue;
      const id = vmIds.get(s.name);
      const vm = id ? this.vmRecord(id) : undefined;
      const failure = failures.find((f) => f.student === s.name);
      // Before the session started a student joined later has no VM and no failure: nothing to show but the name.
      const tile: SessionTile = { student: s.name, ...(s.displayName ? { displayName: s.displayName } : {}) };
      if (vm) {
        const view = this.opts.vms.view(vm);
        tile.vm = {
          id: vm.id, name: vm.name, state: vm.state, host: vm.hostId, ...(view.hostname ? { hostname: view.hostname } : {}),
          ...(vm.error ? { error: vm.error } : {}), ...(view.progress ? { progress: view.progress } : {}), consoleUrl: view.consoleUrl,
        };
        counts[vm.state] = (counts[vm.state] ?? 0) + 1;
      } else {
        counts[id ? 'deleted' : 'none'] = (counts[id ? 'deleted' : 'none'] ?? 0) + 1;
      }
      if (failure) tile.failure = failure;
      tiles.push(tile);
    }
    const secondsLeft = Math.max(0, Math.floor((Date.parse(session.endsAt) - this.clock.now()) / 1000));
    return {
      ...session, className: cls?.name ?? session.classId, secondsLeft: session.state === 'running' ? secondsLeft : 0, tiles,
      failures: onlyStudent === undefined ? failures : failures.filter((f) => f.student === onlyStudent), counts,
    };
  }

  // ---- starting ----

  /**
   * Starts a session of class `classId`: one VM per student, all requested at once (each VM is
   * `creating` when this returns). Refusals (no host fits, a quota, a taken name) are listed per
   * student with their reasons; an agent's failure later shows on the tile and in the list.
   */
  async start(user: User, classId: string, body: unknown): Promise<SessionView> {
    const began = performance.now();
    const cls = this.requireClass(user, classId);
    if (!cls.teacher) throw new Forbidden(`only a teacher of class ${cls.name} starts its sessions`);
    const parsed = SessionRequest.safeParse(body ?? {});
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    const now = this.clock.now();
    if ((req.endsAt === undefined) === (req.minutes === undefined)) throw new InvalidField('endsAt', 'give either endsAt or minutes');
    const endsAtMs = req.endsAt !== undefined ? Date.parse(req.endsAt) : now + req.minutes! * 60_000;
    if (endsAtMs <= now + 30_000) throw new InvalidField('endsAt', 'must be in the future (at least a minute from now)');
    if (endsAtMs > now + MAX_SESSION_MINUTES * 60_000) throw new InvalidField('endsAt', `must be within ${MAX_SESSION_MINUTES / 60} hours from now`);
    if (!this.opts.templates.find(req.template)) throw new InvalidField('template', `no template "${req.template}" in the catalog or on any host`);
    const running = [...this.sessions.values()].find((s) => s.classId === classId && s.state === 'running');
    if (running) throw new Conflict(`class ${cls.name} already has a session running (${running.id}, until ${running.endsAt}): end it first`);
    const students = this.roster.students(classId);
    if (students.length === 0) throw new Conflict(`class ${cls.name} has no students yet: add them first`);

    const session: ClassSession = {
      id: randomBytes(6).toString('hex'), classId, teacher: user.name, template: req.template, vcpus: req.vcpus, memoryMiB: req.memoryMiB,
      ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}), endsAt: new Date(endsAtMs).toISOString(), keepDisks: req.keepDisks,
      state: 'running', createdAt: new Date(now).toISOString(),
    };
    this.store.run(`INSERT INTO class_sessions (id, class_id, teacher, template, vcpus, memory_mib, disk_gib, ends_at, keep_disks, state, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)`, session.id, classId, user.name, session.template, session.vcpus, session.memoryMiB,
    session.diskGiB ?? null, session.endsAt, session.keepDisks ? 1 : 0, session.createdAt);
    this.sessions.set(session.id, session);
    this.version++;

    const system = this.opts.system;
    const taken = new Set(this.opts.vms.records(system).map((v) => v.name));
    const failures: SessionFailure[] = [];
    this.failuresOf.set(session.id, failures);
    const toTag: string[] = [];
    this.batching.add(session.id);
    const creates: Array<Promise<void>> = [];
    for (const student of students) {
      const owner = this.opts.users.get(student.name);
      if (!owner) {
        failures.push({ student: student.name, code: 'not_found', message: `no user "${student.name}"` });
        continue;
      }
      const name = freeName(sessionVmName(cls.name, student.name), taken);
      taken.add(name);
      const vmBody = { template: req.template, vcpus: req.vcpus, memoryMiB: req.memoryMiB, name, ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}) };
      // Not awaited one by one: each create records its VM `creating` (and reserves its host) before its agent call.
      const call = this.opts.vms.create(owner, vmBody, undefined, { classId, actor: user.name });
      const made = this.opts.vms.records(system, { owner: owner.name }).find((v) => v.name === name);
      if (made) {
        this.vmMap(session.id).set(owner.name, made.id);
        toTag.push(made.id);
      }
      creates.push(call.then(
        (answer) => {
          // A create that recorded its VM only after an await is tagged now.
          if (!made) this.adopt(session, owner.name, answer.vm.id);
        },
        (err: unknown) => {
          const sky = toSkyError(err);
          const vmId = (sky.details as { vm?: { id?: string } } | undefined)?.vm?.id;
          if (vmId && !made) this.adopt(session, owner.name, vmId);
          this.fail(session, owner.name, sky);
        },
      ));
    }
    this.tag(session, toTag, true);
    const creatingMs = Math.round(performance.now() - began); // every VM recorded `creating`, its agent call under way
    // Refusals before any agent call (no host fits, quota, name) settle at once: they are in the answer.
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.batching.delete(session.id);
    this.saveFailures(session.id);
    const started = toTag.length;
    this.log.info(`class session ${session.id} of class ${cls.name} started by ${user.name}: ${started} of ${students.length} VMs requested` +
      `${failures.length > 0 ? `, ${failures.length} refused` : ''}; ends at ${session.endsAt}, disks ${session.keepDisks ? 'kept' : 'deleted'}`,
    { sessionId: session.id, classId, user: user.name, creatingMs });
    const settled = Promise.allSettled(creates);
    this.creating.set(session.id, settled);
    void settled.then(() => {
      this.creating.delete(session.id);
      const failed = this.failuresOf.get(session.id)?.length ?? 0;
      if (failed > 0) this.log.warn(`class session ${session.id}: ${failed} of ${students.length} students have no working VM (the session page lists why)`, { sessionId: session.id });
    });
    this.schedule();
    return this.render(session);
  }

  /**
   * Tags VMs as the session's (class, session, start on boot while it runs: 1, else -1 off), in one
   * transaction. A lease (the class's or template's default) that would end before the session is
   * moved to the session's end: the lesson is not cut short.
   */
  private tag(session: ClassSession, vmIds: string[], startOnBoot: boolean): void {
    if (vmIds.length === 0) return;
    try {
      this.store.tx(() => {
        for (const id of vmIds) {
          this.store.run('UPDATE vms SET class_id = ?, session_id = ?, start_on_boot = ? WHERE id = ?', session.classId, session.id, startOnBoot ? 1 : -1, id);
          const expiresAt = this.vmRecord(id)?.expiresAt;
          if (startOnBoot && expiresAt !== undefined && expiresAt < session.endsAt) this.opts.vms.markLease(id, { expiresAt: session.endsAt });
        }
      });
    } catch (err) {
      // The store is closed (shutdown): the session's VMs keep their record; the grid finds them by name at the next start.
      this.log.warn(`class session ${session.id}: its VMs could not be tagged: ${(err as Error).message}`, { sessionId: session.id });
    }
  }

  private adopt(session: ClassSession, student: string, vmId: string): void {
    this.vmMap(session.id).set(student, vmId);
    this.tag(session, [vmId], session.state === 'running');
    this.version++;
  }

  private fail(session: ClassSession, student: string, err: SkyError): void {
    const failures = this.failuresOf.get(session.id)!;
    const failure: SessionFailure = { student, code: err.code, message: err.message };
    const rejected = (err.details as { rejected?: Array<{ host: string; hostname?: string; reason: string; message: string }> } | undefined)?.rejected;
    if (err.code === 'no_host_fits' && Array.isArray(rejected)) {
      // `hostname` in the refusal is the host's label (server/hosts/names.ts): two PCs may share a hostname
      failure.reasons = rejected.map((r) => ({ host: r.host, hostname: r.hostname ?? this.opts.hosts.record(r.host)?.hostname ?? r.host, reason: r.reason, message: r.message }));
    }
    failures.push(failure);
    this.version++;
    if (!this.batching.has(session.id)) this.saveFailures(session.id);
  }

  private saveFailures(sessionId: string): void {
    const failures = this.failuresOf.get(sessionId) ?? [];
    try {
      this.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
        `class-session-failures:${sessionId}`, JSON.stringify(failures));
    } catch (err) {
      this.log.warn(`class session ${sessionId}: its failures list was not saved: ${(err as Error).message}`, { sessionId });
    }
  }

  // ---- ending ----

  /** "End now": the session ends at once (its VMs shut down or deleted in the background; `settled` waits for them). */
  end(user: User, id: string): SessionView {
    const { session, teacher } = this.requireSession(user, id);
    if (!teacher) throw new Forbidden('only a teacher of the class ends its session');
    if (session.state === 'running') this.beginEnd(session, `${user.name} ended it`);
    return this.render(session);
  }

  /** Resolves when the end under way of session `id` (if any) has done what it could. */
  async settled(id: string): Promise<void> {
    await this.ending.get(id);
  }

  private beginEnd(session: ClassSession, why: string): void {
    const endedEarly = Date.parse(session.endsAt) > this.clock.now();
    session.state = 'ending';
    if (endedEarly) session.endsAt = new Date(this.clock.now()).toISOString();
    this.store.tx(() => {
      this.store.run("UPDATE class_sessions SET state = 'ending', ends_at = ? WHERE id = ?", session.endsAt, session.id);
      this.store.run('UPDATE vms SET start_on_boot = -1 WHERE session_id = ?', session.id); // -1: off (0 would be the template's default)
      if (session.keepDisks) this.leaseKeptDisks(session);
    });
    this.version++;
    this.log.info(`class session ${session.id} ends (${why}): its VMs are ${session.keepDisks ? 'shut down, disks kept' : 'deleted'}`, { sessionId: session.id });
    this.runEnd(session);
  }

  /**
   * Kept disks are the students' work: their leases run from the end for as long as a teacher may lease
   * (30 days by default; no end when teachers have no maximum). The lease of the lesson itself would
   * have them deleted a grace period after it.
   */
  private leaseKeptDisks(session: ClassSession): void {
    const max = this.opts.policies?.current().lease.maxMinutes.teacher;
    if (max === undefined) return;
    const expiresAt = max === null ? undefined : new Date(Date.parse(session.endsAt) + max * 60_000).toISOString();
    for (const id of this.vmsOf.get(session.id)?.values() ?? []) {
      const vm = this.vmRecord(id);
      if (vm?.expiresAt && (expiresAt === undefined || vm.expiresAt < expiresAt)) {
        this.opts.vms.markLease(id, { expiresAt, leaseWarnedAt: undefined, leaseEndedAt: undefined });
      }
    }
  }

  private runEnd(session: ClassSession): void {
    const job = this.endVms(session).catch((err: unknown) => {
      this.log.error(`class session ${session.id}: ending it failed; tried again in a minute`, { err, sessionId: session.id });
      return false;
    }).then((done) => {
      this.ending.delete(session.id);
      if (done) {
        session.state = 'ended';
        session.endedAt = new Date(this.clock.now()).toISOString();
        this.retryAt.delete(session.id);
        try {
          this.store.run("UPDATE class_sessions SET state = 'ended', ended_at = ? WHERE id = ?", session.endedAt, session.id);
          this.log.info(`class session ${session.id} ended`, { sessionId: session.id });
        } catch (err) {
          // The store is closed (shutdown): the session stays `ending` on disk and the next start finishes it.
          this.log.warn(`class session ${session.id}: its end was not recorded: ${(err as Error).message}`, { sessionId: session.id });
        }
      } else {
        this.retryAt.set(session.id, this.clock.now() + END_RETRY_MS);
      }
      this.version++;
      this.schedule();
    });
    this.ending.set(session.id, job);
  }

  /** Shuts down or deletes each VM of the session; true when none is left to do. */
  private async endVms(session: ClassSession): Promise<boolean> {
    const system = this.opts.system;
    await this.creating.get(session.id);
    const ids = [...(this.vmsOf.get(session.id)?.values() ?? [])];
    const outcomes = await Promise.all(ids.map(async (id): Promise<boolean> => {
      const vm = this.vmRecord(id);
      if (!vm) return true;
      try {
        if (!session.keepDisks) {
          if (vm.state === 'deleting') return false;
          await this.opts.vms.remove(system, id);
          return true;
        }
        if (vm.state === 'shutoff' || vm.state === 'error') return true;
        if (vm.state === 'creating' || vm.state === 'deleting') return false;
        try {
          await this.opts.vms.action(system, id, 'shutdown');
        } catch (err) {
          // A guest that ignores the ACPI request is powered off: the session's end is a hard stop.
          if (toSkyError(err).code !== 'shutdown_timeout') throw err;
          await this.opts.vms.action(system, id, 'poweroff');
        }
        return true;
      } catch (err) {
        const sky = toSkyError(err);
        if (sky.status === 404) return true;
        this.log.warn(`class session ${session.id}: VM ${vm.name} could not be ${session.keepDisks ? 'shut down' : 'deleted'} yet (${sky.message}); tried again in a minute`,
          { sessionId: session.id, vmId: id });
        return false;
      }
    }));
    return outcomes.every(Boolean);
  }
}
