// The reconciler on its own: one host's report against the records and the pending operations, one
// row per race. Marks are controller-clock milliseconds: the poll was sent at `sentAt`. Then VmService
// applying reports (an in-memory store, a registry whose polls the test plays by emitting `status`).
import { expect } from 'chai';
import { VmRequest, type HostStatus, type VmInfo } from '../../wire/api.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { Store } from '../../server/db/store.ts';
import { HostRegistry } from '../../server/hosts/registry.ts';
import { Catalog } from '../../server/templates/catalog.ts';
import { Templates } from '../../server/templates/templates.ts';
import { Users, type User } from '../../server/users/users.ts';
import { requestHash } from '../../server/vms/idempotency.ts';
import { hostDown, reconcile, type Change, type HostReport, type Operation } from '../../server/vms/reconcile.ts';
import type { RecordIndex, VmRecord } from '../../server/vms/records.ts';
import { VmService } from '../../server/vms/vms.ts';

const T = 1_000_000;

const record = (over: Partial<VmRecord> = {}): VmRecord => ({
  id: 'vm000001', name: 'web-1', owner: 'alice', template: 'alpine', hostId: 'pc-1', state: 'running', vcpus: 1, memoryMiB: 256,
  diskGiB: 2, ip: '192.168.122.10', console: 'serial', createdAt: '2025-01-01T00:00:00.000Z', ...over,
});

const info = (over: Partial<VmInfo> = {}): VmInfo => ({
  id: 'vm000001', name: 'web-1', template: 'alpine', state: 'running', vcpus: 1, memoryMiB: 256, diskGiB: 2, ip: '192.168.122.10',
  console: 'serial', createdAt: '2025-01-01T00:00:00.000Z', ...over,
});

function index(records: VmRecord[]): RecordIndex {
  return {
    get: (id) => records.find((r) => r.id === id),
    onHost: (hostId) => records.filter((r) => r.hostId === hostId),
  };
}

const report = (vms: VmInfo[], over: Partial<HostReport> = {}): HostReport => ({ hostId: 'pc-1', sentAt: T, sample: 's2', vms, ...over });
const create = (over: Partial<Extract<Operation, { kind: 'create' }>> = {}): Operation =>
  ({ kind: 'create', hostId: 'pc-1', sentAt: T - 100, reserved: { vcpus: 1, memoryMiB: 256, diskGiB: 2 }, ...over });
const remove = (over: Partial<Extract<Operation, { kind: 'delete' }>> = {}): Operation => ({ kind: 'delete', hostId: 'pc-1', sentAt: T - 100, ...over });

/** The changes as `kind vmId` strings (with the patch for updates), for compact expectations. */
function summary(changes: Change[]): string[] {
  return changes.map((c) => {
    if (c.kind === 'update') return `update ${c.vmId} ${JSON.stringify(c.patch)}`;
    if (c.kind === 'stranger') return `stranger ${c.vm.id}`;
    return `${c.kind} ${c.vmId}`;
  });
}

interface Row {
  race: string;
  records: VmRecord[];
  report: HostReport;
  pending?: Array<[string, Operation]>;
  expect: string[];
}

