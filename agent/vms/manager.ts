// The VMs of this host as the agent holds them: each VM's metadata (kept with the VM in the
// hypervisor, the one source of truth), its state now, and its console bridge; one action or delete
// at a time per VM. The work lives beside this file: create.ts (with its reverter), actions.ts
// (power actions, delete), adoption.ts (taking VMs back after a restart), save.ts (save as template),
// reset.ts (reset to template).
import type { Logger } from '../../base/log.ts';
import { Conflict, NotFound, Unavailable } from '../../base/errors.ts';
import type { TemplateInfo, VmAction, VmInfo, VmState } from '../../wire/api.ts';
import { SCROLLBACK_BYTES, SerialBridge } from '../console.ts';
import type { SshForwarder } from '../forwarder.ts';
import type { Hypervisor, VmMetadata, VmNetwork } from '../hypervisor/driver.ts';
import type { TemplateCatalog } from '../templates.ts';
import { deleteVm, runAction } from './actions.ts';
import { adoptVms } from './adoption.ts';
import { createVm, type CreateStep } from './create.ts';
import { resetVm } from './reset.ts';
import { saveAsTemplate } from './save.ts';
import { VmUsage } from '../vm-usage.ts';

export interface VmManagerDeps {
  hostId: string;
  dataDir: string;
  accel: 'kvm' | 'tcg' | 'none';
  hypervisor: Hypervisor;
  templates: TemplateCatalog;
  forwarder: SshForwarder;
  /** The address people use to reach this host's SSH ports (its LAN IP). */
  sshHost: string;
  log: Logger;
  /** Test hook run after each create step: throwing there is a failure at that step. */
  afterStep?: (step: CreateStep, vmId: string) => void | Promise<void>;
}

/** A VM this agent manages: SkyHost's record of it, its state now, and why it failed (state `error`). */
export interface ManagedVm {
  metadata: VmMetadata;
  state: VmState;
  error?: string;
}

export class VmManager {
  readonly deps: VmManagerDeps;
  readonly log: Logger;
  readonly hypervisor: Hypervisor;
  readonly vms = new Map<string, ManagedVm>();
  /** Creates in flight, by VM id. */
  readonly creating = new Map<string, Promise<VmInfo>>();
  readonly bridges = new Map<string, SerialBridge>();
  /** Each running VM's CPU and memory, sampled with the status (vm-usage.ts). */
  readonly usage = new VmUsage();
  private readonly locks = new Map<string, Promise<unknown>>();
  private network: Promise<VmNetwork> | undefined;
  private refreshedAt = 0;
  private refreshing: Promise<void> | undefined;

  constructor(deps: VmManagerDeps) {
    this.deps = deps;
    this.log = deps.log;
    this.hypervisor = deps.hypervisor;
  }

  /** The agent's NAT network, created on first use. */
  ensureNetwork(): Promise<VmNetwork> {
    this.network ??= this.hypervisor.ensureNetwork().catch((err: unknown) => {
      this.network = undefined; // the next create tries again
      throw err;
    });
    return this.network;
  }

  /** Takes back every VM of this host the hypervisor has (agent start); returns how many. */
  adopt(): Promise<number> {
    return adoptVms(this);
  }

  /** Creates and starts a VM; every step done is undone if a later one fails. */
  create(input: unknown): Promise<VmInfo> {
    return createVm(this, input);
  }

  /** start | shutdown (ACPI, waits up to timeoutSeconds) | poweroff | reboot. */
  action(id: string, action: VmAction, opts: { timeoutSeconds?: number } = {}): Promise<VmInfo> {
    return runAction(this, id, action, opts);
  }

  /** A stopped VM's disk, flattened into a new template of this host (save.ts). */
  saveAsTemplate(id: string, input: unknown): Promise<TemplateInfo> {
    return saveAsTemplate(this, id, input);
  }

  /** A fresh disk from the VM's template in place of its own; same id, name and address (reset.ts). */
  reset(id: string): Promise<VmInfo> {
    return resetVm(this, id);
  }

  /** Deletes a VM and everything it had; a create in flight is awaited first. */
  delete(id: string): Promise<void> {
    return deleteVm(this, id);
  }

