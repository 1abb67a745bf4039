// The JSON API of VMs: list (in pages, with an ETag for pollers; server/vms/list-pages.ts), request, one VM, delete, lifecycle actions,
// the original design's `POST /request-vm`, and the strangers hosts report (listed and adopted by an admin).
import { z } from 'zod';
import { TemplateInfo, VmAction, VmName, VmSaveAsTemplateRequest } from '../../wire/api.ts';
import { NotFound } from '../../base/errors.ts';
import { VersionedCache } from '../../base/cache.ts';
import { logger } from '../../base/log.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { wakeIfNoHostFits } from '../hosts/wake.ts';
import { UserName } from '../users/users.ts';
import { resetVm, saveVmAsTemplate } from './disk-actions.ts';
import { RequestVmAnswer, Vm, VmList, VmRequest, VmStranger } from './schemas.ts';
import { decodeCursor, gzipped, listOrder, nextUrl, pageOf, PAGE_DEFAULT, VmListQuery, type PageAnswer } from './list-pages.ts';
import type { VmRecord } from './records.ts';

/** A page of the list: `next` is the URL of the page after it, sent as `Link: <next>; rel="next"` too. */
const VmListPage = VmList.extend({
  next: z.string().optional().describe('the next page (GET it as it is); absent on the last page'),
});
const StrangerQuery = z.object({ host: z.string().optional().describe('only those this host reports') });
export const AdoptRequest = z.strictObject({
  owner: UserName.describe('the user the VM becomes'),
  name: VmName.optional().describe('its name in SkyHost (default: what the host calls it)'),
});
const SavedTemplate = z.object({
  template: TemplateInfo,
  host: z.object({ id: z.string(), hostname: z.string() }).describe('the host that made the template and holds its files'),
  catalog: z.boolean().describe('whether the controller\'s catalog holds it too (then every host can pull it)'),
  catalogNote: z.string().optional().describe('why it is not in the catalog'),
});
const IDEMPOTENCY = { 'Idempotency-Key': 'a retried request with the same key returns the first answer' };

