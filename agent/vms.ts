// VM lifecycle on this host. Create is a sequence of steps (folder, disk, seed ISO, DHCP reservation,
// define, SSH forward, start, console) with a reverter: a failure at any step undoes the ones before.
// libvirt is the one source of truth: SkyHost's record of each VM lives in its domain's metadata,
// and on start the agent adopts every domain carrying its host id.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../base/log.ts';
import { Conflict, fromZod, NotFound, SkyError, Unavailable } from '../base/errors.ts';
import { VmCreateRequest, type TemplateInfo, type VmAction, type VmCreate, type VmInfo, type VmState } from '../wire/api.ts';
import { SerialBridge, SCROLLBACK_BYTES, tailFile } from './console.ts';
import { createBlankDisk, createOverlay } from './disks.ts';
import type { PortForwarder } from './forwarder.ts';
import {
  defineXml, domainName, domainState, domainXml, hostTag, isNotRunning, listDomains, readRecord, removeDomain, virsh, type VmRecord,
} from './libvirt.ts';
import { addReservation, ensureNetwork, freeIp, networkName, newMac, removeReservation, reservations, type VmNetwork } from './network.ts';
import { admitVm } from './admission.ts';
import { Reverter } from './reverter.ts';
import { buildSeedIso } from './seed.ts';
import type { TemplateStore } from './templates.ts';

export const CREATE_STEPS = ['folder', 'disk', 'seed', 'dhcp', 'forward', 'define', 'start', 'console'] as const;
export type CreateStep = (typeof CREATE_STEPS)[number];

const GiB = 1024 ** 3;
/** The user cloud-init creates for the request's SSH key; the SSH command names it. */
export const SSH_USER = 'sky';

export interface VmManagerDeps {
  hostId: string;
  dataDir: string;
  accel: 'kvm' | 'tcg' | 'none';
  templates: TemplateStore;
  forwarder: PortForwarder;
  /** The address people use to reach this host's SSH ports (its LAN IP). */
  sshHost: string;
  log: Logger;
  /** Test hook run after each create step: throwing there is a failure at that step. */
  afterStep?: (step: CreateStep, vmId: string) => void | Promise<void>;
}

/** How long a create took, and each of its steps (for the log and the bench). */
export interface CreateTimings {
  totalMs: number;
  steps: Partial<Record<CreateStep, number>>;
}

/**
 * Wall time of a create spent waiting for subprocesses (qemu-img, xorriso, virsh): disk, seed and
 * DHCP run side by side (the longest counts), then define and start. The rest is the agent's overhead.
 */
export function subprocessMs(t: CreateTimings): number {
  const s = t.steps;
  return Math.max(s.disk ?? 0, s.seed ?? 0, s.dhcp ?? 0) + (s.define ?? 0) + (s.start ?? 0);
}

interface Vm {
  record: VmRecord;
  state: VmState;
  error?: string;
}

/** The uid/gid QEMU runs as under libvirt (libvirt-qemu on Debian/Ubuntu), if that user exists. */
function qemuOwner(): { uid: number; gid: number } | undefined {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('libvirt-qemu:'));
    if (!line) return undefined;
    const [, , uid, gid] = line.split(':');
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return undefined;
  }
}

export class VmManager {
  private readonly deps: VmManagerDeps;
  private readonly log: Logger;
  private readonly vms = new Map<string, Vm>();
  private readonly creating = new Map<string, Promise<VmInfo>>();
  private readonly bridges = new Map<string, SerialBridge>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private network: Promise<VmNetwork> | undefined;
  private readonly qemu = qemuOwner();
  private refreshedAt = 0;
  private refreshing: Promise<void> | undefined;
  /** Timings of the last successful create. */
  lastCreate: CreateTimings | undefined;

  constructor(deps: VmManagerDeps) {
    this.deps = deps;
    this.log = deps.log;
  }

  get vmsDir(): string {
    return path.join(this.deps.dataDir, 'vms');
  }

  vmDir(id: string): string {
    return path.join(this.vmsDir, id);
  }

  files(id: string) {
    const dir = this.vmDir(id);
    return {
      dir,
      disk: path.join(dir, 'disk.qcow2'),
      seed: path.join(dir, 'seed.iso'),
      socket: path.join(dir, 'console.sock'),
      log: path.join(dir, 'console.log'),
    };
  }

