// Housekeeping with a controlled clock over an in-memory stand-in for VmService (records, actions,
// deletions): the lease warning, the shutdown and the deletion at the right moments, each an event
// saying housekeeping did it; the reaping of exactly the VMs stopped for longer than the policy
// (not a running one, not one stopped for less); a failed step tried again at the next sweep.
import { expect } from 'chai';
import { SkyError, Unavailable } from '../../base/errors.ts';
import { Logger } from '../../base/log.ts';
import type { VmAction } from '../../wire/api.ts';
import type { EventInput } from '../../server/events/events.ts';
import { Housekeeping, reapSteps } from '../../server/vms/housekeeping.ts';
import { DEFAULT_POLICIES, type Policies } from '../../server/vms/leases.ts';
import type { LeasePatch, VmRecord } from '../../server/vms/records.ts';

const T0 = new Date('2026-03-02T10:00:00.000Z');
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);
const iso = (minutes: number) => at(minutes).toISOString();

class Quiet extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
}

function vm(name: string, o: Partial<VmRecord> = {}): VmRecord {
  return {
    id: `id${name.replace(/[^a-z0-9]/g, '')}`.padEnd(12, '0'), name, owner: 'alice', template: 'tiny', hostId: 'h1', state: 'running', vcpus: 1,
    memoryMiB: 256, diskGiB: 1, console: 'serial', createdAt: T0.toISOString(), ...o,
  };
}

/** VmService's part housekeeping uses, in memory; `refuse` makes an action or deletion fail. */
class FakeVms {
  readonly byId = new Map<string, VmRecord>();
  readonly calls: string[] = [];
  refuse: ((what: string, vm: VmRecord) => SkyError | undefined) | undefined;
  constructor(vms: VmRecord[]) {
    for (const v of vms) this.byId.set(v.id, v);
  }
  records(): VmRecord[] {
    return [...this.byId.values()];
  }
  async action(_user: unknown, id: string, action: VmAction) {
    const v = this.byId.get(id)!;
    const err = this.refuse?.(action, v);
    if (err) throw err;
    this.calls.push(`${action} ${v.name}`);
    if (action === 'shutdown' || action === 'poweroff') v.state = 'shutoff';
    return undefined as never;
  }
  async remove(_user: unknown, id: string): Promise<void> {
    const v = this.byId.get(id)!;
    const err = this.refuse?.('delete', v);
    if (err) throw err;
    this.calls.push(`delete ${v.name}`);
    this.byId.delete(id);
  }
  markLease(id: string, patch: LeasePatch): void {
    const v = this.byId.get(id);
    if (v) Object.assign(v, patch);
  }
}

function setup(vms: VmRecord[], policies: Partial<Policies> = {}) {
  const fake = new FakeVms(vms);
  const events: EventInput[] = [];
  const current: Policies = {
    ...DEFAULT_POLICIES, lease: { ...DEFAULT_POLICIES.lease, warnMinutes: 15, deleteAfterMinutes: 60 }, ...policies,
  };
  const hk = new Housekeeping({ vms: fake, policies: { current: () => current }, record: (e) => events.push(e), log: new Quiet('test') });
  return { fake, events, hk };
}

