// The admin's policies page (/admin/policies: leases, housekeeping, each role's default quota), the
// lease's "Extend" button on the VM page, and the quota forms of the users and class pages
// (views/partials/quota-usage.hbs). Mounted before vmPages: its /vms/:id/:action would take /extend.
import express, { type Request, type Response, type Router } from 'express';
import { Forbidden, NotFound, SkyError } from '../../base/errors.ts';
import type { ControllerServices } from '../services.ts';
import { requireAdmin, requireUser } from '../users/auth.ts';
import type { Role } from '../users/users.ts';
import { minutesText, setTemplateLeaseDefault, templateLeaseDefaults, type Policies } from '../vms/leases.ts';
import { RESOURCES, type Quota, type Resource, type UsageRow } from '../vms/quotas.ts';
import { field, fieldErrors, localPath, me, redirect } from './forms.ts';
import { render } from './render.ts';

const ROLES: Role[] = ['student', 'teacher', 'admin'];
const RESOURCE_LABELS: Record<Resource, string> = { vms: 'VMs', vcpus: 'vCPUs', memoryMiB: 'Memory (MiB)', diskGiB: 'Disk (GiB)' };

/** One number field of the policies form: `name` is the dotted path the API names in a 422. */
interface NumberField {
  name: string;
  id: string;
  label: string;
  value: string;
  hint: string;
  error?: string | undefined;
}

/** A form value: '' is `blank` (null or absent), digits a number, anything else kept for zod to refuse. */
function numberOf(text: string, blank: null | undefined): number | null | string | undefined {
  if (text === '') return blank;
  return /^\d+$/.test(text) ? Number(text) : text;
}

const shown = (v: number | null | undefined) => (v === null || v === undefined ? '' : String(v));
const inMinutes = (v: number | null | undefined, none: string) => (typeof v === 'number' ? `${v} minutes = ${minutesText(v)}` : none);

/** The form's sections, from the policies (or what was typed) and the errors by field. */
function policyForm(p: Policies, typed: Record<string, string> | undefined, errors: Record<string, string>) {
  const f = (name: string, label: string, value: number | null | undefined, hint: string): NumberField => ({
    name, id: `policy-${name.replace(/\./g, '-')}`, label, value: typed?.[name] ?? shown(value), hint, error: errors[name],
  });
  return [
    {
      title: 'Leases', intro: 'Every VM has a lease. When it ends the VM is shut down (not deleted); its owner can extend it within their role\'s maximum.',
      fields: [
        f('lease.defaultMinutes', 'Default lease (minutes)', p.lease.defaultMinutes, `${inMinutes(p.lease.defaultMinutes, 'empty: none')}; a class's or a template's own default comes first`),
        ...ROLES.map((r) => f(`lease.maxMinutes.${r}`, `Longest lease of a${r === 'admin' ? 'n' : ''} ${r} (minutes)`, p.lease.maxMinutes[r], inMinutes(p.lease.maxMinutes[r], 'empty: no maximum'))),
        f('lease.warnMinutes', 'Warn this many minutes before the end', p.lease.warnMinutes, 'an event, and a banner on the VM\'s page; 0: no warning'),
        f('lease.deleteAfterMinutes', 'Delete a VM this many minutes after its lease ended', p.lease.deleteAfterMinutes, `${inMinutes(p.lease.deleteAfterMinutes, '')}; 0: deleted at the end at once`),
      ],
    },
    {
      title: 'Housekeeping', intro: 'Checked every minute. Every VM it shuts down or deletes is in the event log (source "housekeeping").',
      fields: [f('housekeeping.reapStoppedAfterMinutes', 'Delete VMs stopped for longer than (minutes)', p.housekeeping.reapStoppedAfterMinutes,
        inMinutes(p.housekeeping.reapStoppedAfterMinutes, 'empty: off (stopped VMs are kept)'))],
    },
    ...ROLES.map((r) => ({
      title: `Default quota of a${r === 'admin' ? 'n' : ''} ${r}`, intro: 'Where a user\'s own quota does not say. Empty: no limit.',
      fields: RESOURCES.map((res) => f(`quota.${r}.${res}`, RESOURCE_LABELS[res], p.quota[r][res], '')),
    })),
  ];
}

