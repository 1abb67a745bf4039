// Template distribution (part of group `template`): a real controller and nine real agents, each in
// its own network namespace on one bridge, every host's link limited with `tc` (both directions, limitLink)
// like a school's 100 Mbit/s switch ports. One agent (the seed) holds a template.
//
//   template.pull_mbps      one host pulls the template from the seed (agent/pull.ts: Range, sha256,
//                           qemu-img check, installed); baseline: `curl` of the same file on the same link
//   template.distribute_s   "copy to all hosts" to the other 8 (chains of hosts relaying the file as it
//                           arrives, server/templates/distribute.ts) until every one has it installed;
//                           baseline: the time of one transfer (curl) on one link. Target: ≤ 2×; a
//                           controller that sent 8 copies over its one link would take 8×.
//
// Plain HTTP between hosts (config trustedLan), as curl's baseline is: the figures are the transfer's.
import { randomBytes } from 'node:crypto';
import { cpSync, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ResultPromise } from 'execa';
import { run } from '../base/exec.ts';
import { ensureDaemons } from '../host/hostsetup.ts';
import { makeTicket } from '../base/tickets.ts';
import { skyhostCommand, logRecord } from './discovery.ts';
import type { Group } from './group.ts';
import { figure, median, withTarget, type Figure } from './stats.ts';
import { REPO, TestLan, waitFor } from '../test/support/netns.ts';

export const DISTRIBUTION_IDS: Group['ids'] = [['template.pull_mbps', 'Mbit/s'], ['template.distribute_s', 's']];

const TEMPLATE = 'bench-room';
const TARGETS = 8;
const RATE_MBIT = 100;
const FILE_MIB = 48;
const RUNS = 3;

/**
 * A host's link to the bridge limited to `RATE_MBIT` both ways: its own side (upload) and the bridge's
 * (download), each with a 50 ms queue for bulk data. Small packets (TCP ACKs without data) go ahead of
 * that queue, as a PC's own queue (Linux's default fq_codel) lets them. With one FIFO (tbf alone, as
 * this bench had), a host that receives and sends at once waits for each peer's ACKs behind up to 50 ms
 * of its own data on both sides: every relaying host of a chain did, curl's one transfer never does.
 * (This kernel has no fq_codel or fq: an htb with two classes and a u32 filter does it.)
 */
