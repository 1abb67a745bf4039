// The libvirt driver: this machine's libvirt/QEMU (`qemu:///system`) behind the Hypervisor interface.
// Each VM is a domain `sky-<host tag>-<vm id>` whose <metadata> holds SkyHost's record of it, so
// libvirt stays the one source of truth; its files live in DATA/vms/<id>/ (files.ts).
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { CommandFailed } from '../../../base/errors.ts';
import type { Logger } from '../../../base/log.ts';
import type { SeedInput } from '../../seed.ts';
import {
  HypervisorFailed, type DiskSource, type FoundVm, type Hypervisor, type HypervisorVersions, type MachineSpec, type PowerState,
  type SerialLine, type VmNetwork, type VmStats,
} from '../driver.ts';
import { domainName, domainXml, hostTag, toState } from './domain.ts';
import { tailFile, VmFiles } from './files.ts';
import { METADATA_NS, parseMetadata } from './metadata.ts';
import { claimHost } from './host-lock.ts';
import { addReservation, ensureNetwork, networkName, releaseNetwork, removeReservation, reservations } from './network.ts';
import { defineXml, isNoDomain, isNotRunning, virsh, vmError } from './virsh.ts';

/** Every domain of the connection with its state (`virsh list --all`). */
export async function listDomains(): Promise<Map<string, PowerState>> {
  const out = await virsh(['list', '--all']);
  const states = new Map<string, PowerState>();
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+(\S+)\s+(.+?)\s*$/.exec(line);
    if (m) states.set(m[2]!, toState(m[3]!));
  }
  return states;
}

/**
 * `virsh domstats --cpu-total --balloon` of running domains, by domain name: CPU time and memory in use
 * (the guest's figure, available - unused, when its balloon driver reports one; else QEMU's resident memory).
 */
export function parseDomstats(out: string): Map<string, VmStats> {
  const stats = new Map<string, VmStats>();
  let fields: Map<string, number> | undefined;
  const done = (name: string | undefined) => {
    if (!name || !fields) return;
    const kib = fields.has('balloon.available') && fields.has('balloon.unused')
      ? fields.get('balloon.available')! - fields.get('balloon.unused')! : fields.get('balloon.rss');
    stats.set(name, { cpuTimeNs: fields.get('cpu.time') ?? 0, ...(kib !== undefined ? { memoryUsedMiB: Math.round(kib / 1024) } : {}) });
  };
  let name: string | undefined;
  for (const line of out.split('\n')) {
    const d = /^Domain: '(.+)'$/.exec(line.trim());
    if (d) {
      done(name);
      name = d[1];
      fields = new Map();
      continue;
    }
    const f = /^\s*([a-z.]+)=(\d+)\s*$/.exec(line);
    if (f && fields) fields.set(f[1]!, Number(f[2]));
  }
  done(name);
  return stats;
}

/** Stops (if running) and undefines a domain; a domain already gone is fine. */
export async function removeDomain(name: string): Promise<void> {
  try {
    await virsh(['destroy', name]);
  } catch (err) {
    if (!isNoDomain(err) && !isNotRunning(err)) throw err;
  }
  try {
    await virsh(['undefine', name, '--nvram']);
  } catch (err) {
    if (!isNoDomain(err)) throw err;
  }
}

export interface LibvirtOptions {
  hostId: string;
  dataDir: string;
  log: Logger;
  /** Claim the host id for this process until close() (host-lock.ts): what a running agent does. */
  exclusive?: boolean;
}

export class LibvirtHypervisor implements Hypervisor {
  private readonly hostId: string;
  private readonly log: Logger;
  private readonly files: VmFiles;
  private readonly network: string;
  private readonly release: (() => void) | undefined;

  constructor(o: LibvirtOptions) {
    this.hostId = o.hostId;
    this.log = o.log;
    this.files = new VmFiles(o.dataDir);
    this.network = networkName(o.hostId);
    this.release = o.exclusive ? claimHost(o.hostId) : undefined;
  }

  private dom(id: string): string {
    return domainName(this.hostId, id);
  }

  /** Runs a virsh command about VM `id`; a failure becomes the answer in plain words (the whole of it goes to the log). */
  private async onVm(id: string, doing: string, args: string[]): Promise<string> {
    try {
      return await virsh(args);
    } catch (err) {
      const answer = vmError(err, id, doing);
      if (answer instanceof HypervisorFailed) this.log.warn(`libvirt refused to ${doing} a VM`, { vm: id, err, stderr: (err as CommandFailed).stderr });
      throw answer;
    }
  }

  async versions(): Promise<HypervisorVersions> {
    let out: string;
    try {
      out = await virsh(['version']);
    } catch (err) {
      this.log.warn('could not read the libvirt and QEMU versions', { err });
      return {};
    }
    const libvirt = /Using library: libvirt (\S+)/.exec(out)?.[1];
    const qemu = /Running hypervisor: QEMU (\S+)/.exec(out)?.[1];
    return { ...(libvirt ? { libvirt } : {}), ...(qemu ? { qemu } : {}) };
  }

  createFolder(id: string): Promise<void> {
    return this.files.createFolder(id);
  }

  createDisk(id: string, source: DiskSource): Promise<void> {
    return this.files.createDisk(id, source);
  }

  createSeed(id: string, seed: SeedInput): Promise<void> {
    return this.files.createSeed(id, seed);
  }

