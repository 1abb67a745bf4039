// Building a template on the controller (docs/api.md#templates): `skyhost template build RECIPE` runs
// as a subprocess of its own process group (the controller may not import the agent's builder) with a
// data folder inside a catalog staging folder; what it made is then taken into the catalog as an import
// is (Catalog.addMade: every sha256 of its manifest, the disk's format, no backing file). The command
// reuses the build cache of the machine (~/.cache/skyhost), so a recipe built once takes seconds.
//
//   POST /api/templates/build {recipe, desktop?, name?}  ─▶ a job: running → done | failed
//     skyhost template build RECIPE [--desktop] --as NAME --data DATA/templates/.incoming-NAME-X/made
//       stdout "[2/4] filesystem: ..."  → stage and percent;  stderr (JSON log) → the job's log lines
//     made/templates/NAME/{manifest.json, vmlinuz, initrd, disk.qcow2} ─▶ checked ─▶ DATA/templates/NAME
//   DELETE /api/templates/builds/:id  SIGTERM to the process group (the command cleans up), SIGKILL if it
//     has not ended 30 s later; answers once the group is gone; the staging folder is removed.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { TemplateInfo, TemplateName } from '../../wire/api.ts';
import { Conflict, InvalidField, NotFound, SkyError, toSkyError } from '../../base/errors.ts';
import { runStreaming } from '../../base/exec.ts';
import { skyhostExecutable } from '../../base/executable.ts';
import type { Logger } from '../../base/log.ts';
import { compareCodeUnits } from '../../base/order.ts';
import type { Catalog } from './catalog.ts';

/** Body of `POST /api/templates/build`. */
export const BuildRequest = z.strictObject({
  /** The recipe, e.g. `debian-12` (`GET /api/templates` lists them in `recipes`). */
  recipe: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,31}$/, 'must be a recipe name such as debian-12'),
  /** With a light graphical desktop (XFCE) on the VNC display: its VMs need a host with KVM. */
  desktop: z.boolean().optional(),
  /** The template's name (default: the recipe's, e.g. `debian-12` or `debian-12-desktop`). */
  name: TemplateName.optional(),
});
export type BuildRequest = z.infer<typeof BuildRequest>;

/** A build as `GET /api/templates` lists it (without its log). */
export const BuildSummary = z.object({
  id: z.string(),
  recipe: z.string(),
  desktop: z.boolean(),
  /** The template it makes. */
  name: z.string(),
  state: z.enum(['running', 'done', 'failed']),
  /** The stage the command last reported (packages, filesystem, image, hash, catalog). */
  stage: z.string().optional(),
  /** 0-100, from the stages the command reports. */
  percent: z.number().int().optional(),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  /** Why it failed (`code` `cancelled` when it was cancelled). */
  error: z.object({ code: z.string(), message: z.string() }).optional(),
});
export type BuildSummary = z.infer<typeof BuildSummary>;

/** A build with its log lines (`GET /api/templates/builds/:id`). */
export const BuildJob = BuildSummary.extend({
  /** Log lines, numbered from 1; with `?after=N` only those after N. The oldest are dropped past the log's bound. */
  lines: z.array(z.object({ n: z.number().int(), text: z.string() })),
  /** The number of the newest line (0: none yet): ask `?after=` it next time. */
  lastLine: z.number().int(),
  /** The template once it is in the catalog. */
  template: TemplateInfo.optional(),
});
export type BuildJob = z.infer<typeof BuildJob>;

/** Lines of log a build keeps (the oldest are dropped). */
export const MAX_LOG_LINES = 2000;
/** How long a finished build stays listed. */
const KEEP_FINISHED_MS = 10 * 60_000;
/**
 * Between SIGTERM and SIGKILL of a cancelled build's process group. On SIGTERM the command stops its own
 * children (mmdebstrap gets 3 s to end its chroot's processes) and removes its work folder in the build
 * cache, a half-installed system of up to a few GB: seconds, more on a busy disk. A SIGKILL before that
 * leaves the folder until the next build sweeps it. Cancel still answers as soon as the group is gone.
 */
