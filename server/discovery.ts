// Zero-config enrollment, the controller's side (docs/design.md#mdns-record): publish `_skyhost._tcp` (TXT v, cluster,
// url, fp: the certificate's fingerprint, a hint only) and `_http._tcp` (the web page) over the LAN interface only, re-announce periodically, and say
// goodbye on stop or SIGTERM/SIGINT. Liveness of hosts comes from polling, never from mDNS.
import { Bonjour, type Service } from 'bonjour-service';
import type { Logger } from '../base/log.ts';
import { lanAddress } from '../base/net.ts';
import { quietErrors, SERVICE_TYPE, TXT_VERSION } from '../wire/mdns.ts';

export interface AdvertiseOptions {
  clusterId: string;
  /** Base URL agents enroll with and people open, e.g. `http://10.0.0.5:8080`. */
  url: string;
  port: number;
  /** sha256 of the controller's certificate, published as TXT `fp` (a hint: agents trust by pinning, never by TXT). */
  fingerprint?: string | undefined;
  /** The port `_http._tcp` (the web page) names, when not `port`. */
  pagePort?: number | undefined;
  /** The LAN address to send from (default: the LAN address, see `lanAddress`). */
  lanIp?: string | undefined;
  log: Logger;
  /** Milliseconds between re-announcements (default 60 s). */
  reannounceMs?: number;
  /** Say goodbye on SIGTERM/SIGINT by itself (default true). The caller still decides when to exit. */
  handleSignals?: boolean;
}

export interface Advertisement {
  /** The `_skyhost._tcp` instance name. */
  name: string;
  /** Sends goodbyes (TTL 0) and closes the mDNS socket. Safe to call twice. */
  stop(): Promise<void>;
}

/** `SkyHost controller 3f9a1c2e`: unique per cluster, so two controllers never knock each other out. */
export function instanceName(clusterId: string): string {
  return `SkyHost controller ${shortId(clusterId)}`;
}

function shortId(clusterId: string): string {
  return clusterId.replace(/[^A-Za-z0-9]/g, '').slice(0, 8).toLowerCase() || 'cluster';
}

/**
 * The base URL to advertise: `publicUrl` when set, else `http://<LAN IP>:<port>`.
 * @example advertisedUrl({ port: 8080, lanIp: '10.0.0.5' }) // 'http://10.0.0.5:8080'
 */
export function advertisedUrl(opts: { publicUrl?: string | undefined; port: number; lanIp?: string | undefined; scheme?: 'http' | 'https' }): string | undefined {
  if (opts.publicUrl && (!opts.scheme || opts.publicUrl.startsWith(`${opts.scheme}:`))) return opts.publicUrl.replace(/\/$/, '');
  return opts.lanIp ? `${opts.scheme ?? 'http'}://${opts.lanIp}:${opts.port}` : undefined;
}

/**
 * Publishes this controller on the LAN.
 * @example const ad = startAdvertising({ clusterId, url: 'http://10.0.0.5:8080', port: 8080, log }); ... await ad.stop();
 */
export function startAdvertising(opts: AdvertiseOptions): Advertisement {
  const log = opts.log;
  const lanIp = opts.lanIp ?? lanAddress()?.ip;
  const short = shortId(opts.clusterId);
  const name = instanceName(opts.clusterId);
  const bonjour = new Bonjour(
    (lanIp ? { interface: lanIp, bind: '0.0.0.0' } : {}) as object,
    (err: Error) => log.debug('mDNS send failed', { err: err.message }),
  );
  quietErrors(bonjour, log);
  // Our own host name (not the machine's): machines cloned from one image often share a hostname.
  const host = `skyhost-${short}.local`;
  const services: Service[] = [
    bonjour.publish({
      name, type: SERVICE_TYPE, port: opts.port, host, disableIPv6: true,
      txt: { v: TXT_VERSION, cluster: opts.clusterId, url: opts.url, ...(opts.fingerprint ? { fp: opts.fingerprint } : {}) },
    }),
    bonjour.publish({ name: `SkyHost ${short}`, type: 'http', port: opts.pagePort ?? opts.port, host, disableIPv6: true, txt: { path: '/' } }),
  ];
  // bonjour-service lists every interface's address (the VM bridge too): keep only the LAN's.
  // Patched before the first announcement, which waits for the probe.
  if (lanIp) for (const s of services) onlyAddress(s, lanIp);
  for (const s of services) s.on('up', () => log.info(`advertising ${s.fqdn}`, { url: opts.url, lanIp }));
  if (!lanIp) log.warn('no LAN address found: advertising on every interface');
  // The library drops a service silently when its probe finds the name taken: say so.
  const watchdog = setTimeout(() => {
    for (const s of services) {
      if (!s.published) log.warn(`not advertised on mDNS: "${s.fqdn}" is in use by another machine on the LAN, or no default route`);
    }
  }, 5000);
  watchdog.unref();

  // The library re-announces after 1 s, 3 s, 9 s ... (x3 up to ~36 min) then never again; an agent
  // that missed the answer to its own query (packet loss) hears us at the next announcement.
  const mdns = (bonjour as unknown as { server: { mdns: { respond(r: unknown, cb?: () => void): void } } }).server.mdns;
  const timer = setInterval(() => {
    for (const s of services) if (s.published) mdns.respond(s.records());
  }, opts.reannounceMs ?? 60_000);
  timer.unref();

  let stopping: Promise<void> | undefined;
  const onSignal = () => void stop();
  const stop = (): Promise<void> => {
    stopping ??= new Promise<void>((resolve) => {
      clearInterval(timer);
      clearTimeout(watchdog);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      const done = () => bonjour.destroy(() => resolve());
      bonjour.unpublishAll(done);
      setTimeout(resolve, 1000).unref();
    }).then(() => log.info('mDNS advertisement withdrawn', { name }));
    return stopping;
  };
  if (opts.handleSignals !== false) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }
  return { name, stop };
}

function onlyAddress(service: Service, ip: string): void {
  const all = service.records.bind(service);
  service.records = () => all().filter((r) => r.type !== 'A' || r.data === ip);
}
