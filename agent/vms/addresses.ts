// A new VM's MAC and IP on the agent's network, chosen in memory at once so that simultaneous
// creates never clash. Reserved guest addresses are .2 to .199 (DHCP hands .200-.250 to strangers).
import { randomBytes } from 'node:crypto';
import { Unavailable } from '../../base/errors.ts';
import type { VmNetwork } from '../hypervisor/driver.ts';

export const FIRST_HOST = 2;
export const LAST_HOST = 199;

/** A random locally administered MAC in QEMU's 52:54:00 range, not in `taken`. */
export function newMac(taken: Set<string>): string {
  for (;;) {
    const b = randomBytes(3);
    const mac = `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
    if (!taken.has(mac)) return mac;
  }
}

/** The lowest free reserved address of the /24. */
export function freeIp(net: VmNetwork, taken: Set<string>): string {
  for (let h = FIRST_HOST; h <= LAST_HOST; h++) {
    const ip = `${net.prefix}.${h}`;
    if (!taken.has(ip)) return ip;
  }
  throw new Unavailable(`no free address left on network ${net.name}`);
}
