// An enrolled agent's log records reach the controller's event log, marked with its host id; while
// the controller is unreachable or refuses the key they wait in a bounded queue.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { startEventForwarder, type EventForwarder } from '../../agent/eventlog.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';

describe('agent events in the controller\'s event log', function () {
  this.timeout(30_000);
  let dir: string;
  let ctl: RunningController;
  let forwarder: EventForwarder | undefined;
  const key = 'events-agent-key-0123456789abcdef';
  const hostId = `events-${process.pid}`;

  before(async () => {
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-events-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false, captureLogs: false });
    const enrolled = await fetch(`${ctl.url}/api/enroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ hostId, hostname: 'lab-pc-events', agentUrl: 'http://127.0.0.1:9', agentKey: key, joinToken: ctl.services.secrets.joinToken, version: 'test' }),
    });
    expect(enrolled.status).to.equal(200);
  });

  afterEach(async () => {
    await forwarder?.stop();
    forwarder = undefined;
  });

  after(async () => {
    await ctl.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  const agentEvents = () => ctl.services.events.list({ source: 'agent', limit: 50 }).filter((e) => e.hostId === hostId);

  it('should forward info and above with the host id, and not debug', async () => {
    forwarder = startEventForwarder({ key, log: logger('agent'), controllerUrl: () => ctl.url, intervalMs: 60_000 });
    const log = logger('agent');
    log.debug('a debug line stays local');
    log.info('created VM web-1', { vmId: 'abcdef123456' });
    log.warn('disk almost full');
    await forwarder.flush();
    const got = agentEvents().map((e) => [e.level, e.msg, e.vmId ?? null]);
    expect(got).to.deep.include.members([['info', 'created VM web-1', 'abcdef123456'], ['warn', 'disk almost full', null]]);
    expect(got.map((g) => g[1])).to.not.include('a debug line stays local');
  });

  it('should keep records while the controller refuses the key, at most the queue size, and say how many were dropped', async () => {
    let url: string | undefined;
    forwarder = startEventForwarder({ key: 'not-the-agent-key-0123456789', log: logger('agent'), controllerUrl: () => url, intervalMs: 60_000, maxQueued: 3 });
    const log = logger('agent');
    for (let i = 0; i < 5; i++) log.info(`queued ${i}`);
    await forwarder.flush(); // no controller yet: nothing sent, nothing lost beyond the bound
    url = ctl.url;
    await forwarder.flush(); // refused (wrong key): kept
    expect(agentEvents().map((e) => e.msg)).to.not.include('queued 4');
    await forwarder.stop();
    forwarder = startEventForwarder({ key, log: logger('agent'), controllerUrl: () => ctl.url, intervalMs: 60_000, maxQueued: 3 });
    for (let i = 0; i < 5; i++) log.info(`later ${i}`);
    await forwarder.flush();
    const msgs = agentEvents().map((e) => e.msg);
    expect(msgs).to.include.members(['later 2', 'later 3', 'later 4']);
    expect(msgs).to.not.include('later 0');
    expect(msgs.some((m) => /^2 log records were dropped/.test(m))).to.equal(true);
  });
});
