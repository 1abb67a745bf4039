// Pulling a template from other machines, and serving template files to peers (docs/design.md#agent-api).
//
//   POST /templates/pull {manifest, sources}          one pull per template: a second request joins it
//     └─ per file: GET <source>/files/FILE  Range: bytes=<what we have>-   ─▶ DATA/templates/.pull-NAME/FILE
//          a source that fails or stalls: the next one continues at the same offset (resumable)
//          sha256 + size checked; a mismatch drops the file and the sources that served it
//     └─ disk image checked (qcow2/raw, no backing file), manifest written, folder renamed into place
//
//   GET /templates/NAME/files/FILE (Range)   an installed file, or one still arriving: a range past what
//     has arrived waits for the bytes (up to RELAY_WAIT_MS without progress), so pullers can chain; a
//     template neither here nor being pulled waits up to PULL_START_WAIT_MS for its pull to start (the
//     controller starts a chain's pulls together, so a host may be asked before its own request came).
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rm, stat, statfs, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { Request, Response } from 'express';
import { Conflict, fromZod, NotFound, SkyError, toSkyError } from '../base/errors.ts';
import { PinnedAgent } from '../base/tls.ts';
import type { Logger } from '../base/log.ts';
import { PullRequest, type PullProgress, type PullSource, type TemplateInfo } from '../wire/api.ts';
import { imageInfo } from './disks.ts';
import { sameFiles, type TemplateStore } from './templates.ts';

/** How long a reader of a file still arriving waits for more bytes before giving up. */
export const RELAY_WAIT_MS = 30_000;
/** How long a reader of a template that is neither here nor being pulled waits for a pull of it to start. */
export const PULL_START_WAIT_MS = 10_000;
/** A source that sends nothing for this long is dropped for the next one. */
const SOURCE_IDLE_MS = 45_000;
/** Rounds over every source before a pull gives up (a source is retried after the others failed). */
const ROUNDS = 3;
/** How long a finished pull's outcome stays visible. */
const KEEP_FINISHED_MS = 10 * 60_000;

/** One file of a pull, as it arrives. */
class Arriving {
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly path: string;
  /** Bytes on disk from the start of the file, in order. */
  written = 0;
  verified = false;
  /** Changes when the file is dropped and started again: a reader of the old bytes must stop. */
  epoch = 0;
  private waiters: (() => void)[] = [];

  constructor(f: { file: string; bytes: number; sha256: string }, dir: string) {
    this.file = f.file;
    this.bytes = f.bytes;
    this.sha256 = f.sha256;
    this.path = path.join(dir, f.file);
  }

  /** Wakes every reader waiting for bytes. */
  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Resolves at the next change (bytes, drop, end of the pull) or after `ms`. */
  change(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, ms);
      const wake = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(wake);
    });
  }
}

class Pull {
  readonly name: string;
  readonly manifest: TemplateInfo;
  readonly sources: PullSource[];
  readonly files: Arriving[];
  readonly totalBytes: number;
  state: PullProgress['state'] = 'pulling';
  error?: SkyError;
  /** The last source's failure, for the log and the final error. */
  lastFailure = '';
  finishedAt = 0;
  done!: Promise<TemplateInfo>;

  constructor(req: PullRequest, dir: string) {
    this.name = req.manifest.name;
    this.manifest = req.manifest;
    this.sources = [...req.sources];
    this.files = req.manifest.files.map((f) => new Arriving(f, dir));
    this.totalBytes = this.files.reduce((n, f) => n + f.bytes, 0);
  }

  progress(): PullProgress {
    const doneBytes = this.state === 'done' ? this.totalBytes : this.files.reduce((n, f) => n + f.written, 0);
    return {
      name: this.name, state: this.state, doneBytes, totalBytes: this.totalBytes,
      ...(this.error ? { error: this.error.message, code: this.error.code } : {}),
    };
  }
}

export interface PullerDeps {
  store: TemplateStore;
  log: Logger;
  /** Called when a template was installed (the status sample should show it at once). */
  installed?: () => Promise<void>;
}

