// Feasibility: the checks a host must pass before it is scored, cheapest and most often failing first.
// Each returns undefined (passes) or the Rejection that names why the host is left out.
import type { HostUsage, Rejection, SchedulerHost } from './index.ts';

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
 * The feasibility pipeline, in order; the first check that fails names the reason the host is left
 * out. One straight function rather than a list of closures: it runs for every host on every
 * decision (1,000 hosts x 20,000 decisions/s), so the in-flight holdings are looked up only for hosts
 * that pass the cheap checks, and messages come from a memo (the same figures recur across hosts and
 * decisions; formatting numbers was most of the cost).
 */
export function feasibility(host: SchedulerHost, need: Need, heldBy: ReadonlyMap<string, Held> | undefined): Rejection | Held {
  // Registry state first: a pending, down or draining host takes no new VM whatever its capacity.
  if (host.state !== 'ready') return { host: host.id, reason: 'not-ready', message: NOT_READY[host.state] };
  // A host never polled has no known capacity.
  const s = host.status;
  if (!s) return { host: host.id, reason: 'not-polled', message: NOT_POLLED };
  // A desktop on TCG is unusably slow: only KVM hosts qualify for templates that need it.
  if (need.needsKvm && s.hypervisor !== 'kvm') return { host: host.id, reason: 'no-kvm', message: NO_KVM[s.hypervisor] };
  if (!hasTemplate(s.templates, need.template)) {
    return { host: host.id, reason: 'missing-template', message: memo(missingTemplate, need.template, 0, () => `template "${need.template}" is not on this host`) };
  }
  // In-flight placements count against the host from here on: memory, vCPUs, disk and score.
  const held = (heldBy && heldBy.get(host.id)) || NOTHING_HELD;
  // Free memory keeps the host's reserve.
  const freeMiB = s.memory.freeMiB - held.memoryMiB;
  if (freeMiB < need.memoryMiB + need.reserveMiB) {
    return { host: host.id, reason: 'memory', message: memo(memoryShort, need.memoryMiB * 65536 + need.reserveMiB, freeMiB,
      () => `needs ${need.memoryMiB} MiB + ${need.reserveMiB} MiB reserve, ${Math.max(0, freeMiB)} MiB free`) };
  }
  const vcpuLimit = s.cpu.threads * need.overcommit;
  const vcpusAfter = s.vms.vcpus + held.vcpus + need.vcpus;
  if (vcpusAfter > vcpuLimit) {
    return { host: host.id, reason: 'vcpu', message: memo(vcpuShort, need.overcommit, vcpusAfter * 65536 + s.cpu.threads,
      () => `${vcpusAfter} vCPUs would exceed ${vcpuLimit} (${s.cpu.threads} threads x ${need.overcommit})`) };
  }
  const freeGiB = s.disk.freeGiB - held.diskGiB;
  if (freeGiB < need.diskGiB) {
    const shown = Math.max(0, Math.floor(freeGiB * 10) / 10);
    return { host: host.id, reason: 'disk', message: memo(diskShort, need.diskGiB, shown, () => `needs ${need.diskGiB} GiB disk, ${shown} GiB free`) };
  }
  return held;
}

export const NOTHING_HELD: Held = Object.freeze({ vcpus: 0, memoryMiB: 0, diskGiB: 0, count: 0 });

type Memo = Map<number | string, Map<number, string>>;
const missingTemplate: Memo = new Map();
const memoryShort: Memo = new Map();
const vcpuShort: Memo = new Map();
const diskShort: Memo = new Map();
const MEMO_LIMIT = 4096;

/** `make()`, remembered under (outer, inner); each memo forgets everything past MEMO_LIMIT entries. */
function memo(table: Memo, outer: number | string, inner: number, make: () => string): string {
  let row = table.get(outer);
  if (!row) {
    if (table.size >= MEMO_LIMIT) table.clear();
    table.set(outer, (row = new Map()));
  }
  let text = row.get(inner);
  if (text === undefined) {
    if (row.size >= MEMO_LIMIT) row.clear();
    row.set(inner, (text = make()));
  }
  return text;
}

const NOT_READY: Record<SchedulerHost['state'], string> = {
  pending: 'host is pending, not ready (waiting for approval)',
  down: 'host is down, not ready (missed its last polls)',
  draining: 'host is draining, not ready (takes no new VMs)',
  ready: '',
};
const NOT_POLLED = 'host has not reported its status yet';
const NO_KVM: Record<HostUsage['hypervisor'], string> = {
  kvm: '',
  tcg: 'template needs KVM, host runs tcg (software emulation)',
  none: 'template needs KVM, host has no hypervisor',
};

function hasTemplate(templates: HostUsage['templates'], name: string): boolean {
  for (let i = 0; i < templates.length; i++) if (templates[i]!.name === name) return true;
  return false;
}
