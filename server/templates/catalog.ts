// The controller's template catalog: DATA/templates/NAME/ with a manifest.json of the same format as a
// host's store (wire TemplateInfo), the source of truth hosts pull from. In `skyhost up` the local agent
// uses the same data folder, so a template built or imported on the controller's machine is in the
// catalog at once. Files arrive in a hidden staging folder (.incoming-NAME-XXXX) and appear only by one
// rename once checked (sha256, format, no backing file); a failure removes the staging folder. Besides
// uploads and imports of one file, a template made elsewhere arrives with its manifest (`addMade`,
// `copyIn`: a build by builds.ts, a VM saved as a template on a host, a kernel template's three files).
// Its own code rather than agent/templates.ts's TemplateStore: the controller may not import the agent,
// and it streams uploads and downloads straight into staging instead of copying a local file.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { TemplateImportRequest, TemplateInfo, TemplateName } from '../../wire/api.ts';
import { BadRequest, Conflict, DiskFull, InvalidField, NotFound, PayloadTooLarge, SkyError, Unavailable, toSkyError } from '../../base/errors.ts';
import { run } from '../../base/exec.ts';
import { renameIntoPlace } from '../../base/files.ts';
import type { Logger } from '../../base/log.ts';
import { compareCodeUnits } from '../../base/order.ts';

type FileEntry = TemplateInfo['files'][number];

/** What describes a template besides its file (`TemplateImportRequest` without url and sha256). */
export type TemplateMeta = Omit<TemplateImportRequest, 'url' | 'sha256'>;

/** An import by URL, as `GET /api/templates` shows it while it runs and for a while after. */
export const ImportJob = z.object({
  name: z.string(),
  url: z.string(),
  state: z.enum(['downloading', 'verifying', 'done', 'failed']),
  /** Bytes downloaded so far. */
  bytes: z.number().int(),
  /** The file's size when the server said it (Content-Length or Content-Range). */
  totalBytes: z.number().int().optional(),
  /** 0-100 when the size is known. */
  percent: z.number().int().optional(),
  /** Connections made: more than 1 when a broken download was resumed with a Range request. */
  attempts: z.number().int(),
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
});
export type ImportJob = z.infer<typeof ImportJob>;

export interface CatalogOptions {
  log: Logger;
  /** Largest template file accepted, upload or download (default 64 GiB). */
  maxBytes?: number;
  /** Connections per download before it fails (default 6); each one after the first resumes with Range. */
  downloadAttempts?: number;
  /** Wait before a resumed connection, doubled each time (default 500 ms). */
  retryDelayMs?: number;
}

/** How long a finished import stays listed (so the page shows its result). */
const KEEP_FINISHED_MS = 10 * 60_000;

export class Catalog {
  readonly dir: string;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private cache: TemplateInfo[] = [];
  private readonly jobs = new Map<string, { view: ImportJob; done: Promise<TemplateInfo> }>();
  private readonly stopping = new AbortController();
  private swept = false;
  /** sha256s of the files being downloaded now (one download per file: they share a `.partial-SHA256` folder). */
  private readonly partials = new Set<string>();
  /** Folders whose bad manifest was logged once already (the folder is read every poll interval). */
  private readonly warned = new Set<string>();

  constructor(dataDir: string, opts: CatalogOptions) {
    this.dir = path.join(dataDir, 'templates');
    this.log = opts.log;
    this.maxBytes = opts.maxBytes ?? 64 * 1024 ** 3;
    this.attempts = Math.max(1, opts.downloadAttempts ?? 6);
    this.retryDelayMs = opts.retryDelayMs ?? 500;
  }

  /** The templates as of the last `refresh()` (the controller's pages and scheduler read this). */
  snapshot(): TemplateInfo[] {
    return this.cache;
  }

