// `GET /status`: the original design's CPU, RAM and VM count plus what a scheduler needs. Everything
// slow (systeminformation, libvirt) is sampled in the background, so a poll only assembles cached values.
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import si from 'systeminformation';
import type { Logger } from '../base/log.ts';
import { VERSION } from '../base/version.ts';
import type { HostStatus, Hypervisor, TemplateInfo } from '../wire/api.ts';
import type { TemplateStore } from './templates.ts';
import type { VmManager } from './vms.ts';
import { versions } from './libvirt.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export interface StatusDeps {
  hostId: string;
  dataDir: string;
  hypervisor: Hypervisor;
  hypervisorReason?: string;
  vms: VmManager;
  templates: TemplateStore;
  log: Logger;
  /** Which controller this agent belongs to (agent/discovery/), for `/status`. */
  controller?: () => HostStatus['controller'];
  /** How often the background sample runs (default 5 s). */
  intervalMs?: number;
}

interface Sample {
  cpu: HostStatus['cpu'];
  memory: { totalMiB: number; freeMiB: number };
  disk: HostStatus['disk'];
  gpus: HostStatus['gpus'];
  templates: TemplateInfo[];
  libvirtVersion?: string;
  qemuVersion?: string;
  sampledAt: string;
}

export class StatusSampler {
  private readonly deps: StatusDeps;
  private sample: Sample;
  private timer: NodeJS.Timeout | undefined;
  private cpuModel = os.cpus()[0]?.model ?? 'unknown';
  private cores = os.cpus().length;
  private threads = os.cpus().length;
  private running: Promise<void> | undefined;

  constructor(deps: StatusDeps) {
    this.deps = deps;
    this.sample = {
      cpu: { model: this.cpuModel, cores: this.cores, threads: this.threads, loadPct: 0, load1: os.loadavg()[0] ?? 0 },
      memory: { totalMiB: Math.round(os.totalmem() / MiB), freeMiB: Math.round(os.freemem() / MiB) },
      disk: { path: deps.dataDir, totalGiB: 0, freeGiB: 0 },
      gpus: [],
      templates: [],
      sampledAt: new Date().toISOString(),
    };
  }

  /** Takes the first sample (with the slow, once-only facts: CPU model, GPUs, versions) and starts the timer. */
  async start(): Promise<void> {
    const [cpu, graphics, v] = await Promise.all([
      si.cpu().catch(() => undefined),
      si.graphics().catch(() => undefined),
      versions(),
    ]);
    if (cpu) {
      this.cpuModel = `${cpu.manufacturer} ${cpu.brand}`.trim() || this.cpuModel;
      this.cores = cpu.physicalCores || this.cores;
      this.threads = cpu.cores || this.threads;
    }
    this.sample.gpus = (graphics?.controllers ?? []).map((g) => ({
      vendor: g.vendor || 'unknown',
      model: g.model || 'unknown',
      ...(g.vram ? { vramMiB: g.vram } : {}),
    }));
    if (v.libvirt) this.sample.libvirtVersion = v.libvirt;
    if (v.qemu) this.sample.qemuVersion = v.qemu;
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.deps.intervalMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Samples now (also after a change the next poll should see at once, e.g. a template import). */
  refresh(): Promise<void> {
    this.running ??= this.takeSample().finally(() => (this.running = undefined));
    return this.running;
  }

  private async takeSample(): Promise<void> {
    try {
      const [load, mem, fs, templates] = await Promise.all([
        si.currentLoad().catch(() => undefined),
        si.mem().catch(() => undefined),
        statfs(this.deps.dataDir).catch(() => undefined),
        this.deps.templates.list(),
        this.deps.vms.refresh().catch((err: unknown) => this.deps.log.warn('could not read VM states from libvirt', { err })),
      ]);
      this.sample = {
        ...this.sample,
        cpu: {
          model: this.cpuModel,
          cores: this.cores,
          threads: this.threads,
          loadPct: Math.round((load?.currentLoad ?? 0) * 10) / 10,
          load1: os.loadavg()[0] ?? 0,
        },
        memory: mem
          ? { totalMiB: Math.round(mem.total / MiB), freeMiB: Math.round(mem.available / MiB) }
          : { totalMiB: Math.round(os.totalmem() / MiB), freeMiB: Math.round(os.freemem() / MiB) },
        disk: fs
          ? { path: this.deps.dataDir, totalGiB: round2((fs.blocks * fs.bsize) / GiB), freeGiB: round2((fs.bavail * fs.bsize) / GiB) }
          : this.sample.disk,
        templates,
        sampledAt: new Date().toISOString(),
      };
    } catch (err) {
      this.deps.log.warn('status sample failed', { err });
    }
  }

  /** The answer of `GET /status`, from the last sample and the VM manager's memory. */
  status(): HostStatus {
    const vmList = this.deps.vms.list();
    const running = vmList.filter((v) => v.state === 'running');
    const controller = this.deps.controller?.();
    return {
      hostId: this.deps.hostId,
      hostname: os.hostname(),
      version: VERSION,
      cpu: this.sample.cpu,
      memory: { ...this.sample.memory, usedByVmsMiB: this.deps.vms.memoryInUse() },
      disk: this.sample.disk,
      gpus: this.sample.gpus,
      vms: { running: running.length, total: vmList.length, vcpus: running.reduce((s, v) => s + v.vcpus, 0) },
      hypervisor: this.deps.hypervisor,
      ...(this.deps.hypervisorReason ? { hypervisorReason: this.deps.hypervisorReason } : {}),
      ...(this.sample.libvirtVersion ? { libvirtVersion: this.sample.libvirtVersion } : {}),
      ...(this.sample.qemuVersion ? { qemuVersion: this.sample.qemuVersion } : {}),
      templates: this.sample.templates,
      vmList,
      ...(controller ? { controller } : {}),
      uptimeS: Math.round(process.uptime()),
      sampledAt: this.sample.sampledAt,
    };
  }
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
