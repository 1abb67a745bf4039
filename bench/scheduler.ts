// Group `scheduler`: SkyHost's placement against the original design's (least-loaded from the last
// poll, no feasibility, no in-flight count) on the same request streams, and its raw speed.
import { place, placeOriginal, type InFlight, type PlacementRequest, type SchedulerHost } from '../server/scheduler/index.ts';
import type { Group } from './group.ts';
import { createHash } from 'node:crypto';
import os from 'node:os';
import { figure, median, msSince, withTarget } from './stats.ts';

/** A small seeded PRNG (mulberry32), so every run sees the same streams. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const OS_MIB = 512;
export const ALPINE: PlacementRequest = { template: 'alpine', vcpus: 1, memoryMiB: 512, diskGiB: 2, needsKvm: false, minMemoryMiB: 128 };
export const DESKTOP: PlacementRequest = { template: 'desktop', vcpus: 2, memoryMiB: 2048, diskGiB: 10, needsKvm: true, minMemoryMiB: 2048 };

/** A lab PC as the bench models it: what it has, and the VMs placed on it so far (the truth). */
interface SimHost {
  id: string;
  memMiB: number;
  threads: number;
  kvm: boolean;
  templates: string[];
  vmMiB: number;
  vmVcpus: number;
  vms: number;
  diskUsedGiB: number;
}

function simHost(id: string, memMiB: number, threads: number, kvm: boolean, templates = ['alpine', 'desktop']): SimHost {
  return { id, memMiB, threads, kvm, templates, vmMiB: 0, vmVcpus: 0, vms: 0, diskUsedGiB: 0 };
}

/** What a poll of `h` reports now. */
function poll(h: SimHost): SchedulerHost {
  return {
    id: h.id,
    state: 'ready',
    status: {
      cpu: { threads: h.threads },
      memory: { totalMiB: h.memMiB, freeMiB: h.memMiB - OS_MIB - h.vmMiB },
      disk: { totalGiB: 500, freeGiB: 500 - h.diskUsedGiB },
      vms: { total: h.vms, vcpus: h.vmVcpus },
      hypervisor: h.kvm ? 'kvm' : 'tcg',
      templates: h.templates.map((name) => ({ name })),
    },
  };
}

/** Whether `h` can really hold `r` (what the agent and the kernel decide, whoever chose the host). */
function reallyFits(h: SimHost, r: PlacementRequest): boolean {
  return h.memMiB - OS_MIB - h.vmMiB >= r.memoryMiB + 256 && h.vmVcpus + r.vcpus <= h.threads * 4
    && (!r.needsKvm || h.kvm) && h.templates.includes(r.template);
}

function land(h: SimHost, r: PlacementRequest): void {
  h.vmMiB += r.memoryMiB;
  h.vmVcpus += r.vcpus;
  h.vms += 1;
  h.diskUsedGiB += r.diskGiB;
}

type Chooser = (r: PlacementRequest, polled: SchedulerHost[], inFlight: InFlight[]) => string | null;
const skyhost: Chooser = (r, polled, inFlight) => {
  const p = place(r, polled, inFlight);
  return p.ok ? p.host : null;
};
const original: Chooser = (_r, polled) => placeOriginal(polled);

/**
 * Feeds `stream` to `choose`, polling every `pollEvery` requests (between polls the chooser sees
 * stale figures plus the in-flight list), until the first request that is refused or that the chosen
 * host cannot hold. Returns the hosts as they ended up.
 */
function fill(hosts: SimHost[], stream: Iterable<PlacementRequest>, pollEvery: number, choose: Chooser): SimHost[] {
  let polled = hosts.map(poll);
  let inFlight: InFlight[] = [];
  let sincePoll = 0;
  for (const r of stream) {
    if (sincePoll === pollEvery) {
      polled = hosts.map(poll);
      inFlight = [];
      sincePoll = 0;
    }
    const id = choose(r, polled, inFlight);
    const h = hosts.find((x) => x.id === id);
    if (!h || !reallyFits(h, r)) break;
    land(h, r);
    inFlight.push({ hostId: h.id, vcpus: r.vcpus, memoryMiB: r.memoryMiB, diskGiB: r.diskGiB });
    sincePoll += 1;
  }
  return hosts;
}

/** A lab of mixed PCs: two strong, three medium (KVM), three old ones without KVM. */
function mixedLab(): SimHost[] {
  return [
    simHost('strong-1', 32768, 16, true), simHost('strong-2', 32768, 16, true),
    simHost('medium-1', 16384, 8, true), simHost('medium-2', 16384, 8, true), simHost('medium-3', 16384, 8, true),
    simHost('old-1', 8192, 4, false), simHost('old-2', 4096, 4, false), simHost('old-3', 4096, 2, false),
  ];
}

/** Three Alpine requests to one desktop, in a seeded order, endless. */
function* mixedStream(seed: number): Generator<PlacementRequest> {
  const rand = prng(seed);
  for (let i = 0; ; i++) yield { ...(rand() < 0.25 ? DESKTOP : ALPINE), key: `s${seed}-${i}` };
}

/** Share of the cluster's memory held by VMs, in %. */
function filledPct(hosts: SimHost[]): number {
  const total = hosts.reduce((s, h) => s + h.memMiB, 0);
  return (100 * hosts.reduce((s, h) => s + h.vmMiB, 0)) / total;
}