const CANCEL_GRACE_MS = 30_000;
/** A build that runs longer than this is stopped (a cold desktop build on a slow mirror takes under an hour). */
const BUILD_TIMEOUT_MS = 3 * 3600_000;
/** The command's stage line on stdout: `  12 s [2/4] filesystem: ext4 file system of 2 GiB`. */
const STAGE_LINE = /\[(\d+)\/(\d+)\] ([a-z]+)/;
/** Where each stage of `template build` begins, in percent (installing the packages takes most of a cold build). */
const STAGE_START: Record<string, number> = { packages: 0, filesystem: 60, image: 72, hash: 85 };
/** mmdebstrap's steps inside the packages stage (its `I:` lines), and the percent each begins at. */
const PACKAGE_STEPS: [RegExp, number][] = [
  [/^I: running apt-get update/, 2], [/^I: downloading packages/, 5], [/^I: extracting archives/, 15],
  [/^I: installing essential packages/, 20], [/^I: installing remaining packages/, 30], [/^I: running --customize-hook/, 55],
];

/**
 * The recipes `skyhost template build` knows on this machine: debian-12 and debian-13, and on an Ubuntu
 * machine that Ubuntu release (the list of agent/debian-template.ts distroTargets, which the controller
 * may not import; the command checks again and its refusal ends the build).
 */
export function buildRecipes(osRelease = readOsRelease()): string[] {
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(osRelease)?.[1] ?? '';
  const out = ['debian-12', 'debian-13'];
  if (get('ID') === 'ubuntu' && get('VERSION_ID') && get('VERSION_CODENAME')) out.push(`ubuntu-${get('VERSION_ID')}`);
  return out;
}

function readOsRelease(): string {
  try {
    return readFileSync('/etc/os-release', 'utf8');
  } catch {
    return ''; // no os-release: the Debian recipes only
  }
}

class Build {
  readonly view: BuildSummary;
  readonly abort = new AbortController();
  lines: { n: number; text: string }[] = [];
  lastLine = 0;
  template?: TemplateInfo;
  done!: Promise<void>;
  cancelledBy?: string;

  constructor(view: BuildSummary) {
    this.view = view;
  }

  add(text: string): void {
    this.lines.push({ n: ++this.lastLine, text: text.slice(0, 500) });
    if (this.lines.length > MAX_LOG_LINES) this.lines.splice(0, this.lines.length - MAX_LOG_LINES);
  }
}

export interface TemplateBuildsOptions {
  catalog: Catalog;
  log: Logger;
  /** Whether a template of this name exists anywhere (the catalog or a host). */
  exists: (name: string) => boolean;
  /** The skyhost executable (default: base/executable.ts). */
  executable?: () => string;
  recipes?: () => string[];
}

export class TemplateBuilds {
  private readonly catalog: Catalog;
  private readonly log: Logger;
  private readonly exists: (name: string) => boolean;
  private readonly executable: () => string;
  readonly recipes: () => string[];
  private readonly jobs = new Map<string, Build>();

  constructor(opts: TemplateBuildsOptions) {
    this.catalog = opts.catalog;
    this.log = opts.log;
    this.exists = opts.exists;
    this.executable = opts.executable ?? skyhostExecutable;
    this.recipes = opts.recipes ?? (() => buildRecipes());
  }

