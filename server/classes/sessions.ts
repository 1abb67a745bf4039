// Class sessions: a teacher starts one VM per student of a class in one action, watches them as a grid,
// and at the end time (or "End now") every VM is shut down, its disk kept or deleted as chosen.
//
//   start ─▶ check (teacher of the class, template, end time, no other running session)
//         ─▶ session row `running` ─▶ VmService.create per student, all at once (each records `creating`
//            before its agent call, so the scheduler spreads them) ─▶ VMs tagged class_id, session_id,
//            start_on_boot=1 ─▶ refusals listed per student (scheduler's reasons, quota, name)
//   timer (clock) at ends_at, or end() ─▶ `ending` (start_on_boot=-1, off) ─▶ each VM shut down (keep) or
//            deleted ─▶ `ended`; a VM that cannot be reached yet is retried every minute
//   no awake host fits a student ─▶ every sleeping host is woken (RoomPower.wakeForDemand) ─▶ the student
//            waits ("waiting for a host to wake") ─▶ placed when a host comes back (or every 30 s) ─▶ past
//            WAKE_WAIT_MS, or once no host is left asleep and none fits: a failure with the reason (no VM made)
//   controller start ─▶ sessions past ends_at still `running` end at once; `ending` ones resume
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { TemplateName, VM_LIMITS, type VmState } from '../../wire/api.ts';
import { Conflict, Forbidden, InvalidField, NotFound, SkyError, fromZod, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { compareCodeUnits, compareNames } from '../../base/order.ts';
import type { Row, Store } from '../db/store.ts';
import type { Clock } from '../services.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';
import type { RoomPower } from '../hosts/wake.ts';
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
/** How long a student waits for sleeping hosts to wake before their VM is given up (a PC boots in a minute or two). */
export const WAKE_WAIT_MS = 10 * 60_000;
/** How often the waiting students are tried again, besides whenever a host comes back. */
export const WAKE_RETRY_MS = 30_000;

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

/** A student whose VM waits for sleeping hosts to wake: no VM is made (nothing reserved) until a host takes it. */
export interface SessionWaiting {
  student: string;
  /** When the hosts were woken for it, and when the wait ends (then it is a failure). */
  since: string;
  until: string;
  /** The hosts being woken (their labels). */
  hosts: string[];
  /** "waiting for a host to wake (lab-03, lab-04)". */
  message: string;
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
  /** The student's VM waits for a sleeping host to wake. */
  waiting?: SessionWaiting | undefined;
}

/** A session as the API and the pages show it. */
export interface SessionView extends ClassSession {
  className: string;
  /** Whole seconds until `endsAt` (0 once passed). */
  secondsLeft: number;
  tiles: SessionTile[];
  failures: SessionFailure[];
  /** VMs by state, for the summary line ("waiting": students whose VM waits for a host to wake). */
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
  hosts: Pick<HostRegistry, 'record' | 'on' | 'off'>;
  /** Wakes sleeping hosts when no awake one fits a student (the services set it; none: such students are refused). */
  room?: Pick<RoomPower, 'wakeForDemand'> | undefined;
  /** How long a student waits for a host to wake (default WAKE_WAIT_MS). */
  wakeWaitMs?: number;
  log: Logger;
  /** The user the end-of-session job acts as. */
  system: User;
  roster: Roster;
  /** The timers the end of sessions runs on (tests pass one they control). */
  clock?: Clock;
  /** The lease policy: how long kept disks stay after the end (a teacher's longest lease). */
  policies?: Pick<PolicyStore, 'current'>;
}

/** A student no awake host fits, with the scheduler's answer. */
interface NoFit {
  student: string;
  err: SkyError;
}

/** "waiting for a host to wake (lab-03, lab-04)". */
function waitingWords(hosts: string[]): string {
  const shown = hosts.length > 5 ? `${hosts.slice(0, 5).join(', ')} and ${hosts.length - 5} more` : hosts.join(', ');
  return `waiting for a host to wake (${shown})`;
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
  /** The creates of each session under way, settled (an end waits for them: a VM being created cannot be deleted yet). */
  private readonly creating = new Map<string, Set<Promise<unknown>>>();
  /** Students whose VM waits for a sleeping host to wake, by session. */
  private readonly waitingOf = new Map<string, SessionWaiting[]>();
  /** The last "no host fits" of each waiting student (`session\0student`): the reasons of its failure at the deadline. */
  private readonly lastNoFit = new Map<string, SkyError>();
  /** When each session's waiting students are tried again. */
  private readonly waitRetryAt = new Map<string, number>();
  /** Placements of waiting students under way, by session. */
  private readonly placing = new Map<string, Promise<void>>();
  /** Wakes sleeping hosts for students no awake host fits (none: they are refused with the scheduler's reasons). */
  room: Pick<RoomPower, 'wakeForDemand'> | undefined;
  private readonly wakeWaitMs: number;
  /** A host came back (woke, or was down): the waiting students may fit now (after its status is taken in). */
  private readonly onHostBack = (_host: HostRecord) => {
    setImmediate(() => {
      for (const s of this.sessions.values()) if (s.state === 'running' && this.waitingOf.get(s.id)?.length) void this.placeWaiting(s);
    });
  };
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
    this.room = opts.room;
    this.wakeWaitMs = opts.wakeWaitMs ?? WAKE_WAIT_MS;
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
    for (const r of this.store.all("SELECT key, value FROM settings WHERE key LIKE 'class-session-waiting:%'")) {
      const id = String(r.key).slice('class-session-waiting:'.length);
      try {
        const list = JSON.parse(String(r.value)) as SessionWaiting[];
        if (list.length > 0 && this.sessions.get(id)?.state === 'running') this.waitingOf.set(id, list);
      } catch (err) {
        this.log.warn(`the waiting students of class session ${id} could not be read and are left out: ${(err as Error).message}`, { key: String(r.key) });
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
    if (!this.started) this.opts.hosts.on('returned', this.onHostBack);
    this.started = true;
    this.tick();
  }

  /** Stops the timer; ends under way finish on their own (awaited up to `waitMs`). */
  async stop(waitMs = 1500): Promise<void> {
    if (this.started) this.opts.hosts.off('returned', this.onHostBack);
    this.started = false;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const under = [...this.ending.values(), ...this.placing.values()];
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
      else if (s.state === 'running' && this.nextWaitCheck(s.id) <= now) void this.placeWaiting(s);
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
      if (s.state === 'running') next = Math.min(next, Date.parse(s.endsAt), this.nextWaitCheck(s.id));
      else if (s.state === 'ending' && !this.ending.has(s.id)) next = Math.min(next, this.retryAt.get(s.id) ?? 0);
    }
    if (next === Infinity) return;
    const delay = Math.min(Math.max(0, next - this.clock.now()), MAX_TIMER_MS);
    this.timer = this.clock.setTimeout(() => this.tick(), delay);
  }

  /** When the waiting students of a session are next tried again or given up (Infinity: none waits, or a try is under way). */
  private nextWaitCheck(sessionId: string): number {
    const list = this.waitingOf.get(sessionId);
    if (!list?.length || this.placing.has(sessionId)) return Infinity;
    return Math.min(this.waitRetryAt.get(sessionId) ?? 0, ...list.map((w) => Date.parse(w.until)));
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
      .sort((a, b) => compareCodeUnits(b.createdAt, a.createdAt) || compareCodeUnits(a.id, b.id))
      .map((s) => this.render(s, cls.teacher ? undefined : user.name));
  }

  /** The newest `limit` sessions of every class `user` teaches or is in (an admin: all), newest first. */
  mine(user: User, limit = 50): SessionView[] {
    const classes = user.role === 'admin' ? undefined : new Set(this.roster.classesOf(user));
    return [...this.sessions.values()].filter((s) => !classes || classes.has(s.classId))
      .sort((a, b) => compareCodeUnits(b.createdAt, a.createdAt) || compareCodeUnits(a.id, b.id))
      .slice(0, limit)
      .map((s) => this.render(s, this.roster.teaches(user, s.classId) ? undefined : user.name));
  }

  /** The classes `user` may start a session for (id and name). */
  classesToTeach(user: User): Array<{ id: string; name: string }> {
    return this.roster.classesOf(user).filter((id) => this.roster.teaches(user, id)).map((id) => this.roster.classInfo(id))
      .filter((c): c is { id: string; name: string } => c !== undefined).sort((a, b) => compareNames(a.name, b.name));
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
    const waiting = this.waitingOf.get(session.id) ?? [];
    // Every student of the class, and anyone who had a VM in it and has left the class since.
    const students = this.roster.students(session.classId);
    const known = new Set(students.map((s) => s.name));
    for (const name of [...vmIds.keys(), ...failures.map((f) => f.student), ...waiting.map((w) => w.student)]) {
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
      const wait = vm ? undefined : waiting.find((w) => w.student === s.name);
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
        const what = wait ? 'waiting' : id ? 'deleted' : 'none';
        counts[what] = (counts[what] ?? 0) + 1;
      }
      if (failure) tile.failure = failure;
      if (wait) tile.waiting = wait;
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

    const failures: SessionFailure[] = [];
    this.failuresOf.set(session.id, failures);
    const owners: User[] = [];
    for (const student of students) {
      const owner = this.opts.users.get(student.name);
      if (owner) owners.push(owner);
      else failures.push({ student: student.name, code: 'not_found', message: `no user "${student.name}"` });
    }
    this.batching.add(session.id);
    const noFits: NoFit[] = [];
    const { made, settled } = this.requestVms(session, cls.name, owners, this.room ? noFits : undefined);
    const creatingMs = Math.round(performance.now() - began); // every VM recorded `creating`, its agent call under way
    // Refusals before any agent call (no host fits, quota, name) settle at once: they are in the answer.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (noFits.length > 0) await this.waitForWake(session, noFits);
    this.batching.delete(session.id);
    this.saveFailures(session.id);
    const waiting = this.waitingOf.get(session.id)?.length ?? 0;
    this.log.info(`class session ${session.id} of class ${cls.name} started by ${user.name}: ${made} of ${students.length} VMs requested` +
      `${waiting > 0 ? `, ${waiting} waiting for a host to wake` : ''}${failures.length > 0 ? `, ${failures.length} refused` : ''}; ` +
      `ends at ${session.endsAt}, disks ${session.keepDisks ? 'kept' : 'deleted'}`,
    { sessionId: session.id, classId, user: user.name, creatingMs });
    void settled.then(() => {
      const failed = this.failuresOf.get(session.id)?.length ?? 0;
      if (failed > 0) this.log.warn(`class session ${session.id}: ${failed} of ${students.length} students have no working VM (the session page lists why)`, { sessionId: session.id });
    });
    this.schedule();
    return this.render(session);
  }

  /**
   * Requests the VMs of `owners` for the session, all at once: each create records its VM `creating`
   * (and reserves its host) before its agent call, so the scheduler spreads them. A refusal before any
   * record settles within a tick: "no host fits" goes to `noFits` when given (the room may be woken
   * for it), any other refusal, and an agent's failure later, to the session's failures.
   */
  private requestVms(session: ClassSession, className: string, owners: User[], noFits?: NoFit[]): { made: number; settled: Promise<unknown> } {
    const system = this.opts.system;
    const taken = new Set(this.opts.vms.records(system).map((v) => v.name));
    const toTag: string[] = [];
    const creates: Array<Promise<void>> = [];
    for (const owner of owners) {
      const name = freeName(sessionVmName(className, owner.name), taken);
      taken.add(name);
      const vmBody = { template: session.template, vcpus: session.vcpus, memoryMiB: session.memoryMiB, name, ...(session.diskGiB !== undefined ? { diskGiB: session.diskGiB } : {}) };
      // Not awaited one by one: each create records its VM `creating` (and reserves its host) before its agent call.
      const call = this.opts.vms.create(owner, vmBody, undefined, { classId: session.classId, actor: session.teacher });
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
          if (noFits && sky.code === 'no_host_fits' && !made && !vmId) noFits.push({ student: owner.name, err: sky });
          else this.fail(session, owner.name, sky);
        },
      ));
    }
    this.tag(session, toTag, true);
    const settled = Promise.allSettled(creates);
    let under = this.creating.get(session.id);
    if (!under) this.creating.set(session.id, under = new Set());
    under.add(settled);
    void settled.then(() => {
      under.delete(settled);
      if (under.size === 0 && this.creating.get(session.id) === under) this.creating.delete(session.id);
    });
    return { made: toTag.length, settled };
  }

  // ---- students waiting for a host to wake ----

  /**
   * No awake host fits these students: wakes the sleeping hosts (every one asleep with a known MAC:
   * which of them would fit is not known until they answer) and lets the students wait for them until
   * the deadline. With nothing to wake, they are refused with the scheduler's reasons.
   */
  private async waitForWake(session: ClassSession, noFits: NoFit[]): Promise<void> {
    const hosts = await this.wake(session);
    if (hosts.length === 0) {
      for (const n of noFits) this.fail(session, n.student, n.err);
      return;
    }
    const now = this.clock.now();
    const since = new Date(now).toISOString();
    const until = new Date(now + this.wakeWaitMs).toISOString();
    const list = this.waitingOf.get(session.id) ?? [];
    for (const n of noFits) {
      list.push({ student: n.student, since, until, hosts, message: waitingWords(hosts) });
      this.lastNoFit.set(`${session.id}\0${n.student}`, n.err);
    }
    this.waitingOf.set(session.id, list);
    this.waitRetryAt.set(session.id, now + WAKE_RETRY_MS);
    this.saveWaiting(session.id);
    this.version++;
    this.log.info(`class session ${session.id}: no awake host fits ${noFits.length} student(s) (${noFits.map((n) => n.student).join(', ')}); ` +
      `waking ${hosts.join(', ')}: their VMs are placed as hosts come up, or given up at ${until}`, { sessionId: session.id });
  }

  /** Wakes the sleeping hosts for a session (the room's own pause between two wakes applies); their labels, or none. */
  private async wake(session: ClassSession): Promise<string[]> {
    if (!this.room) return [];
    try {
      return await this.room.wakeForDemand();
    } catch (err) {
      this.log.warn(`class session ${session.id}: the sleeping hosts could not be woken: ${(err as Error).message}`, { sessionId: session.id });
      return [];
    }
  }

  /** Tries the waiting students of a running session again (one try at a time per session). */
  private placeWaiting(session: ClassSession): Promise<void> {
    const under = this.placing.get(session.id);
    if (under) return under;
    const job = this.placeWaitingNow(session).catch((err: unknown) => {
      this.log.error(`class session ${session.id}: placing the students waiting for a host failed; tried again in ${WAKE_RETRY_MS / 1000} s`, { err, sessionId: session.id });
    }).finally(() => {
      this.placing.delete(session.id);
      this.schedule();
    });
    this.placing.set(session.id, job);
    return job;
  }

  /**
   * Places the waiting students that fit now. Those that still do not fit keep waiting while hosts are
   * being woken; past their deadline, or once no host is left asleep, they fail with the scheduler's
   * reasons. A student who fails got no VM record at all: nothing is left half-made.
   */
  private async placeWaitingNow(session: ClassSession): Promise<void> {
    const list = this.waitingOf.get(session.id);
    this.waitRetryAt.set(session.id, this.clock.now() + WAKE_RETRY_MS);
    if (!list?.length || session.state !== 'running') return;
    const owners: User[] = [];
    this.batching.add(session.id);
    const noFits: NoFit[] = [];
    try {
      for (const w of list) {
        const owner = this.opts.users.get(w.student);
        if (owner) owners.push(owner);
        else this.fail(session, w.student, new NotFound(`user "${w.student}"`));
      }
      const { made } = this.requestVms(session, this.roster.classInfo(session.classId)?.name ?? session.classId, owners, noFits);
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (made > 0) this.log.info(`class session ${session.id}: ${made} VM(s) of students who waited for a host placed`, { sessionId: session.id });
      for (const n of noFits) this.lastNoFit.set(`${session.id}\0${n.student}`, n.err);
      const still = new Set(noFits.map((n) => n.student));
      let left = list.filter((w) => still.has(w.student));
      const hosts = left.length > 0 ? await this.wake(session) : [];
      if (session.state !== 'running') return; // ended meanwhile: the end dealt with the waiting students
      const now = this.clock.now();
      const keep: SessionWaiting[] = [];
      for (const w of left) {
        const last = this.lastNoFit.get(`${session.id}\0${w.student}`);
        const reasons = last?.details;
        const why = last ? `: ${last.message}` : '';
        if (Date.parse(w.until) <= now) {
          this.fail(session, w.student, new SkyError(503, 'wake_timeout',
            `no host woke in time: waited ${Math.round((Date.parse(w.until) - Date.parse(w.since)) / 60_000)} min for ${w.hosts.join(', ')} to wake and take this VM, and none did${why}`, reasons));
        } else if (hosts.length === 0) {
          this.fail(session, w.student, new SkyError(503, 'no_host_fits', `no host is left asleep to wake, and none awake fits this VM${why}`, reasons));
        } else {
          keep.push({ ...w, hosts, message: waitingWords(hosts) });
          continue;
        }
        this.lastNoFit.delete(`${session.id}\0${w.student}`);
      }
      left = keep;
      for (const w of list) if (!still.has(w.student)) this.lastNoFit.delete(`${session.id}\0${w.student}`);
      if (left.length > 0) this.waitingOf.set(session.id, left);
      else this.waitingOf.delete(session.id);
    } finally {
      this.batching.delete(session.id);
    }
    this.saveWaiting(session.id);
    this.saveFailures(session.id);
    this.version++;
  }

  private saveWaiting(sessionId: string): void {
    const list = this.waitingOf.get(sessionId) ?? [];
    try {
      if (list.length === 0) this.store.run('DELETE FROM settings WHERE key = ?', `class-session-waiting:${sessionId}`);
      else {
        this.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
          `class-session-waiting:${sessionId}`, JSON.stringify(list));
      }
    } catch (err) {
      this.log.warn(`class session ${sessionId}: its waiting students were not saved: ${(err as Error).message}`, { sessionId });
    }
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
    if (Array.isArray(rejected)) { // no_host_fits, or wake_timeout with the scheduler's last answer
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
    // Students still waiting for a host get no VM: none was made for them, so there is nothing to undo.
    for (const w of this.waitingOf.get(session.id) ?? []) {
      this.fail(session, w.student, new SkyError(503, 'session_ended', `the session ended before a host woke for this VM (${w.hosts.join(', ')} were being woken)`));
      this.lastNoFit.delete(`${session.id}\0${w.student}`);
    }
    if (this.waitingOf.delete(session.id)) this.saveWaiting(session.id);
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
    await this.placing.get(session.id);
    await Promise.allSettled([...(this.creating.get(session.id) ?? [])]);
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
