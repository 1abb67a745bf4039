// `identity`: the admin account and the install-time hostname (the prefix; first boot adds the MAC suffix).
import { z } from 'zod';
import { effectivePrefix, type InstallerOptions } from '../options.ts';

export const key = 'identity';

/** A locked password: SSH keys only. */
export const LOCKED_PASSWORD = '!';

export const schema = z.strictObject({
  realname: z.string(),
  username: z.string(),
  hostname: z.string(),
  password: z.string(),
});

export function emit(o: InstallerOptions): z.infer<typeof schema> {
  return {
    realname: o.adminRealname,
    username: o.adminUser,
    hostname: effectivePrefix(o),
    password: o.adminPasswordHash ?? LOCKED_PASSWORD,
  };
}
