// The scheduler: which host gets a VM, and why every other host did not. Pure: no Express, no
// database, no I/O. The pipeline (feasibility -> score -> seeded tie-break) is read in `place()`;
// see README.md in this folder for the picture and the glossary.
import { effectiveMemory, hasTemplate, REQUEST_TEMPLATE_RULES, type HostStatus, type Hypervisor, type PlacementReason } from '../../wire/api.ts';
import { firstFailed, holdings, NOTHING_HELD, NOTHING_KNOWN, type Held, type Need } from './feasibility.ts';
import { POLICIES, describeScore } from './score.ts';
import { hostTieKey, requestSeed } from './seed.ts';

export type HostState = 'pending' | 'ready' | 'down' | 'draining' | 'asleep';
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
  /** The template's disk size in GiB, e.g. 2.5: a smaller `diskGiB` is refused (`disk_below_template`). */
  templateDiskGiB?: number;
  /**
   * The template's download in bytes when some source (the catalog, a host) holds it: a host lacking
   * it is then feasible if its disk has room, and scores PULL_FACTOR of a host that has it. Undefined:
   * only hosts that have it qualify (`missing_template`).
   */
  templateBytes?: number;
}

/** A host that must pull the template first scores this share of its score: one that has it wins unless much busier. */
export const PULL_FACTOR = 0.5;

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

/** Why a host was left out; the same codes as the agent's refusals (wire/placement.ts). */
export type RejectReason = PlacementReason;

/** A host left out, with a named reason and a sentence for the page. */
export interface Rejection {
  host: string;
  reason: RejectReason;
  message: string;
}

export interface Placed {
  ok: true;
  host: string;
  /** The host lacks the template: it pulls it before the VM is created. */
  pull: boolean;
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
    memoryMiB: effectiveMemory(request.memoryMiB, { minMemoryMiB: request.minMemoryMiB ?? 0 }),
    diskGiB: request.diskGiB,
    needsKvm: request.needsKvm,
    minMemoryMiB: request.minMemoryMiB ?? 0,
    templateDiskGiB: request.templateDiskGiB,
    reserveMiB: options.memoryReserveMiB ?? DEFAULTS.memoryReserveMiB,
    overcommit: options.vcpuOvercommit ?? DEFAULTS.vcpuOvercommit,
    pullGiB: request.templateBytes !== undefined ? request.templateBytes / 1024 ** 3 : undefined,
  };
  // The template's rules that read only the request are the same on every host: checked once.
  const unfit = REQUEST_TEMPLATE_RULES.find((rule) => !rule.test(need));
  if (unfit) {
    const message = unfit.message(need);
    const rejected = hosts.map((host) => ({ host: host.id, reason: unfit.reason, message }));
    return { ok: false, host: null, explanation: noHostFits(need, hosts.length, rejected), rejected };
  }
  // In-flight placements count against their host at once, before any check or score.
  const heldBy = holdings(inFlight);
  const seed = requestSeed(request, options.seed ?? DEFAULTS.seed);

  const rejected: Rejection[] = [];
  let best: SchedulerHost | undefined;
  let bestHeld: Held = NOTHING_HELD;
  let bestScore = -1;
  let bestTie = 0;
  for (let i = 0; i < hosts.length; i++) {
    const host = hosts[i]!;
    const status = host.status ?? NOTHING_KNOWN;
    const held = heldBy.get(host.id) ?? NOTHING_HELD;
    // 1. Feasibility: the first failing check names the reason the host is left out.
    const failed = firstFailed(need, status, held, host);
    if (failed) {
      rejected.push({ host: host.id, reason: failed.reason, message: failed.message(need, status, held, host) });
      continue;
    }
    // 2. Score, bounded 0..100 under the policy; a host that would pull the template first scores less.
    let score = scoreOf(status, need, held);
    if (need.pullGiB !== undefined && !hasTemplate(status, need.template)) score *= PULL_FACTOR;
    if (score < bestScore) continue;
    // 3. Equal scores go to the host with the lower tie key, seeded by the request.
    const tie = hostTieKey(seed, host.id);
    if (score === bestScore && tie >= bestTie) continue;
    best = host;
    bestHeld = held;
    bestScore = score;
    bestTie = tie;
  }

  if (!best) return { ok: false, host: null, explanation: noHostFits(need, hosts.length, rejected), rejected };
  const feasible = hosts.length - rejected.length;
  const pull = !hasTemplate(best.status!, need.template);
  const explanation = describeScore(policy, best, need, bestHeld, bestScore, feasible, rejected.length) + (pull ? `; pulls template "${need.template}" first` : '');
  return { ok: true, host: best.id, pull, score: bestScore, explanation, rejected };
}

/** "no host fits ...", with how many hosts were left out for each reason. */
function noHostFits(need: Need, hostCount: number, rejected: readonly Rejection[]): string {
  if (hostCount === 0) return 'no host fits: the cluster has no hosts yet';
  const counts = new Map<RejectReason, number>();
  for (const r of rejected) counts.set(r.reason, (counts.get(r.reason) ?? 0) + 1);
  const summary = [...counts].map(([reason, n]) => `${n} ${reason}`).join(', ');
  return `no host fits ${need.vcpus} vCPU / ${need.memoryMiB} MiB / ${need.diskGiB} GiB of "${need.template}": ${summary}`;
}

export { placeOriginal } from './baseline.ts';
