// `packages`: what a host needs to run VMs; the controller also gets Avahi so that
// http://HOSTNAME.local:8080 resolves on the LAN.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const key = 'packages';

/** What runs VMs; base/packages.ts HOST_PACKAGES adds the tools a host needs beyond the installer. */
export const VM_PACKAGES = ['qemu-system-x86', 'qemu-utils', 'libvirt-daemon-system', 'libvirt-clients'] as const;
export const MDNS_PACKAGES = ['avahi-daemon', 'libnss-mdns'] as const;

export const schema = z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/));

export function emit(o: InstallerOptions): string[] {
  return [...VM_PACKAGES, ...(o.role === 'controller' ? MDNS_PACKAGES : [])];
}
