// Finding and enrolling with the controller as a pure state machine: `next(state, event)` returns the
// next state and the effects to perform (browse, query, find our route, enroll, remember, wait).
// No I/O and no clock here: the time comes with each event. agent/discovery/index.ts performs the
// effects and feeds back what happened as events.
//
//   searching ──one cluster heard (or remembered)──▶ enrolling ──answer──▶ pending ──approved──▶ ready
//     │    ▲                                            ▲  │                                     (down, draining:
//     │    │ one left                        our address │  └──▶ refused / unreachable             as the controller says)
//     ▼    │                       or the controller's URL │            │ asked again later
//   ambiguous (two clusters, no cluster of our own)        └────────────┘
//
// Trust: an agent that holds the controller's certificate fingerprint (a join string, the
// --controller-fingerprint flag, or DATA/enrollment.json) enrolls over https:// pinned to it and
// nowhere else; one that holds none takes the certificate of the first https:// controller it
// enrolls with (trust on first use) and pins it from then on. TXT `fp` only helps choose.
import { EnrollResponse, type EnrollRequest } from '../../wire/api.ts';
import type { ControllerAd } from '../../wire/mdns.ts';
import { errorOf } from '../../base/http-client.ts';
import { compareNames } from '../../base/order.ts';
import type { Remembered } from './remembered.ts';

/** What `/status` shows under `controller` (HostStatus.controller in wire/api.ts). */
export interface ControllerState {
  url?: string;
  clusterId?: string;
  state: 'searching' | 'ambiguous' | 'enrolling' | 'pending' | 'ready' | 'down' | 'draining' | 'refused' | 'unreachable';
  message?: string;
}

export interface DiscoveryConfig {
  hostId: string;
  hostname: string;
  agentKey: string;
  version: string;
  /** The agent's own port: its URL is the address that reaches the controller plus this port. */
  agentPort: number;
  /** `--controller URL`: no browsing. */
  controllerUrl?: string | undefined;
  /** A fixed agent URL (config `agentUrl`) instead of the one worked out from our address. */
  agentUrl?: string | undefined;
  joinToken?: string | undefined;
  /** sha256 of our own certificate, sent with the enrollment (our URL is then https://). */
  certFingerprint?: string | undefined;
  /** The controller's certificate fingerprint we were given (join string or --controller-fingerprint). */
  controllerFingerprint?: string | undefined;
  /** The controller's addresses from a join string: tried when mDNS finds none of ours. */
  joinAddresses?: string[] | undefined;
  /** The pace of everything (ms, default 500): checks before enrollment; x10 once settled; asking again x4, x20 while pending, x60 when refused. */
  tickMs: number;
  /** With no cluster yet, how long to listen before choosing, so that a second controller's answer is heard. */
  settleMs: number;
  /** DATA/enrollment.json, named in a refusal's message. */
  enrollmentFile: string;
}

/** A request under way; its answer comes back as an event. One at a time. */
export type InFlight =
  | { step: 'route'; ad: ControllerAd }
  | { step: 'reachable'; ads: ControllerAd[] }
  | { step: 'enroll'; ad: ControllerAd; agentUrl: string; withToken: boolean; pin?: string | undefined };

export interface DiscoveryState {
  readonly config: DiscoveryConfig;
  /** What `/status` shows. */
  view: ControllerState;
  /** DATA/enrollment.json: our cluster once we enrolled. */
  remembered: Remembered | undefined;
  /** Browsing the LAN (never with a configured controller): from which address, since when, last query. */
  browse: { lanIp: string | undefined; since: number; lastQuery: number } | undefined;
  /** Advertisements heard (from the current browse). */
  ads: ControllerAd[];
  /** The last enrollment sent: to which controller, with which agent URL, when. */
  lastEnroll: { url: string; agentUrl: string; at: number } | undefined;
  /** Enrollments that failed in a row (more than 3 slow the checks down). */
  failures: number;
  inFlight: InFlight | undefined;
  /** Something changed while a request was under way: check again as soon as it is answered. */
  recheck: boolean;
}