async function limitLink(lan: TestLan, name: string, index: number): Promise<void> {
  const rate = `${RATE_MBIT}mbit`;
  const queueBytes = String(Math.round((RATE_MBIT * 1e6 / 8) * 0.05) + 65536);
  // TestLan names the bridge side of the n-th host's veth `sv<run><n>b`
  for (const [ns, dev] of [[lan.host(name).ns, 'eth0'], [lan.bridgeNs, `sv${lan.runId}${index}b`]] as const) {
    const add = (kind: 'qdisc' | 'class' | 'filter', ...args: string[]) => run('ip', ['netns', 'exec', ns, 'tc', kind, 'add', 'dev', dev, ...args]);
    await add('qdisc', 'root', 'handle', '1:', 'htb', 'default', '20', 'r2q', '100');
    await add('class', 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate, 'burst', '64kb');
    await add('class', 'parent', '1:1', 'classid', '1:10', 'htb', 'rate', '5mbit', 'ceil', rate, 'prio', '0');
    await add('class', 'parent', '1:1', 'classid', '1:20', 'htb', 'rate', `${RATE_MBIT - 5}mbit`, 'ceil', rate, 'prio', '1');
    await add('qdisc', 'parent', '1:20', 'bfifo', 'limit', queueBytes);
    // TCP packets shorter than 128 bytes (IP total length): ACKs without data
    await add('filter', 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32', 'match', 'ip', 'protocol', '6', '0xff', 'match', 'u16', '0x0000', '0xff80', 'at', '2', 'flowid', '1:10');
  }
}

/** `curl` inside a namespace: answers stdout. */
async function curl(lan: TestLan, from: string, args: string[]): Promise<string> {
  return (await lan.exec(from, 'curl', ['-sS', '--fail-with-body', '--max-time', '300', ...args], 320_000)).stdout;
}

export async function measureDistribution(say: (m: string) => void): Promise<Figure[]> {
  const sky = skyhostCommand();
  const lan = new TestLan();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-bench-distrib-'));
  const children: ResultPromise[] = [];
  const env = { SKYHOST_LOG_FORMAT: 'json', SKYHOST_LOG_LEVEL: 'info', SKYHOST_ACCEL: 'tcg', SKYHOST_TRUSTED_LAN: 'true', SKYHOST_POLL_INTERVAL_SECONDS: '1' };
  const names = ['seed', ...Array.from({ length: TARGETS }, (_, i) => `t${i + 1}`)];
  const key = (name: string) => `bench-distrib-key-${name}-0123456789`;
  const data = (name: string) => path.join(tmp, name);
  const has = (name: string) => existsSync(path.join(data(name), 'templates', TEMPLATE, 'manifest.json'));
  const logOf = (name: string) => path.join(tmp, `${name}.log`);
  try {
    await ensureDaemons(); // every agent checks libvirt when it starts (this group may run on its own)
    await lan.create();
    await lan.addHost('ctl');
    for (const n of names) await lan.addHost(n);
    for (const [i, n] of names.entries()) await limitLink(lan, n, i + 2);
    const image = path.join(tmp, 'image.raw');
    writeFileSync(image, randomBytes(FILE_MIB * 1024 * 1024));
    await run(sky.cmd, [...sky.pre, 'template', 'import', TEMPLATE, '--disk', image, '--os', 'bench', '--data', data('seed')], { cwd: REPO, timeout: 120_000 });
    const bytes = FILE_MIB * 1024 * 1024;

    const ctlIp = lan.host('ctl').ip;
    const controller = lan.spawn('ctl', sky.cmd, [...sky.pre, 'controller', '--data', data('controller'), '--port', '8080'], { env, cwd: REPO });
    children.push(controller);
    await logRecord(controller, (r) => /listening|advertising/.test(String(r.msg)), 60_000);
    const token = await waitFor('join token', () => readFileSync(path.join(data('controller'), 'secrets', 'join-token'), 'utf8').trim(), 30_000);
    const admin = readFileSync(path.join(data('controller'), 'secrets', 'admin-token'), 'utf8').trim();
    // The processes' logs flow into files (a full pipe would stop a process at its next line); the timeline reads them.
    keepLog(controller, logOf('ctl'));
    for (const n of names) {
      const ip = lan.host(n).ip;
      const agent = lan.spawn(n, sky.cmd, [...sky.pre, 'agent', '--host-id', `bench-${n}`, '--data', data(n), '--port', '8081', '--key', key(n),
        '--controller', `http://${ctlIp}:8080`, '--join-token', token], { env: { ...env, SKYHOST_AGENT_URL: `http://${ip}:8081` }, cwd: REPO });
      keepLog(agent, logOf(n));
      children.push(agent);
    }
    const api = (method: string, p: string, body?: unknown) =>
      curl(lan, 'ctl', ['-X', method, '-H', `Authorization: Bearer ${admin}`, ...(body ? ['-H', 'content-type: application/json', '-d', JSON.stringify(body)] : []), `http://${ctlIp}:8080${p}`]);
    await waitFor('every host ready, the seed with its template', async () => {
      const hosts = JSON.parse(await api('GET', '/api/hosts')) as { hosts: { id: string; state: string; templates: string[] }[] };
      return hosts.hosts.filter((h) => h.state === 'ready').length === names.length && hosts.hosts.some((h) => h.id === 'bench-seed' && h.templates.includes(TEMPLATE));
    }, 120_000, 500);
    say(`template: ${names.length} agents ready, links limited to ${RATE_MBIT} Mbit/s`);

    const seedUrl = `http://${lan.host('seed').ip}:8081/templates/${TEMPLATE}`;
    const ticket = (reader: string) => makeTicket(key('seed'), { t: TEMPLATE, h: `bench-${reader}`, exp: Math.floor(Date.now() / 1000) + 3600 });
    const manifest = JSON.parse(readFileSync(path.join(data('seed'), 'templates', TEMPLATE, 'manifest.json'), 'utf8')) as unknown;
    const agentGet = async (n: string, p: string) => JSON.parse(await curl(lan, 'ctl', ['-H', `Authorization: Bearer ${key(n)}`, `http://${lan.host(n).ip}:8081${p}`])) as unknown;
    /**
     * Removes the template from `hosts` and waits until the controller has seen them without it. A host's
     * status sampled just before a removal may still list it: a copy planned on that would take the host
     * for a holder (a chain head that answers 404) and leave it out of the copy.
     */
    const pullDone = (n: string) => waitFor(`${n}'s pull to be done`, async () => ((await agentGet(n, `/templates/pulls/${TEMPLATE}`)) as { state: string }).state === 'done', 60_000, 50);
    const removeFrom = async (hosts: string[]) => {
      for (const n of hosts) {
        // the pull's `done` waits for the agent's status to list the template: no older sample can come after the removal
        await pullDone(n);
        await curl(lan, 'ctl', ['-X', 'DELETE', '-H', `Authorization: Bearer ${key(n)}`, `http://${lan.host(n).ip}:8081/templates/${TEMPLATE}`]);
        await waitFor(`${n}'s status without the template`, async () => !((await agentGet(n, '/status')) as { templates: { name: string }[] }).templates.some((t) => t.name === TEMPLATE), 30_000, 100);
      }
      const removed = Date.now();
      await waitFor('the controller to see the template gone', async () => {
        const seen = (JSON.parse(await api('GET', '/api/hosts')) as { hosts: { id: string; lastSeen?: string; templates: string[] }[] }).hosts
          .filter((h) => hosts.includes(h.id.replace(/^bench-/, '')));
        return seen.length === hosts.length && seen.every((h) => Date.parse(h.lastSeen ?? '') > removed && !h.templates.includes(TEMPLATE));
      }, 30_000, 200);
    };

    // One transfer on one link: curl, then the agent's pull, alternately.
    const curlS: number[] = [];
    const curlOwnS: number[] = [];
    const pullS: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // Both are timed from here around one `ip netns exec curl` (the pull's is the POST that starts it):
      // curl's own time_total would leave out the process start the pull's figure includes.
      const c0 = process.hrtime.bigint();
      const own = await curl(lan, 't1', ['-o', '/dev/null', '-w', '%{time_total}', '-H', `Authorization: ${ticket('t1')}`, `${seedUrl}/files/disk.raw`]);
      curlS.push(Number(process.hrtime.bigint() - c0) / 1e9);
      curlOwnS.push(Number(own));
      const t0 = process.hrtime.bigint();
      const pullWall0 = Date.now();
      await curl(lan, 'ctl', ['-X', 'POST', '-H', `Authorization: Bearer ${key('t1')}`, '-H', 'content-type: application/json',
        '-d', JSON.stringify({ manifest, sources: [{ url: seedUrl, authorization: ticket('t1') }] }), `http://${lan.host('t1').ip}:8081/templates/pull`]);
      await waitFor('t1 to have the template', () => has('t1'), 300_000, 10);
      pullS.push(Number(process.hrtime.bigint() - t0) / 1e9);
      await removeFrom(['t1']); // (after the pull's `done`: its log says how long each part took)
      say(`template: one transfer: curl ${curlS.at(-1)!.toFixed(2)} s (its own time_total ${curlOwnS.at(-1)!.toFixed(2)} s), pull ${pullS.at(-1)!.toFixed(2)} s (${hop(logOf('t1'), pullWall0)})`);
    }

    // Copy to all hosts: the seed holds it; 8 hosts lack it.
    const distS: number[] = [];
    let chains = '';
    for (let i = 0; i < 2; i++) {
      const t0 = process.hrtime.bigint();
      const wall0 = Date.now();
      const plan = JSON.parse(await api('POST', `/api/templates/${TEMPLATE}/copy-to-all`)) as { chains: { host: string; from: string }[][] };
      const planned = plan.chains.flat().length;
      if (planned !== TARGETS) throw new Error(`copy to all hosts planned ${planned} pulls, not ${TARGETS}: ${JSON.stringify(plan)}`);
      chains = plan.chains.map((c) => [c[0]!.from, ...c.map((s) => s.host)].join('→')).join(' ; ');
      await waitFor('every target to have the template', () => names.slice(1).every(has), 600_000, 20);
      distS.push(Number(process.hrtime.bigint() - t0) / 1e9);
      say(`template: copy to ${TARGETS} hosts in ${distS.at(-1)!.toFixed(2)} s (${chains})`);
      for (const n of names.slice(1)) await pullDone(n); // each host has logged its pull's end
      say(`template: per host, s after the request: ${names.slice(1).map((n) => `${n} ${hop(logOf(n), wall0)}`).join(', ')}`);
      if (i === 0) await removeFrom(names.slice(1));
    }

    const mbit = (s: number) => (bytes * 8) / 1e6 / s;
    const oneCopy = median(curlS);
    const load = os.loadavg()[0]!.toFixed(1);
    return [
      withTarget(figure('template.pull_mbps', 'Mbit/s', pullS.map(mbit), {
        baseline: curlS.map(mbit),
        note: `${FILE_MIB} MiB template from the seed agent to another host over a ${RATE_MBIT} Mbit/s link (tc both ways, ACKs ahead of bulk data), request to installed (Range, sha256, qemu-img check); ` +
          `baseline: curl of the same file on the same link, both timed around one \`ip netns exec curl\` (curl's own time_total: median ${median(curlOwnS).toFixed(2)} s); pull ${(100 * median(pullS.map(mbit)) / median(curlS.map(mbit))).toFixed(0)}% of curl; load average ${load} on ${os.cpus().length} cores`,
      }), { atLeast: 0.9 * median(curlS.map(mbit)) }),
      withTarget(figure('template.distribute_s', 's', distS, {
        baseline: curlS,
        note: `copy to all hosts: ${TARGETS} hosts lacking the ${FILE_MIB} MiB template, links limited to ${RATE_MBIT} Mbit/s, request to the last host installed; ` +
          `chains ${chains}; ${(median(distS) / oneCopy).toFixed(2)}× one transfer (8 copies from one source would be 8×); load average ${load} on ${os.cpus().length} cores`,
      }), { below: 2 * oneCopy }),
    ];
  } finally {
    await lan.destroy();
    for (const c of children) c.kill('SIGKILL');
    // BENCH_DISTRIBUTION_LOGS=DIR keeps the processes' logs (ctl.log, seed.log, t1.log ...) for a closer look.
    if (process.env.BENCH_DISTRIBUTION_LOGS) cpSync(tmp, process.env.BENCH_DISTRIBUTION_LOGS, { recursive: true, filter: (f) => !f.includes(`${path.sep}image.raw`) && !/templates|secrets|\.db/.test(path.relative(tmp, f)) });
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Sends a process's log (JSON lines on stderr) to a file. */
function keepLog(child: ResultPromise, file: string): void {
  child.stdout?.resume();
  child.stderr?.pipe(createWriteStream(file));
}

/** When a host's pull started and ended after `since` (ms), from its log: `start→end (phases)`. */
function hop(logFile: string, since: number): string {
  let start: number | undefined;
  let end = '';
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    let r: { time?: string; msg?: string };
    try {
      r = JSON.parse(line) as typeof r;
    } catch {
      continue; // not a log record
    }
    const at = Date.parse(r.time ?? '');
    if (!(at >= since)) continue;
    const rel = ((at - since) / 1000).toFixed(2);
    if (r.msg?.startsWith(`pulling template ${TEMPLATE}`)) start = at;
    else if (r.msg?.startsWith(`template ${TEMPLATE} pulled`) && start !== undefined) end = `${((start - since) / 1000).toFixed(2)}→${rel} (${/; (.*)\)$/.exec(r.msg)?.[1] ?? ''})`;
    else if (/failed|stopped/.test(r.msg ?? '')) end += ` [${rel}: ${r.msg}]`;
  }
  return end || (start === undefined ? 'no pull logged' : 'no end logged');
}

/** The distribution ids as a group of their own (`template`), for a registry that has no other `template` group. */
export const distributeGroup: Group = {
  name: 'template',
  ids: DISTRIBUTION_IDS,
  run: (ctx) => measureDistribution(ctx.say),
};

/**
 * `group` and the distribution figures under one name (`template`): each group name appears once in the
 * registry. `BENCH_TEMPLATE_PART=distribution` runs only the distribution figures (the build ones take a
 * Debian build), `BENCH_TEMPLATE_PART=build` only the group's own.
 */
export function withDistribution(group: Group): Group {
  return {
    name: group.name,
    ids: [...group.ids, ...DISTRIBUTION_IDS],
    async run(ctx) {
      const part = process.env.BENCH_TEMPLATE_PART;
      if (part !== undefined && part !== 'build' && part !== 'distribution') throw new Error(`BENCH_TEMPLATE_PART is "${part}": build or distribution`);
      if (part === 'distribution') return measureDistribution(ctx.say);
      if (part === 'build') return group.run(ctx);
      const own = await group.run(ctx).catch((err: Error): Figure[] => {
        ctx.say(`${group.name}: ${err.message}; the distribution figures are measured anyway`);
        return [];
      });
      return [...own, ...(await measureDistribution(ctx.say))];
    },
  };
}