  /** Reads every manifest again (a template built or imported by the CLI into this folder appears). */
  async refresh(): Promise<TemplateInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      names = []; // no template was ever added here
    }
    if (!this.swept) {
      this.swept = true;
      await this.sweep(names);
    }
    const out: TemplateInfo[] = [];
    for (const n of names.sort()) {
      const t = await this.read(n);
      if (t) out.push(t);
    }
    this.cache = out;
    return out;
  }

  /** A template's manifest from disk, or undefined (a bad name, a folder without a valid manifest, a hidden staging folder). */
  async read(name: string): Promise<TemplateInfo | undefined> {
    if (!TemplateName.safeParse(name).success) return undefined;
    let text: string;
    try {
      text = await readFile(path.join(this.dir, name, 'manifest.json'), 'utf8');
    } catch {
      return undefined; // no manifest: not a template (a stray folder)
    }
    try {
      const parsed = TemplateInfo.safeParse(JSON.parse(text));
      if (parsed.success && parsed.data.name === name) return parsed.data;
    } catch {
      // not JSON: reported below like any other bad manifest
    }
    if (!this.warned.has(name)) this.log.warn(`templates/${name}/manifest.json is not a valid manifest: the folder is ignored`);
    this.warned.add(name);
    return undefined;
  }

  /**
   * A file of a complete template, for serving: its manifest entry and absolute path. Only files named
   * in a manifest of a finished template are served (never a staging folder, never another path).
   */
  async file(name: string, file: string): Promise<{ template: TemplateInfo; entry: FileEntry; path: string }> {
    const template = await this.read(name);
    if (!template) throw new NotFound(`template ${JSON.stringify(name.slice(0, 64))} in the controller's catalog`);
    const entry = template.files.find((f) => f.file === file);
    if (!entry || entry.file.includes('/') || entry.file.startsWith('.')) throw new NotFound(`file ${JSON.stringify(file.slice(0, 64))} of template ${name}`);
    return { template, entry, path: path.join(this.dir, name, entry.file) };
  }

  /** Imports running or finished in the last minutes, newest first. */
  imports(): ImportJob[] {
    const now = Date.now();
    for (const [k, j] of this.jobs) {
      if (j.view.finishedAt && now - Date.parse(j.view.finishedAt) > KEEP_FINISHED_MS) this.jobs.delete(k);
    }
    return [...this.jobs.values()].map((j) => ({ ...j.view })).sort((a, b) => compareCodeUnits(b.startedAt, a.startedAt));
  }

  /** An upload streamed from `body`; `sha256` (optional) is checked. Answers the new template. */
  async upload(meta: TemplateMeta, body: Readable, opts: { sha256?: string; declaredBytes?: number } = {}): Promise<TemplateInfo> {
    const name = await this.checkNew(meta.name);
    if (opts.declaredBytes !== undefined && opts.declaredBytes > this.maxBytes) throw new PayloadTooLarge(`${this.maxBytes} bytes`);
    return this.staged(name, async (staging) => {
      const part = path.join(staging, 'image.part');
      const got = await writeHashing(body, part, this.maxBytes);
      if (got.bytes === 0) throw new BadRequest('the upload is empty');
      return this.finish(part, meta, got.sha256, opts.sha256);
    });
  }

  /**
   * A template made elsewhere with its manifest (one or more files: a kernel template's kernel, initrd
   * and disk): `fill` puts every file the manifest it answers names into the staging folder, under
   * that name (and may answer the sha256s it computed while writing them). Each file is then checked
   * as an import's is: its sha256 and size against the manifest, a disk's format and no backing file,
   * an ISO's volume descriptor. Nothing is kept when `fill` or a check fails.
   */
  async addMade(name: string, fill: (staging: string) => Promise<{ manifest: TemplateInfo; sha256s?: Map<string, string> }>): Promise<TemplateInfo> {
    await this.checkNew(name);
    return this.staged(name, async (staging) => {
      const made = await fill(staging);
      return this.finishMade(staging, name, made.manifest, made.sha256s ?? new Map());
    });
  }

  /** Streams each file of `manifest` from `open` into the catalog (a template a host made), checked as `addMade` does. */
  async copyIn(manifest: TemplateInfo, open: (entry: FileEntry) => Promise<Readable>): Promise<TemplateInfo> {
    return this.addMade(manifest.name, async (staging) => {
      const sha256s = new Map<string, string>();
      for (const entry of manifest.files) {
        safeFileName(entry.file);
        const got = await writeHashing(await open(entry), path.join(staging, entry.file), this.maxBytes);
        sha256s.set(entry.file, got.sha256);
      }
      return { manifest, sha256s };
    });
  }

  /**
   * Starts an import by URL in the background and answers its job at once; `done` settles when it
   * ends. A broken connection is resumed with `Range: bytes=N-` (up to `downloadAttempts` times).
   */
  startImport(meta: TemplateMeta & { url: string; sha256: string }): { job: ImportJob; done: Promise<TemplateInfo> } {
    const name = TemplateName.safeParse(meta.name);
    if (!name.success) throw new InvalidField('name', name.error.issues[0]!.message);
    if (this.cache.some((t) => t.name === meta.name)) throw new Conflict(`template ${meta.name} already exists in the controller's catalog (delete it first)`);
    const running = this.jobs.get(meta.name);
    if (running && !running.view.finishedAt) throw new Conflict(`template ${meta.name} is being imported already (${running.view.url})`);
    const sha256 = meta.sha256.toLowerCase();
    if (this.partials.has(sha256)) throw new Conflict(`the same file (sha256 ${sha256.slice(0, 12)}...) is being imported already`);
    this.partials.add(sha256);
    const view: ImportJob = { name: meta.name, url: meta.url, state: 'downloading', bytes: 0, attempts: 0, startedAt: new Date().toISOString() };
    const partial = path.join(this.dir, `.partial-${sha256}`);
    const done = (async () => {
      try {
        await this.checkNew(meta.name);
        await mkdir(partial, { recursive: true, mode: 0o755 });
        const t = await this.staged(meta.name, async (staging) => {
          const part = path.join(staging, 'image.part');
          await this.download(meta.url, path.join(partial, 'image.part'), view);
          await rename(path.join(partial, 'image.part'), part);
          view.state = 'verifying';
          return this.finish(part, meta, await sha256File(part), sha256);
        });
        await rm(partial, { recursive: true, force: true });
        return t;
      } catch (err) {
        // Stopped with the controller: what came so far waits for the same import (same sha256) to resume it.
        if (this.stopping.signal.aborted && view.state === 'downloading') {
          this.log.info(`import of template ${meta.name} stopped at ${view.bytes} bytes: kept for a resume in ${partial}`);
        } else {
          await rm(partial, { recursive: true, force: true });
        }
        throw err;
      } finally {
        this.partials.delete(sha256);
      }
    })();
    this.jobs.set(meta.name, { view, done });
    done.then(() => {
      view.state = 'done';
      view.finishedAt = new Date().toISOString();
      this.log.info(`template ${meta.name} imported into the catalog from ${meta.url} (${view.bytes} bytes, ${view.attempts} connection(s))`);
    }, (err: unknown) => {
      const sky = toSkyError(err);
      view.state = 'failed';
      view.error = { code: sky.code, message: sky.message };
      view.finishedAt = new Date().toISOString();
      this.log.warn(`import of template ${meta.name} from ${meta.url} failed: ${sky.message}`);
    });
    return { job: view, done };
  }

  /** Stops the imports under way (at shutdown); each removes its staging folder. */
  async close(): Promise<void> {
    this.stopping.abort(new Error('the controller is stopping'));
    await Promise.allSettled([...this.jobs.values()].map((j) => j.done));
  }

  /** Removes a template from the catalog (the caller checked that no VM uses it). */
  async remove(name: string): Promise<void> {
    if (!(await this.read(name))) throw new NotFound(`template ${JSON.stringify(name.slice(0, 64))} in the controller's catalog`);
    // Out of sight in one rename: a host reading a file keeps its open descriptor, nobody opens a new one.
    const trash = path.join(this.dir, `.rm-${name}-${randomBytes(4).toString('hex')}`);
    await rename(path.join(this.dir, name), trash);
    await rm(trash, { recursive: true, force: true });
    await this.refresh();
  }

  /**
   * At the first read: staging folders a killed controller left, and downloads stopped over a week ago
   * (never a host's or the CLI's own, `.upload-*`, `.import-*`). A newer `.partial-SHA256` waits for
   * the same import to resume it.
   */
  private async sweep(names: string[]): Promise<void> {
    const weekAgo = Date.now() - 7 * 24 * 3600_000;
    for (const n of names) {
      const stale = n.startsWith('.incoming-') || (n.startsWith('.partial-') && (await stat(path.join(this.dir, n))).mtimeMs < weekAgo);
      if (!stale) continue;
      await rm(path.join(this.dir, n), { recursive: true, force: true });
      this.log.info(`removed ${n} from the templates folder: an import the controller did not finish`);
    }
  }

  /** A valid name no template and no running import has. */
  private async checkNew(name: string): Promise<string> {
    const parsed = TemplateName.safeParse(name);
    if (!parsed.success) throw new InvalidField('name', parsed.error.issues[0]!.message);
    if (await this.read(name)) throw new Conflict(`template ${name} already exists in the controller's catalog (delete it first)`);
    return name;
  }

  /** Runs `fill` with a fresh staging folder; the folder is removed when `fill` fails. */
  private async staged(name: string, fill: (staging: string) => Promise<TemplateInfo>): Promise<TemplateInfo> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const staging = path.join(this.dir, `.incoming-${name}-${randomBytes(4).toString('hex')}`);
    await mkdir(staging, { mode: 0o755 });
    try {
      const t = await fill(staging);
      await this.refresh();
      return t;
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  /** Checks the staged image (sha256, format, no backing or data file), writes the manifest, renames the folder into place. */
  private async finish(part: string, meta: TemplateMeta, sha256: string, expected?: string): Promise<TemplateInfo> {
    if (expected && expected.toLowerCase() !== sha256) {
      throw new SkyError(422, 'checksum_mismatch', `sha256 of the image is ${sha256}, expected ${expected.toLowerCase()}: nothing was kept`,
        { fields: [{ field: 'sha256', message: 'does not match the file' }] });
    }
    const staging = path.dirname(part);
    let entry: FileEntry;
    if (meta.kind === 'iso') {
      await probeIso(part);
      entry = { role: 'iso', file: 'installer.iso', bytes: 0, sha256 };
    } else {
      const info = await probeImage(part);
      entry = { role: 'disk', file: `disk.${info.format}`, bytes: 0, sha256, format: info.format, virtualBytes: info.virtualBytes };
    }
    const target = path.join(staging, entry.file);
    await rename(part, target);
    await chmod(target, 0o644);
    entry.bytes = (await stat(target)).size;
    const manifest = TemplateInfo.parse({
      name: meta.name,
      kind: meta.kind ?? 'disk',
      os: meta.os ?? 'linux',
      ...(meta.description ? { description: meta.description } : {}),
      minMemoryMiB: meta.minMemoryMiB ?? 128,
      // an installer is used on its screen
      console: meta.console ?? (meta.kind === 'iso' ? 'vnc' : 'serial'),
      needsKvm: meta.needsKvm ?? false,
      ...(meta.ssh ? { ssh: true } : {}),
      files: [entry],
      createdAt: new Date().toISOString(),
    });
    await renameIntoPlace(staging, path.join(this.dir, meta.name), manifest, `template ${meta.name} already exists in the controller's catalog`);
    return manifest;
  }

  /** Checks the files `made` names in `staging` against it, writes the manifest, renames the folder into place. */
  private async finishMade(staging: string, name: string, made: TemplateInfo, sha256s: Map<string, string>): Promise<TemplateInfo> {
    const refuse = (field: string, message: string, code = 'bad_template') => new SkyError(422, code, `${message}: nothing was kept`, { fields: [{ field, message }] });
    if (made.name !== name) throw refuse('name', `the manifest names template ${made.name}, not ${name}`);
    const roles = made.files.map((f) => f.role);
    const wanted = made.kind === 'kernel' ? roles.includes('kernel') : roles.length === 1 && roles[0] === made.kind;
    if (!wanted || new Set(made.files.map((f) => f.file)).size !== made.files.length) {
      throw refuse('files', `a ${made.kind} template cannot have the files ${made.files.map((f) => `${f.role} ${f.file}`).join(', ') || '(none)'}`);
    }
    const files: FileEntry[] = [];
    for (const entry of made.files) {
      const file = path.join(staging, safeFileName(entry.file));
      const sha256 = sha256s.get(entry.file) ?? await sha256File(file);
      if (sha256 !== entry.sha256) {
        throw new SkyError(422, 'checksum_mismatch', `sha256 of ${entry.file} is ${sha256}, its manifest says ${entry.sha256}: nothing was kept`,
          { fields: [{ field: 'sha256', message: `${entry.file} does not match its manifest` }] });
      }
      const bytes = (await stat(file)).size;
      if (bytes !== entry.bytes) throw refuse('files', `${entry.file} is ${bytes} bytes, its manifest says ${entry.bytes}`);
      const checked: FileEntry = { role: entry.role, file: entry.file, bytes, sha256 };
      if (entry.role === 'disk') {
        const info = await probeImage(file);
        Object.assign(checked, { format: info.format, virtualBytes: info.virtualBytes });
      } else if (entry.role === 'iso') {
        await probeIso(file);
      }
      await chmod(file, 0o644);
      files.push(checked);
    }
    const manifest = TemplateInfo.parse({ ...made, files, createdAt: new Date().toISOString() });
    await renameIntoPlace(staging, path.join(this.dir, name), manifest, `template ${name} already exists in the controller's catalog`);
    return manifest;
  }

  /** Downloads `url` to `file`, resuming a broken connection with a Range request; updates `job`. */
  private async download(url: string, file: string, job: ImportJob): Promise<void> {
    let lastError = '';
    // A resumption asks for the rest only if the file is still the one begun (If-Range): else the server sends it whole.
    // What a stopped controller downloaded of this file is resumed too, with what it knew (source.json).
    const sourceFile = path.join(path.dirname(file), 'source.json');
    const before = await readSource(sourceFile, url);
    let validator = before.validator;
    if (before.totalBytes !== undefined) job.totalBytes = before.totalBytes;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      if (this.stopping.signal.aborted) throw new Unavailable('the controller stopped during the download; importing the same file again resumes it');
      job.attempts = attempt;
      const have = attempt === 1 && !before.resumable ? 0 : await sizeOf(file);
      job.bytes = have;
      let res: Response;
      try {
        res = await fetch(url, { redirect: 'follow', headers: have > 0 ? { range: `bytes=${have}-`, ...(validator ? { 'if-range': validator } : {}) } : {}, signal: AbortSignal.any([this.stopping.signal, AbortSignal.timeout(3_600_000)]) });
      } catch (err) {
        lastError = (err as Error).message;
        await this.pause(attempt);
        continue; // the server may be back in a moment: the next attempt resumes
      }
      if (res.status === 416 && have > 0 && have === job.totalBytes) {
        // the connection broke after the last byte: the file is whole
        void res.body?.cancel();
        job.percent = 100;
        return;
      }
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
        void res.body?.cancel();
        throw new SkyError(422, 'download_failed', `could not download ${url}: HTTP ${res.status}`, { fields: [{ field: 'url', message: `HTTP ${res.status}` }] });
      }
      if (res.status !== 200 && res.status !== 206) {
        void res.body?.cancel();
        lastError = `HTTP ${res.status}`;
        await this.pause(attempt);
        continue;
      }
      // 206 continues where we are; 200 (a server without Range) starts the file over.
      let start = 0;
      if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== have) {
          void res.body?.cancel();
          throw new SkyError(422, 'download_failed', `${url} answered a range request with the wrong part (${res.headers.get('content-range') ?? 'no Content-Range'})`);
        }
        if (m[3] !== '*' && job.totalBytes !== undefined && Number(m[3]) !== job.totalBytes) {
          void res.body?.cancel();
          throw new SkyError(422, 'download_failed', `${url} changed during the download (${job.totalBytes} bytes, now ${m[3]}): nothing was kept`);
        }
        start = have;
        if (m[3] !== '*') job.totalBytes = Number(m[3]);
      } else {
        const etag = res.headers.get('etag');
        validator = etag && !etag.startsWith('W/') ? etag : res.headers.get('last-modified') ?? undefined;
        const length = res.headers.get('content-length');
        if (length && /^\d+$/.test(length)) job.totalBytes = Number(length);
        else delete job.totalBytes;
        delete job.percent;
        await writeFile(sourceFile, JSON.stringify({ url, ...(validator ? { validator } : {}), ...(job.totalBytes !== undefined ? { totalBytes: job.totalBytes } : {}) }) + '\n');
      }
      if (job.totalBytes !== undefined && job.totalBytes > this.maxBytes) {
        void res.body?.cancel();
        throw new PayloadTooLarge(`${this.maxBytes} bytes`);
      }
      job.bytes = start;
      try {
        await pipeline(
          Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
          new Transform({
            transform: (chunk: Buffer, _enc, cb) => {
              job.bytes += chunk.length;
              if (job.totalBytes) job.percent = Math.min(100, Math.floor((job.bytes * 100) / job.totalBytes));
              if (job.bytes > this.maxBytes) return cb(new PayloadTooLarge(`${this.maxBytes} bytes`));
              cb(null, chunk);
            },
          }),
          createWriteStream(file, { flags: start > 0 ? 'r+' : 'w', start, mode: 0o644 }),
        );
      } catch (err) {
        if (err instanceof SkyError) throw err;
        // a full disk is no broken connection: trying again would not help
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new DiskFull('the templates folder');
        lastError = (err as Error).message;
        this.log.info(`download of ${url} broke off at ${job.bytes} bytes (${lastError}): resuming`);
        await this.pause(attempt);
        continue;
      }
      if (job.totalBytes !== undefined && job.bytes < job.totalBytes) {
        lastError = `the connection ended after ${job.bytes} of ${job.totalBytes} bytes`;
        await this.pause(attempt);
        continue;
      }
      if (job.bytes === 0) throw new SkyError(422, 'download_failed', `${url} is empty`, { fields: [{ field: 'url', message: 'the file is empty' }] });
      job.percent = 100;
      return;
    }
    throw new SkyError(422, 'download_truncated', `could not download all of ${url}: ${lastError} (${this.attempts} attempts, ${job.bytes}${job.totalBytes !== undefined ? ` of ${job.totalBytes}` : ''} bytes): nothing was kept`,
      { fields: [{ field: 'url', message: lastError }] });
  }

  private pause(attempt: number): Promise<void> {
    if (attempt >= this.attempts || this.stopping.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, this.retryDelayMs * 2 ** (attempt - 1)).unref();
      this.stopping.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }
}

