// Host setup against the real machine: packages present, daemons answering, a real probe boot.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { checkoutRoot } from '../../base/assets.ts';
import { detectAccel, findProbeKernel, probeBoot } from '../../host/accel.ts';

const exec = promisify(execFile);

describe('host setup on this machine', function () {
  this.timeout(120_000);

  it('should boot the probe sector under TCG and see its marker', async () => {
    expect(await probeBoot('tcg', 20_000)).to.equal('ok');
  });

  it('should boot this machine\'s kernel under TCG to its root-mount panic', async () => {
    const kernel = findProbeKernel();
    expect(kernel, 'the test tools install a Debian kernel in /boot').to.be.a('string');
    expect(await probeBoot('tcg', 60_000, kernel)).to.equal('ok');
  });

  it('should report a hypervisor that a real kernel boot confirmed', async () => {
    const r = await detectAccel({ fresh: true });
    expect(['kvm', 'tcg']).to.include(r.accel);
    expect(r.reason).to.be.a('string').and.not.equal('');
  });

  it('should do nothing a second time and say so in one line', async () => {
    const main = path.join(checkoutRoot(), 'appliance/main.ts');
    await exec(process.execPath, [main, 'host', 'setup'], { timeout: 600_000 });
    const { stdout } = await exec(process.execPath, [main, 'host', 'setup'], { timeout: 120_000 });
    expect(stdout.trim().split('\n')).to.have.length(1);
    expect(stdout).to.match(/^host setup: nothing to do: all \d+ packages present, libvirtd and virtlogd running, acceleration (kvm|tcg)/);
  });
});
