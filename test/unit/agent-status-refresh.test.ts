// The agent's status sampler: a refresh asked for while a sample runs (a template just installed by a
// pull) is answered by a sample taken after it, never by the one under way, which may have listed
// the templates before the install. Stand-ins for the sampler's sources; only the order is tested.
import { expect } from 'chai';
import { Logger } from '../../base/log.ts';
import { StatusSampler, type StatusDeps } from '../../agent/status.ts';
import type { TemplateInfo } from '../../wire/api.ts';
import { simTemplate } from '../support/sim-agent.ts';

describe('agent status: refresh while a sample runs', () => {
  it('takes one more sample after the running one, so a template installed meanwhile is listed', async () => {
    const installed: TemplateInfo[] = [];
    let release: (() => void) | undefined;
    let lists = 0;
    const templates = {
      // the first listing is slow and reads the folder at once (before the install below)
      list: async () => {
        lists++;
        const seen = [...installed];
        if (lists === 1) await new Promise<void>((resolve) => (release = resolve));
        return seen;
      },
    };
    const vms = { list: () => [], memoryInUse: () => 0, refresh: async () => {}, usage: { sample: async () => {} }, vms: new Map() };
    const deps = {
      hostId: 'h1', accel: 'tcg', hypervisor: {}, log: new Logger('test'), templates, vms,
      resources: { sample: async () => ({ load: { loadPct: 0, load1: 0 }, memory: { totalMiB: 1, freeMiB: 1 } }) },
    } as unknown as StatusDeps;
    const sampler = new StatusSampler(deps);
    const first = sampler.refresh();
    await new Promise((r) => setImmediate(r));
    installed.push(simTemplate('pulled'));
    const afterInstall = sampler.refresh();
    expect(sampler.refresh(), 'a third ask joins the one queued').to.equal(afterInstall);
    release!();
    await first;
    await afterInstall;
    expect(sampler.status().templates.map((t) => t.name)).to.deep.equal(['pulled']);
    expect(lists).to.equal(2);
  });
});
