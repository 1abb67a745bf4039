// The pages' words: states a teacher understands, dates with their day, hosts told apart by name,
// and the event log in time order with every event naming its VM and user.
import { expect } from 'chai';
import { VmState } from '../../wire/vm.ts';
import { HostState } from '../../server/hosts/registry.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { Store } from '../../server/db/store.ts';
import { EventLog } from '../../server/events/events.ts';
import { hostLabels } from '../../server/hosts/names.ts';
import { eventRow } from '../../server/pages/dashboard.ts';
import { dayTime, KNOWN_STATES, stateWord } from '../../server/pages/words.ts';

describe('plain words on the pages (server/pages/words.ts)', () => {
  describe('given a state from the API', () => {
    it('should say starting for creating and for libvirt’s paused, stopped for shutoff', () => {
      expect(stateWord('creating')).to.equal('starting');
      expect(stateWord('paused')).to.equal('starting');
      expect(stateWord('shutoff')).to.equal('stopped');
      expect(stateWord('running')).to.equal('running');
      expect(stateWord('error')).to.equal('error');
      expect(stateWord('rebooting')).to.equal('rebooting');
    });

    it('should have a word for every VM and host state', () => {
      for (const s of [...VmState.options, ...HostState.options]) expect(KNOWN_STATES, s).to.include(s);
      expect(stateWord('pending')).to.equal('waiting for approval');
      expect(stateWord('down')).to.equal('not answering');
    });

    it('should pass an unknown word through and make nothing of a non-string', () => {
      expect(stateWord('hibernating')).to.equal('hibernating');
      expect(stateWord(undefined)).to.equal('');
    });
  });

  describe('given a time', () => {
    const local = (y: number, mo: number, d: number, h: number, mi: number, s = 0) => new Date(y, mo, d, h, mi, s).toISOString();

    it('should show the day, date, month and time: "Tue 2 Dec 14:05"', () => {
      expect(dayTime(local(2025, 11, 2, 14, 5), { now: new Date(2025, 11, 2) })).to.equal('Tue 2 Dec 14:05');
    });

    it('should show the day even for a time today, and seconds when asked', () => {
      const now = new Date();
      const t = new Date(now.getFullYear(), now.getMonth(), now.getDate(), 9, 3, 7);
      expect(dayTime(t.toISOString(), { seconds: true })).to.match(/^(Sun|Mon|Tue|Wed|Thu|Fri|Sat) \d{1,2} [A-Z][a-z]{2} 09:03:07$/);
    });

    it('should add the year for a time in another year', () => {
      expect(dayTime(local(2024, 11, 30, 9, 0), { now: new Date(2025, 0, 2) })).to.equal('Mon 30 Dec 2024 09:00');
    });

    it('should show nothing for what is not a time', () => {
      expect(dayTime('soon')).to.equal('');
      expect(dayTime(undefined)).to.equal('');
    });
  });
});

describe('host labels (server/hosts/names.ts)', () => {
  it('should keep a unique hostname as it is', () => {
    expect(hostLabels([{ id: 'aa11', hostname: 'lab-pc' }, { id: 'bb22', hostname: 'room-pc' }]).get('aa11')).to.equal('lab-pc');
  });

  it('should tell two hosts with the same hostname apart by a short part of their ids', () => {
    const labels = hostLabels([
      { id: '3f2a9b7c0d', hostname: 'lab-pc' }, { id: '9c01d4e5f6', hostname: 'lab-pc' }, { id: 'x', hostname: 'other' },
    ]);
    expect(labels.get('3f2a9b7c0d')).to.equal('lab-pc (3f2a)');
    expect(labels.get('9c01d4e5f6')).to.equal('lab-pc (9c01)');
    expect(labels.get('x')).to.equal('other');
  });

  it('should take more of the ids when their first four characters are the same', () => {
    const labels = hostLabels([{ id: 'abcd1111', hostname: 'pc' }, { id: 'abcd2222', hostname: 'PC' }]);
    expect(labels.get('abcd1111')).to.equal('pc (abcd1)');
    expect(labels.get('abcd2222')).to.equal('PC (abcd2)');
  });

  it('should show a display name instead of the hostname, and a renamed namesake needs no suffix', () => {
    const labels = hostLabels([{ id: '3f2a9b', hostname: 'lab-pc', displayName: 'PC 7' }, { id: '9c01d4', hostname: 'lab-pc' }]);
    expect(labels.get('3f2a9b')).to.equal('PC 7');
    expect(labels.get('9c01d4')).to.equal('lab-pc');
  });
});

describe('the event log (server/events/events.ts)', () => {
  let store: Store;
  let events: EventLog;
  beforeEach(() => {
    store = new Store(':memory:');
    events = new EventLog(store);
    events.names.vm = (id) => (id === 'vm1' ? { name: 'web-1', owner: 'student1', hostId: 'host-a' } : undefined);
  });
  afterEach(() => {
    events.close();
    store.close();
  });

  it('should keep newest-first order and time order the same when a host reports a record late', () => {
    events.record({ source: 'vms', msg: 'controller first' });
    const late = new Date(Date.now() - 5000).toISOString();
    events.record({ source: 'agent', msg: 'agent record from 5 s ago', time: late });
    const listed = events.list({ limit: 10 });
    expect(listed.map((e) => e.msg)).to.deep.equal(['agent record from 5 s ago', 'controller first']);
    expect(Date.parse(listed[0]!.time)).to.be.at.least(Date.parse(listed[1]!.time));
    expect(listed[0]!.data?.reportedTime).to.equal(late);
  });

  it('should never put an event in the future (a host whose clock is ahead)', () => {
    const ahead = new Date(Date.now() + 3_600_000).toISOString();
    const e = events.record({ source: 'agent', msg: 'from the future', time: ahead });
    expect(Date.parse(e.time)).to.be.at.most(Date.now());
  });

  it('should name the VM, its owner and its host in an agent’s "created VM" record', () => {
    const e = events.record({ source: 'agent', msg: 'created VM', data: { vm: 'vm1', ms: 120 } });
    expect(e.msg).to.equal('created VM web-1');
    expect(e.vmId).to.equal('vm1');
    expect(e.hostId).to.equal('host-a');
    expect(e.data).to.include({ vmName: 'web-1', user: 'student1' });
    const row = eventRow(e, new Map([['host-a', 'lab-pc (3f2a)']]));
    expect(row).to.include({ vm: 'web-1', user: 'student1', hostname: 'lab-pc (3f2a)' });
  });

  it('should name the host of the agent running in this process (skyhost up), whose lines carry none', () => {
    configureLogging({ out: () => {} });
    const stop = events.captureLogs();
    try {
      events.localHostId = 'local-host';
      logger('agent').info('created the VM network', { network: 'sky-1' });
      logger('vms').info('a controller line');
    } finally {
      stop();
      configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    }
    const [controllerLine, agentLine] = events.list({ limit: 2 });
    expect(agentLine).to.include({ msg: 'created the VM network', hostId: 'local-host' });
    expect(controllerLine!.hostId).to.equal(undefined);
  });

  it('should keep the name a record carries for a VM that is gone', () => {
    const e = events.record({ source: 'agent', msg: 'deleted VM', vmId: 'gone1', data: { name: 'old-vm' } });
    expect(e.msg).to.equal('deleted VM old-vm');
    expect(e.data?.vmName).to.equal('old-vm');
  });
});
