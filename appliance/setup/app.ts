// `skyhost setup`: the web installer. Role -> options -> Ubuntu ISO -> build (live progress) ->
// download, or write to a USB stick (drive list with the guards in plain words, typed confirmation,
// progress, read-back check). htmx swaps each step into #step; every form also works without it.
//
//   GET  /                     role            (?controllerUrl=&joinToken= prefill, from "Add a host")
//   GET  /options?role=        options form    POST /options -> 422 form with errors | ISO step
//   POST /build                -> job page     (422 ISO step with errors)
//   GET  /jobs/:id             progress / result (polled every 700 ms while it runs)
//   GET  /jobs/:id/download    the installer ISO
//   GET  /jobs/:id/usb         drives / write progress   POST /jobs/:id/usb -> start writing (422 when refused)
//   GET  /jobs/:id/iso         the ISO step again with the job's options (after a failed download)
//   GET  /check-controller     "Test": the controller's /healthz from this PC, in one sentence
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { contentType, readAsset } from '../../base/assets.ts';
import { SkyError } from '../../base/errors.ts';
import { errorHandler } from '../../base/http.ts';
import type { Logger } from '../../base/log.ts';
import { wantsFragment } from '../../base/views.ts';
import { effectivePrefix, installerOptionsSchema, RELEASES, type InstallerOptions, type InstallerOptionsInput } from '../../autoinstall/index.ts';
import { checkTarget, listDrives, type DriveChoice } from '../../iso/usb.ts';
import { confirmationMatches, confirmationWord, describeDrive, formatBytes, hasErrors } from '../../iso/usb-guards.ts';
import type { Job, SetupJobs, UsbWrite } from './jobs.ts';
import {
  checkIsoForm, checkOptionsForm, fieldOfError, hashPassword, readIsoForm, readOptionsForm,
  toInstallerOptions, type FieldErrors, type IsoForm, type OptionsForm,
} from './plan.ts';
import { setupGuard } from './guard.ts';
import { reachController } from './reach.ts';
import { renderStep } from './views.ts';

export interface SetupDeps {
  log: Logger;
  jobs: SetupJobs;
  /** Default mirror for downloading Ubuntu (config `ubuntuMirror`). */
  ubuntuMirror: string;
  /** Checks an ISO is an Ubuntu live-server ISO before a build starts (iso/remaster.ts inspectUbuntuIso). */
  inspectIso?: (file: string) => Promise<unknown>;
  /** Offer loop devices as USB sticks (tests only). */
  allowLoop?: boolean;
  /** The per-run secret of the printed address (guard.ts setupKey). */
  key: string;
  /** The IP address given to --listen, accepted as a Host besides loopback. */
  listenAddress?: string;
  /** Folders searched for Ubuntu ISOs already on this PC (default: the download cache, ~/Downloads of every user, the current folder). */
  isoFolders?: string[];
}

const ROLE_TITLES: Record<string, string> = { agent: 'host node', controller: 'controller' };
const ROLES = [
  { value: 'agent', title: 'Host node', button: 'Set up host nodes', text: 'A lab PC that runs VMs for students. Make one stick and boot every PC of the room from it.' },
  { value: 'controller', title: 'Controller', button: 'Set up the controller', text: 'The one PC that serves the SkyHost web page and shares VMs out over the host nodes.' },
];