/** The format and virtual size of a disk image; refuses anything but a standalone qcow2 or raw image. */
export async function probeImage(file: string): Promise<{ format: 'qcow2' | 'raw'; virtualBytes: number }> {
  let j: { format?: string; 'virtual-size'?: number; 'backing-filename'?: string; 'format-specific'?: { data?: { 'data-file'?: string } } };
  try {
    j = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', file])).stdout) as typeof j;
  } catch (err) {
    throw new SkyError(422, 'unsupported_format', `the file is not a disk image qemu-img can read (${(err as Error).message.split('\n')[0]}): nothing was kept`,
      { fields: [{ field: 'disk', message: 'not a readable disk image' }] });
  }
  if (j.format !== 'qcow2' && j.format !== 'raw') {
    throw new SkyError(422, 'unsupported_format', `the disk image is ${j.format ?? 'of an unknown format'}; only qcow2 and raw are accepted (convert it: qemu-img convert -O qcow2 IN OUT): nothing was kept`,
      { fields: [{ field: 'disk', message: `format ${j.format ?? 'unknown'}` }] });
  }
  if (j['backing-filename'] || j['format-specific']?.data?.['data-file']) {
    const what = j['backing-filename'] ? `a backing file (${j['backing-filename']})` : `an external data file (${j['format-specific']!.data!['data-file']!})`;
    throw new SkyError(422, 'backing_file', `the disk image has ${what}: give a standalone image (qemu-img convert -O qcow2 IN OUT): nothing was kept`,
      { fields: [{ field: 'disk', message: 'has a backing file' }] });
  }
  return { format: j.format, virtualBytes: j['virtual-size'] ?? 0 };
}

