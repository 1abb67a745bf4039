// Group `controller`: the real controller (`skyhost controller`, its own process) with 200 simulated
// hosts and 2,000 VMs (simulated agents in this process, enrolled with the join token, VMs adopted
// from their polls), loaded by 50 concurrent connections from a third process (wrk; autocannon once
// more for the VM list, to show what a client that needs a whole core does to the figure). Targets
// (docs/design.md#benchmarks): dashboard and VM list p99 under 50 ms, RSS under 150 MB.
import path from 'node:path';
import { hasCommand, run } from '../base/exec.ts';
import { SimFleet } from '../test/support/sim-agent.ts';
import type { Group } from './group.ts';
import { privateMb, rssMb, startControllerProcess, waitUntil, type ControllerProcess } from './processes.ts';
import { parseWrk } from './wrk.ts';
import { figure, median, msSince, notMeasured, withTarget, type Figure } from './stats.ts';

const HOSTS = 200;
const VMS_PER_HOST = 10;
const CLIENTS = 50;
const RUNS = 3;
const SECONDS_PER_RUN = 5;

interface LoadRun {
  p99: number;
  rps: number;
  non2xx: number;
  errors: number;
  maxRssMb: number;
  /** The private (anonymous) part of RSS when it peaked. */
  privateAtMaxMb: number;
}

/** The HTTP load generator: wrk (C, a fraction of a core) or autocannon (JS, a whole core here). */
type Client = 'wrk' | 'autocannon';

/** One run of `client` (a separate process) against `url`, sampling the controller's RSS meanwhile. */
async function load(root: string, url: string, token: string, pid: number, client: Client = 'wrk'): Promise<LoadRun> {
  let maxRssMb = rssMb(pid);
  let privateAtMaxMb = privateMb(pid);
  const sampler = setInterval(() => {
    const now = rssMb(pid);
    if (now > maxRssMb) [maxRssMb, privateAtMaxMb] = [now, privateMb(pid)];
  }, 200);
  const timeout = (SECONDS_PER_RUN + 30) * 1000;
  try {
    if (client === 'wrk') {
      const { stdout } = await run('wrk', [
        '-t', '1', '-c', String(CLIENTS), '-d', `${SECONDS_PER_RUN}s`, '--timeout', '10s', '--latency', '-H', `Authorization: Bearer ${token}`, url,
      ], { timeout });
      const r = parseWrk(stdout);
      return { p99: r.latencyMs[99]!, rps: r.requestsPerSecond, non2xx: r.non2xx, errors: r.errors, maxRssMb, privateAtMaxMb };
    }
    const { stdout } = await run(path.join(root, 'node_modules', '.bin', 'autocannon'), [
      '-c', String(CLIENTS), '-d', String(SECONDS_PER_RUN), '-j', '-n', '-H', `authorization=Bearer ${token}`, url,
    ], { timeout });
    const r = JSON.parse(stdout) as { latency: { p99: number }; requests: { average: number }; non2xx: number; errors: number; timeouts: number };
    return { p99: r.latency.p99, rps: r.requests.average, non2xx: r.non2xx, errors: r.errors + r.timeouts, maxRssMb, privateAtMaxMb };
  } finally {
    clearInterval(sampler);
  }
}

/** The p99 figure of several load runs, or null with the reason when the page did not answer 2xx. */
function p99Figure(id: string, runs: LoadRun[], what: string, probeStatus: number, bodyBytes: number, server: string, client: Client, target = true): Figure {
  const bad = runs.find((r) => r.non2xx > 0 || r.errors > 0);
  if (probeStatus < 200 || probeStatus >= 300 || bad) {
    return notMeasured(id, 'ms', `${what} answered HTTP ${probeStatus}${bad ? ` (${bad.non2xx} non-2xx, ${bad.errors} errors under load)` : ''}: not measured`);
  }
  const rps = Math.round(runs.reduce((s, r) => s + r.rps, 0) / runs.length);
  const f = figure(id, 'ms', runs.map((r) => r.p99), {
    note: `${what} (${Math.round(bodyBytes / 1024)} KiB, ${server}): p99 of ${CLIENTS} concurrent connections (${client === 'wrk' ? 'wrk, one thread in its own process' : 'autocannon, its own process'}) for ${SECONDS_PER_RUN} s, ${runs.length} runs, ~${rps} req/s (so ${Math.round((1000 * CLIENTS) / rps)} ms mean by Little's law); ${HOSTS} simulated hosts, ${HOSTS * VMS_PER_HOST} VMs`,
  });
  return target ? withTarget(f, { below: 50 }) : f;
}

