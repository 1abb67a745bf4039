// What a bench group is, and the stand-in for a group whose subject is not built yet.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { notMeasured, type Figure } from './stats.ts';

export interface BenchContext {
  /** The checkout's root (where package.json is). */
  root: string;
  /** Where a group may keep built artefacts between runs (ignored by git). */
  cacheDir: string;
  /** Progress on stderr, so that stdout is only the table. */
  say: (message: string) => void;
}

/** One group of docs/design.md#benchmarks: its ids all start with `name.`. */
export interface Group {
  name: string;
  /** Every id this group reports, with its unit, so that a group that fails still lists them. */
  ids: ReadonlyArray<readonly [id: string, unit: string]>;
  run: (ctx: BenchContext) => Promise<Figure[]>;
}

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A group whose subject does not exist yet: every id reported as null with the reason. */
export function pendingGroup(name: string, ids: Group['ids'], why: string): Group {
  return { name, ids, run: async () => ids.map(([id, unit]) => notMeasured(id, unit, why)) };
}

/** Figures for every id of `group`, null with `why` for any the group did not produce. */
export function completeFigures(group: Group, produced: readonly Figure[], why: string): Figure[] {
  const byId = new Map(produced.map((f) => [f.id, f]));
  const listed = group.ids.map(([id, unit]) => byId.get(id) ?? notMeasured(id, unit, why));
  const extra = produced.filter((f) => !group.ids.some(([id]) => id === f.id));
  return [...listed, ...extra];
}
