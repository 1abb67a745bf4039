// `ssh`: OpenSSH server, the admin's keys; password login only when there is no key.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const key = 'ssh';

export const schema = z.strictObject({
  'install-server': z.boolean(),
  'authorized-keys': z.array(z.string()),
  'allow-pw': z.boolean(),
});

export function emit(o: InstallerOptions): z.infer<typeof schema> {
  return { 'install-server': true, 'authorized-keys': o.sshKeys, 'allow-pw': o.sshKeys.length === 0 };
}
