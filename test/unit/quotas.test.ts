// Quotas at the boundary, for each resource, per user and per class: exactly at the quota is allowed,
// one over is refused with 403 quota_exceeded naming what is used and what is allowed. Over an
// in-memory store and a list of records (no hosts needed).
import { expect } from 'chai';
import { Store } from '../../server/db/store.ts';
import { overQuota, Quotas, RESOURCES, resolve, type Ask, type Quota, type Resource } from '../../server/vms/quotas.ts';
import type { VmRecord } from '../../server/vms/records.ts';
import type { Role } from '../../server/users/users.ts';
import { refusal } from '../support/refusal.ts';

const NOW = '2026-03-02T10:00:00.000Z';
let n = 0;
function vm(o: Partial<VmRecord>): VmRecord {
  n++;
  return {
    id: `vm${String(n).padStart(10, '0')}`, name: `vm-${n}`, owner: 'alice', template: 'tiny', hostId: 'h1', state: 'running', vcpus: 1,
    memoryMiB: 512, diskGiB: 10, console: 'serial', createdAt: NOW, ...o,
  };
}

const small: Ask = { vcpus: 1, memoryMiB: 512, diskGiB: 10 };
/** A quota that allows exactly two `small` VMs for `resource` (and nothing else limited). */
const TWO: Record<Resource, Quota> = { vms: { vms: 2 }, vcpus: { vcpus: 2 }, memoryMiB: { memoryMiB: 1024 }, diskGiB: { diskGiB: 20 } };
const MESSAGES: Record<Resource, RegExp> = {
  vms: /you have 1 of 2 VMs|you have 2 of 2 VMs/,
  vcpus: /you have 2 of 2 vCPUs and this VM asks for 1/,
  memoryMiB: /you use 1 GiB of 1 GiB of memory and this VM asks for 512 MiB/,
  diskGiB: /you use 20 GiB of 20 GiB of disk and this VM asks for 10 GiB/,
};

