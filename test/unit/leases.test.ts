// Leases with a controlled clock: the lease a new VM gets (request, class, template, cluster default,
// the role's maximum), extensions within the maximum, the steps due at a moment (warn, shut down,
// delete after the grace period), the policies as the admin stores them, and "time left".
import { expect } from 'chai';
import { Store } from '../../server/db/store.ts';
import {
  DEFAULT_POLICIES, extendedExpiry, leaseDefaultsOf, leaseMinutesFor, leaseSteps, PolicyStore, timeLeft, type LeasePolicy,
} from '../../server/vms/leases.ts';
import type { VmRecord } from '../../server/vms/records.ts';
import { refusal } from '../support/refusal.ts';

const T0 = new Date('2026-03-02T10:00:00.000Z');
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);
const iso = (minutes: number) => at(minutes).toISOString();
const lease: LeasePolicy = { defaultMinutes: 60, maxMinutes: { student: 120, teacher: 600, admin: null }, warnMinutes: 15, deleteAfterMinutes: 30 };

function vm(o: Partial<VmRecord> = {}): VmRecord {
  return {
    id: o.id ?? 'vm0000000001', name: o.name ?? 'lab-1', owner: 'alice', template: 'tiny', hostId: 'h1', state: 'running', vcpus: 1, memoryMiB: 256,
    diskGiB: 1, console: 'serial', createdAt: T0.toISOString(), ...o,
  };
}

describe('leases: the lease a new VM gets', () => {
  it('should take the request when it is within the role\'s maximum, exactly at it included', () => {
    expect(leaseMinutesFor(lease, 'student', 120, {})).to.equal(120);
    expect(leaseMinutesFor(lease, 'teacher', 600, {})).to.equal(600);
    expect(leaseMinutesFor(lease, 'admin', 525_600, {})).to.equal(525_600);
  });

  it('should refuse a request one minute over the maximum with 422 naming leaseMinutes and both numbers', () => {
    const err = refusal(() => leaseMinutesFor(lease, 'student', 121, {}));
    expect(err.status).to.equal(422);
    expect(err.message).to.match(/^leaseMinutes: 121 minutes .* more than the 120 minutes/);
    expect(err.details).to.deep.include({ requested: 121, allowed: 120 });
    expect((err.details as { fields: Array<{ field: string }> }).fields[0]!.field).to.equal('leaseMinutes');
  });

  it('should take the class\'s default, else the template\'s, else the cluster\'s, cut to the maximum', () => {
    expect(leaseMinutesFor(lease, 'student', undefined, { classMinutes: 45, templateMinutes: 90 })).to.equal(45);
    expect(leaseMinutesFor(lease, 'student', undefined, { templateMinutes: 90 })).to.equal(90);
    expect(leaseMinutesFor(lease, 'student', undefined, {})).to.equal(60);
    expect(leaseMinutesFor(lease, 'student', undefined, { templateMinutes: 1000 })).to.equal(120);
    // No cluster default: a role with a maximum still gets an expiry, one without none.
    const none = { ...lease, defaultMinutes: null };
    expect(leaseMinutesFor(none, 'student', undefined, {})).to.equal(120);
    expect(leaseMinutesFor(none, 'admin', undefined, {})).to.equal(undefined);
  });

  it('should read the class\'s and the template\'s defaults from their tables', () => {
    const store = new Store(':memory:');
    store.run('INSERT INTO classes (id, name, lease_default_minutes, created_at) VALUES (?, ?, ?, ?)', 'c1', '7b', 45, T0.toISOString());
    store.run('INSERT INTO template_policies (template, lease_default_minutes) VALUES (?, ?)', 'tiny', 90);
    expect(leaseDefaultsOf(store, 'tiny', 'c1')).to.deep.equal({ classMinutes: 45, templateMinutes: 90 });
    expect(leaseDefaultsOf(store, 'other', undefined)).to.deep.equal({});
    store.close();
  });
});

