// The MAC address the controller needs to wake this machine: that of the interface that reaches the
// controller. Sent with the enrollment and in `/status` (wire/host.ts `mac`).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { localAddressTowards } from '../../base/net.ts';

const NO_MAC = '00:00:00:00:00:00';

/**
 * The MAC of the interface holding `address`. A bridge (a LAN bridged for VMs) answers with the MAC
 * of its physical port, the one the network card wakes for, when sysfs shows one.
 * @example macOfAddress('10.0.0.12') // 'aa:bb:cc:dd:ee:ff'
 */
export function macOfAddress(address: string, interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces(),
  sysfs = '/sys/class/net'): string | undefined {
  for (const [name, addrs] of Object.entries(interfaces)) {
    const a = (addrs ?? []).find((x) => x.address === address);
    if (!a || a.internal) continue;
    return physicalPortMac(name, sysfs) ?? (a.mac && a.mac !== NO_MAC ? a.mac.toLowerCase() : undefined);
  }
  return undefined;
}

/** The MAC of a bridge's first port that is a real device (has `device` in sysfs); undefined for anything else. */
export function physicalPortMac(iface: string, sysfs = '/sys/class/net'): string | undefined {
  const ports = path.join(sysfs, iface, 'brif');
  if (!existsSync(path.join(sysfs, iface, 'bridge')) || !existsSync(ports)) return undefined;
  for (const port of readdirSync(ports).sort()) {
    if (!existsSync(path.join(sysfs, port, 'device'))) continue; // a veth or a VM's tap: not what wakes the PC
    try {
      const mac = readFileSync(path.join(sysfs, port, 'address'), 'utf8').trim().toLowerCase();
      if (mac && mac !== NO_MAC) return mac;
    } catch {
      continue; // the port left the bridge while we read: try the next
    }
  }
  return undefined;
}

/** The MAC of the interface this machine uses to reach `url` (undefined: no route, or no MAC, e.g. a tunnel). */
export async function macTowards(url: string): Promise<string | undefined> {
  const local = await localAddressTowards(url);
  return local ? macOfAddress(local) : undefined;
}
