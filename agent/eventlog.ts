// Sends this agent's log records (info and above) to its controller's event log (`POST /api/events`,
// bearer: the agent key it enrolled with), so the admin panel shows every host's events. Records wait
// in a bounded queue while there is no controller or it does not answer; the oldest are dropped
// first, and the drop is reported with the next batch.
import { HttpClient } from '../base/http-client.ts';
import { addSink, LEVELS, type Level, type Logger, type LogRecord } from '../base/log.ts';

export interface EventForwarderOptions {
  key: string;
  /** The controller to send to right now, or undefined (not enrolled, or refused). */
  controllerUrl: () => string | undefined;
  /** The controller's certificate fingerprint, when it is trusted by one: events (and the key) go to no other. */
  controllerFingerprint?: () => string | undefined;
  log: Logger;
  /** Milliseconds between sends (default 2000). */
  intervalMs?: number;
  /** Records kept while the controller cannot be reached (default 500, the API's batch limit). */
  maxQueued?: number;
  /** Lowest level forwarded (default info). */
  minLevel?: Level;
}

export interface EventForwarder {
  /** Sends what is queued now; resolves when the controller answered or the attempt failed. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

interface AgentEvent {
  time: string;
  level: Level;
  component: string;
  msg: string;
  vmId?: string;
}

/** The most records `POST /api/events` takes in one call. */
const API_BATCH = 500;

export function startEventForwarder(opts: EventForwarderOptions): EventForwarder {
  const maxQueued = opts.maxQueued ?? 500;
  const minLevel = LEVELS.indexOf(opts.minLevel ?? 'info');
  const queue: AgentEvent[] = [];
  let dropped = 0;
  let sending: Promise<void> | undefined;
  let failing = false;

  const removeSink = addSink((r: LogRecord) => {
    if (LEVELS.indexOf(r.level) < minLevel || r.forwarder === true) return;
    queue.push({
      time: r.time,
      level: r.level,
      component: r.component,
      msg: r.msg.slice(0, 2000),
      // the agent's own records name their VM `vm`: the controller adds its name, owner and host
      ...(typeof (r.vmId ?? r.vm) === 'string' ? { vmId: String(r.vmId ?? r.vm).slice(0, 64) } : {}),
    });
    if (queue.length > maxQueued) {
      queue.shift();
      dropped++;
    }
  });

  async function send(): Promise<void> {
    const url = opts.controllerUrl();
    if (!url || queue.length === 0) return;
    const notice: AgentEvent[] = dropped > 0
      ? [{ time: new Date().toISOString(), level: 'warn', component: 'agent', msg: `${dropped} log records were dropped while the controller could not be reached` }]
      : [];
    const records = queue.slice(0, API_BATCH - notice.length);
    // A fresh connection per send: a pooled one would stay bound to our old address after a DHCP change.
    const controller = new HttpClient({
      baseUrl: url, bearer: opts.key, connection: 'fresh', peer: `controller ${url}`, codePrefix: 'controller', pin: opts.controllerFingerprint?.(),
    });
    try {
      await controller.call('POST', '/api/events', { events: [...notice, ...records] }, { timeoutMs: 5000 });
      queue.splice(0, records.length);
      dropped = 0;
      if (failing) opts.log.info('events reach the controller again', { forwarder: true });
      failing = false;
    } catch (err) {
      // Said once per outage, and marked so that it is not itself queued for forwarding.
      if (!failing) opts.log.warn(`cannot send events: ${(err as Error).message}; keeping the last ${maxQueued}`, { forwarder: true });
      failing = true;
    }
  }

  const flush = (): Promise<void> => {
    sending ??= send().finally(() => {
      sending = undefined;
    });
    return sending;
  };
  const timer = setInterval(() => void flush(), opts.intervalMs ?? 2000);
  timer.unref();

  return {
    flush,
    async stop() {
      clearInterval(timer);
      await flush();
      removeSink();
    },
  };
}
