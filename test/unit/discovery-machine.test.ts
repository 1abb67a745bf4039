// The discovery state machine on its own (agent/discovery/machine.ts): every decision as a row of
// state + event -> next state + effects, with the clock in the events. No network, no timers.
import { expect } from 'chai';
import {
  initialState, next, type DiscoveryConfig, type DiscoveryEvent, type DiscoveryState, type Effect,
} from '../../agent/discovery/machine.ts';
import type { ControllerAd } from '../../wire/mdns.ts';

const T0 = 1_000_000;
const TICK = 500;
const config = (o: Partial<DiscoveryConfig> = {}): DiscoveryConfig => ({
  hostId: 'pc-12', hostname: 'pc-12', agentKey: 'k'.repeat(32), version: 'test', agentPort: 8081,
  joinToken: 'shj_token-0001', tickMs: TICK, settleMs: 500, enrollmentFile: '/var/lib/skyhost/enrollment.json', ...o,
});
const ad = (clusterId: string, url = 'http://10.0.0.5:8080'): ControllerAd => ({ name: `SkyHost controller ${clusterId}`, clusterId, url });
const C1 = ad('c1');
const C2 = ad('c2', 'http://10.0.0.6:8080');
const ME = 'http://10.0.0.12:8081';
const remembered = { clusterId: 'c1', url: C1.url, agentUrl: ME, enrolledAt: '2026-01-01T00:00:00.000Z' };

/** A state: browsing from 10.0.0.12 since T0 (settled), and `o` on top. */
const state = (o: Partial<DiscoveryState> = {}, cfg = config()): DiscoveryState => ({
  ...initialState(cfg, undefined),
  browse: { lanIp: '10.0.0.12', since: T0, lastQuery: T0 },
  ...o,
});
const enrolled = (view: DiscoveryState['view']['state'], o: Partial<DiscoveryState> = {}) => state({
  remembered, ads: [C1], view: { state: view, url: C1.url, clusterId: 'c1' },
  lastEnroll: { url: C1.url, agentUrl: ME, at: T0 + 1000 }, ...o,
});
const enrolling = (o: Partial<DiscoveryState> = {}, withToken = true) => state({
  ads: [C1], view: { state: 'enrolling', url: C1.url, clusterId: 'c1' }, lastEnroll: { url: C1.url, agentUrl: ME, at: T0 + 1000 },
  inFlight: { step: 'enroll', ad: C1, agentUrl: ME, withToken }, ...o,
});
const at = (ms: number) => T0 + ms;
const kinds = (effects: Effect[]) => effects.map((e) => e.type);

interface Row {
  given: string;
  state: DiscoveryState;
  event: DiscoveryEvent;
  /** Effect types, in order. */
  effects: Effect['type'][];
  view?: Partial<DiscoveryState['view']>;
  check?: (s: DiscoveryState, effects: Effect[]) => void;
}