/** Refuses a file that is not an ISO 9660 image (raw to qemu-img, `CD001` at byte 32769). */
export async function probeIso(file: string): Promise<void> {
  const refuse = (why: string) => new SkyError(422, 'unsupported_format', `an iso template must be an ISO 9660 image (${why}): nothing was kept`,
    { fields: [{ field: 'kind', message: 'not an ISO 9660 image' }] });
  const head = Buffer.alloc(5);
  const fh = await open(file, 'r');
  try {
    const { bytesRead } = await fh.read(head, 0, 5, 0x8001);
    if (bytesRead < 5 || head.toString('latin1') !== 'CD001') throw refuse('no CD001 volume descriptor at byte 32769');
  } finally {
    await fh.close();
  }
  const format = (JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', file])).stdout) as { format?: string }).format;
  if (format !== 'raw') throw refuse(`qemu-img reads it as ${format ?? 'unknown'}`);
}

/** A file name of a manifest that stays in its folder (no path, not hidden, not the manifest itself). */
function safeFileName(file: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(file) || file === 'manifest.json') {
    throw new SkyError(422, 'bad_template', `the file name ${JSON.stringify(file.slice(0, 64))} is not allowed in a template: nothing was kept`, { fields: [{ field: 'files', message: 'a bad file name' }] });
  }
  return file;
}

