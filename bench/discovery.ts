// Group `discovery`: agent process start to host `ready` on the controller, across network
// namespaces (docs/design.md#benchmarks; target: p50 under 2 s). The real `skyhost controller` advertises in
// one namespace; for each run a fresh real `skyhost agent` (new host id, empty data folder, the
// cluster join token, no --controller) starts in another, browses, listens for a second controller
// for a moment, and enrolls. The clock stops when the controller logs the host enrolled `ready`.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import type { Group } from './group.ts';
import { figure, msSince } from './stats.ts';
import { NODE, REPO, TestLan, waitFor } from '../test/support/netns.ts';

const RUNS = 7;
const BINARY = path.join(REPO, 'dist', 'skyhost');

/** `dist/skyhost` when it is newer than every source it is built from (the product), else node + sources. */
export function skyhostCommand(): { cmd: string; pre: string[]; what: string } {
  const newest = Math.max(...['agent', 'server', 'base', 'host', 'wire', 'appliance'].flatMap((d) =>
    readdirSync(path.join(REPO, d), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => statSync(path.join(REPO, d, f)).mtimeMs)));
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs > newest) return { cmd: BINARY, pre: [], what: 'dist/skyhost' };
  return { cmd: NODE, pre: [path.join(REPO, 'appliance', 'main.ts')], what: 'node appliance/main.ts (dist/skyhost missing or older than the sources)' };
}

/** Resolves when `child` logs (JSON lines on stderr) a record for which `match` is true. */
export function logRecord(child: ResultPromise, match: (r: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => {
      child.stderr?.off('data', on);
      reject(new Error(`no matching log record within ${ms} ms`));
    }, ms);
    const on = (d: Buffer) => {
      buf += String(d);
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const line of lines) {
        let r: Record<string, unknown>;
        try {
          r = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue; // a line that is not a JSON log record (e.g. Node's own warnings)
        }
        if (!match(r)) continue;
        clearTimeout(t);
        child.stderr?.off('data', on);
        resolve(r);
        return;
      }
    };
    child.stderr?.on('data', on);
  });
}

export async function measureEnroll(say: (m: string) => void): Promise<{ enroll: number[]; listening: number[]; what: string }> {
  const sky = skyhostCommand();
  const lan = new TestLan();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-disc-'));
  const env = { SKYHOST_LOG_FORMAT: 'json', SKYHOST_ACCEL: 'tcg' };
  try {
    await lan.create();
    await lan.addHost('controller');
    await lan.addHost('agent');
    const controller = lan.spawn('controller', sky.cmd, [...sky.pre, 'controller', '--data', path.join(tmp, 'controller'), '--port', '8080'], { env, cwd: REPO });
    await logRecord(controller, (r) => String(r.msg).startsWith('advertising SkyHost controller'), 30_000);
    const token = await waitFor('join token', () => readFileSync(path.join(tmp, 'controller', 'secrets', 'join-token'), 'utf8').trim());
    const samples: number[] = [];
    const listening: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const hostId = `bench-${i}`;
      const ready = logRecord(controller, (r) => r.hostId === hostId && /enrolled.*\(ready\)/.test(String(r.msg)), 30_000);
      const start = process.hrtime.bigint();
      const agent = lan.spawn('agent', sky.cmd, [...sky.pre, 'agent', '--host-id', hostId, '--data', path.join(tmp, hostId), '--port', '8081', '--join-token', token], { env, cwd: REPO });
      const up = logRecord(agent, (r) => String(r.msg).startsWith('agent listening'), 30_000).then(() => listening.push(msSince(start)));
      await ready;
      samples.push(msSince(start));
      await up;
      say(`discovery run ${i + 1}/${RUNS}: ready after ${samples.at(-1)!.toFixed(0)} ms (agent API up after ${listening.at(-1)!.toFixed(0)} ms)`);
      agent.kill('SIGTERM');
      await agent;
    }
    return { enroll: samples, listening, what: sky.what };
  } finally {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

export const discoveryGroup: Group = {
  name: 'discovery',
  ids: [['discovery.enroll_ms', 'ms'], ['discovery.agent_start_ms', 'ms']],
  async run(ctx) {
    const m = await measureEnroll(ctx.say);
    return [
      figure('discovery.enroll_ms', 'ms', m.enroll, {
        note: `${m.what}: agent process start in one namespace to the controller in another logging the host enrolled ready (browsing from process start, 500 ms listening for a second controller, POST /api/enroll); SKYHOST_ACCEL=tcg as the accelerator probe is cached per boot; target p50 < 2000`,
      }),
      figure('discovery.agent_start_ms', 'ms', m.listening, { note: `${m.what}: agent process start to its API listening (VM adoption, first status sample); enroll_ms includes it` }),
    ];
  },
};
