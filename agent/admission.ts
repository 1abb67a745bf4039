// The checks a VM request must pass on a host before anything is created: one pure function, so the
// real agent and the simulated agent (test/support/sim-agent.ts) answer a request the same way. The
// template's rules are the scheduler's own (wire/placement.ts): a refusal's code is the reason the
// controller gives for leaving a host out, e.g. 409 `no_kvm`.
import { Conflict, SkyError } from '../base/errors.ts';
import { templateRuleFailed, type Hypervisor, type TemplateAsk, type TemplateInfo, type TemplateRule, type VmCreate } from '../wire/api.ts';
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
  const t = host.template;
  // A template this host lacks demands nothing: `missing_template` names the problem.
  const ask: TemplateAsk = {
    template: req.template,
    memoryMiB: req.memoryMiB,
    diskGiB: req.diskGiB,
    needsKvm: t?.needsKvm ?? false,
    minMemoryMiB: t?.minMemoryMiB ?? 0,
    templateDiskGiB: diskGiB(t),
    isoTemplate: t?.kind === 'iso',
  };
  const failed = templateRuleFailed(ask, { hypervisor: host.hypervisor, templates: t ? [t] : [] });
  if (failed) throw refusal(failed, ask);
  parseUserData(req.userData);
  if (req.id && host.ids.has(req.id)) throw new Conflict(`VM ${req.id} already exists`);
  for (const name of host.names) if (name === req.name) throw new Conflict(`a VM named ${req.name} already exists on this host`);
  return t!; // `missing_template` passed: the host has it
}

/** The error for a failed template rule: its reason as the code; a field at fault is named as in a 422. */
function refusal(rule: TemplateRule, ask: TemplateAsk): SkyError {
  const message = rule.message(ask);
  if (!rule.field) return new SkyError(rule.status, rule.reason, message);
  return new SkyError(rule.status, rule.reason, `${rule.field}: ${message}`, { fields: [{ field: rule.field, message }] });
}

/** The size of the template's disk image as the guest sees it, in GiB (e.g. 2.5), if it has one. */
function diskGiB(t: TemplateInfo | undefined): number | undefined {
  const bytes = t?.files.find((f) => f.role === 'disk')?.virtualBytes;
  return bytes ? bytes / GiB : undefined;
}
