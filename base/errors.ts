// The one error model of SkyHost, from a subprocess or a zod check up to the JSON API and the pages.
// Every error a user can cause is a SkyError with an HTTP status and a stable code; anything else is
// a bug and reaches the user only as a 500 "internal" with no stack trace.
import type { ZodError } from 'zod';

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/** An error a user (or another program) can cause and be told about. */
export class SkyError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'SkyError';
    this.status = status;
    this.code = code;
    this.details = details;
  }

  toBody(): ErrorBody {
    const body: ErrorBody = { error: { code: this.code, message: this.message } };
    if (this.details !== undefined) body.error.details = this.details;
    return body;
  }
}

/** 400: the request does not make sense (malformed JSON, a bad field). */
export class BadRequest extends SkyError {
  constructor(message: string, details?: unknown, code = 'bad_request') {
    super(400, code, message, details);
  }
}

/** 422: well-formed, but a field's value is not allowed. `field` is a dotted path, e.g. `ssh.key`. */
export class InvalidField extends SkyError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(422, 'invalid_field', `${field}: ${message}`, { fields: [{ field, message }] });
    this.field = field;
  }
}

export class Unauthorized extends SkyError {
  constructor(message = 'authentication required') {
    super(401, 'unauthorized', message);
  }
}

export class Forbidden extends SkyError {
  constructor(message = 'not allowed') {
    super(403, 'forbidden', message);
  }
}

export class NotFound extends SkyError {
  constructor(what: string) {
    super(404, 'not_found', `${what} not found`);
  }
}

export class Conflict extends SkyError {
  constructor(message: string, details?: unknown) {
    super(409, 'conflict', message, details);
  }
}

export class PayloadTooLarge extends SkyError {
  constructor(limit: string) {
    super(413, 'payload_too_large', `request body is larger than ${limit}`);
  }
}

/** 503: a dependency (libvirt, an agent, the disk) cannot do it now; retrying later may work. */
export class Unavailable extends SkyError {
  constructor(message: string, details?: unknown, code = 'unavailable') {
    super(503, code, message, details);
  }
}

/** 507: the disk is full (ENOSPC, SQLITE_FULL); nothing was written. `where` says which disk to free. */
export class DiskFull extends SkyError {
  constructor(where = "the controller's data folder") {
    super(507, 'disk_full', `the controller's disk is full: free space on the disk of ${where} and try again`);
  }
}

/** A subprocess that failed: carries the command, its arguments, exit code and stderr. */
export class CommandFailed extends SkyError {
  readonly command: string;
  readonly args: readonly string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(command: string, args: readonly string[], exitCode: number | undefined, stderr: string) {
    const tail = stderr.trim().split('\n').slice(-3).join(' | ');
    super(502, 'command_failed', `${command} ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${tail}`, {
      command,
      args,
      exitCode,
      stderr: stderr.slice(-2000),
    });
    this.command = command;
    this.args = args;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** Turns a zod failure into a 422 that names every offending field (`prefix` names the part checked). */
export function fromZod(err: ZodError, prefix = ''): SkyError {
  const fields = err.issues.map((issue) => ({
    field: [prefix, ...issue.path.map(String)].filter(Boolean).join('.') || '(body)',
    message: issue.message,
  }));
  const first = fields[0] ?? { field: '(body)', message: 'invalid' };
  const more = fields.length > 1 ? ` (and ${fields.length - 1} more)` : '';
  return new SkyError(422, 'invalid_field', `${first.field}: ${first.message}${more}`, { fields });
}

/** Any thrown value as a SkyError; unknown errors become an opaque 500 (the original is for the log). */
export function toSkyError(err: unknown): SkyError {
  if (err instanceof SkyError) return err;
  if (isBodyParserError(err)) {
    if (err.type === 'entity.too.large') return new PayloadTooLarge(String(err.limit ?? 'the limit'));
    return new BadRequest(`request body could not be read: ${err.message}`);
  }
  if (isDiskFull(err)) return new DiskFull();
  return new SkyError(500, 'internal', 'internal error: see the server log');
}

/** ENOSPC from the file system, or SQLITE_FULL (13) from node:sqlite. */
export function isDiskFull(err: unknown): boolean {
  const e = err as { code?: unknown; errcode?: unknown } | null;
  return typeof e === 'object' && e !== null && (e.code === 'ENOSPC' || (e.code === 'ERR_SQLITE_ERROR' && e.errcode === 13));
}

interface BodyParserError {
  type: string;
  message: string;
  limit?: number;
  status?: number;
}

function isBodyParserError(err: unknown): err is BodyParserError {
  return typeof err === 'object' && err !== null && typeof (err as { type?: unknown }).type === 'string' &&
    typeof (err as { status?: unknown }).status === 'number';
}