export type DiscoveryEvent =
  /** The wait is over; `lanIp` is this machine's LAN address now. */
  | { type: 'timer'; now: number; lanIp: string | undefined }
  /** The browser's list of advertisements changed. */
  | { type: 'heard'; now: number; ads: ControllerAd[] }
  /** Answer to `findRoute`: our URL towards the chosen controller, undefined when there is no route. */
  | { type: 'route'; now: number; agentUrl: string | undefined }
  /** Answer to `checkReachable`: the controller URLs that answered `/healthz`. */
  | { type: 'reachable'; now: number; urls: string[] }
  /** `fingerprint`: the certificate the answer came over (pinned), none over plain HTTP. */
  | { type: 'enrollAnswered'; now: number; status: number; body: unknown; fingerprint?: string | undefined }
  /** Nothing answered the enrollment (refused connection, timeout); `message` says what happened. */
  | { type: 'enrollFailed'; now: number; message: string };

export type Effect =
  /** (Re)start browsing from this address (stop the old browser first). */
  | { type: 'browse'; lanIp: string | undefined }
  /** Ask the LAN again. */
  | { type: 'query' }
  /** Find our address towards the controller -> `route`. */
  | { type: 'findRoute'; controllerUrl: string }
  /** Ask each controller's `/healthz` -> `reachable`. */
  | { type: 'checkReachable'; urls: string[] }
  /**
   * `POST <controllerUrl>/api/enroll` on a fresh connection -> `enrollAnswered` or `enrollFailed`.
   * `pin`: the certificate fingerprint the controller must show; 'first-use': take the one it shows
   * (https:// without a known fingerprint); none: plain HTTP.
   */
  | { type: 'enroll'; controllerUrl: string; request: EnrollRequest; pin?: string }
  /** Write DATA/enrollment.json. */
  | { type: 'remember'; remembered: Remembered }
  /** Send `timer` after `ms`, replacing any earlier wait. */
  | { type: 'wait'; ms: number }
  | { type: 'log'; level: 'info' | 'warn'; msg: string; fields?: Record<string, unknown> };

export interface Transition {
  state: DiscoveryState;
  effects: Effect[];
}

// ---------------------------------------------------------------------------------------------
// Choosing a controller.

export type Choice =
  | { kind: 'chosen'; ad: ControllerAd }
  | { kind: 'none'; message: string }
  | { kind: 'ambiguous'; ads: ControllerAd[]; message: string };

const SEARCHING = 'searching the LAN for a SkyHost controller (mDNS _skyhost._tcp)';

/**
 * Which controller to enroll with. An agent that already belongs to a cluster only ever takes that
 * cluster's controller; one with no cluster takes the only cluster it hears, and does not guess
 * between two.
 */
export function chooseController(ads: ControllerAd[], myClusterId?: string, myUrl?: string): Choice {
  const byName = [...ads].sort((a, b) => compareNames(a.name, b.name));
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
  if (clusters.length === 0) return { kind: 'none', message: SEARCHING };
  if (clusters.length === 1) return { kind: 'chosen', ad: byName[0]! };
  return {
    kind: 'ambiguous',
    ads: byName,
    message: `heard ${clusters.length} SkyHost controllers of different clusters (` +
      byName.map((a) => `${a.clusterId} at ${a.url}`).join(', ') +
      `): not choosing one; start the agent with --controller URL`,
  };
}

// ---------------------------------------------------------------------------------------------
// The machine.

/** States that wait for a change rather than retry: checked every 10 ticks, the LAN asked every 30 s. */
export const SETTLED: ReadonlySet<ControllerState['state']> = new Set(['ready', 'pending', 'down', 'draining', 'ambiguous', 'refused']);
/** Asking the LAN again: every 2 s until settled, every 30 s after. */
export const QUERY_MS = { searching: 2_000, settled: 30_000 };

/**
 * The state an agent starts in. `browse` is a browser started before (while the agent was still
 * starting) with what it has heard so far.
 */