  /**
   * Starts a build (422 naming the field for an unknown recipe or a bad name, 409 when the name is
   * taken). The same recipe already building as the same template is joined (`joined: true`); as
   * another template it is a 409 (the two would fight over the build cache).
   */
  start(input: unknown, by: string): { build: BuildJob; joined: boolean } {
    const parsed = BuildRequest.safeParse(input);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new InvalidField(issue.path.join('.') || 'body', issue.message);
    }
    const req = parsed.data;
    const recipes = this.recipes();
    if (!recipes.includes(req.recipe)) throw new InvalidField('recipe', `no recipe ${req.recipe}: choose ${recipes.join(', ')}`);
    const desktop = req.desktop === true;
    const name = req.name ?? (desktop ? `${req.recipe}-desktop` : req.recipe);
    this.forget();
    const running = [...this.jobs.values()].filter((j) => j.view.state === 'running');
    const same = running.find((j) => j.view.recipe === req.recipe && j.view.desktop === desktop);
    if (same && same.view.name === name) return { build: this.view(same), joined: true };
    if (same) {
      throw new Conflict(`${req.recipe}${desktop ? ' with the desktop' : ''} is being built already, as template ${same.view.name} (build ${same.view.id}): wait for it to end, or cancel it`,
        { build: same.view.id });
    }
    if (running.some((j) => j.view.name === name)) {
      throw new Conflict(`template ${name} is being built already: choose another name`, { fields: [{ field: 'name', message: 'being built' }] });
    }
    if (this.exists(name) || this.catalog.imports().some((j) => j.name === name && !j.finishedAt)) {
      throw new Conflict(`template ${name} already exists: choose another name, or delete it first`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    // no executable to run (a checkout without `npm run build`): refused before anything starts
    const executable = this.executable();
    const job = new Build({ id: randomBytes(6).toString('hex'), recipe: req.recipe, desktop, name, state: 'running', percent: 0, startedAt: new Date().toISOString() });
    this.jobs.set(job.view.id, job);
    job.add(`building ${req.recipe}${desktop ? ' with the desktop' : ''} as template ${name} (asked by ${by})`);
    this.log.info(`building template ${name} from recipe ${req.recipe}${desktop ? ' with the desktop' : ''}`, { build: job.view.id, by });
    job.done = this.run(job, executable).then(() => {
      job.view.state = 'done';
      job.view.percent = 100;
      job.view.stage = 'done';
      job.add(`template ${name} is in the catalog (disk sha256 ${job.template?.files.find((f) => f.role === 'disk')?.sha256 ?? '-'})`);
      this.log.info(`template ${name} built into the catalog`, { build: job.view.id, ms: Date.now() - Date.parse(job.view.startedAt) });
    }, (err: unknown) => {
      const sky = job.cancelledBy ? new SkyError(499, 'cancelled', `cancelled by ${job.cancelledBy}: nothing was kept`) : toSkyError(err);
      job.view.state = 'failed';
      job.view.error = { code: sky.code, message: sky.message };
      job.add(`failed: ${sky.message}`);
      this.log.warn(`build of template ${name} failed: ${sky.message}`, { build: job.view.id, code: sky.code });
    }).finally(() => {
      job.view.finishedAt = new Date().toISOString();
    });
    return { build: this.view(job), joined: false };
  }

  /** A build with its log lines after `after` (all kept lines without it). */
  get(id: string, after?: number): BuildJob {
    const job = this.jobs.get(id);
    if (!job) throw new NotFound(`build ${JSON.stringify(id.slice(0, 32))} (finished builds are kept ${KEEP_FINISHED_MS / 60_000} minutes)`);
    return this.view(job, after);
  }

  /** Builds running or finished lately, newest first. */
  list(): BuildSummary[] {
    this.forget();
    return [...this.jobs.values()].map((j) => ({ ...j.view })).sort((a, b) => compareCodeUnits(b.startedAt, a.startedAt));
  }

  /** Cancels a running build: its process group is killed and its staging folder removed; answers it once it has ended. */
  async cancel(id: string, by: string): Promise<BuildJob> {
    const job = this.jobs.get(id);
    if (!job) throw new NotFound(`build ${JSON.stringify(id.slice(0, 32))}`);
    if (job.view.state !== 'running') throw new Conflict(`build ${id} has ended (${job.view.state}): nothing to cancel`);
    job.cancelledBy = by;
    job.add(`cancelling (asked by ${by})`);
    job.abort.abort();
    await job.done;
    return this.view(job);
  }

  /** Cancels every build under way (the controller is stopping). */
  async close(): Promise<void> {
    for (const job of this.jobs.values()) {
      if (job.view.state !== 'running') continue;
      job.cancelledBy = 'the controller stopping';
      job.abort.abort();
    }
    await Promise.allSettled([...this.jobs.values()].map((j) => j.done));
  }

  private view(job: Build, after?: number): BuildJob {
    return {
      ...job.view,
      lines: after === undefined ? [...job.lines] : job.lines.filter((l) => l.n > after),
      lastLine: job.lastLine,
      ...(job.template ? { template: job.template } : {}),
    };
  }

  private forget(): void {
    const now = Date.now();
    for (const [id, j] of this.jobs) if (j.view.finishedAt && now - Date.parse(j.view.finishedAt) > KEEP_FINISHED_MS) this.jobs.delete(id);
  }

  /** The command into a staging folder, then what it made into the catalog. */
  private async run(job: Build, executable: string): Promise<void> {
    const { recipe, desktop, name } = job.view;
    job.template = await this.catalog.addMade(name, async (staging) => {
      const made = path.join(staging, 'made');
      const args = ['template', 'build', recipe, ...(desktop ? ['--desktop'] : []), '--as', name, '--data', made, '--log-level', 'debug'];
      job.add(`$ skyhost ${args.join(' ')}`);
      const stackLines: string[] = [];
      // the limit ends the whole process group as a cancel does (a timeout of the command alone would leave mmdebstrap running)
      const limit = AbortSignal.timeout(BUILD_TIMEOUT_MS);
      try {
        await runStreaming(executable, args, {
          timeout: 0, signal: AbortSignal.any([job.abort.signal, limit]), processGroup: true, killGraceMs: CANCEL_GRACE_MS,
          // the command's log as JSON lines, whatever a config file says
          env: { SKYHOST_LOG_FORMAT: 'json' },
          onLine: (line, stream) => {
            if (/^\s+at /.test(line)) return void stackLines.push(line); // a stack is for the controller's log, not the page
            const text = stream === 'stdout' ? this.stageLine(job, line) : logLine(line);
            if (!text) return;
            const step = job.view.stage === 'packages' ? PACKAGE_STEPS.find(([re]) => re.test(text)) : undefined;
            if (step) job.view.percent = Math.max(job.view.percent ?? 0, step[1]);
            job.add(text);
          },
        });
      } catch (err) {
        if (stackLines.length > 0) this.log.warn(`the build command of ${name} crashed`, { build: job.view.id, stack: stackLines.join('\n') });
        if (limit.aborted && !job.abort.signal.aborted) throw new SkyError(504, 'build_timeout', `the build took longer than ${BUILD_TIMEOUT_MS / 3600_000} hours and was stopped: nothing was kept`);
        throw buildFailure(err, job);
      }
      job.view.stage = 'catalog';
      job.view.percent = 90;
      job.add('checking the files (sha256, format, no backing file) and taking them into the catalog');
      const dir = path.join(made, 'templates', name);
      let manifest: TemplateInfo;
      try {
        manifest = TemplateInfo.parse(JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')));
      } catch (err) {
        throw new SkyError(502, 'build_failed', `the build command ended without a valid template ${name} (${(err as Error).message.split('\n')[0]})`);
      }
      for (const f of manifest.files) await rename(path.join(dir, path.basename(f.file)), path.join(staging, path.basename(f.file)));
      await rm(made, { recursive: true, force: true });
      return { manifest };
    });
  }

  /** A stdout line of the command: its stage moves the percent (the stages take 90 %, the catalog the rest). */
  private stageLine(job: Build, line: string): string {
    const text = line.trim();
    const m = STAGE_LINE.exec(text);
    if (m) {
      const [at, of, stage] = [Number(m[1]), Number(m[2]), m[3]!];
      const start = STAGE_START[stage] ?? (of > 0 && at >= 1 && at <= of ? Math.floor(((at - 1) * 90) / of) : undefined);
      if (start !== undefined) job.view.percent = Math.max(job.view.percent ?? 0, start);
      job.view.stage = stage;
    }
    return text;
  }
}

/** A stderr line of the command: a JSON log record as `level: message` (mmdebstrap's own lines as they are). */
function logLine(line: string): string {
  if (!line.startsWith('{')) return line.trim();
  try {
    const r = JSON.parse(line) as { level?: string; msg?: string; line?: unknown };
    if (typeof r.line === 'string') return r.line;
    return `${r.level ?? 'info'}: ${r.msg ?? ''}`;
  } catch {
    return line.trim(); // not JSON after all: shown as it is
  }
}

/** The failure of the build command in words: its own last `skyhost: ...` line, else its exit code. */
function buildFailure(err: unknown, job: Build): SkyError {
  const sky = toSkyError(err);
  if (sky.code === 'cancelled' || sky.code === 'missing_tool' || sky.code === 'binary_missing') return sky;
  const said = [...job.lines].reverse().find((l) => l.text.startsWith('skyhost: ') && !l.text.startsWith('skyhost: unexpected error'));
  const exit = (sky.details as { exitCode?: number } | undefined)?.exitCode;
  const why = said ? said.text.slice('skyhost: '.length) : `the build command failed${exit !== undefined ? ` (exit code ${exit})` : ''}: its log above says why`;
  return new SkyError(exit === 2 ? 422 : 502, 'build_failed', `${why}: nothing was kept`);
}
