// The web installer's "Test" of a controller address, from the teacher's PC before anything is
// built: GET <url>/healthz, bounded in time, and a sentence saying what was found. HTTPS is accepted
// with the controller's own certificate (this only asks whether it answers; agents pin its key).
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { normalizeFingerprint } from '../../base/tls.ts';
import { isLoopbackHost } from '../../server/install.ts';
import { parseJoin } from '../../wire/api.ts';

export interface ReachResult {
  ok: boolean;
  /** One sentence for the page. */
  message: string;
}

/** How long the test waits for the whole answer. */
export const REACH_TIMEOUT_MS = 4000;

/**
 * Asks the controller at `url` for `/healthz` (following at most two redirects: the HTTP port sends
 * LAN clients to HTTPS) and says what it found. With a join string (`joinToken`), an HTTPS answer's
 * certificate is compared with the fingerprint the string names: the agents will trust nothing else.
 * @example await reachController('http://10.0.0.5:8080') // { ok: true, message: 'The controller at … answers: SkyHost 0.9.0, cluster 3f9a1c2e (12 ms).' }
 */
export async function reachController(url: string, timeoutMs = REACH_TIMEOUT_MS, joinToken = ''): Promise<ReachResult> {
  const raw = url.trim();
  if (!raw) return { ok: false, message: 'Type the controller address first (e.g. http://10.0.0.5:8080), then press Test.' };
  let target: URL;
  try {
    target = new URL(raw);
  } catch {
    return { ok: false, message: `${raw} is not an address: it should look like http://10.0.0.5:8080.` };
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') return { ok: false, message: `${raw} must start with http:// or https://.` };
  if (isLoopbackHost(target.hostname)) {
    return { ok: false, message: `${raw} is this PC's own address: lab PCs would look for the controller on themselves. Use the address the controller's Hosts page shows.` };
  }
  const started = performance.now();
  const deadline = AbortSignal.timeout(timeoutMs);
  let at = new URL('/healthz', target);
  try {
    for (let hop = 0; ; hop++) {
      const { res, fingerprint: seen } = await get(at, deadline);
      const location = res.headers.location;
      if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && location && hop < 2) {
        res.resume();
        at = new URL(location, at);
        continue;
      }
      const body = await readBody(res, deadline);
      const ms = Math.round(performance.now() - started);
      let health: { ok?: unknown; version?: unknown; clusterId?: unknown } | undefined;
      try {
        health = JSON.parse(body) as typeof health;
      } catch {
        health = undefined; // not JSON: not a SkyHost controller, said below
      }
      if (res.statusCode !== 200 || health?.ok !== true) {
        return { ok: false, message: `${raw} answers, but not as a SkyHost controller (HTTP ${res.statusCode} at ${at.pathname}): check the address and its port.` };
      }
      const cluster = typeof health.clusterId === 'string' ? `, cluster ${health.clusterId.replace(/[^A-Za-z0-9]/g, '').slice(0, 8)}` : '';
      const found = `The controller at ${raw} answers: SkyHost ${String(health.version ?? '?')}${cluster} (${ms} ms)`;
      const expected = joinFingerprint(joinToken);
      if (expected && seen) {
        if (normalizeFingerprint(seen) !== expected) {
          return { ok: false, message: `${found}, but its certificate is not the one the join token names: the token comes from another controller, or this address is not the controller's.` };
        }
        return { ok: true, message: `${found}; its certificate is the one the join token names.` };
      }
      return { ok: true, message: `${found}.` };
    }
  } catch (err) {
    return { ok: false, message: `No answer from ${raw} within ${Math.round(timeoutMs / 1000)} s: ${why(err, deadline)}. Check the address, and that this PC is on the school network and the controller runs.` };
  }
}

/** The certificate fingerprint a join string names (none for a bare token or a damaged string). */
function joinFingerprint(joinToken: string): string | undefined {
  try {
    return joinToken ? parseJoin(joinToken).fingerprint : undefined;
  } catch {
    return undefined; // a damaged join string is refused by the options step, naming the field
  }
}

/** The answer, and the certificate's sha256 for HTTPS (read at once: the socket goes back to the pool after the body). */
function get(url: URL, signal: AbortSignal): Promise<{ res: IncomingMessage; fingerprint?: string }> {
  return new Promise((resolve, reject) => {
    const opts = { method: 'GET', signal, headers: { accept: 'application/json' } };
    const answered = (res: IncomingMessage) => {
      const fingerprint = (res.socket as TLSSocket | null)?.getPeerCertificate?.()?.fingerprint256;
      resolve({ res, ...(fingerprint ? { fingerprint } : {}) });
    };
    const req = url.protocol === 'https:'
      ? httpsRequest(url, { ...opts, rejectUnauthorized: false }, answered)
      : httpRequest(url, opts, answered);
    req.on('error', reject);
    req.end();
  });
}

async function readBody(res: IncomingMessage, signal: AbortSignal): Promise<string> {
  let text = '';
  for await (const chunk of res) {
    if (signal.aborted) throw signal.reason;
    text += String(chunk);
    if (text.length > 64 * 1024) break; // /healthz is a few bytes: anything this big is not it
  }
  return text;
}

/** The reason in words: name not found, connection refused, timed out... */
function why(err: unknown, deadline: AbortSignal): string {
  if (deadline.aborted) return 'it did not answer in time';
  const code = (err as { code?: string }).code;
  const words: Record<string, string> = {
    ENOTFOUND: 'this name is not known on the network (ENOTFOUND)',
    EAI_AGAIN: 'the name could not be looked up (EAI_AGAIN)',
    ECONNREFUSED: 'nothing listens at that port (connection refused)',
    EHOSTUNREACH: 'that address cannot be reached from this PC (EHOSTUNREACH)',
    ENETUNREACH: 'no network leads there from this PC (ENETUNREACH)',
    ECONNRESET: 'the connection was cut (ECONNRESET)',
  };
  return (code && words[code]) ?? (err as Error).message ?? String(err);
}