const rows: Row[] = [
  // steady state
  { race: 'a VM the host lists as it is recorded: nothing', records: [record()], report: report([info()]), expect: [] },
  { race: 'a VM that changed on its host: the report wins', records: [record()], report: report([info({ state: 'shutoff', ip: undefined })]),
    expect: ['update vm000001 {"state":"shutoff"}'] },
  { race: 'a VM gone from its host, no operation on it: forget', records: [record()], report: report([]), expect: ['forget vm000001'] },
  { race: 'an error record the host does not know: kept until deleted', records: [record({ state: 'error', error: 'boom' })], report: report([]), expect: [] },

  // created while polling
  { race: 'created while polling: the create call still runs, the host does not list it yet', records: [record({ state: 'creating' })],
    report: report([]), pending: [['vm000001', create()]], expect: [] },
  { race: 'created while polling: the create settled after the poll was sent', records: [record()],
    report: report([], { sentAt: T }), pending: [['vm000001', create({ settledAt: T + 5 })]], expect: [] },
  { race: 'created while polling: settled in the very millisecond the poll was sent (not after)', records: [record()],
    report: report([], { sentAt: T }), pending: [['vm000001', create({ settledAt: T })]], expect: [] },
  { race: 'created, listed by a poll sent later with a fresh usage sample: the reservation ends', records: [record()],
    report: report([info()], { sentAt: T + 10, sample: 's2' }), pending: [['vm000001', create({ settledAt: T, sampleBefore: 's1' })]],
    expect: ['settle vm000001'] },
  { race: 'created, listed by a later poll but the usage sample is the one from before: still reserved', records: [record()],
    report: report([info()], { sentAt: T + 10, sample: 's1' }), pending: [['vm000001', create({ settledAt: T, sampleBefore: 's1' })]], expect: [] },
  { race: 'created, then missing from a poll sent after the create settled: gone, forget', records: [record()],
    report: report([], { sentAt: T + 10 }), pending: [['vm000001', create({ settledAt: T })]], expect: ['forget vm000001'] },
  { race: 'the host lists the VM running before the create call answers: the record follows', records: [record({ state: 'creating' })],
    report: report([info()]), pending: [['vm000001', create()]], expect: ['update vm000001 {"state":"running"}'] },

  // deleted while polling
  { race: 'deleted while polling: the delete call runs, the host still lists it', records: [record({ state: 'deleting' })],
    report: report([info()]), pending: [['vm000001', remove()]], expect: [] },
  { race: 'deleted while polling: record gone, the delete settled after the poll was sent', records: [],
    report: report([info()], { sentAt: T }), pending: [['vm000001', remove({ settledAt: T + 5 })]], expect: [] },
  { race: 'deleted, and a poll sent after the delete settled lacks it: the delete is over', records: [],
    report: report([], { sentAt: T + 10 }), pending: [['vm000001', remove({ settledAt: T })]], expect: ['settle vm000001'] },
  { race: 'deleted, yet a poll sent after the delete settled still lists it: a stranger', records: [],
    report: report([info()], { sentAt: T + 10 }), pending: [['vm000001', remove({ settledAt: T })]], expect: ['stranger vm000001', 'settle vm000001'] },
  { race: 'a delete interrupted (controller restarted): the record says deleting, the host has it: the report wins',
    records: [record({ state: 'deleting' })], report: report([info()]), expect: ['update vm000001 {"state":"running"}'] },

  // host back after down
  { race: 'host back after down: unknown VMs take the state the host reports, a vanished one is forgotten',
    records: [record({ state: 'unknown' }), record({ id: 'vm000002', name: 'web-2', state: 'unknown' })],
    report: report([info({ state: 'shutoff' })]), expect: ['update vm000001 {"state":"shutoff"}', 'forget vm000002'] },

  // unknown VM found
  { race: 'unknown VM found: a stranger, never a record', records: [], report: report([info({ id: 'zzz00001', name: 'found', owner: 'alice' })]),
    expect: ['stranger zzz00001'] },

  // VM reported by another host
  { race: 'a VM reported by another host: a stranger there, its record stays on its own host',
    records: [record({ hostId: 'pc-2' })], report: report([info({ state: 'shutoff' })], { hostId: 'pc-1' }), expect: ['stranger vm000001'] },
  { race: 'a host reporting another host\'s VM while that VM is being created: still a stranger',
    records: [record({ hostId: 'pc-2', state: 'creating' })], report: report([info()], { hostId: 'pc-1' }),
    pending: [['vm000001', create({ hostId: 'pc-2' })]], expect: ['stranger vm000001'] },
  { race: 'the same VM listed twice in one report: counted once', records: [record()], report: report([info(), info({ state: 'paused' })]), expect: [] },

  // create that never landed
  { race: 'a create that never landed (controller stopped mid-create): error, not forgotten', records: [record({ state: 'creating' })],
    report: report([]), expect: ['mark-error vm000001'] },
  { race: 'a create interrupted that did land: the host lists it creating, the record follows', records: [record({ state: 'creating' })],
    report: report([info({ state: 'creating' })]), expect: [] },
];