const rows: Row[] = [
  // ---- searching
  {
    given: 'a fresh agent, at its first timer: browses from its LAN address and listens before choosing',
    state: { ...initialState(config(), undefined) }, event: { type: 'timer', now: T0, lanIp: '10.0.0.12' },
    effects: ['browse', 'wait'], view: { state: 'searching' },
    check: (s, fx) => {
      expect(fx[0]).to.deep.equal({ type: 'browse', lanIp: '10.0.0.12' });
      expect(fx[1]).to.deep.equal({ type: 'wait', ms: 500 });
      expect(s.browse).to.deep.equal({ lanIp: '10.0.0.12', since: T0, lastQuery: T0 });
    },
  },
  {
    given: 'an answer within the listening time: waits for the rest of it (a second cluster may answer)',
    state: state(), event: { type: 'heard', now: at(200), ads: [C1] },
    effects: ['wait'], check: (s, fx) => {
      expect(fx[0]).to.deep.equal({ type: 'wait', ms: 300 });
      expect(s.ads).to.deep.equal([C1]);
    },
  },
  {
    given: 'one cluster heard after listening: finds its own address towards that controller',
    state: state({ ads: [C1] }), event: { type: 'timer', now: at(600), lanIp: '10.0.0.12' },
    effects: ['findRoute'], check: (s, fx) => {
      expect(fx[0]).to.deep.equal({ type: 'findRoute', controllerUrl: C1.url });
      expect(s.inFlight).to.deep.equal({ step: 'route', ad: C1 });
    },
  },
  {
    given: 'nothing heard after listening: keeps searching and asks the LAN again every 2 s',
    state: state(), event: { type: 'timer', now: at(2500), lanIp: '10.0.0.12' },
    effects: ['query', 'wait'], view: { state: 'searching', message: 'searching the LAN for a SkyHost controller (mDNS _skyhost._tcp)' },
    check: (s, fx) => {
      expect(fx[1]).to.deep.equal({ type: 'wait', ms: TICK });
      expect(s.browse!.lastQuery).to.equal(at(2500));
    },
  },
  {
    given: 'our route found: enrolls with id, URL, key and join token',
    state: state({ ads: [C1], inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(700), agentUrl: ME },
    effects: ['enroll'], view: { state: 'enrolling', url: C1.url, clusterId: 'c1' },
    check: (s, fx) => {
      expect(fx[0]).to.deep.equal({
        type: 'enroll', controllerUrl: C1.url,
        request: { hostId: 'pc-12', hostname: 'pc-12', agentUrl: ME, agentKey: 'k'.repeat(32), version: 'test', joinToken: 'shj_token-0001' },
      });
      expect(s.lastEnroll).to.deep.equal({ url: C1.url, agentUrl: ME, at: at(700) });
    },
  },
  {
    given: 'no route to the controller: unreachable, tried again at the next tick',
    state: state({ ads: [C1], inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(700), agentUrl: undefined },
    effects: ['wait'], view: { state: 'unreachable', url: C1.url, message: `no route to ${C1.url}` },
  },
  // ---- two clusters
  {
    given: 'two clusters heard and no cluster of its own: asks which controllers are alive',
    state: state({ ads: [C1, C2] }), event: { type: 'timer', now: at(600), lanIp: '10.0.0.12' },
    effects: ['checkReachable'], check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'checkReachable', urls: [C1.url, C2.url] }),
  },
  {
    given: 'both alive: does not guess, says so and waits',
    state: state({ ads: [C1, C2], inFlight: { step: 'reachable', ads: [C1, C2] } }), event: { type: 'reachable', now: at(700), urls: [C1.url, C2.url] },
    effects: ['wait'], view: { state: 'ambiguous' },
    check: (s, fx) => {
      expect(s.view.message).to.match(/heard 2 SkyHost controllers.*c1 at .*c2 at .*--controller URL/);
      expect(fx[0]).to.deep.equal({ type: 'wait', ms: TICK * 10 });
    },
  },
  {
    given: 'only one of them alive (the other died without a goodbye): goes on with the live one',
    state: state({ ads: [C1, C2], inFlight: { step: 'reachable', ads: [C1, C2] } }), event: { type: 'reachable', now: at(700), urls: [C2.url] },
    effects: ['findRoute'], check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'findRoute', controllerUrl: C2.url }),
  },
  {
    given: 'a cluster of its own and only another cluster heard: goes to its remembered address, never the other',
    state: state({ remembered, ads: [C2] }), event: { type: 'timer', now: at(100), lanIp: '10.0.0.12' },
    effects: ['findRoute'], check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'findRoute', controllerUrl: remembered.url }),
  },
  // ---- answers
  {
    given: 'a ready answer: remembers the cluster, shows ready, checks 10x slower',
    state: enrolling(), event: { type: 'enrollAnswered', now: at(800), status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c1' } },
    effects: ['remember', 'wait'], view: { state: 'ready', url: C1.url, clusterId: 'c1', message: `enrolled as pc-12 (${ME})` },
    check: (s, fx) => {
      expect(fx[0]).to.deep.equal({ type: 'remember', remembered: { clusterId: 'c1', url: C1.url, agentUrl: ME, enrolledAt: new Date(at(800)).toISOString() } });
      expect(fx[1]).to.deep.equal({ type: 'wait', ms: TICK * 10 });
      expect(s.failures).to.equal(0);
    },
  },
  {
    given: 'a pending answer with the controller\'s message',
    state: enrolling(), event: { type: 'enrollAnswered', now: at(800), status: 200, body: { hostId: 'pc-12', state: 'pending', clusterId: 'c1', message: 'waiting for an admin' } },
    effects: ['remember', 'wait'], view: { state: 'pending', message: 'waiting for an admin' },
  },
  {
    given: 'a refusal: shows the controller\'s reason',
    state: enrolling(), event: { type: 'enrollAnswered', now: at(800), status: 403, body: { error: { code: 'join_token_expired', message: 'join token 0a1b expired' } } },
    effects: ['wait'], view: { state: 'refused', message: 'controller refused enrollment (403): join token 0a1b expired' },
    check: (s) => expect(s.failures).to.equal(1),
  },
  {
    given: 'the enrolled host of another key refused (409): shows why, changes nothing it remembers',
    state: enrolling({ remembered }), event: { type: 'enrollAnswered', now: at(800), status: 409, body: { error: { code: 'host_already_enrolled', message: 'host pc-12 is already enrolled with another agent key' } } },
    effects: ['wait'], view: { state: 'refused', message: 'controller refused enrollment (409): host pc-12 is already enrolled with another agent key' },
  },
  {
    given: 'a member whose token was refused (rotated since): enrolls again at once by its key, without the token',
    state: enrolling({ remembered }), event: { type: 'enrollAnswered', now: at(800), status: 403, body: { error: { code: 'join_token_rotated', message: 'replaced' } } },
    effects: ['log', 'enroll'], check: (s, fx) => {
      const e = fx[1] as Extract<Effect, { type: 'enroll' }>;
      expect(e.request).not.to.have.property('joinToken');
      expect(s.inFlight).to.deep.include({ step: 'enroll', withToken: false });
    },
  },
  {
    given: 'an answer from another cluster at our controller\'s address: refuses it and says how to reset',
    state: enrolling({ remembered }), event: { type: 'enrollAnswered', now: at(800), status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c-evil' } },
    effects: ['wait'], view: { state: 'refused', clusterId: 'c1' },
    check: (s) => {
      expect(s.view.message).to.equal(`${C1.url} answered for cluster c-evil, but this host belongs to cluster c1 (remove /var/lib/skyhost/enrollment.json to let it join another cluster)`);
      expect(s.remembered).to.equal(remembered);
    },
  },
  {
    given: 'an answer that is not an EnrollResponse',
    state: enrolling(), event: { type: 'enrollAnswered', now: at(800), status: 200, body: { hello: 1 } },
    effects: ['wait'], view: { state: 'refused', message: 'the controller answered enrollment with something that is not an EnrollResponse' },
  },
  {
    given: 'no answer: unreachable with what happened, and the next check enrolls again',
    state: enrolling(), event: { type: 'enrollFailed', now: at(800), message: 'controller http://10.0.0.5:8080 is unreachable: connect ECONNREFUSED' },
    effects: ['wait'], view: { state: 'unreachable', message: 'controller http://10.0.0.5:8080 is unreachable: connect ECONNREFUSED' },
    check: (s, fx) => {
      expect(s.lastEnroll).to.deep.equal({ url: C1.url, agentUrl: '', at: at(800) });
      expect(fx[0]).to.deep.equal({ type: 'wait', ms: TICK });
    },
  },
  {
    given: 'the fourth failure in a row: checks 4x slower',
    state: enrolling({ failures: 3 }), event: { type: 'enrollFailed', now: at(800), message: 'no answer within 5000 ms' },
    effects: ['wait'], check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'wait', ms: TICK * 4 }),
  },
  // ---- once enrolled
  {
    given: 'ready, and our address towards the controller is the same: nothing to send',
    state: enrolled('ready', { inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(60_000), agentUrl: ME },
    effects: ['wait'], view: { state: 'ready' },
  },
  {
    given: 'ready, and our address changed (a new DHCP lease): enrolls again with the new URL',
    state: enrolled('ready', { inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(60_000), agentUrl: 'http://10.0.0.77:8081' },
    effects: ['enroll'], view: { state: 'ready' },
    check: (_s, fx) => expect((fx[0] as Extract<Effect, { type: 'enroll' }>).request.agentUrl).to.equal('http://10.0.0.77:8081'),
  },
  {
    given: 'ready, and the controller is advertised at a new URL (same cluster): enrolls there',
    state: enrolled('ready', { browse: { lanIp: '10.0.0.12', since: T0, lastQuery: at(50_000) } }), event: { type: 'heard', now: at(60_000), ads: [ad('c1', 'http://10.0.0.99:8080')] },
    effects: ['findRoute'], check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'findRoute', controllerUrl: 'http://10.0.0.99:8080' }),
  },
  {
    given: 'pending, asked 5 s ago: waits (asks again every 20 ticks to learn of the approval)',
    state: enrolled('pending', { inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(1000 + 5000), agentUrl: ME },
    effects: ['wait'],
  },
  {
    given: 'pending, asked 10 s ago: asks again',
    state: enrolled('pending', { inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(1000 + 20 * TICK), agentUrl: ME },
    effects: ['enroll'],
  },
  {
    given: 'refused 20 s ago: waits (60 ticks)',
    state: enrolled('refused', { inFlight: { step: 'route', ad: C1 } }), event: { type: 'route', now: at(1000 + 20_000), agentUrl: ME },
    effects: ['wait'],
  },
  {
    given: 'ready: asks the LAN only every 30 s',
    state: enrolled('ready'), event: { type: 'timer', now: at(10_000), lanIp: '10.0.0.12' },
    effects: ['findRoute'],
  },
  {
    given: 'ready, 31 s after the last query: asks the LAN again',
    state: enrolled('ready'), event: { type: 'timer', now: at(31_000), lanIp: '10.0.0.12' },
    effects: ['query', 'findRoute'],
  },
  {
    given: 'a new LAN address: browses again from it, forgetting what the old browser heard',
    state: enrolled('ready'), event: { type: 'timer', now: at(40_000), lanIp: '10.0.0.77' },
    effects: ['log', 'browse', 'findRoute'],
    check: (s, fx) => {
      expect(fx[1]).to.deep.equal({ type: 'browse', lanIp: '10.0.0.77' });
      expect(s.browse).to.deep.equal({ lanIp: '10.0.0.77', since: at(40_000), lastQuery: at(40_000) });
      expect(s.ads).to.deep.equal([]);
      expect(fx[2]).to.deep.equal({ type: 'findRoute', controllerUrl: remembered.url }, 'its remembered controller, until heard again');
    },
  },
  // ---- one request at a time
  {
    given: 'an advertisement while an enrollment is under way: checked again once it is answered',
    state: enrolling(), event: { type: 'heard', now: at(750), ads: [C1, C2] },
    effects: [], check: (s) => expect(s.recheck).to.equal(true),
  },
  {
    given: 'the answer after such a change: checks at once instead of waiting',
    state: enrolling({ recheck: true }), event: { type: 'enrollAnswered', now: at(800), status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c1' } },
    effects: ['remember', 'findRoute'], check: (s) => expect(s.recheck).to.equal(false),
  },
  {
    given: 'a timer while a request is under way: nothing (its answer comes first)',
    state: enrolling(), event: { type: 'timer', now: at(900), lanIp: '10.0.0.12' }, effects: [],
  },
  {
    given: 'an answer nobody waits for any more: ignored',
    state: enrolled('ready'), event: { type: 'route', now: at(900), agentUrl: 'http://10.0.0.77:8081' }, effects: [],
  },
  // ---- a configured controller
  {
    given: '--controller URL: no browsing, straight to our route towards it',
    state: initialState(config({ controllerUrl: 'http://10.0.0.5:8080/' }), undefined), event: { type: 'timer', now: T0, lanIp: undefined },
    effects: ['findRoute'], view: { state: 'searching', message: 'enrolling with http://10.0.0.5:8080/' },
    check: (_s, fx) => expect(fx[0]).to.deep.equal({ type: 'findRoute', controllerUrl: 'http://10.0.0.5:8080' }),
  },
  {
    given: '--controller URL and a fixed agentUrl: enrolls at once',
    state: initialState(config({ controllerUrl: 'http://10.0.0.5:8080', agentUrl: 'http://pc-12.lan:8081' }), undefined), event: { type: 'timer', now: T0, lanIp: undefined },
    effects: ['enroll'], check: (_s, fx) => expect((fx[0] as Extract<Effect, { type: 'enroll' }>).request.agentUrl).to.equal('http://pc-12.lan:8081'),
  },
];

describe('discovery: the state machine', () => {
  for (const row of rows) {
    it(`given ${row.given}`, () => {
      const before = structuredClone(row.state);
      const { state: after, effects } = next(deepFreeze(row.state), row.event);
      expect(kinds(effects)).to.deep.equal(row.effects);
      if (row.view) expect(after.view).to.deep.include(row.view);
      row.check?.(after, effects);
      expect(row.state).to.deep.equal(before, 'next() must not change the state it was given');
    });
  }

  it('should go from nothing to ready in the order a real agent does', () => {
    let s = initialState(config(), undefined);
    const seen: Effect['type'][] = [];
    const step = (e: DiscoveryEvent) => {
      const t = next(s, e);
      s = t.state;
      seen.push(...kinds(t.effects));
    };
    step({ type: 'timer', now: T0, lanIp: '10.0.0.12' });
    step({ type: 'heard', now: at(80), ads: [C1] });
    step({ type: 'timer', now: at(500), lanIp: '10.0.0.12' });
    step({ type: 'route', now: at(501), agentUrl: ME });
    expect(s.view.state).to.equal('enrolling');
    step({ type: 'enrollAnswered', now: at(550), status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c1' } });
    expect(seen).to.deep.equal(['browse', 'wait', 'wait', 'findRoute', 'enroll', 'remember', 'wait']);
    expect(s.view).to.deep.include({ state: 'ready', clusterId: 'c1' });
    expect(s.remembered).to.deep.include({ clusterId: 'c1', url: C1.url, agentUrl: ME });
  });
});

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
