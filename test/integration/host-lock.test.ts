// One agent per host id on this machine's libvirt: a second one would adopt the first one's VMs.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { claimHost } from '../../agent/hypervisor/libvirt/host-lock.ts';
import { hostTag } from '../../agent/hypervisor/libvirt/domain.ts';
import { networkName, removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';
import { startAgent, type RunningAgent } from '../../agent/service.ts';
import { SkyError } from '../../base/errors.ts';
import { defaults } from '../../base/config.ts';
import { configureLogging, logger } from '../../base/log.ts';

const TCG = { accel: 'tcg' as const, reason: 'the test says so' };

describe('one agent per host id', function () {
  this.timeout(60_000);
  const work = mkdtempSync(path.join(tmpdir(), 'skyhost-host-lock-'));
  const hostId = `host-lock-${process.pid}`;
  const started: RunningAgent[] = [];
  chmodSync(work, 0o711);

  function start(name: string): Promise<RunningAgent> {
    const cwd = path.join(work, name);
    return startAgent({
      config: { ...defaults({ isRoot: true, cwd }), dataDir: path.join(cwd, 'data'), listen: '127.0.0.1', sshPortRange: '42960-42969' },
      log: logger(name), hostId, port: 0, listen: '127.0.0.1', key: `host-lock-key-${name}-0123456789`, accel: TCG,
    }).then((a) => (started.push(a), a));
  }

  before(() => configureLogging({ out: () => {} }));
  after(async () => {
    for (const a of started) await a.stop().catch((err: Error) => process.stderr.write(`agent stop: ${err.message}\n`));
    await removeNetwork(networkName(hostId));
    configureLogging({ out: (line) => process.stderr.write(line + '\n') });
    rmSync(work, { recursive: true, force: true });
  });

  it('refuses a second agent with the same host id while the first runs (409 host_in_use), and lets it start once the first stopped', async () => {
    const first = await start('first');
    const refused = await start('second').then(() => undefined, (err: unknown) => err);
    expect(refused).to.be.instanceOf(SkyError);
    expect(refused).to.include({ status: 409, code: 'host_in_use' });
    expect((refused as Error).message).to.contain(hostId);
    await first.stop();
    started.splice(started.indexOf(first), 1);
    const second = await start('second');
    expect(second.hostId).to.equal(hostId);
  });

  it('refuses a claim held by another live process, and takes over one left by a process that is gone', async () => {
    const id = `host-lock-other-${process.pid}`;
    const file = path.join('/run/skyhost', `host-${hostTag(id)}.pid`);
    const sleeper = spawn('sleep', ['30']);
    try {
      writeFileSync(file, `${sleeper.pid}\n`);
      expect(() => claimHost(id)).to.throw(/another agent \(process \d+\)/);
    } finally {
      sleeper.kill();
      await new Promise((resolve) => sleeper.once('exit', resolve));
    }
    const release = claimHost(id); // the sleeper is gone: its file is stale
    expect(() => claimHost(id)).to.throw(/already runs as host/);
    release();
    claimHost(id)();
  });
});
