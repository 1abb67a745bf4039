// /skyhost/config.yaml on the USB, installed as /etc/skyhost/config.yaml (world-readable): the keys of
// base/config.ts that the installed `skyhost agent|controller` needs, checked by that same schema.
// Never the join token: that goes to its own root-only file (joinTokenFile).
import { stringify } from 'yaml';
import { configSchema, type Config } from '../base/config.ts';
import type { InstallerOptions } from './options.ts';

export function skyhostConfig(o: InstallerOptions): Partial<Config> {
  const config: Partial<Config> =
    o.role === 'agent'
      ? { ...(o.controllerUrl ? { controllerUrl: o.controllerUrl } : {}) }
      : { advertise: true };
  return configSchema.partial().parse(config);
}

/** /skyhost/join-token on the USB, installed 0600 as /etc/skyhost/join-token (the agent reads it); none without a token. */
export function joinTokenFile(o: InstallerOptions): string | undefined {
  return o.role === 'agent' && o.joinToken ? o.joinToken + '\n' : undefined;
}

export function renderConfigFile(o: InstallerOptions): string {
  const body = skyhostConfig(o);
  const header =
    `# SkyHost ${o.role} configuration, written by the SkyHost installer USB.\n` +
    '# Keys: see `skyhost --help`; flags and SKYHOST_* variables override them.\n';
  return header + (Object.keys(body).length ? stringify(body) : '{}\n');
}
