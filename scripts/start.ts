// `npm start`: set up this host (idempotent), build dist/skyhost if the sources are newer, run `skyhost up`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const binary = path.join(root, 'dist/skyhost');

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function step(args: string[]): void {
  const r = spawnSync(args[0]!, args.slice(1), { stdio: 'inherit', cwd: root });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const sources = Math.max(...['base', 'host', 'wire', 'appliance', 'server', 'agent', 'views', 'iso', 'autoinstall', 'package-lock.json']
  .map((p) => path.join(root, p))
  .filter(existsSync)
  .map((p) => (statSync(p).isDirectory() ? newest(p) : statSync(p).mtimeMs)));
if (!existsSync(binary) || statSync(binary).mtimeMs < sources) step([process.execPath, 'appliance/build.ts']);
step([binary, 'host', 'setup']);
const up = spawnSync(binary, ['up', ...process.argv.slice(2)], { stdio: 'inherit', cwd: root });
process.exit(up.status ?? 0);