/** A template's file as a reader sees it: complete, or still arriving. */
interface Readable {
  path: string;
  total: number;
  arriving?: Arriving;
  pull?: Pull;
}

export class TemplatePuller {
  private readonly deps: PullerDeps;
  private readonly pulls = new Map<string, Pull>();
  /** Readers waiting for a pull to start (woken at every start). */
  private readonly startWaiters = new Set<() => void>();
  /** Settles once the store's leftovers of an earlier run are swept (TemplateStore.sweep); pulls start after it. */
  readonly swept: Promise<void>;

  constructor(deps: PullerDeps) {
    this.deps = deps;
    this.swept = deps.store.sweep(deps.log).then(
      () => undefined,
      // a leftover that cannot be removed wastes disk but harms no pull: say so and go on
      (err: unknown) => deps.log.warn(`could not sweep the templates folder of leftovers: ${(err as Error).message}`),
    );
  }

  /**
   * Starts pulling `body.manifest` from `body.sources`, or joins the pull of that template under
   * way (its new sources are added). A template already here with the same files is `done` at once;
   * with other files it is a 409 (a pull never replaces a template).
   */
  async start(body: unknown): Promise<PullProgress> {
    const parsed = PullRequest.safeParse(body);
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    const name = req.manifest.name;
    await this.swept;
    const join = (): PullProgress | undefined => {
      const running = this.pulls.get(name);
      if (!running || running.state !== 'pulling') return undefined;
      if (!sameFiles(running.manifest, req.manifest)) throw new Conflict(`template ${name} is being pulled with other files`);
      for (const s of req.sources) if (!running.sources.some((x) => x.url === s.url)) running.sources.push(s);
      return running.progress();
    };
    const joined = join();
    if (joined) return joined;
    const here = await this.deps.store.get(name);
    if (here) {
      if (!sameFiles(here, req.manifest)) throw new SkyError(409, 'template_differs', `template ${name} exists here with other files: remove it first`);
      return { name, state: 'done', doneBytes: sumBytes(here), totalBytes: sumBytes(here) };
    }
    const again = join(); // another request started it while we looked at the store
    if (again) return again;
    const pull = new Pull(req, this.deps.store.stagingDir(name));
    this.pulls.set(name, pull);
    for (const wake of this.startWaiters) wake();
    pull.done = this.run(pull);
    pull.done.then(
      () => void 0,
      () => void 0, // the outcome is kept on the pull (state, error) and logged by run()
    );
    return pull.progress();
  }

  /** The progress of the pull of `name` (under way, or finished in the last minutes). */
  progress(name: string): PullProgress | undefined {
    this.prune();
    return this.pulls.get(name)?.progress();
  }

  /** Every pull under way or finished in the last minutes (for `/status`). */
  list(): PullProgress[] {
    this.prune();
    return [...this.pulls.values()].map((p) => p.progress());
  }

  /** Resolves when the pull of `name` is installed; rejects with its error. */
  async wait(name: string): Promise<TemplateInfo> {
    const p = this.pulls.get(name);
    if (!p) throw new NotFound(`pull of template ${name}`);
    return p.done;
  }

  private prune(): void {
    const now = Date.now();
    for (const [name, p] of this.pulls) if (p.state !== 'pulling' && now - p.finishedAt > KEEP_FINISHED_MS) this.pulls.delete(name);
  }

