// Group `agent`: the real agent (`skyhost agent`, its own process) enrolled with a real controller that
// polls it every 2 s, idle (no VMs): how long its GET /status takes, and what it costs the PC while
// it waits. Target (docs/design.md#benchmarks): a lab PC should not notice the agent.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureDaemons } from '../host/hostsetup.ts';
import type { Group } from './group.ts';
import {
  cpuSeconds, privateMb, removeAgentLeftovers, rssMb, startAgentProcess, startControllerProcess, waitUntil, type AgentProcess, type ControllerProcess,
} from './processes.ts';
import { figure, msSince, withTarget } from './stats.ts';

const WINDOWS = 5;
const WINDOW_S = 4;
const STATUS_CALLS = 40;

export const agentGroup: Group = {
  name: 'agent',
  ids: [
    ['agent.status_p50_ms', 'ms'],
    ['agent.idle_rss_mb', 'MB'],
    ['agent.idle_private_mb', 'MB'],
    ['agent.idle_cpu_pct', '%'],
  ],
  async run(ctx) {
    await ensureDaemons();
    const hostId = `bench-agent-${randomBytes(3).toString('hex')}`;
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-agent-'));
    chmodSync(dataDir, 0o711);
    let controller: ControllerProcess | undefined;
    let agent: AgentProcess | undefined;
    try {
      controller = await startControllerProcess(ctx.root, { SKYHOST_POLL_INTERVAL_SECONDS: '2' });
      agent = await startAgentProcess(ctx.root, { dataDir, hostId, controller, key: randomBytes(24).toString('hex') });
      const auth = { authorization: `Bearer ${controller.token}` };
      await waitUntil('the controller to see the agent ready', 60_000, async () => {
        const hosts = (await (await fetch(`${controller!.url}/api/hosts`, { headers: auth })).json()) as { hosts?: Array<{ id: string; state: string }> } | Array<{ id: string; state: string }>;
        const list = Array.isArray(hosts) ? hosts : hosts.hosts ?? [];
        return list.some((h) => h.id === hostId && h.state === 'ready');
      });
      await new Promise((r) => setTimeout(r, 3000)); // past start-up: first samples, first polls

      const statusMs: number[] = [];
      for (let i = 0; i < STATUS_CALLS; i++) {
        const t0 = process.hrtime.bigint();
        const res = await fetch(`${agent.url}/status`, { headers: { authorization: `Bearer ${agent.key}` } });
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`GET /status answered ${res.status}`);
        statusMs.push(msSince(t0));
        await new Promise((r) => setTimeout(r, 50));
      }

      const cpuPct: number[] = [];
      const rss: number[] = [];
      const priv: number[] = [];
      for (let w = 0; w < WINDOWS; w++) {
        const c0 = cpuSeconds(agent.pid);
        const t0 = process.hrtime.bigint();
        await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
        cpuPct.push((100 * (cpuSeconds(agent.pid) - c0)) / (msSince(t0) / 1000));
        rss.push(rssMb(agent.pid));
        priv.push(privateMb(agent.pid));
      }
      return [
        withTarget(figure('agent.status_p50_ms', 'ms', statusMs, { note: `GET /status on loopback, ${STATUS_CALLS} calls 50 ms apart, while the controller polls every 2 s` }), { below: 5 }),
        withTarget(figure('agent.idle_rss_mb', 'MB', rss, { note: `resident memory of the agent process (${agent.what}), no VMs, end of ${WINDOWS} windows of ${WINDOW_S} s` }), { below: 80 }),
        figure('agent.idle_private_mb', 'MB', priv, { note: 'the anonymous (private) part of that RSS; the rest is clean pages of the executable file, shared with the page cache' }),
        figure('agent.idle_cpu_pct', '%', cpuPct, { note: `CPU of the agent process (of one core) over ${WINDOWS} windows of ${WINDOW_S} s, polled every 2 s, its own background sampling included` }),
      ];
    } finally {
      await agent?.stop();
      await controller?.stop();
      await removeAgentLeftovers(hostId);
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