describe('leases: extending', () => {
  it('should add the minutes to the current end, up to exactly the maximum from now', () => {
    expect(extendedExpiry(lease, 'student', iso(60), 60, T0)).to.equal(iso(120));
    // An ended lease counts from now.
    expect(extendedExpiry(lease, 'student', iso(-30), 60, T0)).to.equal(iso(60));
    expect(extendedExpiry(lease, 'admin', iso(60), 525_600, T0)).to.equal(iso(60 + 525_600));
  });

  it('should refuse an extension past the maximum with 422 naming minutes, both numbers and the room left', () => {
    const err = refusal(() => extendedExpiry(lease, 'student', iso(60), 61, T0));
    expect(err.status).to.equal(422);
    expect(err.message).to.match(/^minutes: 121 minutes .* more than the 120 minutes .* at most 60 more/);
    expect(err.details).to.deep.include({ requested: 121, allowed: 120 });
    expect(refusal(() => extendedExpiry(lease, 'student', iso(60), 0, T0)).message).to.match(/^minutes:/);
  });
});

describe('leases: the steps due at a moment', () => {
  const steps = (v: VmRecord, minutes: number, policy = lease) => leaseSteps([v], policy, at(minutes)).map((s) => s.kind);

  it('should warn exactly warnMinutes before the end, once', () => {
    const v = vm({ expiresAt: iso(60) });
    expect(steps(v, 44)).to.deep.equal([]);
    expect(steps(v, 45)).to.deep.equal(['warn']);
    expect(steps({ ...v, leaseWarnedAt: iso(45) }, 50)).to.deep.equal([]);
    expect(steps(v, 45, { ...lease, warnMinutes: 0 })).to.deep.equal([]);
  });

  it('should shut the VM down at its end, and delete it once the grace period is over', () => {
    const v = vm({ expiresAt: iso(60), leaseWarnedAt: iso(45) });
    expect(steps(v, 59)).to.deep.equal([]);
    expect(steps(v, 60)).to.deep.equal(['shut-down']);
    const ended = { ...v, state: 'shutoff' as const, leaseEndedAt: iso(60) };
    expect(steps(ended, 89)).to.deep.equal([]);
    expect(steps(ended, 90)).to.deep.equal(['delete']);
  });

  it('should delete at the end when the grace period is 0, and leave VMs without a lease or being made alone', () => {
    expect(steps(vm({ expiresAt: iso(60) }), 60, { ...lease, deleteAfterMinutes: 0 })).to.deep.equal(['delete']);
    expect(steps(vm(), 10_000)).to.deep.equal([]);
    expect(steps(vm({ expiresAt: iso(0), state: 'creating' }), 10)).to.deep.equal([]);
    expect(steps(vm({ expiresAt: iso(0), state: 'deleting' }), 10)).to.deep.equal([]);
  });
});

describe('leases: the policies the admin sets', () => {
  it('should start from the defaults, keep what is saved, and refuse a bad field with 422 naming it', () => {
    const store = new Store(':memory:');
    const policies = new PolicyStore(store);
    expect(policies.current()).to.deep.equal(DEFAULT_POLICIES);
    const changed = { ...DEFAULT_POLICIES, housekeeping: { reapStoppedAfterMinutes: 7 * 1440 } };
    policies.set(changed);
    expect(new PolicyStore(store).current()).to.deep.equal(changed);
    const bad = { ...DEFAULT_POLICIES, lease: { ...DEFAULT_POLICIES.lease, maxMinutes: { ...DEFAULT_POLICIES.lease.maxMinutes, student: -5 } } };
    const err = refusal(() => policies.set(bad));
    expect(err.status).to.equal(422);
    expect(err.message).to.match(/^lease\.maxMinutes\.student:/);
    expect(refusal(() => policies.set({ ...DEFAULT_POLICIES, quota: { ...DEFAULT_POLICIES.quota, student: { vms: 'two' } } })).message).to.match(/^quota\.student\.vms:/);
    expect(policies.current()).to.deep.equal(changed);
    // A row that is no valid document (edited by hand) gives the defaults, not a failure on every request.
    store.run('UPDATE settings SET value = ? WHERE key = ?', '{not json', 'policies');
    expect(new PolicyStore(store).current()).to.deep.equal(DEFAULT_POLICIES);
    store.close();
  });
});

describe('leases: time left', () => {
  it('should say hours and minutes, days and hours, or that the lease ended', () => {
    expect(timeLeft(iso(130), T0)).to.equal('2 h 10 min left');
    expect(timeLeft(iso(3 * 1440 + 240), T0)).to.equal('3 days 4 h left');
    expect(timeLeft(iso(0.5), T0)).to.equal('less than a minute left');
    expect(timeLeft(iso(0), T0)).to.equal('lease ended');
    expect(timeLeft(undefined, T0)).to.equal('');
  });
});
