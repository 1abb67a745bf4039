import { expect } from 'chai';
import WebSocket from 'ws';
import { Logger } from '../../base/log.ts';
import { HostStatus } from '../../wire/api.ts';
import { agentContract, wsStatus } from '../support/agent-contract.ts';
import { SimAgent, SimFleet } from '../support/sim-agent.ts';

/** The agents' log here: nothing (these tests make them fail on purpose). */
class Silent extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
  override error(): void {}
}

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
    fleet = await SimFleet.start(20, (i) => ({ memoryMiB: 1024 + 512 * i, log: new Silent('sim') }));
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

// What the fake hypervisor lets a test do that libvirt does not: refuse on purpose. The agent answers
// with the hypervisor's own words and undoes a create whatever step failed.
describe('the agent over a hypervisor that refuses', () => {
  let sim: SimAgent;
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(sim.url + p, {
      method, headers: { authorization: `Bearer ${sim.key}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  before(async () => {
    sim = await new SimAgent({ log: new Silent('sim') }).start();
  });
  after(async () => sim?.stop());

  it('should answer an action the hypervisor refuses with 502 and its reason, not 409 "not running"', async () => {
    const vm = (await call('POST', '/vms', { name: 'refused', template: 'alpine' })).body;
    sim.hypervisor!.failNext('reboot');
    const a = await call('POST', `/vms/${vm.id}/reboot`);
    expect(a.status).to.equal(502);
    expect(a.body.error).to.deep.equal({ code: 'hypervisor_failed', message: 'the fake hypervisor refused to reboot (failure injected)' });
    expect((await call('GET', `/vms/${vm.id}`)).body.state).to.equal('running');
    expect((await call('DELETE', `/vms/${vm.id}`)).status).to.equal(204);
  });

  it('should open the VNC console of a graphical VM, answer 409 while it is off and 502 with the reason when the hypervisor fails', async () => {
    const vm = (await call('POST', '/vms', { name: 'desk', template: 'desktop', memoryMiB: 2048 })).body;
    const ws = new WebSocket(`${sim.url.replace('http', 'ws')}/vms/${vm.id}/vnc`, { headers: { authorization: `Bearer ${sim.key}` } });
    const banner = await new Promise<string>((resolve, reject) => {
      ws.once('message', (d: Buffer) => resolve(d.toString('latin1')));
      ws.once('error', reject);
    });
    ws.close();
    expect(banner).to.equal('RFB 003.008\n');
    sim.hypervisor!.failNext('vncPort');
    expect(await wsStatus(sim.url, `/vms/${vm.id}/vnc`, sim.key)).to.equal(502);
    await call('POST', `/vms/${vm.id}/poweroff`);
    expect(await wsStatus(sim.url, `/vms/${vm.id}/vnc`, sim.key)).to.equal(409);
    expect((await call('DELETE', `/vms/${vm.id}`)).status).to.equal(204);
  });

  for (const method of ['createFolder', 'createDisk', 'createSeed', 'addReservation', 'define', 'start'] as const) {
    it(`should undo a create whose ${method} fails and leave nothing behind`, async () => {
      const hv = sim.hypervisor!;
      sim.hypervisor!.failNext(method);
      const a = await call('POST', '/vms', { name: `fail-${method.toLowerCase()}`, template: 'alpine' });
      expect(a.status).to.equal(502);
      expect(a.body.error.message).to.include(method);
      expect((await call('GET', '/vms')).body).to.deep.equal([]);
      expect([hv.domains.size, hv.folderContents.size, hv.dhcp.size]).to.deep.equal([0, 0, 0]);
      // the SSH port went back: the next VM gets the first one of the range
      const next = await call('POST', '/vms', { name: 'after-failure', template: 'alpine' });
      expect(next.body.ssh.port).to.equal(22000);
      expect((await call('DELETE', `/vms/${next.body.id}`)).status).to.equal(204);
    });
  }
});