/** The policies document from the form's fields. */
function policiesFromForm(req: Request): { doc: unknown; typed: Record<string, string> } {
  const typed: Record<string, string> = {};
  const read = (name: string) => (typed[name] = field(req, name, 16));
  const quota = (role: Role): Record<string, unknown> => {
    const q: Record<string, unknown> = {};
    for (const r of RESOURCES) {
      const v = numberOf(read(`quota.${role}.${r}`), undefined);
      if (v !== undefined) q[r] = v;
    }
    return q;
  };
  const doc = {
    lease: {
      defaultMinutes: numberOf(read('lease.defaultMinutes'), null),
      maxMinutes: Object.fromEntries(ROLES.map((r) => [r, numberOf(read(`lease.maxMinutes.${r}`), null)])),
      warnMinutes: numberOf(read('lease.warnMinutes'), null),
      deleteAfterMinutes: numberOf(read('lease.deleteAfterMinutes'), null),
    },
    housekeeping: { reapStoppedAfterMinutes: numberOf(read('housekeeping.reapStoppedAfterMinutes'), null) },
    quota: Object.fromEntries(ROLES.map((r) => [r, quota(r)])),
  };
  return { doc, typed };
}

/** The quota a quota form asks for: each field a number or empty (the default). */
function quotaFromForm(req: Request): Record<string, unknown> {
  const q: Record<string, unknown> = {};
  for (const r of RESOURCES) {
    const v = numberOf(field(req, r, 16), undefined);
    if (v !== undefined) q[r] = v;
  }
  return q;
}

/**
 * What views/partials/quota-usage.hbs shows: the usage rows, and for an admin the form that sets
 * the quota (`action`), with its current values.
 * @example { quota: quotaUsageView(rows, own, { action: `/admin/users/${name}/quota`, admin, next: req.originalUrl }) }
 */
export function quotaUsageView(rows: UsageRow[], own: Quota | undefined, opts: { action?: string; admin: boolean; next?: string; title?: string }) {
  const limited = rows.filter((r) => r.allowed !== null);
  return {
    rows, title: opts.title ?? 'Quota', editable: opts.admin && opts.action !== undefined, action: opts.action, next: opts.next ?? '',
    idPrefix: `quota${(opts.action ?? '').replace(/[^a-z0-9]+/gi, '-')}`,
    /** One line for a table cell, e.g. `VMs 2 of 3 · memory 1.5 GiB of 4 GiB`, or `no quota`. */
    summary: limited.length === 0 ? 'no quota' : limited.map((r) => `${r.label} ${r.resource === 'vms' || r.resource === 'vcpus' ? r.used : r.usedText} of ${r.resource === 'vms' || r.resource === 'vcpus' ? r.allowed : r.allowedText}`).join(' · '),
    full: limited.some((r) => r.full),
    fields: RESOURCES.map((r) => ({ name: r, label: RESOURCE_LABELS[r], value: shown(own?.[r]) })),
  };
}

