// The web installer can erase drives, so only the teacher's own browser, at the address `skyhost setup`
// printed, may use it. Three checks run before anything else (nothing is parsed or started first):
//   Host    a loopback name or address (or the IP given to --listen) with this server's port: a web
//           page using DNS rebinding reaches us under its own name and is refused
//   Origin  when sent, exactly this server's; on POST/PUT/PATCH/DELETE it must be sent (browsers do)
//   key     the per-run secret from the printed URL (`/?key=...`), then a SameSite=Strict HttpOnly cookie
// Every refusal is a 403 with one plain line.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { NextFunction, Request, Response } from 'express';
import { sameSecret } from '../../base/secrets.ts';

export const OPEN_PRINTED = 'open the address skyhost setup printed';

export interface GuardOptions {
  /** The per-run secret (setupKey()). */
  key: string;
  /** An IP address given to --listen, accepted as a Host besides the loopback ones (an IP cannot be rebound). */
  listenAddress?: string;
}

/** A fresh per-run secret: 192 random bits, base64url. */
export function setupKey(): string {
  return randomBytes(24).toString('base64url');
}

/** The address to print: the key in the query, taken out of the URL again by the first visit. */
export function setupUrl(host: string, port: number, key: string): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}/?key=${key}`;
}

export function setupGuard(opts: GuardOptions) {
  const extraHost = opts.listenAddress && isIP(opts.listenAddress) && !['0.0.0.0', '::'].includes(opts.listenAddress)
    ? new URL(`http://${isIP(opts.listenAddress) === 6 ? `[${opts.listenAddress}]` : opts.listenAddress}`).hostname
    : undefined;

  return (req: Request, res: Response, next: NextFunction): void => {
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Content-Security-Policy', "frame-ancestors 'none'");

    const self = ownOrigin(req, extraHost);
    if (!self) return refuse(res, `this installer answers only at 127.0.0.1:${req.socket.localPort}: ${OPEN_PRINTED}`);

    const origin = req.get('Origin');
    const changes = !['GET', 'HEAD', 'OPTIONS'].includes(req.method);
    if (origin !== undefined ? origin !== self : changes) return refuse(res, 'this form was sent from another web site (or without its Origin): refused');

    const cookieName = `skyhost-setup-${req.socket.localPort}`;
    const sent = typeof req.query.key === 'string' ? req.query.key : undefined;
    if (sent !== undefined) {
      if (!sameSecret(sent, opts.key) || changes) return refuse(res, `wrong key: ${OPEN_PRINTED}`);
      // Right key: remember it in a cookie and take it out of the address bar (history, Referer).
      const rest = new URLSearchParams(req.url.slice(req.path.length).replace(/^\?/, ''));
      rest.delete('key');
      const query = rest.toString();
      res.setHeader('Set-Cookie', `${cookieName}=${opts.key}; Path=/; HttpOnly; SameSite=Strict`);
      res.setHeader('Cache-Control', 'no-store');
      res.redirect(303, req.path + (query ? `?${query}` : ''));
      return;
    }
    const cookie = readCookie(req.get('Cookie'), cookieName);
    if (cookie !== undefined && sameSecret(cookie, opts.key)) return next();

    // A link from another site (the controller's "Add a host") arrives without the Strict cookie:
    // reload once from this page, which sends it. The page shows nothing and changes nothing.
    if (req.method === 'GET' && req.get('Sec-Fetch-Mode') === 'navigate' && /^(cross|same)-site$/.test(req.get('Sec-Fetch-Site') ?? '')) {
      res.status(200).type('html').setHeader('Cache-Control', 'no-store');
      res.send('<!doctype html><meta http-equiv="refresh" content="0"><title>SkyHost setup</title>\n');
      return;
    }
    refuse(res, OPEN_PRINTED);
  };
}

/** `http://HOST:PORT` when the Host header names this server on a loopback address (or the --listen IP). */
function ownOrigin(req: Request, extraHost: string | undefined): string | undefined {
  const host = req.get('Host');
  if (!host) return undefined;
  let url: URL;
  try {
    url = new URL(`http://${host}`);
  } catch {
    return undefined;
  }
  if (url.username || url.password || url.pathname !== '/' || url.search || url.hash) return undefined;
  const port = req.socket.localPort;
  if ((url.port || '80') !== String(port)) return undefined;
  const name = url.hostname;
  const loopback = name === 'localhost' || name === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(name);
  return loopback || (extraHost !== undefined && name === extraHost) ? url.origin : undefined;
}

function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function refuse(res: Response, message: string): void {
  res.status(403).type('text/plain').setHeader('Cache-Control', 'no-store');
  res.send(`${message}\n`);
}
