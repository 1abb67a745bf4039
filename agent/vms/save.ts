// Save as template: a stopped VM's disk, flattened (its template's image with the VM's own changes),
// becomes a new standalone template in this host's store, through the store's atomic import. The new
// template keeps its source's console, needsKvm and minimum memory, and its kind: a kernel template's
// VM gives a kernel template with a disk, an installer ISO's VM a disk template (what was installed).
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Conflict, fromZod, SkyError } from '../../base/errors.ts';
import { VmSaveAsTemplateRequest, type TemplateInfo } from '../../wire/api.ts';
import { diskSource } from './create.ts';
import type { VmManager } from './manager.ts';

/** POST /vms/:id/save-as-template: 201 with the new template; 409 while the VM runs or is being made. */
export async function saveAsTemplate(m: VmManager, id: string, input: unknown): Promise<TemplateInfo> {
  const parsed = VmSaveAsTemplateRequest.safeParse(input);
  if (!parsed.success) throw fromZod(parsed.error);
  const req = parsed.data;
  if (m.creating.has(id)) throw new Conflict(`VM ${id} is still being created: save it once it is up and shut down`);
  m.mustGet(id);
  const templates = m.deps.templates;
  return m.exclusive(id, async () => {
    const vm = m.mustGet(id);
    const name = vm.metadata.name;
    if (vm.state === 'deleting') throw new Conflict(`VM ${name} is being deleted`);
    const state = (await m.hypervisor.state(id)) ?? 'unknown';
    vm.state = state;
    if (state !== 'shutoff') {
      throw new SkyError(409, 'vm_running', `VM ${name} is ${state}: shut it down first, then save it as a template (the disk of a running VM is still changing)`);
    }
    if (await templates.get(req.name)) {
      throw new Conflict(`template ${req.name} already exists: choose another name`, { fields: [{ field: 'name', message: 'already in use' }] });
    }
    const source = await templates.get(vm.metadata.template);
    if (!source) throw new SkyError(409, 'missing_template', `template ${vm.metadata.template} of VM ${name} is no longer on this host: its disk cannot be flattened without it`);
    if (!diskSource(m, source, vm.metadata.diskGiB)) {
      throw new SkyError(409, 'no_disk', `VM ${name} has no disk to save (template ${source.name} boots a kernel without one)`);
    }

    const work = path.join(templates.dir, `.save-${req.name}-${randomBytes(4).toString('hex')}`);
    await mkdir(work, { recursive: true, mode: 0o755 });
    const t0 = performance.now();
    try {
      const disk = path.join(work, 'disk.qcow2');
      await m.hypervisor.exportDisk(id, disk);
      const kernel = source.kind === 'kernel' ? templates.pathOf(source, 'kernel') : undefined;
      const initrd = kernel ? templates.pathOf(source, 'initrd') : undefined;
      const saved = await templates.import({
        name: req.name,
        disk,
        ...(kernel ? { kernel, ...(initrd ? { initrd } : {}), ...(source.cmdline !== undefined ? { cmdline: source.cmdline } : {}) } : {}),
        os: req.os ?? source.os,
        description: req.description ?? `saved from VM ${name} (template ${source.name})`,
        minMemoryMiB: source.minMemoryMiB,
        console: source.console,
        needsKvm: source.needsKvm,
      });
      m.log.info('saved VM as a template', { vm: id, name, template: saved.name, ms: Math.round(performance.now() - t0) });
      return saved;
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
}
