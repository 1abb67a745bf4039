// The scheduler: which host gets a VM, and why every other host did not. Pure: no Express, no
// database, no I/O. The pipeline (feasibility -> score -> seeded tie-break) is read in `place()`;
// see README.md in this folder for the picture and the glossary.
import type { HostStatus, Hypervisor } from '../../wire/api.ts';
import { check, heldOn, holdings, NOTHING_HELD, REASONS, rejection, type HeldBy, type Need } from './feasibility.ts';
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
  | 'disk'
  | 'no-hypervisor';

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
  /** Built when first read, from the hosts as they are then: read it before the registry updates them. */
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

  // Hosts left out are kept as a reason code per host (0: feasible); sentences are built when read.
  const codes = new Uint8Array(hosts.length);
  let leftOut = 0;
  const found = { held: NOTHING_HELD };
  let best = -1;
  let bestScore = -1;
  let bestTie = 0;
  for (let i = 0; i < hosts.length; i++) {
    const host = hosts[i]!;
    // Feasibility first: the first failing check names the reason the host is left out.
    const reason = check(host, need, heldBy, found);
    if (reason !== 0) {
      codes[i] = reason;
      leftOut++;
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

  if (best < 0) {
    const counts = new Map<RejectReason, number>();
    for (const code of codes) if (code !== 0) counts.set(REASONS[code]!, (counts.get(REASONS[code]!) ?? 0) + 1);
    const summary = [...counts].map(([reason, n]) => `${n} ${reason}`).join(', ');
    return {
      ok: false,
      host: null,
      explanation: hosts.length === 0
        ? 'no host fits: the cluster has no hosts yet'
        : `no host fits ${need.vcpus} vCPU / ${need.memoryMiB} MiB / ${need.diskGiB} GiB of "${need.template}": ${summary}`,
      rejected: rejections({ hosts, need, heldBy, codes }),
    };
  }
  const chosen = hosts[best]!;
  const explanation = describeScore(policy, chosen, need, heldOn(heldBy, chosen), bestScore, hosts.length - leftOut, leftOut);
  return placed(chosen.id, bestScore, explanation, { hosts, need, heldBy, codes });
}

/** The hosts a decision left out (a reason code per host, 0 for feasible) and what it takes to explain them. */
interface LeftOut {
  hosts: readonly SchedulerHost[];
  need: Need;
  heldBy: HeldBy;
  codes: Uint8Array;
}

function rejections(l: LeftOut): Rejection[] {
  const out: Rejection[] = [];
  for (let i = 0; i < l.codes.length; i++) if (l.codes[i] !== 0) out.push(rejection(l.hosts[i]!, l.need, l.heldBy, REASONS[l.codes[i]!]!));
  return out;
}

/**
 * A success whose `rejected` is built on first read (a getter JSON.stringify includes): most
 * decisions never show it. Kept out of place(): a closure there would move its locals to the heap.
 */
function placed(host: string, score: number, explanation: string, left: LeftOut): Placed {
  let rejected: Rejection[] | undefined;
  return {
    ok: true,
    host,
    score,
    explanation,
    get rejected() {
      return (rejected ??= rejections(left));
    },
  };
}

export { placeOriginal } from './baseline.ts';
