// The systemd units and the first-boot script the installer puts on every PC. Their text is fixed:
// nothing a user typed goes into them (the hostname prefix arrives through /etc/hostname).
import type { Role } from './options.ts';

/** `skyhost-agent.service` or `skyhost-controller.service`. */
export function unitName(role: Role): string {
  return `skyhost-${role}.service`;
}

export const HOSTNAME_UNIT = 'skyhost-hostname.service';
export const HOSTNAME_SCRIPT = 'set-hostname.sh';

/** The service that runs `skyhost agent` or `skyhost controller` at boot. */
export function serviceUnit(role: Role, binary = '/usr/local/bin/skyhost'): string {
  const what = role === 'agent' ? "agent: runs this PC's VMs for the SkyHost controller" : 'controller: the web page and scheduler';
  return [
    '[Unit]',
    `Description=SkyHost ${what}`,
    'Wants=network-online.target',
    `After=network-online.target ${role === 'agent' ? 'libvirtd.service ' : 'avahi-daemon.service '}${HOSTNAME_UNIT}`,
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${binary} ${role}`,
    'Restart=on-failure',
    'RestartSec=5',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** Runs the hostname script once, after cloud-init has set the install-time hostname. */
export const hostnameUnit = [
  '[Unit]',
  'Description=SkyHost: give this PC a unique name (hostname prefix + MAC suffix), once',
  'After=cloud-init.service cloud-config.service systemd-networkd.service',
  'Before=skyhost-agent.service skyhost-controller.service',
  'ConditionPathExists=!/var/lib/skyhost/hostname-done',
  '',
  '[Service]',
  'Type=oneshot',
  'ExecStart=/usr/local/lib/skyhost/set-hostname',
  'RemainAfterExit=yes',
  '',
  '[Install]',
  'WantedBy=multi-user.target',
  '',
].join('\n');

/**
 * Names the PC PREFIX-XXXXXX: PREFIX is the install-time hostname, XXXXXX the last six hex digits of
 * the first network card's MAC. ROOT (default /) lets the tests run it against a scratch tree.
 */
export const hostnameScript = `#!/bin/sh
set -eu
root=\${ROOT:-}
marker="$root/var/lib/skyhost/hostname-done"
[ -e "$marker" ] && exit 0
prefix=$(cat "$root/etc/hostname")
mac=""
for dev in "$root"/sys/class/net/*; do
  [ -e "$dev/device" ] || continue
  mac=$(cat "$dev/address")
  break
done
if [ -z "$mac" ]; then
  echo "skyhost: no network card found, keeping the name $prefix"
  exit 0
fi
suffix=$(printf %s "$mac" | tr -d ':' | tail -c 6)
name="$prefix-$suffix"
printf '%s\\n' "$name" > "$root/etc/hostname"
if grep -q '^127\\.0\\.1\\.1' "$root/etc/hosts"; then
  sed -i "s/^127\\.0\\.1\\.1.*/127.0.1.1 $name/" "$root/etc/hosts"
else
  printf '127.0.1.1 %s\\n' "$name" >> "$root/etc/hosts"
fi
mkdir -p "$root/etc/cloud/cloud.cfg.d"
printf 'preserve_hostname: true\\n' > "$root/etc/cloud/cloud.cfg.d/99-skyhost-hostname.cfg"
if [ -z "$root" ]; then
  hostname "$name"
  systemctl try-restart avahi-daemon.service 2>/dev/null || true
fi
mkdir -p "$root/var/lib/skyhost"
touch "$marker"
echo "skyhost: this PC is now called $name"
`;
