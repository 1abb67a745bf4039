// Comparing secrets (agent keys, join tokens, CSRF tokens, password hashes) so that the time taken
// tells an attacker nothing about how much of a guess was right.
import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Whether two secrets are equal, in constant time. Both sides are hashed first, so not even their
 * lengths leak, and secrets of any length compare.
 * @example sameSecret(sent.agentKey, host.agentKey) // true only for the same key
 */
export function sameSecret(a: string | Uint8Array, b: string | Uint8Array): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

function digest(s: string | Uint8Array): Buffer {
  return createHash('sha256').update(s).digest();
}
