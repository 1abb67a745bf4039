// Controller backup and restore (docs/design.md#controller-backup-file). A backup is one file that
// brings the cluster back on another machine: the database, copied by SQLite's online backup while
// the controller serves, and the controller's secrets, because hosts come back by their agent keys
// (in the database) and by the cluster id (in DATA/secrets, advertised by mDNS).
//
//   FILE: a gzip'd POSIX tar, mode 0600 (`tar tzvf FILE` lists it)
//   ├── skyhost-backup.json   the manifest, always first: format, formatVersion, createdAt, skyhostVersion,
//   │                         clusterId, schemaVersion, files [{ path, size, sha256 }]
//   ├── skyhost.db            the database in one file (no WAL)
//   └── secrets/NAME          every file of DATA/secrets but the local agent's (AGENT_SECRETS)
//
// A restore checks everything (manifest, checksums, integrity_check, a known schema version) in a
// staging folder inside DATA before it touches anything, moves what was there to
// DATA/before-restore-<time>/, then renames the new files into place, the database last.
import { createHash } from 'node:crypto';
import {
  chmodSync, closeSync, createReadStream, createWriteStream, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync,
  readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync, backup } from 'node:sqlite';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { z } from 'zod';
import { UsageError, type CommandContext } from '../../base/cli.ts';
import { BadRequest, Conflict, Forbidden, SkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { VERSION } from '../../base/version.ts';
import { databaseInUse, inspectDatabase, SCHEMA_VERSION } from './store.ts';

export const BACKUP_FORMAT = 'skyhost-controller-backup';
const FORMAT_VERSION = 1;
const MANIFEST = 'skyhost-backup.json';
const DB_NAME = 'skyhost.db';
/** Files of DATA/secrets that are the local agent's (`skyhost up`): they belong to the machine, not to the cluster. */
export const AGENT_SECRETS: ReadonlySet<string> = new Set(['agent-key']);
/** The nightly backups' folder, in the data folder. */
export const BACKUP_FOLDER = 'backups';
/** Tables every SkyHost database has had since schema version 1. */
const CORE_TABLES = ['settings', 'users', 'hosts', 'vms'];
const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** The largest manifest or secret file read into memory. */
const SMALL_FILE_MAX = 1 << 20;
/** Pages per backup step: all of them, so the copy is one read transaction (a snapshot) and never restarts. */
const ALL_PAGES = 2 ** 31 - 1;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const ManifestFile = z.object({ path: z.string(), size: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
const Manifest = z.object({
  format: z.literal(BACKUP_FORMAT),
  formatVersion: z.literal(FORMAT_VERSION),
  createdAt: z.string(),
  skyhostVersion: z.string(),
  clusterId: z.string().min(1),
  schemaVersion: z.number().int(),
  files: z.array(ManifestFile),
});
export type BackupManifest = z.infer<typeof Manifest>;

export interface BackupResult {
  file: string;
  manifest: BackupManifest;
  /** The backup file's size. */
  bytes: number;
}

/**
 * Writes a backup of the controller in `dataDir` to `file`, atomically (a `.partial` file renamed
 * into place) and mode 0600. The controller may be running: its database is copied by SQLite's
 * online backup, one consistent snapshot that holds every write committed before the copy began.
 * @example await writeBackup({ dataDir: '/var/lib/skyhost', file: '/mnt/usb/skyhost.tar.gz' })
 */
export async function writeBackup(opts: { dataDir: string; file: string; replace?: boolean; now?: Date }): Promise<BackupResult> {
  const dbFile = path.join(opts.dataDir, DB_NAME);
  if (!existsSync(dbFile)) throw new SkyError(404, 'no_database', `no controller database at ${dbFile} (is --data right?)`);
  const target = path.resolve(opts.file);
  if (existsSync(target)) {
    if (statSync(target).isDirectory()) throw new BadRequest(`${target} is a folder: give the backup's file name`, undefined, 'backup_target');
    if (!opts.replace) throw new Conflict(`${target} exists: give another name, or --force to replace it`);
  } else if (!existsSync(path.dirname(target))) {
    throw new BadRequest(`cannot write ${target}: the folder ${path.dirname(target)} does not exist`, undefined, 'backup_target');
  }
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-backup-'));
  try {
    const copy = path.join(work, DB_NAME);
    // Not read-only: when no controller runs, closing this connection tidies the WAL away as the controller's own close does.
    const source = new DatabaseSync(dbFile, { timeout: 5000 });
    try {
      await backup(source, copy, { rate: ALL_PAGES });
    } finally {
      source.close();
    }
    chmodSync(copy, 0o600);
    const db = inspectDatabase(copy);
    if (db.integrity.join('; ') !== 'ok') throw new Error(`the copy of ${dbFile} fails integrity_check: ${db.integrity.slice(0, 3).join('; ')}`);
    const secretsDir = path.join(opts.dataDir, 'secrets');
    const secrets = controllerSecrets(opts.dataDir).map((name) => ({ path: `secrets/${name}`, data: readFileSync(path.join(secretsDir, name)) }));
    const clusterId = secrets.find((s) => s.path === 'secrets/cluster-id')?.data.toString('utf8').trim();
    if (!clusterId) throw new SkyError(404, 'no_cluster_id', `no cluster id in ${path.join(secretsDir, 'cluster-id')}: not a controller's data folder`);
    const dbEntry = { path: DB_NAME, size: statSync(copy).size, sha256: await sha256File(copy) };
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT, formatVersion: FORMAT_VERSION, createdAt: (opts.now ?? new Date()).toISOString(), skyhostVersion: VERSION,
      clusterId, schemaVersion: db.schemaVersion,
      files: [dbEntry, ...secrets.map((s) => ({ path: s.path, size: s.data.length, sha256: sha256(s.data) }))],
    };
    const manifestData = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
    const entries: TarEntry[] = [
      { path: MANIFEST, size: manifestData.length, data: manifestData },
      { path: DB_NAME, size: dbEntry.size, file: copy },
      ...secrets.map((s) => ({ path: s.path, size: s.data.length, data: s.data })),
    ];
    const partial = `${target}.partial-${process.pid}`;
    try {
      await pipeline(Readable.from(tarStream(entries)), createGzip(), createWriteStream(partial, { mode: 0o600, flags: 'w' }));
      chmodSync(partial, 0o600);
      fsyncFile(partial);
      renameSync(partial, target);
    } catch (err) {
      rmSync(partial, { force: true });
      throw err;
    }
    fsyncFile(path.dirname(target));
    return { file: target, manifest, bytes: statSync(target).size };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export interface RestoreResult {
  manifest: BackupManifest;
  /** Where the replaced database and secrets were moved (none on a fresh data folder). */
  previous?: string;
}

/**
 * Puts the backup `file` in place as the controller of `dataDir`, which must not be running.
 * Nothing in `dataDir` changes unless the whole backup checks out; what it replaces is kept in
 * DATA/before-restore-<time>/.
 */
export async function restoreBackup(opts: { dataDir: string; file: string; log: Logger; now?: Date }): Promise<RestoreResult> {
  const source = path.resolve(opts.file);
  const dataDir = path.resolve(opts.dataDir);
  refuseIfRunning(dataDir);
  const fresh = !existsSync(dataDir);
  mkdirSync(dataDir, { recursive: true });
  const stage = mkdtempSync(path.join(dataDir, '.restore-'));
  let restored = false;
  try {
    const manifest = await unpack(source, stage);
    checkDatabase(source, path.join(stage, DB_NAME), manifest);
    const clusterId = readFileSync(path.join(stage, 'secrets', 'cluster-id'), 'utf8').trim();
    if (clusterId !== manifest.clusterId) throw notABackup(source, `its cluster-id (${clusterId}) is not the manifest's (${manifest.clusterId})`);
    refuseIfRunning(dataDir); // again, right before the switch: one may have started while we checked
    const previous = switchFiles(dataDir, stage, manifest, opts.now ?? new Date(), opts.log);
    restored = true;
    return previous ? { manifest, previous } : { manifest };
  } finally {
    rmSync(stage, { recursive: true, force: true });
    if (fresh && !restored) rmSync(dataDir, { recursive: true, force: true }); // we made it: leave no trace
  }
}

/** `skyhost-backup-2025-01-31T03-00-00Z.tar.gz`: the nightly backup's name for time `at` (UTC). */
export function nightlyName(at: Date): string {
  return `skyhost-backup-${at.toISOString().slice(0, 19).replace(/:/g, '-')}Z.tar.gz`;
}

/** The time in a nightly backup's name, or undefined for any other file. */
function nightlyTime(name: string): number | undefined {
  const m = /^skyhost-backup-(\d{4}-\d{2}-\d{2})T(\d{2})-(\d{2})-(\d{2})Z\.tar\.gz$/.exec(name);
  if (!m) return undefined;
  const t = Date.parse(`${m[1]}T${m[2]}:${m[3]}:${m[4]}Z`);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * The nightly job: a backup into DATA/backups/, then the nightly backups `keepDays` days old or
 * older are deleted (an hour's slack, so that a run a little late still keeps exactly `keepDays`).
 * Only files named as nightly backups are ever deleted, and only after a backup succeeded.
 */
export async function nightlyBackup(opts: { dataDir: string; keepDays: number; log: Logger; now?: Date }): Promise<{ file: string; deleted: string[] }> {
  const now = opts.now ?? new Date();
  const folder = path.join(opts.dataDir, BACKUP_FOLDER);
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  const made = await writeBackup({ dataDir: opts.dataDir, file: path.join(folder, nightlyName(now)), replace: true, now });
  const deleted: string[] = [];
  for (const name of readdirSync(folder)) {
    const at = nightlyTime(name);
    const full = path.join(folder, name);
    if (at !== undefined && now.getTime() - at >= opts.keepDays * DAY - HOUR) {
      rmSync(full, { force: true });
      deleted.push(name);
    } else if (/^skyhost-backup-.*\.partial-\d+$/.test(name) && now.getTime() - statSync(full).mtimeMs > DAY) {
      rmSync(full, { force: true }); // left by a backup cut short a day ago or more
      deleted.push(name);
    }
  }
  opts.log.info(`nightly backup written to ${made.file} (${Math.ceil(made.bytes / 1024)} KiB)` +
    (deleted.length ? `; deleted ${deleted.length} older than ${opts.keepDays} days: ${deleted.join(', ')}` : ''));
  return { file: made.file, deleted };
}

/** `skyhost controller backup FILE` */
export async function backupCommand(ctx: CommandContext): Promise<number> {
  const file = oneFile(ctx, 'controller backup');
  const r = await plainFileErrors(() => writeBackup({ dataDir: ctx.config.dataDir, file, replace: ctx.flags.force === true }));
  const secrets = r.manifest.files.length - 1;
  ctx.print(`backup of cluster ${r.manifest.clusterId} written to ${r.file} (${Math.ceil(r.bytes / 1024)} KiB, mode 0600): ` +
    `the database (schema ${r.manifest.schemaVersion}) and ${secrets} secret file${secrets === 1 ? '' : 's'}`);
  return 0;
}

/** `skyhost controller restore FILE` */
export async function restoreCommand(ctx: CommandContext): Promise<number> {
  const file = oneFile(ctx, 'controller restore');
  const r = await plainFileErrors(() => restoreBackup({ dataDir: ctx.config.dataDir, file, log: ctx.log }));
  ctx.print(`restored cluster ${r.manifest.clusterId} from ${path.resolve(file)} (made ${r.manifest.createdAt}) into ${ctx.config.dataDir}`);
  if (r.previous) ctx.print(`the database and secrets it replaced are in ${r.previous}`);
  ctx.print(`start the controller: hosts re-attach with their keys, and agents find it by mDNS (cluster ${r.manifest.clusterId})`);
  return 0;
}

function oneFile(ctx: CommandContext, command: string): string {
  const [file, ...extra] = ctx.args;
  if (!file || extra.length > 0) throw new UsageError(`${command}: needs exactly one FILE, got ${ctx.args.length} (see skyhost ${command} --help)`);
  return file;
}

/** A file system refusal said in one line (the CLI prints a SkyError's message, not a stack). */
async function plainFileErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EACCES' || e.code === 'EPERM') throw new Forbidden(`${e.path ?? 'a file'}: permission denied (run it as the controller's user, root)`);
    if (e.code === 'ENOSPC') throw new SkyError(507, 'disk_full', `the disk is full${e.path ? ` (writing ${e.path})` : ''}: nothing was replaced`);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Restore's steps.

function refuseIfRunning(dataDir: string): void {
  const dbFile = path.join(dataDir, DB_NAME);
  if (existsSync(dbFile) && databaseInUse(dbFile)) {
    throw new Conflict(`a controller is running on ${dataDir} (${dbFile} is open): stop it, then restore`);
  }
}

function notABackup(file: string, why: string): SkyError {
  return new BadRequest(`${file} is not a SkyHost controller backup: ${why}`, undefined, 'not_a_backup');
}

function damaged(file: string, why: string): SkyError {
  return new BadRequest(`${file} is damaged: ${why}`, undefined, 'backup_damaged');
}

/** The staged database is a SkyHost database, intact, of a schema version this SkyHost knows. */
function checkDatabase(file: string, db: string, manifest: BackupManifest): void {
  let info: ReturnType<typeof inspectDatabase>;
  try {
    info = inspectDatabase(db);
  } catch (err) {
    throw notABackup(file, `its ${DB_NAME} cannot be read as SQLite (${(err as Error).message})`);
  }
  const missing = CORE_TABLES.filter((t) => !info.tables.includes(t));
  if (missing.length > 0) throw notABackup(file, `its ${DB_NAME} has no ${missing.join(', ')} table`);
  if (info.integrity.join('; ') !== 'ok') throw damaged(file, `${DB_NAME} fails integrity_check: ${info.integrity.slice(0, 3).join('; ')}`);
  if (info.schemaVersion > SCHEMA_VERSION) {
    throw new BadRequest(`${file} holds a database of schema version ${info.schemaVersion}, newer than this SkyHost ${VERSION} knows ` +
      `(${SCHEMA_VERSION}): restore it with SkyHost ${manifest.skyhostVersion} or newer`, undefined, 'backup_too_new');
  }
  if (info.schemaVersion < 1) throw notABackup(file, `its ${DB_NAME} has schema version ${info.schemaVersion}`);
  if (info.schemaVersion !== manifest.schemaVersion) {
    throw damaged(file, `${DB_NAME} has schema version ${info.schemaVersion}, the manifest says ${manifest.schemaVersion}`);
  }
}

/**
 * Moves the current database and controller secrets to DATA/before-restore-<time>/ and the staged
 * ones into their place, the database last; puts everything back if a step fails.
 */
function switchFiles(dataDir: string, stage: string, manifest: BackupManifest, now: Date, log: Logger): string | undefined {
  const dbFile = path.join(dataDir, DB_NAME);
  const secretsDir = path.join(dataDir, 'secrets');
  const aside = path.join(dataDir, `before-restore-${now.toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(path.join(aside, 'secrets'), { recursive: true, mode: 0o700 });
  mkdirSync(secretsDir, { recursive: true, mode: 0o700 });
  const done: [from: string, to: string][] = [];
  const move = (from: string, to: string) => {
    renameSync(from, to);
    done.push([from, to]);
  };
  try {
    // The WAL first: a database must never meet another database's WAL.
    for (const suffix of ['-wal', '-shm', '-journal', '']) {
      if (existsSync(dbFile + suffix)) move(dbFile + suffix, path.join(aside, DB_NAME + suffix));
    }
    for (const name of controllerSecrets(dataDir)) move(path.join(secretsDir, name), path.join(aside, 'secrets', name));
    for (const f of manifest.files) if (f.path !== DB_NAME) move(path.join(stage, f.path), path.join(dataDir, f.path));
    move(path.join(stage, DB_NAME), dbFile);
    fsyncFile(secretsDir);
    fsyncFile(dataDir);
  } catch (err) {
    for (const [from, to] of done.reverse()) {
      try {
        renameSync(to, from);
      } catch (undo) {
        log.error(`restore: cannot move ${to} back to ${from}; move it by hand`, { err: undo });
      }
    }
    throw err;
  }
  if (done.length === manifest.files.length) {
    rmSync(aside, { recursive: true }); // nothing was there: a fresh data folder
    return undefined;
  }
  return aside;
}

// ---------------------------------------------------------------------------------------------
// Files.

/** The controller's files in DATA/secrets: every regular file but the agent's and temporary ones. */
function controllerSecrets(dataDir: string): string[] {
  const dir = path.join(dataDir, 'secrets');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && SECRET_NAME.test(e.name) && !AGENT_SECRETS.has(e.name) && !e.name.endsWith('.tmp'))
    .map((e) => e.name)
    .sort();
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function fsyncFile(file: string): void {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The archive: POSIX ustar, regular files only, gzip'd.

interface TarEntry {
  path: string;
  size: number;
  data?: Buffer;
  file?: string;
}

function tarHeader(name: string, size: number, mtime: number): Buffer {
  const h = Buffer.alloc(512);
  const octal = (n: number, width: number) => n.toString(8).padStart(width - 1, '0') + '\0';
  h.write(name, 0, 100, 'utf8');
  h.write(octal(0o600, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(mtime, 12), 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

async function* tarStream(entries: TarEntry[]): AsyncGenerator<Buffer> {
  const mtime = Math.floor(Date.now() / 1000);
  for (const e of entries) {
    yield tarHeader(e.path, e.size, mtime);
    let sent = 0;
    if (e.data) {
      sent = e.data.length;
      yield e.data;
    } else {
      for await (const chunk of createReadStream(e.file!)) {
        sent += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
    }
    if (sent !== e.size) throw new Error(`${e.path} changed size while it was archived (${e.size} -> ${sent} bytes)`);
    if (e.size % 512) yield Buffer.alloc(512 - (e.size % 512));
  }
  yield Buffer.alloc(1024);
}

/** The archive is not one we wrote (its reason for the one-line refusal). */
class ArchiveError extends Error {}

interface EntrySink {
  write(chunk: Buffer): void;
  end(): void;
}

/** A streaming ustar reader: `push` chunks, each entry goes to the sink `open` gives for it. */
class TarReader {
  private buf: Buffer = Buffer.alloc(0);
  private entry: { left: number; pad: number; sink: EntrySink } | undefined;
  private ended = false;
  private readonly open: (name: string, size: number) => EntrySink;

  constructor(open: (name: string, size: number) => EntrySink) {
    this.open = open;
  }

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (!this.ended) {
      const e = this.entry;
      if (e) {
        if (e.left > 0) {
          const n = Math.min(e.left, this.buf.length);
          e.sink.write(this.buf.subarray(0, n));
          e.left -= n;
          this.buf = this.buf.subarray(n);
          if (e.left > 0) return;
          e.sink.end();
        }
        const skip = Math.min(e.pad, this.buf.length);
        e.pad -= skip;
        this.buf = this.buf.subarray(skip);
        if (e.pad > 0) return;
        this.entry = undefined;
      }
      if (this.buf.length < 512) return;
      const header = this.buf.subarray(0, 512);
      this.buf = this.buf.subarray(512);
      if (header.every((b) => b === 0)) {
        this.ended = true;
        return;
      }
      const { name, size } = parseHeader(header);
      const sink = this.open(name, size);
      this.entry = { left: size, pad: (512 - (size % 512)) % 512, sink };
      if (size === 0) sink.end();
    }
  }

  /** The archive's end marker was read (not a file cut short). */
  get complete(): boolean {
    return this.ended && this.entry === undefined;
  }
}

function parseHeader(h: Buffer): { name: string; size: number } {
  const field = (start: number, len: number) => h.toString('utf8', start, start + len).replace(/\0.*$/s, '');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  if (parseInt(field(148, 8).trim(), 8) !== sum) throw new ArchiveError('a tar header has a wrong checksum');
  if (!field(257, 6).startsWith('ustar')) throw new ArchiveError('not a ustar archive');
  const type = field(156, 1);
  if (type !== '0' && type !== '') throw new ArchiveError(`it holds something that is not a plain file (tar type "${type}")`);
  if (field(345, 155)) throw new ArchiveError('it holds a path longer than 100 bytes');
  const size = parseInt(field(124, 12).trim(), 8);
  if (!Number.isSafeInteger(size) || size < 0) throw new ArchiveError('a tar header has a malformed size');
  return { name: field(0, 100), size };
}

/**
 * Reads the backup `file` into `stage` (a private folder): the manifest first, then each file it
 * lists, checked for size and sha256. Anything else (another archive, a stray entry, a truncated
 * file) is refused with the reason.
 */
async function unpack(file: string, stage: string): Promise<BackupManifest> {
  try {
    if (!statSync(file).isFile()) throw notABackup(file, 'not a regular file');
  } catch (err) {
    if (err instanceof SkyError) throw err;
    throw new BadRequest(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, undefined, 'not_a_backup');
  }
  mkdirSync(path.join(stage, 'secrets'), { mode: 0o700 });
  let manifest: BackupManifest | undefined;
  const seen = new Set<string>();
  const openFds = new Set<number>();

  const toMemory = (name: string, size: number, done: (data: Buffer) => void): EntrySink => {
    if (size > SMALL_FILE_MAX) throw notABackup(file, `${name} is ${size} bytes`);
    const parts: Buffer[] = [];
    return { write: (c) => void parts.push(Buffer.from(c)), end: () => done(Buffer.concat(parts)) };
  };

  const open = (name: string, size: number): EntrySink => {
    if (!manifest) {
      if (name !== MANIFEST) throw notABackup(file, `it does not start with ${MANIFEST}`);
      return toMemory(name, size, (data) => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.toString('utf8'));
        } catch {
          throw notABackup(file, `${MANIFEST} is not JSON`);
        }
        const m = Manifest.safeParse(parsed);
        if (!m.success) throw notABackup(file, `${MANIFEST} is not a manifest of format ${BACKUP_FORMAT} ${FORMAT_VERSION}: ${m.error.issues[0]?.path.join('.')} ${m.error.issues[0]?.message}`);
        const names = m.data.files.map((f) => f.path);
        const bad = names.find((n) => n !== DB_NAME && !(n.startsWith('secrets/') && SECRET_NAME.test(n.slice(8))));
        if (bad !== undefined) throw notABackup(file, `its manifest lists "${bad}"`);
        if (new Set(names).size !== names.length) throw notABackup(file, 'its manifest lists a file twice');
        if (!names.includes(DB_NAME) || !names.includes('secrets/cluster-id')) throw notABackup(file, `its manifest lacks ${DB_NAME} or secrets/cluster-id`);
        manifest = m.data;
      });
    }
    const expected = manifest.files.find((f) => f.path === name);
    if (!expected || seen.has(name)) throw notABackup(file, `it holds "${name}", which its manifest does not list (once)`);
    if (size !== expected.size) throw damaged(file, `${name} is ${size} bytes, the manifest says ${expected.size}`);
    seen.add(name);
    const fd = openSync(path.join(stage, name), 'wx', 0o600);
    openFds.add(fd);
    const hash = createHash('sha256');
    return {
      write(chunk) {
        hash.update(chunk);
        writeSync(fd, chunk);
      },
      end() {
        fsyncSync(fd);
        closeSync(fd);
        openFds.delete(fd);
        if (hash.digest('hex') !== expected.sha256) throw damaged(file, `${name} does not match its sha256`);
      },
    };
  };

  const reader = new TarReader(open);
  try {
    await pipeline(createReadStream(file), createGunzip(), async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) reader.push(chunk);
    });
  } catch (err) {
    if (err instanceof SkyError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR') {
      throw notABackup(file, code === 'Z_BUF_ERROR' ? 'the file ends early (cut short?)' : 'not a gzip file');
    }
    if (err instanceof ArchiveError) throw notABackup(file, err.message);
    throw err;
  } finally {
    for (const fd of openFds) closeSync(fd);
  }
  if (!manifest) throw notABackup(file, 'it is empty');
  if (!reader.complete) throw damaged(file, 'the archive ends early (cut short?)');
  const missing = manifest.files.find((f) => !seen.has(f.path));
  if (missing) throw damaged(file, `${missing.path} is missing`);
  return manifest;
}
