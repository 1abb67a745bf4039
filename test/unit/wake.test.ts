// A room that sleeps, on the host registry with simulated agents over HTTP: the MAC an enrollment
// brings is the one woken, a host put to sleep is `asleep` (no alarm however many polls it misses) and
// ready at its first answer, wake-all and its skips, waking sleeping hosts when no ready host fits
// (503 room_waking), and a drained host's VMs shut down at the time set. Magic packets go to a
// recorder here (test/unit/wol.test.ts and test/integration/wake-on-lan.test.ts send real ones).
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { SkyError } from '../../base/errors.ts';
import { Store } from '../../server/db/store.ts';
import { HostRegistry, MISSED_POLLS_FOR_DOWN } from '../../server/hosts/registry.ts';
import { RoomPower, wakeIfNoHostFits, WAKE_SCHEDULE_KEY } from '../../server/hosts/wake.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('a room that sleeps (registry and simulated agents)', function () {
  this.timeout(20_000);
  let store: Store;
  let registry: HostRegistry;
  let sent: Array<{ mac: string; address: string; port: number }>;
  let shutdowns: string[];
  let room: RoomPower;
  const agents: SimAgent[] = [];
  const events: string[] = [];

  const join = async (mac?: string): Promise<SimAgent> => {
    const a = await new SimAgent().start();
    agents.push(a);
    registry.enroll({ hostId: a.hostId, hostname: a.hostname, agentUrl: a.url, agentKey: a.key, version: '1', joinToken: 'shj_good_token', ...(mac ? { mac } : {}) });
    await registry.pollOne(registry.require(a.hostId));
    return a;
  };
  const poll = (a: SimAgent) => registry.pollOne(registry.require(a.hostId));

  before(() => configureLogging({ out: () => {} }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));
  beforeEach(() => {
    store = new Store(':memory:');
    sent = [];
    shutdowns = [];
    events.length = 0;
    registry = new HostRegistry(store, {
      clusterId: 'c1', redeemJoinToken: () => ({ ok: true }), log: logger('test'), pollTimeoutMs: 5000, // a simulated agent's answer on a loaded machine; stopped ones refuse at once
      sendWake: async (mac, address, port) => void sent.push({ mac, address, port }),
    });
    registry.on('down', (h) => events.push(`down ${h.hostname}`));
    registry.on('returned', (h, from) => events.push(`returned ${h.hostname} from ${from}`));
    room = new RoomPower({
      store, hosts: registry, log: logger('test'),
      shutdownVm: async (id) => void shutdowns.push(id), runningVms: (hostId) => hostId === agents[0]?.hostId ? [{ id: 'vm1', name: 'web-1' }] : [],
    });
  });
  afterEach(async () => {
    await room.stop();
    await registry.close();
    for (const a of agents.splice(0)) await a.stop();
    store.close();
  });

  it('should wake a host at the MAC its enrollment brought, to port 9, and keep it across a restart of the controller', async () => {
    const a = await join('52:54:00:AA:BB:01');
    const answer = await registry.wake(a.hostId);
    expect(answer).to.deep.include({ sent: true, mac: '52:54:00:AA:BB:01', address: '255.255.255.255', port: 9 });
    expect(sent).to.deep.equal([{ mac: '52:54:00:AA:BB:01', address: '255.255.255.255', port: 9 }]);
    expect(new HostRegistry(store, { clusterId: 'c1', redeemJoinToken: () => ({ ok: true }), log: logger('test') }).get(a.hostId).mac).to.equal('52:54:00:AA:BB:01');
  });

  it('should refuse to wake a host whose MAC nobody knows, naming the field, and send nothing', async () => {
    const a = await join();
    try {
      await registry.wake(a.hostId);
      expect.fail('woke a host without a MAC');
    } catch (err) {
      expect((err as SkyError).status).to.equal(422);
      expect((err as SkyError).details).to.have.nested.property('fields[0].field', 'mac');
    }
    expect(sent).to.deep.equal([]);
  });

  it('should show a host put to sleep as asleep however many polls it misses, and make it ready at its first answer', async () => {
    const a = await join('52:54:00:aa:bb:02');
    const slept = await registry.sleep(a.hostId, 'admin');
    // The simulated agent cannot switch a machine off (no power control): marked asleep all the same.
    expect(slept.host.state).to.equal('asleep');
    expect(slept.poweredOff).to.equal(false);
    expect(events).to.deep.equal([`down ${a.hostname}`]);
    await a.stop();
    for (let i = 0; i < MISSED_POLLS_FOR_DOWN + 2; i++) await poll(a);
    expect(registry.get(a.hostId).state).to.equal('asleep');
    expect(events).to.deep.equal([`down ${a.hostname}`]); // no second alarm
    expect(store.get<{ asleep: number; state: string }>('SELECT asleep, state FROM hosts WHERE id = ?', a.hostId)).to.deep.equal({ asleep: 1, state: 'asleep' });
    await a.start();
    await poll(a);
    expect(registry.get(a.hostId).state).to.equal('ready');
    expect(events).to.deep.equal([`down ${a.hostname}`, `returned ${a.hostname} from asleep`]);
    expect(store.get<{ asleep: number }>('SELECT asleep FROM hosts WHERE id = ?', a.hostId)!.asleep).to.equal(0);
  });

  it('should not take the answers of a host still powering off for a wake-up', async () => {
    const a = await join('52:54:00:aa:bb:09');
    await registry.sleep(a.hostId, 'admin');
    registry.require(a.hostId).offSinceSleep = false; // as if its agent had accepted the power-off
    await poll(a);
    expect(registry.get(a.hostId).state).to.equal('asleep');
    await a.stop();
    await poll(a);
    await a.start();
    await poll(a);
    expect(registry.get(a.hostId).state).to.equal('ready');
  });

  it('should keep a drained host drained through a sleep', async () => {
    const a = await join('52:54:00:aa:bb:03');
    registry.drain(a.hostId);
    await registry.sleep(a.hostId, 'admin');
    await a.stop();
    await poll(a);
    await a.start();
    await poll(a);
    expect(registry.get(a.hostId).state).to.equal('draining');
  });

  it('should tell a restarted agent (a reboot quicker than three polls) from one that just answers again', async () => {
    const a = await join('52:54:00:aa:bb:04');
    await poll(a);
    expect(events).to.deep.equal([]);
    registry.require(a.hostId).status!.uptimeS += 3600; // as if the last answer came an hour into its run
    await poll(a);
    expect(events).to.deep.equal([`returned ${a.hostname} from restart`]);
  });

  it('should wake every host asleep or down with a MAC and say why it skipped the others', async () => {
    const asleep = await join('52:54:00:aa:bb:05');
    const noMac = await join();
    const awake = await join('52:54:00:aa:bb:06');
    await registry.sleep(asleep.hostId, 'admin');
    await registry.sleep(noMac.hostId, 'admin');
    const outcome = await room.wakeAll('admin');
    expect(outcome.woken.map((w) => w.hostname)).to.deep.equal([asleep.hostname]);
    expect(Object.fromEntries(outcome.skipped.map((s) => [s.hostname, s.reason]))).to.deep.equal({
      [noMac.hostname]: 'its MAC address is not known', [awake.hostname]: 'ready: not asleep',
    });
    expect(sent.map((s) => s.mac)).to.deep.equal(['52:54:00:aa:bb:05']);
  });

  it('should wake sleeping hosts when no ready host fits, answer 503 room_waking, and not send again while they boot', async () => {
    const a = await join('52:54:00:aa:bb:07');
    await registry.sleep(a.hostId, 'admin');
    const noFit = () => Promise.reject(new SkyError(503, 'no_host_fits', 'no host fits', { rejected: [] }));
    for (let i = 0; i < 2; i++) {
      try {
        await wakeIfNoHostFits(room, noFit);
        expect.fail('answered without a host');
      } catch (err) {
        expect(err).to.include({ status: 503, code: 'room_waking' });
        expect((err as SkyError).message).to.match(/room is waking .*try again in a minute/);
      }
    }
    expect(sent).to.have.length(1);
    // Nothing asleep to wake: the scheduler's own answer.
    await registry.sleep(a.hostId, 'admin');
    store.run('UPDATE hosts SET mac = NULL');
    registry.require(a.hostId).mac = undefined;
    const answer = await wakeIfNoHostFits(room, noFit).then(() => 'answered', (err: SkyError) => err.code);
    expect(answer).to.equal('no_host_fits');
  });

  it('should shut a drained host\'s VMs down once its time has passed, once', async () => {
    const a = await join('52:54:00:aa:bb:08');
    registry.drain(a.hostId, '2026-05-04T16:00:00Z');
    expect(registry.get(a.hostId).shutdownVmsAt).to.equal('2026-05-04T16:00:00.000Z');
    expect(await room.shutdownDue(new Date('2026-05-04T15:59:00Z'))).to.equal(0);
    expect(await room.shutdownDue(new Date('2026-05-04T16:00:30Z'))).to.equal(1);
    expect(shutdowns).to.deep.equal(['vm1']);
    expect(await room.shutdownDue(new Date('2026-05-04T16:01:30Z'))).to.equal(0);
    expect(registry.get(a.hostId).shutdownVmsAt).to.equal(undefined);
    expect(() => registry.drain(a.hostId, 'tomorrow')).to.throw('shutdownVmsAt');
  });

  it('should put to sleep the hosts that are up and run no VM, leaving on those with VMs and the controller\'s own machine', async () => {
    const busy = await join('52:54:00:aa:bb:10'); // agents[0]: runningVms says it runs web-1
    const idle = await join('52:54:00:aa:bb:11');
    // Simulated agents listen on 127.0.0.1, like `skyhost up`'s own agent: by default they are the controller's machine.
    const own = await room.sleepAll('admin');
    expect(own.asleep).to.deep.equal([]);
    expect(own.skipped.map((s) => s.reason)).to.deep.equal(['the controller\'s own machine', 'the controller\'s own machine']);
    const lab = new RoomPower({
      store, hosts: registry, log: logger('test'), shutdownVm: async () => undefined, isControllerMachine: () => false,
      runningVms: (hostId) => (hostId === busy.hostId ? [{ id: 'vm1', name: 'web-1' }] : []),
    });
    const outcome = await lab.sleepAll('the schedule "weekdays 18:00"');
    expect(outcome.asleep.map((a) => a.hostname)).to.deep.equal([idle.hostname]);
    expect(outcome.skipped).to.deep.equal([{ id: busy.hostId, hostname: busy.hostname, reason: '1 VM(s) running: web-1' }]);
    expect(registry.get(idle.hostId).state).to.equal('asleep');
    expect(registry.get(busy.hostId).state).to.equal('ready');
    expect(lab.setSchedule('weekdays 18:00', 'admin', 'sleep')).to.deep.include({ schedule: 'weekdays 18:00', cron: '0 18 * * 1-5' });
    expect(lab.schedule('wake')).to.deep.equal({ schedule: null });
  });

  it('should keep the wake-up schedule in the settings, refuse a bad one without changing it, and remove it', () => {
    expect(room.schedule()).to.deep.equal({ schedule: null });
    room.start();
    const s = room.setSchedule('weekdays 07:30', 'admin');
    expect(s).to.deep.include({ schedule: 'weekdays 07:30', cron: '30 7 * * 1-5' });
    const next = new Date(s.nextRun!);
    expect([next.getHours(), next.getMinutes()]).to.deep.equal([7, 30]);
    expect([1, 2, 3, 4, 5]).to.include(next.getDay());
    expect(() => room.setSchedule('someday', 'admin')).to.throw('schedule');
    expect(store.get<{ value: string }>('SELECT value FROM settings WHERE key = ?', WAKE_SCHEDULE_KEY)!.value).to.equal('weekdays 07:30');
    expect(room.setSchedule(null, 'admin')).to.deep.equal({ schedule: null });
  });
});
