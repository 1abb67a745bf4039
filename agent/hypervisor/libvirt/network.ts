// The agent's VM network: one libvirt NAT network of its own per agent (its own bridge and /24,
// created on first use and kept), and a DHCP reservation per VM MAC so the agent knows each VM's
// address without asking the guest. dnsmasq hands .200-.250 to strangers; .2-.199 are reserved.
import { run } from '../../../base/exec.ts';
import { CommandFailed, Unavailable } from '../../../base/errors.ts';
import type { Logger } from '../../../base/log.ts';
import type { VmNetwork } from '../driver.ts';
import { hostTag } from './domain.ts';
import { defineXml, isNoDomain, isNoNetwork, virsh } from './virsh.ts';
import { xml } from './xml.ts';

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

/** Reads an existing network's bridge and /24 from its XML. */
export function parseNetworkXml(name: string, text: string): VmNetwork | undefined {
  const ip = /<ip[^>]*address='(\d+\.\d+\.\d+)\.(\d+)'/.exec(text);
  const bridge = /<bridge[^>]*name='([^']+)'/.exec(text);
  if (!ip || !bridge) return undefined;
  return { name, bridge: bridge[1]!, prefix: ip[1]!, gateway: `${ip[1]}.${ip[2]}` };
}

/** The network's XML (`--inactive`: the persistent one), or undefined when there is no such network. */
async function networkDump(name: string, inactive = false): Promise<string | undefined> {
  try {
    return await virsh(['net-dumpxml', ...(inactive ? ['--inactive'] : []), name]);
  } catch (err) {
    if (isNoNetwork(err)) return undefined;
    throw err;
  }
}

/** /24 prefixes already used by an address or route of this machine, or by another libvirt network. */
async function usedPrefixes(log: Logger): Promise<Set<string>> {
  const used = new Set<string>();
  const out = (await run('ip', ['-o', '-4', 'addr', 'show'])).stdout + '\n' + (await run('ip', ['-4', 'route', 'show'])).stdout;
  for (const m of out.matchAll(/\b(\d+\.\d+\.\d+)\.\d+(?:\/\d+)?\b/g)) used.add(m[1]!);
  for (const net of (await virsh(['net-list', '--all', '--name'])).split('\n').filter(Boolean)) {
    // a network removed since the list was taken has no prefix to avoid
    const text = await networkDump(net);
    for (const m of (text ?? '').matchAll(/<ip[^>]*address='(\d+\.\d+\.\d+)\.\d+'/g)) used.add(m[1]!);
  }
  log.debug('subnets in use', { count: used.size });
  return used;
}

/**
 * The agent's NAT network, defined, autostarted and started on first use. The /24 is picked from
 * 10.213.0.0/16 (a free one, starting at a place derived from the host id).
 */
export async function ensureNetwork(hostId: string, log: Logger): Promise<VmNetwork> {
  const name = networkName(hostId);
  const existing = await networkDump(name);
  if (existing !== undefined) {
    const net = parseNetworkXml(name, existing);
    if (!net) throw new Unavailable(`libvirt network ${name} exists but has no bridge or IPv4 address: remove it (virsh net-undefine ${name})`);
    const info = await virsh(['net-info', name]);
    if (!/Active:\s+yes/.test(info)) await virsh(['net-start', name]);
    return net;
  }
  const used = await usedPrefixes(log);
  const start = parseInt(hostTag(hostId).slice(0, 4), 16);
  for (let i = 0; i < 250; i++) {
    const prefix = `10.213.${((start + i) % 250) + 1}`;
    if (used.has(prefix)) continue;
    const net: VmNetwork = { name, bridge: `skybr${hostTag(hostId)}`, prefix, gateway: `${prefix}.1` };
    try {
      await defineXml('net-define', networkXml(net));
    } catch (err) {
      // another agent of this host id defined it at the same moment
      if ((await networkDump(name)) !== undefined) return ensureNetwork(hostId, log);
      throw err;
    }
    try {
      await virsh(['net-autostart', name]);
      await virsh(['net-start', name]);
      log.info('created the VM network', { network: name, subnet: `${prefix}.0/24` });
      return net;
    } catch (err) {
      await removeNetwork(name);
      if (err instanceof CommandFailed && /in use|already|conflict/i.test(err.stderr)) {
        log.warn('subnet taken meanwhile: trying the next one', { network: name, subnet: `${prefix}.0/24`, err });
        continue;
      }
      throw err;
    }
  }
  throw new Unavailable('no free /24 in 10.213.0.0/16 for the VM network');
}

