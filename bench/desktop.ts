// Group `desktop`: the XFCE template of `skyhost template build debian-12 --desktop`. How long a build
// takes with the packages already downloaded, how big the image is, and how long a VM of it takes under
// TCG from `virsh start` until the XFCE desktop is on its VNC display (read from `virsh screenshot`).
//
// The template is marked needs-kvm, so the scheduler and the agent's admission never place it on a host
// without KVM (the development PC runs QEMU under TCG). This bench boots it under TCG anyway, and only
// here, as a check that the recipe works: it drives the libvirt driver directly (folder, overlay, seed, DHCP entry, define with accel tcg, start),
// which is the agent's own create path without the admission check. Screenshots go to
// .cache/bench/desktop/ as PNG files, so that a person can look at what the check decided.
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { crc32, deflateSync, inflateSync } from 'node:zlib';
import { logger } from '../base/log.ts';
import { buildDistroImage, defaultCacheDir, distroRecipe } from '../agent/debian-template.ts';
import { TemplateStore } from '../agent/templates.ts';
import type { VmMetadata } from '../agent/hypervisor/driver.ts';
import { domainName } from '../agent/hypervisor/libvirt/domain.ts';
import { LibvirtHypervisor } from '../agent/hypervisor/libvirt/libvirt.ts';
import { virsh } from '../agent/hypervisor/libvirt/virsh.ts';
import { freeIp, newMac } from '../agent/vms/addresses.ts';
import { ensureDaemons } from '../host/hostsetup.ts';
import { ROOT, type BenchContext, type Group } from './group.ts';
import { removeAgentLeftovers } from './processes.ts';
import { figure, msSince, type Figure } from './stats.ts';

const TEMPLATE = 'bench-desktop';
const VCPUS = 2;
const MEMORY_MIB = 2048;
const SHOT_EVERY_MS = 10_000;
/** Under TCG on a busy 2-core PC the first boot (cloud-init, then LightDM and XFCE) takes many minutes. */
const BOOT_TIMEOUT_MS = 45 * 60_000;

/** An RGB picture: `rgb` holds width*height*3 bytes, row by row. */
export interface Picture {
  width: number;
  height: number;
  rgb: Buffer;
}

/** A binary PPM (P6, maxval 255): what `virsh screenshot` writes for a QEMU VGA display. */
export function readPpm(buf: Buffer): Picture {
  // header: P6 <ws> width <ws> height <ws> maxval <one ws>, with # comments allowed between fields
  const fields: string[] = [];
  let i = 0;
  while (fields.length < 4) {
    while (i < buf.length && /\s/.test(String.fromCharCode(buf[i]!))) i++;
    if (buf[i] === 0x23) {
      while (i < buf.length && buf[i] !== 0x0a) i++;
      continue;
    }
    const start = i;
    while (i < buf.length && !/\s/.test(String.fromCharCode(buf[i]!))) i++;
    if (i === start) throw new Error('not a PPM picture: the header ends early');
    fields.push(buf.subarray(start, i).toString('latin1'));
  }
  const [magic, w, h, max] = fields as [string, string, string, string];
  if (magic !== 'P6' || max !== '255') throw new Error(`not a P6 PPM with maxval 255 (header ${fields.join(' ')})`);
  const width = Number(w);
  const height = Number(h);
  const rgb = buf.subarray(i + 1, i + 1 + width * height * 3);
  if (!(width > 0 && height > 0) || rgb.length !== width * height * 3) throw new Error(`PPM of ${w}x${h} with ${rgb.length} bytes of pixels`);
  return { width, height, rgb };
}

/** A non-interlaced 8-bit RGB or RGBA PNG: what `virsh screenshot` writes when QEMU offers PNG (7.1 and later). */
export function readPng(buf: Buffer): Picture {
  if (!buf.subarray(0, 8).equals(PNG_SIGNATURE)) throw new Error('not a PNG picture');
  let width = 0;
  let height = 0;
  let channels = 0;
  const data: Buffer[] = [];
  for (let i = 8; i + 8 <= buf.length;) {
    const length = buf.readUInt32BE(i);
    const type = buf.toString('latin1', i + 4, i + 8);
    const body = buf.subarray(i + 8, i + 8 + length);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      const [depth, colourType, , , interlace] = body.subarray(8, 13);
      channels = colourType === 2 ? 3 : colourType === 6 ? 4 : 0;
      if (depth !== 8 || channels === 0 || interlace !== 0) throw new Error(`PNG of depth ${depth}, colour type ${colourType}, interlace ${interlace}: only 8-bit RGB/RGBA, not interlaced`);
    } else if (type === 'IDAT') data.push(body);
    else if (type === 'IEND') break;
    i += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(data));
  const stride = width * channels;
  if (raw.length !== (stride + 1) * height) throw new Error(`PNG of ${width}x${height} with ${raw.length} bytes of rows`);
  const cur = Buffer.alloc(stride);
  const prev = Buffer.alloc(stride);
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? cur[x - channels]! : 0;
      const b = prev[x]!;
      const c = x >= channels ? prev[x - channels]! : 0;
      const pa = Math.abs(b - c);
      const pb = Math.abs(a - c);
      const pc = Math.abs(a + b - 2 * c);
      const predictor = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      if (predictor === undefined) throw new Error(`PNG row ${y} has filter ${filter}`);
      cur[x] = (row[x]! + predictor) & 0xff;
    }
    for (let x = 0; x < width; x++) cur.copy(rgb, (y * width + x) * 3, x * channels, x * channels + 3);
    cur.copy(prev);
  }
  return { width, height, rgb };
}

