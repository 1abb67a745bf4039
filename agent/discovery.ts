// Zero-config enrollment, the agent's side (docs/design.md#mdns-record): with no controller configured, browse
// `_skyhost._tcp`, choose the controller of our cluster (or the only one), and `POST /api/enroll`;
// then keep watching for a new address of ours or of the controller and enroll again when one changes.
//
//   browse ──ads──▶ chooseController ──▶ agent URL (our address towards it) ──▶ POST /api/enroll
//      ▲                                                                              │
//      └──────────── every tick: re-check addresses, re-enroll while pending ◀────────┘
//
// The mDNS contract itself (service type, TXT, the LAN address) is agent/mdns.ts.
import { createSocket } from 'node:dgram';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Bonjour, type Browser } from 'bonjour-service';
import { z } from 'zod';
import type { Logger } from '../base/log.ts';
import { EnrollResponse, type EnrollRequest } from '../wire/api.ts';
import { ClusterId, lanAddress, parseAd, quietErrors, SERVICE_TYPE, type ControllerAd } from './mdns.ts';

export { lanAddress } from './mdns.ts';

/** A join token left in a file. (The USB installer puts `joinToken` in /etc/skyhost/config.yaml, read as config.) */
export const JOIN_TOKEN_FILE = '/etc/skyhost/join-token';

/** What `/status` shows under `controller` (HostStatus.controller in wire/api.ts). */
export interface ControllerState {
  url?: string;
  clusterId?: string;
  state: 'searching' | 'ambiguous' | 'enrolling' | 'pending' | 'ready' | 'down' | 'draining' | 'refused' | 'unreachable';
  message?: string;
}

// ---------------------------------------------------------------------------------------------
// Choosing a controller, and our address towards it.

export type Choice =
  | { kind: 'chosen'; ad: ControllerAd }
  | { kind: 'none'; message: string }
  | { kind: 'ambiguous'; ads: ControllerAd[]; message: string };

/**
 * Which controller to enroll with. An agent that already belongs to a cluster only ever takes that
 * cluster's controller; one with no cluster takes the only cluster it hears, and does not guess
 * between two.
 */
export function chooseController(ads: ControllerAd[], myClusterId?: string, myUrl?: string): Choice {
  const byName = [...ads].sort((a, b) => a.name.localeCompare(b.name));
  if (myClusterId) {
    // Two advertisements claiming our cluster: the address we enrolled with first.
    const mine = byName.find((a) => a.clusterId === myClusterId && a.url === myUrl) ?? byName.find((a) => a.clusterId === myClusterId);
    if (mine) return { kind: 'chosen', ad: mine };
    const others = [...new Set(byName.map((a) => a.clusterId))];
    return {
      kind: 'none',
      message: `waiting for the controller of cluster ${myClusterId}` +
        (others.length ? `; ignoring controller(s) of other clusters: ${others.join(', ')}` : ''),
    };
  }
  const clusters = [...new Set(byName.map((a) => a.clusterId))];
  if (clusters.length === 0) return { kind: 'none', message: 'searching the LAN for a SkyHost controller (mDNS _skyhost._tcp)' };
  if (clusters.length === 1) return { kind: 'chosen', ad: byName[0]! };
  return {
    kind: 'ambiguous',
    ads: byName,
    message: `heard ${clusters.length} SkyHost controllers of different clusters (` +
      byName.map((a) => `${a.clusterId} at ${a.url}`).join(', ') +
      `): not choosing one; start the agent with --controller URL`,
  };
}

/** The source address this machine uses to reach `url`'s host (a UDP connect: nothing is sent). */
export function localAddressTowards(url: string): Promise<string | undefined> {
  const { hostname, port, protocol } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const done = (v: string | undefined) => {
      sock.close();
      resolve(v);
    };
    sock.on('error', () => done(undefined));
    sock.connect(Number(port) || (protocol === 'https:' ? 443 : 80), host, () => {
      try {
        done(sock.address().address);
      } catch {
        done(undefined);
      }
    });
  });
}

