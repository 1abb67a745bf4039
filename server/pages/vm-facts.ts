// What the VM page adds to the VM's record: whether its template has an SSH server (the SSH line shows
// only then, and says how to get in when no key was given), and what the VM uses now, from its host's
// last poll (the agent's per-VM figures: wire/vm.ts VmInfo.usage).
import type { VmView } from '../../wire/api.ts';
import type { ControllerServices } from '../services.ts';
import { pct } from './render.ts';

export interface VmFacts {
  /** The template says it runs an SSH server. */
  sshServer: boolean;
  /** The VM's usage at its host's last poll, each figure when the host reports it. */
  usage?: { cpu?: { percent: number } | undefined; memory?: { usedMiB: number; percent: number } | undefined } | undefined;
}

export function vmFacts(services: ControllerServices, vm: VmView): { facts: VmFacts } {
  const reported = vm.state === 'running'
    ? services.hosts.record(vm.host)?.status?.vmList.find((v) => v.id === vm.id)?.usage : undefined;
  const usage = reported && (reported.cpuRatio !== undefined || reported.memoryUsedMiB !== undefined) ? {
    cpu: reported.cpuRatio !== undefined ? { percent: Math.round(reported.cpuRatio * 100) } : undefined,
    memory: reported.memoryUsedMiB !== undefined ? { usedMiB: reported.memoryUsedMiB, percent: pct(reported.memoryUsedMiB, vm.memoryMiB) } : undefined,
  } : undefined;
  return { facts: { sshServer: services.templates.find(vm.template)?.ssh === true, usage } };
}
