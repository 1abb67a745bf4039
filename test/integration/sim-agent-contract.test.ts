import { expect } from 'chai';
import { HostStatus } from '../../wire/api.ts';
import { agentContract } from '../support/agent-contract.ts';
import { SimAgent, SimFleet } from '../support/sim-agent.ts';

// The simulated agent passes the same contract suite as the real agent (Hono's shared-suite habit).
describe('simulated agent', () => {
  let sim: SimAgent | undefined;
  after(async () => sim?.stop());
  agentContract('simulated agent', async () => ({ url: (sim ??= await new SimAgent().start()).url, key: sim.key, template: 'alpine' }));
});

describe('a fleet of simulated agents', () => {
  let fleet: SimFleet | undefined;
  after(async () => fleet?.stop());

  it('should run many agents in one process, each a distinct agent URL with its own id and key', async () => {
    fleet = await SimFleet.start(20, (i) => ({ memoryMiB: 1024 + 512 * i }));
    expect(new Set(fleet.agents.map((a) => a.url)).size).to.equal(20);
    expect(new Set(fleet.agents.map((a) => a.key)).size).to.equal(20);
    for (const a of fleet.agents) {
      expect(await (await fetch(`${a.url}/healthz`)).json()).to.deep.equal({ ok: true, hostId: a.hostId });
      expect((await fetch(`${a.url}/status`, { headers: { authorization: `Bearer ${fleet.agents[0]!.key}` } })).status).to.equal(a === fleet.agents[0] ? 200 : 401);
    }
  });

  it('should count a created VM in /status and refuse one that does not fit in memory', async () => {
    const a = fleet!.agents[0]!; // 1,024 MiB, 512 of them for its own OS
    const call = (method: string, p: string, body?: unknown) => fetch(a.url + p, {
      method, headers: { authorization: `Bearer ${a.key}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const status = async () => HostStatus.parse(await (await call('GET', '/status')).json());
    expect((await status()).memory.freeMiB).to.equal(512);
    expect((await call('POST', '/vms', { name: 'fits', template: 'alpine', memoryMiB: 384 })).status).to.equal(201);
    const after = await status();
    expect(after.memory.freeMiB).to.equal(128);
    expect(after.vms).to.include({ running: 1, total: 1, vcpus: 1 });
    const refused = await call('POST', '/vms', { name: 'too-big', template: 'alpine', memoryMiB: 256 });
    expect(refused.status).to.equal(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).to.equal('insufficient_memory');
    expect((await status()).vms.total).to.equal(1);
  });
});
