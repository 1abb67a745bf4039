// A room that sleeps: wake every sleeping host at once, wake the room on a schedule before the first
// lesson ("weekdays 07:30", settings key `wake.schedule`) and put it to sleep in the evening (hosts
// without running VMs, `sleep.schedule`), wake sleeping hosts when the ready ones cannot fit a
// request, and shut a drained host's VMs down at the time the admin set.
//
//   wake-all / schedule / no host fits ──▶ hosts asleep or down with a MAC ──▶ registry.wake (magic packet)
//   every minute: drained hosts whose shutdownVmsAt passed ──▶ shutdown of each running VM
import cron, { type ScheduledTask } from 'node-cron';
import { InvalidField, SkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { Store } from '../db/store.ts';
import { isLoopback } from '../../base/tls.ts';
import type { HostRecord, HostRegistry } from './registry.ts';
import { hostNames } from './names.ts';
import { addressOfUrl } from './wol.ts';

/** The settings key of the wake-up schedule (the admin's words, e.g. `weekdays 07:30`). */
export const WAKE_SCHEDULE_KEY = 'wake.schedule';
/** The settings key of the evening's sleep (e.g. `weekdays 18:00`). */
export const SLEEP_SCHEDULE_KEY = 'sleep.schedule';
/** A host woken because a request did not fit is not woken again for this long (it takes a minute or two to boot). */
export const DEMAND_WAKE_EVERY_MS = 5 * 60_000;

/** The two schedules of a room: when it wakes, when it goes to sleep. */
export type ScheduleKind = 'wake' | 'sleep';
const KEYS: Record<ScheduleKind, string> = { wake: WAKE_SCHEDULE_KEY, sleep: SLEEP_SCHEDULE_KEY };

/** A schedule as the API and the page show it: the admin's words, its cron expression, its next run. */
export interface RoomSchedule {
  schedule: string | null;
  cron?: string;
  nextRun?: string;
}

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const DAY_WORDS: Record<string, string> = { daily: '*', everyday: '*', weekdays: '1-5', weekends: '0,6' };

/**
 * A schedule in the admin's words as a node-cron expression: `weekdays 07:30`, `daily 7:30`,
 * `weekends 09:00`, or days by name (`mon,wed,fri 07:45`); the controller's local time.
 * @example scheduleToCron('weekdays 07:30') // '30 7 * * 1-5'
 */
export function scheduleToCron(text: string): string {
  const m = /^\s*([a-z,\s-]+?)\s+(\d{1,2}):(\d{2})\s*$/i.exec(text);
  const bad = (why: string) => new InvalidField('schedule', `${why}: write it as "weekdays 07:30", "daily 07:30", "weekends 09:00" or "mon,wed,fri 07:45"`);
  if (!m) throw bad('not a schedule');
  const hour = Number(m[2]);
  const minute = Number(m[3]);
  if (hour > 23 || minute > 59) throw bad(`${m[2]}:${m[3]} is not a time of day`);
  const words = m[1]!.toLowerCase().replace(/\s+/g, '');
  let days = DAY_WORDS[words.replace(/-/g, '')];
  if (days === undefined) {
    const list = words.split(',').map((d) => DAY_NAMES.indexOf(d.slice(0, 3)));
    if (list.some((d, i) => d < 0 || words.split(',')[i]!.length < 3)) throw bad(`"${m[1]!.trim()}" are not days`);
    days = [...new Set(list)].sort().join(',');
  }
  const expression = `${minute} ${hour} * * ${days}`;
  if (!cron.validate(expression)) throw bad('not a schedule');
  return expression;
}

/** One host's outcome in a wake-all. */
export interface WakeOutcome {
  id: string;
  /** The host's label (its hostname, with a short id where two PCs share one: names.ts). */
  hostname: string;
  /** Sent: the MAC and where to; skipped: why not. */
  mac?: string;
  address?: string;
  reason?: string;
}

export interface RoomPowerOptions {
  store: Store;
  hosts: HostRegistry;
  log: Logger;
  /** Shuts a VM down (VmService.action as the system user); given by the services. */
  shutdownVm: (vmId: string) => Promise<unknown>;
  /** The VMs running on a host (ids and names), for the drained host's shutdown. */
  runningVms: (hostId: string) => Array<{ id: string; name: string }>;
  /** Whether a host is the controller's own machine, which a sleep-all leaves on (default: its agent is at a loopback address, as `skyhost up`'s). */
  isControllerMachine?: (h: HostRecord) => boolean;
}

/**
 * Waking and putting the room to sleep, beyond one host: `wakeAll`, the schedule (`setSchedule`,
 * started by `start()`), `wakeForDemand` (a request no ready host fits) and `shutdownDue` (drained
 * hosts' VMs at their set time).
 */
export class RoomPower {
  private readonly opts: RoomPowerOptions;
  private readonly log: Logger;
  private readonly tasks: Partial<Record<ScheduleKind, ScheduledTask>> = {};
  private minutely: ScheduledTask | undefined;
  private started = false;
  /** When each host was last woken for a request that did not fit (ms). */
  private readonly demandWakes = new Map<string, number>();

  constructor(opts: RoomPowerOptions) {
    this.opts = opts;
    this.log = opts.log;
  }

  /** The wake-up (or sleep) schedule: the admin's words, its cron expression and its next run (none: no schedule). */
  schedule(kind: ScheduleKind = 'wake'): RoomSchedule {
    const row = this.opts.store.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', KEYS[kind]);
    if (!row) return { schedule: null };
    const expression = scheduleToCron(row.value);
    const next = this.tasks[kind]?.getNextRun() ?? nextRunOf(expression);
    return { schedule: row.value, cron: expression, ...(next ? { nextRun: next.toISOString() } : {}) };
  }

  /** Sets a schedule (checked first: a bad one names the field and changes nothing) or removes it (null or ''). */
  setSchedule(text: string | null, by: string, kind: ScheduleKind = 'wake'): RoomSchedule {
    const value = text?.trim() ? text.trim() : null;
    const what = kind === 'wake' ? 'wake-up' : 'sleep';
    if (value === null) {
      this.opts.store.run('DELETE FROM settings WHERE key = ?', KEYS[kind]);
      this.log.info(`the room's ${what} schedule was removed by ${by}`);
    } else {
      scheduleToCron(value);
      this.opts.store.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', KEYS[kind], value);
      this.log.info(`the room ${kind === 'wake' ? 'wakes' : 'goes to sleep'} ${value} (set by ${by})`);
    }
    if (this.started) this.arm(kind);
    return this.schedule(kind);
  }

  /** Starts the schedules and the minute job of drained hosts' shutdowns. */
  start(): void {
    this.started = true;
    this.arm('wake');
    this.arm('sleep');
    this.minutely = cron.schedule('15 * * * * *', async () => {
      await this.shutdownDue();
    }, { name: 'shutdown of drained hosts\' VMs', noOverlap: true });
  }

  async stop(): Promise<void> {
    this.started = false;
    for (const kind of ['wake', 'sleep'] as const) {
      await this.tasks[kind]?.destroy();
      delete this.tasks[kind];
    }
    await this.minutely?.destroy();
    this.minutely = undefined;
  }

  private arm(kind: ScheduleKind): void {
    const old = this.tasks[kind];
    if (old) Promise.resolve(old.destroy()).catch((err: unknown) => this.log.warn(`the old ${kind} schedule did not stop cleanly`, { err }));
    delete this.tasks[kind];
    const { cron: expression, schedule } = this.scheduleOrNone(kind);
    if (!expression) return;
    this.tasks[kind] = cron.schedule(expression, async () => {
      if (kind === 'wake') {
        const outcome = await this.wakeAll(`the schedule "${schedule}"`);
        this.log.info(`scheduled wake-up (${schedule}): ${outcome.woken.length} host(s) woken, ${outcome.skipped.length} skipped`);
      } else {
        await this.sleepAll(`the schedule "${schedule}"`);
      }
    }, { name: `${kind} of the room`, noOverlap: true });
  }

  private scheduleOrNone(kind: ScheduleKind): { cron?: string; schedule?: string } {
    try {
      const s = this.schedule(kind);
      return s.cron ? { cron: s.cron, schedule: s.schedule ?? '' } : {};
    } catch (err) {
      // Only a value written around the API could be bad: say so, and keep the room unscheduled rather than fail the start.
      this.log.error(`the stored ${kind} schedule is not valid, so it does not run: ${(err as Error).message}`);
      return {};
    }
  }

  /**
   * Puts to sleep every host that is up (ready or draining) and runs no VM; a host with running VMs is
   * left on and named (its VMs are someone's work), and so is the controller's own machine.
   */
  async sleepAll(by: string): Promise<{ asleep: WakeOutcome[]; skipped: WakeOutcome[] }> {
    const asleep: WakeOutcome[] = [];
    const skipped: WakeOutcome[] = [];
    for (const h of this.opts.hosts.records()) {
      if (h.state !== 'ready' && h.state !== 'draining') continue;
      if ((this.opts.isControllerMachine ?? onLoopback)(h)) {
        skipped.push({ id: h.id, hostname: this.label(h), reason: 'the controller\'s own machine' });
        continue;
      }
      const running = this.opts.runningVms(h.id);
      if (running.length > 0) {
        skipped.push({ id: h.id, hostname: this.label(h), reason: `${running.length} VM(s) running: ${running.map((v) => v.name).join(', ')}` });
        continue;
      }
      try {
        await this.opts.hosts.sleep(h.id, by);
        asleep.push({ id: h.id, hostname: this.label(h) });
      } catch (err) {
        skipped.push({ id: h.id, hostname: this.label(h), reason: (err as Error).message });
      }
    }
    this.log.info(`sleep-all by ${by}: ${asleep.length} host(s) put to sleep` +
      `${skipped.length ? `; left on: ${skipped.map((s) => `${s.hostname} (${s.reason})`).join('; ')}` : ''}`);
    return { asleep, skipped };
  }

  /** Sends Wake-on-LAN to every host that is asleep or down and has a MAC; the others are listed with the reason. */
  async wakeAll(by: string): Promise<{ woken: WakeOutcome[]; skipped: WakeOutcome[] }> {
    const woken: WakeOutcome[] = [];
    const skipped: WakeOutcome[] = [];
    for (const h of this.opts.hosts.records()) {
      const why = sleepingWithoutMac(h);
      if (why) {
        skipped.push({ id: h.id, hostname: this.label(h), reason: why });
        continue;
      }
      try {
        const sent = await this.opts.hosts.wake(h.id);
        woken.push({ id: h.id, hostname: this.label(h), mac: sent.mac, address: sent.address });
      } catch (err) {
        skipped.push({ id: h.id, hostname: this.label(h), reason: (err as Error).message });
      }
    }
    this.log.info(`wake-all by ${by}: ${woken.length} host(s) woken${woken.length ? ` (${woken.map((w) => w.hostname).join(', ')})` : ''}`);
    return { woken, skipped };
  }

  /** What the pages call a host: its label (two PCs may share a hostname, names.ts). */
  private label(h: HostRecord): string {
    return hostNames({ store: this.opts.store, hosts: this.opts.hosts }).label(h.id);
  }

  /**
   * No ready host fits a request (or a class session's students): wakes the hosts asleep (switched off
   * on purpose) that have a MAC and were not woken for this in the last minutes. Returns the labels of
   * the hosts waking (empty: none to wake).
   */
  async wakeForDemand(now = Date.now()): Promise<string[]> {
    const names: string[] = [];
    const sent: string[] = [];
    for (const h of this.opts.hosts.records()) {
      if (h.state !== 'asleep' || !h.mac) continue;
      const last = this.demandWakes.get(h.id);
      if (last !== undefined && now - last < DEMAND_WAKE_EVERY_MS) {
        names.push(this.label(h)); // still booting from the last wake: worth waiting for
        continue;
      }
      try {
        await this.opts.hosts.wake(h.id);
        this.demandWakes.set(h.id, now);
        names.push(this.label(h));
        sent.push(this.label(h));
      } catch (err) {
        this.log.warn(`could not wake ${this.label(h)} for a request no ready host fits: ${(err as Error).message}`, { hostId: h.id });
      }
    }
    // said once per wake, not at every request (or class session's retry) that waits for the same hosts
    if (sent.length) this.log.info(`no ready host fits a request: waking ${sent.join(', ')}`);
    return names;
  }

  /** Shuts down the running VMs of every drained host whose `shutdownVmsAt` has passed, then clears the time. */
  async shutdownDue(now = new Date()): Promise<number> {
    let n = 0;
    for (const h of this.opts.hosts.records()) {
      if (!h.shutdownVmsAt || h.shutdownVmsAt > now.toISOString() || !h.drained) continue;
      this.opts.hosts.setShutdownVmsAt(h, undefined);
      const vms = this.opts.runningVms(h.id);
      this.log.info(`drained host ${this.label(h)}: shutting down its ${vms.length} running VM(s) as set for ${now.toISOString()}`, { hostId: h.id });
      for (const vm of vms) {
        try {
          await this.opts.shutdownVm(vm.id);
          n++;
        } catch (err) {
          this.log.warn(`VM ${vm.name} on drained host ${this.label(h)} could not be shut down: ${(err as Error).message}`, { vmId: vm.id, hostId: h.id });
        }
      }
    }
    return n;
  }
}

/** When a cron expression runs next (a task made and dropped, never started). */
function nextRunOf(expression: string): Date | null {
  const task = cron.createTask(expression, () => undefined);
  try {
    return task.getNextRuns(1)[0] ?? null; // getNextRun() is null until a task is started
  } finally {
    // An unstarted task has no timer to stop; its destroy only leaves node-cron's list, which cannot fail.
    void Promise.resolve(task.destroy()).catch(() => undefined);
  }
}

/** An agent at a loopback address runs on the controller's machine (`skyhost up`). */
function onLoopback(h: HostRecord): boolean {
  return isLoopback(addressOfUrl(h.agentUrl));
}

/** Why a host is not woken by a wake-all (undefined: it is woken). */
function sleepingWithoutMac(h: HostRecord): string | undefined {
  if (h.state !== 'asleep' && h.state !== 'down') return `${h.state}: not asleep`;
  if (!h.mac) return 'its MAC address is not known';
  return undefined;
}

/**
 * Runs a VM request; when no ready host fits it and sleeping hosts can be woken, wakes them and answers
 * 503 `room_waking` ("try again in a minute") instead of the scheduler's no.
 * @example await wakeIfNoHostFits(services.room, () => vms.create(user, body))
 */
export async function wakeIfNoHostFits<T>(room: RoomPower, request: () => Promise<T>): Promise<T> {
  try {
    return await request();
  } catch (err) {
    if (!(err instanceof SkyError) || err.code !== 'no_host_fits') throw err;
    const waking = await room.wakeForDemand();
    if (waking.length === 0) throw err;
    throw new SkyError(503, 'room_waking', `no awake host fits this request, so the room is waking (${waking.join(', ')}): try again in a minute`,
      { waking, ...(err.details as object | undefined) });
  }
}
