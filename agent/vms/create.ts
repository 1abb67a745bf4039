// Creating a VM: checks first, then a sequence of steps (folder, disk, seed ISO, DHCP reservation,
// SSH forward, define, start, console) with a reverter: a failure at any step undoes the ones before,
// newest first, so a failed create leaves nothing behind.
import { randomBytes } from 'node:crypto';
import { fromZod, SkyError } from '../../base/errors.ts';
import { VmCreateRequest, type TemplateInfo, type VmCreate, type VmInfo } from '../../wire/api.ts';
import { admitVm } from '../admission.ts';
import type { DiskSource, MachineSpec, VmMetadata } from '../hypervisor/driver.ts';
import { Reverter } from '../reverter.ts';
import { freeIp, newMac } from './addresses.ts';
import type { VmManager } from './manager.ts';

export const CREATE_STEPS = ['folder', 'disk', 'seed', 'dhcp', 'forward', 'define', 'start', 'console'] as const;
export type CreateStep = (typeof CREATE_STEPS)[number];

const GiB = 1024 ** 3;
/** The user cloud-init creates for the request's SSH key; the SSH command names it. */
export const SSH_USER = 'sky';

/** Checks a request against the host and the template before anything is done. */
async function admit(m: VmManager, req: VmCreate): Promise<TemplateInfo> {
  const names = [...m.vms.values()].map((vm) => vm.metadata.name);
  return admitVm(req, { hypervisor: m.deps.accel, template: await m.deps.templates.get(req.template), ids: new Set(m.vms.keys()), names });
}

/** Creates and starts a VM (POST /vms): answers once it runs, or undoes everything and throws. */
export async function createVm(m: VmManager, input: unknown): Promise<VmInfo> {
  const parsed = VmCreateRequest.safeParse(input);
  if (!parsed.success) throw fromZod(parsed.error);
  const req = parsed.data;
  const template = await admit(m, req);
  const net = await m.ensureNetwork();
  // the name may have been taken while the network was being created
  await admit(m, req);

  // allocated synchronously, so that simultaneous creates never clash
  const id = req.id ?? randomBytes(6).toString('hex');
  const all = [...m.vms.values()].map((v) => v.metadata);
  const metadata: VmMetadata = {
    hostId: m.deps.hostId,
    dataDir: m.deps.dataDir,
    id,
    name: req.name,
    ...(req.owner ? { owner: req.owner } : {}),
    template: template.name,
    vcpus: req.vcpus,
    memoryMiB: req.memoryMiB,
    ...(req.diskGiB !== undefined ? { diskGiB: req.diskGiB } : {}),
    mac: newMac(new Set(all.map((r) => r.mac))),
    ip: freeIp(net, new Set(all.map((r) => r.ip))),
    sshPort: m.deps.forwarder.reserve(new Set(all.map((r) => r.sshPort ?? 0))),
    ...(req.sshKey ? { sshUser: SSH_USER } : {}),
    console: template.console,
    network: net.name,
    createdAt: new Date().toISOString(),
    ...(req.expiresAt ? { expiresAt: req.expiresAt } : {}),
  };
  m.vms.set(id, { metadata, state: 'creating' });
  const job = build(m, metadata, req, template).finally(() => m.creating.delete(id));
  m.creating.set(id, job);
  return job;
}

