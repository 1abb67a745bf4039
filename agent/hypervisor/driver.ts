// What the agent needs from a hypervisor, in the agent's own words: VM ids, specs and metadata, never
// XML. A VM's files (folder, disk, seed), its definition and power, its serial line and VNC port, and
// the agent's own NAT network with a DHCP reservation per VM. Two implementations: libvirt/ drives
// this machine's libvirt/QEMU, fake.ts keeps everything in memory (tests, the simulated agent).
// load.ts picks one.
//
// Errors: an unknown VM is a NotFound (404), an action the VM's state does not allow a VmNotRunning
// (409), anything else the hypervisor refuses a HypervisorFailed (502) quoting its one-line reason.
import type { Duplex } from 'node:stream';
import { SkyError } from '../../base/errors.ts';
import type { SeedInput } from '../seed.ts';

/** A VM's power state as the hypervisor reports it. */
export type PowerState = 'running' | 'shutoff' | 'paused' | 'unknown';

/**
 * SkyHost's record of a VM, kept with the VM in the hypervisor (libvirt: the domain's `<metadata>`),
 * so that a restarted agent finds its VMs again with nothing stored anywhere else.
 */
export interface VmMetadata {
  /** The agent the VM belongs to, e.g. `3f2a...` (/etc/machine-id). */
  hostId: string;
  /** The agent's data folder, e.g. `/var/lib/skyhost` (several agents on one machine each have their own). */
  dataDir: string;
  /** e.g. `a1b2c3d4e5f6` */
  id: string;
  /** e.g. `web-1` */
  name: string;
  /** The controller user who asked for it, e.g. `alice`. */
  owner?: string;
  /** e.g. `alpine` */
  template: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB?: number;
  /** e.g. `52:54:00:12:34:56` */
  mac: string;
  /** The address of its DHCP reservation, e.g. `10.213.7.2`. */
  ip: string;
  /** The host port forwarded to the guest's port 22, e.g. `20000`. */
  sshPort?: number;
  /** The user cloud-init made for the request's SSH key (absent: no key was given). */
  sshUser?: string;
  console: 'serial' | 'vnc';
  /** The network the VM is on, e.g. `skyhost-1a2b3c4d`. */
  network: string;
  /** ISO 8601 */
  createdAt: string;
  expiresAt?: string;
}

/** The agent's NAT network. */
export interface VmNetwork {
  /** e.g. `skyhost-1a2b3c4d` */
  name: string;
  /** e.g. `skybr1a2b3c4d` */
  bridge: string;
  /** The first three octets of the /24, e.g. `10.213.7`. */
  prefix: string;
  /** e.g. `10.213.7.1` */
  gateway: string;
}

/** Where a VM's disk comes from: an overlay on a template's image, or an empty disk. */
export type DiskSource =
  | { kind: 'overlay'; image: string; format: 'qcow2' | 'raw'; /** grows the disk beyond the image's size */ sizeBytes?: number }
  | { kind: 'blank'; sizeBytes: number };

/** What a VM is made of, besides the files created before it (disk, seed). */
export interface MachineSpec {
  metadata: VmMetadata;
  accel: 'kvm' | 'tcg';
  /** The VM boots from (or mounts) the disk made by createDisk. */
  disk: boolean;
  /** Direct kernel boot from a template's files. */
  kernel?: { kernel: string; initrd?: string; cmdline?: string };
  /** An installer ISO (an iso template's image): a read-only CD-ROM the VM boots from while its disk is empty. */
  installer?: string;
}

/** A VM's serial line: the guest's console bytes, both ways, unframed. */
export interface SerialLine {
  /** Connects to the guest's serial port (one connection at a time); rejects while the VM is off. */
  connect(): Promise<Duplex>;
  /** The last `bytes` bytes the guest printed, for viewers who join after an agent restart. */
  history(bytes: number): Promise<Buffer>;
}

/** What a running VM uses now, as the hypervisor counts it. */
export interface VmStats {
  /** CPU time of all its vCPUs since it started, in ns (cumulative: a rate needs two samples). */
  cpuTimeNs: number;
  /** Memory it takes on the host in MiB (the guest's own figure when it reports one), when known. */
  memoryUsedMiB?: number;
}

/** Versions of what runs the VMs, for `GET /status`. */
export interface HypervisorVersions {
  libvirt?: string;
  qemu?: string;
}

