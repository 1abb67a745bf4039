// Reset to template: a fresh disk from the VM's template replaces its disk; the VM keeps its id,
// name, MAC (so its address) and SSH port. A running VM is powered off for it and started again.
// Undone on failure: the old disk stays aside until the fresh one is in place and the VM is back up.
import { Conflict, SkyError } from '../../base/errors.ts';
import type { VmInfo } from '../../wire/api.ts';
import { Reverter } from '../reverter.ts';
import { diskSource } from './create.ts';
import type { VmManager } from './manager.ts';

/** POST /vms/:id/reset: the VM as it is afterwards; 409 while it is being created or deleted. */
export async function resetVm(m: VmManager, id: string): Promise<VmInfo> {
  if (m.creating.has(id)) throw new Conflict(`VM ${id} is still being created: reset it once it is up`);
  m.mustGet(id);
  return m.exclusive(id, async () => {
    const vm = m.mustGet(id);
    const name = vm.metadata.name;
    if (vm.state === 'deleting') throw new Conflict(`VM ${name} is being deleted`);
    const t = await m.deps.templates.get(vm.metadata.template);
    if (!t) throw new SkyError(409, 'missing_template', `template ${vm.metadata.template} of VM ${name} is no longer on this host: nothing to reset to`);
    const source = diskSource(m, t, vm.metadata.diskGiB);
    if (!source) throw new SkyError(409, 'no_disk', `VM ${name} has no disk to reset (template ${t.name} boots a kernel without one)`);

    const hv = m.hypervisor;
    const before = (await hv.state(id)) ?? 'unknown';
    const wasOn = before === 'running' || before === 'paused';
    const revert = new Reverter(m.log);
    const t0 = performance.now();
    try {
      if (wasOn) {
        // the disk's content is thrown away: no need to ask the guest to shut down
        await hv.poweroff(id);
        revert.add('poweroff', async () => {
          await hv.start(id);
          m.bridges.get(id)?.poke();
        });
      }
      await hv.replaceDisk(id, source);
      revert.add('disk', () => hv.restoreOldDisk(id));
      if (wasOn) {
        await hv.start(id);
        m.bridges.get(id)?.poke();
      }
      revert.success();
    } catch (err) {
      await revert.fail();
      vm.state = (await hv.state(id)) ?? 'unknown';
      m.log.warn('reset failed; the old disk is back', { vm: id, name, err });
      throw err;
    }
    try {
      await hv.dropOldDisk(id);
    } catch (err) {
      // the reset is done; the old disk is a leftover file the next reset replaces
      m.log.warn('could not remove the disk a reset replaced', { vm: id, err });
    }
    vm.state = (await hv.state(id)) ?? 'unknown';
    m.log.info('reset VM to its template', { vm: id, name, template: t.name, restarted: wasOn, ms: Math.round(performance.now() - t0) });
    return m.info(vm);
  });
}
