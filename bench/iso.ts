// Group `iso`: `buildInstallerIso` (xorriso -boot_image any replay) against a plain `cp` of the same
// ISO to the same folder, alternately, several times. Target (docs/design.md#benchmarks): remaster at most 1.5x the copy.
// The input is the test suite's stand-in Ubuntu 24.04 live-server ISO with a squashfs filler that
// makes it as big as the real 24.04.1 image (2.7 GB): same layout and boot records.
// Both sides end with the file on disk: the remaster fsyncs before its rename (a crash must not
// publish a half-written ISO), so `iso.copy_s` is `cp` + `sync FILE`; `iso.copy_cached_s` is `cp`
// alone (the data still in the page cache) for reference. Each run starts after a `sync`.
// Self-contained: `npx node bench/iso.ts` prints the figures; `isoGroup` is the bench group.
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../base/exec.ts';
import { buildInstallerIso } from '../iso/remaster.ts';
import { fakeUbuntuIso } from '../test/support/fake-ubuntu-iso.ts';
import type { BenchContext, Group } from './group.ts';
import { figure, median, type Figure } from './stats.ts';

const RUNS = 5;
const FILLER_MB = 2560;

export async function measureIso(ctx: Pick<BenchContext, 'root' | 'cacheDir' | 'say'>): Promise<Figure[]> {
  const binary = path.join(ctx.root, 'dist/skyhost');
  if (!existsSync(binary)) throw new Error('dist/skyhost is missing: run npm run build first');
  ctx.say(`iso: building the stand-in Ubuntu ISO with a ${FILLER_MB} MB filler (once; cached in .cache/fake-iso)`);
  const input = await fakeUbuntuIso({ release: '24.04', fillerMb: FILLER_MB });
  const work = path.join(ctx.cacheDir, 'iso-work');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const remaster: number[] = [];
    const copy: number[] = [];
    const cached: number[] = [];
    const timed = async (fn: () => Promise<unknown>) => {
      await run('sync', []);
      const t = performance.now();
      await fn();
      return (performance.now() - t) / 1000;
    };
    for (let i = 0; i < RUNS; i++) {
      const copied = path.join(work, 'copy.iso');
      copy.push(await timed(async () => {
        await run('cp', ['--reflink=never', input, copied], { timeout: 600_000 });
        await run('sync', [copied], { timeout: 600_000 });
      }));
      rmSync(copied, { force: true });
      cached.push(await timed(() => run('cp', ['--reflink=never', input, copied], { timeout: 600_000 })));
      rmSync(copied, { force: true });
      const out = path.join(work, 'installer.iso');
      remaster.push(await timed(() => buildInstallerIso({ role: 'agent', ubuntuIso: input, out, binary, hostnamePrefix: 'lab' })));
      rmSync(out, { force: true });
      ctx.say(`iso run ${i + 1}/${RUNS}: remaster ${remaster.at(-1)!.toFixed(2)} s, cp+sync ${copy.at(-1)!.toFixed(2)} s, cp ${cached.at(-1)!.toFixed(2)} s`);
    }
    const ratio = median(remaster) / median(copy);
    const note = `${FILLER_MB} MB-filler stand-in 24.04 ISO, the skyhost binary added; median of ${RUNS}; ratio to copy_s ${ratio.toFixed(2)} (target <= 1.5)`;
    return [
      figure('iso.remaster_s', 's', remaster, { baseline: copy, note }),
      figure('iso.copy_s', 's', copy, { note: 'cp --reflink=never + sync FILE of the same ISO to the same folder' }),
      figure('iso.copy_cached_s', 's', cached, { note: `cp alone, data left in the page cache; remaster/this = ${(median(remaster) / median(cached)).toFixed(2)}` }),
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export const isoGroup: Group = {
  name: 'iso',
  ids: [['iso.remaster_s', 's'], ['iso.copy_s', 's']],
  run: (ctx) => measureIso(ctx),
};

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const figures = await measureIso({ root, cacheDir: path.join(root, '.cache/bench'), say: (s) => process.stderr.write(s + '\n') });
  for (const f of figures) console.log(`${f.id.padEnd(16)} ${String(f.value).padStart(8)} ${f.unit}  baseline=${f.baseline ?? '-'}  ${f.note ?? ''}`);
}
