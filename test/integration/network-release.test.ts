// A stopping agent removes its NAT network only when no VM is attached to it (issue 14: stopping
// `skyhost up` left its network behind). The same checks run on libvirt and on the fake hypervisor.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'chai';
import { run } from '../../base/exec.ts';
import { configureLogging, logger } from '../../base/log.ts';
import type { Hypervisor, VmMetadata, VmNetwork } from '../../agent/hypervisor/driver.ts';
import { loadHypervisor, type HypervisorKind } from '../../agent/hypervisor/load.ts';
import { removeNetwork } from '../../agent/hypervisor/libvirt/network.ts';

async function libvirtNetworks(): Promise<string[]> {
  return (await run('virsh', ['-c', 'qemu:///system', 'net-list', '--all', '--name'])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
}

function releaseContract(kind: HypervisorKind): void {
  describe(`releasing the VM network (${kind})`, function () {
    this.timeout(60_000);
    const dir = mkdtempSync(path.join(tmpdir(), 'skyhost-netrel-'));
    const hostId = `netrel-${randomBytes(6).toString('hex')}`;
    let hv: Hypervisor;
    let net: VmNetwork;
    const id = randomBytes(6).toString('hex');

    before(async () => {
      configureLogging({ out: () => {} });
      hv = await loadHypervisor({ kind, hostId, dataDir: dir, log: logger('netrel-test') });
    });

    after(async () => {
      await hv?.destroy(id).catch(() => {}); // already gone when the test passed
      if (kind === 'libvirt' && net) await removeNetwork(net.name);
      await hv?.close();
      configureLogging({ out: (line) => process.stderr.write(line + '\n') });
      rmSync(dir, { recursive: true, force: true });
    });

    it('answers absent when there is no network', async () => {
      expect(await hv.releaseNetwork()).to.equal('absent');
    });

    it('keeps the network while a VM (even one that is off) is attached to it', async () => {
      net = await hv.ensureNetwork();
      const metadata: VmMetadata = {
        hostId, dataDir: dir, id, name: 'netrel', template: 'none', vcpus: 1, memoryMiB: 64,
        mac: '52:54:00:7e:00:01', ip: `${net.prefix}.2`, console: 'serial', network: net.name, createdAt: new Date().toISOString(),
      };
      await hv.createFolder(id);
      await hv.addReservation(metadata.mac, metadata.ip);
      await hv.define({ metadata, accel: 'tcg', disk: false });
      expect(await hv.releaseNetwork()).to.equal('in-use');
      if (kind === 'libvirt') expect(await libvirtNetworks()).to.include(net.name);
      expect((await hv.reservations()).get(metadata.mac)).to.equal(metadata.ip);
    });

    it('removes the network once no VM is attached to it, and makes it again on demand', async () => {
      await hv.destroy(id);
      expect(await hv.releaseNetwork()).to.equal('removed');
      if (kind === 'libvirt') expect(await libvirtNetworks()).to.not.include(net.name);
      expect(await hv.releaseNetwork()).to.equal('absent');
      const again = await hv.ensureNetwork();
      expect(again.name).to.equal(net.name);
      expect(await hv.releaseNetwork()).to.equal('removed');
    });
  });
}

releaseContract('fake');
releaseContract('libvirt');
