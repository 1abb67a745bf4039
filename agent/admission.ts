// The checks a VM request must pass on a host before anything is created: one pure function, so the
// real agent and the simulated agent (test/support/sim-agent.ts) answer a request the same way.
import { Conflict, InvalidField, SkyError, Unavailable } from '../base/errors.ts';
import type { Hypervisor, TemplateInfo, VmCreate } from '../wire/api.ts';
import { parseUserData } from './seed.ts';

const GiB = 1024 ** 3;

export interface HostView {
  hypervisor: Hypervisor;
  /** The template the request names, if this host has it. */
  template: TemplateInfo | undefined;
  /** Ids and names of the VMs this host already has. */
  ids: ReadonlySet<string>;
  names: Iterable<string>;
}

/** Throws the error a request gets on this host, or returns the template it will use. */
export function admitVm(req: VmCreate, host: HostView): TemplateInfo {
  if (host.hypervisor === 'none') throw new Unavailable('this host cannot run VMs: QEMU does not work here (run skyhost host setup)');
  const t = host.template;
  if (!t) throw new InvalidField('template', `no template "${req.template}" on this host`);
  if (t.needsKvm && host.hypervisor !== 'kvm') {
    throw new SkyError(409, 'needs_kvm',
      `template ${t.name} needs hardware acceleration (KVM), but this host runs QEMU in software (TCG): choose a host with KVM or a lighter template`);
  }
  if (req.memoryMiB < t.minMemoryMiB) throw new InvalidField('memoryMiB', `template ${t.name} needs at least ${t.minMemoryMiB} MiB`);
  const disk = t.files.find((f) => f.role === 'disk');
  if (req.diskGiB !== undefined && disk?.virtualBytes && req.diskGiB * GiB < disk.virtualBytes) {
    throw new InvalidField('diskGiB', `must be at least the template's size (${Math.ceil(disk.virtualBytes / GiB)} GiB)`);
  }
  parseUserData(req.userData);
  if (req.id && host.ids.has(req.id)) throw new Conflict(`VM ${req.id} already exists`);
  for (const name of host.names) if (name === req.name) throw new Conflict(`a VM named ${req.name} already exists on this host`);
  return t;
}
