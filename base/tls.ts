// TLS between SkyHost machines, trusted the way Incus trusts its members: each machine makes its own
// self-signed certificate at first start, and a peer is trusted by the sha256 fingerprint of its
// certificate (carried by a join token, or recorded when a host enrolls), never by a certificate
// authority or a name. A connection whose certificate does not match is closed before one byte of
// HTTP (and so before any bearer key) is sent.
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import http, { createServer as createHttpServer } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import path from 'node:path';
import tls from 'node:tls';
import { InvalidField, SkyError } from './errors.ts';
import { run } from './exec.ts';

/** A machine's own certificate and key (PEM) and the certificate's fingerprint. */
export interface TlsIdentity {
  cert: string;
  key: string;
  /** sha256 of the certificate (DER), 64 lowercase hex digits. */
  fingerprint: string;
}

/** A fingerprint as SkyHost writes it: 64 lowercase hex digits (colons and case of other tools accepted). */
export function normalizeFingerprint(text: string): string {
  const hex = text.trim().replace(/^sha256:/i, '').replaceAll(':', '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new InvalidField('fingerprint', 'must be a sha256 fingerprint: 64 hex digits (colons allowed)');
  return hex;
}

/** The sha256 fingerprint of a PEM certificate. */
export function fingerprintOf(certPem: string): string {
  return normalizeFingerprint(new X509Certificate(certPem).fingerprint256);
}

/** sha256 of a certificate's public key (SPKI, DER) in base64: what `curl --pinnedpubkey sha256//…` takes. */
export function publicKeyPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** Groups a fingerprint in fours for people to compare by eye: `3f2a 9c01 …`. */
export function showFingerprint(fingerprint: string): string {
  return normalizeFingerprint(fingerprint).match(/.{4}/g)!.join(' ');
}

/**
 * The certificate in `dir` (tls.crt + tls.key, key mode 0600), made at the first call: ECDSA P-256,
 * valid ten years, `commonName` as subject, `altNames` (host names and IP addresses) as
 * subjectAltName so browsers that are told to trust it accept it for those addresses.
 */
export async function ensureIdentity(dir: string, opts: { commonName: string; altNames?: string[] }): Promise<TlsIdentity> {
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Made in a folder beside, then renamed in one by one, key last: a crash leaves no certificate
    // without its key (a lone tls.crt is made again; a half-written file never has the final name).
    const work = path.join(dir, `.tls-${process.pid}-${randomBytes(4).toString('hex')}`);
    mkdirSync(work, { mode: 0o700 });
    try {
      const san = subjectAltName(opts.altNames ?? []);
      await run('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', path.join(work, 'tls.key'), '-out', path.join(work, 'tls.crt'), '-days', '3650',
        '-subj', `/CN=${opts.commonName.replace(/[^A-Za-z0-9._-]/g, '-')}`,
        ...(san ? ['-addext', `subjectAltName=${san}`] : []),
      ], { timeout: 30_000 });
      renameSync(path.join(work, 'tls.crt'), certFile);
      renameSync(path.join(work, 'tls.key'), keyFile);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  const cert = readFileSync(certFile, 'utf8');
  return { cert, key: readFileSync(keyFile, 'utf8'), fingerprint: fingerprintOf(cert) };
}

function subjectAltName(names: string[]): string {
  return names
    .filter((n) => /^[A-Za-z0-9.:-]{1,253}$/.test(n)) // names go into an openssl argument: nothing else gets through
    .map((n) => (/^[0-9.]+$/.test(n) || n.includes(':') ? `IP:${n}` : `DNS:${n}`))
    .join(',');
}

/** A refused peer: its certificate is not the one pinned. */
export class UntrustedPeer extends SkyError {
  readonly expected: string;
  readonly got: string | undefined;
  /** `peer` names the other side in the message (e.g. `host pc-12`). */
  constructor(expected: string, got: string | undefined, peer = 'the other side') {
    super(502, 'untrusted_peer', `${peer}'s certificate (sha256 ${got ? showFingerprint(got) : 'none'}) is not the pinned one (sha256 ${showFingerprint(expected)})`,
      { expected, got });
    this.name = 'UntrustedPeer';
    this.expected = expected;
    this.got = got;
  }
}

/**
 * The sha256 fingerprint of the certificate a TLS server at `host:port` shows, trusting nothing:
 * for trust on first use, after which the connection is pinned to it (agent/discovery).
 */
export function peerFingerprint(host: string, port: number, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false, servername: '' });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS answer from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const raw = socket.getPeerCertificate().raw as Buffer | undefined;
      socket.end();
      if (!raw) reject(new Error(`${host}:${port} showed no certificate`));
      else resolve(fingerprintOf(new X509Certificate(raw).toString()));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Opens a TLS connection and calls `done` only once the peer's certificate has the pinned
 * fingerprint; otherwise the socket is destroyed and `done` gets UntrustedPeer. Chain and name
 * checks are off on purpose: the fingerprint is the trust, as with SSH host keys.
 */
