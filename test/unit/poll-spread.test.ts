// A scheduled poll round spreads its polls: a district's 1,000 hosts do not all answer in the same
// moment (the controller was busy with their answers for most of a second, and pages waited), while
// a room's few PCs are still polled at once. The round's polls are recorded, not sent (the registry's
// polling over HTTP is covered by test/unit/wake.test.ts and the controller tests).
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { Store } from '../../server/db/store.ts';
import { HostRegistry, type HostRecord } from '../../server/hosts/registry.ts';

describe('poll rounds spread over time', function () {
  let store: Store;
  let registry: HostRegistry;
  let starts: number[];

  before(() => configureLogging({ out: () => {} }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));
  beforeEach(() => {
    store = new Store(':memory:');
    registry = new HostRegistry(store, { clusterId: 'c1', redeemJoinToken: () => ({ ok: true }), log: logger('test'), pollTimeoutMs: 3000 });
    starts = [];
    registry.pollOne = async (_h: HostRecord) => void starts.push(performance.now());
  });
  afterEach(async () => {
    await registry.close();
    store.close();
  });

  const enroll = (n: number) => {
    for (let i = 0; i < n; i++) {
      registry.enroll({ hostId: `h${i}`, hostname: `pc-${i}`, agentUrl: `http://127.0.0.1:${9000 + i}`, agentKey: `key-${i}-${'x'.repeat(32)}`, version: '1', joinToken: 'shj_good_token' });
    }
    expect(registry.records().filter((h) => h.state !== 'pending')).to.have.length(n);
  };
  const span = () => starts.at(-1)! - starts[0]!;

  it('spreads 400 hosts over the time given, each polled once', async () => {
    enroll(400);
    await registry.pollMembers({ spreadMs: 400 });
    expect(starts).to.have.length(400);
    expect(span()).to.be.within(350, 3000);
  });

  it('polls them all at once without a spread (a poll asked for by hand)', async () => {
    enroll(400);
    // "at once": every poll starts before the event loop's next turn, i.e. none waited for a timer
    // (a span in ms depended on how busy the machine was; this does not)
    let turned = false;
    setImmediate(() => { turned = true; });
    const late: number[] = [];
    registry.pollOne = async (_h: HostRecord) => { if (turned) late.push(starts.length); starts.push(performance.now()); };
    await registry.pollMembers();
    expect(starts).to.have.length(400);
    expect(late, 'polls that started after a wait').to.deep.equal([]);
  });

  it('starts the 30 polls of a room at most 2 ms apart, however long the spread', async () => {
    enroll(30);
    await registry.pollMembers({ spreadMs: 2500 });
    expect(starts).to.have.length(30);
    expect(span()).to.be.within(50, 1500);
  });

  it('spreads the scheduled rounds so that the last poll can time out before the next round', () => {
    expect(registry.pollSpreadMs(5000)).to.equal(1500); // 5 s interval, 3 s poll timeout, 0.5 s margin
    expect(registry.pollSpreadMs(60_000)).to.equal(30_000); // at most half the interval
    expect(registry.pollSpreadMs(2000)).to.equal(0); // a short interval: no room to spread
  });
});