export function buildSetupApp(deps: SetupDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(setupGuard({ key: deps.key, ...(deps.listenAddress ? { listenAddress: deps.listenAddress } : {}) }));
  app.use(express.urlencoded({ extended: false, limit: '64kb' }));

  app.get('/setup.css', asset('views/setup/setup.css'));
  app.get('/setup.js', asset('views/setup/setup.js'));
  app.get('/static/vendor/htmx.min.js', asset('static/vendor/htmx.min.js'));

  app.get('/', (req, res) => {
    const q = readOptionsForm(req.query);
    renderStep(req, res, { view: 'role', title: 'Choose what to set up', data: { roles: ROLES, controllerUrl: q.controllerUrl, joinToken: q.joinToken } });
  });

  // "Test": from this PC, before anything is built (bounded: reach.ts REACH_TIMEOUT_MS).
  app.get('/check-controller', wrap(async (req, res) => {
    const url = typeof req.query.controllerUrl === 'string' ? req.query.controllerUrl.slice(0, 2048) : '';
    const token = typeof req.query.joinToken === 'string' ? req.query.joinToken.slice(0, 4096) : '';
    renderStep(req, res, { view: 'controller-check', title: 'Controller test', data: { ...(await reachController(url, undefined, token)) } });
  }));

  app.get('/options', (req, res) => {
    const form = readOptionsForm(req.query);
    if (!ROLE_TITLES[form.role]) {
      res.redirect(303, '/');
      return;
    }
    renderOptions(req, res, form, {});
  });

  app.post('/options', wrap(async (req, res) => {
    const form = readOptionsForm(req.body);
    const errors = checkOptionsForm(form);
    if (Object.keys(errors).length) {
      renderOptions(req, res, form, errors, 422);
      return;
    }
    // A controller address that does not answer from here is refused, unless the teacher says the
    // controller is not running yet (sticks are often made first): every PC would look for it there.
    const notRunningYet = (req.body as Record<string, unknown>).controllerNotRunning === 'yes';
    if (form.role === 'agent' && form.controllerUrl && !notRunningYet) {
      const reached = await reachController(form.controllerUrl, undefined, form.joinToken);
      if (!reached.ok) {
        const message = `${reached.message} Start the controller and press Next again, or tick “not running yet” to make the stick anyway.`;
        renderOptions(req, res, form, { controllerUrl: message }, 422, { offerNotRunning: true });
        return;
      }
    }
    const hash = form.password ? await hashPassword(form.password) : undefined;
    const plan = toInstallerOptions(form, hash);
    renderIso(req, res, plan, readIsoForm({}, { ubuntuMirror: deps.ubuntuMirror }), {});
  }));

  app.post('/build', wrap(async (req, res) => {
    const plan = readPlan(req.body);
    if (!plan) {
      renderStep(req, res, { view: 'error', title: 'Start again', status: 400, data: { heading: 'Start again', message: 'The options did not come through intact. Please start again from the first step.' } });
      return;
    }
    const isoForm = readIsoForm(req.body, { ubuntuMirror: deps.ubuntuMirror });
    const { source, errors } = checkIsoForm(isoForm);
    if (!source) {
      renderIso(req, res, plan, isoForm, errors, 422);
      return;
    }
    if (source.kind === 'path' && deps.inspectIso) {
      try {
        await deps.inspectIso(source.path);
      } catch (e) {
        const f = fieldOfError(e);
        if (!f) throw e;
        renderIso(req, res, plan, isoForm, { isoPath: f.message.replace(/^ubuntuIso: /, '') }, 422);
        return;
      }
    }
    const job = deps.jobs.start(plan, source);
    if (wantsFragment(req)) {
      res.setHeader('HX-Push-Url', `/jobs/${job.id}`);
      renderJob(req, res, job, await usbStep(job, {}));
    } else {
      res.redirect(303, `/jobs/${job.id}`);
    }
  }));

  app.get('/jobs/:id', wrap(async (req, res) => {
    const job = findJob(deps, String(req.params.id));
    renderJob(req, res, job, await usbStep(job, {}));
  }));

  // After a failed download: the ISO step again, every option as it was typed, with the ISOs already on this PC.
  app.get('/jobs/:id/iso', (req, res) => {
    const job = findJob(deps, String(req.params.id));
    const mirror = job.source.kind === 'download' ? job.source.mirror : deps.ubuntuMirror;
    const release = job.source.kind === 'download' ? job.source.release : '24.04';
    renderIso(req, res, job.options, { source: 'path', isoPath: job.source.kind === 'path' ? job.source.path : '', ubuntuMirror: mirror, release }, {},
      200, job.stage === 'failed' ? job.error : undefined);
  });

  app.get('/jobs/:id/download', (req, res, next) => {
    const job = findJob(deps, String(req.params.id));
    if (job.stage !== 'built' || !job.result) throw new SkyError(409, 'not_built', 'the installer is not built yet');
    res.download(job.result.out, path.basename(job.result.out), { dotfiles: 'allow' }, (err) => {
      if (err && !res.headersSent) next(err);
    });
  });

  app.get('/jobs/:id/usb', wrap(async (req, res) => {
    const job = findJob(deps, String(req.params.id));
    renderUsb(req, res, await usbStep(job, {}));
  }));

  app.post('/jobs/:id/usb', wrap(async (req, res) => {
    const job = findJob(deps, String(req.params.id));
    if (job.stage !== 'built' || !job.result) throw new SkyError(409, 'not_built', 'the installer is not built yet');
    const device = typeof req.body.device === 'string' ? req.body.device : '';
    const confirm = typeof req.body.confirm === 'string' ? req.body.confirm : '';
    const again = (errors: FieldErrors) => usbStep(job, { errors, selected: device, confirm }).then((v) => renderUsb(req, res, v, 422));
    if (!device) return again({ device: 'Choose a drive first.' });
    const choices = await drivesFor(job);
    if (!choices.some((c) => c.drive.path === device)) return again({ device: `${device} is not one of the drives listed: press “Look again”.` });
    const { drive, findings } = await checkTarget(job.result.out, device, deps.allowLoop ? { allowLoop: true } : {});
    if (hasErrors(findings)) return again({ device: `SkyHost will not write to ${describeDrive(drive)}: ${findings.filter((f) => f.level === 'error').map((f) => f.message).join(' ')}` });
    if (!confirmationMatches(drive, confirm)) {
      return again({ confirm: `To erase ${describeDrive(drive)}, type “${confirmationWord(drive)}” exactly.` });
    }
    deps.jobs.writeUsb(job, drive);
    renderUsb(req, res, await usbStep(job, {}));
  }));

  app.use((req, _res, next) => next(new SkyError(404, 'not_found', `there is no page ${req.path}`)));
  app.use(errorHandler(deps.log, 'request failed', (sky, req, res) => {
    renderStep(req, res, { view: 'error', title: 'Problem', status: sky.status, data: { heading: sky.status === 404 ? 'Not found' : 'Something went wrong', message: sky.message } });
  }));

  function renderOptions(req: Request, res: Response, form: OptionsForm, errors: FieldErrors, status = 200, extra: { offerNotRunning?: boolean } = {}): void {
    renderStep(req, res, {
      view: 'options',
      title: 'Options',
      status,
      data: {
        ...extra,
        form: { ...form, password: '' },
        errors,
        errorCount: Object.keys(errors).length,
        isAgent: form.role === 'agent',
        roleTitle: ROLE_TITLES[form.role],
        prefixPlaceholder: form.role === 'controller' ? 'skyhost-controller' : 'skyhost-host',
        backUrl: `/?${new URLSearchParams(Object.entries({ controllerUrl: form.controllerUrl, joinToken: form.joinToken }).filter(([, v]) => v)).toString()}`,
        passwordHelp: errors.password ? undefined : 'At least 8 characters. Leave empty to log in with an SSH key only.' + (status === 422 ? ' (Type it again: passwords are not sent back to the page.)' : ''),
      },
    });
  }

  function renderIso(req: Request, res: Response, plan: InstallerOptionsInput, form: IsoForm, errors: FieldErrors, status = 200, failure?: string): void {
    const found = findIsos(deps.isoFolders ?? defaultIsoFolders(deps.jobs.ubuntuDir));
    renderStep(req, res, {
      view: 'iso', title: 'Ubuntu ISO', status,
      data: { plan: JSON.stringify(plan), form, errors, releases: RELEASES, found, failure, recap: recapOf(plan) },
    });
  }

  function renderJob(req: Request, res: Response, job: Job, usb: Record<string, unknown>): void {
    const result = job.result;
    renderStep(req, res, {
      view: 'job',
      title: job.stage === 'built' ? 'Installer ready' : 'Building',
      data: {
        id: job.id,
        polling: job.stage === 'downloading' || job.stage === 'building',
        downloading: job.stage === 'downloading',
        failed: job.stage === 'failed',
        downloadFailed: job.stage === 'failed' && job.source.kind === 'download' && !job.ubuntuIso,
        built: job.stage === 'built',
        error: job.error,
        percent: Math.round(job.fraction * 100),
        message: job.message,
        stepNumber: job.stage === 'built' ? 4 : 3,
        roleTitle: ROLE_TITLES[job.role],
        fileName: result && path.basename(result.out),
        size: result && formatBytes(result.bytes),
        release: result?.release,
        warnings: result?.warnings ?? [],
        recap: recapOf(job.options),
        usb,
      },
    });
  }

  function renderUsb(req: Request, res: Response, view: Record<string, unknown>, status = 200): void {
    renderStep(req, res, { view: 'usb', title: 'USB stick', status, data: view });
  }

  async function drivesFor(job: Job): Promise<DriveChoice[]> {
    if (!job.result) return [];
    return listDrives({ image: job.result.out, imageSize: job.result.bytes, ...(deps.allowLoop ? { allowLoop: true } : {}) });
  }

  /** The USB part of the result page: write progress, or the drives to choose from. */
  async function usbStep(job: Job, form: { errors?: FieldErrors; selected?: string; confirm?: string }): Promise<Record<string, unknown>> {
    if (job.stage !== 'built' || !job.result) return { id: job.id };
    const usb = job.usb;
    if (usb && ['writing', 'syncing', 'verifying'].includes(usb.stage)) {
      return { id: job.id, writing: true, drive: describeDrive(usb.drive), percent: usbPercent(usb), phase: USB_PHASES[usb.stage] };
    }
    const choices = await drivesFor(job);
    return {
      id: job.id,
      recap: usb?.stage === 'done' ? { ...recapOf(job.options), drive: describeDrive(usb.drive) } : undefined,
      anyDrive: choices.some((c) => !hasErrors(c.findings)),
      done: usb?.stage === 'done',
      failure: usb?.stage === 'failed' ? usb.error : undefined,
      drive: usb && describeDrive(usb.drive),
      shortSha: usb?.sha256?.slice(0, 16),
      imageSize: formatBytes(job.result.bytes),
      errors: form.errors ?? {},
      confirm: form.confirm ?? '',
      drives: choices.map(({ drive, findings }) => ({
        path: drive.path,
        label: describeDrive(drive),
        ok: !hasErrors(findings),
        errors: findings.filter((f) => f.level === 'error').map((f) => f.message),
        warnings: findings.filter((f) => f.level === 'warning').map((f) => f.message),
        confirmWord: confirmationWord(drive),
        selected: form.selected === drive.path,
      })),
    };
  }

  return app;
}

