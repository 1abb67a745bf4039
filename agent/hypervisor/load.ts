// The one place a hypervisor is chosen: libvirt on a lab PC, the in-memory fake for the simulated
// agent and tests. Each is loaded only when chosen.
import type { Logger } from '../../base/log.ts';
import type { Hypervisor } from './driver.ts';
import type { FakeHypervisor, FakeHypervisorOptions } from './fake.ts';

export type HypervisorKind = 'libvirt' | 'fake';

export interface HypervisorConfig {
  /** Default libvirt. */
  kind?: HypervisorKind;
  hostId: string;
  dataDir: string;
  log: Logger;
  /** The running agent's own hypervisor: the host id is claimed until close() (libvirt/host-lock.ts). */
  exclusive?: boolean;
  /** Only for the fake. */
  fake?: Omit<FakeHypervisorOptions, 'hostId'>;
}

/**
 * The agent's hypervisor.
 * @example const hypervisor = await loadHypervisor({ hostId, dataDir: '/var/lib/skyhost', log })
 */
export async function loadHypervisor(c: HypervisorConfig & { kind: 'fake' }): Promise<FakeHypervisor>;
export async function loadHypervisor(c: HypervisorConfig): Promise<Hypervisor>;
export async function loadHypervisor(c: HypervisorConfig): Promise<Hypervisor> {
  switch (c.kind ?? 'libvirt') {
    case 'libvirt': {
      const { LibvirtHypervisor } = await import('./libvirt/libvirt.ts');
      return new LibvirtHypervisor({ hostId: c.hostId, dataDir: c.dataDir, log: c.log, ...(c.exclusive ? { exclusive: true } : {}) });
    }
    case 'fake': {
      const { FakeHypervisor } = await import('./fake.ts');
      return new FakeHypervisor({ hostId: c.hostId, ...c.fake });
    }
  }
}
