// The bench's arithmetic and output: medians with their spread, the table and the JSON of docs/design.md#benchmarks.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** One measured figure. `value: null` means it could not be measured, and `note` says why. */
export interface Figure {
  id: string;
  value: number | null;
  unit: string;
  /** The alternative measured in the same run (the original design's way, or the limit). */
  baseline?: number | null;
  /** Interquartile range of the runs behind `value`, same unit. */
  spread?: number;
  /** How many runs the median is taken over. */
  runs?: number;
  note?: string;
}

export interface Summary {
  median: number;
  /** Interquartile range (p75 - p25). */
  spread: number;
  runs: number;
}

/** The q-quantile (0..1) of `xs` with linear interpolation; NaN for no samples. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (sorted.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/** Median and interquartile range of a set of runs. */
export function summarize(xs: readonly number[]): Summary {
  if (xs.length === 0) throw new RangeError('summarize: no samples');
  return { median: median(xs), spread: quantile(xs, 0.75) - quantile(xs, 0.25), runs: xs.length };
}

/** Runs `fn` `runs` times one after another and returns the samples it produced. */
export async function repeat(runs: number, fn: (i: number) => number | Promise<number>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await fn(i));
  return out;
}

/** Milliseconds since `start` (from `process.hrtime.bigint()`). */
export function msSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** A figure from samples, rounded sensibly; `baseline` samples are summarized the same way. */
export function figure(id: string, unit: string, samples: readonly number[], extra: { baseline?: readonly number[]; note?: string } = {}): Figure {
  const s = summarize(samples);
  const f: Figure = { id, value: round(s.median), unit, spread: round(s.spread), runs: s.runs };
  if (extra.baseline) f.baseline = round(summarize(extra.baseline).median);
  if (extra.note) f.note = extra.note;
  return f;
}

/** A figure that cannot be measured yet: value null and the reason. */
export function notMeasured(id: string, unit: string, why: string): Figure {
  return { id, value: null, unit, note: why };
}

/**
 * The figure with its target's verdict appended to the note: met, or missed and by how much.
 * @example withTarget(f, { below: 50 }) // "...; target < 50 ms MISSED by 2.1x"
 */
export function withTarget(f: Figure, target: { below: number } | { atLeast: number }): Figure {
  if (f.value === null) return f;
  const [met, text, ratio] = 'below' in target
    ? [f.value < target.below, `< ${target.below} ${f.unit}`, f.value / target.below]
    : [f.value >= target.atLeast, `>= ${target.atLeast} ${f.unit}`, target.atLeast / f.value];
  const verdict = met ? `target ${text} met` : `target ${text} MISSED by ${ratio.toFixed(1)}x`;
  return { ...f, note: f.note ? `${f.note}; ${verdict}` : verdict };
}

/** Three significant digits, whole numbers kept whole. */
export function round(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  if (Math.abs(x) >= 100) return Math.round(x);
  const digits = 2 - Math.floor(Math.log10(Math.abs(x)));
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** The bench JSON (docs/design.md#benchmarks): `{ "<id>": { value, unit, baseline?, spread?, runs?, note? } }`. */
export function toJson(figures: readonly Figure[]): Record<string, Omit<Figure, 'id'>> {
  const out: Record<string, Omit<Figure, 'id'>> = {};
  for (const { id, ...rest } of figures) {
    const entry: Omit<Figure, 'id'> = { value: rest.value, unit: rest.unit };
    if (rest.baseline !== undefined) entry.baseline = rest.baseline;
    if (rest.spread !== undefined) entry.spread = rest.spread;
    if (rest.runs !== undefined) entry.runs = rest.runs;
    if (rest.note !== undefined) entry.note = rest.note;
    out[id] = entry;
  }
  return out;
}

/** Figures back from the bench JSON (to print a saved run again). */
export function fromJson(json: Record<string, Omit<Figure, 'id'>>): Figure[] {
  return Object.entries(json).map(([id, f]) => ({ id, ...f }));
}

export function writeJson(file: string, figures: readonly Figure[]): void {
  mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  writeFileSync(file, JSON.stringify(toJson(figures), null, 2) + '\n');
}

/** A plain-text table: id, value, unit, baseline, spread, note. */
export function formatTable(figures: readonly Figure[]): string {
  const show = (v: number | null | undefined) => (v === undefined ? '' : v === null ? 'null' : String(v));
  const rows = [
    ['id', 'value', 'unit', 'baseline', 'spread', 'note'],
    ...figures.map((f) => [f.id, show(f.value), f.unit, show(f.baseline), show(f.spread), f.note ?? '']),
  ];
  const widths = [0, 1, 2, 3, 4].map((c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => (c < 5 ? cell.padEnd(widths[c]!) : cell)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  ') + '  ----', ...rows.slice(1).map(line)].join('\n');
}

/** The same table in Markdown, for docs/performance.md (`npm run bench -- --markdown`). */
export function formatMarkdown(figures: readonly Figure[]): string {
  const show = (v: number | null | undefined) => (v === undefined ? '' : v === null ? '**null**' : String(v));
  const cell = (t: string) => t.replace(/\|/g, '\\|');
  return [
    '| id | value | unit | baseline | spread | note |',
    '|---|--:|---|--:|--:|---|',
    ...figures.map((f) => `| \`${f.id}\` | ${show(f.value)} | ${cell(f.unit)} | ${show(f.baseline)} | ${show(f.spread)} | ${cell(f.note ?? '')} |`),
  ].join('\n');
}
