// One HTTP client for the calls between agents and the controller: JSON in and out, a bearer key, a
// deadline on every call, `{ error: { code, message } }` answers as SkyError, and pooled or fresh
// connections as the caller needs:
//   pooled  keep-alive connections shared by the process (the controller polling hundreds of agents:
//           node:http holds far less memory per host than fetch/undici keeps per origin)
//   fresh   a new connection per call (an agent enrolling: a pooled connection stays bound to the
//           source address it was opened from, and after a DHCP change the next call on it hangs)
// With `pin` (https only), a connection is used only once the other side showed the certificate with
// that sha256 fingerprint (base/tls.ts PinnedAgent): nothing, not even the bearer, reaches anyone else.
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { SkyError, Unavailable } from './errors.ts';
import { normalizeFingerprint, PinnedAgent, UntrustedPeer } from './tls.ts';

export interface HttpClientOptions {
  /** Where the other side listens, e.g. `http://10.0.0.12:8081`; call paths are relative to it. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <bearer>` on every call. */
  bearer?: string | undefined;
  connection: 'pooled' | 'fresh';
  /** The other side in messages, e.g. `host pc-12` ("host pc-12 is unreachable: ..."). */
  peer: string;
  /** Error codes when the other side gives none: `<prefix>_unreachable`, `_rejected` (4xx), `_error` (5xx). */
  codePrefix: string;
  /** Details of the "unreachable" error, e.g. `{ host: 'pc-12' }`. */
  unreachableDetails?: unknown;
  /** Deadline of a call whose options give none (default 10 s), for the whole exchange. */
  timeoutMs?: number;
  /** Largest answer body read (default 16 MiB); a longer one fails the call. */
  maxAnswerBytes?: number;
  /**
   * The sha256 fingerprint the other side's certificate must have (base/tls.ts). Requires an
   * https:// baseUrl: a plain http:// one is refused before anything is sent.
   */
  pin?: string | undefined;
}

export interface CallOptions {
  timeoutMs?: number;
}

export interface RequestOptions extends CallOptions {
  /** A JSON value (sent as application/json), or a stream sent as is (give `content-type` in `headers`). */
  body?: unknown;
  headers?: Record<string, string>;
}

/** An answer of any status; `body` is the parsed JSON, or undefined when there is none or it is not JSON. */
export interface HttpAnswer {
  status: number;
  body: unknown;
}

/**
 * The other side answered with an error. `status` is what to pass on: its 4xx as is (about our
 * request), 502 for its 5xx (a failure over there); `remoteStatus` is what it sent.
 */
export class RemoteError extends SkyError {
  readonly remoteStatus: number;
  constructor(remoteStatus: number, code: string, message: string, details?: unknown) {
    super(remoteStatus >= 400 && remoteStatus < 500 ? remoteStatus : 502, code, message, details);
    this.name = 'RemoteError';
    this.remoteStatus = remoteStatus;
  }
}

// The process's keep-alive pools (connection: 'pooled').
const POOL_OPTIONS = { keepAlive: true, maxSockets: 8, maxFreeSockets: 1, timeout: 60_000 };
const pools = {
  'http:': new http.Agent(POOL_OPTIONS),
  'https:': new https.Agent(POOL_OPTIONS),
};
/** One pooled agent per pinned fingerprint (its sockets are to the peer holding that certificate). */
const pinnedPools = new Map<string, PinnedAgent>();

/** The pooled agent for connections pinned to `fingerprint`, made at first use. */
export function pinnedPool(fingerprint: string): PinnedAgent {
  const fp = normalizeFingerprint(fingerprint);
  let agent = pinnedPools.get(fp);
  if (!agent) {
    agent = new PinnedAgent(fp, POOL_OPTIONS);
    pinnedPools.set(fp, agent);
  }
  return agent;
}

/** Lets go of the pooled agent of a fingerprint no longer trusted (a host forgotten or re-pinned). */
export function dropPinnedPool(fingerprint: string): void {
  const fp = normalizeFingerprint(fingerprint);
  pinnedPools.get(fp)?.destroy();
  pinnedPools.delete(fp);
}

/**
 * Calls to one HTTP server. Cheap to make: one per call is fine.
 * @example
 * const agent = new HttpClient({ baseUrl: 'http://10.0.0.12:8081', bearer: key, connection: 'pooled', peer: 'host pc-12', codePrefix: 'agent' });
 * const status = await agent.call('GET', '/status', undefined, { timeoutMs: 3000 });
 */
export class HttpClient {
  readonly opts: HttpClientOptions;

  constructor(opts: HttpClientOptions) {
    this.opts = opts;
  }

  /**
   * A JSON call: resolves with the answer's body (undefined when empty) on 2xx; otherwise throws a
   * RemoteError (the other side's `{ error: { code, message, details } }`) or, when nothing
   * answered in time, Unavailable (503, `<prefix>_unreachable`).
   */
  async call(method: string, path: string, body?: unknown, opts: CallOptions = {}): Promise<unknown> {
    const answer = await this.request(method, path, { body, ...opts });
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    throw this.remoteError(method, path, answer);
  }

