// Group `clone`: a VM disk from a 2 GiB template: a qcow2 overlay (SkyHost) against a full copy (the
// original design's clone), both with the real qemu-img and cp on this machine's disk.
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { run } from '../base/exec.ts';
import type { Group } from './group.ts';
import { figure, median, msSince, repeat, withTarget } from './stats.ts';

const TEMPLATE_BYTES = 2 * 1024 ** 3;

/**
 * A 2 GiB qcow2 whose every cluster holds data (no sparse holes, no repeated blocks), built once into
 * the cache: a full copy must move every byte, as it would for an installed OS image.
 */
export async function dataTemplate(dir: string, say: (m: string) => void): Promise<string> {
  const file = path.join(dir, 'template-2g.qcow2');
  if (existsSync(file)) return file;
  mkdirSync(dir, { recursive: true });
  say('clone: writing a 2 GiB template full of data (once; cached in .cache/bench)');
  const raw = `${file}.raw.tmp`;
  const chunk = Buffer.alloc(16 * 1024 * 1024);
  randomFillSync(chunk);
  const fd = openSync(raw, 'w');
  try {
    for (let off = 0; off < TEMPLATE_BYTES; off += chunk.length) {
      chunk.writeBigUInt64LE(BigInt(off), 0); // no two chunks alike
      randomFillSync(chunk, 8, 4096);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, `${file}.tmp`], { timeout: 300_000 });
  rmSync(raw, { force: true });
  renameSync(`${file}.tmp`, file);
  return file;
}

export const cloneGroup: Group = {
  name: 'clone',
  ids: [['clone.overlay_ms', 'ms'], ['clone.full_copy_ms', 'ms']],
  async run(ctx) {
    const template = await dataTemplate(ctx.cacheDir, ctx.say);
    const work = path.join(ctx.cacheDir, 'clone-work');
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    try {
      const overlay = await repeat(20, async (i) => {
        const out = path.join(work, `overlay-${i}.qcow2`);
        const t0 = process.hrtime.bigint();
        await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', template, out]);
        const ms = msSince(t0);
        rmSync(out);
        return ms;
      });
      await run('cat', [template], { timeout: 120_000 }).catch(() => undefined); // same warm cache for every copy
      const copy = await repeat(5, async (i) => {
        const out = path.join(work, `copy-${i}.qcow2`);
        const t0 = process.hrtime.bigint();
        await run('cp', ['--reflink=never', '--sparse=never', template, out], { timeout: 300_000 });
        const ms = msSince(t0);
        if (statSync(out).size !== statSync(template).size) throw new Error('full copy is incomplete');
        rmSync(out);
        return ms;
      });
      const size = `${(statSync(template).size / 1024 ** 3).toFixed(2)} GiB qcow2 of data`;
      const times = median(copy) / median(overlay);
      const fast = times >= 50 ? `${Math.round(times)}x faster than the copy (target >= 50x met)` : `${Math.round(times)}x faster than the copy (target >= 50x MISSED)`;
      return [
        withTarget(figure('clone.overlay_ms', 'ms', overlay, { baseline: copy, note: `qemu-img create -f qcow2 -F qcow2 -b on a ${size}, 20 runs; baseline: the full copy; ${fast}` }), { below: 50 }),
        figure('clone.full_copy_ms', 'ms', copy, { note: `cp --reflink=never of the same ${size}, 5 runs, page cache warm (a cold disk is slower)` }),
      ];
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  },
};