export function initialState(config: DiscoveryConfig, remembered: Remembered | undefined,
  browse?: { lanIp: string | undefined; since: number; ads: ControllerAd[] }): DiscoveryState {
  const view: ControllerState = remembered
    ? { state: 'searching', clusterId: remembered.clusterId, url: remembered.url, message: `looking for the controller of cluster ${remembered.clusterId}` }
    : { state: 'searching', message: config.controllerUrl ? `enrolling with ${config.controllerUrl}` : SEARCHING };
  return {
    config, view, remembered,
    browse: browse && !config.controllerUrl ? { lanIp: browse.lanIp, since: browse.since, lastQuery: browse.since } : undefined,
    ads: browse?.ads ?? [],
    lastEnroll: undefined, failures: 0, inFlight: undefined, recheck: false,
  };
}

/** The next state and the effects to perform, for one event. Pure: `state` is not changed. */
export function next(state: DiscoveryState, event: DiscoveryEvent): Transition {
  const s: DiscoveryState = { ...state };
  const fx: Effect[] = [];
  const now = event.now;
  switch (event.type) {
    case 'timer':
      if (s.inFlight) break; // its answer comes first, then the next check
      followLan(s, fx, now, event.lanIp);
      check(s, fx, now);
      break;
    case 'heard':
      s.ads = event.ads;
      if (s.inFlight) s.recheck = true;
      else check(s, fx, now);
      break;
    case 'route': {
      if (s.inFlight?.step !== 'route') break; // not asked (any more)
      const { ad } = s.inFlight;
      s.inFlight = undefined;
      if (event.agentUrl) decideEnroll(s, fx, now, ad, event.agentUrl);
      else {
        s.view = { state: 'unreachable', url: ad.url, ...cluster(ad.clusterId), message: `no route to ${ad.url}` };
        idle(s, fx, now);
      }
      break;
    }
    case 'reachable': {
      if (s.inFlight?.step !== 'reachable') break;
      const { ads } = s.inFlight;
      s.inFlight = undefined;
      // A controller that died without a goodbye stays advertised for hours: count only live ones.
      const live = ads.filter((a) => event.urls.includes(a.url));
      const choice = chooseController(live.length > 0 && live.length < ads.length ? live : ads);
      proceed(s, fx, now, choice);
      break;
    }
    case 'enrollFailed': {
      if (s.inFlight?.step !== 'enroll') break;
      const { ad } = s.inFlight;
      s.inFlight = undefined;
      s.failures++;
      s.lastEnroll = { url: ad.url, agentUrl: '', at: now }; // counts as a change: tried again at the next check
      s.view = { state: 'unreachable', url: ad.url, ...cluster(ad.clusterId), message: event.message };
      idle(s, fx, now);
      break;
    }
    case 'enrollAnswered':
      if (s.inFlight?.step !== 'enroll') break;
      answered(s, fx, now, s.inFlight, event.status, event.body, event.fingerprint);
      break;
  }
  return { state: s, effects: fx };
}

/** A new LAN address (a new DHCP lease, a cable moved): browse again from it. */
function followLan(s: DiscoveryState, fx: Effect[], now: number, lanIp: string | undefined): void {
  if (s.config.controllerUrl) return;
  if (s.browse && s.browse.lanIp === lanIp) return;
  if (s.browse) fx.push({ type: 'log', level: 'info', msg: 'LAN address changed: browsing again', fields: { from: s.browse.lanIp, to: lanIp } });
  fx.push({ type: 'browse', lanIp });
  s.browse = { lanIp, since: now, lastQuery: now };
  s.ads = [];
}