export const controllerGroup: Group = {
  name: 'controller',
  ids: [
    ['controller.dashboard_p99_ms', 'ms'],
    ['controller.api_vms_p99_ms', 'ms'],
    ['controller.api_vms_p99_autocannon_ms', 'ms'],
    ['controller.rss_mb', 'MB'],
    ['controller.class_burst_30_ms', 'ms'],
  ],
  async run(ctx) {
    if (!(await hasCommand('wrk'))) throw new Error('wrk is missing: run skyhost host setup --with-test-tools (as root)');
    let controller: ControllerProcess | undefined;
    let fleet: SimFleet | undefined;
    try {
      controller = await startControllerProcess(ctx.root);
      const { url, token, joinToken, pid } = controller;
      const auth = { authorization: `Bearer ${token}` };
      const get = (p: string) => fetch(url + p, { headers: auth, signal: AbortSignal.timeout(10_000) });

      ctx.say(`controller: starting ${HOSTS} simulated agents with ${VMS_PER_HOST} VMs each`);
      fleet = await SimFleet.start(HOSTS, (i) => ({
        memoryMiB: [8192, 16384, 32768][i % 3]!, threads: [4, 8, 16][i % 3]!, hypervisor: i % 5 === 0 ? 'tcg' : 'kvm', vms: VMS_PER_HOST,
      }));
      await fleet.enroll(url, joinToken);
      const vmTotal = fleet.vmCount;
      await waitUntil(`the controller to list ${vmTotal} VMs`, 90_000, async () => {
        const body = (await (await get('/api/vms')).json()) as { vms?: unknown[] };
        return (body.vms?.length ?? 0) >= vmTotal;
      });
      ctx.say(`controller: ${HOSTS} hosts ready, ${vmTotal} VMs listed; loading with ${CLIENTS} clients`);

      const dashboardAnswer = await get('/');
      const dashboardProbe = dashboardAnswer.status;
      const dashboardBytes = (await dashboardAnswer.arrayBuffer()).byteLength;
      const apiAnswer = await get('/api/vms');
      const apiProbe = apiAnswer.status;
      const apiBytes = (await apiAnswer.arrayBuffer()).byteLength;
      const dashboard: LoadRun[] = [];
      const apiVms: LoadRun[] = [];
      for (let i = 0; i < RUNS; i++) {
        if (dashboardProbe < 300) dashboard.push(await load(ctx.root, `${url}/`, token, pid));
        apiVms.push(await load(ctx.root, `${url}/api/vms`, token, pid));
      }
      // The same list loaded by autocannon, as this bench did before: a JS client that needs a whole
      // core for 50 connections, so on 2 cores its own event loop delay becomes part of the latency.
      const apiVmsAutocannon: LoadRun[] = [];
      for (let i = 0; i < RUNS; i++) apiVmsAutocannon.push(await load(ctx.root, `${url}/api/vms`, token, pid, 'autocannon'));
      const all = [...dashboard, ...apiVms, ...apiVmsAutocannon];

      // A class of 30 pressing "Request VM" at once, 3 times.
      const bursts: number[] = [];
      const distinctHosts: number[] = [];
      for (let b = 0; b < 3; b++) {
        const t0 = process.hrtime.bigint();
        const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => fetch(`${url}/api/vms`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `class-${b}-${i}`, template: 'alpine', memoryMiB: 256, diskGiB: 2 }),
          signal: AbortSignal.timeout(30_000),
        })));
        bursts.push(msSince(t0));
        const bad = answers.filter((a) => a.status !== 201 && a.status !== 202);
        if (bad.length > 0) throw new Error(`class burst: ${bad.length} of 30 requests answered ${bad[0]!.status}: ${await bad[0]!.text()}`);
        const hostsUsed = new Set(await Promise.all(answers.map(async (a) => String(((await a.json()) as { host?: unknown }).host))));
        distinctHosts.push(hostsUsed.size);
      }

      return [
        p99Figure('controller.dashboard_p99_ms', dashboard, 'dashboard /', dashboardProbe, dashboardBytes, controller.what, 'wrk'),
        p99Figure('controller.api_vms_p99_ms', apiVms, 'GET /api/vms (admin: every VM)', apiProbe, apiBytes, controller.what, 'wrk'),
        p99Figure('controller.api_vms_p99_autocannon_ms', apiVmsAutocannon, 'the same GET /api/vms', apiProbe, apiBytes, controller.what, 'autocannon', false),
        withTarget(figure('controller.rss_mb', 'MB', all.map((r) => r.maxRssMb), {
          note: `peak resident memory of the controller process during each load run (${HOSTS} hosts polled every 5 s, ${vmTotal} VMs); private (anonymous) part at the peak ${median(all.map((r) => r.privateAtMaxMb)).toFixed(0)} MB, the rest clean pages of the executable`,
        }), { below: 150 }),
        figure('controller.class_burst_30_ms', 'ms', bursts, {
          note: `30 POST /api/vms at once (a class pressing "Request VM"), until the last answer; simulated agents answer at once, so this is the controller's own cost; the 30 VMs landed on ${Math.min(...distinctHosts)}-${Math.max(...distinctHosts)} distinct hosts of ${HOSTS}`,
        }),
      ];
    } finally {
      await controller?.stop();
      await fleet?.stop();
    }
  },
};
