// The JSON API of templates: the cluster's list (the controller's catalog and what hosts hold), import
// from a URL or an upload (into the catalog, or onto one host), builds into the catalog with their live
// log (builds.ts), delete; and, for enrolled hosts, a catalog template's manifest and files with HTTP
// Range (docs/api.md#templates).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { Request, Response } from 'express';
import { z } from 'zod';
import { TemplateImportRequest, TemplateInfo, TemplateName } from '../../wire/api.ts';
import { Forbidden, InvalidField, NotFound, SkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { logger } from '../../base/log.ts';
import { agentHostId, me, param, parseBody, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { BuildJob, BuildRequest, BuildSummary } from './builds.ts';
import { ImportJob } from './catalog.ts';
import { ClusterTemplate, TemplateImport } from './templates.ts';

const UPLOAD_HELP = 'the disk image (qcow2 or raw) as the raw body; name (required), sha256, os, description, minMemoryMiB, console, needsKvm and host in the query';

export function templateRoutes(api: ApiRouter, services: ControllerServices): void {
  const { templates } = services;
  const log = logger('templates');

  api.route({
    method: 'get', path: '/api/templates', summary: "Templates: the controller's catalog and what each host holds or is pulling; imports and builds under way, and the recipes a build takes", auth: 'user',
    responses: { 200: z.object({ templates: z.array(ClusterTemplate), imports: z.array(ImportJob), builds: z.array(BuildSummary), recipes: z.array(z.string()) }) },
  }, async (_req, res) => {
    res.json({ templates: await templates.refreshed(), imports: templates.imports(), builds: templates.builds.list(), recipes: templates.builds.recipes() });
  });

  api.route({
    method: 'post', path: '/api/templates/build',
    summary: "Build a template into the controller's catalog with `skyhost template build` (debian-12: a real Debian from the controller's package mirror; cached, so a recipe built once takes seconds); answers the build at once, its log follows at /api/templates/builds/{id}",
    auth: 'admin', body: BuildRequest,
    responses: {
      202: z.object({ build: BuildJob, joined: z.boolean().describe('the same recipe was being built as the same template: this is that build') }),
      409: 'the name is taken, or the recipe is being built as another template', 422: 'an unknown recipe or a bad name (the field is named)',
      503: 'no skyhost executable to run (`binary_missing`: a checkout without `npm run build`)',
    },
  }, (_req, res, { body }) => {
    res.status(202).json(templates.builds.start(body, me(res).name));
  });

  api.route({
    method: 'get', path: '/api/templates/builds/:id', summary: 'A build: its state, stage, percent and log lines (with `after`, only the lines after that number)', auth: 'admin',
    query: z.object({ after: z.coerce.number().int().min(0).optional().describe('the number of the last line already seen') }),
    responses: { 200: BuildJob, 404: 'no such build (finished builds are kept 10 minutes)' },
  }, (req, res, { query }) => {
    res.setHeader('Cache-Control', 'no-store');
    res.json(templates.builds.get(param(req, 'id'), query.after));
  });

  api.route({
    method: 'delete', path: '/api/templates/builds/:id', summary: 'Cancel a build: its processes are killed and nothing it made is kept; answers the build once it has ended', auth: 'admin',
    responses: { 200: BuildJob, 404: 'no such build', 409: 'the build has ended already' },
  }, async (req, res) => {
    res.json(await templates.builds.cancel(param(req, 'id'), me(res).name));
  });

  api.route({
    method: 'post', path: '/api/templates',
    summary: "Import from a URL with its sha256 (JSON), or upload a file (any other type): into the controller's catalog, or onto one host when `host` is given",
    auth: 'admin', body: TemplateImport, upload: UPLOAD_HELP,
    responses: { 201: z.object({ template: ClusterTemplate }), 200: 'with `host`: what the host did ({ results })', 409: 'the name is taken', 422: 'a field, the sha256, the format or a backing file' },
  }, async (req, res, { body }) => {
    if (req.is('application/json')) {
      if (body.host) {
        res.json(await templates.importOnHost({ ...body, host: body.host }));
        return;
      }
      const { done } = templates.startImport(body);
      const t = await done;
      res.status(201).json({ template: (await templates.refreshed()).find((x) => x.name === t.name) });
      return;
    }
    const { host, sha256, ...meta } = uploadQuery(req);
    if (host) {
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(req.query)) if (typeof v === 'string' && k !== 'host') query.set(k, v);
      res.json(await templates.uploadToHost(query, req, req.get('content-type') ?? 'application/octet-stream', req.get('content-length'), host));
      return;
    }
    const length = req.get('content-length');
    const t = await templates.uploadToCatalog(meta, req, { ...(sha256 ? { sha256 } : {}), ...(length && /^\d+$/.test(length) ? { declaredBytes: Number(length) } : {}) });
    res.status(201).json({ template: (await templates.refreshed()).find((x) => x.name === t.name) });
  });

  api.route({
    method: 'delete', path: '/api/templates/:name', summary: 'Delete a template from the catalog and from every host (409 naming the VMs that still use it)', auth: 'admin',
    responses: { 200: 'whether the catalog held it, and what each host did', 404: 'no such template', 409: 'VMs use it: details.vms names them' },
  }, async (req, res) => {
    res.json(await templates.remove(param(req, 'name')));
  });

  // ---- for enrolled hosts: pulling a template from the catalog ----
  const approvedHost = (res: Response): string => {
    const id = agentHostId(res);
    if (services.hosts.record(id)?.state === 'pending') throw new Forbidden(`host ${id} is not approved yet: an admin approves it on the hosts page`);
    return id;
  };

  api.route({
    method: 'get', path: '/api/templates/:name/manifest', summary: "A catalog template's manifest (for a host that pulls it)", auth: 'agent',
    responses: { 200: TemplateInfo, 404: 'not in the catalog' },
  }, async (req, res) => {
    approvedHost(res);
    const name = param(req, 'name');
    const t = TemplateName.safeParse(name).success ? await templates.catalog.read(name) : undefined;
    if (!t) throw new NotFound(`template ${JSON.stringify(name.slice(0, 64))} in the controller's catalog`);
    res.setHeader('Cache-Control', 'no-store');
    res.json(t);
  });

  api.route({
    method: 'get', path: '/api/templates/:name/files/:file',
    summary: "A file of a catalog template, with HTTP Range (one range: 206 with Content-Range; 416 when it cannot be served)", auth: 'agent',
    headers: { Range: '`bytes=A-B`, `bytes=A-` or `bytes=-N` (one range)', 'If-Range': 'the ETag: the range is served only if the file is still that one' },
    responses: { 200: 'the whole file', 206: 'the range asked for', 404: 'no such template or file', 416: 'a range that cannot be served (Content-Range: bytes */SIZE)' },
  }, async (req, res) => {
    const host = approvedHost(res);
    const { entry, path: file } = await templates.catalog.file(param(req, 'name'), param(req, 'file'));
    await sendRange(req, res, file, { bytes: entry.bytes, etag: `"${entry.sha256}"` }, log, host);
  });
}

/** The upload's description from the query (numbers and booleans converted), checked like the JSON import. */
function uploadQuery(req: Request): TemplateImportRequest & { host?: string } {
  const out: Record<string, unknown> = {};
  let host: string | undefined;
  for (const [k, v] of Object.entries(req.query)) {
    if (typeof v !== 'string') throw new InvalidField(`query.${k}`, 'must be given once');
    if (k === 'host') host = v.slice(0, 64);
    else if (k === 'url') throw new InvalidField('query.url', 'an upload carries the file itself: send a URL as JSON instead');
    else out[k] = k === 'minMemoryMiB' && /^\d+$/.test(v) ? Number(v) : k === 'needsKvm' && (v === 'true' || v === 'false') ? v === 'true' : v;
  }
  return { ...parseBody(TemplateImportRequest, out, 'query'), ...(host ? { host } : {}) };
}

/**
 * Streams `file` from disk, whole (200) or one range (206 with Content-Range). A Range that is not
 * one satisfiable `bytes=` range is a 416 with `Content-Range: bytes *\/SIZE`. A file whose size on
 * disk is not its manifest's is refused rather than served.
 */
export async function sendRange(req: Request, res: Response, file: string, expect: { bytes: number; etag: string }, log: Logger, host: string): Promise<void> {
  const size = (await stat(file)).size;
  if (size !== expect.bytes) {
    log.error(`${file} is ${size} bytes, its manifest says ${expect.bytes}: not served`, { hostId: host });
    throw new SkyError(503, 'template_damaged', `this template file does not match its manifest on the controller (${size} of ${expect.bytes} bytes)`);
  }
  res.setHeader('Accept-Ranges', 'bytes');
  res.setHeader('ETag', expect.etag);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Type', 'application/octet-stream');
  let start = 0;
  let end = size - 1;
  const range = req.get('range');
  const ifRange = req.get('if-range');
  if (range !== undefined && (ifRange === undefined || ifRange === expect.etag)) {
    const r = parseRange(range, size);
    if (!r) {
      res.status(416).setHeader('Content-Range', `bytes */${size}`);
      res.json({ error: { code: 'range_not_satisfiable', message: `the range ${JSON.stringify(range.slice(0, 64))} cannot be served: the file is ${size} bytes; send one range bytes=A-B, bytes=A- or bytes=-N` } });
      return;
    }
    [start, end] = r;
    res.status(206).setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
  }
  const length = size === 0 ? 0 : end - start + 1;
  res.setHeader('Content-Length', String(length));
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return;
  }
  try {
    await pipeline(createReadStream(file, { start, end, highWaterMark: 1 << 20 }), res);
  } catch (err) {
    // the host went away mid-file (it resumes with a Range); nothing to answer on a broken connection
    log.debug(`sending ${file} to ${host} stopped: ${(err as Error).message}`, { hostId: host });
  }
}

/** One `bytes=` range of a file of `size` bytes as [start, end] inclusive, or undefined when it cannot be served. */
export function parseRange(header: string, size: number): [number, number] | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return undefined;
    return [Math.max(0, size - n), size - 1];
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? size - 1 : Number(m[2]);
  if (start >= size || last < start) return undefined;
  return [start, Math.min(last, size - 1)];
}