/** Streams `body` to `file` while hashing it, refusing more than `limit` bytes. */
async function writeHashing(body: Readable, file: string, limit: number): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    await pipeline(body, new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        if (bytes > limit) return cb(new PayloadTooLarge(`${limit} bytes`));
        hash.update(chunk);
        cb(null, chunk);
      },
    }), createWriteStream(file, { mode: 0o644 }));
  } catch (err) {
    if (err instanceof SkyError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new DiskFull('the templates folder');
    throw new BadRequest(`the upload broke off after ${bytes} bytes (${(err as Error).message}): nothing was kept`, undefined, 'upload_interrupted');
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** What a stopped download of `url` left in source.json: resumable when it was the same URL and had a validator. */
async function readSource(file: string, url: string): Promise<{ resumable: boolean; validator?: string; totalBytes?: number }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return { resumable: false }; // a first download of this file
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { resumable: false }; // cut short while written: start over
  }
  const parsed = z.object({ url: z.string(), validator: z.string().optional(), totalBytes: z.number().int().optional() }).safeParse(json);
  if (!parsed.success || parsed.data.url !== url || !parsed.data.validator) return { resumable: false };
  return { resumable: true, validator: parsed.data.validator, ...(parsed.data.totalBytes !== undefined ? { totalBytes: parsed.data.totalBytes } : {}) };
}

/** A file's size, 0 when it is not there (a first connection that failed before any byte). */
async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/** sha256 of a file, streamed. */
async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