describe('VM reconciler', () => {
  describe('given a host report, should decide', () => {
    for (const row of rows) {
      it(row.race, () => {
        const changes = reconcile(index(row.records), row.report, new Map(row.pending ?? []), T + 1000);
        expect(summary(changes)).to.deep.equal(row.expect);
      });
    }
  });

  it('should never take owner, name or host from a report', () => {
    const changes = reconcile(index([record()]), report([info({ owner: 'mallory', name: 'renamed', state: 'paused' })]), new Map(), T);
    expect(changes).to.have.length(1);
    const c = changes[0]!;
    expect(c.kind).to.equal('update');
    if (c.kind === 'update') expect(Object.keys(c.patch)).to.deep.equal(['state']);
  });

  it('should give each stranger a reason that says why, and when it was seen', () => {
    const changes = reconcile(index([record({ hostId: 'pc-2' })]), report([info(), info({ id: 'zzz00001', name: 'found' })]), new Map(), T);
    const reasons = changes.flatMap((c) => (c.kind === 'stranger' ? [[c.vm.id, c.reason, c.seenAt]] : []));
    expect(reasons).to.deep.equal([
      ['vm000001', 'its id belongs to VM web-1 on host pc-2: a host cannot take another host\'s VM', new Date(T).toISOString()],
      ['zzz00001', 'the controller did not place it on this host', new Date(T).toISOString()],
    ]);
  });

  it('should keep an error record\'s own reason when the host reports it in error without one', () => {
    const changes = reconcile(index([record({ state: 'error', error: 'disk full' })]), report([info({ state: 'error' })]), new Map(), T);
    expect(changes).to.deep.equal([]);
  });

  it('given a host down, should make its VMs unknown except those in error or with a create or delete in progress', () => {
    const records = [
      record(), record({ id: 'vm000002', state: 'error' }), record({ id: 'vm000003', state: 'creating' }),
      record({ id: 'vm000004', state: 'deleting' }), record({ id: 'vm000005', state: 'shutoff' }), record({ id: 'vm000006', hostId: 'pc-2' }),
    ];
    expect(summary(hostDown(index(records), 'pc-1'))).to.deep.equal(['update vm000001 {"state":"unknown"}', 'update vm000005 {"state":"unknown"}']);
  });
});

