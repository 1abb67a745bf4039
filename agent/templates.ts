// The template store of a host: DATA/templates/NAME/ with the template's files and a manifest.json
// (name, kind disk|kernel|iso, os, minimum memory, console kind, needsKvm, every file with its sha256).
// Import copies the files in while hashing them, checks given sha256s, and appears atomically
// (a hidden folder renamed into place).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TemplateInfo, TemplateName } from '../wire/api.ts';
import { Conflict, InvalidField, NotFound, SkyError } from '../base/errors.ts';
import { renameIntoPlace } from '../base/files.ts';
import type { Logger } from '../base/log.ts';
import { imageInfo } from './disks.ts';

export interface ImportOptions {
  name: string;
  /** A bootable disk image (qcow2 or raw), or a kernel template's optional root disk. */
  disk?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** An installer ISO (ISO 9660): an `iso` template, alone (its VMs get an empty disk). */
  iso?: string;
  /** Expected sha256s, in the order of the files: disk for a disk template; iso for an iso one; kernel, initrd, disk otherwise. */
  sha256?: string[];
  os?: string;
  description?: string;
  minMemoryMiB?: number;
  console?: 'serial' | 'vnc';
  needsKvm?: boolean;
  /** The image runs an SSH server (written to the manifest as `ssh: true`). */
  ssh?: boolean;
}

type FileEntry = TemplateInfo['files'][number];

/** What the agent needs of its templates (the simulated agent keeps them in memory). */
export interface TemplateCatalog {
  /** Where uploads wait while they are imported (on the templates' own disk). */
  readonly dir: string;
  list(): Promise<TemplateInfo[]>;
  get(name: string): Promise<TemplateInfo | undefined>;
  /** The path of one of a template's files on this machine. */
  pathOf(t: TemplateInfo, role: FileEntry['role']): string | undefined;
  import(opts: ImportOptions): Promise<TemplateInfo>;
  /** Removes a template; `inUse` names the VMs that still use it (then nothing is removed). */
  remove(name: string, inUse: (name: string) => Promise<string[]>): Promise<void>;
}

export class TemplateStore implements TemplateCatalog {
  readonly dir: string;

  constructor(dataDir: string) {
    this.dir = path.join(dataDir, 'templates');
  }

