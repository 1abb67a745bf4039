// `skyhost vm` with no --controller finds the controller on the LAN by mDNS, as an agent does: a real
// `skyhost controller` in one network namespace, the CLI in another, real multicast between them.
// With the controller's fingerprint the connection is pinned and the call answers; without it the
// controller's own certificate is refused, naming the URL heard and asking for the fingerprint.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { fingerprintOf } from '../../base/tls.ts';
import { GiveUp, NODE, REPO, TestLan, waitFor } from '../support/netns.ts';

describe('skyhost vm finds the controller by mDNS (network namespaces)', function () {
  this.timeout(120_000);
  const lan = new TestLan();
  let tmp: string;
  let log = '';

  before(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'skyhost-vmcli-mdns-'));
    await lan.create();
    for (const h of ['ctl', 'pc']) await lan.addHost(h);
    const child = lan.spawnNode('ctl', 'appliance/main.ts', ['controller', '--data', path.join(tmp, 'ctl'), '--port', '8080'], { env: { SKYHOST_LOG_FORMAT: 'json' } });
    child.stderr?.on('data', (d: Buffer) => { log += String(d); });
    await waitFor('the controller advertising', () => {
      if (child.exitCode !== null && child.exitCode !== undefined) throw new GiveUp(`the controller exited: ${log.slice(-1500)}`);
      return /advertising SkyHost controller/.test(log);
    }, 60_000, 200);
  });

  after(async () => {
    await lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  });

  const vm = (args: string[], okCodes: number[] = []) =>
    lan.exec('pc', NODE, [path.join(REPO, 'appliance/main.ts'), 'vm', ...args], 60_000).catch((err: unknown) => {
      // exec refuses a non-zero exit: the tests that expect one read it from the error
      if (okCodes.length > 0) return { stdout: '', stderr: String((err as { stderr?: string }).stderr ?? ''), exitCode: (err as { exitCode?: number }).exitCode ?? -1 };
      throw err;
    });

  it('lists the VMs of the one controller heard, over HTTPS pinned to its fingerprint', async () => {
    const token = readFileSync(path.join(tmp, 'ctl', 'secrets', 'admin-token'), 'utf8').trim();
    const fp = fingerprintOf(readFileSync(path.join(tmp, 'ctl', 'secrets', 'tls.crt'), 'utf8'));
    const r = await vm(['list', '--token', token, '--controller-fingerprint', fp]);
    expect(r.stdout).to.match(/^no VMs/);
  });

  it('refuses the controller\'s own certificate without the fingerprint, naming the URL it heard', async () => {
    const token = readFileSync(path.join(tmp, 'ctl', 'secrets', 'admin-token'), 'utf8').trim();
    const r = await vm(['list', '--token', token], [1]);
    expect(r.exitCode).to.equal(1);
    expect(r.stderr).to.include(`https://${lan.host('ctl').ip}:8443`);
    expect(r.stderr).to.match(/not signed by a CA this machine trusts \(self-signed certificate\); give --controller-fingerprint/);
  });
});
