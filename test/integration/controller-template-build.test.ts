// Building a template on the controller: POST /api/templates/build runs the real `skyhost template
// build debian-12` (dist/skyhost, mmdebstrap) as a subprocess and takes what it made into the catalog
// as an import is taken. The image comes from the machine's build cache, which the suite fills the
// way test/support/debian-image.ts does (minutes the first time on a machine, seconds after). Also:
// the refusals (unknown recipe, bad name, a taken name, the same recipe as another template), a second
// request joining the build under way, cancel leaving nothing behind, a build the command refuses, and
// the catalog's checks of a template made elsewhere (sha256, backing file, file names).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import { startController, type RunningController } from '../../server/controller.ts';
import { TemplateBuilds } from '../../server/templates/builds.ts';
import { Catalog } from '../../server/templates/catalog.ts';
import type { TemplateInfo } from '../../wire/api.ts';
import { buildDebianImage } from '../support/debian-image.ts';
import { jsonOrText, waitFor } from '../support/net.ts';

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe('controller: building a template into the catalog (real skyhost template build)', function () {
  // a cold debian-12 build (first run on a machine) takes minutes in before(); the tests then take seconds
  this.timeout(300_000); // a build from the cache, which a loaded machine makes several times slower
  let dir: string;
  let ctl: RunningController;

  async function api(method: string, p: string, body?: unknown) {
    const res = await fetch(ctl.url + p, {
      method, headers: { authorization: `Bearer ${ctl.services.secrets.adminToken}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: jsonOrText(await res.text()) };
  }

  /** What the templates folder holds besides finished templates (staging folders). */
  const leftovers = () => readdirSync(path.join(dir, 'templates')).filter((n) => n.startsWith('.'));

  before(async function () {
    this.timeout(40 * 60_000);
    await buildDebianImage();
    configureLogging({ out: () => {} });
    dir = mkdtempSync(path.join(tmpdir(), 'skyhost-build-'));
    ctl = await startController({ dataDir: dir, log: logger('controller'), port: 0, listen: '127.0.0.1', poll: false });
  });

  after(async () => {
    await ctl?.stop();
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('builds debian-12 through the API, its log followed line by line, into GET /api/templates with its sha256', async () => {
    const t0 = performance.now();
    const started = await api('POST', '/api/templates/build', { recipe: 'debian-12' });
    expect(started.status, JSON.stringify(started.json)).to.equal(202);
    expect(started.json.joined).to.equal(false);
    const id = started.json.build.id as string;
    const seen: { n: number; text: string }[] = [];
    let after = 0;
    const percents: number[] = [];
    const end = await waitFor('the build to end', async () => {
      const r = await api('GET', `/api/templates/builds/${id}?after=${after}`);
      expect(r.status).to.equal(200);
      // only lines after the one asked for, in order, none twice
      for (const l of r.json.lines as { n: number; text: string }[]) expect(l.n).to.be.greaterThan(after);
      seen.push(...r.json.lines);
      after = r.json.lastLine;
      if (r.json.percent !== undefined) percents.push(r.json.percent);
      return r.json.state === 'running' ? undefined : r.json;
    }, 240_000, 250);
    const seconds = Math.round((performance.now() - t0) / 100) / 10;
    process.stderr.write(`      debian-12 built through the controller in ${seconds} s (image from the cache)\n`);
    expect(end.state, JSON.stringify(end.error)).to.equal('done');
    expect(end.percent).to.equal(100);
    expect(percents).to.deep.equal([...percents].sort((a, b) => a - b)); // it only goes up
    expect(seen.map((l) => l.n)).to.deep.equal(seen.map((_, i) => i + 1));
    const text = seen.map((l) => l.text).join('\n');
    expect(text).to.include('skyhost template build debian-12');
    expect(text).to.match(/\[\d\/\d\] (image|hash)/);
    expect(text).to.include('is in the catalog');

    const listed = ((await api('GET', '/api/templates')).json.templates as Array<Record<string, unknown>>).find((t) => t.name === 'debian-12');
    expect(listed).to.include({ controller: true, kind: 'kernel', ssh: true, console: 'serial', needsKvm: false });
    const manifest = end.template as TemplateInfo;
    expect(manifest.files.map((f) => f.role).sort()).to.deep.equal(['disk', 'initrd', 'kernel']);
    const disk = manifest.files.find((f) => f.role === 'disk')!;
    expect(listed!.sha256).to.equal(disk.sha256);
    // the catalog's file is what its manifest says, and a standalone qcow2
    const file = path.join(dir, 'templates', 'debian-12', disk.file);
    expect(await sha256Of(file)).to.equal(disk.sha256);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', file])).stdout) as Record<string, unknown>;
    expect(info.format).to.equal('qcow2');
    expect(info).to.not.have.property('backing-filename');
    expect(leftovers()).to.deep.equal([]);
    // hosts pull it like any catalog template
    expect(ctl.services.templates.catalog.snapshot().map((t) => t.name)).to.include('debian-12');
  });

  it('refuses an unknown recipe, a bad name and a taken name, naming the field', async () => {
    const unknown = await api('POST', '/api/templates/build', { recipe: 'windows-11' });
    expect(unknown.status).to.equal(422);
    expect(unknown.json.error.details.fields[0].field).to.equal('recipe');
    expect(unknown.json.error.message).to.include('debian-12');
    const badName = await api('POST', '/api/templates/build', { recipe: 'debian-12', name: '../etc' });
    expect(badName.status).to.equal(422);
    expect(badName.json.error.details.fields[0].field).to.equal('name');
    const noRecipe = await api('POST', '/api/templates/build', { desktop: true });
    expect(noRecipe.status).to.equal(422);
    expect(noRecipe.json.error.details.fields[0].field).to.equal('recipe');
    const taken = await api('POST', '/api/templates/build', { recipe: 'debian-12' });
    expect(taken.status).to.equal(409);
    expect(taken.json.error.details.fields[0].field).to.equal('name');
    expect(leftovers()).to.deep.equal([]);
  });

  it('joins a second request for the same build, refuses the recipe as another template, and a cancel leaves nothing', async () => {
    const first = await api('POST', '/api/templates/build', { recipe: 'debian-12', name: 'deb-cancel' });
    expect(first.status, JSON.stringify(first.json)).to.equal(202);
    const id = first.json.build.id as string;
    const again = await api('POST', '/api/templates/build', { recipe: 'debian-12', name: 'deb-cancel' });
    expect(again.status).to.equal(202);
    expect(again.json).to.deep.include({ joined: true });
    expect(again.json.build.id).to.equal(id);
    const other = await api('POST', '/api/templates/build', { recipe: 'debian-12', name: 'deb-other' });
    expect(other.status).to.equal(409);
    expect(other.json.error.message).to.include('being built already');

    const cancelled = await api('DELETE', `/api/templates/builds/${id}`);
    expect(cancelled.status, JSON.stringify(cancelled.json)).to.equal(200);
    expect(cancelled.json.state).to.equal('failed');
    expect(cancelled.json.error.code).to.equal('cancelled');
    expect(leftovers()).to.deep.equal([]);
    expect(readdirSync(path.join(dir, 'templates'))).to.not.include('deb-cancel');
    // no process of the build is left (its whole group was killed)
    const ps = await run('pgrep', ['-f', 'template build debian-12 --as deb-cancel'], { okCodes: [1] });
    expect(ps.stdout).to.equal('');
    expect((await api('DELETE', `/api/templates/builds/${id}`)).status).to.equal(409);
    expect((await api('GET', '/api/templates/builds/no-such-build')).status).to.equal(404);
    const list = await api('GET', '/api/templates');
    expect(list.json.templates.map((t: { name: string }) => t.name)).to.not.include('deb-cancel');
    expect(list.json.builds.find((b: { id: string }) => b.id === id)).to.include({ state: 'failed' });
    expect(list.json.recipes).to.include('debian-12');
  });
});

describe('controller: a build the command refuses fails in its words, keeping nothing', function () {
  this.timeout(30_000);

  it('answers the command\'s own refusal as the build\'s error, with no stack and no staging folder left', async () => {
    const work = mkdtempSync(path.join(tmpdir(), 'skyhost-build-fail-'));
    configureLogging({ out: () => {} });
    try {
      const catalog = new Catalog(path.join(work, 'data'), { log: logger('test') });
      // a recipe the controller would take but the executable has not: its refusal ends the build
      const builds = new TemplateBuilds({ catalog, log: logger('test'), exists: () => false, recipes: () => ['debian-12', 'nosuch-1'] });
      const { build } = builds.start({ recipe: 'nosuch-1' }, 'tester');
      const end = await waitFor('the build to end', () => {
        const b = builds.get(build.id);
        return b.state === 'running' ? undefined : b;
      }, 25_000);
      expect(end.state).to.equal('failed');
      expect(end.error).to.deep.include({ code: 'build_failed' });
      expect(end.error!.message).to.match(/no recipe nosuch-1: choose debian-12.*nothing was kept/);
      expect(end.lines.map((l) => l.text).join('\n')).to.not.match(/\n\s+at /);
      expect(readdirSync(catalog.dir)).to.deep.equal([]);
      expect(await catalog.read('nosuch-1')).to.equal(undefined);
    } finally {
      configureLogging({ out: (line) => process.stderr.write(line + '\n') });
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('controller catalog: a template made elsewhere (kernel, initrd and disk) is checked as an import is', function () {
  this.timeout(30_000);
  let work: string;
  let catalog: Catalog;
  let made: TemplateInfo;
  const files: Record<string, Buffer> = { vmlinuz: Buffer.from('a kernel'), initrd: Buffer.from('an initrd') };

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'skyhost-made-'));
    catalog = new Catalog(path.join(work, 'data'), { log: logger('test') });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(work, 'disk.qcow2'), '16M']);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(work, 'disk.qcow2'), path.join(work, 'overlay.qcow2')]);
    for (const [f, b] of Object.entries(files)) writeFileSync(path.join(work, f), b);
    const entry = async (role: 'kernel' | 'initrd' | 'disk', file: string, from: string) => {
      const b = readFileSync(path.join(work, from));
      return { role, file, bytes: b.length, sha256: createHash('sha256').update(b).digest('hex') };
    };
    made = {
      name: 'made', kind: 'kernel', os: 'debian', minMemoryMiB: 256, console: 'serial', needsKvm: false, cmdline: 'console=ttyS0',
      files: [await entry('kernel', 'vmlinuz', 'vmlinuz'), await entry('initrd', 'initrd', 'initrd'), { ...(await entry('disk', 'disk.qcow2', 'disk.qcow2')), format: 'qcow2' }],
      createdAt: new Date().toISOString(),
    };
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  const copyFrom = (m: TemplateInfo, source: (file: string) => string) =>
    catalog.copyIn(m, async (f) => createReadStream(path.join(work, source(f.file))));
  const leftovers = () => readdirSync(catalog.dir).filter((n) => n.startsWith('.'));

  it('refuses a file whose sha256 is not its manifest\'s, and keeps nothing', async () => {
    const err = await copyFrom(made, (f) => (f === 'initrd' ? 'vmlinuz' : f)).then(() => undefined, (e: { status: number; code: string }) => e);
    expect(err).to.include({ status: 422, code: 'checksum_mismatch' });
    expect(leftovers()).to.deep.equal([]);
    expect(await catalog.read('made')).to.equal(undefined);
  });

  it('refuses a disk with a backing file, and a file name that leaves the folder', async () => {
    const overlay = readFileSync(path.join(work, 'overlay.qcow2'));
    const backed = { ...made, files: made.files.map((f) => (f.role === 'disk' ? { ...f, bytes: overlay.length, sha256: createHash('sha256').update(overlay).digest('hex') } : f)) };
    const err = await copyFrom(backed, (f) => (f === 'disk.qcow2' ? 'overlay.qcow2' : f)).then(() => undefined, (e: { status: number; code: string }) => e);
    expect(err).to.include({ status: 422, code: 'backing_file' });
    const escaping = { ...made, files: made.files.map((f) => (f.role === 'kernel' ? { ...f, file: '../vmlinuz' } : f)) };
    const err2 = await copyFrom(escaping, (f) => path.basename(f)).then(() => undefined, (e: { status: number; code: string }) => e);
    expect(err2).to.include({ status: 422, code: 'bad_template' });
    expect(leftovers()).to.deep.equal([]);
    expect(existsSync(path.join(work, 'data', 'vmlinuz'))).to.equal(false);
  });

  it('takes a kernel template whole: every file, its kind and command line', async () => {
    const t = await copyFrom(made, (f) => f);
    expect(t).to.include({ name: 'made', kind: 'kernel', cmdline: 'console=ttyS0' });
    expect(t.files.map((f) => `${f.role}:${f.file}`)).to.deep.equal(['kernel:vmlinuz', 'initrd:initrd', 'disk:disk.qcow2']);
    expect(t.files[2]).to.include({ format: 'qcow2', virtualBytes: 16 * 1024 * 1024 });
    expect((await catalog.file('made', 'vmlinuz')).entry.sha256).to.equal(made.files[0]!.sha256);
    expect(leftovers()).to.deep.equal([]);
  });
});
