// Each running VM's CPU and memory, from the hypervisor's counters (Hypervisor.stats) sampled with the
// host's status: CPU busy is the CPU time between two samples over the time between them, per vCPU.
import type { VmInfo } from '../wire/api.ts';
import type { Hypervisor } from './hypervisor/driver.ts';

type Usage = NonNullable<VmInfo['usage']>;

export class VmUsage {
  private previous = new Map<string, { at: number; cpuTimeNs: number }>();
  private current = new Map<string, Usage>();

  /** Reads every running VM's counters once; `vcpusOf` gives a VM's vCPUs (its share is per vCPU). */
  async sample(hv: Hypervisor, vcpusOf: (id: string) => number | undefined, now = performance.now()): Promise<void> {
    const stats = await hv.stats();
    const previous = new Map<string, { at: number; cpuTimeNs: number }>();
    const current = new Map<string, Usage>();
    for (const [id, s] of stats) {
      previous.set(id, { at: now, cpuTimeNs: s.cpuTimeNs });
      const before = this.previous.get(id);
      const vcpus = Math.max(1, vcpusOf(id) ?? 1);
      // a restarted VM's counter starts again from 0: no rate from that pair
      const cpuRatio = before && now > before.at && s.cpuTimeNs >= before.cpuTimeNs
        ? Math.min(1, (s.cpuTimeNs - before.cpuTimeNs) / ((now - before.at) * 1e6 * vcpus)) : undefined;
      const usage: Usage = { ...(cpuRatio !== undefined ? { cpuRatio: Math.round(cpuRatio * 1000) / 1000 } : {}), ...(s.memoryUsedMiB !== undefined ? { memoryUsedMiB: s.memoryUsedMiB } : {}) };
      if (Object.keys(usage).length > 0) current.set(id, usage);
    }
    this.previous = previous;
    this.current = current;
  }

  /** The VM's usage at the last sample (none: not running then, or the hypervisor had no figure). */
  of(id: string): Usage | undefined {
    return this.current.get(id);
  }
}
