// `skyhost template build NAME --busybox`: a tiny Linux made on this host from what Debian/Ubuntu
// already have (the kernel in /boot, its virtio and ACPI-button modules, busybox-static), no download.
// It boots in seconds even without KVM: a root shell on the serial console, an address by DHCP, and
// it powers off on the ACPI button. The test suite's guest is the same recipe with test extras.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Unavailable } from '../base/errors.ts';
import { run } from '../base/exec.ts';

/** Modules the guest needs that Debian's kernel builds as modules, in load order. */
export const TINY_MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/net/core/failover.ko',
  'kernel/drivers/net/net_failover.ko',
  'kernel/drivers/net/virtio_net.ko',
  'kernel/drivers/acpi/button.ko',
  'kernel/drivers/input/evdev.ko',
];

export const TINY_CMDLINE = 'console=ttyS0 panic=-1 quiet';
/**
 * The least memory the busybox guest boots in (QEMU TCG, Debian 12 kernel): 64 and 72 MiB reset at once,
 * 80 MiB panics, 96 MiB boots; 128 leaves room. Below it the VM reboots in a loop while libvirt says running.
 */
export const TINY_MIN_MEMORY_MIB = 128;
/** Kernel argument that makes the guest ignore the ACPI power button. */
export const IGNORE_ACPI_ARG = 'skyguest.ignore-acpi';

export interface TinyGuestOptions {
  hostname: string;
  prompt: string;
  /** Lines of shell run in the background before the shell starts (e.g. a listener on a port). */
  extra?: string;
  /** A line printed just before the shell starts, for tests that wait for a boot (real templates print none). */
  readyMarker?: string;
}

/** The guest's /init. */
export function tinyInit(o: TinyGuestOptions): string {
  return `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
hostname ${o.hostname}
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /bin/dhcp-event -t 20 -T 1 -b -q >/dev/null 2>&1
# the ACPI power button: the first event from its input device powers off (unless told to ignore it)
grep -q ${IGNORE_ACPI_ARG} /proc/cmdline ||
for d in /sys/class/input/event*; do
  if grep -q "Power Button" "$d/device/name" 2>/dev/null; then
    (head -c 1 "/dev/$(basename "$d" | sed 's/^/input\\//')" >/dev/null && poweroff -f) &
  fi
done
${o.extra ?? ''}
export PS1='${o.prompt}'
${o.readyMarker ? `echo ${o.readyMarker}\n` : ''}while true; do setsid cttyhack sh -i; done
`;
}

const DHCP_EVENT = `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via \${router%% *} dev "$interface" 2>/dev/null
    ;;
esac
exit 0
`;

/** The newest kernel release in /boot that has its modules in /lib/modules. */
export function kernelRelease(): string {
  const releases = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).map((f) => f.slice('vmlinuz-'.length)).sort();
  const usable = releases.filter((r) => existsSync(path.join('/lib/modules', r)));
  const last = usable.at(-1);
  if (!last) throw new Unavailable('no kernel in /boot with modules in /lib/modules (install linux-image-amd64)');
  return last;
}

/** Everything that decides the result (to key a cache on). */
export function tinyRecipe(o: TinyGuestOptions): string {
  return [kernelRelease(), tinyInit(o), DHCP_EVENT, ...TINY_MODULES].join('\0');
}

/** Writes `vmlinuz` and `initrd.cpio.gz` into `outDir` (which must not hold a `root` folder). */
export async function buildTinyGuest(outDir: string, o: TinyGuestOptions): Promise<{ kernel: string; initrd: string; cmdline: string }> {
  if (!existsSync('/bin/busybox')) throw new Unavailable('/bin/busybox is missing (install busybox-static)');
  const release = kernelRelease();
  const root = path.join(outDir, 'root');
  rmSync(root, { recursive: true, force: true });
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'etc', 'lib/modules', 'tmp', 'root']) mkdirSync(path.join(root, d), { recursive: true });
  try {
    copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
    const applets = (await run(path.join(root, 'bin/busybox'), ['--list'])).stdout.split('\n').filter(Boolean);
    for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', path.join(root, 'bin', a));
    TINY_MODULES.forEach((m, i) =>
      copyFileSync(path.join('/lib/modules', release, m), path.join(root, 'lib/modules', `${String(i).padStart(2, '0')}-${path.basename(m)}`)));
    const profile = `export PS1='${o.prompt}'\n`;
    writeFileSync(path.join(root, 'init'), tinyInit(o), { mode: 0o755 });
    writeFileSync(path.join(root, 'bin/dhcp-event'), DHCP_EVENT, { mode: 0o755 });
    writeFileSync(path.join(root, 'etc/profile'), profile);
    writeFileSync(path.join(root, 'root/.profile'), profile);
    chmodSync(path.join(root, 'init'), 0o755);
    chmodSync(path.join(root, 'bin/dhcp-event'), 0o755);
    // a newc cpio of the tree, gzip-compressed; file names go to cpio on stdin, never through a shell
    const list = (await run('find', ['.', '-mindepth', '1'], { cwd: root })).stdout;
    const cpio = path.join(outDir, 'initrd.cpio');
    await run('cpio', ['-o', '-H', 'newc', '--quiet', '-O', cpio], { cwd: root, input: list + '\n' });
    await run('gzip', ['-1', '-f', cpio]);
    copyFileSync(path.join('/boot', `vmlinuz-${release}`), path.join(outDir, 'vmlinuz'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return { kernel: path.join(outDir, 'vmlinuz'), initrd: path.join(outDir, 'initrd.cpio.gz'), cmdline: TINY_CMDLINE };
}
