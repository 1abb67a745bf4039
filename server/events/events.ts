// The event log: what the controller did and what agents reported, kept in SQLite and streamed live.
// Writes are batched (one transaction per 200 ms), so a burst of log lines costs one disk sync; ids
// are assigned at once, so live subscribers and later queries agree on them.
import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { addSink, LEVELS, type Level, type LogRecord } from '../../base/log.ts';
import type { Row, Store } from '../db/store.ts';

export const EventLevel = z.enum(LEVELS);

/** One entry of the event log as the API returns it. */
export const Event = z.object({
  id: z.number().int(),
  time: z.string(),
  level: EventLevel,
  /** Who wrote it: a controller component (`registry`, `vms`, `users`...) or `agent`. */
  source: z.string(),
  hostId: z.string().optional(),
  vmId: z.string().optional(),
  msg: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type Event = z.infer<typeof Event>;

export interface EventInput {
  level?: Level;
  source: string;
  msg: string;
  hostId?: string | undefined;
  vmId?: string | undefined;
  data?: Record<string, unknown> | undefined;
  time?: string | undefined;
}

/** `GET /api/events` filters. */
export const EventQuery = z.strictObject({
  source: z.string().max(64).optional(),
  /** The lowest level to include. */
  level: EventLevel.optional(),
  hostId: z.string().max(64).optional(),
  vmId: z.string().max(64).optional(),
  /** Only events with an id greater than this (for polling a live tail). */
  after: z.coerce.number().int().min(0).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type EventQuery = z.input<typeof EventQuery>;

const KEEP = 50_000;
/** A reported time this far behind the last event is a clock that was set back, not a late report: kept as it is. */
const CLOCK_SET_BACK_MS = 10 * 60_000;

/** What an event is about, by name: looked up when it is recorded (a VM's name outlives the VM). */
export interface EventNames {
  /** A VM's name and owner by its id. */
  vm?: (vmId: string) => { name: string; owner: string; hostId?: string } | undefined;
}

/**
 * The event log service. `record()` stores an event; `on('event', fn)` gets each new one as it is
 * recorded (for a live tail over SSE or htmx polling); `list()` queries, newest first.
 *
 *   services.events.record({ source: 'vms', msg: 'VM created', vmId });
 *   services.events.on('event', (e) => res.write(`data: ${JSON.stringify(e)}\n\n`));
 */
export class EventLog extends EventEmitter<{ event: [Event] }> {
  private readonly store: Store;
  private nextId: number;
  private pending: Event[] = [];
  private timer: NodeJS.Timeout | undefined;
  private unsink: (() => void) | undefined;
  private closed = false;
  /** The time of the last event recorded (ms): ids and times go up together. */
  private lastTime: number;
  /** Looks up names for `record()` (set by the services once the VMs exist). */
  names: EventNames = {};
  /** The host of an agent running in this process (`skyhost up`): its log lines carry no host id. */
  localHostId: string | undefined;

  constructor(store: Store) {
    super();
    this.setMaxListeners(0);
    this.store = store;
    this.nextId = Number(store.get<Row>('SELECT COALESCE(MAX(id), 0) AS m FROM events')?.m ?? 0) + 1;
    this.lastTime = Date.parse(String(store.get<Row>('SELECT time FROM events ORDER BY id DESC LIMIT 1')?.time ?? '')) || 0;
  }

  /**
   * Records an event. Its time is the reported one (an agent's record, a log line) but never later
   * than now nor earlier than the event before it: the log is read newest id first, and a host's
   * records arrive seconds after the controller's own (or from a host whose clock is off). A moved
   * time keeps the reported one in `data.reportedTime`. An event about a VM gets the VM's name and
   * owner (`data.vmName`, `data.user`), and an agent's bare "created VM" becomes "created VM NAME".
   */
  record(input: EventInput): Event {
    const now = Date.now();
    const reported = input.time !== undefined ? Date.parse(input.time) : Number.NaN;
    let t = Number.isFinite(reported) ? Math.min(reported, now) : now;
    if (t < this.lastTime && this.lastTime - t < CLOCK_SET_BACK_MS) t = this.lastTime;
    this.lastTime = Math.max(this.lastTime, t);
    const data: Record<string, unknown> = { ...input.data };
    if (Number.isFinite(reported) && Math.abs(reported - t) >= 1000) data.reportedTime = input.time;
    // Agents' records name their VM `vm` (and its name `name`); the controller's say vmId.
    const vmId = input.vmId ?? (typeof data.vm === 'string' ? data.vm : undefined);
    let msg = input.msg.slice(0, 2000);
    let hostId = input.hostId;
    if (vmId) {
      const vm = this.lookupVm(vmId);
      const vmName = typeof data.name === 'string' ? data.name : vm?.name;
      if (vmName && data.vmName === undefined) data.vmName = vmName;
      if (vm && data.user === undefined) data.user = vm.owner;
      hostId ??= vm?.hostId;
      if (vmName && /\bVM$/.test(msg)) msg = `${msg} ${vmName}`;
    }
    const event: Event = {
      id: this.nextId++,
      time: new Date(t).toISOString(),
      level: input.level ?? 'info',
      source: input.source,
      msg,
      ...(hostId ? { hostId } : {}),
      ...(vmId ? { vmId } : {}),
      ...(Object.keys(data).length > 0 ? { data } : {}),
    };
    if (this.closed) return event;
    this.pending.push(event);
    this.timer ??= setTimeout(() => {
      try {
        this.flush();
      } catch {
        // the database went away (shutdown) or the disk is full: these events are lost, the process must not crash
        this.pending = [];
      }
    }, 200);
    this.emit('event', event);
    return event;
  }

  private lookupVm(vmId: string): ReturnType<NonNullable<EventNames['vm']>> {
    try {
      return this.names.vm?.(vmId);
    } catch {
      return undefined; // a VM gone or not (yet) known: the event keeps what it carries itself
    }
  }

  /** Writes buffered events now (called on a timer and on close). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.store.tx(() => {
      for (const e of batch) {
        this.store.run('INSERT INTO events (id, time, level, source, host_id, vm_id, msg, data_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
          e.id, e.time, e.level, e.source, e.hostId ?? null, e.vmId ?? null, e.msg, e.data ? safeJson(e.data) : null);
      }
      if (batch[batch.length - 1]!.id % 1000 < batch.length) {
        this.store.run('DELETE FROM events WHERE id <= ?', batch[batch.length - 1]!.id - KEEP);
      }
    });
  }

  /** Events matching `query`, newest first. */
  list(query: EventQuery = {}): Event[] {
    const q = EventQuery.parse(query);
    this.flush();
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (q.source) { where.push('source = ?'); params.push(q.source); }
    if (q.hostId) { where.push('host_id = ?'); params.push(q.hostId); }
    if (q.vmId) { where.push('vm_id = ?'); params.push(q.vmId); }
    if (q.after !== undefined) { where.push('id > ?'); params.push(q.after); }
    if (q.level) {
      const levels = LEVELS.slice(LEVELS.indexOf(q.level));
      where.push(`level IN (${levels.map(() => '?').join(', ')})`);
      params.push(...levels);
    }
    const sql = `SELECT * FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT ?`;
    return this.store.all(sql, ...params, q.limit).map(rowToEvent);
  }

  /**
   * Records every log line at `info` or above from this process (the controller's components and,
   * in `skyhost up`, the in-process agent) as an event. Returns the removal.
   */
  captureLogs(): () => void {
    this.unsink?.();
    const sink = (r: LogRecord) => {
      if (r.level === 'debug' || r.noEvent) return;
      const { time, level, component, msg, hostId, vmId, ...rest } = r;
      const host = str(hostId) ?? (component === 'agent' ? this.localHostId : undefined);
      this.record({ time, level, source: component, msg, hostId: host, vmId: str(vmId), data: rest });
    };
    this.unsink = addSink(sink);
    return () => this.unsink?.();
  }

  /** Stops capturing and writes what is buffered; closed even when that write fails (a full disk). */
  close(): void {
    this.unsink?.();
    this.closed = true;
    this.flush();
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function safeJson(v: unknown): string {
  try {
    const text = JSON.stringify(v);
    return text.length <= 20_000 ? text : JSON.stringify({ truncated: true });
  } catch {
    return '{}';
  }
}

function rowToEvent(r: Row): Event {
  return {
    id: Number(r.id),
    time: String(r.time),
    level: r.level as Level,
    source: String(r.source),
    msg: String(r.msg),
    ...(r.host_id ? { hostId: String(r.host_id) } : {}),
    ...(r.vm_id ? { vmId: String(r.vm_id) } : {}),
    ...(r.data_json ? { data: JSON.parse(String(r.data_json)) as Record<string, unknown> } : {}),
  };
}
