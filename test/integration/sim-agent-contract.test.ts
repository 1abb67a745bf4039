import { agentContract } from '../support/agent-contract.ts';
import { SimAgent } from '../support/sim-agent.ts';

// The simulated agent passes the same contract suite as the real agent (Hono's shared-suite habit).
describe('simulated agent', () => {
  let sim: SimAgent | undefined;
  after(async () => sim?.stop());
  agentContract('simulated agent', async () => ({ url: (sim ??= await new SimAgent().start()).url, key: sim.key, template: 'alpine' }));
});
