// Group `binary`: the single executable's size after `npm run build`, and start to `--version` printed,
// against the floor: the same Node binary printing one line with no application at all.
import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { run } from '../base/exec.ts';
import type { Group } from './group.ts';
import { figure, msSince, repeat } from './stats.ts';

/** Milliseconds from spawning `cmd args` to its first stdout bytes; rejects on a failed exit. */
export function timeToFirstOutput(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let ms: number | undefined;
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C' } });
    child.stdout.once('data', () => { ms = msSince(t0); });
    child.stdout.resume();
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0 || ms === undefined) reject(new Error(`${cmd} ${args.join(' ')} exited ${code} without output`));
      else resolve(ms);
    });
  });
}

export const binaryGroup: Group = {
  name: 'binary',
  ids: [['binary.size_mb', 'MB'], ['binary.startup_ms', 'ms']],
  async run(ctx) {
    ctx.say('binary: npm run build');
    const t0 = process.hrtime.bigint();
    await run('npm', ['run', '--silent', 'build'], { cwd: ctx.root, timeout: 300_000 });
    ctx.say(`binary: built in ${(msSince(t0) / 1000).toFixed(1)} s`);
    const binary = path.join(ctx.root, 'dist', 'skyhost');
    const sizeMb = statSync(binary).size / 1e6;
    const nodeBin = path.join(ctx.root, 'node_modules', '.bin', 'node');
    await timeToFirstOutput(binary, ['--version']); // first start pays for reading the file from disk
    const startup = await repeat(20, () => timeToFirstOutput(binary, ['--version']));
    const bare = await repeat(20, () => timeToFirstOutput(nodeBin, ['-e', 'console.log("0")']));
    return [
      figure('binary.size_mb', 'MB', [sizeMb], { note: 'dist/skyhost: Node runtime + bundle + assets, one file' }),
      figure('binary.startup_ms', 'ms', startup, { baseline: bare, note: 'spawn to `skyhost --version` on stdout, 20 runs; baseline: the pinned Node printing one line (the floor)' }),
    ];
  },
};
