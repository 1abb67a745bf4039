// Feasibility: the checks a host must pass before it is scored, cheapest and most often failing first.
// `check()` runs for every host on every decision (1,000 hosts x 20,000 decisions/s), so it only
// names the reason and allocates nothing; `rejection()` turns a reason into the sentence for the page,
// and runs only when someone reads `rejected`.
import type { HostUsage, InFlight, RejectReason, Rejection, SchedulerHost } from './index.ts';

/** The request as the checks read it: memory already raised to the template's minimum. */
export interface Need {
  template: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
  needsKvm: boolean;
  reserveMiB: number;
  overcommit: number;
}

/** What the placements in flight to one host already hold there. */
export interface Held {
  vcpus: number;
  memoryMiB: number;
  diskGiB: number;
  count: number;
}

/**
 * In-flight holdings by host id, undefined when nothing is in flight. `filter` is a 1,024-bit set of
 * the ids' last two characters: most hosts have nothing in flight, and it spares them the Map lookup
 * (a tenth of a decision's cost).
 */
export type HeldBy = { byHost: Map<string, Held>; filter: Uint32Array } | undefined;

function idBits(id: string): number {
  const n = id.length;
  return n < 2 ? 0 : ((id.charCodeAt(n - 1) << 5) ^ id.charCodeAt(n - 2)) & 1023;
}

/** Sums the in-flight placements per host; undefined when there are none. */
export function holdings(inFlight: readonly InFlight[]): HeldBy {
  if (inFlight.length === 0) return undefined;
  const byHost = new Map<string, Held>();
  const filter = new Uint32Array(32);
  for (const f of inFlight) {
    const h = byHost.get(f.hostId);
    if (h) {
      h.vcpus += f.vcpus;
      h.memoryMiB += f.memoryMiB;
      h.diskGiB += f.diskGiB;
      h.count += 1;
    } else {
      byHost.set(f.hostId, { vcpus: f.vcpus, memoryMiB: f.memoryMiB, diskGiB: f.diskGiB, count: 1 });
      const b = idBits(f.hostId);
      filter[b >>> 5]! |= 1 << (b & 31);
    }
  }
  return { byHost, filter };
}

// Not frozen: a frozen object has another hidden class, which made every read of `held` polymorphic.
export const NOTHING_HELD: Held = { vcpus: 0, memoryMiB: 0, diskGiB: 0, count: 0 };

/** The placements in flight to `host`, or nothing. */
export function heldOn(heldBy: HeldBy, host: SchedulerHost): Held {
  if (!heldBy) return NOTHING_HELD;
  const b = idBits(host.id);
  if ((heldBy.filter[b >>> 5]! & (1 << (b & 31))) === 0) return NOTHING_HELD;
  return heldBy.byHost.get(host.id) ?? NOTHING_HELD;
}

/** Reason codes as `check()` returns them (0: feasible), so the hot loop stores a byte per host. */
export const REASONS: readonly (RejectReason | undefined)[] = [undefined, 'not-ready', 'not-polled', 'no-kvm', 'missing-template', 'memory', 'vcpu', 'disk', 'no-hypervisor'];
const NOT_READY = 1, NOT_POLLED = 2, NO_KVM = 3, MISSING_TEMPLATE = 4, MEMORY = 5, VCPU = 6, DISK = 7, NO_HYPERVISOR = 8;

/**
 * The feasibility pipeline, in order: the first check that fails names why the host is left out
 * (a code of REASONS; 0 when the host passes).
 * A host that passes gets its in-flight holdings in `found.held` (saves a second lookup to score it).
 */
export function check(host: SchedulerHost, need: Need, heldBy: HeldBy, found: { held: Held }): number {
  // Registry state first: a pending, down or draining host takes no new VM whatever its capacity.
  if (host.state !== 'ready') return NOT_READY;
  // A host never polled has no known capacity.
  const s = host.status;
  if (!s) return NOT_POLLED;
  // QEMU does not run there at all (the agent would refuse every VM).
  if (s.hypervisor === 'none') return NO_HYPERVISOR;
  // A desktop on TCG is unusably slow: only KVM hosts qualify for templates that need it.
  if (need.needsKvm && s.hypervisor !== 'kvm') return NO_KVM;
  if (!hasTemplate(s.templates, need.template)) return MISSING_TEMPLATE;
  // From here on, in-flight placements count against the host; memory keeps the host's reserve.
  const held = heldOn(heldBy, host);
  if (s.memory.freeMiB - held.memoryMiB < need.memoryMiB + need.reserveMiB) return MEMORY;
  if (s.vms.vcpus + held.vcpus + need.vcpus > s.cpu.threads * need.overcommit) return VCPU;
  if (s.disk.freeGiB - held.diskGiB < need.diskGiB) return DISK;
  found.held = held;
  return 0;
}

/** The Rejection (with its sentence) of a host that `check()` left out for `reason`. */
export function rejection(host: SchedulerHost, need: Need, heldBy: HeldBy, reason: RejectReason): Rejection {
  const s = host.status;
  const held = heldOn(heldBy, host);
  let message: string;
  switch (reason) {
    case 'not-ready':
      message = NOT_READY_TEXT[host.state];
      break;
    case 'not-polled':
      message = 'host has not reported its status yet';
      break;
    case 'no-kvm':
      message = 'template needs KVM, host runs tcg (software emulation)';
      break;
    case 'no-hypervisor':
      message = 'host cannot run VMs: QEMU does not work there (run skyhost host setup on it)';
      break;
    case 'missing-template':
      message = `template "${need.template}" is not on this host`;
      break;
    case 'memory':
      message = `needs ${need.memoryMiB} MiB + ${need.reserveMiB} MiB reserve, ${Math.max(0, s!.memory.freeMiB - held.memoryMiB)} MiB free`;
      break;
    case 'vcpu':
      message = `${s!.vms.vcpus + held.vcpus + need.vcpus} vCPUs would exceed ${s!.cpu.threads * need.overcommit} (${s!.cpu.threads} threads x ${need.overcommit})`;
      break;
    case 'disk':
      message = `needs ${need.diskGiB} GiB disk, ${Math.max(0, Math.floor((s!.disk.freeGiB - held.diskGiB) * 10) / 10)} GiB free`;
      break;
  }
  return { host: host.id, reason, message };
}

const NOT_READY_TEXT: Record<SchedulerHost['state'], string> = {
  pending: 'host is pending, not ready (waiting for approval)',
  down: 'host is down, not ready (missed its last polls)',
  draining: 'host is draining, not ready (takes no new VMs)',
  ready: 'host is ready',
};

function hasTemplate(templates: HostUsage['templates'], name: string): boolean {
  for (let i = 0; i < templates.length; i++) if (templates[i]!.name === name) return true;
  return false;
}