export function policyPages(services: ControllerServices): Router {
  const r = express.Router();

  /** Each template with its lease default (empty: none of its own), for the templates' form. */
  const templateRows = (typed?: Record<string, string>, errors: Record<string, string> = {}) => {
    const set = templateLeaseDefaults(services.store);
    return services.templates.list().map((t) => ({
      name: t.name, id: `template-lease-${t.name.replace(/[^a-z0-9-]/gi, '-')}`,
      value: typed?.[t.name] ?? shown(set.get(t.name)), hint: set.has(t.name) ? minutesText(set.get(t.name)!) : 'the default lease', error: errors[t.name],
    }));
  };

  const page = (req: Request, res: Response, status = 200, typed?: Record<string, string>, errors: Record<string, string> = {}, saved = false, error?: string,
    templates: { typed?: Record<string, string>; errors?: Record<string, string>; saved?: boolean } = {}) => {
    const p = services.policies.current();
    render(req, res, {
      page: 'policies', title: 'Policies', status,
      data: {
        sections: policyForm(p, typed, errors), saved, error,
        templates: templateRows(templates.typed, templates.errors), templatesSaved: templates.saved,
        usage: services.users.list().map((u) => ({ name: u.name, role: u.role, rows: services.quotas.usageOf(u) })),
      },
    });
  };

  r.get('/admin/policies', requireAdmin(), (req, res) => page(req, res));
  r.post('/admin/policies', requireAdmin(), (req, res) => {
    const { doc, typed } = policiesFromForm(req);
    try {
      const saved = services.policies.set(doc);
      services.events.record({ source: 'policies', msg: `policies changed by ${me(res).name}`, data: { policies: saved, by: me(res).name } });
    } catch (err) {
      if (!(err instanceof SkyError) || err.status !== 422) throw err;
      return page(req, res, 422, typed, fieldErrors(err), false, 'Nothing was saved: correct the marked fields.');
    }
    page(req, res, 200, undefined, {}, true);
  });

  // Each template's lease default: empty clears it; every field is checked before any is saved.
  r.post('/admin/policies/templates', requireAdmin(), (req, res) => {
    const typed: Record<string, string> = {};
    const errors: Record<string, string> = {};
    const values = new Map<string, number | null>();
    for (const t of services.templates.list()) {
      const text = typed[t.name] = field(req, `lease.${t.name}`, 16);
      const minutes = text === '' ? null : /^\d+$/.test(text) ? Number(text) : Number.NaN;
      if (minutes !== null && !(minutes >= 1 && minutes <= 525_600)) errors[t.name] = 'a whole number of minutes from 1 to 525600, or empty for none';
      else values.set(t.name, minutes);
    }
    if (Object.keys(errors).length > 0) return page(req, res, 422, undefined, {}, false, undefined, { typed, errors });
    for (const [name, minutes] of values) setTemplateLeaseDefault(services.store, name, minutes);
    services.events.record({ source: 'policies', msg: `lease defaults of templates changed by ${me(res).name}`, data: { templates: Object.fromEntries(values), by: me(res).name } });
    page(req, res, 200, undefined, {}, false, undefined, { saved: true });
  });

  // The lease's Extend button: the VM's card is answered (htmx) or the page (a plain form).
  r.post('/vms/:id/extend', requireUser(), (req, res) => {
    const id = String(req.params.id);
    const text = field(req, 'minutes', 16);
    const minutes = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    services.vms.extend(me(res), id, minutes);
    redirect(req, res, `/vms/${encodeURIComponent(id)}`, { swap: true });
  });

  // Quota forms (views/partials/quota-usage.hbs on the users and class pages): admins only.
  const setQuota = (kind: 'user' | 'class') => (req: Request, res: Response) => {
    const user = me(res);
    if (user.role !== 'admin') throw new Forbidden('only an admin sets quotas');
    const key = String(req.params.key);
    const quota = quotaFromForm(req);
    const value = Object.keys(quota).length === 0 ? null : quota as Quota;
    if (kind === 'user') {
      if (!services.users.get(key)) throw new NotFound(`user "${key}"`);
      services.quotas.setUserQuota(key, value, user.name);
    } else {
      services.quotas.setClassQuota(key, value, user.name);
    }
    redirect(req, res, localPath(field(req, 'next', 500), kind === 'user' ? '/admin/users' : `/classes/${encodeURIComponent(key)}`));
  };
  r.post('/admin/users/:key/quota', requireAdmin(), setQuota('user'));
  r.post('/classes/:key/quota', requireAdmin(), setQuota('class'));

  return r;
}