  /** Every template present, by name (folders without a valid manifest are skipped). */
  async list(): Promise<TemplateInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no template was ever imported here
      throw err;
    }
    const out: TemplateInfo[] = [];
    for (const n of names.sort()) {
      if (n.startsWith('.')) continue;
      const t = await this.get(n);
      if (t) out.push(t);
    }
    return out;
  }

  async get(name: string): Promise<TemplateInfo | undefined> {
    if (!TemplateName.safeParse(name).success) return undefined;
    try {
      const parsed = TemplateInfo.safeParse(JSON.parse(await readFile(path.join(this.dir, name, 'manifest.json'), 'utf8')));
      return parsed.success ? parsed.data : undefined;
    } catch {
      // no manifest, or not JSON: not a template (yet), e.g. a copy in progress or a stray folder
      return undefined;
    }
  }

  /** The path of one of a template's files. */
  pathOf(t: TemplateInfo, role: FileEntry['role']): string | undefined {
    const f = t.files.find((x) => x.role === role);
    return f ? path.join(this.dir, t.name, f.file) : undefined;
  }

  /** Imports a template from files on this machine; see ImportOptions. */
  async import(opts: ImportOptions): Promise<TemplateInfo> {
    const name = TemplateName.safeParse(opts.name);
    if (!name.success) throw new InvalidField('name', name.error.issues[0]!.message);
    if (!opts.disk && !opts.kernel && !opts.iso) throw new InvalidField('disk', 'give a disk image (--disk), a kernel (--kernel) or an installer ISO (--iso)');
    if (opts.iso && (opts.disk || opts.kernel)) throw new InvalidField('iso', 'an installer ISO is a template of its own: give no disk or kernel with it');
    if (opts.initrd && !opts.kernel) throw new InvalidField('initrd', 'only goes with --kernel');
    if (opts.cmdline !== undefined && !opts.kernel) throw new InvalidField('cmdline', 'only goes with --kernel');
    if (opts.cmdline !== undefined && (opts.cmdline.length > 2048 || /[\x00-\x1f]/.test(opts.cmdline))) {
      throw new InvalidField('cmdline', 'must be one line of at most 2048 characters');
    }
    if (await this.get(opts.name)) throw new Conflict(`template ${opts.name} already exists (remove it first: skyhost template rm ${opts.name})`);

    const sources: { role: FileEntry['role']; from: string; field: string }[] = [];
    if (opts.kernel) sources.push({ role: 'kernel', from: opts.kernel, field: 'kernel' });
    if (opts.initrd) sources.push({ role: 'initrd', from: opts.initrd, field: 'initrd' });
    if (opts.disk) sources.push({ role: 'disk', from: opts.disk, field: 'disk' });
    if (opts.iso) sources.push({ role: 'iso', from: opts.iso, field: 'iso' });
    const expected = opts.sha256 ?? [];
    if (expected.length > sources.length) throw new InvalidField('sha256', `${expected.length} given for ${sources.length} file(s)`);
    for (const [i, h] of expected.entries()) {
      if (!/^[0-9a-f]{64}$/i.test(h)) throw new InvalidField('sha256', `value ${i + 1} must be 64 hex digits`);
    }

    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    const tmp = path.join(this.dir, `.import-${opts.name}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp, { mode: 0o755 });
    try {
      const files: FileEntry[] = [];
      for (const [i, src] of sources.entries()) {
        const st = await stat(src.from).catch((err: NodeJS.ErrnoException) => {
          throw new InvalidField(src.field, `${src.from} is not a readable file (${err.code ?? err.message})`);
        });
        if (!st.isFile()) throw new InvalidField(src.field, `${src.from} is not a readable file`);
        let entry: FileEntry;
        if (src.role === 'disk') {
          const info = await imageInfo(src.from).catch((err: Error) => {
            throw new InvalidField('disk', `must be a qcow2 or raw disk image (qemu-img could not read it: ${err.message.split('\n')[0]})`);
          });
          if (info.format !== 'qcow2' && info.format !== 'raw') throw new InvalidField('disk', `must be a qcow2 or raw disk image (this one is ${info.format})`);
          if (info.backingFile) throw new InvalidField('disk', 'must be a standalone image (this one has a backing file)');
          const file = `disk.${info.format}`;
          const copied = await copyHashing(src.from, path.join(tmp, file));
          entry = { role: 'disk', file, ...copied, format: info.format, virtualBytes: info.virtualBytes };
        } else if (src.role === 'iso') {
          await mustBeIso(src.from);
          entry = { role: 'iso', file: 'installer.iso', ...(await copyHashing(src.from, path.join(tmp, 'installer.iso'))) };
        } else {
          const file = src.role === 'kernel' ? 'vmlinuz' : 'initrd';
          entry = { role: src.role, file, ...(await copyHashing(src.from, path.join(tmp, file))) };
        }
        const want = expected[i];
        if (want && want.toLowerCase() !== entry.sha256) {
          throw new SkyError(422, 'checksum_mismatch', `${src.field}: sha256 is ${entry.sha256}, expected ${want.toLowerCase()}`, { fields: [{ field: 'sha256', message: 'does not match' }] });
        }
        files.push(entry);
      }
      const manifest = TemplateInfo.parse({
        name: opts.name,
        kind: opts.kernel ? 'kernel' : opts.iso ? 'iso' : 'disk',
        os: opts.os ?? 'linux',
        ...(opts.description ? { description: opts.description } : {}),
        minMemoryMiB: opts.minMemoryMiB ?? 128,
        // an installer is used on its screen
        console: opts.console ?? (opts.iso ? 'vnc' : 'serial'),
        needsKvm: opts.needsKvm ?? false,
        ...(opts.ssh ? { ssh: true } : {}),
        files,
        ...(opts.cmdline !== undefined ? { cmdline: opts.cmdline } : {}),
        createdAt: new Date().toISOString(),
      });
      await renameIntoPlace(tmp, path.join(this.dir, opts.name), manifest, `template ${opts.name} already exists`);
      return manifest;
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Where a pull of `name` keeps its files until they are verified (hidden: list() skips it). */
  stagingDir(name: string): string {
    if (!TemplateName.safeParse(name).success) throw new InvalidField('name', 'not a template name');
    return path.join(this.dir, `.pull-${name}`);
  }

  /** The path of an installed template's file named `file` in its manifest, or undefined. */
  async fileOf(name: string, file: string): Promise<{ path: string; bytes: number } | undefined> {
    const t = await this.get(name);
    const f = t?.files.find((x) => x.file === file);
    return f ? { path: path.join(this.dir, name, f.file), bytes: f.bytes } : undefined;
  }

  /**
   * Makes a folder of verified files (`stagingDir`) the template `manifest.name`, atomically: the
   * manifest is written, then the folder renamed into place. An existing template is never
   * replaced: the same files (by sha256) count as done, other files are a 409.
   */
  async install(staged: string, manifest: TemplateInfo): Promise<TemplateInfo> {
    const parsed = TemplateInfo.parse(manifest);
    const existing = await this.get(parsed.name);
    if (existing) {
      if (!sameFiles(existing, parsed)) throw new SkyError(409, 'template_differs', `template ${parsed.name} exists here with other files: remove it first`);
      await rm(staged, { recursive: true, force: true });
      return existing;
    }
    await chmod(staged, 0o755);
    for (const f of parsed.files) await chmod(path.join(staged, f.file), 0o644);
    await renameIntoPlace(staged, path.join(this.dir, parsed.name), parsed, `template ${parsed.name} already exists`);
    return parsed;
  }

  /**
   * Removes what a crash left in the templates folder; run once when the agent starts, before any
   * pull. Always: `.rm-*` (a removal cut short) and `.upload-*` (the agent's own uploads). A `.pull-*`
   * unless the next pull of the same files can resume it (its marker is readable, the template is not
   * here, and it is younger than a week, as the catalog keeps its `.partial-*`). `.import-*` and
   * `.build-*` older than a day (a younger one may be a CLI import running now). The controller's
   * `.incoming-*` and `.partial-*` (this same folder under `skyhost up`) are its own to sweep.
   * Answers the names removed.
   */
  async sweep(log: Logger): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no template was ever here
      throw err;
    }
    const now = Date.now();
    const olderThan = async (n: string, ms: number) => now - (await stat(path.join(this.dir, n))).mtimeMs > ms;
    const removed: string[] = [];
    for (const n of names.sort()) {
      let why: string | undefined;
      if (n.startsWith('.rm-')) why = 'a removal the agent did not finish';
      else if (n.startsWith('.upload-')) why = 'an upload the agent did not finish';
      else if ((n.startsWith('.import-') || n.startsWith('.build-')) && (await olderThan(n, 24 * 3600_000))) why = 'an import or build not finished within a day';
      else if (n.startsWith('.pull-')) {
        const name = n.slice('.pull-'.length);
        const marker = await readFile(path.join(this.dir, n, '.pull.json'), 'utf8').then((t) => t, () => undefined);
        if (marker === undefined) why = 'a pull that left no marker to resume from';
        else if (await this.get(name)) why = `a pull of ${name}, which is installed`;
        else if (await olderThan(n, 7 * 24 * 3600_000)) why = 'a pull not resumed within a week';
        else log.info(`kept ${n} in the templates folder: the next pull of ${name} continues from it`);
      }
      if (!why) continue;
      await rm(path.join(this.dir, n), { recursive: true, force: true });
      log.info(`removed ${n} from the templates folder: ${why}`);
      removed.push(n);
    }
    return removed;
  }

  /** Removes a template; `inUse` names the VMs that still use it (then nothing is removed). */
  async remove(name: string, inUse: (name: string) => Promise<string[]>): Promise<void> {
    if (!(await this.get(name))) throw new NotFound(`template ${name}`);
    const users = await inUse(name);
    if (users.length > 0) throw new Conflict(`template ${name} is used by VM(s) ${users.join(', ')}: delete them first`, { vms: users });
    const trash = path.join(this.dir, `.rm-${name}-${randomBytes(4).toString('hex')}`);
    await rename(path.join(this.dir, name), trash);
    await rm(trash, { recursive: true, force: true });
  }
}

/** Refuses a file that is not an ISO 9660 image (its first volume descriptor says `CD001` at byte 32769). */
async function mustBeIso(file: string): Promise<void> {
  const info = await imageInfo(file).catch((err: Error) => {
    throw new InvalidField('iso', `must be an ISO 9660 image (qemu-img could not read it: ${err.message.split('\n')[0]})`);
  });
  if (info.format !== 'raw') throw new InvalidField('iso', `must be an ISO 9660 image, not a ${info.format} disk image`);
  const fh = await open(file, 'r');
  try {
    const magic = Buffer.alloc(5);
    const { bytesRead } = await fh.read(magic, 0, 5, 0x8001);
    if (bytesRead < 5 || magic.toString('latin1') !== 'CD001') throw new InvalidField('iso', 'must be an ISO 9660 image (no CD001 volume descriptor at byte 32769): a raw disk is imported as a disk template');
  } finally {
    await fh.close();
  }
}

/** Copies a file while hashing it; the copy is world-readable so QEMU can read it. */
async function copyHashing(from: string, to: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.length;
      cb(null, chunk);
    },
  });
  await pipeline(createReadStream(from, { highWaterMark: 1 << 20 }), tap, createWriteStream(to, { mode: 0o644 }));
  await chmod(to, 0o644);
  return { bytes, sha256: hash.digest('hex') };
}

/** Whether two manifests list the same files (names, sizes, sha256s). */
export function sameFiles(a: TemplateInfo, b: TemplateInfo): boolean {
  const key = (t: TemplateInfo) => t.files.map((f) => `${f.file}:${f.bytes}:${f.sha256}`).sort().join('|');
  return key(a) === key(b);
}

/** sha256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), async function* (src: AsyncIterable<Buffer>) {
    for await (const c of src) hash.update(c);
  });
  return hash.digest('hex');
}
