// The controller's TLS (docs/security.md#tls-between-machines): its own certificate, made at first
// start in DATA/secrets (tls.crt, tls.key), which agents pin by fingerprint; optionally the school's own
// certificate for pages (served to clients that ask for a name by SNI: browsers, not agents); and
// the HTTP port's rule: loopback clients are served in full (loopback never crosses the LAN), LAN
// clients are sent to HTTPS unless the LAN is trusted (config `trustedLan`).
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { SkyError } from '../base/errors.ts';
import { lanAddress } from '../base/net.ts';
import { ensureIdentity, isLoopback, type TlsIdentity } from '../base/tls.ts';

/**
 * DATA/secrets/tls.{crt,key}: made once, with this machine's names and LAN address in it. Files of
 * DATA/secrets go into the controller's backup: a restored controller keeps the certificate its
 * agents pinned.
 */
export function controllerIdentity(dataDir: string, clusterId: string): Promise<TlsIdentity> {
  const lan = lanAddress()?.ip;
  const host = os.hostname();
  return ensureIdentity(path.join(dataDir, 'secrets'), {
    commonName: `skyhost-controller-${clusterId}`,
    altNames: [host, `${host}.local`, 'localhost', '127.0.0.1', '::1', ...(lan ? [lan] : [])],
  });
}

/** The school's certificate and key (PEM files from config `tlsCertFile`/`tlsKeyFile`), checked to belong together. */
export function loadSchoolCertificate(certFile: string, keyFile: string): { cert: string; key: string } {
  let pair: { cert: string; key: string };
  try {
    pair = { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  } catch (err) {
    throw new SkyError(500, 'tls_files', `cannot read the school's certificate or key: ${(err as Error).message}`);
  }
  try {
    tls.createSecureContext(pair);
  } catch (err) {
    throw new SkyError(500, 'tls_files', `${certFile} and ${keyFile} are not a certificate and its key: ${(err as Error).message}`);
  }
  return pair;
}

/**
 * Options of the HTTPS server: the controller's own certificate for connections that name no
 * server (agents never send SNI; browsers that open an IP address neither), the school's for
 * those that do.
 */
export function httpsServerOptions(own: TlsIdentity, school?: { cert: string; key: string }): https.ServerOptions {
  const options: https.ServerOptions = { cert: own.cert, key: own.key };
  if (school) {
    const schoolContext = tls.createSecureContext(school);
    options.SNICallback = (_name, done) => done(null, schoolContext);
  }
  return options;
}

/** A host name or address that may go into a Location header. */
const HOSTNAME = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})$/;

/**
 * For the HTTP port: answers a LAN client itself (a redirect to the same path on HTTPS; for
 * install.sh a script that says where to get it) and returns true; returns false for a client the
 * HTTP port serves (loopback, or everyone on a trusted LAN).
 */
export function redirectToHttps(req: IncomingMessage, res: ServerResponse, httpsPort: number): boolean {
  if (isLoopback(req.socket.remoteAddress)) return false;
  const host = (req.headers.host ?? '').replace(/:\d+$/, '');
  const path = req.url ?? '/';
  if (path.startsWith('/install.sh')) {
    res.writeHead(403, { 'content-type': 'text/x-shellscript; charset=utf-8', 'cache-control': 'no-store' });
    res.end("#!/bin/sh\nprintf 'skyhost: error: %s\\n' 'this controller hands out install.sh over HTTPS only: copy the install command from the Hosts page' >&2\nexit 1\n");
    return true;
  }
  if (!HOSTNAME.test(host) || !path.startsWith('/')) {
    res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'bad_request', message: 'no usable Host header' } }));
    return true;
  }
  const location = `https://${host}:${httpsPort}${path}`;
  // 308 keeps the method and body: a POST goes on as a POST (clients that follow it at all)
  res.writeHead(308, { location, 'content-type': 'text/plain; charset=utf-8' });
  res.end(`This controller serves the LAN over HTTPS: ${location}\n`);
  return true;
}

/** For the HTTP port's WebSockets: a LAN client's upgrade is refused (the pages open consoles over wss://). */
export function refuseLanUpgrade(socket: Duplex, remoteAddress: string | undefined): boolean {
  if (isLoopback(remoteAddress)) return false;
  socket.on('error', () => socket.destroy());
  const body = JSON.stringify({ error: { code: 'https_required', message: 'consoles from the LAN go over HTTPS (wss://)' } });
  socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  return true;
}

/** The URLs agents reach this controller's HTTPS port at (join strings carry them). */
export function agentAddresses(opts: { listen: string; httpsPort: number; publicUrl?: string | undefined; lanIp?: string | undefined }): string[] {
  const out: string[] = [];
  if (opts.publicUrl?.startsWith('https://')) out.push(opts.publicUrl.replace(/\/$/, ''));
  const everywhere = opts.listen === '0.0.0.0' || opts.listen === '::';
  const ip = everywhere ? opts.lanIp ?? '127.0.0.1' : opts.listen;
  out.push(`https://${ip.includes(':') ? `[${ip}]` : ip}:${opts.httpsPort}`);
  return [...new Set(out)];
}