  /** The agent's NAT network, created on first use. */
  ensureNetwork(): Promise<VmNetwork> {
    this.network ??= ensureNetwork(this.deps.hostId).catch((err: unknown) => {
      this.network = undefined;
      throw err;
    });
    return this.network;
  }

  /**
   * Adopts every domain whose metadata carries this host id: restores its SSH forward and console
   * bridge. Leftovers of a create that was cut short by a crash (a VM folder or DHCP entry without
   * a domain) are removed.
   */
  async adopt(): Promise<number> {
    const prefix = `sky-${hostTag(this.deps.hostId)}-`;
    const domains = await listDomains();
    for (const [name, state] of domains) {
      if (!name.startsWith(prefix)) continue;
      const record = await readRecord(name);
      if (!record || record.hostId !== this.deps.hostId || this.vms.has(record.id)) continue;
      this.vms.set(record.id, { record, state });
      if (record.sshPort) {
        await this.deps.forwarder.open(record.sshPort, record.ip).catch((err: unknown) =>
          this.log.warn('could not restore the SSH forward', { vm: record.id, port: record.sshPort, err }));
      }
      const f = this.files(record.id);
      const bridge = new SerialBridge(f.socket, this.log, await tailFile(f.log, SCROLLBACK_BYTES));
      this.bridges.set(record.id, bridge);
      if (state === 'running') bridge.poke();
      this.log.info('adopted VM', { vm: record.id, name: record.name, state });
    }
    await this.removeLeftovers();
    return this.vms.size;
  }

  private async removeLeftovers(): Promise<void> {
    const dirs = await readdir(this.vmsDir).catch(() => [] as string[]);
    for (const d of dirs) {
      if (!this.vms.has(d) && !this.creating.has(d)) {
        this.log.info('removing the leftover of an unfinished create', { vm: d });
        await rm(path.join(this.vmsDir, d), { recursive: true, force: true });
      }
    }
    const net = networkName(this.deps.hostId);
    const found = await reservations(net).catch(() => undefined); // no network yet: nothing to clean
    const mine = new Set([...this.vms.values()].map((v) => v.record.mac));
    for (const [mac, ip] of found ?? []) {
      if (!mine.has(mac)) await removeReservation(net, mac, ip);
    }
  }

