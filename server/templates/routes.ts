// The JSON API of templates: the cluster's list, import from a URL or an upload, delete everywhere.
import { z } from 'zod';
import { TemplateName } from '../../wire/api.ts';
import { param, parseBody, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { ClusterTemplate, TemplateImport } from './templates.ts';

export function templateRoutes(api: ApiRouter, services: ControllerServices): void {
  const { templates } = services;

  api.route({
    method: 'get', path: '/api/templates', summary: 'Templates across every host', auth: 'user',
    responses: { 200: z.object({ templates: z.array(ClusterTemplate) }) },
  }, (_req, res) => {
    res.json({ templates: templates.list() });
  });
  api.route({
    method: 'post', path: '/api/templates', summary: 'Import from a URL with its sha256 (JSON), or upload a file (any other type; ?name=&sha256=&host=)',
    auth: 'admin', body: TemplateImport, upload: 'the disk image; name, sha256 and host (optional) in the query', responses: { 200: 'what each host did' },
  }, async (req, res, { body }) => {
    if (req.is('application/json')) {
      res.json(await templates.import(body));
      return;
    }
    // An upload: the file is the body, the rest is in the query (?name=...&sha256=...&host=...).
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(req.query)) if (typeof v === 'string' && k !== 'host') query.set(k, v);
    parseBody(TemplateName, query.get('name') ?? undefined, 'query.name');
    const host = typeof req.query.host === 'string' ? req.query.host : undefined;
    res.json(await templates.upload(query, req, req.get('content-type') ?? 'application/octet-stream', req.get('content-length'), host));
  });
  api.route({
    method: 'delete', path: '/api/templates/:name', summary: 'Delete a template from every host', auth: 'admin', responses: { 200: 'what each host did' },
  }, async (req, res) => {
    res.json(await templates.remove(param(req, 'name')));
  });
}
