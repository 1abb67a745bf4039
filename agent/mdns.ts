// The mDNS contract between controller and agent (docs/design.md#mdns-record), like wire/api.ts for HTTP: the service
// type and TXT a controller publishes and how an agent reads them; and the choice of the LAN address,
// so that both sides advertise, browse and enroll over the LAN and never over a VM bridge.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { isIPv4 } from 'node:net';
import type { Bonjour, Service } from 'bonjour-service';
import { z } from 'zod';
import type { Logger } from '../base/log.ts';

/** The DNS-SD service type a controller publishes (`_skyhost._tcp`). */
export const SERVICE_TYPE = 'skyhost';
/** The TXT `v` this code speaks. */
export const TXT_VERSION = '1';
/** TXT `cluster`: the controller's cluster id. */
export const ClusterId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);

/** A controller as heard on the LAN. */
export interface ControllerAd {
  /** DNS-SD instance name, e.g. `SkyHost controller 3f9a1c2e`. */
  name: string;
  clusterId: string;
  /** Base URL to enroll with, from TXT `url` (or the sender's address when that is unusable). */
  url: string;
}

/** Reads a `_skyhost._tcp` service; undefined (with the reason) when it is not one we can use. */
export function parseAd(service: Pick<Service, 'name' | 'port' | 'txt' | 'referer'>): ControllerAd | { invalid: string } {
  const txt = (service.txt ?? {}) as Record<string, unknown>;
  const str = (k: string) => (typeof txt[k] === 'string' ? (txt[k] as string) : Buffer.isBuffer(txt[k]) ? (txt[k] as Buffer).toString() : undefined);
  const v = str('v');
  if (v !== TXT_VERSION) return { invalid: `TXT v=${v ?? '(none)'}, this agent speaks v=${TXT_VERSION}` };
  const cluster = ClusterId.safeParse(str('cluster'));
  if (!cluster.success) return { invalid: 'TXT cluster missing or malformed' };
  const sender = service.referer?.address;
  let url: URL | undefined;
  try {
    url = new URL(str('url') ?? '');
    if (url.protocol !== 'http:' && url.protocol !== 'https:') url = undefined;
  } catch {
    url = undefined;
  }
  if (url && sender && ['0.0.0.0', '127.0.0.1', 'localhost', '[::]', '[::1]'].includes(url.hostname)) url.hostname = sender;
  if (!url) {
    if (!sender || !service.port) return { invalid: 'TXT url missing and no sender address' };
    url = new URL(`http://${sender.includes(':') ? `[${sender}]` : sender}:${service.port}`);
  }
  return { name: service.name, clusterId: cluster.data, url: url.href.replace(/\/$/, '') };
}

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

/** multicast-dns emits 'error' for a busy port, which would crash the process with no listener. */
export function quietErrors(bonjour: Bonjour, log: Logger): void {
  const mdns = (bonjour as unknown as { server?: { mdns?: NodeJS.EventEmitter } }).server?.mdns;
  mdns?.on('error', (err: Error) => log.warn('mDNS socket error', { err: err.message }));
  mdns?.on('warning', (err: Error) => log.debug('mDNS warning', { err: err.message }));
}
