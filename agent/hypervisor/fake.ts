// An in-memory hypervisor (tests, the simulated agent): domains with states and metadata, files and
// DHCP reservations as records, a serial line to a tiny guest shell that prints a prompt and answers
// `echo X` with X, and a VNC port that greets with the RFB banner. A disk is its source and a
// generation (a count of fresh disks made); an exported disk is a qcow2 header of the disk's size. It answers with the same errors as
// the libvirt driver (driver.ts), and `failNext` makes any call fail once, for tests.
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import { Conflict, NotFound, SkyError, Unavailable } from '../../base/errors.ts';
import type { SeedInput } from '../seed.ts';
import {
  HypervisorFailed, VmNotRunning, type DiskSource, type FoundVm, type Hypervisor, type HypervisorVersions, type MachineSpec,
  type PowerState, type SerialLine, type VmMetadata, type VmNetwork, type VmStats,
} from './driver.ts';

export interface FakeHypervisorOptions {
  hostId: string;
  /** Memory the VMs may use together, in MiB: a start beyond it fails as QEMU would (default: no limit). */
  memoryMiB?: number;
  /** How long a start takes, read at each start (default 0). */
  startDelayMs?: () => number;
}

const GUEST_LOG_BYTES = 64 * 1024;

/** The guest's side of a fake VM's serial line: a shell that knows `echo`, and a log of what it printed. */
export class FakeGuest {
  private readonly banner: string;
  private link: { guest: Duplex; agent: Duplex } | undefined;
  private log = Buffer.alloc(0);
  private typed = '';
  private lastWasCr = false;

  constructor(m: VmMetadata) {
    this.banner = `\r\nSimulated VM ${m.name} (${m.id})\r\n# `;
  }

  boot(): void {
    this.print(this.banner);
  }

  /** A reboot: the kernel's last words (as Linux prints them), then a new boot. */
  restart(): void {
    this.print('reboot: Restarting system\r\n');
    this.boot();
  }

  /** The last `bytes` bytes printed (QEMU's console log). */
  history(bytes: number): Buffer {
    return this.log.subarray(Math.max(0, this.log.length - bytes));
  }

  /** A new connection to the serial port; one at a time, as QEMU's socket. */
  connect(): Duplex {
    if (this.link) throw new Conflict('the serial console already has a client');
    const [agent, guest] = duplexPair();
    this.link = { guest, agent };
    guest.on('data', (d: Buffer) => this.type(d.toString('utf8')));
    agent.on('close', () => this.unplug(agent));
    return agent;
  }

  /** The VM went off: the connection breaks. */
  unplug(agent?: Duplex): void {
    if (!this.link || (agent && this.link.agent !== agent)) return;
    const { guest, agent: a } = this.link;
    this.link = undefined;
    guest.destroy();
    a.destroy();
  }

  private print(text: string): void {
    const bytes = Buffer.from(text);
    this.log = Buffer.concat([this.log, bytes]);
    if (this.log.length > GUEST_LOG_BYTES) this.log = this.log.subarray(this.log.length - GUEST_LOG_BYTES);
    this.link?.guest.write(bytes);
  }

  /** Keystrokes: echoed as a terminal does, each line run when Enter comes. */
  private type(text: string): void {
    this.link?.guest.write(text);
    for (const ch of text) {
      if (ch === '\n' && this.lastWasCr) {
        this.lastWasCr = false;
        continue;
      }
      this.lastWasCr = ch === '\r';
      if (ch === '\r' || ch === '\n') {
        this.run(this.typed.trim());
        this.typed = '';
      } else {
        this.typed += ch;
      }
    }
  }

  private run(line: string): void {
    if (line === '') return this.print('# ');
    const echo = /^echo(?:\s+(.*))?$/.exec(line);
    if (echo) return this.print(`${(echo[1] ?? '').replace(/["']/g, '')}\r\n# `);
    this.print(`sh: ${line.split(/\s+/)[0]}: not found\r\n# `);
  }
}

