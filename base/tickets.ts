// Pull tickets: a short-lived permission, made by the controller, to read one template's files from one agent.
// The controller signs with a key derived from that agent's own key (it has it from enrollment),
// so the agent checks a ticket with nothing but its key, and a ticket opens no other route.
//
//   Authorization: Ticket <base64url(JSON { t: template, h: reader host id, exp: unix seconds })>.<base64url(HMAC-SHA256)>
import { createHmac } from 'node:crypto';
import { sameSecret } from './secrets.ts';

export interface TicketClaims {
  /** The template whose files it opens. */
  t: string;
  /** Who it was given to (for the source's log). */
  h: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
}

function signature(agentKey: string, payload: string): string {
  const key = createHmac('sha256', agentKey).update('skyhost pull ticket v1').digest();
  return createHmac('sha256', key).update(payload).digest('base64url');
}

/** The Authorization value of a ticket to read `template` from the agent whose key is `agentKey`. */
export function makeTicket(agentKey: string, claims: TicketClaims): string {
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `Ticket ${payload}.${signature(agentKey, payload)}`;
}

/** The claims of a valid, unexpired ticket for `template` signed for `agentKey`, else undefined. */
export function checkTicket(header: string | undefined, agentKey: string, template: string, now = Date.now()): TicketClaims | undefined {
  const m = /^Ticket ([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{43})$/.exec(header ?? '');
  if (!m) return undefined;
  if (!sameSecret(signature(agentKey, m[1]!), m[2]!)) return undefined;
  let claims: TicketClaims;
  try {
    claims = JSON.parse(Buffer.from(m[1]!, 'base64url').toString('utf8')) as TicketClaims;
  } catch {
    return undefined; // signed by us, so never reached unless the key leaked; a bad payload is no ticket
  }
  if (typeof claims?.t !== 'string' || typeof claims.exp !== 'number' || typeof claims.h !== 'string') return undefined;
  if (claims.t !== template || claims.exp * 1000 < now) return undefined;
  return claims;
}