/** A screenshot as `virsh screenshot` wrote it: PNG or PPM, whichever QEMU gave. */
export function readScreenshot(buf: Buffer): Picture {
  return buf.subarray(0, 8).equals(PNG_SIGNATURE) ? readPng(buf) : readPpm(buf);
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** The picture as a PNG file (8-bit RGB, no filter), for a person to look at. */
export function toPng(p: Picture): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(p.width, 0);
  header.writeUInt32BE(p.height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, RGB, deflate, no filter method choice, no interlace
  const rows = Buffer.alloc((p.width * 3 + 1) * p.height);
  for (let y = 0; y < p.height; y++) p.rgb.copy(rows, y * (p.width * 3 + 1) + 1, y * p.width * 3, (y + 1) * p.width * 3);
  return Buffer.concat([
    PNG_SIGNATURE,
    chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

export interface ScreenVerdict {
  desktop: boolean;
  /** Distinct colours on the screen (counted up to 4096). */
  colours: number;
  /** Rows of the panel band at the top of the screen (0: none found). */
  panelRows: number;
  /** Share of the screen in the backdrop's colour (the commonest colour). */
  backdrop: number;
  why: string;
}

const rgbAt = (p: Picture, x: number, y: number) => {
  const o = (y * p.width + x) * 3;
  return (p.rgb[o]! << 16) | (p.rgb[o + 1]! << 8) | p.rgb[o + 2]!;
};

/** The share of row `y` between columns x0 and x1 (fractions of the width) in `colour`. */
function rowShare(p: Picture, y: number, colour: number, x0 = 0, x1 = 1): number {
  const from = Math.floor(p.width * x0);
  const to = Math.floor(p.width * x1);
  let n = 0;
  for (let x = from; x < to; x++) if (rgbAt(p, x, y) === colour) n++;
  return n / Math.max(1, to - from);
}

/**
 * Whether the XFCE desktop is on the screen, as Debian's default XFCE session draws it. All four must hold:
 * 1. Not a text screen: the text console (VGA text mode, then the kernel's framebuffer console) draws
 *    with at most 16 colours, a blank X screen with one, and one with only the mouse pointer on it with
 *    under 100; the desktop's icons and anti-aliased text give thousands. At least 256 distinct colours.
 * 2. The top panel: at least 16 rows from the top edge where one colour (the panel's, read at the middle
 *    of the top row, between its menu and its clock) covers at least half of every row.
 * 3. The backdrop: below the panel, the commonest colour of the screen covers at least half of it
 *    (XFCE's plain backdrop; a half-drawn session still shows the black of the bare X screen).
 * 4. The dock: XFCE's second panel, launchers centred on the bottom edge: a few rows above the bottom,
 *    the middle is not backdrop while both outer fifths are.
 * A LightDM greeter (if the autologin did not happen) has a top bar and a backdrop but no dock.
 */
export function desktopOnScreen(p: Picture): ScreenVerdict {
  const counts = new Map<number, number>();
  for (let i = 0; i < p.rgb.length; i += 3) {
    const c = (p.rgb[i]! << 16) | (p.rgb[i + 1]! << 8) | p.rgb[i + 2]!;
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  const colours = Math.min(counts.size, 4096);
  const [backdropColour, backdropPixels] = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a));
  const backdrop = backdropPixels / (p.width * p.height);
  const panelColour = rgbAt(p, Math.floor(p.width / 2), 0);
  let panelRows = 0;
  while (panelRows < Math.min(80, p.height) && rowShare(p, panelRows, panelColour) >= 0.5) panelRows++;
  const panel = panelRows >= 16 && panelRows < 80 && panelColour !== backdropColour;
  const y = p.height - 8;
  const dock = rgbAt(p, Math.floor(p.width / 2), y) !== backdropColour
    && rowShare(p, y, backdropColour, 0, 0.2) > 0.95 && rowShare(p, y, backdropColour, 0.8, 1) > 0.95;
  const hex = (c: number) => `#${c.toString(16).padStart(6, '0')}`;
  const seen = `${colours} colours, ${panelRows} top rows of ${hex(panelColour)}, backdrop ${hex(backdropColour)} on ${Math.round(backdrop * 100)} %, ${dock ? 'a' : 'no'} dock`;
  const missing = colours < 256 ? 'a text or blank screen' : !panel ? 'no top panel' : backdrop < 0.5 ? 'no backdrop' : !dock ? 'no dock' : '';
  return { desktop: missing === '', colours, panelRows: panel ? panelRows : 0, backdrop, why: missing ? `${missing} (${seen})` : seen };
}

export interface DesktopBoot {
  /** From `virsh start` to the first of two screenshots in a row that show the desktop. */
  seconds: number;
  shots: { at: number; file: string; verdict: ScreenVerdict }[];
}

/**
 * Boots a VM of the desktop template (an installed template in `store`) under TCG, BYPASSING the
 * needs-kvm admission check (the driver is used directly; nothing else in SkyHost does this), takes a
 * screenshot every 10 s until the desktop shows on two in a row, and removes the VM and its network.
 */
export async function bootDesktopUnderTcgBypassingNeedsKvm(o: { dataDir: string; template: string; shotsDir: string; say: (m: string) => void }): Promise<DesktopBoot> {
  const store = new TemplateStore(o.dataDir);
  const t = await store.get(o.template);
  if (!t || t.kind !== 'kernel') throw new Error(`template ${o.template} is not an installed kernel template in ${o.dataDir}`);
  const hostId = `bench-desktop-${randomBytes(3).toString('hex')}`;
  const hv = new LibvirtHypervisor({ hostId, dataDir: o.dataDir, log: logger('bench-desktop') });
  const id = randomBytes(6).toString('hex');
  const shots: DesktopBoot['shots'] = [];
  mkdirSync(o.shotsDir, { recursive: true });
  try {
    const net = await hv.ensureNetwork();
    const metadata: VmMetadata = {
      hostId, dataDir: o.dataDir, id, name: 'bench-desktop', template: t.name, vcpus: VCPUS, memoryMiB: MEMORY_MIB,
      mac: newMac(new Set()), ip: freeIp(net, new Set()), console: 'vnc', network: net.name, createdAt: new Date().toISOString(),
    };
    await hv.createFolder(id);
    await hv.createDisk(id, { kind: 'overlay', image: store.pathOf(t, 'disk')!, format: 'qcow2' });
    await hv.createSeed(id, { instanceId: id, hostname: metadata.name });
    await hv.addReservation(metadata.mac, metadata.ip);
    await hv.define({
      metadata, accel: 'tcg', disk: true,
      kernel: { kernel: store.pathOf(t, 'kernel')!, initrd: store.pathOf(t, 'initrd')!, ...(t.cmdline ? { cmdline: t.cmdline } : {}) },
    });
    const t0 = process.hrtime.bigint();
    await hv.start(id);
    const shot = path.join(o.shotsDir, 'screen');
    let seenAt: number | undefined;
    for (;;) {
      await new Promise((r) => setTimeout(r, SHOT_EVERY_MS));
      const at = msSince(t0) / 1000;
      await virsh(['screenshot', domainName(hostId, id), shot]);
      const picture = readScreenshot(readFileSync(shot));
      const verdict = desktopOnScreen(picture);
      const file = path.join(o.shotsDir, `${String(Math.round(at)).padStart(5, '0')}s.png`);
      writeFileSync(file, toPng(picture));
      shots.push({ at, file, verdict });
      o.say(`desktop: ${Math.round(at)} s: ${verdict.desktop ? 'DESKTOP' : 'not yet'}: ${verdict.why}`);
      if (verdict.desktop && seenAt !== undefined) return { seconds: seenAt, shots };
      seenAt = verdict.desktop ? at : undefined;
      if (at * 1000 > BOOT_TIMEOUT_MS) {
        copyFileSync(path.join(o.dataDir, 'vms', id, 'console.log'), path.join(o.shotsDir, 'console.log'));
        throw new Error(`no desktop on the screen after ${Math.round(at)} s (last: ${verdict.why}; serial console in ${o.shotsDir}/console.log)`);
      }
    }
  } finally {
    rmSync(path.join(o.shotsDir, 'screen'), { force: true });
    await hv.destroy(id);
    await hv.removeFiles(id);
    await removeAgentLeftovers(hostId);
    await hv.close();
  }
}

/** The build figures and the boot figure, with the screenshots in `shotsDir`. */
async function measure(ctx: BenchContext, shotsDir: string): Promise<Figure[]> {
  await ensureDaemons();
  const recipe = await distroRecipe('debian-12', { desktop: true });
  // the build measured is one with every package already downloaded: the image cache is bypassed
  // (--rebuild) when it holds this recipe, and a build that had to download is followed by one that does not
  const packages = path.join(defaultCacheDir(), 'apt', `${recipe.distro}-${recipe.suite}`);
  const debs = () => (existsSync(packages) ? readdirSync(packages).filter((f) => f.endsWith('.deb')).length : 0);
  const before = debs();
  let t0 = process.hrtime.bigint();
  let warm = await buildDistroImage(recipe, { onProgress: (s, d) => ctx.say(`desktop: ${s}: ${d}`) });
  const downloaded = debs() - before;
  if (warm.cached || downloaded > 0) {
    t0 = process.hrtime.bigint();
    warm = await buildDistroImage(recipe, { rebuild: true, onProgress: (s, d) => ctx.say(`desktop (warm packages): ${s}: ${d}`) });
  }
  const buildS = msSince(t0) / 1000;
  const [buildLoad] = os.loadavg();
  const figures = [
    figure('desktop.build_s', 's', [buildS], {
      note: `debian-12 --desktop (XFCE, LightDM; ${recipe.packages.length} packages named) with every package already downloaded: install, ext4, compressed qcow2; load ${buildLoad!.toFixed(1)} at the end; 1 run${downloaded > 0 ? ` (after a build that downloaded ${downloaded} packages)` : ''}`,
    }),
    figure('desktop.size_mb', 'MB', [statSync(warm.disk).size / 1e6], {
      note: `disk.qcow2 (compressed; ${recipe.sizeGiB} GiB as the VM sees it) + kernel ${(statSync(warm.kernel).size / 1e6).toFixed(1)} MB + initrd ${(statSync(warm.initrd).size / 1e6).toFixed(1)} MB`,
    }),
  ];
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-desktop-'));
  chmodSync(dataDir, 0o711); // libvirt-qemu reaches the VM folders inside
  try {
    await new TemplateStore(dataDir).import({
      name: TEMPLATE, kernel: warm.kernel, initrd: warm.initrd, disk: warm.disk, cmdline: warm.cmdline, os: 'debian-desktop',
      minMemoryMiB: recipe.minMemoryMiB, console: 'vnc', needsKvm: true,
    });
    rmSync(shotsDir, { recursive: true, force: true });
    const boot = await bootDesktopUnderTcgBypassingNeedsKvm({ dataDir, template: TEMPLATE, shotsDir, say: ctx.say });
    const [load] = os.loadavg();
    figures.push(figure('desktop.to_screen_s', 's', [boot.seconds], {
      note: `under TCG (needs-kvm bypassed for this bench only), ${VCPUS} vCPUs, ${MEMORY_MIB} MiB: virsh start to the XFCE desktop on two screenshots in a row (one every ${SHOT_EVERY_MS / 1000} s); first boot (cloud-init); load ${load!.toFixed(1)} at the end; 1 run`,
    }));
    return figures;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export const desktopGroup: Group = {
  name: 'desktop',
  ids: [
    ['desktop.build_s', 's'],
    ['desktop.size_mb', 'MB'],
    ['desktop.to_screen_s', 's'],
  ],
  run: (ctx) => measure(ctx, path.join(ctx.cacheDir, 'desktop')),
};

// `node bench/desktop.ts`: this group alone, without building dist/skyhost first (the group does not use it).
// `node bench/desktop.ts --data DIR --template NAME`: only the boot, of a template installed in DIR.
if (import.meta.main) {
  const { values } = parseArgs({ options: { data: { type: 'string' }, template: { type: 'string' } } });
  const ctx: BenchContext = { root: ROOT, cacheDir: path.join(ROOT, '.cache', 'bench'), say: (m) => process.stderr.write(`bench: ${m}\n`) };
  if (values.data && values.template) {
    await ensureDaemons();
    const boot = await bootDesktopUnderTcgBypassingNeedsKvm({ dataDir: values.data, template: values.template, shotsDir: path.join(ctx.cacheDir, 'desktop'), say: ctx.say });
    console.log(`desktop after ${Math.round(boot.seconds)} s under TCG (load ${os.loadavg()[0]!.toFixed(1)})`);
  } else {
    for (const f of await desktopGroup.run(ctx)) console.log(`${f.id}\t${f.value} ${f.unit}\t${f.note ?? ''}`);
  }
}
