// Folders that appear all at once: a template (or anything with a manifest) is filled in a hidden
// staging folder, then its manifest is written and the folder renamed into place in one step.
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Conflict } from './errors.ts';

/**
 * Writes `manifest` as `staging/manifest.json`, then renames `staging` to `target`. A `target` that
 * exists with something in it is never replaced: that is a Conflict saying `conflictMessage` (another
 * writer of the same name won the race). The caller removes `staging` when this throws.
 */
export async function renameIntoPlace(staging: string, target: string, manifest: unknown, conflictMessage: string): Promise<void> {
  await writeFile(path.join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o644 });
  try {
    await rename(staging, target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new Conflict(conflictMessage);
    throw err;
  }
}
