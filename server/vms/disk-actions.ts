// A VM's disk and its template, through the VM's host: "save as template" (the stopped VM's disk
// flattened into a new template on that host) and "reset to template" (a fresh disk; same name, MAC
// and address). The owner or an admin may do either; another user's VM is a 404. A saved template is
// then copied into the controller's catalog (every file from the host, sha256 checked: a kernel
// template's kernel, initrd and disk too), so every host can pull it.
// Also the request rule of installer ISOs, which the scheduler cannot check (it is always given a size).
import { Conflict, SkyError, toSkyError } from '../../base/errors.ts';
import type { Logger } from '../../base/log.ts';
import { REQUEST_TEMPLATE_RULES, type TemplateInfo, type VmSaveAsTemplateRequest, type VmView } from '../../wire/api.ts';
import type { HostRecord, HostRegistry } from '../hosts/registry.ts';
import type { Templates } from '../templates/templates.ts';
import type { User } from '../users/users.ts';
import type { VmRecord, VmService } from './vms.ts';

export interface DiskActionDeps {
  vms: VmService;
  hosts: HostRegistry;
  templates: Templates;
  log: Logger;
}

/** What `POST /api/vms/:id/save-as-template` answers: the template and the host that holds it. */
export interface SavedTemplate {
  template: TemplateInfo;
  /** The host that made it and holds its files. */
  host: { id: string; hostname: string };
  /** Whether the controller's catalog holds it too (then any host can pull it). */
  catalog: boolean;
  /** Why it is not in the catalog, e.g. `it could not be copied into the controller's catalog (...)`. */
  catalogNote?: string;
}

/** The VM and its live host, refusing a VM that is being created or deleted (409). */
function target(d: DiskActionDeps, user: User, id: string, doing: string): { vm: VmRecord; host: HostRecord } {
  const { vm, host } = d.vms.consoleTarget(user, id);
  if (vm.state === 'creating' || vm.state === 'deleting') throw new Conflict(`VM ${vm.name} is ${vm.state}: ${doing} it once it is up`);
  return { vm, host };
}

/** The agent's refusal keeps its words (and a 422 its fields); a failure on the host loses its details (they go to the log). */
function fromAgent(d: DiskActionDeps, err: unknown, host: HostRecord, what: string): SkyError {
  const sky = toSkyError(err);
  if (sky.status < 500) return sky;
  d.log.warn(`${what} failed on ${host.hostname}: ${sky.message}`, { hostId: host.id, code: sky.code, details: sky.details });
  if (sky.code === 'command_failed') return new SkyError(sky.status, sky.code, `host ${host.hostname} could not ${what}: a command failed there (the event log has its output)`);
  return new SkyError(sky.status, sky.code, sky.message);
}

/** Saves a stopped VM as a new template on its host (409 while it runs; 409 naming `name` when taken). */
export async function saveVmAsTemplate(d: DiskActionDeps, user: User, id: string, body: VmSaveAsTemplateRequest): Promise<SavedTemplate> {
  const { vm, host } = target(d, user, id, 'save');
  // names are the cluster's: a template of this name on another host or in the catalog is taken too
  if (d.templates.find(body.name)) {
    throw new Conflict(`template ${body.name} already exists: choose another name`, { fields: [{ field: 'name', message: 'already in use' }] });
  }
  let template: TemplateInfo;
  try {
    template = await d.hosts.client(host.id).saveVmAsTemplate(vm.id, body);
  } catch (err) {
    throw fromAgent(d, err, host, `save VM ${vm.name} as a template`);
  }
  d.log.info(`VM ${vm.name} saved as template ${template.name} on ${host.hostname} by ${user.name}`, { vmId: vm.id, hostId: host.id });
  const catalogNote = await intoCatalog(d, host, template);
  // the next list of templates shows it
  await d.hosts.pollOne(host).catch((err: unknown) => d.log.warn(`could not poll ${host.hostname} after a save as template`, { hostId: host.id, err }));
  return { template, host: { id: host.id, hostname: host.hostname }, catalog: catalogNote === undefined, ...(catalogNote ? { catalogNote } : {}) };
}

/** Copies a saved template from its host into the catalog; answers why not when it did not (the template stays on its host either way). */
async function intoCatalog(d: DiskActionDeps, host: HostRecord, t: TemplateInfo): Promise<string | undefined> {
  try {
    await d.templates.copyFromHost(host.id, t);
    return undefined;
  } catch (err) {
    const sky = toSkyError(err);
    d.log.warn(`template ${t.name} saved on ${host.hostname} could not be copied into the catalog: ${sky.message}`, { hostId: host.id, code: sky.code });
    return `it could not be copied into the controller's catalog (${sky.message}): it is on ${host.hostname} only`;
  }
}

/** Resets a VM to its template (a running VM is restarted); the record follows the host's answer. */
export async function resetVm(d: DiskActionDeps, user: User, id: string): Promise<VmView> {
  const { vm, host } = target(d, user, id, 'reset');
  try {
    await d.hosts.client(host.id).resetVm(vm.id);
  } catch (err) {
    throw fromAgent(d, err, host, `reset VM ${vm.name}`);
  }
  d.log.info(`VM ${vm.name} reset to template ${vm.template} by ${user.name}`, { vmId: vm.id, hostId: host.id });
  // the poll brings the record in step with the host (its state after the reset)
  await d.hosts.pollOne(host).catch((err: unknown) => d.log.warn(`could not poll ${host.hostname} after a reset`, { hostId: host.id, err }));
  return d.vms.get(user, vm.id);
}

/**
 * 422 naming `diskGiB` when a VM of an installer ISO (template kind `iso`) asks no disk size: the rule
 * of wire/placement.ts, checked before placing (the scheduler is given a size either way).
 */
export function diskSizeRefusal(template: string, kind: string | undefined, diskGiB: number | undefined): SkyError | undefined {
  const rule = REQUEST_TEMPLATE_RULES.find((r) => r.reason === 'disk_size_required')!;
  const ask = { template, memoryMiB: 0, diskGiB, needsKvm: false, minMemoryMiB: 0, isoTemplate: kind === 'iso' };
  if (rule.test(ask)) return undefined;
  const message = rule.message(ask);
  return new SkyError(rule.status, rule.reason, `diskGiB: ${message}`, { fields: [{ field: 'diskGiB', message }] });
}
