// Zero-config enrollment, the agent's side: with no controller configured, browse `_skyhost._tcp`,
// choose the controller of our cluster (or the only one), and `POST /api/enroll`; then keep watching
// for a new address of ours or of the controller and enroll again when one changes.
//
//   machine.ts     the decisions: next(state, event) -> { state, effects }, pure, table-tested
//   index.ts       this driver: performs the effects (mDNS, HTTP, the file, timers) and feeds the
//                  answers back as events; logs every change of what /status shows
//   browse.ts      the mDNS browser;  remembered.ts  DATA/enrollment.json and the join token file
//
// The mDNS contract itself (service type, TXT) is wire/mdns.ts; the LAN address is base/net.ts.
import { HttpClient } from '../../base/http-client.ts';
import type { Logger } from '../../base/log.ts';
import { lanAddress, localAddressTowards } from '../../base/net.ts';
import { peerFingerprint } from '../../base/tls.ts';
import { browseControllers, type ControllerBrowser } from './browse.ts';
import { macTowards } from './mac.ts';
import { initialState, knownPin, next, type ControllerState, type DiscoveryConfig, type DiscoveryEvent, type DiscoveryState, type Effect } from './machine.ts';
import { enrollmentFile, loadRemembered, saveRemembered } from './remembered.ts';

export { browseControllers, type ControllerBrowser } from './browse.ts';
export { chooseController, type Choice, type ControllerState } from './machine.ts';
export { enrollmentFile, JOIN_TOKEN_FILE, loadRemembered, readJoinToken, type Remembered } from './remembered.ts';

/** Who this agent is and how to reach it (machine.ts DiscoveryConfig), and where it keeps its state. */
export interface DiscoveryOptions extends Omit<DiscoveryConfig, 'tickMs' | 'settleMs' | 'enrollmentFile'> {
  dataDir: string;
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
  /** The controller's certificate fingerprint this agent trusts (given, or recorded at first contact). */
  controllerFingerprint(): string | undefined;
  /** Resolves at the first `ready` or `pending` (or rejects after `ms`). */
  enrolled(ms?: number): Promise<ControllerState>;
  stop(): Promise<void>;
}

/** Deadline of an enrollment, and of a controller's `/healthz` when two clusters are heard. */
const ENROLL_TIMEOUT_MS = 5000;
// 3 s as the controller gives a poll: 1 s was a quiet machine's figure, and a busy controller left out
// of the count made an agent that hears two clusters pick the other instead of saying it cannot choose.
const HEALTH_TIMEOUT_MS = 3000;

