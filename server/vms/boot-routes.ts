// `PATCH /api/vms/:id {startOnBoot}`: whether a VM is started again when its host comes back after a
// reboot or a power cut (server/vms/start-on-boot.ts). true or false is the VM's own; null follows
// its template's default (template_policies.start_on_boot).
import { z } from 'zod';
import { me, param, type ApiRouter } from '../api/route.ts';
import type { ControllerServices } from '../services.ts';
import { Vm } from './schemas.ts';

export const VmPatch = z.strictObject({
  startOnBoot: z.boolean().nullable().optional().describe('start the VM again when its host comes back: true, false, or null for its template\'s default; absent: unchanged'),
});

export function bootRoutes(api: ApiRouter, services: ControllerServices): void {
  const { vms, startOnBoot } = services;
  api.route({
    method: 'patch', path: '/api/vms/:id', summary: 'Change a VM\'s settings: start on boot (after its host reboots)', auth: 'user', body: VmPatch,
    responses: { 200: Vm.extend({ startOnBoot: z.boolean().nullable(), startsOnBoot: z.boolean() }) },
  }, (req, res, { body }) => {
    const user = me(res);
    const vm = vms.require(user, param(req, 'id'));
    if (body.startOnBoot !== undefined) startOnBoot.set(vm, body.startOnBoot, user.name);
    res.json({ ...vms.view(vm), startOnBoot: startOnBoot.setting(vm.id), startsOnBoot: startOnBoot.wanted(vm) });
  });
}
