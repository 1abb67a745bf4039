// The templates page's distribution actions over real HTTP (a real controller, one simulated host):
// "Copy to every host" and "Keep on every host" for admins only, an unknown template or a bad form
// answered in words with a 4xx, and the keep state shown in the list. The pulls themselves are in
// test/e2e/templates-page.test.ts (real agents).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { createServices } from '../../server/services.ts';
import { PageClient as Client } from '../support/page-client.ts';
import { SimAgent, simTemplate } from '../support/sim-agent.ts';

describe('templates page: copy to every host, keep on every host (HTTP)', function () {
  this.timeout(60_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-tpl-actions-'));
  const hx = { 'HX-Request': 'true' };
  let controller: RunningController;
  let host: SimAgent;
  let admin: Client;
  let alice: Client;

  before(async () => {
    configureLogging({ out: () => {} });
    const seed = await createServices({ dataDir: dir, log: logger('seed'), captureLogs: false });
    await seed.users.create({ name: 'alice', password: 'alice-pass-1' });
    await seed.stop();
    controller = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false });
    host = await new SimAgent({ hostId: 'lab-pc-1', hostname: 'lab-pc-1', templates: [simTemplate('room')] }).start();
    await host.enroll(controller.url, controller.services.secrets.joinToken);
    await controller.services.hosts.pollAll();
    admin = new Client(controller.url);
    alice = new Client(controller.url);
    await admin.firstAdminLogin(controller.services.secrets.adminToken, 'teacher-pass-1');
    await alice.login('alice', 'alice-pass-1');
  });

  after(async () => {
    await controller?.stop();
    await host?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows a student the list without the buttons, and refuses the actions to a student', async () => {
    const page = await alice.get('/templates');
    expect(page.status).to.equal(200);
    expect(page.text).to.contain('<b>room</b>');
    expect(page.text).to.not.contain('copy-to-all');
    expect(page.text).to.not.contain('on every host</button>');
    expect((await alice.post('/templates/room/copy-to-all', {}, hx)).status).to.equal(403);
    expect((await alice.post('/templates/room/keep', { keep: 'true' }, hx)).status).to.equal(403);
    expect(controller.services.distribute.kept()).to.deep.equal([]);
  });

  it('shows an admin both buttons; copying what every host has says so', async () => {
    const page = await admin.get('/templates');
    expect(page.text).to.contain('Copy room to every host</button>');
    expect(page.text).to.match(/aria-pressed="false">Keep room on every host<\/button>/);
    const copy = await admin.post('/templates/room/copy-to-all', {}, hx);
    expect(copy.status, copy.text).to.equal(200);
    expect(copy.text).to.contain('Every host that is up already has room or is pulling it: nothing to copy.');
    expect(copy.text).to.contain('id="template-list"');
  });

  it('answers an unknown template or a bad form in words with a 4xx, and changes nothing', async () => {
    for (const url of ['/templates/no-such/copy-to-all', '/templates/Bad!Name/copy-to-all']) {
      const res = await admin.post(url, {}, hx);
      expect(res.status, url).to.equal(404);
      expect(res.text).to.contain('There is no template called');
      expect(res.text).to.contain('nothing was done');
    }
    const keepUnknown = await admin.post('/templates/no-such/keep', { keep: 'true' }, hx);
    expect(keepUnknown.status).to.equal(404);
    expect(keepUnknown.text).to.contain('There is no template called &quot;no-such&quot;');
    const bad = await admin.post('/templates/room/keep', { keep: 'maybe' }, hx);
    expect(bad.status).to.equal(400);
    expect(bad.text).to.contain('the field keep must be true or false');
    expect(controller.services.distribute.kept()).to.deep.equal([]);
  });

  it('turns "keep on every host" on and off, and the list shows it', async () => {
    const on = await admin.post('/templates/room/keep', { keep: 'true' }, hx);
    expect(on.status, on.text).to.equal(200);
    expect(on.text).to.contain('room is now kept on every host');
    expect(on.text).to.contain('Kept on every host');
    expect(on.text).to.match(/name="keep" value="false"><button type="submit" class="secondary" aria-pressed="true">Keep room on every host/);
    expect(controller.services.distribute.kept()).to.deep.equal(['room']);
    expect((await alice.get('/templates')).text, 'a student sees the state').to.contain('Kept on every host');
    const off = await admin.post('/templates/room/keep', { keep: 'false' }, hx);
    expect(off.status, off.text).to.equal(200);
    expect(off.text).to.contain('room is no longer kept on every host');
    expect(off.text).to.not.contain('Kept on every host');
    expect(controller.services.distribute.kept()).to.deep.equal([]);
  });
});
