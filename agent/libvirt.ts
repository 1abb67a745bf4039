// Everything SkyHost says to libvirt goes through `virsh -c qemu:///system` with argument arrays
// (base/exec.ts). Domain XML is built here from escaped values only, and SkyHost's own record
// of a VM lives in the domain's <metadata> under SkyHost's namespace, so libvirt stays the one
// source of truth and a restarted agent finds its VMs again.
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, type RunOptions } from '../base/exec.ts';
import { CommandFailed } from '../base/errors.ts';

export const LIBVIRT_URI = 'qemu:///system';
export const METADATA_NS = 'https://skyhost.dev/xmlns/vm/1';
const METADATA_PREFIX = 'skyhost';

/** Runs `virsh -c qemu:///system ARGS...`. */
export async function virsh(args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run('virsh', ['-c', LIBVIRT_URI, '-q', ...args], { timeout: 60_000, ...opts });
  return r.stdout;
}

/** `virsh define FILE` / `virsh net-define FILE` of an XML document (virsh reads a file, not stdin). */
export async function defineXml(command: 'define' | 'net-define', text: string): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'skyhost-xml-'));
  try {
    const file = path.join(dir, 'object.xml');
    await writeFile(file, text, { mode: 0o600 });
    await virsh([command, file]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Escapes a value for XML text or a quoted attribute. */
export function xml(value: string | number): string {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

export function unxml(value: string): string {
  return value
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&#(\d+);/g, (_m, n: string) => String.fromCodePoint(Number(n)))
    .replace(/&amp;/g, '&');
}

/** A short stable tag of a host id, used in libvirt object names (domains, network, bridge). */
export function hostTag(hostId: string): string {
  return createHash('sha256').update(hostId).digest('hex').slice(0, 8);
}

/** The libvirt domain name of a VM: unique per host id and VM id, never user text. */
export function domainName(hostId: string, vmId: string): string {
  return `sky-${hostTag(hostId)}-${vmId}`;
}

/** SkyHost's record of a VM, kept in the domain's metadata. */
export interface VmRecord {
  hostId: string;
  /** The agent's data folder (several agents on one machine each have their own). */
  dataDir: string;
  id: string;
  name: string;
  owner?: string;
  template: string;
  vcpus: number;
  memoryMiB: number;
  diskGiB?: number;
  mac: string;
  ip: string;
  sshPort?: number;
  /** The user cloud-init made for the request's SSH key (absent: no key was given). */
  sshUser?: string;
  console: 'serial' | 'vnc';
  network: string;
  createdAt: string;
  expiresAt?: string;
}

const RECORD_FIELDS: (keyof VmRecord)[] = [
  'hostId', 'dataDir', 'id', 'name', 'owner', 'template', 'vcpus', 'memoryMiB', 'diskGiB', 'mac', 'ip', 'sshPort',
  'sshUser', 'console', 'network', 'createdAt', 'expiresAt',
];
const NUMBER_FIELDS = new Set<keyof VmRecord>(['vcpus', 'memoryMiB', 'diskGiB', 'sshPort']);

/** The metadata element (one child per field). */
export function recordXml(r: VmRecord): string {
  const children = RECORD_FIELDS.filter((k) => r[k] !== undefined).map((k) => `<${METADATA_PREFIX}:${k}>${xml(r[k] as string | number)}</${METADATA_PREFIX}:${k}>`);
  return `<${METADATA_PREFIX}:vm xmlns:${METADATA_PREFIX}="${METADATA_NS}">${children.join('')}</${METADATA_PREFIX}:vm>`;
}

/** Reads a record back from the metadata element (as written by recordXml, with any prefix). */
export function parseRecord(text: string): VmRecord | undefined {
  const out: Record<string, string | number> = {};
  for (const k of RECORD_FIELDS) {
    const m = new RegExp(`<(?:[A-Za-z_][\\w.-]*:)?${k}>([^<]*)</(?:[A-Za-z_][\\w.-]*:)?${k}>`).exec(text);
    if (m) out[k] = NUMBER_FIELDS.has(k) ? Number(m[1]) : unxml(m[1]!);
  }
  for (const k of ['hostId', 'id', 'name', 'template', 'mac', 'ip', 'network'] as const) if (typeof out[k] !== 'string') return undefined;
  return out as unknown as VmRecord;
}

export interface DomainSpec {
  name: string;
  uuid?: string;
  accel: 'kvm' | 'tcg';
  vcpus: number;
  memoryMiB: number;
  record: VmRecord;
  /** A qcow2 disk of the VM (virtio), if any. */
  disk?: string;
  /** The NoCloud seed ISO (read-only CD-ROM). */
  seedIso?: string;
  /** Direct kernel boot. */
  kernel?: { kernel: string; initrd?: string; cmdline?: string };
  network: string;
  mac: string;
  consoleSocket: string;
  consoleLog: string;
  vnc: boolean;
}

/** The domain XML of a VM; every value from outside goes through xml(). */
export function domainXml(s: DomainSpec): string {
  const lines: string[] = [];
  lines.push(`<domain type='${s.accel === 'kvm' ? 'kvm' : 'qemu'}'>`);
  lines.push(`  <name>${xml(s.name)}</name>`);
  if (s.uuid) lines.push(`  <uuid>${xml(s.uuid)}</uuid>`);
  lines.push(`  <title>${xml(`SkyHost VM ${s.record.name}`)}</title>`);
  lines.push(`  <metadata>${recordXml(s.record)}</metadata>`);
  lines.push(`  <memory unit='MiB'>${xml(s.memoryMiB)}</memory>`);
  lines.push(`  <vcpu>${xml(s.vcpus)}</vcpu>`);
  lines.push(`  <os>`);
  lines.push(`    <type arch='x86_64' machine='pc'>hvm</type>`);
  if (s.kernel) {
    lines.push(`    <kernel>${xml(s.kernel.kernel)}</kernel>`);
    if (s.kernel.initrd) lines.push(`    <initrd>${xml(s.kernel.initrd)}</initrd>`);
    if (s.kernel.cmdline) lines.push(`    <cmdline>${xml(s.kernel.cmdline)}</cmdline>`);
  } else {
    lines.push(`    <boot dev='hd'/>`);
  }
  lines.push(`  </os>`);
  lines.push(`  <features><acpi/><apic/></features>`);
  if (s.accel === 'kvm') lines.push(`  <cpu mode='host-passthrough'/>`);
  lines.push(`  <on_poweroff>destroy</on_poweroff>`);
  lines.push(`  <on_reboot>restart</on_reboot>`);
  lines.push(`  <on_crash>destroy</on_crash>`);
  lines.push(`  <devices>`);
  if (s.disk) {
    lines.push(`    <disk type='file' device='disk'>`);
    lines.push(`      <driver name='qemu' type='qcow2' discard='unmap'/>`);
    lines.push(`      <source file='${xml(s.disk)}'/>`);
    lines.push(`      <target dev='vda' bus='virtio'/>`);
    lines.push(`    </disk>`);
  }
  if (s.seedIso) {
    lines.push(`    <disk type='file' device='cdrom'>`);
    lines.push(`      <driver name='qemu' type='raw'/>`);
    lines.push(`      <source file='${xml(s.seedIso)}'/>`);
    lines.push(`      <target dev='hdc' bus='ide'/>`);
    lines.push(`      <readonly/>`);
    lines.push(`    </disk>`);
  }
  lines.push(`    <interface type='network'>`);
  lines.push(`      <source network='${xml(s.network)}'/>`);
  lines.push(`      <mac address='${xml(s.mac)}'/>`);
  lines.push(`      <model type='virtio'/>`);
  lines.push(`    </interface>`);
  lines.push(`    <serial type='unix'>`);
  lines.push(`      <source mode='bind' path='${xml(s.consoleSocket)}'/>`);
  lines.push(`      <log file='${xml(s.consoleLog)}' append='on'/>`);
  lines.push(`      <target port='0'/>`);
  lines.push(`    </serial>`);
  if (s.vnc) {
    lines.push(`    <graphics type='vnc' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>`);
    lines.push(`    <video><model type='vga'/></video>`);
    lines.push(`    <input type='tablet' bus='usb'/>`);
  }
  lines.push(`    <memballoon model='none'/>`);
  lines.push(`  </devices>`);
  lines.push(`</domain>`);
  return lines.join('\n') + '\n';
}

export type DomainState = 'running' | 'shutoff' | 'paused' | 'unknown';

/** libvirt's words for a domain state, as SkyHost's. */
export function toState(virshState: string): DomainState {
  const s = virshState.trim().toLowerCase();
  if (s === 'running' || s === 'in shutdown' || s === 'idle' || s === 'blocked') return 'running';
  if (s === 'shut off' || s === 'shutoff' || s === 'crashed') return 'shutoff';
  if (s === 'paused' || s === 'pmsuspended') return 'paused';
  return 'unknown';
}

/** Every domain of the connection with its state (`virsh list --all`). */
export async function listDomains(): Promise<Map<string, DomainState>> {
  const out = await virsh(['list', '--all']);
  const states = new Map<string, DomainState>();
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+(\S+)\s+(.+?)\s*$/.exec(line);
    if (m) states.set(m[2]!, toState(m[3]!));
  }
  return states;
}

export async function domainState(name: string): Promise<DomainState | undefined> {
  try {
    return toState(await virsh(['domstate', name]));
  } catch (err) {
    if (isNoDomain(err)) return undefined;
    throw err;
  }
}

/** SkyHost's record of a domain, or undefined if it has none (not ours). */
export async function readRecord(name: string): Promise<VmRecord | undefined> {
  try {
    return parseRecord(await virsh(['metadata', name, METADATA_NS]));
  } catch (err) {
    if (err instanceof CommandFailed) return undefined;
    throw err;
  }
}

/** Whether a virsh failure says the domain does not exist. */
export function isNoDomain(err: unknown): boolean {
  return err instanceof CommandFailed && /failed to get domain|Domain not found|no domain with matching/i.test(err.stderr);
}

export function isNotRunning(err: unknown): boolean {
  return err instanceof CommandFailed && /domain is not running|not running/i.test(err.stderr);
}

/** `virsh version` -> libvirt and QEMU versions. */
export async function versions(): Promise<{ libvirt?: string; qemu?: string }> {
  try {
    const out = await virsh(['version']);
    const libvirt = /Using library: libvirt (\S+)/.exec(out)?.[1];
    const qemu = /Running hypervisor: QEMU (\S+)/.exec(out)?.[1];
    return { ...(libvirt ? { libvirt } : {}), ...(qemu ? { qemu } : {}) };
  } catch {
    return {};
  }
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
