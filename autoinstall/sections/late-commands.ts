// `late-commands`: run by the installer after the system is installed, with it mounted at /target and
// the USB at /cdrom. Every command is an argument list (curtin runs lists without a shell), so no
// user text is ever parsed by a shell; the files they copy are made by isoFiles() (autoinstall/files.ts).
import { z } from 'zod';
import type { InstallerOptions } from '../options.ts';
import { unitName, HOSTNAME_UNIT, HOSTNAME_SCRIPT } from '../units.ts';

export const key = 'late-commands';

export const schema = z.array(z.array(z.string()).min(1));

/** Where things land on the installed system. */
export const TARGET = {
  binary: '/usr/local/bin/skyhost',
  config: '/etc/skyhost/config.yaml',
  /** Root-only (0600): the agent reads its join token here, never from a unit or a command line. */
  joinToken: '/etc/skyhost/join-token',
  units: '/etc/systemd/system',
  hostnameScript: '/usr/local/lib/skyhost/set-hostname',
  sudoers: '/etc/sudoers.d/90-skyhost-admin',
} as const;

/** Where the installer finds the USB's own files. */
export const CDROM = '/cdrom/skyhost';

export function emit(o: InstallerOptions, hasSudoers: boolean): string[][] {
  const unit = unitName(o.role);
  const inTarget = (...argv: string[]) => ['curtin', 'in-target', '--target=/target', '--', ...argv];
  const install = (mode: string, from: string, to: string) => ['install', '-D', '-m', mode, `${CDROM}/${from}`, `/target${to}`];
  return [
    install('0755', 'skyhost', TARGET.binary),
    install('0644', 'config.yaml', TARGET.config),
    ...(o.role === 'agent' && o.joinToken ? [install('0600', 'join-token', TARGET.joinToken)] : []),
    install('0644', unit, `${TARGET.units}/${unit}`),
    install('0755', HOSTNAME_SCRIPT, TARGET.hostnameScript),
    install('0644', HOSTNAME_UNIT, `${TARGET.units}/${HOSTNAME_UNIT}`),
    ...(hasSudoers ? [install('0440', 'sudoers', TARGET.sudoers)] : []),
    inTarget('systemctl', 'enable', HOSTNAME_UNIT, unit, ...(o.role === 'controller' ? ['avahi-daemon.service'] : [])),
  ];
}
