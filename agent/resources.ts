// What this machine has and uses, for `GET /status`: CPU, GPUs, memory, the data folder's disk.
// SystemResources reads the real machine (systeminformation, statfs); the simulated agent brings its own.
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import si from 'systeminformation';
import type { Logger } from '../base/log.ts';
import type { HostStatus } from '../wire/api.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** What does not change while the agent runs. */
export interface HostFacts {
  hostname: string;
  cpu: { model: string; cores: number; threads: number };
  gpus: HostStatus['gpus'];
}

/** What changes, sampled in the background. */
export interface HostSample {
  load: { loadPct: number; load1: number };
  memory: { totalMiB: number; freeMiB: number };
  /** Undefined when it could not be read (the last reading stays). */
  disk?: HostStatus['disk'];
}

export interface HostResources {
  facts(): Promise<HostFacts>;
  sample(): Promise<HostSample>;
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Busy and total CPU time of all cores so far (ms), from the kernel's counters. */
function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times: t } of os.cpus()) {
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

/** This machine, as systeminformation and the kernel see it. */
export class SystemResources implements HostResources {
  private readonly dataDir: string;
  private readonly log: Logger;
  /** The CPU counters at the last sample: the load is the busy share since then (since boot at first). */
  private lastCpu = { busy: 0, total: 0 };

  constructor(dataDir: string, log: Logger) {
    this.dataDir = dataDir;
    this.log = log;
  }

  /** A reading that failed: logged once at debug (it repeats every sample), and `fallback` used. */
  private async read<T>(what: string, p: Promise<T>, fallback: T): Promise<T> {
    try {
      return await p;
    } catch (err) {
      this.log.debug(`could not read ${what}: using what the kernel says instead`, { err });
      return fallback;
    }
  }

  async facts(): Promise<HostFacts> {
    const cpus = os.cpus();
    const [cpu, graphics] = await Promise.all([
      this.read('the CPU model', si.cpu(), undefined),
      this.read('the graphics cards', si.graphics(), undefined),
    ]);
    return {
      hostname: os.hostname(),
      cpu: {
        model: (cpu && `${cpu.manufacturer} ${cpu.brand}`.trim()) || cpus[0]?.model || 'unknown',
        cores: cpu?.physicalCores || cpus.length,
        threads: cpu?.cores || cpus.length,
      },
      gpus: (graphics?.controllers ?? []).map((g) => ({ vendor: g.vendor || 'unknown', model: g.model || 'unknown', ...(g.vram ? { vramMiB: g.vram } : {}) })),
    };
  }

  async sample(): Promise<HostSample> {
    // Not si.currentLoad(): it runs `cat /proc/stat` with execSync, blocking the agent's requests for up to 100 ms.
    const cpu = cpuTimes();
    const loadPct = cpu.total > this.lastCpu.total ? (100 * (cpu.busy - this.lastCpu.busy)) / (cpu.total - this.lastCpu.total) : 0;
    this.lastCpu = cpu;
    const [mem, fs] = await Promise.all([
      this.read('the memory', si.mem(), undefined),
      this.read(`the disk of ${this.dataDir}`, statfs(this.dataDir), undefined),
    ]);
    return {
      load: { loadPct: Math.round(loadPct * 10) / 10, load1: os.loadavg()[0] ?? 0 },
      memory: mem
        ? { totalMiB: Math.round(mem.total / MiB), freeMiB: Math.round(mem.available / MiB) }
        : { totalMiB: Math.round(os.totalmem() / MiB), freeMiB: Math.round(os.freemem() / MiB) },
      ...(fs ? { disk: { path: this.dataDir, totalGiB: round2((fs.blocks * fs.bsize) / GiB), freeGiB: round2((fs.bavail * fs.bsize) / GiB) } } : {}),
    };
  }
}
