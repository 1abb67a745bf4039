// agent/resources.ts on this machine: the CPU load is the busy share of the kernel's counters since the last sample.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { logger } from '../../base/log.ts';
import { SystemResources } from '../../agent/resources.ts';

describe('SystemResources', () => {
  it('samples the CPU load as a percentage of the time since the last sample, and the data folder\'s disk', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skyhost-resources-'));
    try {
      const resources = new SystemResources(dir, logger('test'));
      await resources.sample();
      const until = Date.now() + 100;
      while (Date.now() < until); // this core busy: the next sample sees some load
      const s = await resources.sample();
      expect(s.load.loadPct).to.be.greaterThan(0).and.at.most(100);
      expect(s.memory.totalMiB).to.be.greaterThan(0);
      expect(s.disk?.path).to.equal(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