describe('quotas', () => {
  let store: Store;
  let records: VmRecord[];
  let roleDefaults: Record<Role, Quota>;
  let quotas: Quotas;
  const alice = { name: 'alice', role: 'student' as const };

  beforeEach(() => {
    store = new Store(':memory:');
    for (const [name, role] of [['alice', 'student'], ['bob', 'student'], ['tina', 'teacher']] as const) {
      store.run('INSERT INTO users (name, role, created_at) VALUES (?, ?, ?)', name, role, NOW);
    }
    store.run('INSERT INTO classes (id, name, created_at) VALUES (?, ?, ?)', 'c7b', '7b', NOW);
    records = [];
    roleDefaults = { student: {}, teacher: {}, admin: {} };
    quotas = new Quotas({ store, records: () => records, roleDefaults: () => roleDefaults });
  });
  afterEach(() => store.close());

  for (const resource of RESOURCES) {
    describe(`given a user quota of ${JSON.stringify(TWO[resource])}`, () => {
      it('should allow the VM that reaches it exactly, and refuse the next with both numbers', () => {
        quotas.setUserQuota('alice', TWO[resource], 'admin');
        records.push(vm({}));
        quotas.check(alice, small); // 1 -> 2: exactly at the quota
        records.push(vm({}));
        const err = refusal(() => quotas.check(alice, small));
        expect(err.status).to.equal(403);
        expect(err.code).to.equal('quota_exceeded');
        expect(err.message).to.match(MESSAGES[resource]);
        expect(err.details).to.deep.include({ resource, allowed: resource === 'vms' ? 2 : TWO[resource][resource], requested: resource === 'vms' ? 1 : small[resource as keyof Ask] });
        // Someone else's VMs do not count, and a deleting one no longer does.
        records[1]!.owner = 'bob';
        quotas.check(alice, small);
        records[1]!.owner = 'alice';
        records[1]!.state = 'deleting';
        quotas.check(alice, small);
      });
    });

    describe(`given a class quota of ${JSON.stringify(TWO[resource])}`, () => {
      it('should count the class\'s VMs together: exactly at it succeeds, one over is refused naming the class', () => {
        quotas.setClassQuota('c7b', TWO[resource], 'admin');
        records.push(vm({ owner: 'bob', classId: 'c7b' }));
        quotas.check(alice, small, { classId: 'c7b' });
        records.push(vm({ owner: 'alice', classId: 'c7b' }));
        const err = refusal(() => quotas.check(alice, small, { classId: 'c7b', actor: 'tina' }));
        expect(err.status).to.equal(403);
        expect(err.code).to.equal('quota_exceeded');
        expect(err.message).to.match(/^quota exceeded: class 7b (has|uses) /);
        expect(err.details).to.deep.include({ resource, used: resource === 'vms' ? 2 : TWO[resource][resource] });
        // A VM outside the class is not limited by the class's quota.
        quotas.check(alice, small);
      });
    });
  }

  it('should take the role\'s default where the user\'s own quota says nothing, and null as "no limit"', () => {
    roleDefaults.student = { vms: 1, vcpus: 4 };
    records.push(vm({}));
    expect(refusal(() => quotas.check(alice, small)).message).to.equal('quota exceeded: you have 1 of 1 VMs');
    quotas.setUserQuota('alice', { vms: 3 }, 'admin');
    quotas.check(alice, small);
    expect(quotas.limitsOf(alice)).to.deep.include({ vms: 3, vcpus: 4, memoryMiB: null });
    quotas.setUserQuota('alice', { vcpus: null }, 'admin');
    expect(quotas.limitsOf(alice)).to.deep.include({ vms: 1, vcpus: null });
    expect(resolve(undefined, undefined)).to.deep.equal({ vms: null, vcpus: null, memoryMiB: null, diskGiB: null });
  });

  it('should name another owner than the one who asks', () => {
    quotas.setUserQuota('alice', { vms: 0 }, 'admin');
    expect(refusal(() => quotas.check(alice, small, { actor: 'tina' })).message).to.equal('quota exceeded: alice has 0 of 0 VMs');
  });

  it('should show usage against the quota for the users and class pages', () => {
    quotas.setUserQuota('alice', { vms: 2, memoryMiB: 2048 }, 'admin');
    records.push(vm({ memoryMiB: 1536, classId: 'c7b' }));
    const rows = quotas.usageOf(alice);
    expect(rows.map((r) => [r.resource, r.used, r.allowed])).to.deep.equal([['vms', 1, 2], ['vcpus', 1, null], ['memoryMiB', 1536, 2048], ['diskGiB', 10, null]]);
    expect(rows[2]).to.include({ usedText: '1.5 GiB', allowedText: '2 GiB', percent: 75 });
    expect(rows[1]).to.include({ allowedText: 'no limit' });
    expect(quotas.usageOfClass('c7b').map((r) => r.used)).to.deep.equal([1, 1, 1536, 10]);
  });

  it('should refuse a bad quota with a 4xx naming the field, and an unknown user or class with 404', () => {
    expect(refusal(() => quotas.setUserQuota('alice', { vms: -1 } as Quota, 'admin'))).to.include({ status: 422 });
    expect(refusal(() => quotas.setUserQuota('alice', { vms: -1 } as Quota, 'admin')).message).to.match(/^vms:/);
    expect(refusal(() => quotas.setUserQuota('nobody', { vms: 1 }, 'admin')).status).to.equal(404);
    expect(refusal(() => quotas.setClassQuota('nope', { vms: 1 }, 'admin')).status).to.equal(404);
  });

  it('overQuota: nothing over at the limit, the first resource over past it', () => {
    const limits = { vms: 2, vcpus: 4, memoryMiB: 1024, diskGiB: 20 };
    expect(overQuota(limits, { vms: 1, vcpus: 3, memoryMiB: 512, diskGiB: 10 }, small)).to.equal(undefined);
    expect(overQuota(limits, { vms: 1, vcpus: 3, memoryMiB: 513, diskGiB: 10 }, small)).to.deep.equal({ resource: 'memoryMiB', used: 513, allowed: 1024, requested: 512 });
  });
});
