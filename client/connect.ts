// Reaching a controller from `skyhost vm`: its URL (--controller, config controllerUrl, else the one
// controller heard on the LAN by mDNS, wire/mdns-browse.ts), the trust (a pinned certificate with
// --controller-fingerprint, base/tls.ts; else HTTPS checked with the system's CAs) and the API token
// (--token, $SKYHOST_TOKEN, ~/.config/skyhost/token).
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { UsageError, type CommandContext } from '../base/cli.ts';
import { SkyError } from '../base/errors.ts';
import { HttpClient, RemoteError } from '../base/http-client.ts';
import { lanAddress } from '../base/net.ts';
import { normalizeFingerprint, PinnedAgent } from '../base/tls.ts';
import { browseControllers } from '../wire/mdns-browse.ts';
import type { ControllerAd } from '../wire/mdns.ts';

/** How long to listen for controllers on the LAN. */
const BROWSE_MS = 2000;

export interface Connection {
  /** e.g. `https://10.0.0.5:8443` */
  url: string;
  token: string;
  /** The pinned certificate's fingerprint, when trusted that way. */
  fingerprint?: string;
  api: HttpClient;
}

/** `~/.config/skyhost/token` (or under $XDG_CONFIG_HOME). */
export function tokenFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config'), 'skyhost', 'token');
}

/** The API token: --token, else $SKYHOST_TOKEN, else the token file; a usage error when there is none. */
export function findToken(flag: unknown, env: NodeJS.ProcessEnv = process.env): string {
  if (typeof flag === 'string' && flag.trim()) return flag.trim();
  if (env.SKYHOST_TOKEN?.trim()) return env.SKYHOST_TOKEN.trim();
  const file = tokenFile(env);
  let text = '';
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot read the API token file ${file}: ${(err as Error).message}`);
  }
  if (text) return text;
  throw new UsageError(`no API token: give --token T, set SKYHOST_TOKEN, or put it in ${file} (make one on the controller's My account page, or POST /api/tokens)`);
}

/** The one controller advertised on the LAN (with the fingerprint given: the one showing it). */
async function discover(ctx: CommandContext, fingerprint: string | undefined): Promise<ControllerAd> {
  const browser = browseControllers({ lanIp: lanAddress(ctx.config.lanInterface)?.ip, log: ctx.log });
  let ads: ControllerAd[];
  try {
    browser.query();
    await new Promise((resolve) => setTimeout(resolve, BROWSE_MS));
    ads = browser.ads();
  } finally {
    await browser.stop();
  }
  // The TXT fingerprint is only a hint for choosing: the connection itself is pinned below.
  if (fingerprint) ads = ads.filter((a) => !a.fingerprint || a.fingerprint === fingerprint);
  const clusters = new Map(ads.map((a) => [a.clusterId, a]));
  if (clusters.size === 1) return [...clusters.values()][0]!;
  if (clusters.size === 0) throw new UsageError(`no controller heard on the LAN by mDNS within ${BROWSE_MS / 1000} s: give --controller URL`);
  throw new UsageError(`${clusters.size} controllers heard on the LAN (${[...clusters.values()].map((a) => `${a.name} at ${a.url}`).join(', ')}): choose one with --controller URL`);
}

/** The controller to talk to, how to trust it, and the token to show it. */
export async function connect(ctx: CommandContext): Promise<Connection> {
  const token = findToken(ctx.flags.token);
  const fingerprint = ctx.config.controllerFingerprint ? normalizeFingerprint(ctx.config.controllerFingerprint) : undefined;
  const url = (ctx.config.controllerUrl ?? (await discover(ctx, fingerprint)).url).replace(/\/+$/, '');
  if (fingerprint && !url.startsWith('https://')) throw new UsageError(`--controller-fingerprint needs an https:// controller URL (got ${url})`);
  if (!fingerprint && url.startsWith('https://')) trustSystemCas();
  const api = new HttpClient({
    baseUrl: url, bearer: token, connection: 'fresh', peer: `controller ${url}`, codePrefix: 'controller', timeoutMs: 30_000,
    ...(fingerprint ? { pin: fingerprint } : {}),
  });
  return { url, token, api, ...(fingerprint ? { fingerprint } : {}) };
}

/** The https.Agent of a WebSocket to the controller: pinned when a fingerprint was given. */
export function socketAgent(c: Connection): PinnedAgent | undefined {
  return c.fingerprint ? new PinnedAgent(c.fingerprint) : undefined;
}

/**
 * A call to the API; its errors carry the API's message (exit 2 for a 4xx, 1 otherwise), with a hint
 * where the token is the likely cause.
 */
export async function call<T>(c: Connection, method: string, apiPath: string, body?: unknown, timeoutMs?: number): Promise<T> {
  try {
    return (await c.api.call(method, apiPath, body, timeoutMs ? { timeoutMs } : {})) as T;
  } catch (err) {
    if (err instanceof RemoteError && err.remoteStatus === 401) {
      throw new SkyError(401, err.code, `${err.message} (the token comes from --token, SKYHOST_TOKEN or ${tokenFile()})`);
    }
    const reason = certificateProblem(err);
    if (reason) {
      throw new SkyError(502, 'untrusted_certificate', `controller ${c.url}: its certificate is not signed by a CA this machine trusts (${reason}); give --controller-fingerprint SHA256 (shown on its hosts page) to trust that certificate alone`);
    }
    throw err;
  }
}

/** Why Node refused the controller's certificate, in its own words, or undefined for any other error. */
function certificateProblem(err: unknown): string | undefined {
  if (!(err instanceof SkyError) || err.code === 'untrusted_peer') return undefined;
  return /(self[- ]signed certificate(?: in certificate chain)?|unable to verify the first certificate|unable to get local issuer certificate|certificate has expired|Hostname\/IP does not match certificate's altnames[^;]*)/i.exec(err.message)?.[1];
}

let systemCasAdded = false;
/** HTTPS checked with this machine's CAs (a school's own CA installed here) besides Node's bundled ones. */
function trustSystemCas(): void {
  if (systemCasAdded) return;
  systemCasAdded = true;
  tls.setDefaultCACertificates([...new Set([...tls.getCACertificates('default'), ...tls.getCACertificates('system')])]);
}
