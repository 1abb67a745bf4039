// Whether a host can take a VM request, by the template's rules: one list and one set of reason codes
// for the controller's scheduler (which leaves the host out, server/scheduler) and for the agent (which
// refuses the request, agent/admission.ts). Codes are snake_case like every error code of the API.
import type { Hypervisor } from './api.ts';

/**
 * Why a host cannot take a VM request. The scheduler gives one per host it leaves out
 * (`rejected[].reason`); the agent refuses with the same code (`error.code`).
 */
export type PlacementReason =
  // The registry's view of the host and its last poll (scheduler only).
  | 'not_ready'
  | 'not_polled'
  // The template's rules (TEMPLATE_RULES below: scheduler and agent).
  | 'no_hypervisor'
  | 'no_kvm'
  | 'missing_template'
  | 'memory_below_template'
  | 'disk_below_template'
  | 'disk_size_required'
  // Room left on the host, counting the placements in flight (scheduler only).
  | 'memory'
  | 'vcpu'
  | 'disk'
  // A host lacking the template would pull it first, but its disk has no room for it (scheduler only).
  | 'no_room_for_template';

/** A VM request as the template rules read it: what it asks, and what its template demands. */
export interface TemplateAsk {
  /** The template named, e.g. `alpine`. */
  template: string;
  memoryMiB: number;
  /** The disk asked for; undefined: the template's own size. */
  diskGiB?: number | undefined;
  /** The template refuses TCG (a desktop). */
  needsKvm: boolean;
  /** The template's minimum memory, e.g. 128. */
  minMemoryMiB: number;
  /** The template's disk size as the guest sees it, e.g. 2.5; undefined when not known. */
  templateDiskGiB?: number | undefined;
  /** The template is an installer ISO: the VM's disk starts empty, so its size must be asked for. */
  isoTemplate?: boolean | undefined;
}

/** A host as the template rules read it: a scheduler's polled status or the agent's own view. */
export interface TemplateHost {
  hypervisor: Hypervisor;
  templates: ReadonlyArray<{ readonly name: string }>;
}

export interface TemplateRule {
  reason: PlacementReason;
  /** True when `host` may take the request. */
  test(ask: TemplateAsk, host: TemplateHost): boolean;
  /** Why not, in one sentence for the page and the API; it reads only the request, never the host. */
  message(ask: TemplateAsk): string;
  /** How the agent refuses: the HTTP status, and the request field at fault if any. */
  status: number;
  field?: 'template' | 'memoryMiB' | 'diskGiB';
}

/** The template's rules that read the host (its hypervisor and templates), in the order they are checked. */
export const HOST_TEMPLATE_RULES: readonly TemplateRule[] = [
  // QEMU does not run on the host at all: it can take no VM whatever the template.
  {
    reason: 'no_hypervisor',
    test: (_ask, host) => host.hypervisor !== 'none',
    message: () => 'the host cannot run VMs: QEMU does not work there (run skyhost host setup on it)',
    status: 503,
  },
  // A desktop on TCG is unusably slow: templates that need KVM go only to KVM hosts.
  {
    reason: 'no_kvm',
    test: (ask, host) => !ask.needsKvm || host.hypervisor === 'kvm',
    message: (ask) => `template "${ask.template}" needs hardware acceleration (KVM), the host runs QEMU in software (TCG)`,
    status: 409,
  },
  {
    reason: 'missing_template',
    test: (ask, host) => hasTemplate(host, ask.template),
    message: (ask) => `no template "${ask.template}" on this host`,
    status: 422,
    field: 'template',
  },
];

/** A template rule that reads only the request against its template: the same answer on every host. */
export interface RequestRule extends Omit<TemplateRule, 'test'> {
  test(ask: TemplateAsk): boolean;
}

/** The template's rules that read only the request, in order; the scheduler checks them once per request. */
export const REQUEST_TEMPLATE_RULES: readonly RequestRule[] = [
  // The controller raises the request to the minimum first (effectiveMemory), so only a direct call to an agent fails here.
  {
    reason: 'memory_below_template',
    test: (ask) => ask.memoryMiB >= ask.minMemoryMiB,
    message: (ask) => `template "${ask.template}" needs at least ${ask.minMemoryMiB} MiB of memory`,
    status: 422,
    field: 'memoryMiB',
  },
  // The VM's disk is an overlay on the template's image: it cannot be smaller than the image.
  {
    reason: 'disk_below_template',
    test: (ask) => ask.diskGiB === undefined || ask.templateDiskGiB === undefined || ask.diskGiB >= ask.templateDiskGiB,
    message: (ask) => `template "${ask.template}" needs a disk of at least ${Math.ceil(ask.templateDiskGiB ?? 0)} GiB`,
    status: 422,
    field: 'diskGiB',
  },
  // An installer ISO brings no disk: the VM gets an empty one of the size asked for.
  {
    reason: 'disk_size_required',
    test: (ask) => !ask.isoTemplate || ask.diskGiB !== undefined,
    message: (ask) => `template "${ask.template}" is an installer ISO: give the size of the empty disk to install onto`,
    status: 422,
    field: 'diskGiB',
  },
];

/** Every template rule, in the order the agent checks them: the first that fails names the reason. */
export const TEMPLATE_RULES: readonly TemplateRule[] = [...HOST_TEMPLATE_RULES, ...REQUEST_TEMPLATE_RULES];

/** The first template rule `ask` fails on `host`, or undefined when the host may take it. */
export function templateRuleFailed(ask: TemplateAsk, host: TemplateHost): TemplateRule | undefined {
  return TEMPLATE_RULES.find((rule) => !rule.test(ask, host));
}

/** Whether `host` lists the template `name`. */
export function hasTemplate(host: TemplateHost, name: string): boolean {
  const templates = host.templates;
  // An indexed loop: `for...of` here cost a tenth of a scheduling decision (an iterator per host).
  for (let i = 0; i < templates.length; i++) if (templates[i]!.name === name) return true;
  return false;
}
