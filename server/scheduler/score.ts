// Scores: how good a feasible host is for the request under a policy, always within 0..100.
// Fractions are taken *after* the placement (the request and the in-flight placements included).
import type { Need, Held } from './feasibility.ts';
import type { HostUsage, Policy, SchedulerHost } from './index.ts';

export type Scorer = (status: HostUsage, need: Need, held: Held) => number;

/** Share of the host's memory in use after placing the request: 0..1. */
export function memoryFraction(s: HostUsage, need: Need, held: Held): number {
  const total = s.memory.totalMiB;
  if (total <= 0) return 1;
  return clamp01((total - s.memory.freeMiB + held.memoryMiB + need.memoryMiB) / total);
}

/** Share of the host's vCPU allowance (threads x overcommit) in use after placing: 0..1. */
export function vcpuFraction(s: HostUsage, need: Need, held: Held): number {
  const limit = s.cpu.threads * need.overcommit;
  if (limit <= 0) return 1;
  return clamp01((s.vms.vcpus + held.vcpus + need.vcpus) / limit);
}

// Memory is what runs out first on lab PCs, so it weighs more than vCPUs.
const MEMORY_WEIGHT = 0.7;
const VCPU_WEIGHT = 0.3;

/** Weighted load after placement, 0..1: 0 an idle host, 1 one filled to the limit. */
function loadAfter(s: HostUsage, need: Need, held: Held): number {
  return MEMORY_WEIGHT * memoryFraction(s, need, held) + VCPU_WEIGHT * vcpuFraction(s, need, held);
}

export const POLICIES: Readonly<Record<Policy, Scorer>> = {
  // 100 x (1 - load after): an idle host scores just under 100, a host this request fills scores 0.
  'least-loaded': (s, need, held) => 100 * (1 - loadAfter(s, need, held)),
  // 100 / (1 + VMs after): the first VM on an empty host scores 50, the second 33; never 0 or above 100.
  spread: (s, _need, held) => 100 / (2 + s.vms.total + held.count),
  // 100 x load after (best fit): a request that fills the host exactly scores 100, an idle host ~0.
  binpack: (s, need, held) => 100 * loadAfter(s, need, held),
};

/** One sentence saying why the chosen host won. */
export function describeScore(policy: Policy, host: SchedulerHost, need: Need, held: Held, score: number, feasible: number, rejected: number): string {
  const s = host.status!;
  const mem = Math.round(memoryFraction(s, need, held) * 100);
  const cpu = Math.round(vcpuFraction(s, need, held) * 100);
  const pending = held.count > 0 ? `, ${held.count} placement(s) in flight counted` : '';
  const others = `${feasible} host(s) fit, ${rejected} left out`;
  return `${policy}: ${host.id} scores ${score.toFixed(1)}/100 (memory ${mem}% and vCPU ${cpu}% used after placement${pending}); ${others}`;
}

function clamp01(x: number): number {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}