/** The spread of a burst of `n` on 3 equal hosts (polled once, before the burst): most minus fewest. */
function burstSpread(n: number, choose: Chooser, seed: number): number {
  const hosts = [simHost('a', 65536, 32, true), simHost('b', 65536, 32, true), simHost('c', 65536, 32, true)];
  const requests = Array.from({ length: n }, (_, i) => ({ ...ALPINE, key: `burst${seed}-${i}` }));
  fill(hosts, requests, Infinity, choose);
  const counts = hosts.map((h) => h.vms);
  return Math.max(...counts) - Math.min(...counts);
}

/** 1,000 polled hosts of mixed kinds, some busy, some not ready, some without a template. */
export function thousandHosts(seed = 1): { hosts: SchedulerHost[]; inFlight: InFlight[] } {
  const rand = prng(seed);
  const hosts: SchedulerHost[] = [];
  for (let i = 0; i < 1000; i++) {
    // Ids as real hosts have them: a 32-hex-digit /etc/machine-id.
    const h = simHost(createHash('md5').update(`host-${i}`).digest('hex'), [4096, 8192, 16384, 32768][Math.floor(rand() * 4)]!,
      [2, 4, 8, 16][Math.floor(rand() * 4)]!, rand() < 0.7, rand() < 0.9 ? ['alpine', 'desktop', 'debian'] : ['debian']);
    const fillTo = rand() * 0.8;
    while ((h.vmMiB + 512) / h.memMiB < fillTo) land(h, ALPINE);
    const p = poll(h);
    if (rand() < 0.03) p.state = rand() < 0.5 ? 'down' : 'draining';
    hosts.push(p);
  }
  const inFlight: InFlight[] = Array.from({ length: 30 }, (_, i) => ({ hostId: hosts[(i * 37) % 1000]!.id, vcpus: 1, memoryMiB: 512, diskGiB: 2 }));
  return { hosts, inFlight };
}

/**
 * Decisions per second of `choose` over `hosts` in one run of `n` decisions: per second of this
 * process's CPU time (what one dedicated core would do; the machine may be shared) and of wall time.
 */
function decisionsPerSecond(n: number, hosts: SchedulerHost[], inFlight: InFlight[], choose: Chooser): { cpu: number; wall: number } {
  const requests = Array.from({ length: 64 }, (_, i) => ({ ...(i % 4 === 0 ? DESKTOP : ALPINE), key: `d${i}` }));
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let sink = 0;
  for (let i = 0; i < n; i++) if (choose(requests[i & 63]!, hosts, inFlight)) sink++;
  const wallMs = msSince(t0);
  const cpu = process.cpuUsage(cpu0);
  if (sink < 0) throw new Error('unreachable');
  return { cpu: n / ((cpu.user + cpu.system) / 1e6), wall: (n / wallMs) * 1000 };
}

export const schedulerGroup: Group = {
  name: 'scheduler',
  ids: [
    ['scheduler.decisions_per_s_1000_hosts', 'decisions/s'],
    ['scheduler.burst_max_minus_min', 'VMs'],
    ['scheduler.fill_pct', '%'],
    ['scheduler.fill_pct_seed_baseline', '%'],
  ],
  async run(ctx) {
    const { hosts, inFlight } = thousandHosts();
    decisionsPerSecond(2000, hosts, inFlight, skyhost); // warm up the JIT
    const speedRuns = Array.from({ length: 9 }, () => decisionsPerSecond(4000, hosts, inFlight, skyhost));
    const speed = speedRuns.map((r) => r.cpu);
    const speedWall = Math.round(median(speedRuns.map((r) => r.wall)));
    const speedOriginal = Array.from({ length: 9 }, () => decisionsPerSecond(4000, hosts, inFlight, original).cpu);
    const load = os.loadavg()[0]!.toFixed(1);
    ctx.say(`scheduler: ${Math.round(median(speed))} decisions per CPU second, ${speedWall} per wall second (load average ${load})`);

    const seeds = Array.from({ length: 11 }, (_, i) => i + 1);
    const burst = seeds.map((s) => burstSpread(30, skyhost, s));
    const burstOriginal = seeds.map((s) => burstSpread(30, original, s));

    const fillSeeds = Array.from({ length: 21 }, (_, i) => 100 + i);
    const filled = fillSeeds.map((s) => filledPct(fill(mixedLab(), mixedStream(s), 10, skyhost)));
    const filledOriginal = fillSeeds.map((s) => filledPct(fill(mixedLab(), mixedStream(s), 10, original)));

    return [
      withTarget(figure('scheduler.decisions_per_s_1000_hosts', 'decisions/s', speed, {
        baseline: speedOriginal,
        note: `per second of CPU time (${speedWall}/s of wall time at load average ${load} on ${os.cpus().length} cores); place() over 1,000 mixed hosts (3% down/draining, 10% without the template, 30 in flight, ~40% left out, each with its reason and sentence); baseline: the original least-loaded pick (no checks, no reasons)`,
      }), { atLeast: 20_000 }),
      figure('scheduler.burst_max_minus_min', 'VMs', burst, {
        baseline: burstOriginal,
        note: '30 requests between two polls on 3 equal hosts; baseline: least-loaded from the last poll sends all 30 to one host',
      }),
      figure('scheduler.fill_pct', '%', filled, {
        baseline: filledOriginal,
        note: 'cluster memory held by VMs at the first refused or failed request; 3:1 Alpine (512 MiB) : desktop (2 GiB, KVM) on 8 mixed PCs, poll every 10 requests, 21 streams',
      }),
      figure('scheduler.fill_pct_seed_baseline', '%', filledOriginal, {
        note: 'the same 21 streams placed by the original design: least-loaded from the last poll, no feasibility, no in-flight count',
      }),
    ];
  },
};
