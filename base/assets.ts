// Files the executable carries: views, our CSS and scripts, and vendored browser libraries (htmx,
// xterm.js, noVNC, Swagger UI for /docs). In the single executable they are SEA assets; in development they are read from
// the checkout. Both go through this one table, so what works in development works in the binary.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import sea from 'node:sea';
import { fileURLToPath } from 'node:url';

/** Asset key prefix (or key) -> path in the checkout (a folder or a file). */
export const ASSET_SOURCES: ReadonlyArray<{ key: string; source: string }> = [
  { key: 'views/', source: 'views/' },
  { key: 'static/', source: 'views/static/' },
  { key: 'static/vendor/htmx.min.js', source: 'node_modules/htmx.org/dist/htmx.min.js' },
  { key: 'static/vendor/xterm/xterm.js', source: 'node_modules/@xterm/xterm/lib/xterm.js' },
  { key: 'static/vendor/xterm/xterm.css', source: 'node_modules/@xterm/xterm/css/xterm.css' },
  { key: 'static/vendor/xterm/addon-fit.js', source: 'node_modules/@xterm/addon-fit/lib/addon-fit.js' },
  { key: 'static/vendor/novnc/core/', source: 'node_modules/@novnc/novnc/core/' },
  { key: 'static/vendor/novnc/vendor/', source: 'node_modules/@novnc/novnc/vendor/' },
  { key: 'static/vendor/swagger-ui/swagger-ui-bundle.js', source: 'node_modules/swagger-ui-dist/swagger-ui-bundle.js' },
  { key: 'static/vendor/swagger-ui/swagger-ui-standalone-preset.js', source: 'node_modules/swagger-ui-dist/swagger-ui-standalone-preset.js' },
  { key: 'static/vendor/swagger-ui/swagger-ui.css', source: 'node_modules/swagger-ui-dist/swagger-ui.css' },
];

let devRoot: string | undefined;
/** The checkout's root when running unbundled. */
export function checkoutRoot(): string {
  devRoot ??= path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  return devRoot;
}

/** Every asset key with the file it comes from in the checkout (used by the build and in development). */
export function listSourceAssets(root = checkoutRoot()): Map<string, string> {
  const out = new Map<string, string>();
  for (const { key, source } of ASSET_SOURCES) {
    const abs = path.join(root, source);
    if (!existsSync(abs)) continue;
    if (statSync(abs).isDirectory()) {
      // views/static/ is served as static/, not read as a template
      for (const rel of walk(abs)) if (!(key === 'views/' && rel.startsWith('static/'))) out.set(key + rel, path.join(abs, rel));
    } else {
      out.set(key, abs);
    }
  }
  return out;
}

function walk(dir: string, prefix = ''): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || entry.name.endsWith('.map') || entry.name.endsWith('.d.ts')) continue;
    const rel = prefix + entry.name;
    if (entry.isDirectory()) files.push(...walk(path.join(dir, entry.name), rel + '/'));
    else files.push(rel);
  }
  return files;
}

let devIndex: Map<string, string> | undefined;
let seaKeys: Set<string> | undefined;

export function inSingleExecutable(): boolean {
  return sea.isSea();
}

/** Every asset key available to this process. */
export function assetKeys(): string[] {
  if (sea.isSea()) {
    seaKeys ??= new Set(sea.getAssetKeys());
    return [...seaKeys];
  }
  devIndex ??= listSourceAssets();
  return [...devIndex.keys()];
}

/** An asset's bytes, or undefined when there is none with that key. */
export function readAsset(key: string): Buffer | undefined {
  if (sea.isSea()) {
    seaKeys ??= new Set(sea.getAssetKeys());
    if (!seaKeys.has(key)) return undefined;
    return Buffer.from(sea.getAsset(key));
  }
  devIndex ??= listSourceAssets();
  const file = devIndex.get(key);
  // Development reads the file each time so that edited views show without a restart.
  return file && existsSync(file) ? readFileSync(file) : undefined;
}

export function readTextAsset(key: string): string | undefined {
  return readAsset(key)?.toString('utf8');
}

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

export function contentType(key: string): string {
  return TYPES[path.extname(key).toLowerCase()] ?? 'application/octet-stream';
}
