// What a crash leaves in an agent's templates folder is swept when the agent starts: staging folders
// of pulls, uploads, imports, builds and removals go (with a log line each), while a real template,
// a pull the next one can resume, a CLI import that may be running now and the controller's own
// folders stay. Real files, a real TemplateStore; the last test starts a real agent (libvirt).
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { TemplatePuller } from '../../agent/pull.ts';
import { startAgent } from '../../agent/service.ts';
import { TemplateStore } from '../../agent/templates.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { ensureDaemons } from '../../host/hostsetup.ts';

const DAY = 24 * 3600_000;

/** A folder in `dir` with one file (and a pull's marker when `marker` is given), last changed `ageMs` ago. */
function leftover(dir: string, name: string, ageMs = 0, marker?: string): void {
  const p = path.join(dir, name);
  mkdirSync(p, { recursive: true });
  writeFileSync(path.join(p, 'disk.raw'), 'half a disk');
  if (marker !== undefined) writeFileSync(path.join(p, '.pull.json'), marker);
  const when = new Date(Date.now() - ageMs);
  utimesSync(p, when, when);
}

describe('leftovers in an agent\'s templates folder', function () {
  this.timeout(120_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-leftovers-'));
  const lines: string[] = [];

  before(() => configureLogging({ out: (line) => lines.push(line) }));
  after(() => {
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('are removed before the first pull; a real template, a resumable pull and young CLI work stay', async () => {
    const dataDir = path.join(work, 'store');
    const store = new TemplateStore(dataDir);
    const image = path.join(work, 'image.raw');
    writeFileSync(image, randomBytes(1024 * 1024));
    await store.import({ name: 'lesson', disk: image, os: 'test' });
    const dir = store.dir;
    leftover(dir, '.pull-crashed'); // no marker: nothing can resume it
    leftover(dir, '.pull-lesson', 0, '{}'); // its template is installed
    leftover(dir, '.pull-stale', 8 * DAY, '{}');
    leftover(dir, '.pull-resume', 0, JSON.stringify({ name: 'resume', files: [] }));
    leftover(dir, '.rm-gone-0a1b2c3d');
    leftover(dir, '.upload-0a1b2c3d4e5f');
    leftover(dir, '.import-old-0a1b2c3d', 2 * DAY);
    leftover(dir, '.build-debian-12-x1y2z3', 2 * DAY);
    leftover(dir, '.import-now-0a1b2c3d'); // a CLI import may be copying right now
    leftover(dir, '.incoming-upload-0a1b2c3d'); // the controller's, under `skyhost up`
    lines.length = 0;

    const puller = new TemplatePuller({ store, log: logger('agent') });
    await puller.swept;

    expect(readdirSync(dir).sort()).to.deep.equal(['.import-now-0a1b2c3d', '.incoming-upload-0a1b2c3d', '.pull-resume', 'lesson']);
    expect((await store.list()).map((t) => t.name)).to.deep.equal(['lesson']);
    const said = lines.join('\n');
    for (const gone of ['.pull-crashed', '.pull-lesson', '.pull-stale', '.rm-gone-0a1b2c3d', '.upload-0a1b2c3d4e5f', '.import-old-0a1b2c3d', '.build-debian-12-x1y2z3']) {
      expect(said).to.contain(`removed ${gone} from the templates folder`);
    }
    expect(said).to.contain('kept .pull-resume in the templates folder: the next pull of resume continues from it');
    // a second run finds nothing more to remove
    expect(await store.sweep(logger('agent'))).to.deep.equal([]);
  });

  it('are removed when a real agent starts', async () => {
    await ensureDaemons();
    chmodSync(work, 0o711);
    const dataDir = path.join(work, 'agent');
    const store = new TemplateStore(dataDir);
    const image = path.join(work, 'image2.raw');
    writeFileSync(image, randomBytes(1024 * 1024));
    await store.import({ name: 'kept', disk: image, os: 'test' });
    leftover(store.dir, '.pull-crashed');
    leftover(store.dir, '.build-tiny-abc123', 2 * DAY);
    const hostId = `leftovers-${randomBytes(3).toString('hex')}`;
    const agent = await startAgent({
      config: { ...defaults({ isRoot: true, cwd: work }), dataDir, listen: '127.0.0.1', sshPortRange: '43620-43629' },
      log: logger('agent'), hostId, port: 0, listen: '127.0.0.1', key: 'leftovers-key-0123456789abcdef',
    });
    try {
      // the sweep runs as the agent starts (before any pull is taken); wait for both leftovers to go, as
      // long as a loaded machine takes (5 s of polls was a quiet machine's figure)
      for (const end = Date.now() + 30_000; Date.now() < end && readdirSync(store.dir).length > 1;) await new Promise((r) => setTimeout(r, 100));
      expect(readdirSync(store.dir).sort()).to.deep.equal(['kept']);
      expect((await agent.templates.list()).map((t) => t.name)).to.deep.equal(['kept']);
    } finally {
      await agent.stop();
      await removeNetwork(networkName(hostId));
    }
  });
});
