// Copy to all hosts, the controller's side: the plan's chains and when each host is asked to pull. The
// hosts here are records with a stand-in client that answers a pull request late; the transfer itself
// (real agents relaying to each other) is test/integration/template-distribution.test.ts.
import { expect } from 'chai';
import { configureLogging, Logger } from '../../base/log.ts';
import type { Store } from '../../server/db/store.ts';
import type { HostRecord, HostRegistry } from '../../server/hosts/registry.ts';
import { TemplateDistributor } from '../../server/templates/distribute.ts';
import type { PullProgress, PullRequest, TemplateInfo } from '../../wire/api.ts';

const template: TemplateInfo = {
  name: 'room', kind: 'disk', os: 'test', files: [{ file: 'disk.raw', role: 'disk', bytes: 1000, sha256: 'a'.repeat(64), format: 'raw' }],
} as TemplateInfo;

function host(id: string, templates: TemplateInfo[]): HostRecord {
  return {
    id, hostname: id, agentUrl: `http://${id}:8081`, agentKey: `key-${id}-0123456789`, state: 'ready', version: 'test', enrolledAt: '2026-12-01T00:00:00Z',
    drained: false, missedPolls: 0, status: { templates } as unknown as HostRecord['status'],
  };
}

describe('copy to all hosts (controller)', () => {
  before(() => configureLogging({ out: () => {} }));
  after(() => configureLogging({ out: (line) => process.stderr.write(line + '\n') }));

  it('asks every host of a chain at once, each pulling from its predecessor first', async () => {
    const hosts = [host('seed', [template]), ...['t1', 't2', 't3', 't4'].map((id) => host(id, []))];
    const asked: { host: string; at: number; sources: string[] }[] = [];
    const answered: number[] = [];
    const registry = {
      on: () => undefined,
      records: () => hosts,
      record: (id: string) => hosts.find((h) => h.id === id),
      require: (id: string) => hosts.find((h) => h.id === id)!,
      pollOne: async () => undefined,
      client: (id: string) => ({
        // A host that answers its pull request after 300 ms (a busy machine).
        pullTemplate: async (body: PullRequest): Promise<PullProgress> => {
          asked.push({ host: id, at: Date.now(), sources: body.sources.map((s) => new URL(s.url).hostname) });
          await new Promise((r) => setTimeout(r, 300));
          answered.push(Date.now());
          return { name: body.manifest.name, state: 'pulling', doneBytes: 0, totalBytes: 1000 };
        },
        pullProgress: async (name: string): Promise<PullProgress> => ({ name, state: 'done', doneBytes: 1000, totalBytes: 1000 }),
      }),
    } as unknown as HostRegistry;
    const store = { get: () => undefined, run: () => undefined } as unknown as Store;
    const distribute = new TemplateDistributor({ registry, store, log: new Logger('test') });
    const { done, ...plan } = distribute.copyToAll('room');
    expect(plan).to.deep.equal({
      template: 'room', skipped: ['seed'],
      chains: [[{ host: 't1', from: 'seed' }, { host: 't2', from: 't1' }, { host: 't3', from: 't2' }, { host: 't4', from: 't3' }]],
    });
    expect(distribute.underWay().map((u) => u.host).sort()).to.deep.equal(['t1', 't2', 't3', 't4']);
    await done;
    // Asked one after the other, t4 would have been asked 900 ms after t1 (each waiting for the answer before).
    expect(asked.map((a) => a.host).sort()).to.deep.equal(['t1', 't2', 't3', 't4']);
    expect(Math.max(...asked.map((a) => a.at)), 'every host asked before the first answer').to.be.below(Math.min(...answered));
    expect(asked.find((a) => a.host === 't1')!.sources).to.deep.equal(['seed']);
    expect(asked.find((a) => a.host === 't3')!.sources).to.deep.equal(['t2', 't1', 'seed']);
    expect(asked.find((a) => a.host === 't4')!.sources).to.deep.equal(['t3', 't2', 'seed']);
  });
});
