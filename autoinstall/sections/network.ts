// `network`: DHCP on every wired interface (netplan v2), whatever the PC's NIC is called.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const key = 'network';

const dhcp = z.strictObject({ match: z.strictObject({ name: z.string() }), dhcp4: z.literal(true), optional: z.literal(true) });
export const schema = z.strictObject({
  version: z.literal(2),
  ethernets: z.record(z.string(), dhcp),
});

export function emit(_o: InstallerOptions): z.infer<typeof schema> {
  return {
    version: 2,
    ethernets: {
      wired: { match: { name: 'e*' }, dhcp4: true, optional: true },
    },
  };
}