describe('VmService applying host reports', () => {
  let store: Store;
  let registry: HostRegistry;
  let vms: VmService;
  const admin: User = { name: 'admin', role: 'admin', mustChangePassword: false, createdAt: '2025-01-01T00:00:00.000Z' };
  const alice: User = { ...admin, name: 'alice', role: 'student' };

  /** A poll answer of host pc-1 with these VMs (the rest of /status is not read here). */
  const poll = (vmList: VmInfo[], sentAt = Date.now()) =>
    registry.emit('status', registry.require('pc-1'), { hostId: 'pc-1', sampledAt: new Date().toISOString(), vmList } as unknown as HostStatus, sentAt);

  /** A record and Idempotency-Key row as a controller stopped in the middle of a create leaves them. */
  function interruptedCreate(key: string, body: unknown): void {
    store.run(`INSERT INTO vms (id, name, owner, template, host_id, state, vcpus, memory_mib, disk_gib, console, created_at, updated_at)
      VALUES ('lost00000001', 'lost', 'admin', 'alpine', 'pc-1', 'creating', 1, 256, 2, 'serial', ?, ?)`, new Date().toISOString(), new Date().toISOString());
    store.run('INSERT INTO idempotency (owner, key, request_hash, vm_id, status, created_at) VALUES (?, ?, ?, ?, 202, ?)',
      'admin', key, requestHash(VmRequest.parse(body)), 'lost00000001', new Date().toISOString());
  }

  function start(): void {
    vms = new VmService(store, registry, new Templates(registry, logger('templates'), new Catalog('/nonexistent/skyhost-unit', { log: logger('templates') })), { log: logger('vms'), users: new Users(store) });
  }

  before(() => configureLogging({ out: () => {} }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));
  beforeEach(async () => {
    store = new Store(':memory:');
    await new Users(store).create({ name: 'alice', password: 'alice-password' });
    registry = new HostRegistry(store, { clusterId: 'c1', redeemJoinToken: () => ({ ok: true }), log: logger('hosts') });
    registry.enroll({ hostId: 'pc-1', hostname: 'pc-1', agentUrl: 'http://127.0.0.1:9', agentKey: 'k'.repeat(20), version: '1', joinToken: 'shj_token_1' });
  });
  afterEach(() => store.close());

  it('given a create a stopped controller left behind, should make it an error at the first poll and let its retry make the VM anew', async () => {
    const body = { template: 'alpine', name: 'lost' };
    interruptedCreate('key-1', body);
    start();
    expect(vms.get(admin, 'lost00000001').state).to.equal('creating');
    poll([]);
    expect(vms.get(admin, 'lost00000001')).to.include({ state: 'error', error: 'the host never reported this VM (its creation was interrupted)' });
    // Another body with the key is still refused, and leaves the record.
    try {
      await vms.create(admin, { ...body, name: 'other' }, 'key-1');
      expect.fail('another body should be refused');
    } catch (err) {
      expect(err).to.include({ status: 422, code: 'idempotency_key_reused' });
    }
    expect(vms.records(admin).map((v) => v.id)).to.deep.equal(['lost00000001']);
    // The same request is placed anew (here no host's capacity is known, so none fits): not the dead record's failure.
    try {
      await vms.create(admin, body, 'key-1');
      expect.fail('no host fits here');
    } catch (err) {
      expect(err).to.include({ status: 503, code: 'no_host_fits' });
    }
    expect(vms.records(admin)).to.deep.equal([]);
    expect(store.all('SELECT key FROM idempotency')).to.deep.equal([]);
  });

  it('should keep a stranger once per host with when it was first seen, and let only an admin adopt it for a known user', () => {
    start();
    const found = info({ id: 'zzz00001', name: 'found', owner: 'alice' });
    poll([found]);
    const first = vms.strangers(admin, 'pc-1');
    expect(first.map((s) => [s.id, s.name, s.host])).to.deep.equal([['zzz00001', 'found', 'pc-1']]);
    poll([found]);
    expect(vms.strangers(admin)).to.deep.equal(first);
    expect(vms.records(admin)).to.deep.equal([]);
    expect(() => vms.strangers(alice)).to.throw('only an admin');
    expect(() => vms.adopt(alice, 'pc-1', 'zzz00001', { owner: 'alice' })).to.throw('only an admin');
    expect(() => vms.adopt(admin, 'pc-1', 'zzz00001', { owner: 'nobody' })).to.throw('owner: no user');
    expect(() => vms.adopt(admin, 'pc-1', 'zzz00002', { owner: 'alice' })).to.throw('not found');
    expect(vms.adopt(admin, 'pc-1', 'zzz00001', { owner: 'alice', name: 'kept' })).to.include({ id: 'zzz00001', name: 'kept', owner: 'alice', host: 'pc-1' });
    expect(vms.strangers(admin)).to.deep.equal([]);
    // from now on the host's reports keep it current, and a VM the host stops listing is gone
    poll([{ ...found, state: 'shutoff' }]);
    expect(vms.get(alice, 'zzz00001').state).to.equal('shutoff');
    poll([]);
    expect(() => vms.get(alice, 'zzz00001')).to.throw('not found');
    expect(vms.strangers(admin)).to.deep.equal([]);
  });
});