  private async run(pull: Pull): Promise<TemplateInfo> {
    const { log, store } = this.deps;
    const dir = store.stagingDir(pull.name);
    const started = Date.now();
    log.info(`pulling template ${pull.name} (${mib(pull.totalBytes)} MiB) from ${pull.sources.map((s) => s.url).join(', ')}`);
    try {
      await this.prepare(pull, dir);
      for (const f of pull.files) await this.fetchFile(pull, f);
      const received = Date.now();
      await checkDisk(pull, dir);
      const checked = Date.now();
      const t = await store.install(dir, pull.manifest);
      const s = (Date.now() - started) / 1000;
      const phases = `bytes and sha256 ${secs(received - started)} s, image check ${secs(checked - received)} s, install ${secs(Date.now() - checked)} s`;
      log.info(`template ${pull.name} pulled and verified in ${s.toFixed(1)} s (${(pull.totalBytes / 1e6 / Math.max(s, 0.001)).toFixed(1)} MB/s; ${phases})`);
      await this.deps.installed?.(); // `done` is said once `/status` lists the template
      pull.finishedAt = Date.now();
      pull.state = 'done';
      return t;
    } catch (err) {
      const sky = toSkyError(err);
      // Bad bytes are never kept; files cut short by unreachable sources are, for the next pull to continue.
      // Removed before the pull says `failed`: whoever reads that finds nothing half-made.
      if (sky.code !== 'pull_failed') {
        await rm(dir, { recursive: true, force: true }).catch((e: Error) => log.warn(`could not remove ${dir} after the failed pull: ${e.message}`));
      }
      pull.state = 'failed';
      pull.finishedAt = Date.now();
      pull.error = sky.status >= 500 && sky.code !== 'pull_failed' && sky.code !== 'no_room' ? new SkyError(502, 'pull_failed', `pull of template ${pull.name} failed: ${sky.message}`) : sky;
      log.warn(`pull of template ${pull.name} failed: ${sky.message}`, { code: sky.code });
      throw pull.error;
    } finally {
      pull.finishedAt ||= Date.now();
      for (const f of pull.files) f.notify();
    }
  }

  /** The staging folder: what a previous pull of the same files left is kept (resumed), anything else removed. */
  private async prepare(pull: Pull, dir: string): Promise<void> {
    const marker = path.join(dir, '.pull.json');
    let previous: TemplateInfo | undefined;
    try {
      previous = JSON.parse(await readFile(marker, 'utf8')) as TemplateInfo;
    } catch {
      previous = undefined; // no earlier pull of this template (or its marker is unreadable): start clean
    }
    if (!previous || !Array.isArray(previous.files) || !sameFiles(previous, pull.manifest)) await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFile(marker, JSON.stringify(pull.manifest));
    let have = 0;
    for (const f of pull.files) {
      const size = await stat(f.path).then((s) => s.size, () => 0);
      if (size > f.bytes) await truncate(f.path, 0);
      else have += size;
    }
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    if (free < pull.totalBytes - have) {
      throw new SkyError(507, 'no_room', `no room for template ${pull.name}: needs ${mib(pull.totalBytes - have)} MiB, ${mib(free)} MiB free`);
    }
  }

  /** Fetches one file, continuing where it stopped, from the sources in turn; verifies it. */
  private async fetchFile(pull: Pull, f: Arriving): Promise<void> {
    const { log } = this.deps;
    const fh = await open(f.path, 'a+', 0o644);
    try {
      let hash = createHash('sha256');
      f.written = await hashPrefix(fh, hash, f.bytes);
      f.notify();
      /** Sources that served bytes of this file since it was last started (suspects if the sum is wrong). */
      let served = new Set<string>();
      const bad = new Set<string>();
      let cursor = 0;
      let failures = 0;
      for (;;) {
        if (f.written === f.bytes) {
          const got = hash.digest('hex');
          if (got === f.sha256) break;
          log.warn(`template ${pull.name}: ${f.file} has sha256 ${got}, expected ${f.sha256}: dropped (sources ${[...served].join(', ')})`);
          if (served.size === 0 && f.bytes === 0) throw new SkyError(422, 'checksum_mismatch', `template ${pull.name}: ${f.file} is empty, its sha256 is not`);
          for (const s of served) bad.add(s); // none when the bytes were a previous pull's: then only they are dropped
          await fh.truncate(0);
          f.written = 0;
          f.epoch++;
          f.notify();
          hash = createHash('sha256');
          served = new Set();
          failures = 0;
        }
        const usable = pull.sources.filter((s) => !bad.has(s.url));
        if (usable.length === 0) {
          throw new SkyError(422, 'checksum_mismatch', `template ${pull.name}: ${f.file} did not match its sha256 (${f.sha256}) from any source`);
        }
        if (failures >= usable.length * ROUNDS) {
          throw new SkyError(502, 'pull_failed', `template ${pull.name}: ${f.file} stopped at ${f.written} of ${f.bytes} bytes: no source could continue it (last: ${pull.lastFailure})`);
        }
        const source = usable[cursor % usable.length]!;
        const before = f.written;
        try {
          await fetchRange(source, f, fh, hash, () => served.add(source.url));
          if (f.written === before && f.written < f.bytes) throw new Error('the source sent nothing');
        } catch (err) {
          const sky = toSkyError(err);
          if (sky.code === 'wrong_length') bad.add(source.url);
          if (f.written > before) failures = 0;
          failures++;
          cursor++;
          pull.lastFailure = `${source.url}: ${sky.message}`;
          log.info(`template ${pull.name}: ${f.file} at ${f.written}/${f.bytes} bytes: ${source.url} failed (${sky.message}); continuing from the next source`);
          if (failures % usable.length === 0) await sleep(Math.min(2000, 250 * failures));
        }
      }
      f.verified = true;
    } finally {
      await fh.close();
    }
  }

