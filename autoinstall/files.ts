// Every file the SkyHost installer adds to the Ubuntu ISO, except the binary itself: the NoCloud
// seed and what the late-commands install. Paths are ISO paths (the installer sees them under /cdrom).
import { joinTokenFile, renderConfigFile } from './config-file.ts';
import { parseInstallerOptions, type InstallerOptions, type InstallerOptionsInput } from './options.ts';
import { needsSudoers, renderMetaData, renderUserData } from './render.ts';
import { HOSTNAME_SCRIPT, HOSTNAME_UNIT, hostnameScript, hostnameUnit, serviceUnit, unitName } from './units.ts';

/** Where the binary goes on the ISO. */
export const ISO_BINARY_PATH = '/skyhost/skyhost';

/** ISO path -> file content (the binary is added by the remaster). */
export function isoFiles(input: InstallerOptionsInput | InstallerOptions): Map<string, string> {
  const o = parseInstallerOptions(input);
  const files = new Map<string, string>([
    ['/nocloud/user-data', renderUserData(o)],
    ['/nocloud/meta-data', renderMetaData(o)],
    ['/skyhost/config.yaml', renderConfigFile(o)],
    [`/skyhost/${unitName(o.role)}`, serviceUnit(o.role)],
    [`/skyhost/${HOSTNAME_UNIT}`, hostnameUnit],
    [`/skyhost/${HOSTNAME_SCRIPT}`, hostnameScript],
  ]);
  const token = joinTokenFile(o);
  if (token) files.set('/skyhost/join-token', token);
  if (needsSudoers(o)) files.set('/skyhost/sudoers', `${o.adminUser} ALL=(ALL) NOPASSWD:ALL\n`);
  return files;
}