  /** One exchange; any status is an answer. Throws Unavailable only when nothing answered in time. */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<HttpAnswer> {
    const url = new URL(path, this.opts.baseUrl);
    const timeoutMs = opts.timeoutMs ?? this.opts.timeoutMs ?? 10_000;
    const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
    if (this.opts.bearer !== undefined) headers.authorization = `Bearer ${this.opts.bearer}`;
    let payload: string | Readable | undefined;
    if (isStream(opts.body)) payload = opts.body;
    else if (opts.body !== undefined) {
      payload = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    if (this.opts.pin !== undefined && url.protocol !== 'https:') {
      throw new SkyError(502, 'untrusted_peer', `${this.opts.peer}: ${url.origin} is plain HTTP, but this peer is trusted by its certificate only (use https://)`);
    }
    let raw: { status: number; text: string };
    const maxBytes = this.opts.maxAnswerBytes ?? 16 << 20;
    const deadline = performance.now() + timeoutMs;
    try {
      try {
        raw = await exchange(url, method, headers, payload, timeoutMs, timeoutMs, this.opts.connection, maxBytes, this.opts.pin);
      } catch (err) {
        // A kept-alive connection the other side closed just as we sent on it: the request never reached
        // its handler (nothing answered), so it is sent once more on a new connection, within what is left
        // of the same deadline (the caller's timeout bounds the whole call). A streamed body cannot be
        // sent twice.
        if (!(err instanceof StaleConnection) || isStream(payload)) throw err;
        const left = Math.floor(deadline - performance.now());
        if (left <= 0) throw new Error(`no answer within ${timeoutMs} ms`, { cause: err });
        raw = await exchange(url, method, headers, payload, left, timeoutMs, 'fresh', maxBytes, this.opts.pin);
      }
    } catch (err) {
      if (err instanceof UntrustedPeer) throw new UntrustedPeer(err.expected, err.got, this.opts.peer);
      throw new Unavailable(`${this.opts.peer} is unreachable: ${(err as Error).message}`, this.opts.unreachableDetails, `${this.opts.codePrefix}_unreachable`);
    }
    let parsed: unknown;
    try {
      parsed = raw.text ? JSON.parse(raw.text) : undefined;
    } catch {
      parsed = undefined; // not JSON (a proxy's error page): the status alone speaks
    }
    return { status: raw.status, body: parsed };
  }

  /** The error for a non-2xx answer (also for callers of `request` that want the same error). */
  remoteError(method: string, path: string, answer: HttpAnswer): RemoteError {
    const e = errorOf(answer.body);
    const code = e?.code ?? `${this.opts.codePrefix}_${answer.status < 500 ? 'rejected' : 'error'}`;
    return new RemoteError(answer.status, code, `${this.opts.peer}: ${e?.message ?? `${method} ${path} answered ${answer.status}`}`, e?.details);
  }
}

/** The `error` of an `{ error: { code, message, details? } }` answer, if that is what it is. */
export function errorOf(body: unknown): { code?: string; message?: string; details?: unknown } | undefined {
  const e = (body as { error?: unknown } | undefined)?.error;
  if (typeof e !== 'object' || e === null) return undefined;
  const { code, message, details } = e as Record<string, unknown>;
  return {
    ...(typeof code === 'string' ? { code } : {}),
    ...(typeof message === 'string' ? { message } : {}),
    ...(details !== undefined ? { details } : {}),
  };
}

function isStream(v: unknown): v is Readable {
  return typeof v === 'object' && v !== null && typeof (v as Readable).pipe === 'function';
}

/** A pooled connection that the other side had closed (its keep-alive timeout) when the request went out on it. */
class StaleConnection extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = 'StaleConnection';
  }
}

/**
 * One request with a deadline `waitMs` from now for the whole exchange; resolves with the status and
 * the body text. `timeoutMs` is the call's whole timeout, named in the message when the deadline passes.
 */
function exchange(url: URL, method: string, headers: Record<string, string>, body: string | Readable | undefined, waitMs: number, timeoutMs: number,
  connection: 'pooled' | 'fresh', maxBytes: number, pin: string | undefined): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const secure = url.protocol === 'https:';
    if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
    const agent = pin !== undefined
      ? (connection === 'fresh' ? new PinnedAgent(pin) : pinnedPool(pin))
      : connection === 'fresh' ? false : pools[secure ? 'https:' : 'http:'];
    let settled = false;
    const req = (secure ? https : http).request(url, { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= maxBytes) chunks.push(c);
        else if (!settled) {
          fail(new Error(`answer larger than ${maxBytes} bytes`));
          req.destroy();
        }
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => {
      fail(new Error(`no answer within ${timeoutMs} ms`));
      req.destroy();
    }, waitMs);
    function fail(err: Error): void {
      if (settled) return; // the first failure is the one reported (a destroyed request adds its own)
      settled = true;
      clearTimeout(timer);
      reject(err);
    }
    let answered = false;
    req.on('response', () => (answered = true));
    req.on('error', (err: NodeJS.ErrnoException) => {
      const stale = req.reusedSocket && !answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
      fail(stale ? new StaleConnection(err) : err);
    });
    if (body === undefined || typeof body === 'string') req.end(body);
    else {
      body.on('error', (err) => req.destroy(err));
      body.pipe(req);
    }
  });
}
