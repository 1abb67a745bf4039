// Where the skyhost executable itself is: this process when it runs as the single executable, else
// the checkout's build. The USB installer embeds it; the controller hands it out (/download/skyhost).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { checkoutRoot, inSingleExecutable } from './assets.ts';
import { Unavailable } from './errors.ts';

/** This executable (single executable) or the checkout's dist/skyhost; Unavailable when it is not built. */
export function skyhostExecutable(): string {
  if (inSingleExecutable()) return process.execPath;
  const built = path.join(checkoutRoot(), 'dist', 'skyhost');
  if (!existsSync(built)) throw new Unavailable(`no skyhost executable: build it with "npm run build" (expected ${built})`, undefined, 'binary_missing');
  return built;
}