export function connectPinned(options: tls.ConnectionOptions, fingerprint: string, done: (err: Error | null, socket?: Duplex) => void): tls.TLSSocket {
  const expected = normalizeFingerprint(fingerprint);
  // No SNI: a controller answers a connection without a name with its own certificate (the one pinned),
  // and one with a name (a browser) with the school's certificate when it has one.
  const socket = tls.connect({ ...options, servername: '', rejectUnauthorized: false });
  let settled = false;
  const finish = (err: Error | null): void => {
    if (settled) return;
    settled = true;
    if (err) {
      socket.destroy();
      done(err);
    } else done(null, socket);
  };
  socket.once('secureConnect', () => {
    const raw = socket.getPeerCertificate().raw as Buffer | undefined;
    const got = raw ? fingerprintOf(new X509Certificate(raw).toString()) : undefined;
    finish(got === expected ? null : new UntrustedPeer(expected, got));
  });
  socket.once('error', (err) => finish(err));
  return socket;
}

/**
 * An https.Agent whose connections are pinned to one certificate: requests through it are written
 * only after the peer proved it holds that certificate. One agent per peer (its pool is per peer too).
 */
export class PinnedAgent extends https.Agent {
  readonly fingerprint: string;

  constructor(fingerprint: string, opts: https.AgentOptions = {}) {
    super(opts);
    this.fingerprint = normalizeFingerprint(fingerprint);
  }

  // Node's Agent waits for the callback when createConnection returns nothing; the request is
  // bound to the socket (and its headers written) only then.
  override createConnection(options: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
    connectPinned(options as tls.ConnectionOptions, this.fingerprint, (err, socket) => callback?.(err, socket as Duplex));
    return undefined;
  }
}

/** A server for one port that speaks TLS and, to the clients `allowPlain` accepts, plain HTTP. */
export interface TlsOrPlainServer {
  /** Listens: `listen(server.net, port, host)` (base/http.ts). */
  net: net.Server;
  /** Where requests and upgrades of TLS clients arrive. */
  secure: https.Server;
  /** Where those of plain-HTTP clients arrive (only those `allowPlain` let through). */
  plain: http.Server;
  /** Stops listening and ends every connection (idle ones at once, busy ones after `graceMs`). */
  close(graceMs?: number): Promise<void>;
}

/**
 * One port for TLS and plain HTTP, told apart by the connection's first byte (0x16 starts a TLS
 * handshake): TLS clients get `identity`'s certificate; plain-HTTP clients are served only when
 * `allowPlain(remoteAddress)` says so (loopback, or a trusted LAN), others get 403 and nothing else.
 */
export function tlsOrPlainServer(handler: http.RequestListener, identity: TlsIdentity, allowPlain: (remoteAddress: string | undefined) => boolean): TlsOrPlainServer {
  const plain = createHttpServer(handler);
  const secure = https.createServer({ cert: identity.cert, key: identity.key }, handler);
  const refused = JSON.stringify({ error: { code: 'https_required', message: 'this agent answers the LAN over HTTPS only' } });
  const sort = (socket: net.Socket): void => {
    const first = socket.read(1) as Buffer | null;
    if (first === null) {
      socket.once('readable', () => sort(socket));
      return;
    }
    socket.setTimeout(0);
    socket.unshift(first);
    if (first[0] === 0x16) secure.emit('connection', socket);
    else if (allowPlain(socket.remoteAddress)) plain.emit('connection', socket);
    else socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(refused)}\r\nConnection: close\r\n\r\n${refused}`);
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy()); // a client that goes away mid-handshake: nothing to answer
    socket.setTimeout(20_000, () => socket.destroy()); // said nothing at all in 20 s (cleared at the first byte)
    sort(socket);
  });
  // plain and secure never listen themselves, and Node tracks a server's connections only from its
  // 'listening' event: without it closeIdleConnections() found none and close() waited out graceMs
  server.on('listening', () => {
    plain.emit('listening');
    secure.emit('listening');
  });
  // with tracking on, Node would cut a request still arriving after 5 min: a large upload may take longer
  plain.requestTimeout = 0;
  secure.requestTimeout = 0;
  return {
    net: server, secure, plain,
    close(graceMs = 2000) {
      return new Promise((resolve) => {
        server.close(() => resolve());
        // also stops their connection-checking timers
        plain.close();
        secure.close();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, graceMs).unref();
      });
    },
  };
}

/** Whether a connection comes from this machine itself (loopback never crosses the LAN). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || /^127\./.test(a);
}