interface FakeDomain {
  spec: MachineSpec;
  metadata: VmMetadata;
  state: PowerState;
  starting: boolean;
  guest: FakeGuest;
}

/** A fake disk: where it came from, and which fresh disk it is. */
export type FakeDisk = DiskSource & { generation: number };

export interface FakeFolder {
  disk?: FakeDisk;
  /** The disk a replaceDisk kept aside. */
  oldDisk?: FakeDisk;
  seed?: SeedInput;
}

type FakeMethod = { [K in keyof Hypervisor]: Hypervisor[K] extends (...a: never[]) => unknown ? K : never }[keyof Hypervisor];

export class FakeHypervisor implements Hypervisor {
  /** VM id -> domain. */
  readonly domains = new Map<string, FakeDomain>();
  private readonly statsSince = new Map<string, number>();
  /** VM id -> what its folder holds (a disk's generation counts the fresh disks made, over all VMs). */
  readonly folderContents = new Map<string, FakeFolder>();
  /** MAC -> IP. */
  readonly dhcp = new Map<string, string>();
  /** VMs whose guest ignores the ACPI power button. */
  readonly ignoresAcpi = new Set<string>();
  private readonly o: FakeHypervisorOptions;
  private network: VmNetwork | undefined;
  private readonly failures = new Map<FakeMethod, Error>();
  private vnc: Promise<{ server: Server; port: number }> | undefined;
  private readonly vncClients = new Set<Socket>();

  constructor(o: FakeHypervisorOptions) {
    this.o = o;
  }

  /** The next call of `method` throws `error` (default: a HypervisorFailed naming it). */
  failNext(method: FakeMethod, error?: Error): void {
    this.failures.set(method, error ?? new HypervisorFailed(`the fake hypervisor refused to ${method} (failure injected)`));
  }

  private check(method: FakeMethod): void {
    const err = this.failures.get(method);
    if (!err) return;
    this.failures.delete(method);
    throw err;
  }

  private domain(id: string): FakeDomain {
    const d = this.domains.get(id);
    if (!d) throw new NotFound(`VM ${id} (the hypervisor has no such VM)`);
    return d;
  }

  async versions(): Promise<HypervisorVersions> {
    this.check('versions');
    return { libvirt: 'simulated', qemu: 'simulated' };
  }

  async createFolder(id: string): Promise<void> {
    this.check('createFolder');
    if (this.folderContents.has(id)) throw new SkyError(500, 'folder_exists', `the folder of VM ${id} exists already`);
    this.folderContents.set(id, {});
  }

  private generation = 0;

  private folder(id: string): FakeFolder {
    const f = this.folderContents.get(id);
    if (!f) throw new SkyError(500, 'no_folder', `VM ${id} has no folder`);
    return f;
  }

  async createDisk(id: string, source: DiskSource): Promise<void> {
    this.check('createDisk');
    this.folder(id).disk = { ...source, generation: ++this.generation };
  }

  private offDisk(id: string, doing: string): FakeDisk {
    const disk = this.folder(id).disk;
    if (!disk) throw new HypervisorFailed(`VM ${id} has no disk to ${doing}`);
    const state = this.domains.get(id)?.state;
    if (state === 'running' || state === 'paused') throw new HypervisorFailed(`could not ${doing} the disk of VM ${id}: the VM is using it`);
    return disk;
  }

  async exportDisk(id: string, out: string): Promise<void> {
    this.check('exportDisk');
    const disk = this.offDisk(id, 'export');
    // a qcow2 header (magic, version 3) saying the disk's size: what an import reads of it
    const header = Buffer.alloc(512);
    header.writeUInt32BE(0x514649fb, 0);
    header.writeUInt32BE(3, 4);
    header.writeBigUInt64BE(BigInt(disk.sizeBytes ?? 1024 ** 3), 24);
    await writeFile(out, header, { mode: 0o644 });
  }

  async replaceDisk(id: string, source: DiskSource): Promise<void> {
    this.check('replaceDisk');
    const f = this.folder(id);
    f.oldDisk = this.offDisk(id, 'replace');
    f.disk = { ...source, generation: ++this.generation };
  }