/** Looks at what is heard and decides: wait, ask which controllers are alive, or go on with one. */
function check(s: DiscoveryState, fx: Effect[], now: number): void {
  const { config } = s;
  if (config.controllerUrl) {
    const url = config.controllerUrl.replace(/\/$/, '');
    proceed(s, fx, now, { kind: 'chosen', ad: { name: 'configured', clusterId: s.remembered?.clusterId ?? '', url } });
    return;
  }
  if (!s.browse) {
    idle(s, fx, now); // browsing starts at the next timer, which knows the LAN address
    return;
  }
  if (now - s.browse.lastQuery > (SETTLED.has(s.view.state) ? QUERY_MS.settled : QUERY_MS.searching)) {
    fx.push({ type: 'query' });
    s.browse = { ...s.browse, lastQuery: now };
  }
  const listening = now - s.browse.since;
  if (!s.remembered && listening < config.settleMs) {
    fx.push({ type: 'wait', ms: config.settleMs - listening });
    return;
  }
  const pin = knownPin(s);
  // Holding a fingerprint: advertisements that announce another one (TXT fp, a hint) are not ours.
  const ads = pin ? s.ads.filter((a) => a.fingerprint === pin) : s.ads;
  const choice = chooseController(ads, s.remembered?.clusterId, s.remembered?.url);
  if (choice.kind === 'ambiguous') {
    s.inFlight = { step: 'reachable', ads: choice.ads };
    fx.push({ type: 'checkReachable', urls: choice.ads.map((a) => a.url) });
    return;
  }
  proceed(s, fx, now, choice);
}

function proceed(s: DiscoveryState, fx: Effect[], now: number, choice: Choice): void {
  if (choice.kind === 'ambiguous') {
    s.view = { state: 'ambiguous', message: choice.message };
    idle(s, fx, now);
    return;
  }
  if (choice.kind === 'none' && s.remembered) {
    // Not heard (yet): our cluster's last address. The answer's cluster id is checked.
    choice = { kind: 'chosen', ad: { name: 'remembered', clusterId: s.remembered.clusterId, url: s.remembered.url } };
  }
  if (choice.kind === 'none' && s.config.joinAddresses?.length) {
    // Not heard: the address the join string gave (the certificate decides whether it is the one).
    choice = { kind: 'chosen', ad: { name: 'join string', clusterId: '', url: s.config.joinAddresses[0]!.replace(/\/$/, '') } };
  }
  if (choice.kind === 'none') {
    s.view = { state: 'searching', message: choice.message };
    idle(s, fx, now);
    return;
  }
  if (s.config.agentUrl) {
    decideEnroll(s, fx, now, choice.ad, s.config.agentUrl);
    return;
  }
  s.inFlight = { step: 'route', ad: choice.ad };
  fx.push({ type: 'findRoute', controllerUrl: choice.ad.url });
}

/** Enrolls when the controller or our URL changed, or now and then while not yet a member. */
function decideEnroll(s: DiscoveryState, fx: Effect[], now: number, ad: ControllerAd, agentUrl: string): void {
  const last = s.lastEnroll;
  const changed = !last || last.url !== ad.url || last.agentUrl !== agentUrl;
  const member = s.view.state === 'ready' || s.view.state === 'down' || s.view.state === 'draining';
  // Pending: ask again now and then to learn of the approval; refused: maybe the admin acts.
  const again = s.config.tickMs * (s.view.state === 'refused' ? 60 : s.view.state === 'pending' ? 20 : 4);
  if (!changed && (member || now - last!.at < again)) {
    idle(s, fx, now);
    return;
  }
  enroll(s, fx, now, ad, agentUrl, true);
}

/** The controller's fingerprint this agent holds: given (join string, flag), else recorded at enrollment. */
export function knownPin(s: DiscoveryState): string | undefined {
  return s.config.controllerFingerprint ?? s.remembered?.fingerprint;
}

function enroll(s: DiscoveryState, fx: Effect[], now: number, ad: ControllerAd, agentUrl: string, withToken: boolean): void {
  const { config } = s;
  const pin = knownPin(s);
  s.lastEnroll = { url: ad.url, agentUrl, at: now };
  if (pin && !ad.url.startsWith('https:')) {
    // Plain HTTP cannot prove who answers: the token and our key go nowhere unproven.
    s.failures++;
    s.view = { state: 'refused', url: ad.url, ...cluster(ad.clusterId),
      message: `${ad.url} is plain HTTP, but this agent trusts only the controller with certificate sha256 ${pin}: give its https:// address` };
    idle(s, fx, now);
    return;
  }
  if (s.view.state === 'searching' || s.view.state === 'ambiguous') s.view = { state: 'enrolling', url: ad.url, ...cluster(ad.clusterId) };
  const request: EnrollRequest = {
    hostId: config.hostId, hostname: config.hostname, agentUrl, agentKey: config.agentKey, version: config.version,
    ...(config.joinToken && withToken ? { joinToken: config.joinToken } : {}),
    ...(config.certFingerprint && agentUrl.startsWith('https:') ? { certFingerprint: config.certFingerprint } : {}),
  };
  const how = pin ?? (ad.url.startsWith('https:') ? 'first-use' : undefined);
  s.inFlight = { step: 'enroll', ad, agentUrl, withToken, pin: how };
  fx.push({ type: 'enroll', controllerUrl: ad.url, request, ...(how ? { pin: how } : {}) });
}