  // ---- serving ----

  /** The file `file` of template `name`: installed, or still arriving in a pull; undefined if neither. */
  private async readable(name: string, file: string): Promise<Readable | undefined> {
    const pull = this.pulls.get(name);
    if (pull && pull.state === 'pulling') {
      const f = pull.files.find((x) => x.file === file);
      if (f) return { path: f.path, total: f.bytes, arriving: f, pull };
    }
    const here = await this.deps.store.fileOf(name, file);
    return here ? { path: here.path, total: here.bytes } : undefined;
  }

  /** Resolves once a pull of `name` is under way here, or after `ms`. */
  private async pullStarted(name: string, ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.pulls.get(name)?.state !== 'pulling' && Date.now() < until) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.startWaiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, until - Date.now());
        this.startWaiters.add(wake);
      });
    }
  }

  /** `GET /templates/:name/files/:file` with an optional `Range: bytes=A-B`. */
  async serve(req: Request, res: Response, name: string, file: string): Promise<void> {
    let src = await this.readable(name, file);
    if (!src && !(await this.deps.store.get(name))) {
      // A chain's pulls start together: the reader may have had its request before this host had its own.
      await this.pullStarted(name, PULL_START_WAIT_MS);
      src = await this.readable(name, file);
    }
    if (!src) throw new NotFound(`file ${file} of template ${name}`);
    const range = parseRange(req.headers.range, src.total);
    if (range === 'unsatisfiable') {
      res.status(416).set('Content-Range', `bytes */${src.total}`).end();
      return;
    }
    const [start, end] = range ?? [0, src.total - 1];
    res.status(range ? 206 : 200).set({
      'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', 'Content-Length': String(Math.max(0, end - start + 1)),
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${src.total}` } : {}),
    });
    if (end < start) {
      res.end();
      return;
    }
    if (!src.arriving) {
      await new Promise<void>((resolve) => {
        const stream = createReadStream(src.path, { start, end, highWaterMark: 1 << 20 });
        stream.on('error', (err) => {
          this.deps.log.warn(`serving ${name}/${file} failed: ${err.message}`);
          res.destroy(); // the status line is sent: only a short answer can say it failed
        });
        res.on('close', () => {
          stream.destroy();
          resolve();
        });
        stream.pipe(res);
      });
      return;
    }
    await relay(src.arriving, src.pull!, res, start, end, this.deps.log);
  }
}

/** Streams bytes start..end of a file still arriving, waiting for those not there yet. */
async function relay(f: Arriving, pull: Pull, res: Response, start: number, end: number, log: Logger): Promise<void> {
  const epoch = f.epoch;
  let fh: FileHandle | undefined;
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  try {
    // A reader may come before the file's first byte (a chain starts all its pulls at once): it waits for it.
    while (!fh) {
      try {
        fh = await open(f.path, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || pull.state !== 'pulling') throw err;
        if (!(await f.change(RELAY_WAIT_MS))) throw new Error(`the file did not start arriving within ${RELAY_WAIT_MS / 1000} s`);
      }
    }
    let pos = start;
    while (pos <= end && !closed) {
      if (f.epoch !== epoch) throw new Error('the file was dropped (bad sha256) and is being fetched again');
      const have = f.written;
      if (pos >= have) {
        if (pull.state !== 'pulling' && !f.verified) throw new Error(`the pull ended (${pull.state})`);
        if (!(await f.change(RELAY_WAIT_MS))) throw new Error(`no new bytes for ${RELAY_WAIT_MS / 1000} s`);
        continue;
      }
      const n = Math.min(end + 1, have) - pos;
      const buf = Buffer.allocUnsafe(Math.min(n, 1 << 20));
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) throw new Error('the file is shorter than recorded');
      pos += bytesRead;
      if (!res.write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead))) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    res.end();
  } catch (err) {
    log.info(`relay of ${pull.name}/${f.file} to a peer stopped: ${(err as Error).message}`);
    res.destroy(); // the reader sees a short answer and continues from another source
  } finally {
    await fh?.close();
  }
}

/** GETs `source/files/FILE` from `f.written` on, appending to `fh` and the hash. */
function fetchRange(source: PullSource, f: Arriving, fh: FileHandle, hash: Hash, onBytes: () => void): Promise<void> {
  const url = new URL(`${source.url.replace(/\/+$/, '')}/files/${encodeURIComponent(f.file)}`);
  const offset = f.written;
  if (offset >= f.bytes) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const headers: Record<string, string> = { range: `bytes=${offset}-`, 'accept-encoding': 'identity' };
    if (source.authorization) headers.authorization = source.authorization;
    // An https:// source with a fingerprint is pinned to it: the ticket or key goes to that certificate only.
    const agent = url.protocol === 'https:' && source.fingerprint ? new PinnedAgent(source.fingerprint) : false;
    const req = (url.protocol === 'https:' ? https : http).get(url, { headers, agent }, (res: IncomingMessage) => {
      void (async () => {
        try {
          if (res.statusCode === 206) {
            const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
            if (!m || Number(m[1]) !== offset || Number(m[3]) !== f.bytes) throw new SkyError(502, 'wrong_length', `answered range ${String(res.headers['content-range'])}, asked bytes ${offset}- of ${f.bytes}`);
          } else if (res.statusCode === 200 && offset === 0) {
            if (Number(res.headers['content-length'] ?? f.bytes) !== f.bytes) throw new SkyError(502, 'wrong_length', `sends ${String(res.headers['content-length'])} bytes, expected ${f.bytes}`);
          } else {
            let text = '';
            for await (const c of res) if (text.length < 300) text += String(c);
            throw new SkyError(502, 'source_refused', `HTTP ${res.statusCode}${text ? `: ${text.slice(0, 200)}` : ''}`);
          }
          await receive(res, f, fh, hash, onBytes);
          if (!res.complete) throw new Error(`the answer was cut short at ${f.written} of ${f.bytes} bytes`);
          resolve();
        } catch (err) {
          res.destroy();
          reject(err);
        }
      })();
    });
    req.setTimeout(SOURCE_IDLE_MS, () => req.destroy(new Error(`no answer for ${SOURCE_IDLE_MS / 1000} s`)));
    req.on('error', reject);
  });
}

/** Bytes held in memory before the socket is paused: the disk may lag a moment, the link never waits for it. */
const QUEUE_HIGH = 16 * 1024 * 1024;
const QUEUE_LOW = 4 * 1024 * 1024;

/**
 * Appends an answer's body to the file as it comes. The socket is read all the time (a reader that
 * stops while it writes lets a rate-limited link's share go unused); writes run one after another
 * behind it, each taking everything that arrived meanwhile, and count (`written`, what relaying
 * peers read) once on disk. What arrived before a cut is written too: the next source continues after it.
 */
async function receive(res: IncomingMessage, f: Arriving, fh: FileHandle, hash: Hash, onBytes: () => void): Promise<void> {
  const queue: Buffer[] = [];
  let queued = 0;
  let writer: Promise<void> | undefined;
  let failure: unknown;
  const writeQueued = async (): Promise<void> => {
    while (queue.length > 0) {
      const n = queued;
      // Written as they came, in one call (copying them into one buffer cost more CPU than the hash).
      const chunks = queue.splice(0);
      queued = 0;
      if (f.written + n > f.bytes) throw new SkyError(502, 'wrong_length', `sends more than the file's ${f.bytes} bytes`);
      const { bytesWritten } = await fh.writev(chunks, f.written);
      if (bytesWritten !== n) throw new Error(`wrote ${bytesWritten} of ${n} bytes to ${f.path}`);
      for (const c of chunks) hash.update(c);
      f.written += n;
      onBytes();
      f.notify();
      if (res.isPaused() && queued < QUEUE_LOW) res.resume();
    }
  };
  const kick = () => {
    writer ??= writeQueued()
      .catch((err: unknown) => {
        failure ??= err;
        res.destroy();
      })
      .finally(() => {
        writer = undefined;
        if (queue.length > 0 && failure === undefined) kick();
      });
  };
  const ended = new Promise<void>((resolve, reject) => {
    if (res.destroyed) reject(new Error('the connection closed before the answer was read'));
    res.on('data', (c: Buffer) => {
      if (failure !== undefined) return;
      queue.push(c);
      queued += c.length;
      if (queued > QUEUE_HIGH) res.pause();
      kick();
    });
    res.on('error', reject);
    res.on('close', () => (res.complete ? resolve() : reject(new Error(`the answer was cut short at ${f.written + queued} of ${f.bytes} bytes`))));
  });
  let cut: unknown;
  await ended.catch((err: unknown) => (cut = err));
  while (writer) await writer;
  if (failure !== undefined) throw failure;
  if (cut !== undefined) throw cut;
}

