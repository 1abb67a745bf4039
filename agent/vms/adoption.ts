// Adoption, when the agent starts: every VM the hypervisor has whose metadata carries this host id is
// taken back (its SSH forward reopened, its console bridge reconnected with the log's tail as
// scrollback). What a create cut short by a crash left (a VM folder or DHCP entry without a VM) goes,
// and a reset cut short is settled (reset.ts).
import type { VmManager } from './manager.ts';

export async function adoptVms(m: VmManager): Promise<number> {
  for (const { metadata, state } of await m.hypervisor.list()) {
    if (metadata.hostId !== m.deps.hostId || m.vms.has(metadata.id)) continue;
    m.vms.set(metadata.id, { metadata, state });
    if (metadata.sshPort) {
      await m.deps.forwarder.open(metadata.sshPort, metadata.ip).catch((err: unknown) =>
        m.log.warn('could not restore the SSH forward', { vm: metadata.id, port: metadata.sshPort, err }));
    }
    // a reset cut short by a crash: a stopped VM gets its old disk back, a running one keeps its new disk
    const settleReset = state === 'running' || state === 'paused' ? m.hypervisor.dropOldDisk(metadata.id) : m.hypervisor.restoreOldDisk(metadata.id);
    await settleReset.catch((err: unknown) => m.log.warn('could not settle a reset cut short: the VM keeps the disk it has', { vm: metadata.id, err }));
    const bridge = await m.openBridge(metadata.id);
    if (state === 'running') bridge.poke();
    m.log.info('adopted VM', { vm: metadata.id, name: metadata.name, state });
  }
  await removeLeftovers(m);
  return m.vms.size;
}

async function removeLeftovers(m: VmManager): Promise<void> {
  for (const id of await m.hypervisor.folders()) {
    if (!m.vms.has(id) && !m.creating.has(id)) {
      m.log.info('removing the leftover of an unfinished create', { vm: id });
      await m.hypervisor.removeFiles(id);
    }
  }
  const mine = new Set([...m.vms.values()].map((v) => v.metadata.mac));
  for (const [mac, ip] of await m.hypervisor.reservations()) {
    if (!mine.has(mac)) {
      m.log.info('removing a DHCP reservation without a VM', { mac, ip });
      await m.hypervisor.removeReservation(mac, ip);
    }
  }
}