function answered(s: DiscoveryState, fx: Effect[], now: number, sent: Extract<InFlight, { step: 'enroll' }>, status: number, body: unknown,
  fingerprint: string | undefined): void {
  const { ad, agentUrl } = sent;
  s.inFlight = undefined;
  const reason = errorOf(body)?.message;
  if (status === 403 && sent.withToken && s.config.joinToken && s.remembered?.clusterId === ad.clusterId) {
    // Already a member (our key proves it): a token rotated or used up since must not lock us out.
    fx.push({ type: 'log', level: 'info', msg: 'join token refused; enrolling again as a known host, without it', fields: { reason } });
    enroll(s, fx, now, ad, agentUrl, false);
    return;
  }
  if (status < 200 || status > 299) {
    s.failures++;
    s.view = { state: 'refused', url: ad.url, ...cluster(ad.clusterId), message: `controller refused enrollment (${status}): ${reason ?? 'no reason given'}` };
    idle(s, fx, now);
    return;
  }
  const parsed = EnrollResponse.safeParse(body);
  if (!parsed.success) {
    s.failures++;
    s.view = { state: 'refused', url: ad.url, message: 'the controller answered enrollment with something that is not an EnrollResponse' };
    idle(s, fx, now);
    return;
  }
  const r = parsed.data;
  const expected = s.remembered?.clusterId ?? (ad.clusterId || undefined);
  if (expected && r.clusterId !== expected) {
    // Someone else answered at that address: never switch clusters.
    s.failures++;
    s.view = {
      state: 'refused', url: ad.url, clusterId: expected,
      message: `${ad.url} answered for cluster ${r.clusterId}, but this host belongs to cluster ${expected}` +
        (s.remembered ? ` (remove ${s.config.enrollmentFile} to let it join another cluster)` : ''),
    };
    idle(s, fx, now);
    return;
  }
  s.failures = 0;
  const pinned = fingerprint ?? s.remembered?.fingerprint;
  if (sent.pin === 'first-use' && fingerprint && !s.remembered?.fingerprint) {
    fx.push({ type: 'log', level: 'warn', msg: `trusting the controller at ${ad.url} on first use: certificate sha256 ${fingerprint} ` +
      '(from now on this agent talks to no other; a join string would have proven it)', fields: { fingerprint } });
  }
  if (!s.remembered || s.remembered.url !== ad.url || s.remembered.agentUrl !== agentUrl || s.remembered.fingerprint !== pinned) {
    s.remembered = { clusterId: r.clusterId, url: ad.url, agentUrl, enrolledAt: new Date(now).toISOString(), ...(pinned ? { fingerprint: pinned } : {}) };
    fx.push({ type: 'remember', remembered: s.remembered });
  }
  s.view = { state: r.state, url: ad.url, clusterId: r.clusterId, message: r.message ?? `enrolled as ${s.config.hostId} (${agentUrl})` };
  idle(s, fx, now);
}

/** Nothing under way: check again at once if something changed meanwhile, else after a pause. */
function idle(s: DiscoveryState, fx: Effect[], now: number): void {
  s.inFlight = undefined;
  if (s.recheck) {
    s.recheck = false;
    check(s, fx, now);
    return;
  }
  const { tickMs } = s.config;
  fx.push({ type: 'wait', ms: SETTLED.has(s.view.state) ? tickMs * 10 : tickMs * (s.failures > 3 ? 4 : 1) });
}

function cluster(clusterId: string): { clusterId?: string } {
  return clusterId ? { clusterId } : {};
}