  /** States younger than `maxAgeMs` are kept; else one refresh (shared by callers arriving together). */
  async refreshIfOlder(maxAgeMs: number): Promise<void> {
    if (performance.now() - this.refreshedAt < maxAgeMs) return;
    this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined));
    await this.refreshing;
  }

  /** Re-reads every VM's state from libvirt (one `virsh list`); VMs whose domain vanished are dropped. */
  async refresh(): Promise<void> {
    this.refreshedAt = performance.now();
    // Only VMs settled before the list was taken: one whose create ends meanwhile is not in it yet.
    const settled = new Set([...this.vms].filter(([, vm]) => vm.state !== 'creating' && vm.state !== 'deleting').map(([id]) => id));
    const domains = await listDomains();
    for (const [id, vm] of this.vms) {
      if (!settled.has(id) || vm.state === 'creating' || vm.state === 'deleting') continue;
      const state = domains.get(domainName(this.deps.hostId, id));
      if (state === undefined) {
        if (vm.state === 'error') continue;
        this.log.warn('VM domain disappeared from libvirt', { vm: id });
        await this.forget(id);
      } else {
        vm.state = state;
      }
    }
  }

  list(): VmInfo[] {
    return [...this.vms.values()].map((vm) => this.info(vm));
  }

  get(id: string): VmInfo {
    return this.info(this.mustGet(id));
  }

  private mustGet(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw new NotFound(`VM ${id}`);
    return vm;
  }

  info(vm: Vm): VmInfo {
    const r = vm.record;
    return {
      id: r.id,
      name: r.name,
      ...(r.owner ? { owner: r.owner } : {}),
      template: r.template,
      state: vm.state,
      vcpus: r.vcpus,
      memoryMiB: r.memoryMiB,
      ...(r.diskGiB !== undefined ? { diskGiB: r.diskGiB } : {}),
      mac: r.mac,
      ip: r.ip,
      ...(r.sshPort
        ? { ssh: { host: this.deps.sshHost, port: r.sshPort, command: `ssh -p ${r.sshPort} ${r.sshUser ? `${r.sshUser}@` : ''}${this.deps.sshHost}` } }
        : {}),
      console: r.console,
      hypervisor: this.deps.accel,
      createdAt: r.createdAt,
      ...(r.expiresAt ? { expiresAt: r.expiresAt } : {}),
      ...(vm.error ? { error: vm.error } : {}),
    };
  }

  /** Memory of running VMs, in MiB. */
  memoryInUse(): number {
    return [...this.vms.values()].filter((v) => v.state === 'running' || v.state === 'creating').reduce((s, v) => s + v.record.memoryMiB, 0);
  }

  /** VMs (by name) that use a template. */
  usersOf(template: string): string[] {
    return [...this.vms.values()].filter((v) => v.record.template === template).map((v) => v.record.name);
  }

  bridge(id: string): SerialBridge {
    this.mustGet(id);
    const b = this.bridges.get(id);
    if (!b) throw new Unavailable(`the console of VM ${id} is not ready yet`);
    return b;
  }

  /** The VNC port of a graphical VM. */
  async vncPort(id: string): Promise<number> {
    const vm = this.mustGet(id);
    if (vm.record.console !== 'vnc') throw new Conflict(`VM ${id} has a serial console, not a graphical one`);
    const out = await virsh(['vncdisplay', domainName(this.deps.hostId, id)]).catch(() => '');
    const m = /:(\d+)/.exec(out);
    if (!m) throw new Conflict(`VM ${id} is not running`);
    return 5900 + Number(m[1]);
  }

  /** Checks a request against the host and the template before anything is done. */
  private async check(req: VmCreate): Promise<TemplateInfo> {
    const names = [...this.vms.values()].map((vm) => vm.record.name);
    return admitVm(req, { hypervisor: this.deps.accel, template: await this.deps.templates.get(req.template), ids: new Set(this.vms.keys()), names });
  }

  /** Creates and starts a VM; every step done is undone if a later one fails. */
  async create(input: unknown): Promise<VmInfo> {
    const parsed = VmCreateRequest.safeParse(input);
    if (!parsed.success) throw fromZod(parsed.error);
    const req = parsed.data;
    const template = await this.check(req);
    const net = await this.ensureNetwork();
    // the name may have been taken while the network was being created
    await this.check(req);

    // allocate synchronously so that simultaneous creates never clash
    const id = req.id ?? randomBytes(6).toString('hex');
    const all = [...this.vms.values()].map((v) => v.record);
    const mac = newMac(new Set(all.map((r) => r.mac)));
    const ip = freeIp(net, new Set(all.map((r) => r.ip)));
    const sshPort = this.deps.forwarder.reserve(new Set(all.map((r) => r.sshPort ?? 0)));
    const record: VmRecord = {
      hostId: this.deps.hostId,
      dataDir: this.deps.dataDir,
      id,
      name: req.name,
      ...(req.owner ? { owner: req.owner } : {}),
      template: template.name,
      vcpus: req.vcpus,
      memoryMiB: req.memoryMiB,
      ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}),
      mac,
      ip,
      sshPort,
      ...(req.sshKey ? { sshUser: SSH_USER } : {}),
      console: template.console,
      network: net.name,
      createdAt: new Date().toISOString(),
      ...(req.expiresAt ? { expiresAt: req.expiresAt } : {}),
    };
    this.vms.set(id, { record, state: 'creating' });
    const job = this.runCreate(record, req, template, net).finally(() => this.creating.delete(id));
    this.creating.set(id, job);
    return job;
  }

  private async runCreate(record: VmRecord, req: VmCreate, t: TemplateInfo, net: VmNetwork): Promise<VmInfo> {
    const revert = new Reverter(this.log);
    const f = this.files(record.id);
    const dom = domainName(this.deps.hostId, record.id);
    const timings: CreateTimings = { totalMs: 0, steps: {} };
    const step = async (name: CreateStep, work: () => Promise<unknown>) => {
      const t0 = performance.now();
      await work();
      timings.steps[name] = Math.round((performance.now() - t0) * 10) / 10;
      await this.deps.afterStep?.(name, record.id);
    };
    const started = performance.now();
    try {
      await step('folder', async () => {
        await mkdir(this.vmsDir, { recursive: true, mode: 0o711 });
        revert.add('folder', () => rm(f.dir, { recursive: true, force: true }));
        await mkdir(f.dir, { mode: 0o770 });
        // QEMU (libvirt-qemu) creates the console socket here
        if (this.qemu) await chown(f.dir, 0, this.qemu.gid);
        await chmod(f.dir, 0o770);
      });
      const disk = t.files.find((x) => x.role === 'disk');
      const hasDisk = disk !== undefined || req.diskGiB !== undefined;
      // disk, seed ISO and DHCP entry do not depend on each other: done side by side
      const parallel = await Promise.allSettled([
        step('disk', async () => {
          if (disk) {
            const size = req.diskGiB !== undefined ? req.diskGiB * GiB : undefined;
            await createOverlay(this.deps.templates.pathOf(t, 'disk')!, disk.format ?? 'qcow2', f.disk, size);
          } else if (req.diskGiB !== undefined) {
            await createBlankDisk(f.disk, req.diskGiB * GiB);
          }
        }),
        step('seed', () =>
          buildSeedIso(f.seed, {
            instanceId: record.id,
            hostname: record.name,
            ...(req.sshKey ? { sshKey: req.sshKey, sshUser: SSH_USER } : {}),
            ...(req.userData ? { userData: req.userData } : {}),
          })),
        step('dhcp', async () => {
          revert.add('dhcp', () => removeReservation(net.name, record.mac, record.ip));
          await addReservation(net.name, record.mac, record.ip);
        }),
      ]);
      const failed = parallel.find((p) => p.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      // before define, so that the metadata records the port that really listens
      await step('forward', async () => {
        revert.add('forward', () => this.deps.forwarder.close(record.sshPort!));
        record.sshPort = await this.openForward(record);
      });
      await step('define', async () => {
        const xmlText = domainXml({
          name: dom,
          accel: this.deps.accel === 'kvm' ? 'kvm' : 'tcg',
          vcpus: record.vcpus,
          memoryMiB: record.memoryMiB,
          record,
          ...(hasDisk ? { disk: f.disk } : {}),
          seedIso: f.seed,
          ...(t.kind === 'kernel'
            ? { kernel: { kernel: this.deps.templates.pathOf(t, 'kernel')!, ...(this.deps.templates.pathOf(t, 'initrd') ? { initrd: this.deps.templates.pathOf(t, 'initrd')! } : {}), ...(t.cmdline ? { cmdline: t.cmdline } : {}) } }
            : {}),
          network: net.name,
          mac: record.mac,
          consoleSocket: f.socket,
          consoleLog: f.log,
          vnc: record.console === 'vnc',
        });
        revert.add('define', () => removeDomain(dom));
        await defineXml('define', xmlText);
      });
      await step('start', async () => {
        revert.add('start', () => removeDomain(dom));
        await virsh(['start', dom]);
      });
      await step('console', async () => {
        const bridge = new SerialBridge(f.socket, this.log);
        revert.add('console', () => {
          bridge.stop();
          this.bridges.delete(record.id);
        });
        this.bridges.set(record.id, bridge);
        bridge.poke();
      });
      revert.success();
      const vm = this.vms.get(record.id)!;
      vm.state = 'running';
      timings.totalMs = Math.round((performance.now() - started) * 10) / 10;
      this.lastCreate = timings;
      this.log.info('created VM', { vm: record.id, name: record.name, ms: timings.totalMs, steps: timings.steps });
      return this.info(vm);
    } catch (err) {
      await revert.fail();
      this.deps.forwarder.release(record.sshPort!);
      this.vms.delete(record.id);
      this.log.warn('create failed; steps undone', { vm: record.id, err });
      throw err;
    }
  }

  /**
   * Opens the VM's SSH forward on its reserved port; if another program holds that port, the next
   * free one of the range is tried (a few times) and the VM gets that one.
   */
  private async openForward(record: VmRecord): Promise<number> {
    const skipped = new Set<number>();
    let port = record.sshPort!;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.deps.forwarder.open(port, record.ip);
        return port;
      } catch (err) {
        if (!(err instanceof SkyError && err.code === 'port_in_use') || attempt >= 20) throw err;
        skipped.add(port);
        this.deps.forwarder.release(port);
        const taken = new Set([...skipped, ...[...this.vms.values()].map((v) => v.record.sshPort ?? 0)]);
        port = this.deps.forwarder.reserve(taken);
        this.log.warn('SSH port taken by another program: using the next one', { vm: record.id, port });
      }
    }
  }

  /** Runs `fn` with no other action or delete of the same VM at the same time. */
  private async exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(id) ?? Promise.resolve();
    const next = before.catch(() => undefined).then(fn);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  /** start | shutdown (ACPI, waits up to timeoutSeconds) | poweroff | reboot. */
  async action(id: string, action: VmAction, opts: { timeoutSeconds?: number } = {}): Promise<VmInfo> {
    const pending = this.creating.get(id);
    if (pending) await pending.catch(() => undefined);
    this.mustGet(id);
    return this.exclusive(id, async () => {
      const vm = this.mustGet(id);
      if (vm.state === 'deleting') throw new Conflict(`VM ${id} is being deleted`);
      const dom = domainName(this.deps.hostId, id);
      const now = (await domainState(dom)) ?? 'unknown';
      vm.state = now;
      switch (action) {
        case 'start':
          if (now !== 'running') {
            if (now === 'paused') await virsh(['resume', dom]);
            else await virsh(['start', dom]);
          }
          this.bridges.get(id)?.poke();
          break;
        case 'poweroff':
          await virsh(['destroy', dom]).catch((err: unknown) => {
            if (!isNotRunning(err)) throw err;
          });
          break;
        case 'reboot':
          if (now !== 'running') throw new Conflict(`VM ${id} is not running (it is ${now}): start it instead`);
          await virsh(['reboot', dom, '--mode', 'acpi']);
          break;
        case 'shutdown': {
          if (now !== 'running' && now !== 'paused') break;
          const timeout = (opts.timeoutSeconds ?? 60) * 1000;
          await virsh(['shutdown', dom, '--mode', 'acpi']);
          const until = Date.now() + timeout;
          while ((await domainState(dom)) !== 'shutoff') {
            if (Date.now() > until) {
              vm.state = (await domainState(dom)) ?? 'unknown';
              throw new SkyError(409, 'shutdown_timeout',
                `VM ${id} did not power off within ${timeout / 1000} s of the ACPI shutdown request (the guest may ignore it): it is still running; use poweroff to force it off`);
            }
            await new Promise((r) => setTimeout(r, 200));
          }
          break;
        }
      }
      vm.state = (await domainState(dom)) ?? 'unknown';
      return this.info(vm);
    });
  }

  /** Deletes a VM and everything it had (domain, disks, seed ISO, DHCP entry, port); a create in flight is awaited first. */
  async delete(id: string): Promise<void> {
    const pending = this.creating.get(id);
    if (pending) await pending.catch(() => undefined);
    this.mustGet(id);
    await this.exclusive(id, async () => {
      const vm = this.vms.get(id);
      if (!vm) return;
      vm.state = 'deleting';
      try {
        await this.teardown(vm.record);
      } catch (err) {
        vm.state = 'error';
        vm.error = `delete failed: ${(err as Error).message}`;
        throw err;
      }
      await this.forget(id);
      this.log.info('deleted VM', { vm: id, name: vm.record.name });
    });
  }

  private async teardown(r: VmRecord): Promise<void> {
    this.bridges.get(r.id)?.stop();
    if (r.sshPort) await this.deps.forwarder.close(r.sshPort);
    await removeDomain(domainName(this.deps.hostId, r.id));
    await removeReservation(r.network, r.mac, r.ip);
    await rm(this.vmDir(r.id), { recursive: true, force: true });
  }

  private async forget(id: string): Promise<void> {
    const vm = this.vms.get(id);
    this.bridges.get(id)?.stop();
    this.bridges.delete(id);
    if (vm?.record.sshPort) await this.deps.forwarder.close(vm.record.sshPort);
    this.vms.delete(id);
  }

  /** Lets go of consoles and forwards; VMs keep running (the next agent adopts them). */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.creating.values()]);
    for (const b of this.bridges.values()) b.stop();
    this.bridges.clear();
    await this.deps.forwarder.closeAll();
  }
}