  async restoreOldDisk(id: string): Promise<void> {
    this.check('restoreOldDisk');
    const f = this.folderContents.get(id);
    if (!f?.oldDisk) return;
    f.disk = f.oldDisk;
    delete f.oldDisk;
  }

  async dropOldDisk(id: string): Promise<void> {
    this.check('dropOldDisk');
    const f = this.folderContents.get(id);
    if (f) delete f.oldDisk;
  }

  async createSeed(id: string, seed: SeedInput): Promise<void> {
    this.check('createSeed');
    this.folder(id).seed = seed;
  }

  async removeFiles(id: string): Promise<void> {
    this.check('removeFiles');
    this.folderContents.delete(id);
  }

  async folders(): Promise<string[]> {
    this.check('folders');
    return [...this.folderContents.keys()];
  }

  async define(spec: MachineSpec): Promise<void> {
    this.check('define');
    const id = spec.metadata.id;
    const old = this.domains.get(id);
    if (old && old.state !== 'shutoff') throw new SkyError(409, 'already_running', `VM ${id} is already running`);
    this.domains.set(id, { spec: { ...spec, metadata: { ...spec.metadata } }, metadata: { ...spec.metadata }, state: 'shutoff', starting: false, guest: new FakeGuest(spec.metadata) });
  }

  async list(): Promise<FoundVm[]> {
    this.check('list');
    return [...this.domains.values()].map((d) => ({ metadata: { ...d.metadata }, state: d.state }));
  }

  async states(): Promise<Map<string, PowerState>> {
    this.check('states');
    const out = new Map<string, PowerState>();
    for (const [id, d] of this.domains) if (d.metadata.hostId === this.o.hostId) out.set(id, d.state);
    return out;
  }

  /** Every running fake VM is 10% busy since it was first asked about, and takes half its memory. */
  async stats(): Promise<Map<string, VmStats>> {
    this.check('stats');
    const out = new Map<string, VmStats>();
    const now = performance.now();
    for (const [id, d] of this.domains) {
      if (d.metadata.hostId !== this.o.hostId || d.state !== 'running') continue;
      const since = this.statsSince.get(id) ?? this.statsSince.set(id, now).get(id)!;
      out.set(id, { cpuTimeNs: Math.round((now - since) * 1e6 * 0.1 * d.metadata.vcpus), memoryUsedMiB: Math.round(d.metadata.memoryMiB / 2) });
    }
    return out;
  }

  async state(id: string): Promise<PowerState | undefined> {
    this.check('state');
    return this.domains.get(id)?.state;
  }

  async start(id: string): Promise<void> {
    this.check('start');
    const d = this.domain(id);
    if (d.state === 'running' || d.starting) throw new SkyError(409, 'already_running', `VM ${id} is already running`);
    const limit = this.o.memoryMiB ?? Infinity;
    let used = 0;
    for (const [other, x] of this.domains) if (other !== id && (x.state === 'running' || x.state === 'paused' || x.starting)) used += x.metadata.memoryMiB;
    if (used + d.metadata.memoryMiB > limit) {
      throw new Unavailable(`not enough free memory for ${d.metadata.memoryMiB} MiB on this host (${limit - used} MiB left)`, undefined, 'insufficient_memory');
    }
    d.starting = true;
    try {
      const delay = this.o.startDelayMs?.() ?? 0;
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    } finally {
      d.starting = false;
    }
    if (this.domains.get(id) !== d) throw new NotFound(`VM ${id} (removed while it started)`);
    d.state = 'running';
    d.guest.boot();
  }

  async resume(id: string): Promise<void> {
    this.check('resume');
    const d = this.domain(id);
    if (d.state !== 'paused') throw new HypervisorFailed(`could not resume VM ${id}: it is not paused`);
    d.state = 'running';
  }

