// This machine's LAN address: the one the controller advertises and agents browse and enroll from,
// never a VM bridge, container bridge or tunnel; and the source address towards another machine.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { isIPv4 } from 'node:net';

/** Interface names of VM bridges, containers and tunnels: never the LAN. */
const NOT_LAN = /^(virbr|vnet|tap|tun|docker|br-|veth|lxcbr|lxdbr|incusbr|podman|cni|flannel|vmbr|skybr|wg)/;

export interface LanChoice {
  iface: string;
  ip: string;
}

/**
 * The LAN address: `lanInterface` (an interface name or one of this machine's IPv4 addresses) when
 * set; else the interface of the default route; else the first non-internal IPv4 address that is
 * not on a VM bridge.
 */
export function pickLanAddress(opts: {
  lanInterface?: string | undefined;
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>;
  defaultRouteIfaces: string[];
}): LanChoice | undefined {
  const v4 = (name: string) => (opts.interfaces[name] ?? []).find((a) => a.family === 'IPv4' && !a.internal);
  if (opts.lanInterface) {
    if (isIPv4(opts.lanInterface)) {
      for (const [name, addrs] of Object.entries(opts.interfaces)) {
        if ((addrs ?? []).some((a) => a.address === opts.lanInterface)) return { iface: name, ip: opts.lanInterface };
      }
      return undefined;
    }
    const a = v4(opts.lanInterface);
    return a ? { iface: opts.lanInterface, ip: a.address } : undefined;
  }
  for (const name of opts.defaultRouteIfaces) {
    const a = !NOT_LAN.test(name) ? v4(name) : undefined;
    if (a) return { iface: name, ip: a.address };
  }
  for (const name of Object.keys(opts.interfaces).sort()) {
    const a = !NOT_LAN.test(name) ? v4(name) : undefined;
    if (a) return { iface: name, ip: a.address };
  }
  return undefined;
}

/** Interfaces carrying an IPv4 default route, lowest metric first (from /proc/net/route's text). */
export function defaultRouteIfaces(procNetRoute: string): string[] {
  return procNetRoute
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && f[1] === '00000000' && f[7] === '00000000')
    .sort((a, b) => Number(a[6]) - Number(b[6]))
    .map((f) => f[0]!);
}

/** This machine's LAN address now (see pickLanAddress). */
export function lanAddress(lanInterface?: string): LanChoice | undefined {
  let routes = '';
  try {
    routes = readFileSync('/proc/net/route', 'utf8');
  } catch {
    // not Linux: fall back to the interface list
  }
  return pickLanAddress({ lanInterface, interfaces: os.networkInterfaces(), defaultRouteIfaces: defaultRouteIfaces(routes) });
}


/**
 * The source address this machine uses to reach `url`'s host: a UDP connect, nothing is sent.
 * Undefined when there is no route.
 * @example await localAddressTowards('http://10.0.0.5:8080') // '10.0.0.12'
 */
export function localAddressTowards(url: string): Promise<string | undefined> {
  const { hostname, port, protocol } = new URL(url);
  const host = hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const done = (address: string | undefined) => {
      sock.close();
      resolve(address);
    };
    sock.on('error', () => done(undefined)); // no route (ENETUNREACH) or a bad address: the answer is "none"
    sock.connect(Number(port) || (protocol === 'https:' ? 443 : 80), host, () => {
      try {
        done(sock.address().address);
      } catch {
        done(undefined); // the socket closed between connect and address(): as good as no route
      }
    });
  });
}
