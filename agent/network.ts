// VM networking: one libvirt NAT network of SkyHost's own per agent (its own bridge and /24,
// created on first use and kept), and a DHCP reservation per VM MAC so the agent knows each VM's
// address without asking the guest.
import { randomBytes } from 'node:crypto';
import { run } from '../base/exec.ts';
import { CommandFailed, Unavailable } from '../base/errors.ts';
import { defineXml, hostTag, virsh, xml } from './libvirt.ts';

export interface VmNetwork {
  /** libvirt network name, e.g. `skyhost-1a2b3c4d`. */
  name: string;
  bridge: string;
  /** The first three octets of the /24, e.g. `10.213.7`. */
  prefix: string;
  gateway: string;
}

/** Reserved guest addresses are .2 to .199; dnsmasq hands .200-.250 to strangers. */
export const FIRST_HOST = 2;
export const LAST_HOST = 199;

export function networkName(hostId: string): string {
  return `skyhost-${hostTag(hostId)}`;
}

export function networkXml(n: VmNetwork): string {
  return [
    `<network>`,
    `  <name>${xml(n.name)}</name>`,
    `  <forward mode='nat'/>`,
    `  <bridge name='${xml(n.bridge)}' stp='off' delay='0'/>`,
    `  <ip address='${xml(n.gateway)}' netmask='255.255.255.0'>`,
    `    <dhcp><range start='${xml(n.prefix)}.200' end='${xml(n.prefix)}.250'/></dhcp>`,
    `  </ip>`,
    `</network>`,
    '',
  ].join('\n');
}

/** /24 prefixes already used by an address or route of this machine. */
async function usedPrefixes(): Promise<Set<string>> {
  const used = new Set<string>();
  const out = (await run('ip', ['-o', '-4', 'addr', 'show'])).stdout + '\n' + (await run('ip', ['-4', 'route', 'show'])).stdout;
  for (const m of out.matchAll(/\b(\d+\.\d+\.\d+)\.\d+(?:\/\d+)?\b/g)) used.add(m[1]!);
  try {
    for (const net of (await virsh(['net-list', '--all', '--name'])).split('\n').filter(Boolean)) {
      const x = await virsh(['net-dumpxml', net]).catch(() => '');
      for (const m of x.matchAll(/<ip[^>]*address='(\d+\.\d+\.\d+)\.\d+'/g)) used.add(m[1]!);
    }
  } catch {
    // libvirt's own list is a courtesy check; routes above are what must not clash
  }
  return used;
}

/** Reads an existing network's bridge and /24 from its XML. */
export function parseNetworkXml(name: string, text: string): VmNetwork | undefined {
  const ip = /<ip[^>]*address='(\d+\.\d+\.\d+)\.(\d+)'/.exec(text);
  const bridge = /<bridge[^>]*name='([^']+)'/.exec(text);
  if (!ip || !bridge) return undefined;
  return { name, bridge: bridge[1]!, prefix: ip[1]!, gateway: `${ip[1]}.${ip[2]}` };
}

/**
 * The agent's NAT network, defined, autostarted and started on first use. The /24 is picked from
 * 10.213.0.0/16 (a free one, starting at a place derived from the host id).
 */
export async function ensureNetwork(hostId: string): Promise<VmNetwork> {
  const name = networkName(hostId);
  const existing = await virsh(['net-dumpxml', name]).catch(() => undefined);
  if (existing !== undefined) {
    const net = parseNetworkXml(name, existing);
    if (!net) throw new Unavailable(`libvirt network ${name} exists but has no bridge or IPv4 address: remove it (virsh net-undefine ${name})`);
    const info = await virsh(['net-info', name]);
    if (!/Active:\s+yes/.test(info)) await virsh(['net-start', name]);
    return net;
  }
  const used = await usedPrefixes();
  const start = parseInt(hostTag(hostId).slice(0, 4), 16);
  for (let i = 0; i < 250; i++) {
    const prefix = `10.213.${((start + i) % 250) + 1}`;
    if (used.has(prefix)) continue;
    const net: VmNetwork = { name, bridge: `skybr${hostTag(hostId)}`, prefix, gateway: `${prefix}.1` };
    try {
      await defineXml('net-define', networkXml(net));
    } catch (err) {
      // another agent of this host id defined it at the same moment
      const again = await virsh(['net-dumpxml', name]).catch(() => undefined);
      if (again !== undefined) return ensureNetwork(hostId);
      throw err;
    }
    try {
      await virsh(['net-autostart', name]);
      await virsh(['net-start', name]);
      return net;
    } catch (err) {
      await virsh(['net-undefine', name]).catch(() => undefined);
      if (err instanceof CommandFailed && /in use|already|conflict/i.test(err.stderr)) continue;
      throw err;
    }
  }
  throw new Unavailable('no free /24 in 10.213.0.0/16 for the VM network');
}

/** Stops and removes the network (tests; `skyhost agent` keeps it). */
export async function removeNetwork(name: string): Promise<void> {
  await virsh(['net-destroy', name]).catch(() => undefined);
  await virsh(['net-undefine', name]).catch(() => undefined);
}

function hostEntry(mac: string, ip: string): string {
  return `<host mac='${xml(mac)}' ip='${xml(ip)}'/>`;
}

/** Adds a DHCP reservation MAC -> IP (live and persistent). */
export async function addReservation(network: string, mac: string, ip: string): Promise<void> {
  await virsh(['net-update', network, 'add-last', 'ip-dhcp-host', hostEntry(mac, ip), '--live', '--config']);
}

/** Removes a DHCP reservation; one already gone is fine. */
export async function removeReservation(network: string, mac: string, ip: string): Promise<void> {
  try {
    await virsh(['net-update', network, 'delete', 'ip-dhcp-host', hostEntry(mac, ip), '--live', '--config']);
  } catch (err) {
    if (err instanceof CommandFailed && /couldn't locate|not found|doesn't exist|no matching|does not exist/i.test(err.stderr)) return;
    throw err;
  }
}

/** MAC -> IP of every reservation in the network's persistent XML. */
export async function reservations(network: string): Promise<Map<string, string>> {
  const out = await virsh(['net-dumpxml', '--inactive', network]);
  const map = new Map<string, string>();
  for (const m of out.matchAll(/<host\s+mac='([^']+)'[^>]*ip='([^']+)'/g)) map.set(m[1]!.toLowerCase(), m[2]!);
  return map;
}

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
