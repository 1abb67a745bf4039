// Structured logging: one JSON object a line for services (journald, files, the events page), a short
// readable line on a terminal. Sinks let the controller keep recent records for its events page.

export const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type Level = (typeof LEVELS)[number];
export type LogFormat = 'json' | 'pretty';

export interface LogRecord {
  time: string;
  level: Level;
  component: string;
  msg: string;
  [field: string]: unknown;
}

export type Sink = (record: LogRecord) => void;

interface LoggerState {
  level: number;
  format: LogFormat;
  out: (line: string) => void;
  sinks: Set<Sink>;
}

const state: LoggerState = {
  level: LEVELS.indexOf('info'),
  format: process.stderr.isTTY ? 'pretty' : 'json',
  out: (line) => process.stderr.write(line + '\n'),
  sinks: new Set(),
};

/** Sets the process-wide level and format (from `--log-level` / `logFormat`). */
export function configureLogging(opts: { level?: Level; format?: LogFormat; out?: (line: string) => void }): void {
  if (opts.level) state.level = LEVELS.indexOf(opts.level);
  if (opts.format) state.format = opts.format;
  if (opts.out) state.out = opts.out;
}

/** Adds a receiver of every record at or above the level; returns its removal. */
export function addSink(sink: Sink): () => void {
  state.sinks.add(sink);
  return () => state.sinks.delete(sink);
}

export class Logger {
  readonly component: string;
  private readonly fields: Record<string, unknown>;

  constructor(component: string, fields: Record<string, unknown> = {}) {
    this.component = component;
    this.fields = fields;
  }

  child(fields: Record<string, unknown>): Logger {
    return new Logger(this.component, { ...this.fields, ...fields });
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.write('error', msg, fields);
  }

  private write(level: Level, msg: string, fields?: Record<string, unknown>): void {
    if (LEVELS.indexOf(level) < state.level) return;
    const record: LogRecord = {
      time: new Date().toISOString(),
      level,
      component: this.component,
      msg,
      ...this.fields,
      ...serializeFields(fields),
    };
    state.out(state.format === 'json' ? JSON.stringify(record) : pretty(record));
    for (const sink of state.sinks) sink(record);
  }
}

export function logger(component: string): Logger {
  return new Logger(component);
}

function serializeFields(fields?: Record<string, unknown>): Record<string, unknown> {
  if (!fields) return {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    out[k] = v instanceof Error ? { name: v.name, message: v.message, stack: v.stack } : v;
  }
  return out;
}

const COLORS: Record<Level, string> = { debug: '\x1b[90m', info: '\x1b[36m', warn: '\x1b[33m', error: '\x1b[31m' };

function pretty(r: LogRecord): string {
  const { time, level, component, msg, ...rest } = r;
  const extra = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${time.slice(11, 23)} ${COLORS[level]}${level.padEnd(5)}\x1b[0m ${component}: ${msg}${extra ? ' ' + extra : ''}`;
}
