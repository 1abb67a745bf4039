// Group `discovery`: agent process start to host `ready` on the controller, across network
// namespaces (DESIGN §9, issue 5 target: p50 under 2 s). A controller advertises in one namespace; for
// each run a fresh agent (new host id, empty data folder, the join token) starts in another, browses,
// listens for a second controller for `settleMs`, and enrolls. The clock stops when the controller
// logs the host as enrolled `ready`.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import type { Group } from './group.ts';
import { figure, msSince } from './stats.ts';
import { TestLan } from '../test/support/netns.ts';

const RUNS = 7;
const PEER = 'test/support/discovery-peer.ts';
const TOKEN = 'shj_bench-token-0001';

/** Resolves when `child`'s stderr has a line matching `re` (the controller's own log). */
function lineMatching(child: ResultPromise, re: RegExp, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => {
      child.stderr?.off('data', on);
      reject(new Error(`no log line ${re} within ${ms} ms`));
    }, ms);
    const on = (d: Buffer) => {
      buf += String(d);
      if (re.test(buf)) {
        clearTimeout(t);
        child.stderr?.off('data', on);
        resolve();
      }
      buf = buf.slice(-4096);
    };
    child.stderr?.on('data', on);
  });
}

export async function measureEnroll(say: (m: string) => void): Promise<number[]> {
  const lan = new TestLan();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-disc-'));
  try {
    await lan.create();
    const c = await lan.addHost('controller');
    await lan.addHost('agent');
    const controller = lan.spawnNode('controller', PEER, ['advertise', '--enroll-endpoint', '--cluster', 'bench-cluster', '--url', `http://${c.ip}:8080`, '--port', '8080', '--token', TOKEN]);
    await lineMatching(controller, /advertising SkyHost controller/, 10_000);
    const samples: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const hostId = `bench-${i}`;
      const ready = lineMatching(controller, new RegExp(`host ${hostId} enrolled \\(ready\\)`), 20_000);
      const start = process.hrtime.bigint();
      const agent = lan.spawnNode('agent', PEER, ['agent', '--host-id', hostId, '--data', path.join(tmp, hostId), '--port', '8081', '--join-token', TOKEN]);
      await ready;
      samples.push(msSince(start));
      say(`discovery run ${i + 1}/${RUNS}: ${samples.at(-1)!.toFixed(0)} ms`);
      agent.kill('SIGKILL');
      await agent;
    }
    return samples;
  } finally {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

export const discoveryGroup: Group = {
  name: 'discovery',
  ids: [['discovery.enroll_ms', 'ms']],
  async run(ctx) {
    const samples = await measureEnroll(ctx.say);
    return [figure('discovery.enroll_ms', 'ms', samples, {
      note: `median of ${samples.length}; agent process start (node + mDNS browse + 800 ms listening for a second controller + POST /api/enroll) to the controller logging the host ready; target p50 < 2000`,
    })];
  },
};
