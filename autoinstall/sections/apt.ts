// `proxy` and `apt`: the school's HTTP proxy and Ubuntu mirror, used by the installer and kept on the
// installed system. Both are optional: without them the official archive is used directly.
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';

export const proxyKey = 'proxy';
export const key = 'apt';

export const schema = z.strictObject({
  primary: z.array(z.strictObject({ arches: z.array(z.string()), uri: z.string() })),
  // 22.04's installer tries the mirror and fails over: keep going offline rather than abort.
  fallback: z.literal('offline-install').optional(),
});

export function emitProxy(o: InstallerOptions): string | undefined {
  return o.proxy;
}

export function emit(o: InstallerOptions): z.infer<typeof schema> | undefined {
  if (!o.mirror) return undefined;
  return {
    primary: [{ arches: ['default'], uri: o.mirror }],
    ...(o.release === '24.04' ? { fallback: 'offline-install' as const } : {}),
  };
}