/** What goes onto the stick, in the words of the options page (the join token shown only in part). */
function recapOf(plan: InstallerOptionsInput): Record<string, unknown> {
  const agent = plan.role === 'agent';
  const token = plan.joinToken;
  return {
    role: ROLE_TITLES[plan.role] ?? plan.role,
    agent,
    controller: plan.controllerUrl ?? 'none given: each PC finds the controller on the school network (mDNS)',
    token: token ? `${token.slice(0, 5)}…${token.slice(-4)} (${token.length} characters, hidden)` : 'none: each PC waits on the Hosts page for your approval',
    hostnames: `${effectivePrefix(plan as InstallerOptions)}-xxxxxx (xxxxxx from each PC's network card)`,
    adminUser: plan.adminUser ?? 'skyhost',
  };
}

/** Where Ubuntu ISOs may already be on this PC: the download cache, every user's Downloads, the current folder. */
function defaultIsoFolders(cache: string): string[] {
  const homes = ['/root', ...listDir('/home').map((h) => path.join('/home', h))];
  return [cache, ...homes.map((h) => path.join(h, 'Downloads')), os.homedir(), process.cwd()];
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return []; // a folder that is not there (or not ours to read) has no ISOs to offer
  }
}

/** Ubuntu server ISOs in `folders` (not below them), newest first, at most 12. */
function findIsos(folders: string[]): Array<{ path: string; size: string }> {
  const out: Array<{ path: string; size: string; mtime: number }> = [];
  for (const dir of new Set(folders)) {
    for (const name of listDir(dir)) {
      if (!/^ubuntu-.*\.iso$/i.test(name)) continue;
      const file = path.join(dir, name);
      try {
        const st = statSync(file);
        if (st.isFile()) out.push({ path: file, size: formatBytes(st.size), mtime: st.mtimeMs });
      } catch {
        continue; // gone or unreadable since the listing: not offered
      }
    }
  }
  return out.sort((a, b) => b.mtime - a.mtime).slice(0, 12).map(({ path: p, size }) => ({ path: p, size }));
}

