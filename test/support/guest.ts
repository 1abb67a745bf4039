// The test guest: a Debian kernel from /boot and a busybox initramfs built here from Debian packages
// (agent/tinyguest.ts, the recipe of `skyhost template build --busybox`), cached under .cache/guest/.
// It boots under TCG in seconds, takes an address with udhcpc, answers on port 22 with a one-line
// banner, powers off on the ACPI power button, and gives a root shell on ttyS0 whose prompt is
// GUEST_PROMPT. Its kernel is that same kernel uncompressed (an ELF that QEMU starts at its PVH
// entry): under TCG, unpacking the xz bzImage took about 3 of the 6 s to the shell, in every boot of
// the suite. The bzImage itself, as the busybox template ships it, is `bzImage`.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { run } from '../../base/exec.ts';
import { buildTinyGuest, IGNORE_ACPI_ARG, TINY_CMDLINE, tinyRecipe, type TinyGuestOptions } from '../../agent/tinyguest.ts';

export const GUEST_PROMPT = 'skyguest# ';
/** What the guest's port 22 answers before closing. */
export const GUEST_BANNER = 'SSH-2.0-skyhost-test-guest';
/** What the test guest (and only it: real templates print nothing of the kind) prints when its shell starts. */
export const GUEST_READY = 'SKYGUEST-READY';
export const GUEST_CMDLINE = TINY_CMDLINE;
/** Kernel argument that makes the guest ignore the ACPI power button (a guest that will not shut down). */
export const IGNORE_ACPI = IGNORE_ACPI_ARG;

const CACHE = path.resolve(import.meta.dirname, '../../.cache/guest');

const OPTIONS: TinyGuestOptions = {
  hostname: 'skyguest',
  prompt: GUEST_PROMPT,
  readyMarker: GUEST_READY,
  extra: `(while true; do echo ${GUEST_BANNER} | nc -l -p 22 >/dev/null 2>&1; done) &`,
};

export interface TestGuest {
  /** The kernel the tests boot: uncompressed with a PVH entry when this kernel has one, else `bzImage`. */
  kernel: string;
  /** The kernel as /boot has it (a bzImage): what the busybox template ships and what GRUB boots. */
  bzImage: string;
  initrd: string;
  cmdline: string;
}

/** Builds (or reuses from .cache/guest/) the kernel + initramfs of the test guest. */
export async function buildTestGuest(): Promise<TestGuest> {
  const recipe = createHash('sha256').update(tinyRecipe(OPTIONS)).update('\nkernel: PVH ELF beside the bzImage').digest('hex').slice(0, 12);
  const dir = path.join(CACHE, recipe);
  const guest = (d: string): TestGuest => {
    const bzImage = path.join(d, 'vmlinuz');
    const pvh = path.join(d, 'vmlinux');
    return { kernel: existsSync(pvh) ? pvh : bzImage, bzImage, initrd: path.join(d, 'initrd.cpio.gz'), cmdline: GUEST_CMDLINE };
  };
  const done = path.join(dir, 'done');
  if (existsSync(done)) return guest(dir);
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  await buildTinyGuest(work, OPTIONS);
  const missing = await pvhKernel(path.join(work, 'vmlinuz'), path.join(work, 'vmlinux'));
  writeFileSync(path.join(work, 'done'), missing ? `kernel: vmlinuz (no PVH ELF: ${missing})\n` : 'kernel: vmlinux (PVH)\n');
  rmSync(dir, { recursive: true, force: true });
  renameSync(work, dir);
  return guest(dir);
}

/**
 * Unpacks a bzImage's kernel (xz as Debian packs it, or zstd) into `out` when it is an ELF with a PVH
 * entry note, which QEMU boots directly; otherwise writes nothing and answers why not.
 */
async function pvhKernel(bzImage: string, out: string): Promise<string | undefined> {
  const image = readFileSync(bzImage);
  // x86 boot protocol: the compressed payload's place, from the protected-mode code after the setup sectors
  if (image.toString('latin1', 0x202, 0x206) !== 'HdrS') return 'not a bzImage';
  const code = ((image[0x1f1] || 4) + 1) * 512;
  const payload = image.subarray(code + image.readUInt32LE(0x248), code + image.readUInt32LE(0x248) + image.readUInt32LE(0x24c));
  let elf: Buffer;
  if (payload.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    writeFileSync(`${out}.xz`, payload);
    // --single-stream: the size the kernel build appends after the stream is not a second stream
    await run('xz', ['-d', '-f', '--single-stream', `${out}.xz`]);
    elf = readFileSync(out);
  } else if (payload.readUInt32LE(0) === 0xfd2fb528) {
    elf = zstdDecompressSync(payload);
    writeFileSync(out, elf);
  } else {
    return 'compressed with neither xz nor zstd';
  }
  if (!hasPvhNote(elf)) {
    rmSync(out, { force: true });
    return 'no PVH entry note';
  }
  return undefined;
}

/** Whether a 64-bit ELF has the Xen PHYS32_ENTRY note (type 18) by which QEMU starts a kernel without its decompressor. */
function hasPvhNote(elf: Buffer): boolean {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  for (let i = 0; i < elf.readUInt16LE(0x38); i++) {
    const ph = phoff + i * elf.readUInt16LE(0x36);
    if (elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const start = Number(elf.readBigUInt64LE(ph + 0x08));
    const end = start + Number(elf.readBigUInt64LE(ph + 0x20));
    for (let n = start; n + 12 <= end;) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      const name = elf.toString('latin1', n + 12, n + 12 + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === 18) return true;
      n += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
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

  /** The line's states as the console's notices said them, oldest first (e.g. `connected`, `rebooting`). */
  readonly states: string[] = [];

  private constructor(ws: import('ws').WebSocket) {
    this.ws = ws;
    ws.on('message', (d: Buffer, binary: boolean) => {
      // text frames are the console's notices about the line (docs/api.md#consoles), binary ones its bytes
      if (!binary) {
        const notice = JSON.parse(d.toString('utf8')) as { console?: string };
        if (notice.console) this.states.push(notice.console);
      } else {
        this.text += d.toString('utf8');
      }
      for (const w of this.waiters) w();
    });
  }

  /** Waits until the console's latest notice says `state`. */
  async waitForState(state: string, timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.states.at(-1) !== state) {
      if (Date.now() > until) throw new Error(`console: not ${state} within ${timeoutMs} ms; states: ${this.states.join(' → ')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Opens `GET /vms/:id/console` on an agent (or anything that speaks the same); `agent` e.g. a PinnedAgent for wss://. */
  static async open(baseUrl: string, path: string, key: string, opts: { agent?: import('node:http').Agent } = {}): Promise<ConsoleSession> {
    const { WebSocket } = await import('ws');
    const ws = new WebSocket(baseUrl.replace(/^http/, 'ws') + path, { headers: { authorization: `Bearer ${key}` }, ...(opts.agent ? { agent: opts.agent } : {}) });
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
