// A build of an installer ISO (with the Ubuntu download before it when asked), and the writing of the
// result to a USB stick: long operations that the web installer polls and the terminal menu awaits.
// Each job keeps only what the progress pages show; failures keep the plain-words message.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { SkyError, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import type { BuildIsoOptions, BuildIsoResult, BuildProgress } from '../../iso/remaster.ts';
import type { WriteOptions, WriteResult } from '../../iso/usb.ts';
import type { Drive } from '../../iso/usb-guards.ts';
import type { DownloadedIso, DownloadOptions } from './download.ts';
import type { IsoSource } from './plan.ts';
import type { InstallerOptionsInput } from '../../autoinstall/index.ts';

/** What the jobs call to do the work (the real functions, or others in tests). */
export interface JobDeps {
  buildIso: (opts: BuildIsoOptions, onProgress: (p: BuildProgress) => void) => Promise<BuildIsoResult>;
  download: (o: DownloadOptions) => Promise<DownloadedIso>;
  writeImage: (image: string, device: string, opts: WriteOptions) => Promise<WriteResult>;
  /** Built ISOs go here; downloaded Ubuntu ISOs go in its `ubuntu/` folder. */
  workDir: string;
  log: Logger;
}

export type Stage = 'downloading' | 'building' | 'built' | 'failed';

export interface UsbWrite {
  drive: Drive;
  stage: 'writing' | 'syncing' | 'verifying' | 'done' | 'failed';
  bytes: number;
  total: number;
  error?: string;
  sha256?: string;
  seconds?: number;
}

export interface Job {
  id: string;
  role: string;
  /** The options it was started with: a failed download goes back to the ISO step with them. */
  options: InstallerOptionsInput;
  source: IsoSource;
  stage: Stage;
  /** 0..1 of the current stage. */
  fraction: number;
  /** What is happening, in words. */
  message: string;
  error?: string;
  /** The Ubuntu ISO used (after a download: the cached copy). */
  ubuntuIso?: string;
  result?: BuildIsoResult;
  usb?: UsbWrite;
  done: Promise<void>;
}

const STEP_WORDS: Record<BuildProgress['step'], string> = {
  check: 'Checking the options',
  inspect: 'Reading the Ubuntu ISO',
  prepare: 'Preparing the installer files',
  write: 'Writing the installer ISO',
  done: 'Done',
};

export class SetupJobs {
  private readonly jobs = new Map<string, Job>();
  private readonly deps: JobDeps;

  constructor(deps: JobDeps) {
    this.deps = deps;
  }

  /** Where downloaded Ubuntu ISOs are kept (and found again). */
  get ubuntuDir(): string {
    return path.join(this.deps.workDir, 'ubuntu');
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /** Starts download (if asked) and build; the returned job changes as they go. */
  start(options: InstallerOptionsInput, source: IsoSource, outFile?: string): Job {
    const id = randomBytes(8).toString('hex');
    mkdirSync(this.deps.workDir, { recursive: true });
    const out = outFile ?? path.join(this.deps.workDir, `skyhost-${options.role}-${new Date().toISOString().slice(0, 10)}-${id.slice(0, 6)}.iso`);
    const job: Job = {
      id,
      role: options.role,
      options,
      source,
      stage: source.kind === 'download' ? 'downloading' : 'building',
      fraction: 0,
      message: source.kind === 'download' ? `Downloading Ubuntu ${source.release}` : STEP_WORDS.check,
      done: Promise.resolve(),
    };
    this.jobs.set(id, job);
    job.done = this.run(job, options, source, out);
    return job;
  }

  private async run(job: Job, options: InstallerOptionsInput, source: IsoSource, out: string): Promise<void> {
    try {
      let iso: string;
      if (source.kind === 'download') {
        const got = await this.deps.download({
          mirror: source.mirror,
          release: source.release,
          dir: path.join(this.deps.workDir, 'ubuntu'),
          onProgress: (p) => {
            job.fraction = p.total ? p.bytes / p.total : 0;
            job.message = `Downloading Ubuntu ${source.release}: ${Math.round(p.bytes / 1e6)} of ${p.total ? Math.round(p.total / 1e6) : '?'} MB`;
          },
        });
        iso = got.file;
        job.message = `Downloaded ${got.name}; its sha256 matches SHA256SUMS`;
      } else {
        iso = source.path;
      }
      job.ubuntuIso = iso;
      job.stage = 'building';
      job.fraction = 0;
      job.result = await this.deps.buildIso({ ...options, ubuntuIso: iso, out }, (p) => {
        job.fraction = p.fraction;
        job.message = STEP_WORDS[p.step];
      });
      job.stage = 'built';
      job.fraction = 1;
      job.message = 'The installer is ready';
    } catch (e) {
      job.stage = 'failed';
      job.error = this.explain(e, 'build failed');
    }
  }

  /** Starts writing the job's ISO to `drive` (already checked and confirmed by the caller). */
  writeUsb(job: Job, drive: Drive): UsbWrite {
    if (job.stage !== 'built' || !job.result) throw new SkyError(409, 'not_built', 'the installer is not built yet');
    if (job.usb && !['done', 'failed'].includes(job.usb.stage)) throw new SkyError(409, 'busy', `already writing to ${job.usb.drive.path}`);
    const usb: UsbWrite = { drive, stage: 'writing', bytes: 0, total: job.result.bytes };
    job.usb = usb;
    const started = performance.now();
    void this.deps
      .writeImage(job.result.out, drive.path, {
        onProgress: (p) => {
          usb.stage = p.phase;
          usb.bytes = p.bytes;
          usb.total = p.total;
        },
      })
      .then((r) => {
        usb.stage = 'done';
        if (r.sha256) usb.sha256 = r.sha256;
        usb.seconds = (performance.now() - started) / 1000;
      })
      .catch((e: unknown) => {
        usb.stage = 'failed';
        usb.error = this.explain(e, 'writing the USB stick failed');
      });
    return usb;
  }

  /** A user's error keeps its message; a bug is logged and told as such. */
  private explain(e: unknown, what: string): string {
    const sky = toSkyError(e);
    if (sky.status >= 500 && sky.code === 'internal') {
      this.deps.log.error(what, { err: e });
      return `${what} because of an error in SkyHost itself (details are in the log of "skyhost setup")`;
    }
    return sky.message;
  }
}