export function vmRoutes(api: ApiRouter, services: ControllerServices): void {
  const { vms, hosts } = services;
  const disks = { vms, hosts, templates: services.templates, log: logger('vms') };

  // Kept until any VM changes: the sorted list per user and filter, and each page's bytes.
  const lists = new VersionedCache<VmRecord[]>(64);
  const pages = new VersionedCache<PageAnswer>(256);
  api.route({
    method: 'get', path: '/api/vms', auth: 'user', query: VmListQuery,
    summary: `My VMs (an admin: every VM), newest first, ${PAGE_DEFAULT} a page unless ?limit= says otherwise; the next page is in next and in Link: rel="next"`,
    headers: { 'If-None-Match': 'the ETag of the last answer: 304 while no VM changed', 'Accept-Encoding': 'gzip: the answer is sent gzipped' },
    responses: { 200: VmListPage, 304: 'nothing changed since the ETag sent' },
  }, (req, res, { query }) => {
    const u = me(res);
    // Pollers send the ETag back: nothing changed is a 304 without a body.
    const tag = vms.listTag();
    res.setHeader('ETag', tag);
    res.setHeader('Cache-Control', 'private, no-cache');
    res.setHeader('Vary', 'Accept-Encoding, Authorization, Cookie');
    if (req.get('if-none-match') === tag) return void res.status(304).end();
    const filter = {
      ...(query.host !== undefined ? { host: query.host } : {}),
      ...(query.state !== undefined ? { state: query.state } : {}),
      ...(query.owner !== undefined ? { owner: query.owner } : {}),
    };
    const who = u.role === 'admin' ? '*' : `user:${u.name}:${services.access.version()}`; // a teacher's list changes with their classes
    const limit = query.limit ?? PAGE_DEFAULT;
    const listKey = JSON.stringify([who, filter.host, filter.state, filter.owner]);
    const page = pages.get(tag, JSON.stringify([listKey, limit, query.after]), () => {
      const sorted = lists.get(tag, listKey, () => vms.records(u, filter).sort(listOrder));
      const { items, next } = pageOf(sorted, limit, query.after !== undefined ? decodeCursor(query.after) : undefined);
      const url = next !== undefined ? nextUrl(query, limit, next) : undefined;
      return { json: Buffer.from(JSON.stringify({ vms: items.map((vm) => vms.view(vm)), ...(url ? { next: url } : {}) })), ...(url ? { next: url } : {}) };
    });
    if (page.next) res.setHeader('Link', `<${page.next}>; rel="next"`);
    const gzip = /\bgzip\b/.test(req.get('accept-encoding') ?? '');
    if (gzip) res.setHeader('Content-Encoding', 'gzip');
    res.type('application/json').send(gzip ? gzipped(page) : page.json);
  });
  api.route({
    method: 'post', path: '/api/vms', summary: 'Request a VM: 201 running, 202 creating (poll GET /api/vms/{id}); 503 no_host_fits with reasons',
    auth: 'user', body: VmRequest, headers: IDEMPOTENCY, responses: { 201: Vm, 202: Vm },
  }, async (req, res) => {
    // VmService checks the body again (it is called in-process too) and keys idempotency on it.
    const { status, vm } = await wakeIfNoHostFits(services.room, () => vms.create(me(res), req.body, req.get('idempotency-key')));
    res.status(status).location(`/api/vms/${vm.id}`).json(vm);
  });
  api.route({
    method: 'post', path: '/request-vm', summary: 'The original design\'s request: same body as POST /api/vms', auth: 'user', body: VmRequest,
    headers: { 'Idempotency-Key': 'as for POST /api/vms' }, responses: { 201: RequestVmAnswer, 202: RequestVmAnswer },
  }, async (req, res) => {
    const { status, vm } = await wakeIfNoHostFits(services.room, () => vms.create(me(res), req.body, req.get('idempotency-key')));
    const host = hosts.record(vm.host);
    res.status(status).json({ vm, host: { id: vm.host, hostname: host?.hostname ?? vm.host }, consoleUrl: vm.consoleUrl });
  });
  api.route({ method: 'get', path: '/api/vms/:id', summary: 'One VM (another user\'s VM is a 404)', auth: 'user', responses: { 200: Vm } }, (req, res) => {
    res.json(vms.get(me(res), param(req, 'id')));
  });
  api.route({ method: 'delete', path: '/api/vms/:id', summary: 'Delete a VM and its disk', auth: 'user', responses: { 204: 'deleted' } }, async (req, res) => {
    await vms.remove(me(res), param(req, 'id'));
    res.status(204).end();
  });
  // before /api/vms/:id/:action, which would take these paths for unknown actions
  api.route({
    method: 'post', path: '/api/vms/:id/save-as-template',
    summary: 'Save a stopped VM\'s disk as a new template on its host (409 while it runs; 409 naming "name" when the name is taken)',
    auth: 'user', body: VmSaveAsTemplateRequest, responses: { 201: SavedTemplate },
  }, async (req, res, { body }) => {
    res.status(201).json(await saveVmAsTemplate(disks, me(res), param(req, 'id'), body));
  });
  api.route({
    method: 'post', path: '/api/vms/:id/reset', summary: 'Reset a VM to its template: a fresh disk, same name and address (a running VM restarts)',
    auth: 'user', responses: { 200: Vm },
  }, async (req, res) => {
    res.json(await resetVm(disks, me(res), param(req, 'id')));
  });
  api.route({
    method: 'post', path: '/api/vms/:id/:action', summary: 'Start, shut down, power off or reboot a VM', auth: 'user', params: { action: VmAction },
    responses: { 200: Vm },
  }, async (req, res) => {
    const action = VmAction.safeParse(req.params.action);
    if (!action.success) throw new NotFound(`action "${String(req.params.action).slice(0, 32)}" (use start, shutdown, poweroff or reboot)`);
    res.json(await vms.action(me(res), param(req, 'id'), action.data));
  });
  api.route({
    method: 'get', path: '/api/strangers', summary: 'VMs hosts report that the controller did not place there', auth: 'admin', query: StrangerQuery,
    responses: { 200: z.object({ strangers: z.array(VmStranger) }) },
  }, (_req, res, { query }) => {
    res.json({ strangers: vms.strangers(me(res), query.host) });
  });
  api.route({
    method: 'post', path: '/api/hosts/:id/strangers/:vmId/adopt', summary: 'Make a host\'s stranger a VM of a user (422 owner: no such user; 409: its id is another VM\'s)',
    auth: 'admin', body: AdoptRequest, responses: { 201: Vm },
  }, (req, res, { body }) => {
    const vm = vms.adopt(me(res), param(req, 'id'), param(req, 'vmId'), { owner: body.owner, ...(body.name !== undefined ? { name: body.name } : {}) });
    res.status(201).location(`/api/vms/${vm.id}`).json(vm);
  });
}