/** Stops and removes a network; one not running or already gone is fine (tests, and releaseNetwork). */
export async function removeNetwork(name: string): Promise<void> {
  try {
    await virsh(['net-destroy', name]);
  } catch (err) {
    if (!isNoNetwork(err) && !/not active/i.test((err as CommandFailed).stderr ?? '')) throw err;
  }
  try {
    await virsh(['net-undefine', name]);
  } catch (err) {
    if (!isNoNetwork(err)) throw err;
  }
}

/** A domain (any state) with an interface on `network`, if there is one: `virsh domiflist` of each until one is. */
async function domainOn(network: string): Promise<string | undefined> {
  for (const dom of (await virsh(['list', '--all', '--name'])).split('\n').map((l) => l.trim()).filter(Boolean)) {
    let table: string;
    try {
      table = await virsh(['domiflist', dom]);
    } catch (err) {
      // undefined since the list was taken: it uses nothing
      if (isNoDomain(err)) continue;
      throw err;
    }
    // rows: Interface Type Source Model MAC (`-` for the interface of a domain that is off)
    if (table.split('\n').some((row) => { const c = row.trim().split(/\s+/); return c[1] === 'network' && c[2] === network; })) return dom;
  }
  return undefined;
}

/**
 * Stops and removes the agent's network when no domain (running or off) is attached to it, so a
 * stopped agent leaves no bridge nothing uses; while any VM uses it, it stays. Returns what it did.
 */
export async function releaseNetwork(name: string, log: Logger): Promise<'removed' | 'in-use' | 'absent'> {
  if ((await networkDump(name, true)) === undefined) return 'absent';
  const user = await domainOn(name);
  if (user) {
    log.debug('keeping the VM network: a VM uses it', { network: name, domain: user });
    return 'in-use';
  }
  await removeNetwork(name);
  log.info('removed the VM network: no VM uses it', { network: name });
  return 'removed';
}

function hostEntry(mac: string, ip: string): string {
  return `<host mac='${xml(mac)}' ip='${xml(ip)}'/>`;
}

/** Adds a DHCP reservation MAC -> IP (live and persistent). */
export async function addReservation(network: string, mac: string, ip: string): Promise<void> {
  await virsh(['net-update', network, 'add-last', 'ip-dhcp-host', hostEntry(mac, ip), '--live', '--config']);
}

/** Removes a DHCP reservation; one already gone (or its network) is fine. */
export async function removeReservation(network: string, mac: string, ip: string): Promise<void> {
  try {
    await virsh(['net-update', network, 'delete', 'ip-dhcp-host', hostEntry(mac, ip), '--live', '--config']);
  } catch (err) {
    if (isNoNetwork(err)) return;
    if (err instanceof CommandFailed && /couldn't locate|not found|doesn't exist|no matching|does not exist/i.test(err.stderr)) return;
    throw err;
  }
}

/** MAC -> IP of every reservation in the network's persistent XML; empty when there is no network. */
export async function reservations(network: string): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  for (const m of ((await networkDump(network, true)) ?? '').matchAll(/<host\s+mac='([^']+)'[^>]*ip='([^']+)'/g)) map.set(m[1]!.toLowerCase(), m[2]!);
  return map;
}
