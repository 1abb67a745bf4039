// A reset or a save as template that fails half-way undoes itself: the simulated agent (the real app
// over the fake hypervisor) with a failure injected at each step; the fake's disks say which disk a
// VM has (a generation per fresh disk) and whether one was kept aside.
import { readdirSync } from 'node:fs';
import os from 'node:os';
import { expect } from 'chai';
import { SkyError } from '../../base/errors.ts';
import { Logger } from '../../base/log.ts';
import type { VmInfo } from '../../wire/api.ts';
import { SimAgent } from '../support/sim-agent.ts';

/** Nothing: these tests make the agent fail on purpose. */
class Silent extends Logger {
  override debug(): void {}
  override info(): void {}
  override warn(): void {}
  override error(): void {}
}

describe('agent: a failed reset or save as template undoes itself (fake hypervisor)', function () {
  let sim: SimAgent;
  let vm: VmInfo;

  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(sim.url + p, {
      method, headers: { authorization: `Bearer ${sim.key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const folder = () => sim.hypervisor!.folderContents.get(vm.id)!;

  before(async () => {
    sim = await new SimAgent({ log: new Silent('sim') }).start();
    const a = await call('POST', '/vms', { name: 'undo-me', template: 'alpine' });
    expect(a.status).to.equal(201);
    vm = a.body;
  });

  after(async () => sim?.stop());

  for (const step of ['replaceDisk', 'start'] as const) {
    it(`should keep the old disk and run the VM again when the reset fails at ${step}`, async () => {
      const before = folder().disk!.generation;
      sim.hypervisor!.failNext(step);
      const a = await call('POST', `/vms/${vm.id}/reset`);
      expect(a.status, JSON.stringify(a.body)).to.equal(502);
      expect(folder().disk!.generation, 'the same disk').to.equal(before);
      expect(folder().oldDisk, 'nothing kept aside').to.equal(undefined);
      expect((await call('GET', `/vms/${vm.id}`)).body).to.include({ state: 'running', mac: vm.mac, ip: vm.ip });
    });
  }

  it('should give a fresh disk when nothing fails, and drop the old one', async () => {
    const before = folder().disk!.generation;
    expect((await call('POST', `/vms/${vm.id}/reset`)).body.state).to.equal('running');
    expect(folder().disk!.generation).to.be.greaterThan(before);
    expect(folder().oldDisk).to.equal(undefined);
  });

  it('should settle a reset cut short by a crash when the agent starts again: a stopped VM gets its old disk back', async () => {
    const old = folder().disk!;
    expect((await call('POST', `/vms/${vm.id}/poweroff`)).body.state).to.equal('shutoff');
    // the state a crash between the disk swap and the end of the reset leaves
    folder().oldDisk = old;
    folder().disk = { ...old, generation: old.generation + 1000 };
    await sim.stop();
    await sim.start();
    // the client's kept-alive connection to the stopped agent is gone: the first call may find it closed
    await fetch(`${sim.url}/healthz`).catch(() => undefined);
    expect(folder().disk).to.deep.equal(old);
    expect(folder().oldDisk).to.equal(undefined);
    expect((await call('POST', `/vms/${vm.id}/start`)).body.state).to.equal('running');
  });

  it('should leave no template and no work folder when flattening the disk fails', async () => {
    expect((await call('POST', `/vms/${vm.id}/poweroff`)).body.state).to.equal('shutoff');
    sim.hypervisor!.failNext('exportDisk', new SkyError(500, 'injected_failure', 'flattening failed (injected)'));
    const a = await call('POST', `/vms/${vm.id}/save-as-template`, { name: 'half-saved' });
    expect(a.status).to.equal(500);
    expect(((await call('GET', '/templates')).body as { name: string }[]).map((t) => t.name)).not.to.include('half-saved');
    // the simulated agent's templates work in the system's temporary folder
    expect(readdirSync(os.tmpdir()).filter((f) => f.startsWith('.save-half-saved-'))).to.deep.equal([]);
    // and the VM can still be saved and started
    expect((await call('POST', `/vms/${vm.id}/save-as-template`, { name: 'half-saved' })).status).to.equal(201);
    expect((await call('POST', `/vms/${vm.id}/start`)).body.state).to.equal('running');
  });
});
