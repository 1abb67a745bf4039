// Events name a host by its label (server/hosts/names.ts), never by its raw id: two lab PCs cloned from
// one image share a hostname and must still be told apart in the event log. Reports are played by
// emitting the registry's `status`, as in reconcile.test.ts; the log lines are the events.
import { expect } from 'chai';
import type { HostStatus, VmInfo } from '../../wire/api.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { Store } from '../../server/db/store.ts';
import { HostRegistry } from '../../server/hosts/registry.ts';
import { RoomPower } from '../../server/hosts/wake.ts';
import { Catalog } from '../../server/templates/catalog.ts';
import { Templates } from '../../server/templates/templates.ts';
import { Users, type User } from '../../server/users/users.ts';
import { hostDown, reconcile } from '../../server/vms/reconcile.ts';
import type { VmRecord } from '../../server/vms/records.ts';
import { VmService } from '../../server/vms/vms.ts';

const ONE = '3f2a9b7c0d';
const TWO = '9c01d4e5f6';

describe('host labels in events', () => {
  let store: Store;
  let registry: HostRegistry;
  let messages: string[];
  const admin: User = { name: 'admin', role: 'admin', mustChangePassword: false, createdAt: '2025-01-01T00:00:00.000Z' };
  const found: VmInfo = {
    id: 'zzz00001', name: 'found', template: 'alpine', state: 'running', vcpus: 1, memoryMiB: 256, diskGiB: 2, console: 'serial',
    createdAt: '2025-01-01T00:00:00.000Z',
  };
  const poll = (hostId: string, vmList: VmInfo[]) =>
    registry.emit('status', registry.require(hostId), { hostId, sampledAt: new Date().toISOString(), vmList } as unknown as HostStatus, Date.now());

  beforeEach(async () => {
    messages = [];
    configureLogging({ out: (line) => void messages.push(String((JSON.parse(line) as { msg: unknown }).msg)) });
    store = new Store(':memory:');
    await new Users(store).create({ name: 'alice', password: 'alice-password' });
    registry = new HostRegistry(store, {
      clusterId: 'c1', redeemJoinToken: () => ({ ok: true }), log: logger('hosts'), sendWake: async () => undefined,
    });
    // Two PCs made from one image: the same hostname, and (port 9 refuses) agents that do not answer.
    for (const [id, n] of [[ONE, 1], [TWO, 2]] as const) {
      registry.enroll({ hostId: id, hostname: 'lab-pc', agentUrl: `http://127.0.0.1:9/${n}`, agentKey: 'k'.repeat(20), version: '1', joinToken: 'shj_token_1', mac: `52:54:00:00:00:0${n}` });
    }
  });
  afterEach(() => {
    store.close();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
  });

  it('should name the host of an adopted VM, and of a VM gone from its host, by its label', () => {
    const vms = new VmService(store, registry, new Templates(registry, logger('templates'), new Catalog('/nonexistent/skyhost-unit', { log: logger('templates') })),
      { log: logger('vms'), users: new Users(store) });
    poll(ONE, [found]);
    vms.adopt(admin, ONE, 'zzz00001', { owner: 'alice', name: 'kept' });
    poll(ONE, []);
    expect(messages).to.include('VM kept on host lab-pc (3f2a) adopted by admin for alice');
    expect(messages).to.include('VM kept is gone from host lab-pc (3f2a): record removed');
    expect(messages.join('\n')).to.not.contain(ONE);
  });

  it('should give the reconciler\'s reasons with the label it is given', () => {
    const label = (id: string) => (id === ONE ? 'lab-pc (3f2a)' : 'lab-pc (9c01)');
    const kept: VmRecord = {
      id: found.id, name: 'kept', owner: 'alice', template: 'alpine', hostId: ONE, state: 'running', vcpus: 1, memoryMiB: 256, diskGiB: 2,
      console: 'serial', createdAt: found.createdAt,
    };
    const index = { get: (id: string) => (id === kept.id ? kept : undefined), onHost: (h: string) => (h === ONE ? [kept] : []) };
    const fromTwo = reconcile(index, { hostId: TWO, sentAt: 1, sample: 's', vms: [found] }, new Map(), 1, label);
    expect(fromTwo.map((c) => c.reason)).to.deep.equal(['its id belongs to VM kept on host lab-pc (3f2a): a host cannot take another host\'s VM']);
    expect(hostDown(index, ONE, label(ONE)).map((c) => c.reason)).to.deep.equal(['VM kept: unknown while host lab-pc (3f2a) is down']);
  });

  it('should say which sleeping hosts a request wakes by their labels', async () => {
    for (const id of [ONE, TWO]) await registry.sleep(id, 'admin');
    const room = new RoomPower({ store, hosts: registry, log: logger('hosts'), shutdownVm: async () => undefined, runningVms: () => [] });
    expect(await room.wakeForDemand()).to.deep.equal(['lab-pc (3f2a)', 'lab-pc (9c01)']);
    expect(await room.wakeForDemand(), 'still booting: waited for, not woken again').to.deep.equal(['lab-pc (3f2a)', 'lab-pc (9c01)']);
    expect(messages.filter((m) => m.startsWith('host lab-pc (3f2a) put to sleep by admin: lab-pc (3f2a) is marked asleep'))).to.have.length(1);
    expect(messages.filter((m) => m.startsWith('no ready host fits'))).to.deep.equal(['no ready host fits a request: waking lab-pc (3f2a), lab-pc (9c01)']);
  });
});
