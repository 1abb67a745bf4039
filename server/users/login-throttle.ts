// Login back-off, per source address and per user name, in memory (a restart forgets it).
//
// - An address gets ADDRESS_ATTEMPTS wrong passwords (for any names) free, then waits 1 s, 2 s, 4 s...
//   up to ADDRESS_MAX_WAIT_MS before each next try: spraying many names is slow whatever the names.
// - A name with LOGIN_ATTEMPTS wrong passwords within LOGIN_WINDOW_MS is locked until the window ends
//   for the addresses that guessed it. An address that has not failed for that name still gets one try
//   every CLEAN_ADDRESS_WAIT_MS, so the real user at their own PC waits at most that long.
//
//   const throttle = new LoginThrottle();
//   throttle.check(name, from);        // before checking the password: throws a 429 "try again in N s"
//   throttle.failed(name, from);       // after a wrong password
//   throttle.succeeded(name);          // after a right one
import { SkyError } from '../../base/errors.ts';

/** Wrong passwords allowed per user name and window before the addresses that tried wait. */
export const LOGIN_ATTEMPTS = 10;
export const LOGIN_WINDOW_MS = 5 * 60_000;
/** Wrong passwords allowed per source address (any names) before its back-off starts. */
export const ADDRESS_ATTEMPTS = 10;
/** The longest back-off of an address between two tries. */
export const ADDRESS_MAX_WAIT_MS = 15 * 60_000;
/** An address's wrong passwords are forgotten after this long without one. */
export const ADDRESS_FORGET_MS = 60 * 60_000;
/** The longest a correct login from an address that has not failed for the name waits. */
export const CLEAN_ADDRESS_WAIT_MS = 10_000;
/** Names and addresses remembered at once; past it, one is forgotten per new one (see `forgetOne`). */
const MAX_TRACKED = 10_000;
/** Failing addresses remembered per name; more are treated as new addresses (still one try per CLEAN_ADDRESS_WAIT_MS). */
const MAX_ADDRESSES_PER_NAME = 256;
/** The address of in-process callers that pass none: tracked per name, never throttled as an address. */
const NO_ADDRESS = '';

interface Failures {
  count: number;
  since: number;
  last: number;
  /** Names only: the addresses that failed for it. */
  addresses?: Set<string>;
  /** Names only: when an address that has not failed for it may try next. */
  cleanNext?: number;
  /** A refusal was already reported for this entry. */
  refusalSaid?: boolean;
}

/** What `check` refused, for the audit log (once per name or address and window). */
export interface Refusal {
  reason: 'address' | 'name' | 'name-busy';
  waitS: number;
  firstTime: boolean;
}

/** `::ffff:10.0.0.5` -> `10.0.0.5`; an IPv6 address -> its /64 (one machine can pick any address in it). */
export function addressKey(ip: string | undefined): string {
  if (!ip) return 'unknown';
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (v4) return v4[1]!;
  if (!ip.includes(':')) return ip;
  const [head = '', tail = ''] = ip.split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = ip.includes('::') ? [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right] : left;
  return groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':') + '::/64';
}

export class LoginThrottle {
  private readonly names = new Map<string, Failures>();
  private readonly addresses = new Map<string, Failures>();
  private readonly now: () => number;
  /** Called with each refusal (the caller writes the audit event). */
  onRefusal: ((name: string, from: string, refusal: Refusal) => void) | undefined;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** Throws a 429 when `name` may not be tried from `from` now; `from` absent: an in-process caller. */
  check(rawName: string, from?: string): void {
    const name = nameKey(rawName);
    const addr = from === undefined ? NO_ADDRESS : addressKey(from);
    const now = this.now();
    const a = addr === NO_ADDRESS ? undefined : this.live(this.addresses, addr, now, ADDRESS_FORGET_MS);
    if (a && a.count >= ADDRESS_ATTEMPTS) {
      const wait = a.last + addressWaitMs(a.count) - now;
      if (wait > 0) this.refuse(name, addr, a, 'address', wait, 'too many failed logins from this address');
    }
    const n = this.live(this.names, name, now, LOGIN_WINDOW_MS);
    if (!n || n.count < LOGIN_ATTEMPTS) return;
    if (n.addresses?.has(addr)) {
      this.refuse(name, addr, n, 'name', n.since + LOGIN_WINDOW_MS - now, `too many wrong passwords for "${name}" from this address`);
    }
    // An address that has not failed for this name: one try per CLEAN_ADDRESS_WAIT_MS among all such addresses.
    if (n.cleanNext !== undefined && now < n.cleanNext) {
      this.refuse(name, addr, n, 'name-busy', n.cleanNext - now, `someone is guessing the password of "${name}"`);
    }
    n.cleanNext = now + CLEAN_ADDRESS_WAIT_MS;
  }