/** Hashes what a file already holds (a pull continued after a failure); answers its length. */
async function hashPrefix(fh: FileHandle, hash: Hash, max: number): Promise<number> {
  const size = Math.min((await fh.stat()).size, max);
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = 0;
  while (pos < size) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return pos;
}

/** A disk image must be what its manifest says, with no backing file (it could point anywhere on the host). */
async function checkDisk(pull: Pull, dir: string): Promise<void> {
  for (const f of pull.manifest.files) {
    if (f.role !== 'disk') continue;
    const info = await imageInfo(path.join(dir, f.file)).catch((err: Error) => {
      throw new SkyError(422, 'bad_image', `template ${pull.name}: qemu-img cannot read ${f.file}: ${err.message.split('\n')[0]}`);
    });
    if (info.format !== 'qcow2' && info.format !== 'raw') throw new SkyError(422, 'bad_image', `template ${pull.name}: ${f.file} is ${info.format}, not qcow2 or raw`);
    if (f.format && info.format !== f.format) throw new SkyError(422, 'bad_image', `template ${pull.name}: ${f.file} is ${info.format}, its manifest says ${f.format}`);
    if (info.backingFile) throw new SkyError(422, 'bad_image', `template ${pull.name}: ${f.file} has a backing file`);
  }
}

/** `bytes=A-B`, `bytes=A-` or `bytes=-N` against a file of `total` bytes: [start, end], undefined without a Range. */
export function parseRange(header: string | undefined, total: number): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return 'unsatisfiable';
  if (m[1] === '') {
    const n = Number(m[2]);
    return n === 0 ? 'unsatisfiable' : [Math.max(0, total - n), total - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? total - 1 : Math.min(Number(m[2]), total - 1);
  if (start >= total || end < start) return total === 0 && start === 0 ? [0, -1] : 'unsatisfiable';
  return [start, end];
}

function sumBytes(t: TemplateInfo): number {
  return t.files.reduce((n, f) => n + f.bytes, 0);
}

function mib(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(1);
}

function secs(ms: number): string {
  return (ms / 1000).toFixed(2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
