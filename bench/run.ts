// `npm run bench [-- --only GROUP] [-- --json FILE]`: runs the groups of docs/design.md#benchmarks, prints the table on
// stdout (progress on stderr) and writes the JSON. A group that fails reports its ids as null with the
// error as the note, and the others still run.
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildBinary } from '../appliance/build.ts';
import { skyhostCommand } from './discovery.ts';
import { GROUPS } from './groups.ts';
import { completeFigures, ROOT, type BenchContext } from './group.ts';
import { formatMarkdown, formatTable, fromJson, writeJson, type Figure } from './stats.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { only: { type: 'string' }, json: { type: 'string' }, markdown: { type: 'boolean' }, from: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: false,
  });
  if (values.help) {
    console.log(`usage: npm run bench [-- --only GROUP[,GROUP...]] [-- --json FILE] [-- --markdown] [-- --from SAVED.json]\ngroups: ${GROUPS.map((g) => g.name).join(', ')}`);
    return 0;
  }
  if (values.from) {
    const saved = fromJson(JSON.parse(readFileSync(values.from, 'utf8')));
    console.log(values.markdown ? formatMarkdown(saved) : formatTable(saved));
    return 0;
  }
  const wanted = values.only?.split(',').map((g) => g.trim()).filter(Boolean);
  const unknown = wanted?.filter((w) => !GROUPS.some((g) => g.name === w)) ?? [];
  if (unknown.length > 0 || wanted?.length === 0) {
    console.error(`bench: unknown group "${unknown.join(',') || values.only}" (groups: ${GROUPS.map((g) => g.name).join(', ')})`);
    return 2;
  }
  const groups = wanted ? GROUPS.filter((g) => wanted.includes(g.name)) : GROUPS;
  const cacheDir = path.join(ROOT, '.cache', 'bench');
  mkdirSync(cacheDir, { recursive: true });
  const ctx: BenchContext = { root: ROOT, cacheDir, say: (m) => process.stderr.write(`bench: ${m}\n`) };

  // Services are measured as shipped: the single executable, rebuilt when older than the sources.
  if (skyhostCommand().what !== 'dist/skyhost') {
    ctx.say('building dist/skyhost (missing or older than the sources)');
    await buildBinary({ quiet: true });
  }
  const figures: Figure[] = [];
  const started = Date.now();
  for (const group of groups) {
    const t0 = Date.now();
    ctx.say(`${group.name} ...`);
    try {
      figures.push(...completeFigures(group, await group.run(ctx), `the ${group.name} group did not report it`));
    } catch (err) {
      const why = `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
      ctx.say(`${group.name} ${why}`);
      figures.push(...completeFigures(group, [], why));
    }
    ctx.say(`${group.name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  console.log(values.markdown ? formatMarkdown(figures) : formatTable(figures));
  ctx.say(`all done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (values.json) {
    writeJson(values.json, figures);
    ctx.say(`wrote ${values.json}`);
  }
  return 0;
}

process.exitCode = await main();