  /** Counts a wrong password for `name` from `from`. */
  failed(rawName: string, from?: string): void {
    const name = nameKey(rawName);
    const addr = from === undefined ? NO_ADDRESS : addressKey(from);
    const now = this.now();
    const n = this.count(this.names, name, now, LOGIN_WINDOW_MS);
    n.addresses ??= new Set();
    if (n.addresses.size < MAX_ADDRESSES_PER_NAME) n.addresses.add(addr);
    if (addr !== NO_ADDRESS) this.count(this.addresses, addr, now, ADDRESS_FORGET_MS);
  }

  /**
   * A right password: the name's wrong passwords are forgotten. The address's are not: a student
   * signing in to their own account between guesses must not reset their back-off.
   */
  succeeded(rawName: string): void {
    this.names.delete(nameKey(rawName));
  }

  /** How many names and addresses are remembered (for tests). */
  size(): { names: number; addresses: number } {
    return { names: this.names.size, addresses: this.addresses.size };
  }

  private refuse(name: string, addr: string, entry: Failures, reason: Refusal['reason'], waitMs: number, why: string): never {
    const waitS = Math.max(1, Math.ceil(waitMs / 1000));
    this.onRefusal?.(name, addr, { reason, waitS, firstTime: !entry.refusalSaid });
    entry.refusalSaid = true;
    throw new SkyError(429, 'too_many_attempts', `${why}: try again in ${waitS} s`, { retryAfterSeconds: waitS });
  }

  /** The entry of `key`, or undefined when there is none or it has been quiet for `forgetMs`. */
  private live(table: Map<string, Failures>, key: string, now: number, forgetMs: number): Failures | undefined {
    const e = table.get(key);
    if (e && expired(e, now, forgetMs, table === this.names)) {
      table.delete(key);
      return undefined;
    }
    return e;
  }

  private count(table: Map<string, Failures>, key: string, now: number, forgetMs: number): Failures {
    const e = this.live(table, key, now, forgetMs);
    if (e) {
      e.count++;
      e.last = now;
      return e;
    }
    if (table.size >= MAX_TRACKED) forgetOne(table, now, forgetMs, table === this.names);
    const fresh: Failures = { count: 1, since: now, last: now };
    table.set(key, fresh);
    return fresh;
  }
}

function nameKey(name: string): string {
  return name.toLowerCase().slice(0, 64);
}

/** 1 s after the ADDRESS_ATTEMPTS-th failure, doubling with each further one, at most ADDRESS_MAX_WAIT_MS. */
function addressWaitMs(count: number): number {
  return Math.min(ADDRESS_MAX_WAIT_MS, 1000 * 2 ** Math.min(30, count - ADDRESS_ATTEMPTS));
}

/** A name's window runs from its first failure; an address is forgotten after a quiet `forgetMs`. */
function expired(e: Failures, now: number, forgetMs: number, fromFirst: boolean): boolean {
  return now - (fromFirst ? e.since : e.last) > forgetMs;
}

/**
 * Makes room for a new entry, oldest first: one that has expired, else the oldest of those with the
 * fewest wrong passwords. Plain oldest-first would let a spray of 10,000 made-up names push out the
 * locked admin (its entry is the oldest); those names fail once each and go first.
 */
function forgetOne(table: Map<string, Failures>, now: number, forgetMs: number, fromFirst: boolean): void {
  let victim: string | undefined;
  let fewest = Infinity;
  // A Map iterates in insertion order and `since` is set on insertion: the oldest come first.
  for (const [key, entry] of table) {
    if (expired(entry, now, forgetMs, fromFirst)) {
      victim = key;
      break;
    }
    if (entry.count < fewest) {
      victim = key;
      fewest = entry.count;
      if (fewest === 1) break;
    }
  }
  if (victim !== undefined) table.delete(victim);
}
