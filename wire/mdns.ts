// The mDNS contract between the controller and its agents (docs/design.md#mdns-record), as wire/api.ts
// is for HTTP: the DNS-SD service type and TXT record a controller publishes (`_skyhost._tcp`, TXT v,
// cluster, url, fp) and how an agent reads them. server/discovery.ts publishes it; agent/discovery/ browses for it.
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
  /**
   * TXT `fp`: the sha256 fingerprint of the controller's certificate. A hint only (anyone can
   * advertise anything): an agent trusts the certificate it pinned, never this.
   */
  fingerprint?: string;
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
    url = undefined; // no or a malformed TXT url: the sender's address below
  }
  if (url && sender && ['0.0.0.0', '127.0.0.1', 'localhost', '[::]', '[::1]'].includes(url.hostname)) url.hostname = sender;
  if (!url) {
    if (!sender || !service.port) return { invalid: 'TXT url missing and no sender address' };
    url = new URL(`http://${sender.includes(':') ? `[${sender}]` : sender}:${service.port}`);
  }
  const fp = str('fp')?.toLowerCase();
  return { name: service.name, clusterId: cluster.data, url: url.href.replace(/\/$/, ''), ...(fp && /^[0-9a-f]{64}$/.test(fp) ? { fingerprint: fp } : {}) };
}

/** multicast-dns emits 'error' for a busy port, which would crash the process with no listener. */
export function quietErrors(bonjour: Bonjour, log: Logger): void {
  const mdns = (bonjour as unknown as { server?: { mdns?: NodeJS.EventEmitter } }).server?.mdns;
  mdns?.on('error', (err: Error) => log.warn('mDNS socket error', { err: err.message }));
  mdns?.on('warning', (err: Error) => log.debug('mDNS warning', { err: err.message }));
}