async function build(m: VmManager, metadata: VmMetadata, req: VmCreate, t: TemplateInfo): Promise<VmInfo> {
  const hv = m.hypervisor;
  const id = metadata.id;
  const revert = new Reverter(m.log);
  const steps: Partial<Record<CreateStep, number>> = {};
  const step = async (name: CreateStep, work: () => Promise<unknown>) => {
    const t0 = performance.now();
    await work();
    steps[name] = Math.round((performance.now() - t0) * 10) / 10;
    await m.deps.afterStep?.(name, id);
  };
  const started = performance.now();
  try {
    await step('folder', async () => {
      revert.add('folder', () => hv.removeFiles(id));
      await hv.createFolder(id);
    });
    const disk = diskSource(m, t, req.diskGiB);
    // disk, seed ISO and DHCP entry do not depend on each other: done side by side
    const parallel = await Promise.allSettled([
      step('disk', async () => {
        if (disk) await hv.createDisk(id, disk);
      }),
      step('seed', () =>
        hv.createSeed(id, {
          instanceId: id,
          hostname: metadata.name,
          ...(req.sshKey ? { sshKey: req.sshKey, sshUser: SSH_USER } : {}),
          ...(req.userData ? { userData: req.userData } : {}),
        })),
      step('dhcp', async () => {
        revert.add('dhcp', () => hv.removeReservation(metadata.mac, metadata.ip));
        await hv.addReservation(metadata.mac, metadata.ip);
      }),
    ]);
    const failed = parallel.find((p) => p.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    // before define, so that the metadata records the port that really listens
    await step('forward', async () => {
      revert.add('forward', () => m.deps.forwarder.close(metadata.sshPort!));
      metadata.sshPort = await openForward(m, metadata);
    });
    await step('define', async () => {
      revert.add('define', () => hv.destroy(id));
      await hv.define(machineSpec(m, t, metadata, disk !== undefined));
    });
    await step('start', async () => {
      revert.add('start', () => hv.destroy(id));
      await hv.start(id);
    });
    await step('console', async () => {
      revert.add('console', () => {
        m.bridges.get(id)?.stop();
        m.bridges.delete(id);
      });
      (await m.openBridge(id)).poke();
    });
    revert.success();
    const vm = m.vms.get(id)!;
    vm.state = 'running';
    const ms = Math.round((performance.now() - started) * 10) / 10;
    m.log.info('created VM', { vm: id, name: metadata.name, ms, steps });
    return m.info(vm);
  } catch (err) {
    await revert.fail();
    m.deps.forwarder.release(metadata.sshPort!);
    m.vms.delete(id);
    m.log.warn('create failed; steps undone', { vm: id, err });
    throw err;
  }
}

/**
 * A VM's disk from its template: an overlay on the template's image (grown to `diskGiB` if given),
 * an empty disk of `diskGiB` (an installer ISO, or a kernel template without a disk), or none.
 */
export function diskSource(m: VmManager, t: TemplateInfo, diskGiB: number | undefined): DiskSource | undefined {
  const image = t.files.find((x) => x.role === 'disk');
  const sizeBytes = diskGiB !== undefined ? diskGiB * GiB : undefined;
  if (image) return { kind: 'overlay', image: m.deps.templates.pathOf(t, 'disk')!, format: image.format ?? 'qcow2', ...(sizeBytes ? { sizeBytes } : {}) };
  return sizeBytes ? { kind: 'blank', sizeBytes } : undefined;
}

/** What the VM is made of besides its files: a kernel template's kernel, an iso template's installer CD. */
function machineSpec(m: VmManager, t: TemplateInfo, metadata: VmMetadata, disk: boolean): MachineSpec {
  const kernel = m.deps.templates.pathOf(t, 'kernel');
  const initrd = m.deps.templates.pathOf(t, 'initrd');
  const installer = m.deps.templates.pathOf(t, 'iso');
  return {
    metadata,
    accel: m.deps.accel === 'kvm' ? 'kvm' : 'tcg',
    disk,
    ...(t.kind === 'kernel' && kernel ? { kernel: { kernel, ...(initrd ? { initrd } : {}), ...(t.cmdline ? { cmdline: t.cmdline } : {}) } } : {}),
    ...(t.kind === 'iso' && installer ? { installer } : {}),
  };
}

/**
 * Opens the VM's SSH forward on its reserved port; if another program holds that port, the next
 * free one of the range is tried (a few times) and the VM gets that one.
 */
async function openForward(m: VmManager, metadata: VmMetadata): Promise<number> {
  const skipped = new Set<number>();
  let port = metadata.sshPort!;
  for (let attempt = 0; ; attempt++) {
    try {
      await m.deps.forwarder.open(port, metadata.ip);
      return port;
    } catch (err) {
      if (!(err instanceof SkyError && err.code === 'port_in_use') || attempt >= 20) throw err;
      skipped.add(port);
      m.deps.forwarder.release(port);
      const taken = new Set([...skipped, ...[...m.vms.values()].map((v) => v.metadata.sshPort ?? 0)]);
      port = m.deps.forwarder.reserve(taken);
      m.log.warn('SSH port taken by another program: using the next one', { vm: metadata.id, port });
    }
  }
}
