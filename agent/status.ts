// `GET /status`: the original design's CPU, RAM and VM count plus what a scheduler needs. Everything
// slow (the machine's resources, the hypervisor) is sampled in the background, so a poll only
// assembles cached values.
import type { Logger } from '../base/log.ts';
import { VERSION } from '../base/version.ts';
import type { HostStatus, Hypervisor as Accel, TemplateInfo } from '../wire/api.ts';
import { macTowards } from './discovery/mac.ts';
import type { Hypervisor } from './hypervisor/driver.ts';
import type { HostFacts, HostResources, HostSample } from './resources.ts';
import type { TemplateCatalog } from './templates.ts';
import type { VmManager } from './vms/manager.ts';

export interface StatusDeps {
  hostId: string;
  /** How this host runs VMs: kvm, tcg (software) or none. */
  accel: Accel;
  accelReason?: string;
  hypervisor: Hypervisor;
  resources: HostResources;
  vms: VmManager;
  templates: TemplateCatalog;
  log: Logger;
  /** Which controller this agent belongs to (agent/discovery/), for `/status`. */
  controller?: () => HostStatus['controller'];
  /** How often the background sample runs (default 5 s). */
  intervalMs?: number;
}

interface Sample extends HostSample {
  templates: TemplateInfo[];
  sampledAt: string;
  /** The MAC of the interface towards the controller (Wake-on-LAN). */
  mac?: string | undefined;
}

export class StatusSampler {
  private readonly deps: StatusDeps;
  private facts: HostFacts = { hostname: 'unknown', cpu: { model: 'unknown', cores: 1, threads: 1 }, gpus: [] };
  private versions: { libvirtVersion?: string; qemuVersion?: string } = {};
  private sample: Sample = {
    load: { loadPct: 0, load1: 0 },
    memory: { totalMiB: 0, freeMiB: 0 },
    templates: [],
    sampledAt: new Date().toISOString(),
  };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** The sample that follows the running one (asked for while it ran). */
  private next: Promise<void> | undefined;
  private readonly startedAt = Date.now();

  constructor(deps: StatusDeps) {
    this.deps = deps;
  }

  /** Takes the first sample (with the once-only facts: CPU model, GPUs, versions) and starts the timer. */
  async start(): Promise<void> {
    const [facts, v] = await Promise.all([this.deps.resources.facts(), this.deps.hypervisor.versions()]);
    this.facts = facts;
    this.versions = { ...(v.libvirt ? { libvirtVersion: v.libvirt } : {}), ...(v.qemu ? { qemuVersion: v.qemu } : {}) };
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.deps.intervalMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Samples now (also after a change the next poll should see at once, e.g. a template import); never rejects. */
  refresh(): Promise<void> {
    if (this.running) {
      // the sample under way may have read the templates before the caller's change: one more follows it
      this.next ??= this.running.then(() => {
        this.next = undefined;
        return this.refresh();
      });
      return this.next;
    }
    this.running = this.takeSample().finally(() => (this.running = undefined));
    return this.running;
  }

  private async takeSample(): Promise<void> {
    try {
      const controllerUrl = this.deps.controller?.()?.url;
      const [now, templates, mac] = await Promise.all([
        this.deps.resources.sample(),
        this.deps.templates.list(),
        controllerUrl ? macTowards(controllerUrl).catch((err: unknown) => void this.deps.log.warn('cannot read the MAC address towards the controller', { err })) : undefined,
        this.deps.vms.refresh().catch((err: unknown) => this.deps.log.warn('could not read VM states from the hypervisor', { err })),
        this.deps.vms.usage.sample(this.deps.hypervisor, (id) => this.deps.vms.vms.get(id)?.metadata.vcpus)
          .catch((err: unknown) => this.deps.log.warn('could not read the VMs\' CPU and memory from the hypervisor', { err })),
      ]);
      this.sample = { ...now, disk: now.disk ?? this.sample.disk, templates, sampledAt: new Date().toISOString(), mac };
    } catch (err) {
      this.deps.log.warn('status sample failed', { err });
    }
  }

  /** The answer of `GET /status`, from the last sample and the VM manager's memory. */
  status(): HostStatus {
    const vmList = this.deps.vms.list();
    let running = 0;
    let vcpus = 0;
    for (const v of vmList) {
      if (v.state !== 'running') continue;
      running += 1;
      vcpus += v.vcpus;
    }
    const controller = this.deps.controller?.();
    const s = this.sample;
    return {
      hostId: this.deps.hostId,
      hostname: this.facts.hostname,
      version: VERSION,
      cpu: { ...this.facts.cpu, ...s.load },
      memory: { ...s.memory, usedByVmsMiB: this.deps.vms.memoryInUse() },
      disk: s.disk ?? { path: 'unknown', totalGiB: 0, freeGiB: 0 },
      gpus: this.facts.gpus,
      vms: { running, total: vmList.length, vcpus },
      hypervisor: this.deps.accel,
      ...(this.deps.accelReason ? { hypervisorReason: this.deps.accelReason } : {}),
      ...this.versions,
      templates: s.templates,
      vmList,
      ...(controller ? { controller } : {}),
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      ...(s.mac ? { mac: s.mac } : {}),
      sampledAt: s.sampledAt,
    };
  }
}