/** A VM found on the hypervisor. */
export interface FoundVm {
  metadata: VmMetadata;
  state: PowerState;
}

export interface Hypervisor {
  versions(): Promise<HypervisorVersions>;

  /** Makes the VM's folder (its disk, seed and console live there). Undo: removeFiles. */
  createFolder(id: string): Promise<void>;
  createDisk(id: string, source: DiskSource): Promise<void>;
  /** The cloud-init NoCloud seed the VM boots with. */
  createSeed(id: string, seed: SeedInput): Promise<void>;
  /**
   * Writes the VM's disk, flattened (its template's image with the VM's changes), as one standalone
   * qcow2 at `out` (save as template). The VM must be off.
   */
  exportDisk(id: string, out: string): Promise<void>;
  /**
   * Makes a fresh disk from `source` and puts it in place of the VM's disk (reset to its template),
   * keeping the old one aside until `dropOldDisk`; `restoreOldDisk` puts the old one back. The VM must be off.
   */
  replaceDisk(id: string, source: DiskSource): Promise<void>;
  /** Puts back the disk `replaceDisk` kept aside (an undo); nothing kept aside is fine. */
  restoreOldDisk(id: string): Promise<void>;
  /** Removes the disk `replaceDisk` kept aside; nothing kept aside is fine. */
  dropOldDisk(id: string): Promise<void>;
  /** Removes the VM's folder and everything in it; a folder already gone is fine. */
  removeFiles(id: string): Promise<void>;
  /** The VM ids that have a folder (a create cut short by a crash leaves one without a VM). */
  folders(): Promise<string[]>;

  /** Defines the VM (not started). */
  define(spec: MachineSpec): Promise<void>;
  /** Every SkyHost VM on this machine, of any agent, with its metadata: slow, for adoption. */
  list(): Promise<FoundVm[]>;
  /** The state of each of this agent's VMs by id, in one cheap call. */
  states(): Promise<Map<string, PowerState>>;
  /** CPU time and memory of each of this agent's running VMs, by id, in one cheap call. */
  stats(): Promise<Map<string, VmStats>>;
  /** One VM's state; undefined when there is no such VM. */
  state(id: string): Promise<PowerState | undefined>;
  start(id: string): Promise<void>;
  resume(id: string): Promise<void>;
  /** Presses the ACPI power button and returns at once; the guest decides. */
  shutdown(id: string): Promise<void>;
  /** Pulls the plug; a VM already off is fine. */
  poweroff(id: string): Promise<void>;
  /** Asks the guest to reboot (ACPI). */
  reboot(id: string): Promise<void>;
  /** Stops the VM if it runs and forgets it; a VM already gone is fine. Its files stay. */
  destroy(id: string): Promise<void>;
  console(id: string): SerialLine;
  /** The TCP port on 127.0.0.1 of a graphical VM's VNC server. */
  vncPort(id: string): Promise<number>;

  /** The agent's NAT network, created on first use and kept. */
  ensureNetwork(): Promise<VmNetwork>;
  /** Reserves `ip` for `mac` on the network (live and persistent). */
  addReservation(mac: string, ip: string): Promise<void>;
  /** Removes a reservation; one already gone is fine. */
  removeReservation(mac: string, ip: string): Promise<void>;
  /** MAC -> IP of every reservation; empty while there is no network yet. */
  reservations(): Promise<Map<string, string>>;
  /**
   * Removes the agent's NAT network when no VM of this machine (running or off) is attached to it;
   * one in use stays. The agent does this when it stops, so nothing is left behind that nothing uses.
   */
  releaseNetwork(): Promise<'removed' | 'in-use' | 'absent'>;

  /** Lets go of what the driver itself holds; VMs keep running. */
  close(): Promise<void>;
}

/** 409: the VM must be running for this (libvirt: "domain is not running"). */
export class VmNotRunning extends SkyError {
  constructor(id: string, doing: string) {
    super(409, 'not_running', `VM ${id} is not running: cannot ${doing} it (start it first)`);
  }
}

/** 502: the hypervisor refused for a reason of its own, quoted in one line. */
export class HypervisorFailed extends SkyError {
  constructor(message: string) {
    super(502, 'hypervisor_failed', message);
  }
}
