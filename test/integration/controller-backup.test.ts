// Controller backup and restore (server/db/backup.ts) with the real controller in-process, real
// SQLite and HTTP, simulated agents (test/support/sim-agent.ts), and the CLI as `skyhost` runs it:
// a backup taken while 20 clients write, restored on a fresh data folder, brings the cluster back
// (records, hosts polled with their keys, VMs reconciled, agents re-attaching by cluster id).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { expect } from 'chai';
import cron from 'node-cron';
import { startDiscovery, type ControllerBrowser } from '../../agent/discovery/index.ts';
import { saveRemembered } from '../../agent/discovery/remembered.ts';
import { COMMANDS } from '../../appliance/commands.ts';
import { runCli } from '../../base/cli.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { lanAddress } from '../../base/net.ts';
import { VERSION } from '../../base/version.ts';
import { nightlyBackup, nightlyName } from '../../server/db/backup.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { SimAgent } from '../support/sim-agent.ts';

const WRITERS = 20;
const DAY = 24 * 3_600_000;

/** Every file under `dir` with its sha256 (folders as "dir"): to show that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, e.name);
      const rel = path.relative(dir, full);
      if (e.isDirectory()) {
        out[rel] = 'dir';
        walk(full);
      } else out[rel] = createHash('sha256').update(readFileSync(full)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

describe('controller backup and restore', function () {
  this.timeout(120_000);
  let tmp: string;
  let emptyConfig: string;
  const controllers: RunningController[] = [];
  const agents: SimAgent[] = [];

  /** `skyhost ARGV...` in this process, with no environment and an empty config file. */
  async function skyhost(...argv: string[]) {
    let out = '';
    let err = '';
    const code = await runCli(COMMANDS, [...argv, '--config', emptyConfig], { env: {}, stdout: (s) => (out += s), stderr: (s) => (err += s) });
    return { code, out, err };
  }

  async function start(dataDir: string, extra: { poll?: boolean; backupKeepDays?: number } = {}): Promise<RunningController> {
    // 20 clients write at once on what may be a loaded machine: a VM create answered later than
    // answerWithinMs is a 202 the writers count as a failure, and a slow poll a missed one
    const ctl = await startController({
      dataDir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: extra.poll ?? false, pollTimeoutMs: 5000, answerWithinMs: 10_000,
      ...(extra.backupKeepDays !== undefined ? { backupKeepDays: extra.backupKeepDays } : {}),
    });
    controllers.push(ctl);
    return ctl;
  }

  async function call(ctl: RunningController, method: string, p: string, body?: unknown) {
    const res = await fetch(ctl.url + p, {
      method,
      headers: { authorization: `Bearer ${ctl.services.secrets.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

  before(() => {
    configureLogging({ out: () => {} });
    tmp = mkdtempSync(path.join(tmpdir(), 'skyhost-backup-test-'));
    emptyConfig = path.join(tmp, 'config.yaml');
    writeFileSync(emptyConfig, '');
  });

  after(async () => {
    for (const c of controllers) await c.stop();
    for (const a of agents) await a.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(tmp, { recursive: true, force: true });
  });

  describe('a backup while 20 clients write, restored on a fresh data folder', () => {
    const dirA = () => path.join(tmp, 'a');
    const dirB = () => path.join(tmp, 'b');
    const file = () => path.join(tmp, 'cluster.tar.gz');
    let a: RunningController;
    let b: RunningController;
    const acked: { kind: 'user' | 'vm'; id: string; at: number }[] = [];
    let backupStartedAt = 0;
    let backupEndedAt = 0;
    let kept: { id: string; host: string };
    let gone: { id: string; host: string };

    before(async () => {
      a = await start(dirA());
      for (let i = 0; i < 3; i++) {
        const agent = await new SimAgent({ hostname: `pc-${i}`, threads: 32, memoryMiB: 32768, hypervisor: 'tcg' }).start();
        agents.push(agent);
        expect((await agent.enroll(a.url, a.services.secrets.joinToken)).state).to.equal('ready');
      }
      await a.services.hosts.pollAll();
      kept = (await call(a, 'POST', '/api/vms', { template: 'alpine', name: 'kept', vcpus: 1, memoryMiB: 128 })).json;
      gone = (await call(a, 'POST', '/api/vms', { template: 'alpine', name: 'gone', vcpus: 1, memoryMiB: 128 })).json;
      expect(kept.host).to.be.a('string');
      expect(gone.host).to.be.a('string');
    });

    it('takes a consistent backup while the controller answers 20 writing clients', async () => {
      let writing = true;
      const failures: string[] = [];
      const writer = async (w: number) => {
        // writes until told to stop: 40 each once ran out before the backup process ended on a loaded
        // machine, and then nothing was written after it (the cap only bounds a run gone wrong)
        for (let n = 0; writing && n < 400; n++) {
          const vm = w % 2 === 1 && n < 12;
          const r = vm
            ? await call(a, 'POST', '/api/vms', { template: 'alpine', name: `w${w}-${n}`, vcpus: 1, memoryMiB: 128 })
            : await call(a, 'POST', '/api/users', { username: `w${w}-u${n}`, password: `w${w}-password-${n}` });
          if (r.status !== 201) failures.push(`${r.status} ${JSON.stringify(r.json)}`);
          else acked.push({ kind: vm ? 'vm' : 'user', id: vm ? r.json.id : `w${w}-u${n}`, at: Date.now() });
        }
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      while (acked.length < 40) await new Promise((r) => setTimeout(r, 10));
      backupStartedAt = Date.now();
      const made = await skyhost('controller', 'backup', file(), '--data', dirA());
      backupEndedAt = Date.now();
      expect(made, made.err).to.include({ code: 0, err: '' });
      expect(made.out).to.contain(`backup of cluster ${a.services.clusterId} written to ${file()}`);
      const ackedAfter = () => acked.filter((x) => x.at > backupEndedAt).length;
      while (ackedAfter() < 20 && acked.length < WRITERS * 400) await new Promise((r) => setTimeout(r, 10));
      writing = false;
      await Promise.all(writers);
      expect(failures).to.deep.equal([]);
      expect(ackedAfter(), 'the controller kept answering after the backup').to.be.greaterThan(0);
      expect(statSync(file()).mode & 0o777).to.equal(0o600);
      // an existing file is replaced only with --force
      const again = await skyhost('controller', 'backup', file(), '--data', dirA());
      expect(again.code).to.equal(2);
      expect(again.err).to.equal(`skyhost: ${file()} exists: give another name, or --force to replace it\n`);
      expect((await skyhost('controller', 'backup', '--data', dirA())).code).to.equal(2);
      const nowhere = await skyhost('controller', 'backup', path.join(tmp, 'no-such-folder', 'x.tar.gz'), '--data', dirA());
      expect(nowhere.code).to.equal(2);
      expect(nowhere.err).to.contain(`the folder ${path.join(tmp, 'no-such-folder')} does not exist`);
      expect((await skyhost('controller', 'backup', path.join(tmp, 'x.tar.gz'), '--data', path.join(tmp, 'empty'))).err)
        .to.equal(`skyhost: no controller database at ${path.join(tmp, 'empty', 'skyhost.db')} (is --data right?)\n`);
    });

    it('restores onto a fresh data folder: every record acknowledged before the backup, intact, same cluster and secrets', async () => {
      // after the backup: one VM stops, one disappears from its host
      expect((await call(a, 'POST', `/api/vms/${kept.id}/poweroff`)).json.state).to.equal('shutoff');
      await agents.find((x) => x.hostId === gone.host)!.dropVm(gone.id);
      const clusterId = a.services.clusterId;
      const secrets = a.services.secrets;
      const fingerprint = a.services.tls.fingerprint;
      await a.stop();

      const restored = await skyhost('controller', 'restore', file(), '--data', dirB());
      expect(restored, restored.err).to.include({ code: 0, err: '' });
      expect(restored.out).to.contain(`restored cluster ${clusterId} from ${file()}`);
      expect(restored.out).not.to.contain('replaced'); // a fresh folder: nothing was moved aside
      const db = new DatabaseSync(path.join(dirB(), 'skyhost.db'), { readOnly: true });
      try {
        expect(db.prepare('PRAGMA integrity_check').all()).to.deep.equal([{ integrity_check: 'ok' }]);
      } finally {
        db.close();
      }
      expect(statSync(path.join(dirB(), 'skyhost.db')).mode & 0o777).to.equal(0o600);
      expect(statSync(path.join(dirB(), 'secrets')).mode & 0o777).to.equal(0o700);

      b = await start(dirB());
      expect(b.services.clusterId).to.equal(clusterId);
      expect(b.services.secrets.adminToken).to.equal(secrets.adminToken);
      expect(b.services.secrets.joinToken).to.equal(secrets.joinToken);
      expect(b.services.tls.fingerprint, 'the certificate agents pinned').to.equal(fingerprint);
      const before = acked.filter((x) => x.at < backupStartedAt);
      expect(before.length).to.be.at.least(40);
      const users = new Set((await call(b, 'GET', '/api/users')).json.users.map((u: { name: string }) => u.name));
      const vms = new Set(b.services.vms.list(b.services.system).map((v) => v.id));
      const lost = before.filter((x) => !(x.kind === 'user' ? users.has(x.id) : vms.has(x.id)));
      expect(lost, 'records acknowledged before the backup started').to.deep.equal([]);
      expect(vms.has(kept.id) && vms.has(gone.id)).to.equal(true);
    });

    it('the restored controller polls the enrolled agents ready with their keys, and their VM lists win', async () => {
      const polled = agents.map((x) => x.hits.get('GET /status') ?? 0);
      await b.services.hosts.pollAll();
      expect(agents.map((x) => (x.hits.get('GET /status') ?? 0) - polled[agents.indexOf(x)]!)).to.deep.equal([1, 1, 1]);
      for (const agent of agents) {
        const host = (await call(b, 'GET', `/api/hosts/${agent.hostId}`)).json;
        expect(host).to.include({ state: 'ready', url: agent.url, missedPolls: 0 });
      }
      // states come from the agents: the VM stopped after the backup is shutoff, the one gone is forgotten
      expect((await call(b, 'GET', `/api/vms/${kept.id}`)).json.state).to.equal('shutoff');
      expect((await call(b, 'GET', `/api/vms/${gone.id}`)).status).to.equal(404);
      const records = b.services.vms.list(b.services.system);
      for (const vm of records) {
        const agent = agents.find((x) => x.hostId === vm.host)!;
        expect(agent.vms.has(vm.id), `${vm.name} on ${vm.host}`).to.equal(true);
      }
      // VMs made after the backup are on their hosts, but the restored controller did not place them: strangers
      const later = acked.filter((x) => x.kind === 'vm' && x.at > backupEndedAt).map((x) => x.id);
      const strangers = new Set(b.services.vms.strangers(b.services.system).map((s) => s.id));
      expect(later.filter((id) => !strangers.has(id))).to.deep.equal([]);
    });

    it('an agent finds the restored controller at its new address by the cluster id and re-enrolls with its key alone', async () => {
      const agent = agents[0]!;
      const agentData = path.join(tmp, 'agent-0');
      // the agent enrolled with controller A, which is gone; B (the restored one) and C (another cluster) advertise
      saveRemembered(agentData, { clusterId: b.services.clusterId, url: 'http://127.0.0.1:9', agentUrl: agent.url, enrolledAt: new Date().toISOString() });
      const c = await start(path.join(tmp, 'c'));
      const ads = [
        { name: 'SkyHost controller other', clusterId: c.services.clusterId, url: c.url },
        { name: 'SkyHost controller restored', clusterId: b.services.clusterId, url: b.url },
      ];
      const browser: ControllerBrowser = {
        lanIp: lanAddress()?.ip, since: Date.now() - 60_000, onChange: undefined, ads: () => ads, query: () => {}, stop: async () => {},
      };
      const discovery = startDiscovery({
        hostId: agent.hostId, hostname: agent.hostname, agentKey: agent.key, version: VERSION, agentPort: 0, agentUrl: agent.url,
        dataDir: agentData, browser, log: logger('discovery'), tickMs: 50,
      });
      try {
        const view = await discovery.enrolled(10_000);
        expect(view).to.include({ state: 'ready', url: b.url, clusterId: b.services.clusterId });
      } finally {
        await discovery.stop();
      }
      expect(JSON.parse(readFileSync(path.join(agentData, 'enrollment.json'), 'utf8')).url).to.equal(b.url);
      expect(b.services.hosts.record(agent.hostId)).to.include({ agentKey: agent.key, agentUrl: agent.url, state: 'ready' });
      expect(c.services.hosts.list()).to.deep.equal([]);
    });
  });

  describe('restore refuses', () => {
    let dir: string;
    let good: string;

    before(async () => {
      dir = path.join(tmp, 'stopped');
      const ctl = await start(dir);
      await call(ctl, 'POST', '/api/users', { username: 'carol', password: 'carol-password-1' });
      await ctl.stop();
      good = path.join(tmp, 'stopped.tar.gz');
      // a stopped controller is backed up too (no WAL, nobody holding the file)
      expect((await skyhost('controller', 'backup', good, '--data', dir)).code).to.equal(0);
    });

    it('a file that is not a backup, with exit 2 and one line naming the file; nothing changes', async () => {
      const text = path.join(tmp, 'notes.txt');
      writeFileSync(text, 'hello\n');
      const plainDb = path.join(tmp, 'plain.tar.gz');
      writeFileSync(plainDb, readFileSync(path.join(dir, 'skyhost.db')));
      const cut = path.join(tmp, 'cut.tar.gz');
      writeFileSync(cut, readFileSync(good));
      truncateSync(cut, Math.floor(statSync(good).size / 2));
      const was = snapshot(dir);
      for (const [bad, why] of [[text, 'not a gzip file'], [plainDb, 'not a gzip file'], [cut, 'ends early'], [path.join(tmp, 'missing.tar.gz'), 'cannot read']] as const) {
        const r = await skyhost('controller', 'restore', bad, '--data', dir);
        expect(r.code, r.err).to.equal(2);
        expect(r.err.split('\n')).to.have.length(2); // one line and its newline
        expect(r.err).to.match(/^skyhost: /).and.contain(bad).and.contain(why);
      }
      expect(snapshot(dir)).to.deep.equal(was);
      // and on a data folder that did not exist, none is left behind
      const none = path.join(tmp, 'never');
      expect((await skyhost('controller', 'restore', text, '--data', none)).code).to.equal(2);
      expect(existsSync(none)).to.equal(false);
    });

    it('a data folder a controller is running on; nothing changes', async () => {
      const running = path.join(tmp, 'running');
      const ctl = await start(running);
      try {
        const secretsBefore = snapshot(path.join(running, 'secrets'));
        const ino = statSync(path.join(running, 'skyhost.db')).ino;
        const r = await skyhost('controller', 'restore', good, '--data', running);
        expect(r.code).to.equal(2);
        expect(r.err).to.equal(`skyhost: a controller is running on ${running} (${path.join(running, 'skyhost.db')} is open): stop it, then restore\n`);
        expect(snapshot(path.join(running, 'secrets'))).to.deep.equal(secretsBefore);
        expect(statSync(path.join(running, 'skyhost.db')).ino).to.equal(ino);
        expect(readdirSync(running).filter((n) => n.startsWith('before-restore-') || n.startsWith('.restore-'))).to.deep.equal([]);
        expect((await call(ctl, 'GET', '/api/users')).status).to.equal(200);
      } finally {
        await ctl.stop();
      }
    });

    it('over a stopped controller, keeps the database and secrets it replaces aside', async () => {
      const other = path.join(tmp, 'other');
      const ctl = await start(other);
      const otherCluster = ctl.services.clusterId;
      await ctl.stop();
      const was = snapshot(other);
      const r = await skyhost('controller', 'restore', good, '--data', other);
      expect(r.code, r.err).to.equal(0);
      const aside = readdirSync(other).filter((n) => n.startsWith('before-restore-'));
      expect(aside).to.have.length(1);
      expect(r.out).to.contain(`the database and secrets it replaced are in ${path.join(other, aside[0]!)}`);
      const kept = snapshot(path.join(other, aside[0]!));
      for (const f of ['skyhost.db', 'secrets/cluster-id', 'secrets/admin-token', 'secrets/join-token']) expect(kept[f], f).to.equal(was[f]);
      expect(readFileSync(path.join(other, 'secrets', 'cluster-id'), 'utf8').trim()).to.not.equal(otherCluster);
      const back = await start(other);
      expect((await call(back, 'GET', '/api/users')).json.users.map((u: { name: string }) => u.name)).to.include('carol');
      await back.stop();
    });
  });

  describe('the nightly backup', () => {
    it('runs from the controller\'s cron job at 03:00 into DATA/backups', async () => {
      const dir = path.join(tmp, 'nightly-cron');
      const ctl = await start(dir, { poll: true, backupKeepDays: 2 });
      const task = [...cron.getTasks().values()].find((t) => t.name === 'nightly backup');
      expect(task?.getPattern()).to.equal('0 3 * * *');
      await task!.execute();
      const files = readdirSync(path.join(dir, 'backups'));
      expect(files).to.have.length(1);
      expect(files[0]).to.match(/^skyhost-backup-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z\.tar\.gz$/);
      expect(statSync(path.join(dir, 'backups')).mode & 0o777).to.equal(0o700);
      await ctl.stop();
      expect([...cron.getTasks().values()].find((t) => t.name === 'nightly backup')).to.equal(undefined);
    });

    it('keeps N days of backups and deletes older ones, never another file', async () => {
      const dir = path.join(tmp, 'nightly');
      const ctl = await start(dir);
      const folder = path.join(dir, 'backups');
      mkdirSync(folder, { recursive: true });
      writeFileSync(path.join(folder, 'notes.txt'), 'mine');
      writeFileSync(path.join(folder, 'skyhost-backup-before-upgrade.tar.gz'), 'mine too');
      const start0 = Date.parse('2030-03-01T03:00:00Z');
      const stale = path.join(folder, `${nightlyName(new Date(start0))}.partial-99999`);
      writeFileSync(stale, '');
      utimesSync(stale, new Date(start0 - 2 * DAY), new Date(start0 - 2 * DAY));
      const log = logger('backup');
      for (let day = 0; day < 6; day++) {
        // a run a few seconds early or late keeps the same count
        const now = new Date(start0 + day * DAY + (day % 2 ? -7_000 : 5_000));
        const r = await nightlyBackup({ dataDir: dir, keepDays: 3, log, now });
        expect(r.file).to.equal(path.join(folder, nightlyName(now)));
        const nightly = readdirSync(folder).filter((n) => /^skyhost-backup-\d/.test(n) && !n.includes('.partial-')).sort();
        expect(nightly, `day ${day}`).to.have.length(Math.min(day + 1, 3));
        expect(nightly.at(-1)).to.equal(nightlyName(now));
      }
      expect(readdirSync(folder).sort()).to.deep.equal([
        'notes.txt', 'skyhost-backup-2030-03-04T02-59-53Z.tar.gz', 'skyhost-backup-2030-03-05T03-00-05Z.tar.gz',
        'skyhost-backup-2030-03-06T02-59-53Z.tar.gz', 'skyhost-backup-before-upgrade.tar.gz',
      ]);
      await ctl.stop();
      // the newest one restores
      const r = await skyhost('controller', 'restore', path.join(folder, 'skyhost-backup-2030-03-06T02-59-53Z.tar.gz'), '--data', path.join(tmp, 'nightly-restored'));
      expect(r.code, r.err).to.equal(0);
    });
  });
});
