// "My VMs" (the list with live state and actions, and the "Request VM" form) and the VM page with its
// consoles. A user sees only their own VMs (another user's VM is a 404), an admin every VM.
import { randomBytes } from 'node:crypto';
import express, { type Request, type Response, type Router } from 'express';
import { VmAction, VmSaveAsTemplateRequest } from '../../wire/api.ts';
import { logger } from '../../base/log.ts';
import { resetVm, saveVmAsTemplate } from '../vms/disk-actions.ts';
import { fromZod, NotFound } from '../../base/errors.ts';
import { wantsFragment } from '../../base/views.ts';
import type { ControllerServices } from '../services.ts';
import { hostNames } from '../hosts/names.ts';
import { wakeIfNoHostFits } from '../hosts/wake.ts';
import { requireUser } from '../users/auth.ts';
import { field, fieldErrors, formError, me, redirect } from './forms.ts';
import { render } from './render.ts';
import { vmFacts } from './vm-facts.ts';

/** The size presets of the request form. */
export const PRESETS = [
  { id: 'small', label: 'Small', vcpus: 1, memoryMiB: 512 },
  { id: 'medium', label: 'Medium', vcpus: 2, memoryMiB: 2048 },
  { id: 'large', label: 'Large', vcpus: 4, memoryMiB: 4096 },
] as const;

/** Lease choices: minutes ('' takes the default lease: the class's, the template's or the cluster's, server/vms/leases.ts). */
export const LEASES = [
  { value: '', label: 'the default lease' },
  { value: '60', label: '1 hour' },
  { value: '240', label: '4 hours' },
  { value: '1440', label: '1 day' },
  { value: '10080', label: '1 week' },
];

/** Disk sizes of the request form in GiB ('' keeps the template's own; an installer ISO needs one). */
export const DISKS = [
  { value: '', label: 'the template\'s size' },
  ...[10, 20, 40, 80].map((n) => ({ value: String(n), label: `${n} GiB` })),
];

/** Rows in the VM list at most (an admin's view of every VM is cut to the newest). */
const LIST_MAX = 200;

/** The list an htmx action answers with: the one the browser shows (every VM, or mine). */
function listUrlOf(req: Request): string {
  return /[?&]all=1(&|$)/.test(req.get('HX-Current-URL') ?? '') ? '/vms?all=1' : '/vms';
}

/** API field names -> the form's field names, for inline messages. */
const FORM_FIELDS: Record<string, string> = { vcpus: 'size', memoryMiB: 'size', leaseMinutes: 'lease', diskGiB: 'disk' };

interface FormState {
  values: { template?: string; size: string; name?: string; sshKey?: string; lease: string; disk?: string };
  errors: Record<string, string>;
  error?: string | undefined;
  reasons?: Array<{ host: string; reason: string }> | undefined;
  created?: { id: string; name: string; hostname: string } | undefined;
  idempotencyKey: string;
}

function freshForm(): FormState {
  return { values: { size: 'small', lease: '' }, errors: {}, idempotencyKey: randomBytes(12).toString('base64url') };
}

