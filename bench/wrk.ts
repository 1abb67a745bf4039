// Reads the text wrk prints with --latency (wrk has no JSON output): the latency percentiles, the
// request rate, and what went wrong (non-2xx/3xx answers, socket errors).

export interface WrkResult {
  /** Latency percentiles in ms, keyed by percent: 50, 75, 90, 99. */
  latencyMs: Record<number, number>;
  requestsPerSecond: number;
  /** Answers whose status was not 2xx or 3xx. */
  non2xx: number;
  /** connect + read + write errors and timeouts. */
  errors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** Parses wrk's --latency report; throws naming what is missing when the text is not one. */
export function parseWrk(text: string): WrkResult {
  const latencyMs: Record<number, number> = {};
  for (const m of text.matchAll(/^\s+(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m)\s*$/gm)) {
    latencyMs[Number(m[1])] = Number(m[2]) * UNIT_MS[m[3]!]!;
  }
  const rps = /^Requests\/sec:\s+(\d+(?:\.\d+)?)/m.exec(text);
  if (latencyMs[99] === undefined || !rps) throw new Error(`not a wrk --latency report: ${text.trim().split('\n').slice(-3).join(' | ')}`);
  const non2xx = /^\s*Non-2xx or 3xx responses:\s+(\d+)/m.exec(text);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    latencyMs,
    requestsPerSecond: Number(rps[1]),
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    errors: sock ? sock.slice(1, 5).reduce((s, x) => s + Number(x), 0) : 0,
  };
}
