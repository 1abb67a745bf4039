// Per-VM CPU and memory: libvirt's `virsh domstats` read into counters, and counters into a busy share.
import { expect } from 'chai';
import type { Hypervisor, VmStats } from '../../agent/hypervisor/driver.ts';
import { parseDomstats } from '../../agent/hypervisor/libvirt/libvirt.ts';
import { VmUsage } from '../../agent/vm-usage.ts';

describe('per-VM stats', () => {
  it('should read virsh domstats: CPU time, the guest\'s memory figure when it has one, else QEMU\'s resident memory', () => {
    const out = [
      "Domain: 'sky-ab12cd34-vm1'",
      '  state.state=1',
      '  cpu.time=6173016809079',
      '  cpu.user=100000000',
      '  balloon.current=262144',
      '  balloon.last-update=0',
      '  balloon.rss=180224',
      '',
      "Domain: 'sky-ab12cd34-vm2'",
      '  cpu.time=42',
      '  balloon.available=1000000',
      '  balloon.unused=488000',
      '  balloon.rss=900000',
      "Domain: 'other'",
      '  cpu.time=1',
    ].join('\n');
    expect(Object.fromEntries(parseDomstats(out))).to.deep.equal({
      'sky-ab12cd34-vm1': { cpuTimeNs: 6173016809079, memoryUsedMiB: 176 },
      'sky-ab12cd34-vm2': { cpuTimeNs: 42, memoryUsedMiB: 500 },
      other: { cpuTimeNs: 1 },
    });
  });

  it('should give a VM\'s CPU busy per vCPU between two samples, none on the first or after a restart', async () => {
    let stats = new Map<string, VmStats>([['a', { cpuTimeNs: 0, memoryUsedMiB: 100 }], ['b', { cpuTimeNs: 5e9 }]]);
    const hv = { stats: async () => stats } as unknown as Hypervisor;
    const usage = new VmUsage();
    const vcpus = (id: string) => (id === 'a' ? 2 : 1);
    await usage.sample(hv, vcpus, 1000);
    expect(usage.of('a')).to.deep.equal({ memoryUsedMiB: 100 });
    expect(usage.of('b')).to.equal(undefined);
    // 10 s later: a used 5 s of CPU on 2 vCPUs (25%); b restarted (its counter went back)
    stats = new Map([['a', { cpuTimeNs: 5e9, memoryUsedMiB: 120 }], ['b', { cpuTimeNs: 1e9 }]]);
    await usage.sample(hv, vcpus, 11_000);
    expect(usage.of('a')).to.deep.equal({ cpuRatio: 0.25, memoryUsedMiB: 120 });
    expect(usage.of('b')).to.equal(undefined);
    // a stopped VM is in no sample: it has no usage
    stats = new Map([['b', { cpuTimeNs: 3e9 }]]);
    await usage.sample(hv, vcpus, 21_000);
    expect(usage.of('a')).to.equal(undefined);
    expect(usage.of('b')).to.deep.equal({ cpuRatio: 0.2 });
  });
});