describe('housekeeping: leases with a controlled clock', () => {
  it('should warn 15 min before the end, shut down at the end, delete an hour later, each once, each an event by housekeeping', async () => {
    const { fake, events, hk } = setup([vm('lab-1', { expiresAt: iso(60) })]);
    expect(await hk.sweep(at(44))).to.deep.include({ warned: [], shutDown: [], deleted: [] });
    expect((await hk.sweep(at(45))).warned).to.deep.equal(['lab-1']);
    expect(events.at(-1)).to.deep.include({ level: 'warn', source: 'housekeeping', vmId: 'idlab1000000' });
    expect(events.at(-1)!.msg).to.match(/^lease of VM lab-1 \(owner alice\) ends in 15 min/);
    expect((await hk.sweep(at(50))).warned).to.deep.equal([]);
    expect(fake.calls).to.deep.equal([]);

    expect((await hk.sweep(at(59))).shutDown).to.deep.equal([]);
    expect((await hk.sweep(at(60))).shutDown).to.deep.equal(['lab-1']);
    expect(fake.calls).to.deep.equal(['shutdown lab-1']);
    expect(fake.byId.get('idlab1000000')).to.include({ state: 'shutoff', leaseEndedAt: iso(60) });
    expect(events.at(-1)!.msg).to.equal('lease of VM lab-1 (owner alice) ended: shut down by housekeeping; deleted in 1 h unless its lease is extended');
    expect(events.at(-1)!.data).to.include({ by: 'housekeeping', step: 'shut-down' });

    expect((await hk.sweep(at(119))).deleted).to.deep.equal([]);
    expect((await hk.sweep(at(120))).deleted).to.deep.equal(['lab-1']);
    expect(fake.calls).to.deep.equal(['shutdown lab-1', 'delete lab-1']);
    expect(events.at(-1)!.msg).to.equal('lease of VM lab-1 (owner alice) ended 1 h ago: deleted by housekeeping');
    expect(events.map((e) => e.data?.step)).to.deep.equal(['warn', 'shut-down', 'delete']);
  });

  it('should delete at the end when the grace period is 0', async () => {
    const { fake, hk } = setup([vm('lab-2', { expiresAt: iso(60) })], { lease: { ...DEFAULT_POLICIES.lease, deleteAfterMinutes: 0 } });
    expect((await hk.sweep(at(60))).deleted).to.deep.equal(['lab-2']);
    expect(fake.calls).to.deep.equal(['delete lab-2']);
  });

  it('should power off a guest that ignores the shutdown, and try a step that failed again at the next sweep', async () => {
    const { fake, hk } = setup([vm('deaf', { expiresAt: iso(0) }), vm('far', { expiresAt: iso(0), hostId: 'h2' })]);
    let hostDown = true;
    fake.refuse = (what, v) => {
      if (v.name === 'deaf' && what === 'shutdown') return new SkyError(409, 'shutdown_timeout', 'did not power off');
      if (v.name === 'far' && hostDown) return new Unavailable('host h2 is down');
      return undefined;
    };
    const first = await hk.sweep(at(1));
    expect(first.shutDown).to.deep.equal(['deaf']);
    expect(first.failed).to.deep.equal([{ vm: 'far', step: 'shut down', message: 'host h2 is down' }]);
    expect(fake.calls).to.deep.equal(['poweroff deaf']);
    expect(fake.byId.get('idfar0000000')!.leaseEndedAt).to.equal(undefined);
    hostDown = false;
    expect((await hk.sweep(at(2))).shutDown).to.deep.equal(['far']);
  });

  it('should only mark a VM already stopped at its end, without calling its host', async () => {
    const { fake, hk } = setup([vm('idle', { expiresAt: iso(0), state: 'shutoff', stoppedSince: iso(-5) })]);
    expect((await hk.sweep(at(0))).shutDown).to.deep.equal(['idle']);
    expect(fake.calls).to.deep.equal([]);
    expect(fake.records()[0]).to.include({ leaseEndedAt: iso(0) });
  });
});

describe('housekeeping: reaping stopped VMs', () => {
  const week = 7 * 1440;
  const vms = () => [
    vm('old-stopped', { state: 'shutoff', stoppedSince: iso(-week - 1) }),
    vm('exactly-a-week', { state: 'shutoff', stoppedSince: iso(-week) }),
    vm('recent-stopped', { state: 'shutoff', stoppedSince: iso(-week + 1) }),
    vm('running', { state: 'running' }),
    vm('running-once-stopped', { state: 'running', stoppedSince: iso(-week * 2) }),
    vm('error', { state: 'error', stoppedSince: iso(-week * 2) }),
  ];

  it('reapSteps: exactly the VMs stopped for at least the policy\'s time, none when off', () => {
    expect(reapSteps(vms(), week, T0).map((v) => v.name)).to.deep.equal(['old-stopped', 'exactly-a-week']);
    expect(reapSteps(vms(), null, T0)).to.deep.equal([]);
  });

  it('should delete exactly those, each with an event saying how long it was stopped, and nothing while the policy is off', async () => {
    const off = setup(vms());
    expect((await off.hk.sweep(T0)).reaped).to.deep.equal([]);
    expect(off.fake.calls).to.deep.equal([]);

    const { fake, events, hk } = setup(vms(), { housekeeping: { reapStoppedAfterMinutes: week } });
    expect((await hk.sweep(T0)).reaped).to.deep.equal(['old-stopped', 'exactly-a-week']);
    expect(fake.calls).to.deep.equal(['delete old-stopped', 'delete exactly-a-week']);
    expect(fake.records().map((v) => v.name)).to.deep.equal(['recent-stopped', 'running', 'running-once-stopped', 'error']);
    expect(events[0]!.msg).to.match(/^VM old-stopped \(owner alice\) stopped for 7 days .*the policy says 7 days\): deleted by housekeeping$/);
    expect(events[0]!.data).to.include({ by: 'housekeeping', step: 'reap' });
  });

  it('should start counting a stopped VM that has no stoppedSince yet (a record from before) at the sweep', async () => {
    const { fake, hk } = setup([vm('legacy', { state: 'shutoff' })], { housekeeping: { reapStoppedAfterMinutes: 60 } });
    expect((await hk.sweep(T0)).reaped).to.deep.equal([]);
    expect(fake.records()[0]!.stoppedSince).to.equal(T0.toISOString());
    expect((await hk.sweep(at(59))).reaped).to.deep.equal([]);
    expect((await hk.sweep(at(60))).reaped).to.deep.equal(['legacy']);
  });
});
