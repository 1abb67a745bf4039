// `storage`: the whole largest disk, LVM. THIS WIPES THAT DISK (installerWarnings() says so loudly).
// `sizing-policy: all` (the root volume takes the whole volume group) exists on 24.04 only; 22.04
// leaves free space in the group, which `lvextend` can claim later.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const key = 'storage';

export const schema = z.strictObject({
  layout: z.strictObject({
    name: z.literal('lvm'),
    match: z.strictObject({ size: z.literal('largest') }),
    'sizing-policy': z.literal('all').optional(),
  }),
});

export function emit(o: InstallerOptions): z.infer<typeof schema> {
  return {
    layout: {
      name: 'lvm',
      match: { size: 'largest' },
      ...(o.release === '24.04' ? { 'sizing-policy': 'all' as const } : {}),
    },
  };
}
