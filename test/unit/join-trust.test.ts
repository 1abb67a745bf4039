// The join string (wire/join.ts) and the agent's trust decisions in the discovery machine
// (agent/discovery/machine.ts): which certificate an enrollment is pinned to, and what is refused.
import { expect } from 'chai';
import { initialState, next, type DiscoveryConfig, type DiscoveryState, type Effect } from '../../agent/discovery/machine.ts';
import { encodeJoinString, parseJoin } from '../../wire/join.ts';
import { parseAd, type ControllerAd } from '../../wire/mdns.ts';

const FP = 'a'.repeat(64);
const ROGUE_FP = 'b'.repeat(64);
const T0 = 1_000_000;
const config = (o: Partial<DiscoveryConfig> = {}): DiscoveryConfig => ({
  hostId: 'pc-12', hostname: 'pc-12', agentKey: 'k'.repeat(32), version: 'test', agentPort: 8081, agentUrl: 'https://10.0.0.12:8081',
  joinToken: 'shj_token-0001', certFingerprint: 'c'.repeat(64), tickMs: 500, settleMs: 500, enrollmentFile: '/x/enrollment.json', ...o,
});
const ad = (url: string, clusterId = 'c1', fingerprint?: string): ControllerAd => ({ name: `SkyHost controller ${clusterId} ${url}`, clusterId, url, ...(fingerprint ? { fingerprint } : {}) });
const browsing = (cfg: DiscoveryConfig, ads: ControllerAd[]): DiscoveryState => ({
  ...initialState(cfg, undefined), browse: { lanIp: '10.0.0.12', since: T0, lastQuery: T0 }, ads,
});
const enrollOf = (effects: Effect[]) => effects.find((e): e is Extract<Effect, { type: 'enroll' }> => e.type === 'enroll');

describe('join strings', () => {
  it('should carry addresses, fingerprint and token, and give back a bare token as it is', () => {
    const s = encodeJoinString({ addresses: ['https://10.0.0.5:8443/'], fingerprint: FP, token: 'shs_0123456789ab_secret' });
    expect(s).to.match(/^shk1\.[A-Za-z0-9_-]+$/);
    expect(parseJoin(s)).to.deep.equal({ addresses: ['https://10.0.0.5:8443'], fingerprint: FP, token: 'shs_0123456789ab_secret' });
    expect(parseJoin(' shj_plain-token \n')).to.deep.equal({ token: 'shj_plain-token' });
  });

  it('should refuse a damaged join string, or one with a plain http:// address, saying what is wrong', () => {
    expect(() => parseJoin('shk1.!!!')).to.throw(/damaged/);
    const http = 'shk1.' + Buffer.from(JSON.stringify({ addresses: ['http://10.0.0.5:8080'], fingerprint: FP, token: 'shj_token-0001' })).toString('base64url');
    expect(() => parseJoin(http)).to.throw(/addresses\.0 must be an https:\/\/ URL/);
  });
});

describe('the mDNS record\'s TXT fp', () => {
  it('should be read as a hint beside the https:// url, and dropped when it is not a sha256', () => {
    const service = (fp: string) => ({ name: 'SkyHost controller c1', port: 8443, txt: { v: '1', cluster: 'c1', url: 'https://10.0.0.5:8443', fp }, referer: { address: '10.0.0.5' } });
    expect(parseAd(service(FP.toUpperCase()) as never)).to.deep.equal({ name: 'SkyHost controller c1', clusterId: 'c1', url: 'https://10.0.0.5:8443', fingerprint: FP });
    expect(parseAd(service('not-a-fingerprint') as never)).not.to.have.property('fingerprint');
  });
});

describe('discovery: trusting the controller', () => {
  it('given a fingerprint, should pin the enrollment to it and ignore advertisements that announce another', () => {
    const cfg = config({ controllerFingerprint: FP });
    const t = next(browsing(cfg, [ad('https://10.0.0.66:8443', 'rogue', ROGUE_FP), ad('https://10.0.0.5:8443', 'c1', FP)]), { type: 'timer', now: T0 + 1000, lanIp: '10.0.0.12' });
    expect(enrollOf(t.effects)).to.deep.include({ controllerUrl: 'https://10.0.0.5:8443', pin: FP });
    expect(enrollOf(t.effects)!.request.certFingerprint).to.equal('c'.repeat(64));
  });

  it('given a fingerprint and nothing heard, should enroll at the join string\'s address, pinned', () => {
    const cfg = config({ controllerFingerprint: FP, joinAddresses: ['https://10.0.0.5:8443'] });
    const t = next(browsing(cfg, [ad('https://10.0.0.66:8443', 'rogue', ROGUE_FP)]), { type: 'timer', now: T0 + 1000, lanIp: '10.0.0.12' });
    expect(enrollOf(t.effects)).to.deep.include({ controllerUrl: 'https://10.0.0.5:8443', pin: FP });
  });

  it('given a fingerprint, should refuse a plain http:// controller without sending it anything', () => {
    const t = next(browsing(config({ controllerFingerprint: FP, controllerUrl: 'http://10.0.0.5:8080' }), []), { type: 'timer', now: T0 + 1000, lanIp: undefined });
    expect(enrollOf(t.effects)).to.equal(undefined);
    expect(t.state.view.state).to.equal('refused');
    expect(t.state.view.message).to.match(/plain HTTP.*aaaa/);
  });

  it('without a fingerprint, should trust the first https:// controller on first use and remember its certificate', () => {
    const s0 = browsing(config(), [ad('https://10.0.0.5:8443', 'c1', FP)]);
    const t = next(s0, { type: 'timer', now: T0 + 1000, lanIp: '10.0.0.12' });
    expect(enrollOf(t.effects)).to.deep.include({ pin: 'first-use' });
    const answered = next(t.state, { type: 'enrollAnswered', now: T0 + 1100, status: 200, body: { hostId: 'pc-12', state: 'ready', clusterId: 'c1' }, fingerprint: FP });
    const remember = answered.effects.find((e) => e.type === 'remember') as Extract<Effect, { type: 'remember' }>;
    expect(remember.remembered).to.include({ clusterId: 'c1', fingerprint: FP });
    expect(answered.effects.some((e) => e.type === 'log' && e.level === 'warn' && /on first use/.test(e.msg))).to.equal(true);
    // From then on: pinned to it.
    expect(next({ ...answered.state, lastEnroll: undefined }, { type: 'timer', now: T0 + 60_000, lanIp: '10.0.0.12' }).effects
      .find((e) => e.type === 'enroll')).to.deep.include({ pin: FP });
  });
});
