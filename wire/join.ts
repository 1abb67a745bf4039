// The join string: what the hosts page, install.sh, the USB installer and `skyhost agent --join` hand
// to a new host. It carries the trust along with the secret, as Incus's join tokens do:
//
//   shk1.<base64url of JSON { addresses: ["https://10.0.0.5:8443"], fingerprint: "<sha256 hex>", token: "shs_..." }>
//
// `addresses` are where the controller listens for agents, `fingerprint` the sha256 of its
// certificate (the agent talks to nothing else), `token` the join token the controller checks.
// A bare token (`shj_...`, `shs_...`) is still accepted: then the fingerprint comes from
// --controller-fingerprint or is recorded at first contact (trust on first use).
import { z } from 'zod';

export const JOIN_STRING_PREFIX = 'shk1.';

const Fingerprint = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');
export const JoinString = z.strictObject({
  addresses: z.array(z.url({ protocol: /^https$/, error: 'must be an https:// URL' })).min(1).max(8),
  fingerprint: Fingerprint,
  token: z.string().regex(/^[A-Za-z0-9._~+\/=-]{8,256}$/, 'must be a join token'),
});
export type JoinString = z.infer<typeof JoinString>;

/** `shk1.<base64url JSON>` for the addresses, fingerprint and token. */
export function encodeJoinString(j: JoinString): string {
  const checked = JoinString.parse({ ...j, addresses: j.addresses.map((a) => a.replace(/\/$/, '')) });
  return JOIN_STRING_PREFIX + Buffer.from(JSON.stringify(checked)).toString('base64url');
}

/**
 * What a host was given to join with: a join string (its parts), or a bare token (token only).
 * Throws an Error naming what is wrong with a malformed join string.
 */
export function parseJoin(text: string): { token: string; addresses?: string[]; fingerprint?: string } {
  const s = text.trim();
  if (!s.startsWith(JOIN_STRING_PREFIX)) return { token: s };
  let data: unknown;
  try {
    data = JSON.parse(Buffer.from(s.slice(JOIN_STRING_PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw new Error('the join string is damaged (not base64url JSON after "shk1."): copy it again from the hosts page');
  }
  const parsed = JoinString.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`the join string is damaged: ${issue.path.join('.') || 'value'} ${issue.message}`);
  }
  return { token: parsed.data.token, addresses: parsed.data.addresses, fingerprint: parsed.data.fingerprint };
}
