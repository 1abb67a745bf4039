// `packages`: what a host needs to run VMs (DESIGN §7); the controller also gets Avahi so that
// http://HOSTNAME.local:8080 resolves on the LAN.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const key = 'packages';

export const HOST_PACKAGES = ['qemu-system-x86', 'qemu-utils', 'libvirt-daemon-system', 'libvirt-clients'] as const;
export const CONTROLLER_PACKAGES = ['avahi-daemon', 'libnss-mdns'] as const;

export const schema = z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/));

export function emit(o: InstallerOptions): string[] {
  return [...HOST_PACKAGES, ...(o.role === 'controller' ? CONTROLLER_PACKAGES : [])];
}