export function vmPages(services: ControllerServices): Router {
  const r = express.Router();

  const listPage = (req: Request, res: Response, form: FormState, status = 200, partial = 'vm-list') => {
    const user = me(res);
    // Everyone sees their own VMs; an admin may ask for every user's (?all=1), a teacher for their classes' too, the newest LIST_MAX.
    const all = user.role !== 'student' && req.query.all === '1';
    const vms = services.vms.list(user, all ? {} : { owner: user.name });
    render(req, res, {
      page: 'vms', partial, status, title: all ? (user.role === 'admin' ? 'All VMs' : 'My classes\' VMs') : 'My VMs',
      data: {
        vms: vms.slice(0, LIST_MAX), total: vms.length, cut: vms.length > LIST_MAX, max: LIST_MAX, all, listUrl: all ? '/vms?all=1' : '/vms',
        templates: services.templates.list(), presets: PRESETS, leases: LEASES, disks: DISKS, form,
      },
    });
  };

  r.get('/vms', requireUser(), (req, res) => listPage(req, res, freshForm()));

  r.post('/vms', requireUser(), async (req, res) => {
    const user = me(res);
    const form = freshForm();
    const values = {
      template: field(req, 'template', 128), size: field(req, 'size', 16) || 'small', name: field(req, 'name', 200),
      sshKey: field(req, 'sshKey', 16384), lease: field(req, 'lease', 16), disk: field(req, 'disk', 8),
    };
    form.values = values;
    const preset = PRESETS.find((p) => p.id === values.size);
    if (!values.template) form.errors.template = 'choose a template';
    if (!preset) form.errors.size = 'choose small, medium or large';
    if (!LEASES.some((l) => l.value === values.lease)) form.errors.lease = 'choose one of the offered lease times';
    if (!DISKS.some((d) => d.value === values.disk)) form.errors.disk = 'choose one of the offered disk sizes';
    if (Object.keys(form.errors).length > 0) return listPage(req, res, form, 422, 'vm-form');
    const body = {
      template: values.template, vcpus: preset!.vcpus, memoryMiB: preset!.memoryMiB,
      ...(values.name ? { name: values.name } : {}), ...(values.sshKey ? { sshKey: values.sshKey } : {}),
      ...(values.lease ? { leaseMinutes: Number(values.lease) } : {}),
      ...(values.disk ? { diskGiB: Number(values.disk) } : {}),
    };
    const key = field(req, 'idempotencyKey', 64);
    try {
      const answer = await wakeIfNoHostFits(services.room, () => services.vms.create(user, body, key || undefined));
      if (!wantsFragment(req)) return redirect(req, res, '/vms');
      const fresh = freshForm();
      fresh.created = { id: answer.vm.id, name: answer.vm.name, hostname: answer.vm.hostname ?? answer.vm.host };
      res.setHeader('HX-Trigger', 'vms-changed');
      listPage(req, res, fresh, 200, 'vm-form');
    } catch (err) {
      const sky = formError(err);
      if (!sky) throw err;
      form.errors = fieldErrors(sky, FORM_FIELDS);
      const details = sky.details as { rejected?: Array<{ host: string; message: string }> } | undefined;
      if (sky.code === 'no_host_fits') {
        const names = hostNames(services).labels();
        form.error = 'No host can take this VM right now.';
        form.reasons = (details?.rejected ?? []).map((x) => ({ host: names.get(x.host) ?? x.host, reason: x.message }));
      } else if (Object.keys(form.errors).length === 0) {
        form.error = sky.message;
      }
      // A failed agent call left a VM record in `error`: the list shows it.
      res.setHeader('HX-Trigger', 'vms-changed');
      listPage(req, res, form, sky.status === 409 || sky.status === 503 ? sky.status : 422, 'vm-form');
    }
  });

  const disks = { vms: services.vms, hosts: services.hosts, templates: services.templates, log: logger('vms') };

  r.get('/vms/:id', requireUser(), (req, res) => {
    const vm = services.vms.get(me(res), String(req.params.id));
    render(req, res, {
      page: 'vm', partial: 'vm-detail', title: vm.name, data: { vm, save: { values: {}, errors: {} }, ...vmFacts(services, vm) },
      styles: ['/static/vendor/xterm/xterm.css'], scripts: ['/static/console.js'],
    });
  });

  // The save form answers with its own card (a result or inline errors); the VM page around it stays.
  r.post('/vms/:id/save-as-template', requireUser(), async (req, res) => {
    const user = me(res);
    const vm = services.vms.get(user, String(req.params.id));
    const name = field(req, 'name', 200);
    const save: { values: { name: string }; errors: Record<string, string>; error?: string; saved?: { name: string; hostname: string; catalog: boolean; note?: string } } = { values: { name }, errors: {} };
    let status = 200;
    try {
      const parsed = VmSaveAsTemplateRequest.safeParse({ name });
      if (!parsed.success) throw fromZod(parsed.error);
      const done = await saveVmAsTemplate(disks, user, vm.id, parsed.data);
      save.saved = { name: done.template.name, hostname: done.host.hostname, catalog: done.catalog, ...(done.catalogNote ? { note: done.catalogNote } : {}) };
      save.values.name = '';
    } catch (err) {
      const sky = formError(err);
      if (!sky) throw err;
      status = sky.status;
      save.errors = fieldErrors(sky);
      if (Object.keys(save.errors).length === 0) save.error = sky.message;
    }
    render(req, res, { page: 'vm', partial: 'vm-template', status, title: vm.name, data: { vm, save, ...vmFacts(services, vm) },
      styles: ['/static/vendor/xterm/xterm.css'], scripts: ['/static/console.js'] });
  });

  r.post('/vms/:id/:action', requireUser(), async (req, res) => {
    const user = me(res);
    const id = String(req.params.id);
    const action = String(req.params.action);
    const fromDetail = field(req, 'from', 16) === 'detail';
    if (action === 'delete') {
      await services.vms.remove(user, id);
      return fromDetail ? redirect(req, res, '/vms') : redirect(req, res, listUrlOf(req), { swap: true });
    }
    if (action === 'reset') {
      await resetVm(disks, user, id);
      return redirect(req, res, fromDetail ? `/vms/${encodeURIComponent(id)}` : listUrlOf(req), { swap: true });
    }
    const parsed = VmAction.safeParse(action);
    if (!parsed.success) throw new NotFound(`action "${action}"`);
    await services.vms.action(user, id, parsed.data);
    redirect(req, res, fromDetail ? `/vms/${encodeURIComponent(id)}` : listUrlOf(req), { swap: true });
  });

  return r;
}