  /** Pauses a running VM, as libvirt's suspend does (tests). */
  async pause(id: string): Promise<void> {
    const d = this.domain(id);
    if (d.state !== 'running') throw new VmNotRunning(id, 'pause');
    d.state = 'paused';
  }

  async shutdown(id: string): Promise<void> {
    this.check('shutdown');
    const d = this.domain(id);
    if (d.state !== 'running' && d.state !== 'paused') throw new VmNotRunning(id, 'shut down');
    if (this.ignoresAcpi.has(id)) return;
    this.turnOff(d);
  }

  async poweroff(id: string): Promise<void> {
    this.check('poweroff');
    this.turnOff(this.domain(id));
  }

  private turnOff(d: FakeDomain): void {
    d.state = 'shutoff';
    d.guest.unplug();
  }

  async reboot(id: string): Promise<void> {
    this.check('reboot');
    const d = this.domain(id);
    if (d.state !== 'running') throw new VmNotRunning(id, 'reboot');
    if (!this.ignoresAcpi.has(id)) d.guest.restart();
  }

  async destroy(id: string): Promise<void> {
    this.check('destroy');
    const d = this.domains.get(id);
    if (!d) return;
    this.turnOff(d);
    this.domains.delete(id);
  }

  console(id: string): SerialLine {
    return {
      connect: async () => {
        this.check('console');
        const d = this.domain(id);
        if (d.state !== 'running' && d.state !== 'paused') throw new VmNotRunning(id, 'connect to the console of');
        return d.guest.connect();
      },
      history: async (bytes) => this.domains.get(id)?.guest.history(bytes) ?? Buffer.alloc(0),
    };
  }

  async vncPort(id: string): Promise<number> {
    this.check('vncPort');
    const d = this.domain(id);
    if (d.state !== 'running') throw new VmNotRunning(id, 'open the graphical console of');
    if (d.metadata.console !== 'vnc') throw new HypervisorFailed(`VM ${id} has no VNC display`);
    this.vnc ??= new Promise((resolve, reject) => {
      // every VM shares one loopback server that greets as a VNC server does
      const server = createServer((s) => {
        this.vncClients.add(s);
        s.on('close', () => this.vncClients.delete(s));
        s.on('error', () => s.destroy()); // the viewer went away: nothing to keep
        s.write('RFB 003.008\n');
      });
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port }));
    });
    return (await this.vnc).port;
  }

  async ensureNetwork(): Promise<VmNetwork> {
    this.check('ensureNetwork');
    if (!this.network) {
      const tag = createHash('sha256').update(this.o.hostId).digest('hex').slice(0, 8);
      const prefix = `10.77.${(parseInt(tag.slice(0, 4), 16) % 250) + 1}`;
      this.network = { name: `skyhost-${tag}`, bridge: `skybr${tag}`, prefix, gateway: `${prefix}.1` };
    }
    return this.network;
  }

  async addReservation(mac: string, ip: string): Promise<void> {
    this.check('addReservation');
    if (!this.network) throw new HypervisorFailed('the fake hypervisor has no network yet');
    if (this.dhcp.has(mac)) throw new HypervisorFailed(`there is an existing DHCP entry for ${mac}`);
    this.dhcp.set(mac, ip);
  }

  async removeReservation(mac: string, _ip: string): Promise<void> {
    this.check('removeReservation');
    this.dhcp.delete(mac);
  }

  async reservations(): Promise<Map<string, string>> {
    this.check('reservations');
    return new Map(this.dhcp);
  }

  async releaseNetwork(): Promise<'removed' | 'in-use' | 'absent'> {
    this.check('releaseNetwork');
    if (!this.network) return 'absent';
    const name = this.network.name;
    if ([...this.domains.values()].some((d) => d.metadata.network === name)) return 'in-use';
    this.network = undefined;
    this.dhcp.clear();
    return 'removed';
  }

  async close(): Promise<void> {
    const vnc = this.vnc;
    this.vnc = undefined;
    for (const s of this.vncClients) s.destroy();
    if (vnc) {
      const { server } = await vnc;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
}
