// The templates page: the controller's catalog with which hosts hold each template and which are
// pulling it, imports by URL with their progress (the list polls while anything is under way), the
// upload form (views/static/templates.js sends the file to POST /api/templates with a progress bar),
// "Copy to every host" and "Keep on every host" (server/templates/distribute.ts), and delete, refused
// in plain words while VMs use the template. Every user reads; admins change. Admins also build a
// template (server/templates/builds.ts): the build panel's log tails live, its poller fetching the
// lines after the last one shown every second (appended out of band to the role=log region).
import express, { type Request, type Response, type Router } from 'express';
import { fromZod, toSkyError } from '../../base/errors.ts';
import { wantsFragment } from '../../base/views.ts';
import { hostNames } from '../hosts/names.ts';
import type { ControllerServices } from '../services.ts';
import { TemplateName } from '../../wire/api.ts';
import type { BuildJob } from '../templates/builds.ts';
import { TemplateImport } from '../templates/templates.ts';
import { requireAdmin, requireUser } from '../users/auth.ts';
import { field, fieldErrors, redirect } from './forms.ts';
import { render } from './render.ts';

interface FormState {
  values: Record<string, string>;
  errors: Record<string, string>;
  error?: string;
  started?: string;
}

export function templatePages(services: ControllerServices): Router {
  const r = express.Router();
  const { templates } = services;

  /** A build as its panel shows it. */
  const buildView = (b: BuildJob) => ({
    ...b, running: b.state === 'running', failed: b.state === 'failed', cancelled: b.error?.code === 'cancelled', percent: b.percent ?? 0,
    disk: b.template?.files.find((f) => f.role === 'disk'),
  });

  const page = async (req: Request, res: Response, opts: { form?: FormState; buildForm?: FormState; build?: BuildJob; status?: number; partial?: string; notice?: { ok: boolean; text: string } } = {}) => {
    const names = hostNames(services).labels();
    const kept = new Set(services.distribute.kept());
    const underWay = services.distribute.underWay();
    const list = (await templates.refreshed()).map((t) => ({
      ...t, sizeMiB: t.bytes / 1048576,
      hostNames: t.hosts.map((id) => names.get(id) ?? id),
      pulls: t.pulling.map((p) => ({ hostname: names.get(p.host) ?? p.host, percent: p.percent })),
      // pulls the controller has asked for that the host has not reported yet
      starting: underWay.filter((u) => u.template === t.name && !t.hosts.includes(u.host) && !t.pulling.some((p) => p.host === u.host)).map((u) => names.get(u.host) ?? u.host),
      keep: kept.has(t.name),
    }));
    const imports = templates.imports().map((j) => ({ ...j, running: !j.finishedAt, failed: j.state === 'failed', mib: j.bytes / 1048576 }));
    const builds = templates.builds.list().map((b) => ({ ...b, running: b.state === 'running', failed: b.state === 'failed', percent: b.percent ?? 0 }));
    const busy = imports.some((j) => j.running) || builds.some((b) => b.running) || list.some((t) => t.pulls.length > 0) || underWay.length > 0;
    // the build panel: the one just started or asked for, else the newest running one (a reload keeps tailing it)
    const running = builds.find((b) => b.running);
    const build = opts.build ?? (running ? templates.builds.get(running.id) : undefined);
    render(req, res, {
      page: 'templates', partial: opts.partial ?? 'template-list', status: opts.status ?? 200, title: 'Templates',
      scripts: ['/static/templates.js'],
      data: {
        templates: list, imports, builds, busy, notice: opts.notice, hostTotal: services.hosts.records().length,
        form: opts.form ?? { values: {}, errors: {} },
        buildForm: opts.buildForm ?? { values: {}, errors: {} }, recipes: templates.builds.recipes(), ...(build ? { build: buildView(build) } : {}),
        // the log's poll answer carries the panel's other parts out of band
        oob: opts.partial === 'template-build-log',
      },
    });
  };
  r.get('/templates', requireUser(), (req, res) => page(req, res));

  // Import by URL into the catalog: starts the download and answers at once; the list shows its progress.
  r.post('/templates', requireAdmin(), async (req, res) => {
    const values = { name: field(req, 'name', 128), url: field(req, 'url', 4096), sha256: field(req, 'sha256', 128).toLowerCase(), os: field(req, 'os', 128) };
    const parsed = TemplateImport.safeParse({ ...values, os: values.os || undefined });
    if (!parsed.success) return page(req, res, { form: { values, errors: fieldErrors(fromZod(parsed.error)) }, status: 422, partial: 'template-form' });
    try {
      // its end or failure shows in the list's imports (the catalog logs it too)
      templates.startImport(parsed.data);
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      return page(req, res, { form: { values, errors: fieldErrors(sky), error: sky.message }, status: sky.status, partial: 'template-form' });
    }
    res.setHeader('HX-Trigger', 'templates-changed');
    await page(req, res, { form: { values: {}, errors: {}, started: values.name }, partial: 'template-form' });
  });

  // Build a template into the catalog: answers the form with the build's panel, whose log then tails itself.
  r.post('/templates/build', requireAdmin(), async (req, res) => {
    const values = { recipe: field(req, 'recipe', 64), desktop: field(req, 'desktop', 8), name: field(req, 'name', 128) };
    try {
      const { build } = templates.builds.start({ recipe: values.recipe, desktop: values.desktop === 'true', ...(values.name ? { name: values.name } : {}) }, res.locals.viewer?.name ?? 'admin');
      // the list shows the build too (and polls while it runs)
      res.setHeader('HX-Trigger', 'templates-changed');
      await page(req, res, { build, partial: 'template-build', status: 202 });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      await page(req, res, { buildForm: { values, errors: fieldErrors(sky), error: sky.message }, status: sky.status, partial: 'template-build' });
    }
  });

  // The lines of a build after `after`, appended to its log out of band, with its state; the whole page without htmx.
  r.get('/templates/builds/:id/log', requireAdmin(), async (req, res) => {
    const after = /^\d{1,9}$/.test(String(req.query.after ?? '')) ? Number(req.query.after) : undefined;
    let build: BuildJob;
    try {
      // a whole page (no htmx) shows every line kept
      build = templates.builds.get(String(req.params.id).slice(0, 64), wantsFragment(req) ? after : undefined);
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status !== 404) throw err;
      return page(req, res, { notice: { ok: false, text: `That build is no longer known (finished builds are listed for 10 minutes): ${sky.message}.` }, status: 404 });
    }
    // the list shows the new template once the build has ended
    if (build.state !== 'running') res.setHeader('HX-Trigger', 'templates-changed');
    await page(req, res, { build, partial: 'template-build-log' });
  });

  r.post('/templates/builds/:id/cancel', requireAdmin(), async (req, res) => {
    let build: BuildJob;
    try {
      build = await templates.builds.cancel(String(req.params.id).slice(0, 64), res.locals.viewer?.name ?? 'admin');
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      return page(req, res, { buildForm: { values: {}, errors: {}, error: sky.message }, status: sky.status, partial: 'template-build' });
    }
    await page(req, res, { build, partial: 'template-build' });
  });

  r.post('/templates/:name/delete', requireAdmin(), async (req, res) => {
    const name = String(req.params.name).slice(0, 128);
    try {
      const { results } = await templates.remove(name);
      const failed = results.filter((x) => !x.ok);
      if (failed.length === 0) return redirect(req, res, '/templates', { swap: true });
      await page(req, res, { notice: { ok: false, text: `Template ${name} was deleted, but not on ${failed.map((x) => `${x.host} (${x.error ?? 'failed'})`).join(', ')}.` } });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status !== 409) throw err;
      const vms = (sky.details as { vms?: string[] } | undefined)?.vms ?? [];
      const text = vms.length > 0
        ? `Template ${name} was not deleted: ${vms.length === 1 ? 'the VM' : `${vms.length} VMs`} ${vms.join(', ')} still ${vms.length === 1 ? 'uses' : 'use'} it. Delete ${vms.length === 1 ? 'that VM' : 'those VMs'} first.`
        : sky.message;
      await page(req, res, { notice: { ok: false, text }, status: 409 });
    }
  });

  // A template named in an action's URL: one the list shows (or, to unmark it, one still kept), else a 404 in words.
  const known = async (req: Request, res: Response, extra?: (name: string) => boolean): Promise<string | undefined> => {
    const name = String(req.params.name).slice(0, 128);
    if (TemplateName.safeParse(name).success && ((await templates.refreshed()).some((t) => t.name === name) || extra?.(name))) return name;
    await page(req, res, { notice: { ok: false, text: `There is no template called "${name.slice(0, 64)}" (it may have just been deleted): nothing was done.` }, status: 404 });
    return undefined;
  };

  // Every ready host lacking the template pulls it, in chains; the list shows each host's progress.
  r.post('/templates/:name/copy-to-all', requireAdmin(), async (req, res) => {
    const name = await known(req, res);
    if (!name) return;
    try {
      const { done, chains } = services.distribute.copyToAll(name);
      void done; // each host's outcome is logged by the distributor; the list shows its progress
      const labels = hostNames(services).labels();
      const to = chains.flat().map((step) => labels.get(step.host) ?? step.host);
      const text = to.length === 0
        ? `Every host that is up already has ${name} or is pulling it: nothing to copy.`
        : `Copying ${name} to ${to.join(', ')}: each host pulls it from the one before it, so every link carries one copy. The progress shows below.`;
      res.setHeader('HX-Trigger', 'templates-changed');
      await page(req, res, { notice: { ok: true, text } });
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500 && sky.code !== 'no_source') throw err;
      await page(req, res, { notice: { ok: false, text: `${name} was not copied: ${sky.message}.` }, status: sky.status });
    }
  });

  // "Keep on every host" on or off: when on, every host that lacks it (and every host that joins later) pulls it.
  r.post('/templates/:name/keep', requireAdmin(), async (req, res) => {
    const keep = field(req, 'keep', 8);
    if (keep !== 'true' && keep !== 'false') {
      return page(req, res, { notice: { ok: false, text: 'Keep on every host: the field keep must be true or false.' }, status: 400 });
    }
    const name = await known(req, res, (n) => keep === 'false' && services.distribute.kept().includes(n));
    if (!name) return;
    try {
      services.distribute.keep(name, keep === 'true');
    } catch (err) {
      const sky = toSkyError(err);
      if (sky.status >= 500) throw err;
      return page(req, res, { notice: { ok: false, text: `${name}: ${sky.message}.` }, status: sky.status });
    }
    const text = keep === 'true'
      ? `${name} is now kept on every host: hosts that lack it pull it now, and hosts that join later pull it too.`
      : `${name} is no longer kept on every host: hosts keep the copy they have, new hosts do not pull it.`;
    await page(req, res, { notice: { ok: true, text } });
  });

  return r;
}