const USB_PHASES: Record<string, string> = {
  writing: 'Writing the installer',
  syncing: 'Making sure everything reached the stick',
  verifying: 'Reading it back to check every byte',
};

/** One bar over the whole write: 60% writing, 5% flushing, 35% reading back. */
function usbPercent(u: UsbWrite): number {
  const f = u.total ? u.bytes / u.total : 0;
  const p = u.stage === 'writing' ? 0.6 * f : u.stage === 'syncing' ? 0.6 : 0.65 + 0.35 * f;
  return Math.round(p * 100);
}

function findJob(deps: SetupDeps, id: string | undefined): Job {
  const job = id ? deps.jobs.get(id) : undefined;
  if (!job) throw new SkyError(404, 'not_found', 'this build is not known (the setup program may have been restarted): start again');
  return job;
}

/** The options carried from the options step, checked again (a hidden field is still user input). */
function readPlan(body: unknown): InstallerOptionsInput | undefined {
  const raw = (body as { plan?: unknown } | undefined)?.plan;
  if (typeof raw !== 'string' || raw.length > 32_000) return undefined;
  try {
    const plan: unknown = JSON.parse(raw);
    return installerOptionsSchema.safeParse(plan).success ? (plan as InstallerOptionsInput) : undefined;
  } catch {
    return undefined;
  }
}

function asset(key: string) {
  return (_req: Request, res: Response, next: NextFunction) => {
    const body = readAsset(key);
    if (!body) return next();
    res.type(contentType(key)).setHeader('Cache-Control', 'no-cache');
    res.send(body);
  };
}

function wrap(fn: (req: Request, res: Response) => Promise<unknown>) {
  return (req: Request, res: Response, next: NextFunction) => {
    fn(req, res).catch(next);
  };
}

