// The hosts page's room controls over real HTTP against the real controller and simulated hosts: the
// wake-up schedule (a bad one is 422 with the words kept, a good one shows its next run), Wake all
// (nothing to wake names the hosts whose MAC is unknown), Put to sleep (the host shows asleep and a
// Wake button, or a note when its MAC is unknown), and a drained host's VM shutdown time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { PageClient } from '../support/page-client.ts';
import { SimAgent } from '../support/sim-agent.ts';

describe('hosts page: a room that sleeps', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-room-pages-'));
  let controller: RunningController;
  let admin: PageClient;
  const agents: SimAgent[] = [];
  const hx = { 'HX-Request': 'true' };

  before(async () => {
    configureLogging({ out: () => {} });
    controller = await startController({ dataDir: dir, log: logger('test'), port: 0, listen: '127.0.0.1', poll: false });
    admin = new PageClient(controller.url);
    await admin.firstAdminLogin(controller.services.secrets.adminToken, 'room-admin-pass-1');
    for (const [name, mac] of [['lab-01', '52:54:00:00:00:01'], ['lab-02', undefined]] as const) {
      const a = await new SimAgent({ hostname: name, hostId: name }).start();
      agents.push(a);
      controller.services.hosts.enroll({ hostId: a.hostId, hostname: name, agentUrl: a.url, agentKey: a.key, version: 'test',
        joinToken: controller.services.secrets.joinToken, ...(mac ? { mac } : {}) });
    }
    await controller.services.hosts.pollAll();
  });

  after(async () => {
    await controller?.stop();
    for (const a of agents) await a.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('should show Wake all and the schedule, refuse a schedule it cannot read keeping the words, and take a good one', async () => {
    const page = await admin.get('/hosts');
    expect(page.text).to.contain('id="room-power"').and.contain('Wake all').and.contain('id="wake-schedule"');
    const bad = await admin.post('/hosts/wake-schedule', { schedule: 'every morning' }, hx);
    expect(bad.status).to.equal(422);
    expect(bad.text).to.contain('value="every morning"').and.contain('aria-invalid="true"').and.contain('id="wake-schedule-error"').and.contain('weekdays 07:30');
    expect(controller.services.room.schedule().schedule).to.equal(null);
    const good = await admin.post('/hosts/wake-schedule', { schedule: 'weekdays 07:30' }, hx);
    expect(good.status).to.equal(200);
    expect(good.text).to.contain('The room wakes weekdays 07:30.').and.contain('Next: ');
    expect(controller.services.room.schedule()).to.deep.include({ schedule: 'weekdays 07:30', cron: '30 7 * * 1-5' });
    const off = await admin.post('/hosts/wake-schedule', { schedule: '' }, hx);
    expect(off.text).to.contain('no longer woken on a schedule');
  });

  it('should put hosts to sleep from the page, show them asleep with Wake or a note, and say what Wake all skipped', async () => {
    expect((await admin.post('/hosts/lab-02/sleep', {}, hx)).status).to.equal(303); // back to the list, swapped in place
    const list = (await admin.get('/hosts', hx)).text;
    const row = (id: string) => list.slice(list.indexOf(`id="host-${id}"`), list.indexOf('</tr>', list.indexOf(`id="host-${id}"`)));
    expect(row('lab-02')).to.contain('asleep').and.contain('MAC address not known yet').and.not.contain('>Wake<');
    expect(row('lab-01')).to.contain('Put to sleep');
    const woken = await admin.post('/hosts/wake-all', {}, hx);
    expect(woken.text).to.contain('No host is asleep with a known MAC address').and.contain('MAC unknown: lab-02');
    expect(controller.services.events.list({ limit: 50 }).map((e) => e.msg)).to.include('host lab-02: sleep by admin');
    await new Promise((r) => setTimeout(r, 1100)); // the dashboard's figures are computed at most once a second
    expect((await admin.get('/')).text).to.match(/<b>1<\/b><span>hosts asleep<\/span>/);
    // The simulated hosts listen on 127.0.0.1, as `skyhost up`'s own agent does: the room's sleep leaves them on, and says why.
    const sleepAll = await admin.post('/hosts/sleep-all', {}, hx);
    expect(sleepAll.text).to.contain('No host was put to sleep.').and.contain('lab-01 (the controller&#x27;s own machine)');
    const evening = await admin.post('/hosts/sleep-schedule', { schedule: 'weekdays 18:00' }, hx);
    expect(evening.text).to.contain('The room goes to sleep weekdays 18:00.').and.contain('id="sleep-schedule" name="schedule" type="text" maxlength="100" value="weekdays 18:00"');
  });

  it('should set a drained host\'s VM shutdown time from its row', async () => {
    controller.services.hosts.drain('lab-01');
    expect((await admin.post('/hosts/lab-01/shutdown-vms-at', { at: '2026-06-30T16:00' }, hx)).status).to.equal(303);
    expect(controller.services.hosts.get('lab-01').shutdownVmsAt).to.equal(new Date('2026-06-30T16:00').toISOString());
    expect((await admin.get('/hosts', hx)).text).to.contain('value="2026-06-30T16:00"');
  });

  it('should let the admin mark a host that is down as asleep (switched off by hand), which stops the alarm', async () => {
    await agents[0]!.stop();
    for (let i = 0; i < 3; i++) await controller.services.hosts.pollOne(controller.services.hosts.require('lab-01'));
    expect(controller.services.hosts.get('lab-01').state).to.equal('down');
    const list = (await admin.get('/hosts', hx)).text;
    const row = list.slice(list.indexOf('id="host-lab-01"'), list.indexOf('</tr>', list.indexOf('id="host-lab-01"')));
    expect(row).to.contain('Mark asleep').and.contain('>Wake<');
    expect((await admin.post('/hosts/lab-01/sleep', {}, hx)).status).to.equal(303);
    expect(controller.services.hosts.get('lab-01').state).to.equal('asleep');
  });
});