/** Enrolls this agent with its controller and keeps its record current. */
export function startDiscovery(opts: DiscoveryOptions): Discovery {
  const log = opts.log;
  const file = enrollmentFile(opts.dataDir);
  let browser = opts.controllerUrl ? undefined : opts.browser;
  if (opts.controllerUrl && opts.browser) void opts.browser.stop(); // a controller is configured: nothing to browse for
  let state: DiscoveryState = initialState({
    hostId: opts.hostId, hostname: opts.hostname, agentKey: opts.agentKey, version: opts.version, agentPort: opts.agentPort,
    controllerUrl: opts.controllerUrl, agentUrl: opts.agentUrl, joinToken: opts.joinToken,
    certFingerprint: opts.certFingerprint, controllerFingerprint: opts.controllerFingerprint, joinAddresses: opts.joinAddresses,
    tickMs: opts.tickMs ?? 500, settleMs: opts.settleMs ?? 500, enrollmentFile: file,
  }, loadRemembered(opts.dataDir, log), browser ? { lanIp: browser.lanIp, since: browser.since, ads: browser.ads() } : undefined);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let restarting: Promise<void> | undefined;
  const underWay = new Set<Promise<void>>();
  const waiters = new Set<() => void>();

  const dispatch = (event: DiscoveryEvent): void => {
    if (stopped) return;
    const before = state.view;
    const t = next(state, event);
    state = t.state;
    if (state.view !== before) report(before, state.view);
    for (const effect of t.effects) perform(effect);
  };

  const report = (before: ControllerState, view: ControllerState): void => {
    if (view.state === before.state && view.message === before.message && view.url === before.url) return;
    const line = `controller: ${view.state}${view.url ? ' ' + view.url : ''}${view.message ? ' — ' + view.message : ''}`;
    if (view.state === 'ambiguous' || view.state === 'refused' || view.state === 'unreachable') log.warn(line, { clusterId: view.clusterId });
    else log.info(line, { clusterId: view.clusterId });
    opts.onState?.(view);
    for (const w of waiters) w();
  };

  /** Runs an effect's request; its answer (or failure) comes back through `dispatch`. */
  const track = (work: Promise<void>): void => {
    const p = work.catch((err: Error) => log.error('discovery step failed', { err })).finally(() => underWay.delete(p));
    underWay.add(p);
  };

  const onTimer = (): void => {
    dispatch({ type: 'timer', now: Date.now(), lanIp: opts.controllerUrl ? undefined : lanAddress(opts.lanInterface)?.ip });
  };

  const listen = (b: ControllerBrowser): void => {
    b.onChange = () => {
      if (browser === b) dispatch({ type: 'heard', now: Date.now(), ads: b.ads() });
    };
  };
  if (browser) listen(browser);

  const perform = (effect: Effect): void => {
    switch (effect.type) {
      case 'browse': {
        const old = browser;
        browser = undefined;
        if (old) old.onChange = undefined;
        restarting = (async () => {
          await old?.stop();
          if (stopped) return;
          const b = browseControllers({ lanIp: effect.lanIp, log });
          browser = b;
          listen(b);
        })().catch((err: Error) => log.error('cannot browse the LAN for the controller', { err, lanIp: effect.lanIp }));
        break;
      }
      case 'query':
        browser?.query(); // none while the browser restarts: the new one asks as it starts
        break;
      case 'findRoute':
        track(localAddressTowards(effect.controllerUrl).then((local) => {
          const scheme = opts.certFingerprint ? 'https' : 'http';
          const agentUrl = local ? `${scheme}://${local.includes(':') ? `[${local}]` : local}:${opts.agentPort}` : undefined;
          dispatch({ type: 'route', now: Date.now(), agentUrl });
        }));
        break;
      case 'checkReachable':
        track(Promise.all(effect.urls.map(answersHealth)).then((ok) => {
          dispatch({ type: 'reachable', now: Date.now(), urls: effect.urls.filter((_, i) => ok[i]) });
        }));
        break;
      case 'enroll': {
        const sent = (async () => {
          // Trust on first use: the certificate shown now is the one the enrollment is pinned to (and remembered).
          const pin = effect.pin === 'first-use' ? await firstUse(effect.controllerUrl) : effect.pin;
          // The MAC of the interface towards the controller, so that it can wake this PC (Wake-on-LAN).
          const mac = await macTowards(effect.controllerUrl).catch((err: Error) => void log.warn('cannot read our MAC address: enrolling without it', { err }));
          const body = mac ? { ...effect.request, mac } : effect.request;
          const answer = await controller(effect.controllerUrl, pin).request('POST', '/api/enroll', { body, timeoutMs: ENROLL_TIMEOUT_MS });
          return { answer, pin };
        })();
        track(sent.then(
          ({ answer, pin }) => dispatch({ type: 'enrollAnswered', now: Date.now(), status: answer.status, body: answer.body, fingerprint: pin }),
          (err: Error) => dispatch({ type: 'enrollFailed', now: Date.now(), message: err.message }),
        ));
        break;
      }
      case 'remember':
        try {
          saveRemembered(opts.dataDir, effect.remembered);
        } catch (err) {
          // The enrollment holds; only a restart would not know the cluster (it would enroll as new).
          log.error(`cannot write ${file}: the cluster is not remembered across restarts`, { err });
        }
        break;
      case 'wait':
        clearTimeout(timer);
        timer = setTimeout(onTimer, effect.ms);
        break;
      case 'log':
        log[effect.level](effect.msg, effect.fields);
        break;
    }
  };

  onTimer();
  return {
    state: () => ({ ...state.view }),
    controllerFingerprint: () => knownPin(state),
    enrolled(ms = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const view = state.view;
          if (view.state === 'ready' || view.state === 'pending') {
            waiters.delete(check);
            clearTimeout(t);
            resolve({ ...view });
          }
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`not enrolled after ${ms} ms: ${state.view.state}${state.view.message ? ' — ' + state.view.message : ''}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await Promise.all(underWay);
      await restarting;
      await browser?.stop();
    },
  };
}

/**
 * The controller at `url`, on a fresh connection per call (a pooled one would outlive a change of
 * our address), pinned to its certificate's fingerprint when there is one.
 */
function controller(url: string, pin?: string): HttpClient {
  return new HttpClient({ baseUrl: url, connection: 'fresh', peer: `controller ${url}`, codePrefix: 'controller', maxAnswerBytes: 64 << 10, pin });
}

/** The fingerprint of the certificate the https:// server at `url` shows now. */
function firstUse(url: string, timeoutMs = ENROLL_TIMEOUT_MS): Promise<string> {
  const u = new URL(url);
  return peerFingerprint(u.hostname.replace(/^\[|\]$/g, ''), Number(u.port || 443), timeoutMs);
}

/** Whether the controller at `url` answers `/healthz` within HEALTH_TIMEOUT_MS (nothing secret is sent: any certificate will do). */
async function answersHealth(url: string): Promise<boolean> {
  try {
    const pin = url.startsWith('https:') ? await firstUse(url, HEALTH_TIMEOUT_MS) : undefined;
    return (await controller(url, pin).request('GET', '/healthz', { timeoutMs: HEALTH_TIMEOUT_MS })).status === 200;
  } catch {
    return false; // no answer is the answer: a controller gone without a goodbye
  }
}
