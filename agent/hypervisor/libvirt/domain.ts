// Domain XML of a VM and the names of libvirt objects. Pure: the XML is built from escaped values
// only, and names come from the host id and the VM id, never from user text.
import { createHash } from 'node:crypto';
import type { PowerState, VmMetadata } from '../driver.ts';
import { metadataXml } from './metadata.ts';
import { xml } from './xml.ts';

/** A short stable tag of a host id, used in libvirt object names (domains, network, bridge). */
export function hostTag(hostId: string): string {
  return createHash('sha256').update(hostId).digest('hex').slice(0, 8);
}

/** The libvirt domain name of a VM, e.g. `sky-1a2b3c4d-a1b2c3d4e5f6`. */
export function domainName(hostId: string, vmId: string): string {
  return `sky-${hostTag(hostId)}-${vmId}`;
}

export interface DomainXmlSpec {
  name: string;
  accel: 'kvm' | 'tcg';
  /** Size, network, MAC and console kind come from here; all of it is kept in <metadata>. */
  metadata: VmMetadata;
  /** A qcow2 disk of the VM (virtio), if any. */
  disk?: string;
  /** The NoCloud seed ISO (read-only CD-ROM). */
  seedIso?: string;
  /** Direct kernel boot. */
  kernel?: { kernel: string; initrd?: string; cmdline?: string };
  /** An installer ISO: a read-only CD-ROM booted after the disk (so from the CD while the disk is empty). */
  installerIso?: string;
  /** QEMU listens here for the serial console (one client) and logs the line to consoleLog. */
  consoleSocket: string;
  consoleLog: string;
}

/** The domain XML of a VM; every value from outside goes through xml(). */
export function domainXml(s: DomainXmlSpec): string {
  const m = s.metadata;
  const lines: string[] = [];
  lines.push(`<domain type='${s.accel === 'kvm' ? 'kvm' : 'qemu'}'>`);
  lines.push(`  <name>${xml(s.name)}</name>`);
  lines.push(`  <title>${xml(`SkyHost VM ${m.name}`)}</title>`);
  lines.push(`  <metadata>${metadataXml(m)}</metadata>`);
  lines.push(`  <memory unit='MiB'>${xml(m.memoryMiB)}</memory>`);
  lines.push(`  <vcpu>${xml(m.vcpus)}</vcpu>`);
  lines.push(`  <os>`);
  lines.push(`    <type arch='x86_64' machine='pc'>hvm</type>`);
  if (s.kernel) {
    lines.push(`    <kernel>${xml(s.kernel.kernel)}</kernel>`);
    if (s.kernel.initrd) lines.push(`    <initrd>${xml(s.kernel.initrd)}</initrd>`);
    if (s.kernel.cmdline) lines.push(`    <cmdline>${xml(s.kernel.cmdline)}</cmdline>`);
  } else if (!s.installerIso) {
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
    // the disk first, then the installer: an empty disk does not boot, an installed one does
    if (s.installerIso) lines.push(`      <boot order='1'/>`);
    lines.push(`    </disk>`);
  }
  if (s.seedIso) lines.push(...cdrom(s.seedIso, 'hdc'));
  if (s.installerIso) lines.push(...cdrom(s.installerIso, 'hdd', 2));
  lines.push(`    <interface type='network'>`);
  lines.push(`      <source network='${xml(m.network)}'/>`);
  lines.push(`      <mac address='${xml(m.mac)}'/>`);
  lines.push(`      <model type='virtio'/>`);
  lines.push(`    </interface>`);
  lines.push(`    <serial type='unix'>`);
  lines.push(`      <source mode='bind' path='${xml(s.consoleSocket)}'/>`);
  lines.push(`      <log file='${xml(s.consoleLog)}' append='on'/>`);
  lines.push(`      <target port='0'/>`);
  lines.push(`    </serial>`);
  if (m.console === 'vnc') {
    lines.push(`    <graphics type='vnc' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>`);
    lines.push(`    <video><model type='vga'/></video>`);
    lines.push(`    <input type='tablet' bus='usb'/>`);
  }
  lines.push(`    <memballoon model='none'/>`);
  lines.push(`  </devices>`);
  lines.push(`</domain>`);
  return lines.join('\n') + '\n';
}

/** A read-only IDE CD-ROM of an ISO file, booted in `bootOrder` if given. */
function cdrom(file: string, dev: 'hdc' | 'hdd', bootOrder?: number): string[] {
  return [
    `    <disk type='file' device='cdrom'>`,
    `      <driver name='qemu' type='raw'/>`,
    `      <source file='${xml(file)}'/>`,
    `      <target dev='${dev}' bus='ide'/>`,
    `      <readonly/>`,
    ...(bootOrder !== undefined ? [`      <boot order='${bootOrder}'/>`] : []),
    `    </disk>`,
  ];
}

/** libvirt's words for a domain state, as SkyHost's. */
export function toState(virshState: string): PowerState {
  const s = virshState.trim().toLowerCase();
  if (s === 'running' || s === 'in shutdown' || s === 'idle' || s === 'blocked') return 'running';
  if (s === 'shut off' || s === 'shutoff' || s === 'crashed') return 'shutoff';
  if (s === 'paused' || s === 'pmsuspended') return 'paused';
  return 'unknown';
}
