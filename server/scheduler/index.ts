// The scheduler: which host gets a VM, and why every other host did not. Pure: no Express, no
// database, no I/O. The pipeline (feasibility -> score -> seeded tie-break) is read in `place()`;
// see README.md in this folder for the picture and the glossary.
import type { HostStatus, Hypervisor } from '../../agent/api.ts';
import { check, heldOn, holdings, NOTHING_HELD, rejection, type Need, type Held } from './feasibility.ts';
import { POLICIES, describeScore } from './score.ts';
import { hostTieKey, requestSeed } from './seed.ts';

export type HostState = 'pending' | 'ready' | 'down' | 'draining';
export type Policy = 'least-loaded' | 'spread' | 'binpack';

/** What a VM request needs from a host, e.g. `{ template: 'alpine', vcpus: 1, memoryMiB: 256, diskGiB: 2, needsKvm: false }`. */
export interface PlacementRequest {
  /** Seeds the tie-break (the VM id or idempotency key), so a decision can be replayed. */
  key?: string;
  template: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** The template refuses TCG (a desktop): only `kvm` hosts qualify. */
  needsKvm: boolean;
  /** The template's minimum memory; the request reserves max(memoryMiB, minMemoryMiB). */
  minMemoryMiB?: number;
}

/** The parts of an agent's `GET /status` the scheduler reads; a whole `HostStatus` fits. */
export interface HostUsage {
  cpu: Pick<HostStatus['cpu'], 'threads'>;
  memory: Pick<HostStatus['memory'], 'totalMiB' | 'freeMiB'>;
  disk: Pick<HostStatus['disk'], 'totalGiB' | 'freeGiB'>;
  vms: Pick<HostStatus['vms'], 'total' | 'vcpus'>;
  hypervisor: Hypervisor;
  templates: ReadonlyArray<{ readonly name: string }>;
}

/** A host as the controller sees it: its registry state and its last polled status. */
export interface SchedulerHost {
  id: string;
  state: HostState;
  /** The last `/status` answer; `null` until the first successful poll. */
  status: HostUsage | null;
}

/** A placement already decided but not yet visible in the host's last poll. */
export interface InFlight {
  hostId: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
}

export interface PlacementOptions {
  /** `least-loaded` (default, the original design), `spread` (fewest VMs) or `binpack` (fullest that fits). */
  policy?: Policy;
  /** Memory left to the host itself beyond the VMs, MiB (default 256). */
  memoryReserveMiB?: number;
  /** vCPUs promised per hardware thread (default 4). */
  vcpuOvercommit?: number;
  /** Mixed into the request's seed for the tie-break (default 0). */
  seed?: number | string;
}

export type RejectReason =
  | 'not-ready'
  | 'not-polled'
  | 'no-kvm'
  | 'missing-template'
  | 'memory'
  | 'vcpu'
  | 'disk';

/** A host left out, with a named reason and a sentence for the page. */
export interface Rejection {
  host: string;
  reason: RejectReason;
  message: string;
}

export interface Placed {
  ok: true;
  host: string;
  /** 0..100, higher is better for the chosen policy. */
  score: number;
  explanation: string;
  rejected: Rejection[];
}

export interface NoHostFits {
  ok: false;
  host: null;
  explanation: string;
  rejected: Rejection[];
}

export type Placement = Placed | NoHostFits;

export const DEFAULTS = { policy: 'least-loaded', memoryReserveMiB: 256, vcpuOvercommit: 4, seed: 0 } as const satisfies Required<PlacementOptions>;

/**
 * Chooses a host for `request`, or says why none fits (never throws for a full cluster).
 * @example place({ template: 'alpine', vcpus: 1, memoryMiB: 256, diskGiB: 2, needsKvm: false }, hosts, inFlight)
 */
export function place(
  request: PlacementRequest,
  hosts: readonly SchedulerHost[],
  inFlight: readonly InFlight[] = [],
  options: PlacementOptions = {},
): Placement {
  const policy = options.policy ?? DEFAULTS.policy;
  const scoreOf = POLICIES[policy];
  if (!scoreOf) throw new TypeError(`unknown scheduler policy "${String(policy)}"`);
  const need: Need = {
    template: request.template,
    vcpus: request.vcpus,
    memoryMiB: Math.max(request.memoryMiB, request.minMemoryMiB ?? 0),
    diskGiB: request.diskGiB,
    needsKvm: request.needsKvm,
    reserveMiB: options.memoryReserveMiB ?? DEFAULTS.memoryReserveMiB,
    overcommit: options.vcpuOvercommit ?? DEFAULTS.vcpuOvercommit,
  };
  // In-flight placements count against their host at once, before any check or score.
  const heldBy = holdings(inFlight);
  const seed = requestSeed(request, options.seed ?? DEFAULTS.seed);

  // Hosts left out are kept as (index, reason) in the loop; their sentences are built when read.
  const leftOut: number[] = [];
  const reasons: RejectReason[] = [];
  const found = { held: NOTHING_HELD };
  let best = -1;
  let bestScore = -1;
  let bestTie = 0;
  for (let i = 0; i < hosts.length; i++) {
    const host = hosts[i]!;
    // Feasibility first: the first failing check names the reason the host is left out.
    const reason = check(host, need, heldBy, found);
    if (reason !== null) {
      leftOut.push(i);
      reasons.push(reason);
      continue;
    }
    // Then a bounded score; equal scores go to the host with the lower seeded tie key.
    const score = scoreOf(host.status!, need, found.held);
    if (score < bestScore) continue;
    if (score === bestScore) {
      const tie = hostTieKey(seed, host.id);
      if (tie >= bestTie) continue;
      bestTie = tie;
    } else {
      bestTie = hostTieKey(seed, host.id);
    }
    best = i;
    bestScore = score;
  }

  const rejectedOf = () => leftOut.map((i, k) => rejection(hosts[i]!, need, heldBy, reasons[k]!));
  if (best < 0) {
    const counts = new Map<RejectReason, number>();
    for (const r of reasons) counts.set(r, (counts.get(r) ?? 0) + 1);
    const summary = [...counts].map(([reason, n]) => `${n} ${reason}`).join(', ');
    return {
      ok: false,
      host: null,
      explanation: hosts.length === 0
        ? 'no host fits: the cluster has no hosts yet'
        : `no host fits ${need.vcpus} vCPU / ${need.memoryMiB} MiB / ${need.diskGiB} GiB of "${need.template}": ${summary}`,
      rejected: rejectedOf(),
    };
  }
  const chosen = hosts[best]!;
  let rejected: Rejection[] | undefined;
  return {
    ok: true,
    host: chosen.id,
    score: bestScore,
    explanation: describeScore(policy, chosen, need, heldOn(heldBy, chosen), bestScore, hosts.length - leftOut.length, leftOut.length),
    // Built on first read (a getter JSON.stringify includes): most decisions never show them.
    get rejected() {
      return (rejected ??= rejectedOf());
    },
  };
}

export { placeOriginal } from './baseline.ts';
