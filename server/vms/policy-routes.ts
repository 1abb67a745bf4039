// The JSON API of leases, housekeeping and quotas: the admin's policies, a VM's lease extension, and
// the quotas of users and classes with their usage. Registered before the VM routes (whose
// `/api/vms/:id/:action` would take `/extend`).
import { z } from 'zod';
import { NotFound } from '../../base/errors.ts';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import type { User } from '../users/users.ts';
import { Policies, setClassLeaseDefault, setTemplateLeaseDefault } from './leases.ts';
import { Quota } from './quotas.ts';
import { Vm } from './schemas.ts';

export const ExtendRequest = z.strictObject({
  /** How many minutes to add to the lease's end (or to now, when it has ended), e.g. `60`. */
  minutes: z.number().int().min(1).max(525_600).describe('minutes to add, e.g. 60: the lease then ends at most the role\'s maximum from now'),
});

const QuotaBody = z.strictObject({
  quota: Quota.nullable().describe('each resource a limit, null for none, absent for the default; quota: null returns to the default entirely'),
});

const UsageRowSchema = z.object({
  resource: z.enum(['vms', 'vcpus', 'memoryMiB', 'diskGiB']),
  used: z.number(),
  allowed: z.number().nullable().describe('null: no limit'),
});
const QuotaAnswer = z.object({
  quota: Quota.nullable().describe('the quota set on this user or class (null: none; a user then has their role\'s default)'),
  usage: z.array(UsageRowSchema),
});

export function policyRoutes(api: ApiRouter, services: ControllerServices): void {
  const { policies, quotas, vms, users } = services;

  api.route({ method: 'get', path: '/api/policies', summary: 'Lease, housekeeping and default quota policies', auth: 'admin', responses: { 200: Policies } }, (_req, res) => {
    res.json(policies.current());
  });
  api.route({
    method: 'put', path: '/api/policies', summary: 'Change the policies (the whole document; 422 names the field, e.g. lease.maxMinutes.student)',
    auth: 'admin', body: Policies, responses: { 200: Policies },
  }, (_req, res, { body }) => {
    const saved = policies.set(body);
    services.events.record({ source: 'policies', msg: `policies changed by ${me(res).name}`, data: { policies: saved, by: me(res).name } });
    res.json(saved);
  });

  const LeaseDefault = z.strictObject({
    defaultMinutes: z.number().int().min(1).max(525_600).nullable().describe('the lease of new VMs, e.g. 90; null: none of its own'),
  });
  api.route({
    method: 'put', path: '/api/templates/:name/lease', summary: 'A template\'s lease default (new VMs of it, unless their class has one); null clears it',
    auth: 'admin', body: LeaseDefault, responses: { 200: LeaseDefault },
  }, (req, res, { body }) => {
    const name = param(req, 'name');
    if (!services.templates.find(name)) throw new NotFound(`template "${name}"`);
    setTemplateLeaseDefault(services.store, name, body.defaultMinutes);
    services.events.record({ source: 'policies', msg: `lease default of template ${name} set to ${body.defaultMinutes ?? 'none'} by ${me(res).name}`, data: { template: name, ...body } });
    res.json(body);
  });
  api.route({
    method: 'put', path: '/api/classes/:id/lease', summary: 'A class\'s lease default (its VMs, before the template\'s); its teachers and admins; null clears it',
    auth: 'user', body: LeaseDefault, responses: { 200: LeaseDefault },
  }, (req, res, { body }) => {
    const id = param(req, 'id');
    if (!services.access.teaches(me(res), { id })) throw new NotFound(`class "${id}"`);
    setClassLeaseDefault(services.store, id, body.defaultMinutes);
    services.events.record({ source: 'policies', msg: `lease default of class ${id} set to ${body.defaultMinutes ?? 'none'} by ${me(res).name}`, data: { classId: id, ...body } });
    res.json(body);
  });

  api.route({
    method: 'post', path: '/api/vms/:id/extend',
    summary: 'Extend a VM\'s lease by minutes (its owner, a teacher of its class, an admin); past the role\'s maximum: 422 naming minutes with both numbers',
    auth: 'user', body: ExtendRequest, responses: { 200: Vm },
  }, (req, res, { body }) => {
    res.json(vms.extend(me(res), param(req, 'id'), body.minutes));
  });

  const userAnswer = (name: string) => {
    const user = users.get(name);
    if (!user) throw new NotFound(`user "${name}"`);
    return { quota: quotas.ofUser(name) ?? null, usage: quotas.usageOf(user).map(({ resource, used, allowed }) => ({ resource, used, allowed })) };
  };
  const classAnswer = (id: string) => ({
    quota: quotas.ofClass(id) ?? null, usage: quotas.usageOfClass(id).map(({ resource, used, allowed }) => ({ resource, used, allowed })),
  });
  /** An admin, the user themself, or a teacher of one of the user's classes. */
  const mayReadUser = (viewer: User, name: string) => viewer.role === 'admin' || viewer.name === name || services.access.teaches(viewer, name);

  api.route({
    method: 'get', path: '/api/users/:name/quota', summary: 'A user\'s quota and usage (the user, their teachers, an admin)', auth: 'user',
    responses: { 200: QuotaAnswer },
  }, (req, res) => {
    const name = param(req, 'name');
    if (!mayReadUser(me(res), name)) throw new NotFound(`user "${name}"`);
    res.json(userAnswer(name));
  });
  api.route({
    method: 'put', path: '/api/users/:name/quota', summary: 'Set a user\'s quota (absent resources take the role\'s default)', auth: 'admin',
    body: QuotaBody, responses: { 200: QuotaAnswer },
  }, (req, res, { body }) => {
    const name = param(req, 'name');
    if (!users.get(name)) throw new NotFound(`user "${name}"`);
    quotas.setUserQuota(name, body.quota, me(res).name);
    res.json(userAnswer(name));
  });
  api.route({
    method: 'get', path: '/api/classes/:id/quota', summary: 'A class\'s quota and its VMs\' usage (its teachers, an admin)', auth: 'user',
    responses: { 200: QuotaAnswer },
  }, (req, res) => {
    const id = param(req, 'id');
    if (!services.access.teaches(me(res), { id })) throw new NotFound(`class "${id}"`);
    res.json(classAnswer(id));
  });
  api.route({
    method: 'put', path: '/api/classes/:id/quota', summary: 'Set a class\'s quota: its VMs together', auth: 'admin', body: QuotaBody,
    responses: { 200: QuotaAnswer },
  }, (req, res, { body }) => {
    const id = param(req, 'id');
    quotas.setClassQuota(id, body.quota, me(res).name);
    res.json(classAnswer(id));
  });
}
