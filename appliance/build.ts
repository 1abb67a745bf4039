// `npm run build`: bundle the TypeScript into one CommonJS file with esbuild, then make it a Node
// single executable application (SEA): a copy of the pinned Node binary, stripped, with the bundle
// and every asset (views, htmx, xterm.js, noVNC) injected by postject. Output: dist/skyhost.
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';
import { inject } from 'postject';
import { checkoutRoot, listSourceAssets } from '../base/assets.ts';

const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export interface BuildResult {
  binary: string;
  bytes: number;
  ms: number;
}

export async function buildBinary(opts: { root?: string; quiet?: boolean } = {}): Promise<BuildResult> {
  const started = Date.now();
  const root = opts.root ?? checkoutRoot();
  const dist = path.join(root, 'dist');
  const work = path.join(dist, 'build');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const say = (s: string) => opts.quiet || console.log(s);

  const major = Number(process.versions.node.split('.')[0]);
  const pinned = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).devDependencies.node as string;
  if (process.versions.node !== pinned) {
    throw new Error(`build must run on the pinned Node ${pinned} (this is ${process.versions.node}): use npm run build`);
  }

  const bundle = path.join(work, 'skyhost.cjs');
  await build({
    entryPoints: [path.join(root, 'appliance/main.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: `node${major}`,
    outfile: bundle,
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
    // Optional native helpers that these libraries do without.
    external: ['bufferutil', 'utf-8-validate', 'osx-temperature-sensor', 'playwright-core', 'esbuild', 'postject'],
    // import.meta.url has no meaning in CommonJS: give it the bundle's own URL.
    banner: { js: 'var __skyhostMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    define: { 'import.meta.url': '__skyhostMetaUrl' },
  }).catch(async () => {
    throw new Error('esbuild failed (see above)');
  });
  say(`bundle: ${(statSync(bundle).size / 1e6).toFixed(1)} MB`);

  const assets = Object.fromEntries(listSourceAssets(root));
  const seaConfig = {
    main: bundle,
    output: path.join(work, 'sea-prep.blob'),
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
    // A small young generation: services that idle between polls keep ~25 MB less resident
    // (controller under load measured 163 -> 137-140 MB), for slightly more frequent scavenges.
    // An old generation sized from the start: without it V8 lets the first burst of load pile up
    // garbage to ~76 MB before its first full GC learns the real live size (~22 MB for 200 hosts).
    // And an old generation that grows by half its live size before the next full collection, not by
    // up to 4× as V8 allows a busy process: the controller under wrk load, 200 hosts, peaked at 190 MB
    // (old space swinging 26 -> 63 MB) without it and 137 MB (old space 25-26 MB) with it; 1,000
    // hosts 207 MB (target 250). More full collections, each of a small heap (see docs/performance.md).
    execArgv: V8_FLAGS,
    assets,
  };
  writeFileSync(path.join(work, 'sea-config.json'), JSON.stringify(seaConfig, null, 2));
  // The code cache is made with the same V8 flags the executable runs with: V8 rejects a cache made
  // under other flags (a flag hash is part of it), and without it the agent measured 15 MB more.
  execFileSync(process.execPath, [...V8_FLAGS, '--experimental-sea-config', path.join(work, 'sea-config.json')], {
    stdio: opts.quiet ? 'ignore' : 'inherit',
  });
  say(`assets: ${Object.keys(assets).length} files`);

  const tmp = path.join(dist, 'skyhost.tmp');
  copyFileSync(process.execPath, tmp);
  chmodSync(tmp, 0o755);
  execFileSync('strip', ['--strip-all', tmp]);
  await inject(tmp, 'NODE_SEA_BLOB', readFileSync(seaConfig.output), { sentinelFuse: SEA_FUSE });
  const binary = path.join(dist, 'skyhost');
  renameSync(tmp, binary);
  dropFromPageCache(binary);
  const bytes = statSync(binary).size;
  say(`dist/skyhost: ${(bytes / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { binary, bytes, ms: Date.now() - started };
}

/** V8 flags of the executable (see the sea config). */
const V8_FLAGS = ['--max-semi-space-size=2', '--initial-old-space-size=24', '--heap-growing-percent=50'];

/**
 * Writes `file` back and drops it from the page cache. Written in one piece, a file sits in the cache
 * as large folios (Linux 6.x), and a process that maps it is charged whole folios of code it never
 * runs: the idle agent measured 95 MB resident right after a build, 78 MB once the binary was read
 * back by page faults as it is after a boot. Dropping it makes every run here look like a lab PC.
 */
function dropFromPageCache(file: string): void {
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  // GNU dd: with count=0, iflag=nocache advises the kernel to drop the whole file's cached pages.
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await buildBinary();
}
