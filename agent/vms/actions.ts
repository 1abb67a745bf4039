// Power actions and delete, one at a time per VM. What the hypervisor refuses comes back in its
// own words (hypervisor/driver.ts: 404 no such VM, 409 not running, 502 with its reason).
import { Conflict, SkyError } from '../../base/errors.ts';
import type { VmAction, VmInfo } from '../../wire/api.ts';
import type { VmMetadata } from '../hypervisor/driver.ts';
import type { VmManager } from './manager.ts';

/** Waits for a create of VM `id` in flight; its failure was answered to the create's caller (the VM is then gone: 404 next). */
async function settled(m: VmManager, id: string): Promise<void> {
  const pending = m.creating.get(id);
  if (pending) await pending.catch(() => undefined);
}

/** start | shutdown (ACPI, waits up to timeoutSeconds) | poweroff | reboot. */
export async function runAction(m: VmManager, id: string, action: VmAction, opts: { timeoutSeconds?: number }): Promise<VmInfo> {
  await settled(m, id);
  m.mustGet(id);
  return m.exclusive(id, async () => {
    const vm = m.mustGet(id);
    if (vm.state === 'deleting') throw new Conflict(`VM ${id} is being deleted`);
    const hv = m.hypervisor;
    const now = (await hv.state(id)) ?? 'unknown';
    vm.state = now;
    switch (action) {
      case 'start':
        m.bridges.get(id)?.starting(); // before: a retry of the line may reach the new QEMU before the call returns
        try {
          if (now === 'paused') await hv.resume(id);
          else if (now !== 'running') await hv.start(id);
        } finally {
          m.bridges.get(id)?.poke(); // a refused start: the line's next try finds the VM off again
        }
        break;
      case 'poweroff':
        await hv.poweroff(id);
        break;
      case 'reboot':
        if (now !== 'running') throw new SkyError(409, 'not_running', `VM ${id} is not running (it is ${now}): start it instead`);
        m.bridges.get(id)?.rebooting(); // before: a fast guest is back before the call returns
        await hv.reboot(id).catch((err: unknown) => {
          m.bridges.get(id)?.rebootRefused();
          throw err;
        });
        break;
      case 'shutdown': {
        if (now !== 'running' && now !== 'paused') break;
        const timeout = (opts.timeoutSeconds ?? 60) * 1000;
        await hv.shutdown(id);
        const until = Date.now() + timeout;
        while ((await hv.state(id)) !== 'shutoff') {
          if (Date.now() > until) {
            vm.state = (await hv.state(id)) ?? 'unknown';
            throw new SkyError(409, 'shutdown_timeout',
              `VM ${id} did not power off within ${timeout / 1000} s of the ACPI shutdown request (the guest may ignore it): it is still running; use poweroff to force it off`);
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        break;
      }
    }
    vm.state = (await hv.state(id)) ?? 'unknown';
    return m.info(vm);
  });
}

/** Deletes a VM and everything it had (domain, files, DHCP entry, port); a create in flight is awaited first. */
export async function deleteVm(m: VmManager, id: string): Promise<void> {
  await settled(m, id);
  m.mustGet(id);
  await m.exclusive(id, async () => {
    const vm = m.vms.get(id);
    if (!vm) return;
    vm.state = 'deleting';
    try {
      await teardown(m, vm.metadata);
    } catch (err) {
      vm.state = 'error';
      vm.error = `delete failed: ${(err as Error).message}`;
      throw err;
    }
    await m.forget(id);
    m.log.info('deleted VM', { vm: id, name: vm.metadata.name });
  });
}

async function teardown(m: VmManager, meta: VmMetadata): Promise<void> {
  m.bridges.get(meta.id)?.stop();
  if (meta.sshPort) await m.deps.forwarder.close(meta.sshPort);
  await m.hypervisor.destroy(meta.id);
  await m.hypervisor.removeReservation(meta.mac, meta.ip);
  await m.hypervisor.removeFiles(meta.id);
}