  exportDisk(id: string, out: string): Promise<void> {
    return this.files.exportDisk(id, out);
  }

  replaceDisk(id: string, source: DiskSource): Promise<void> {
    return this.files.replaceDisk(id, source);
  }

  restoreOldDisk(id: string): Promise<void> {
    return this.files.restoreOldDisk(id);
  }

  dropOldDisk(id: string): Promise<void> {
    return this.files.dropOldDisk(id);
  }

  removeFiles(id: string): Promise<void> {
    return this.files.remove(id);
  }

  folders(): Promise<string[]> {
    return this.files.list();
  }

  async define(spec: MachineSpec): Promise<void> {
    const f = this.files.of(spec.metadata.id);
    const text = domainXml({
      name: this.dom(spec.metadata.id),
      accel: spec.accel,
      metadata: spec.metadata,
      ...(spec.disk ? { disk: f.disk } : {}),
      seedIso: f.seed,
      ...(spec.kernel ? { kernel: spec.kernel } : {}),
      ...(spec.installer ? { installerIso: spec.installer } : {}),
      consoleSocket: f.socket,
      consoleLog: f.log,
    });
    try {
      await defineXml('define', text);
    } catch (err) {
      throw vmError(err, spec.metadata.id, 'define');
    }
  }

  async list(): Promise<FoundVm[]> {
    const found: FoundVm[] = [];
    for (const [name, state] of await listDomains()) {
      if (!name.startsWith('sky-')) continue;
      let text: string;
      try {
        text = await virsh(['metadata', name, METADATA_NS]);
      } catch (err) {
        // a domain named like ours without SkyHost's metadata, or removed since the list: not one of our VMs
        this.log.debug('domain without SkyHost metadata', { domain: name, err });
        continue;
      }
      const metadata = parseMetadata(text);
      if (metadata && domainName(metadata.hostId, metadata.id) === name) found.push({ metadata, state });
    }
    return found;
  }

  async states(): Promise<Map<string, PowerState>> {
    const prefix = `sky-${hostTag(this.hostId)}-`;
    const out = new Map<string, PowerState>();
    for (const [name, state] of await listDomains()) if (name.startsWith(prefix)) out.set(name.slice(prefix.length), state);
    return out;
  }

  async stats(): Promise<Map<string, VmStats>> {
    const prefix = `sky-${hostTag(this.hostId)}-`;
    const out = new Map<string, VmStats>();
    for (const [name, s] of parseDomstats(await virsh(['domstats', '--list-running', '--cpu-total', '--balloon']))) {
      if (name.startsWith(prefix)) out.set(name.slice(prefix.length), s);
    }
    return out;
  }

  async state(id: string): Promise<PowerState | undefined> {
    try {
      return toState(await virsh(['domstate', this.dom(id)]));
    } catch (err) {
      if (isNoDomain(err)) return undefined;
      throw vmError(err, id, 'read the state of');
    }
  }

  async start(id: string): Promise<void> {
    await this.onVm(id, 'start', ['start', this.dom(id)]);
  }

  async resume(id: string): Promise<void> {
    await this.onVm(id, 'resume', ['resume', this.dom(id)]);
  }

  async shutdown(id: string): Promise<void> {
    await this.onVm(id, 'shut down', ['shutdown', this.dom(id), '--mode', 'acpi']);
  }

  async poweroff(id: string): Promise<void> {
    try {
      await virsh(['destroy', this.dom(id)]);
    } catch (err) {
      if (isNotRunning(err)) return;
      throw vmError(err, id, 'power off');
    }
  }

  async reboot(id: string): Promise<void> {
    await this.onVm(id, 'reboot', ['reboot', this.dom(id), '--mode', 'acpi']);
  }

  async destroy(id: string): Promise<void> {
    try {
      await removeDomain(this.dom(id));
    } catch (err) {
      throw vmError(err, id, 'remove');
    }
  }

  console(id: string): SerialLine {
    const f = this.files.of(id);
    return {
      connect: () =>
        new Promise<Duplex>((resolve, reject) => {
          const s = connect(f.socket);
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        }),
      history: (bytes) => tailFile(f.log, bytes),
    };
  }

  async vncPort(id: string): Promise<number> {
    const out = await this.onVm(id, 'open the graphical console of', ['vncdisplay', this.dom(id)]);
    const m = /:(\d+)/.exec(out);
    if (!m) throw new HypervisorFailed(`libvirt gave no VNC display for VM ${id} (it answered ${JSON.stringify(out.trim().slice(0, 80))})`);
    return 5900 + Number(m[1]);
  }

  ensureNetwork(): Promise<VmNetwork> {
    return ensureNetwork(this.hostId, this.log);
  }

  addReservation(mac: string, ip: string): Promise<void> {
    return addReservation(this.network, mac, ip);
  }

  removeReservation(mac: string, ip: string): Promise<void> {
    return removeReservation(this.network, mac, ip);
  }

  reservations(): Promise<Map<string, string>> {
    return reservations(this.network);
  }

  releaseNetwork(): Promise<'removed' | 'in-use' | 'absent'> {
    return releaseNetwork(this.network, this.log);
  }

  async close(): Promise<void> {
    // every virsh call is its own process: the host claim is all there is to let go
    this.release?.();
  }
}
