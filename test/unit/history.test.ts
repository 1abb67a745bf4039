// Each host's last hour of CPU and memory (server/hosts/history.ts): a ring per host, spaced samples.
import { expect } from 'chai';
import { HostHistory, sampleOf, type HostSample } from '../../server/hosts/history.ts';

const at = (s: number, cpu = 0.5): HostSample => ({ at: s * 1000, cpu, memoryUsedMiB: 1000, memoryTotalMiB: 4000 });

describe('host history', () => {
  describe('given polls every 10 s', () => {
    it('should keep the last hour, oldest first, and drop what is older', () => {
      const h = new HostHistory({ windowMs: 3_600_000, spacingMs: 10_000 });
      for (let s = 0; s <= 7200; s += 10) h.record('pc1', at(s, (s % 100) / 100));
      const series = h.series('pc1', 7200_000);
      expect(series[0]!.at).to.equal(3600_000);
      expect(series.at(-1)!.at).to.equal(7200_000);
      expect(series).to.have.length(361);
      expect(series.every((x, i) => i === 0 || x.at > series[i - 1]!.at)).to.equal(true);
    });
  });

  describe('given polls every second', () => {
    it('should keep one sample per 10 s slot, the newest poll of the slot, and still cover the hour', () => {
      const h = new HostHistory({ spacingMs: 10_000 });
      for (let s = 0; s < 3600; s++) h.record('pc1', at(s, s / 3600));
      const series = h.series('pc1', 3599_000);
      expect(series).to.have.length(360);
      expect(series[0]!.at).to.equal(9000);
      expect(series[1]!.at).to.equal(19_000);
      expect(series.at(-1)!.at).to.equal(3599_000);
    });
  });

  it('should keep hosts apart, answer nothing for an unknown host, and forget a removed one', () => {
    const h = new HostHistory();
    h.record('a', at(1));
    h.record('b', at(1, 0.9));
    expect(h.series('a', 2000).map((x) => x.cpu)).to.deep.equal([0.5]);
    expect(h.series('b', 2000).map((x) => x.cpu)).to.deep.equal([0.9]);
    expect(h.series('nobody')).to.deep.equal([]);
    h.forget('a');
    expect(h.series('a', 2000)).to.deep.equal([]);
  });

  it('should not keep a sample older than the window even when the ring has room', () => {
    const h = new HostHistory({ windowMs: 60_000, spacingMs: 10_000 });
    h.record('a', at(0));
    h.record('a', at(100));
    expect(h.series('a', 100_000).map((x) => x.at)).to.deep.equal([100_000]);
  });

  it('should turn a poll answer into a sample: CPU as a ratio within 0..1, memory used', () => {
    const status = { cpu: { loadPct: 140 }, memory: { totalMiB: 8000, freeMiB: 2000 } } as Parameters<typeof sampleOf>[0];
    expect(sampleOf(status, 5)).to.deep.equal({ at: 5, cpu: 1, memoryUsedMiB: 6000, memoryTotalMiB: 8000 });
  });
});