/** The join token: `--join-token` / config `joinToken`, else JOIN_TOKEN_FILE. */
export function readJoinToken(configured: string | undefined, file = JOIN_TOKEN_FILE): string | undefined {
  if (configured) return configured;
  try {
    const t = readFileSync(file, 'utf8').trim();
    return t.length >= 8 ? t : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// What the agent remembers after its first enrollment (DATA/enrollment.json).

const Remembered = z.object({ clusterId: ClusterId, url: z.string(), agentUrl: z.string(), enrolledAt: z.string() });
export type Remembered = z.infer<typeof Remembered>;

export function enrollmentFile(dataDir: string): string {
  return path.join(dataDir, 'enrollment.json');
}

export function loadRemembered(dataDir: string): Remembered | undefined {
  const file = enrollmentFile(dataDir);
  if (!existsSync(file)) return undefined;
  try {
    return Remembered.parse(JSON.parse(readFileSync(file, 'utf8')));
  } catch {
    return undefined;
  }
}

function saveRemembered(dataDir: string, r: Remembered): void {
  mkdirSync(dataDir, { recursive: true });
  const file = enrollmentFile(dataDir);
  writeFileSync(file + '.tmp', JSON.stringify(r, null, 2) + '\n', { mode: 0o600 });
  renameSync(file + '.tmp', file);
}

// ---------------------------------------------------------------------------------------------
// Browsing.

export interface ControllerBrowser {
  /** The address it browses from. */
  readonly lanIp: string | undefined;
  /** When browsing started (ms since the epoch). */
  readonly since: number;
  /** Called when an advertisement comes, changes or goes. */
  onChange: (() => void) | undefined;
  /** Usable advertisements heard so far (a dead controller that sent no goodbye stays listed). */
  ads(): ControllerAd[];
  /** Asks the LAN again (`browser.update()`). */
  query(): void;
  stop(): Promise<void>;
}

/** Browses `_skyhost._tcp` from `lanIp` (multicast goes out of that interface only). */
export function browseControllers(opts: { lanIp?: string | undefined; log: Logger; onChange?: () => void }): ControllerBrowser {
  const bonjour = new Bonjour(
    (opts.lanIp ? { interface: opts.lanIp, bind: '0.0.0.0' } : {}) as object,
    (err: Error) => opts.log.debug('mDNS send failed', { err: err.message }),
  );
  quietErrors(bonjour, opts.log);
  const browser: Browser = bonjour.find({ type: SERVICE_TYPE });
  const warned = new Set<string>();
  const self: ControllerBrowser = {
    lanIp: opts.lanIp,
    since: Date.now(),
    onChange: opts.onChange,
    ads() {
      const out: ControllerAd[] = [];
      for (const s of browser.services) {
        const ad = parseAd(s);
        if ('invalid' in ad) {
          if (!warned.has(s.name)) opts.log.warn(`ignoring controller advertisement "${s.name}": ${ad.invalid}`);
          warned.add(s.name);
        } else out.push(ad);
      }
      return out;
    },
    query: () => browser.update(),
    stop: () =>
      new Promise<void>((resolve) => {
        browser.stop();
        bonjour.destroy(() => resolve());
        setTimeout(resolve, 500).unref();
      }),
  };
  const changed = () => self.onChange?.();
  browser.on('up', changed);
  browser.on('down', changed);
  browser.on('txt-update', changed);
  browser.on('srv-update', changed);
  return self;
}

// ---------------------------------------------------------------------------------------------
// The enroll loop.

export interface DiscoveryOptions {
  dataDir: string;
  hostId: string;
  hostname: string;
  agentKey: string;
  version: string;
  /** The agent's own HTTP port (its URL is built from the address it uses to reach the controller). */
  agentPort: number;
  /** `--controller URL`: no browsing. */
  controllerUrl?: string | undefined;
  /** A fixed agent URL (config `agentUrl`) instead of the one worked out from our address. */
  agentUrl?: string | undefined;
  joinToken?: string | undefined;
  lanInterface?: string | undefined;
  /** A browser started earlier (while the agent was still starting), to hear answers sooner. */
  browser?: ControllerBrowser | undefined;
  log: Logger;
  /**
   * Milliseconds between checks before enrollment (default 500). Scaled from it: checks once enrolled
   * (10x), asking again while pending (20x) or refused (60x).
   */
  tickMs?: number;
  /**
   * With no cluster yet, how long to listen after the first query before choosing, so that a second
   * controller's answer is heard before the first one is taken. Default 500 ms (responders answer
   * within 20-120 ms, RFC 6762 §6).
   */
  settleMs?: number;
  /** Called whenever the state changes (e.g. to log or to refresh /status). */
  onState?: (s: ControllerState) => void;
}

export interface Discovery {
  /** For `/status` (HostStatus.controller). */
  state(): ControllerState;
  /** Resolves at the first `ready` or `pending` (or rejects after `ms`). */
  enrolled(ms?: number): Promise<ControllerState>;
  stop(): Promise<void>;
}

/** States that wait for a change rather than retry: checked every 10 ticks, the LAN asked every 30 s. */
const SETTLED = new Set<ControllerState['state']>(['ready', 'pending', 'down', 'draining', 'ambiguous', 'refused']);

/** Enrolls this agent with its controller and keeps its record current. */
export function startDiscovery(opts: DiscoveryOptions): Discovery {
  const tickMs = opts.tickMs ?? 500;
  const log = opts.log;
  let remembered = loadRemembered(opts.dataDir);
  let state: ControllerState = remembered
    ? { state: 'searching', clusterId: remembered.clusterId, url: remembered.url, message: `looking for the controller of cluster ${remembered.clusterId}` }
    : { state: 'searching', message: opts.controllerUrl ? `enrolling with ${opts.controllerUrl}` : 'searching the LAN for a SkyHost controller (mDNS _skyhost._tcp)' };
  let browser: ControllerBrowser | undefined = opts.browser;
  let browserIp: string | undefined = browser?.lanIp;
  if (browser) browser.onChange = () => kick();
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let lastQuery = 0;
  let browsingSince = browser?.since ?? 0;
  let lastEnroll: { url: string; agentUrl: string; at: number } | undefined;
  let failures = 0;
  const waiters = new Set<() => void>();

  const setState = (next: ControllerState) => {
    const changed = next.state !== state.state || next.message !== state.message || next.url !== state.url;
    state = next;
    if (!changed) return;
    const line = `controller: ${next.state}${next.url ? ' ' + next.url : ''}${next.message ? ' — ' + next.message : ''}`;
    if (next.state === 'ambiguous' || next.state === 'refused' || next.state === 'unreachable') log.warn(line, { clusterId: next.clusterId });
    else log.info(line, { clusterId: next.clusterId });
    opts.onState?.(next);
    for (const w of waiters) w();
  };

  const kick = () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = tick()
      .catch((err: Error) => log.error('discovery step failed', { err }))
      .finally(() => {
        running = undefined;
        if (stopped) return;
        timer = setTimeout(kick, again ? 0 : SETTLED.has(state.state) ? tickMs * 10 : tickMs * (failures > 3 ? 4 : 1));
        again = false;
      });
  };

  async function candidates(): Promise<ControllerAd[]> {
    if (opts.controllerUrl) return [{ name: 'configured', clusterId: remembered?.clusterId ?? '', url: opts.controllerUrl.replace(/\/$/, '') }];
    const lan = lanAddress(opts.lanInterface);
    if (!browser || lan?.ip !== browserIp) {
      if (browser) {
        log.info('LAN address changed: browsing again', { from: browserIp, to: lan?.ip });
        await browser.stop();
      }
      browserIp = lan?.ip;
      browser = browseControllers({ lanIp: browserIp, log, onChange: kick });
      lastQuery = browsingSince = Date.now();
    }
    if (Date.now() - lastQuery > (SETTLED.has(state.state) ? 30_000 : 2_000)) {
      browser.query();
      lastQuery = Date.now();
    }
    return browser.ads();
  }

  async function tick(): Promise<void> {
    const ads = await candidates();
    const listening = Date.now() - browsingSince;
    const settle = opts.settleMs ?? 500;
    if (!opts.controllerUrl && !remembered && listening < settle) {
      await new Promise((r) => setTimeout(r, settle - listening));
      return tick();
    }
    let choice = opts.controllerUrl ? ({ kind: 'chosen', ad: ads[0]! } as Choice) : chooseController(ads, remembered?.clusterId, remembered?.url);
    if (choice.kind === 'ambiguous') {
      // A controller that died without a goodbye stays advertised for hours: count only live ones.
      const live = await filterReachable(choice.ads);
      if (live.length > 0 && live.length < choice.ads.length) choice = chooseController(live);
    }
    if (choice.kind === 'ambiguous') {
      setState({ state: 'ambiguous', message: choice.message });
      return;
    }
    if (choice.kind === 'none' && remembered) {
      // Not heard (yet): our cluster's last address. The answer's cluster id is checked in enroll().
      choice = { kind: 'chosen', ad: { name: 'remembered', clusterId: remembered.clusterId, url: remembered.url } };
    }
    if (choice.kind === 'none') {
      setState({ state: 'searching', message: choice.message });
      return;
    }
    const ad = choice.ad;
    const local = opts.agentUrl ? undefined : await localAddressTowards(ad.url);
    const agentUrl = opts.agentUrl ?? (local ? `http://${local.includes(':') ? `[${local}]` : local}:${opts.agentPort}` : undefined);
    if (!agentUrl) {
      setState({ state: 'unreachable', url: ad.url, clusterId: ad.clusterId, message: `no route to ${ad.url}` });
      return;
    }
    const changed = !lastEnroll || lastEnroll.url !== ad.url || lastEnroll.agentUrl !== agentUrl;
    const recheck = state.state !== 'ready' && state.state !== 'down' && state.state !== 'draining';
    if (!changed && !recheck) return;
    // Pending: ask again now and then to learn of the approval; refused: maybe the admin acts.
    if (!changed && Date.now() - lastEnroll!.at < tickMs * (state.state === 'refused' ? 60 : state.state === 'pending' ? 20 : 4)) return;
    await enroll(ad, agentUrl);
  }

  async function enroll(ad: ControllerAd, agentUrl: string, withToken = true): Promise<void> {
    if (state.state === 'searching' || state.state === 'ambiguous') setState({ state: 'enrolling', url: ad.url, clusterId: ad.clusterId || undefined });
    const body: EnrollRequest = {
      hostId: opts.hostId,
      hostname: opts.hostname,
      agentUrl,
      agentKey: opts.agentKey,
      version: opts.version,
      ...(opts.joinToken && withToken ? { joinToken: opts.joinToken } : {}),
    };
    lastEnroll = { url: ad.url, agentUrl, at: Date.now() };
    let res: JsonAnswer;
    try {
      res = await requestJson('POST', ad.url + '/api/enroll', body, 5000);
    } catch (err) {
      failures++;
      lastEnroll = { url: ad.url, agentUrl: '', at: Date.now() };
      setState({ state: 'unreachable', url: ad.url, clusterId: ad.clusterId || undefined, message: `cannot reach ${ad.url}: ${(err as Error).message}` });
      return;
    }
    const payload = res.body;
    if (res.status === 403 && body.joinToken && remembered?.clusterId === ad.clusterId) {
      // Already a member (our key proves it): a token rotated or used up since must not lock us out.
      log.info('join token refused; enrolling again as a known host, without it', { reason: errorMessage(payload) });
      lastEnroll = undefined;
      return enroll(ad, agentUrl, false);
    }
    if (res.status < 200 || res.status > 299) {
      failures++;
      setState({ state: 'refused', url: ad.url, clusterId: ad.clusterId || undefined, message: `controller refused enrollment (${res.status}): ${errorMessage(payload) ?? 'no reason given'}` });
      return;
    }
    const parsed = EnrollResponse.safeParse(payload);
    if (!parsed.success) {
      failures++;
      setState({ state: 'refused', url: ad.url, message: 'the controller answered enrollment with something that is not an EnrollResponse' });
      return;
    }
    const r = parsed.data;
    const expected = remembered?.clusterId ?? (ad.clusterId || undefined);
    if (expected && r.clusterId !== expected) {
      // Someone else answered at that address: never switch clusters.
      failures++;
      lastEnroll = { url: ad.url, agentUrl, at: Date.now() };
      setState({
        state: 'refused', url: ad.url, clusterId: expected,
        message: `${ad.url} answered for cluster ${r.clusterId}, but this host belongs to cluster ${expected}` +
          (remembered ? ` (remove ${enrollmentFile(opts.dataDir)} to let it join another cluster)` : ''),
      });
      return;
    }
    failures = 0;
    if (!remembered || remembered.url !== ad.url || remembered.agentUrl !== agentUrl) {
      remembered = { clusterId: r.clusterId, url: ad.url, agentUrl, enrolledAt: new Date().toISOString() };
      saveRemembered(opts.dataDir, remembered);
    }
    setState({ state: r.state, url: ad.url, clusterId: r.clusterId, ...(r.message ? { message: r.message } : { message: `enrolled as ${opts.hostId} (${agentUrl})` }) });
  }

  kick();
  return {
    state: () => ({ ...state }),
    enrolled(ms = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (state.state === 'ready' || state.state === 'pending') {
            waiters.delete(check);
            clearTimeout(t);
            resolve({ ...state });
          }
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`not enrolled after ${ms} ms: ${state.state}${state.message ? ' — ' + state.message : ''}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await browser?.stop();
    },
  };
}

interface JsonAnswer {
  status: number;
  body: unknown;
}

/**
 * One HTTP request on a fresh connection. Not fetch: its pooled keep-alive connection would outlive a
 * change of our address, and the next request on it would hang until the timeout.
 */
function requestJson(method: 'GET' | 'POST', url: string, body: unknown, timeoutMs: number): Promise<JsonAnswer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, {
      method,
      agent: false,
      timeout: timeoutMs,
      headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (text.length < 65536) text += c;
      });
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** The message of an `{ error: { message } }` answer. */
function errorMessage(payload: unknown): string | undefined {
  return (payload as { error?: { message?: string } } | undefined)?.error?.message;
}

/** The ads whose controller answers `/healthz` within a second. */
async function filterReachable(ads: ControllerAd[]): Promise<ControllerAd[]> {
  const ok = await Promise.all(
    ads.map((a) =>
      requestJson('GET', a.url + '/healthz', undefined, 1000)
        .then((r) => r.status === 200)
        .catch(() => false),
    ),
  );
  return ads.filter((_, i) => ok[i]);
}
