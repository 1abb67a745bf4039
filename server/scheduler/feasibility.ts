// Feasibility: the checks a host must pass before it is scored, cheapest and most often failing first.
// Each returns undefined (passes) or the Rejection that names why the host is left out.
import type { Rejection, SchedulerHost } from './index.ts';

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

export type Check = (host: SchedulerHost, need: Need, held: Held) => Rejection | undefined;

/** The feasibility pipeline, in order; the first check that fails names the reason. */
export const FEASIBILITY: readonly Check[] = [
  // Registry state first: a pending, down or draining host takes no new VM whatever its capacity.
  (host) => host.state === 'ready' ? undefined
    : reject(host, 'not-ready', `host is ${host.state}, not ready`),
  // A host never polled has no known capacity.
  (host) => host.status ? undefined
    : reject(host, 'not-polled', 'host has not reported its status yet'),
  // A desktop on TCG is unusably slow: only KVM hosts qualify for templates that need it.
  (host, need) => !need.needsKvm || host.status!.hypervisor === 'kvm' ? undefined
    : reject(host, 'no-kvm', `template needs KVM, host runs ${host.status!.hypervisor}`),
  (host, need) => hasTemplate(host, need.template) ? undefined
    : reject(host, 'missing-template', `template "${need.template}" is not on this host`),
  // Free memory counts what in-flight placements will take, and keeps the host's reserve.
  (host, need, held) => {
    const free = host.status!.memory.freeMiB - held.memoryMiB;
    return free >= need.memoryMiB + need.reserveMiB ? undefined
      : reject(host, 'memory', `needs ${need.memoryMiB} MiB + ${need.reserveMiB} MiB reserve, ${Math.max(0, free)} MiB free`);
  },
  (host, need, held) => {
    const limit = host.status!.cpu.threads * need.overcommit;
    const after = host.status!.vms.vcpus + held.vcpus + need.vcpus;
    return after <= limit ? undefined
      : reject(host, 'vcpu', `${after} vCPUs would exceed ${limit} (${host.status!.cpu.threads} threads x ${need.overcommit})`);
  },
  (host, need, held) => {
    const free = host.status!.disk.freeGiB - held.diskGiB;
    return free >= need.diskGiB ? undefined
      : reject(host, 'disk', `needs ${need.diskGiB} GiB disk, ${Math.max(0, Math.floor(free * 10) / 10)} GiB free`);
  },
];

function hasTemplate(host: SchedulerHost, name: string): boolean {
  const templates = host.status!.templates;
  for (let i = 0; i < templates.length; i++) if (templates[i]!.name === name) return true;
  return false;
}

function reject(host: SchedulerHost, reason: Rejection['reason'], message: string): Rejection {
  return { host: host.id, reason, message };
}
