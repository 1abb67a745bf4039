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
/** Kernel argument that makes the guest ignore the ACPI power button (a guest that will not shut down). */
export const IGNORE_ACPI = 'skyguest.ignore-acpi';

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
# the ACPI power button: the first event from its input device powers off (unless told to ignore it)
grep -q skyguest.ignore-acpi /proc/cmdline ||
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

/** A serial console over the agent's WebSocket: collects what the guest prints, sends keystrokes. */
export class ConsoleSession {
  private text = '';
  private readonly ws: import('ws').WebSocket;
  private waiters: (() => void)[] = [];

  private constructor(ws: import('ws').WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer) => {
      this.text += d.toString('utf8');
      for (const w of this.waiters) w();
    });
  }

  /** Opens `GET /vms/:id/console` on an agent (or anything that speaks the same). */
  static async open(baseUrl: string, path: string, key: string): Promise<ConsoleSession> {
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(baseUrl.replace(/^http/, 'ws') + path, { headers: { authorization: `Bearer ${key}` } });
    // listen before the handshake ends: the scrollback may come in the same packet as the upgrade
    const session = new ConsoleSession(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_q, res) => reject(new Error(`console answered HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
    return session;
  }

  get output(): string {
    return this.text;
  }

  send(text: string): void {
    this.ws.send(Buffer.from(text));
  }

  /** Waits until the output from `from` on matches `re`; returns the match. */
  async waitFor(re: RegExp, timeoutMs = 60_000, from = 0): Promise<RegExpExecArray> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) return m;
      const left = until - Date.now();
      if (left <= 0) throw new Error(`console: no ${re} within ${timeoutMs} ms; last output: ${JSON.stringify(this.text.slice(-300))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(left, 500));
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.waiters.push(done);
      });
      this.waiters = [];
    }
  }

  /** Gets a prompt (pressing Enter until one shows), runs `command`, and returns what it printed. */
  async run(command: string, timeoutMs = 60_000): Promise<string> {
    const marker = `__done_${Math.random().toString(36).slice(2, 8)}`;
    const from = this.text.length;
    this.send('\n');
    await this.waitFor(new RegExp(escapeRe(GUEST_PROMPT)), timeoutMs, from);
    const start = this.text.length;
    // the marker is split in the command line so only its output matches
    this.send(`${command}; echo ${marker.slice(0, 4)}""${marker.slice(4)}\n`);
    const m = await this.waitFor(new RegExp(`([\\s\\S]*?)${marker}`), timeoutMs, start);
    return m[1]!.replace(/\r/g, '');
  }

  close(): void {
    this.ws.close();
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
