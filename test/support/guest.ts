// The test guest: a Debian kernel from /boot and a busybox initramfs built here from Debian packages,
// cached under .cache/guest/. It boots under TCG in seconds, takes an address with udhcpc, answers on
// port 22 with a one-line banner, powers off on the ACPI power button, and gives a root shell on
// ttyS0 whose prompt is GUEST_PROMPT.
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../appliance/exec.ts';

export const GUEST_PROMPT = 'skyguest# ';
/** What the guest's port 22 answers before closing. */
export const GUEST_BANNER = 'SSH-2.0-skyhost-test-guest';
export const GUEST_CMDLINE = 'console=ttyS0 panic=-1 quiet';

const CACHE = path.resolve(import.meta.dirname, '../../.cache/guest');
/** Modules the guest needs that this kernel builds as modules, in load order. */
const MODULES = [
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

const INIT = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
hostname skyguest
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /bin/dhcp-event -t 20 -T 1 -b -q >/dev/null 2>&1
# the ACPI power button: the first event from its input device powers off
for d in /sys/class/input/event*; do
  if grep -q "Power Button" "$d/device/name" 2>/dev/null; then
    (head -c 1 "/dev/$(basename "$d" | sed 's/^/input\\//')" >/dev/null && poweroff -f) &
  fi
done
(while true; do echo ${GUEST_BANNER} | nc -l -p 22 >/dev/null 2>&1; done) &
export PS1='${GUEST_PROMPT}'
echo SKYGUEST-READY
while true; do setsid cttyhack sh -i; done
`;

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

const PROFILE = `export PS1='${GUEST_PROMPT}'\n`;

export interface TestGuest {
  kernel: string;
  initrd: string;
  cmdline: string;
}

function kernelRelease(): string {
  const kernels = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort();
  const last = kernels.at(-1);
  if (!last) throw new Error('no /boot/vmlinuz-*: install linux-image-amd64 (npm run pretest)');
  return last.slice('vmlinuz-'.length);
}

/** Builds (or reuses from .cache/guest/) the kernel + initramfs of the test guest. */
export async function buildTestGuest(): Promise<TestGuest> {
  const release = kernelRelease();
  const recipe = createHash('sha256').update([release, INIT, DHCP_EVENT, PROFILE, ...MODULES].join('\0')).digest('hex').slice(0, 12);
  const dir = path.join(CACHE, recipe);
  const kernel = path.join(dir, 'vmlinuz');
  const initrd = path.join(dir, 'initrd.cpio.gz');
  if (existsSync(initrd) && existsSync(kernel)) return { kernel, initrd, cmdline: GUEST_CMDLINE };

  const work = `${dir}.tmp-${process.pid}`;
  const root = path.join(work, 'root');
  rmSync(work, { recursive: true, force: true });
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'etc', 'lib/modules', 'tmp', 'root']) mkdirSync(path.join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(root, 'bin/busybox'));
  const applets = (await run(path.join(root, 'bin/busybox'), ['--list'])).stdout.split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', path.join(root, 'bin', a));
  MODULES.forEach((m, i) => copyFileSync(path.join('/lib/modules', release, m), path.join(root, 'lib/modules', `${String(i).padStart(2, '0')}-${path.basename(m)}`)));
  writeFileSync(path.join(root, 'init'), INIT);
  writeFileSync(path.join(root, 'bin/dhcp-event'), DHCP_EVENT);
  writeFileSync(path.join(root, 'etc/profile'), PROFILE);
  writeFileSync(path.join(root, 'root/.profile'), PROFILE);
  chmodSync(path.join(root, 'init'), 0o755);
  chmodSync(path.join(root, 'bin/dhcp-event'), 0o755);
  // cpio of the tree (newc), gzip-compressed, built without a shell string
  const list = (await run('find', ['.', '-mindepth', '1'], { cwd: root })).stdout;
  await run('cpio', ['-o', '-H', 'newc', '--quiet', '-O', path.join(work, 'initrd.cpio')], { cwd: root, input: list + '\n' });
  await run('gzip', ['-1', path.join(work, 'initrd.cpio')]);
  copyFileSync(path.join('/boot', `vmlinuz-${release}`), path.join(work, 'vmlinuz'));
  rmSync(root, { recursive: true, force: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  renameSync(work, dir);
  return { kernel, initrd, cmdline: GUEST_CMDLINE };
}

/** The sha256 of a file, for checks in tests. */
export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}