  /** States younger than `maxAgeMs` are kept; else one refresh (shared by callers arriving together). */
  async refreshIfOlder(maxAgeMs: number): Promise<void> {
    if (performance.now() - this.refreshedAt < maxAgeMs) return;
    this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined));
    await this.refreshing;
  }

  /** Re-reads every VM's state from the hypervisor (one cheap call); VMs whose domain vanished are dropped. */
  async refresh(): Promise<void> {
    this.refreshedAt = performance.now();
    // Only VMs settled before the list was taken: one whose create ends meanwhile is not in it yet.
    const settled = new Set([...this.vms].filter(([, vm]) => vm.state !== 'creating' && vm.state !== 'deleting').map(([id]) => id));
    const states = await this.hypervisor.states();
    for (const [id, vm] of this.vms) {
      if (!settled.has(id) || vm.state === 'creating' || vm.state === 'deleting') continue;
      const state = states.get(id);
      if (state === undefined) {
        if (vm.state === 'error') continue;
        this.log.warn('VM disappeared from the hypervisor', { vm: id });
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

  mustGet(id: string): ManagedVm {
    const vm = this.vms.get(id);
    if (!vm) throw new NotFound(`VM ${id}`);
    return vm;
  }

  info(vm: ManagedVm): VmInfo {
    const m = vm.metadata;
    const ssh = this.deps.sshHost;
    return {
      id: m.id,
      name: m.name,
      ...(m.owner ? { owner: m.owner } : {}),
      template: m.template,
      state: vm.state,
      vcpus: m.vcpus,
      memoryMiB: m.memoryMiB,
      ...(m.diskGiB !== undefined ? { diskGiB: m.diskGiB } : {}),
      mac: m.mac,
      ip: m.ip,
      ...(m.sshPort ? { ssh: { host: ssh, port: m.sshPort, command: `ssh -p ${m.sshPort} ${m.sshUser ? `${m.sshUser}@` : ''}${ssh}`, ...(m.sshUser ? { user: m.sshUser } : {}) } } : {}),
      console: m.console,
      hypervisor: this.deps.accel,
      createdAt: m.createdAt,
      ...(m.expiresAt ? { expiresAt: m.expiresAt } : {}),
      ...(vm.error ? { error: vm.error } : {}),
      ...(vm.state === 'running' && this.usage.of(m.id) ? { usage: this.usage.of(m.id) } : {}),
    };
  }

  /** Memory of running VMs (and VMs being created), in MiB. */
  memoryInUse(): number {
    let sum = 0;
    for (const v of this.vms.values()) if (v.state === 'running' || v.state === 'creating') sum += v.metadata.memoryMiB;
    return sum;
  }

  /** VMs (by name) that use a template. */
  usersOf(template: string): string[] {
    return [...this.vms.values()].filter((v) => v.metadata.template === template).map((v) => v.metadata.name);
  }

  bridge(id: string): SerialBridge {
    this.mustGet(id);
    const b = this.bridges.get(id);
    if (!b) throw new Unavailable(`the console of VM ${id} is not ready yet`);
    return b;
  }

  /** A console bridge for the VM, starting with what its guest printed so far. */
  async openBridge(id: string): Promise<SerialBridge> {
    const line = this.hypervisor.console(id);
    const history = await line.history(SCROLLBACK_BYTES).catch((err: unknown) => {
      this.log.warn('could not read the console log: viewers start without scrollback', { vm: id, err });
      return Buffer.alloc(0);
    });
    const bridge = new SerialBridge(line, this.log.child({ vm: id }), history, () => this.hypervisor.state(id));
    this.bridges.set(id, bridge);
    return bridge;
  }

  /** The VNC port of a graphical VM. */
  async vncPort(id: string): Promise<number> {
    const vm = this.mustGet(id);
    if (vm.metadata.console !== 'vnc') throw new Conflict(`VM ${id} has a serial console, not a graphical one`);
    return this.hypervisor.vncPort(id);
  }

  /** Runs `fn` with no other action or delete of the same VM at the same time. */
  async exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(id) ?? Promise.resolve();
    // the previous action's failure was answered to its own caller; this one runs after it either way
    const next = before.catch(() => undefined).then(fn);
    this.locks.set(id, next);
    try {
      return await next;
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id);
    }
  }

  /** Drops a VM from memory with its console bridge and SSH forward (the hypervisor is not touched). */
  async forget(id: string): Promise<void> {
    const vm = this.vms.get(id);
    this.bridges.get(id)?.stop();
    this.bridges.delete(id);
    if (vm?.metadata.sshPort) await this.deps.forwarder.close(vm.metadata.sshPort);
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
