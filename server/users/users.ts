// Users, password hashes (scrypt), browser sessions with their CSRF token, API tokens and the
// self-registration setting. Pure service over the store: the HTTP side is in auth.ts.
import { createHash, randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import { z } from 'zod';
import { VersionedCache } from '../../base/cache.ts';
import { Conflict, Forbidden, NotFound, Unauthorized } from '../../base/errors.ts';
import { sameSecret } from '../../base/secrets.ts';
import type { Param, Row, Store } from '../db/store.ts';
import { addressKey, LoginThrottle } from './login-throttle.ts';

export { LOGIN_ATTEMPTS, LOGIN_WINDOW_MS } from './login-throttle.ts';

/** An audit event (sign-ins, failed sign-ins, role and password changes); services.ts sends it to the event log. */
export interface AuditEvent {
  level: 'info' | 'warn';
  msg: string;
  data: Record<string, unknown>;
}

export const UserName = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, 'must be 1-32 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit');
export const Password = z.string().min(8, 'must be at least 8 characters').max(256);
export const Role = z.enum(['admin', 'teacher', 'student']);
export type Role = z.infer<typeof Role>;
/** A name people read (Anna Berg): printable, no markup. */
export const DisplayName = z.string().trim().min(1, 'must not be empty').max(64, 'must be at most 64 characters')
  .regex(/^[^\u0000-\u001f\u007f<>]*$/, 'must be printable, without < or >');

/** A user as the API returns it (never a hash). */
export const User = z.object({
  name: UserName,
  role: Role,
  /** How people call them, when set (Anna Berg); the name is what they sign in with. */
  displayName: z.string().optional(),
  /** True until the first password change (the admin's first login with the admin token). */
  mustChangePassword: z.boolean(),
  createdAt: z.string(),
});
export type User = z.infer<typeof User>;

export const ApiToken = z.object({ id: z.string(), label: z.string(), createdAt: z.string() });
export type ApiToken = z.infer<typeof ApiToken>;

export interface Session {
  user: User;
  /** Sent back with every cookie-authenticated state change (header `X-CSRF-Token` or form `_csrf`). */
  csrfToken: string;
  expiresAt: string;
}

const SESSION_DAYS = 7;
const SCRYPT: ScryptOptions = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

function scrypt(password: string, salt: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, 32, SCRYPT, (err, key) => (err ? reject(err) : resolve(key))));
}

/** `scrypt$N$r$p$salt$hash` (base64url). */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, , , , salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const key = await scrypt(password, Buffer.from(salt, 'base64url'));
  const want = Buffer.from(hash, 'base64url');
  return sameSecret(key, want);
}

/** A random secret for a cookie or a token (256 bits, base64url). */
export function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Tokens are high-entropy, so a plain SHA-256 is enough to keep them unusable if the DB leaks. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function rowToUser(r: Row): User {
  return {
    name: String(r.name), role: r.role as Role, ...(r.display_name ? { displayName: String(r.display_name) } : {}),
    mustChangePassword: Number(r.must_change_password) === 1, createdAt: String(r.created_at),
  };
}

/**
 * How long who a token or session cookie is may be answered from memory at most. Every API call
 * and page asks, and the database answers with a join: profiled under the bench's load (1,000 hosts,
 * ~4,000 dashboard requests a second) that join was ~14 % of the controller's CPU. Users' own writes
 * end the kept answers at once (Users.version); this bound is for a change made by another process
 * on the same database.
 */
const CREDENTIALS_KEPT_MS = 2000;
/** At most this many tokens and as many cookies are remembered (the oldest go first). */
const CREDENTIALS_KEPT = 10_000;

/** An answer every request that asks shares: frozen, so none can change what the next one sees. */
function shared<T extends { user: User } | User>(value: T): T {
  if ('user' in value) Object.freeze(value.user);
  return Object.freeze(value);
}

/** Letters and digits nobody confuses on paper (no 0/O, 1/l/I). */
const READABLE = 'abcdefghjkmnpqrstuvwxyz23456789';

/** A one-time password to hand out on paper: `kp7m-x3rt-9bqa` (12 random characters, ~59 bits). */
export function oneTimePassword(): string {
  const bytes = randomBytes(12);
  let out = '';
  for (let i = 0; i < 12; i++) out += (i > 0 && i % 4 === 0 ? '-' : '') + READABLE[bytes[i]! % READABLE.length];
  return out;
}

/** A new account with its password already hashed (`Users.hash`), for `Users.insertHashed` inside a transaction. */
export interface HashedAccount {
  name: string;
  displayName?: string | undefined;
  role: Role;
  hash: string;
  mustChangePassword: boolean;
}

/**
 * Users and their credentials.
 *
 *   const { sessionId, session } = await services.users.login('alice', 'secret-pass');
 *   const s = services.users.session(sessionId); // per request, from the cookie
 */
export class Users {
  private readonly store: Store;
  private readonly throttle: LoginThrottle;
  private readonly audit: ((e: AuditEvent) => void) | undefined;
  private readonly removedListeners: Array<(name: string) => void> = [];
  /** The clock of sessions' ends, the login back-off and the credentials kept in memory. */
  private readonly now: () => number;
  /** Writes to users, sessions and tokens so far: part of the version of the answers kept below. */
  private writes = 0;
  /** Who an API token is, by its hash, as read since the last write (CREDENTIALS_KEPT_MS). */
  private readonly tokenUsers = new VersionedCache<User | undefined>(CREDENTIALS_KEPT);
  /** Who a session cookie is, by its hash, with the session's CSRF token and end. */
  private readonly sessionUsers = new VersionedCache<Session | undefined>(CREDENTIALS_KEPT);

  /** `now` drives the login back-off and sessions' ends (tests pass a clock they control); `audit` receives the audit events. */
  constructor(store: Store, opts: { now?: () => number; audit?: (e: AuditEvent) => void } = {}) {
    this.store = store;
    this.throttle = new LoginThrottle(opts.now ? { now: opts.now } : {});
    this.now = opts.now ?? Date.now;
    this.audit = opts.audit;
    this.throttle.onRefusal = (name, from, refusal) => {
      if (!refusal.firstTime) return; // once per name or address and window, not per request
      const where = from ? ` from ${from}` : '';
      const why = refusal.reason === 'address' ? `too many failed sign-ins${where}` : `too many wrong passwords for "${name}"`;
      this.audit?.({ level: 'warn', msg: `sign-ins refused: ${why} (next try in ${refusal.waitS} s)`, data: { user: name, ...(from ? { from } : {}), reason: refusal.reason } });
    };
  }

  get(name: string): User | undefined {
    const r = this.store.get('SELECT * FROM users WHERE name = ?', name);
    return r ? rowToUser(r) : undefined;
  }

  list(): User[] {
    return this.store.all('SELECT * FROM users ORDER BY name').map(rowToUser);
  }

  /** Creates a user; a duplicate name is a 409. */
  async create(input: { name: string; password: string; role?: Role; displayName?: string | undefined; mustChangePassword?: boolean }): Promise<User> {
    const name = UserName.parse(input.name);
    const displayName = input.displayName ? DisplayName.parse(input.displayName) : undefined;
    const hash = await hashPassword(Password.parse(input.password));
    if (this.get(name)) throw new Conflict(`user "${name}" already exists`);
    this.insertHashed([{ name, displayName, role: input.role ?? 'student', hash, mustChangePassword: input.mustChangePassword ?? false }]);
    return this.get(name)!;
  }

  /** Hashes a password for `insertHashed` (slow on purpose: scrypt). */
  hash(password: string): Promise<string> {
    return hashPassword(Password.parse(password));
  }

  /**
   * Inserts accounts whose names were checked (UserName) and passwords hashed, in one transaction
   * (joins the caller's: a bulk import adds class members in the same one). A taken name is a 409.
   */
  insertHashed(accounts: HashedAccount[]): void {
    const at = new Date().toISOString();
    this.store.tx(() => {
      for (const a of accounts) {
        if (this.get(a.name)) throw new Conflict(`user "${a.name}" already exists`);
        this.run('INSERT INTO users (name, role, password_hash, must_change_password, created_at, display_name) VALUES (?, ?, ?, ?, ?, ?)',
          a.name, a.role, a.hash, a.mustChangePassword ? 1 : 0, at, a.displayName ?? null);
      }
    });
  }

  /** Sets or clears (undefined) how people call a user. */
  setDisplayName(name: string, displayName: string | undefined): User {
    const value = displayName ? DisplayName.parse(displayName) : null;
    if (this.run('UPDATE users SET display_name = ? WHERE name = ?', value, name).changes === 0) throw new NotFound(`user "${name}"`);
    return this.get(name)!;
  }

  /** Creates the `admin` user with `password` (the admin token) as a one-time password, once. */
  async ensureAdmin(adminToken: string): Promise<void> {
    if (this.get('admin')) return;
    const hash = await hashPassword(adminToken);
    this.run(`INSERT INTO users (name, role, password_hash, must_change_password, created_at) VALUES ('admin', 'admin', ?, 1, ?)`,
      hash, new Date().toISOString());
  }

  remove(name: string): void {
    if (name === 'admin') throw new Forbidden('the admin user cannot be removed');
    if (this.run('DELETE FROM users WHERE name = ?', name).changes === 0) throw new NotFound(`user "${name}"`);
    for (const fn of this.removedListeners) fn(name);
  }

  /** Calls `fn` after a user is removed (the classes forget their memberships: the database cascades). */
  onRemoved(fn: (name: string) => void): void {
    this.removedListeners.push(fn);
  }

  /** Changes a user's role; `by` is the admin who did it (for the audit event). */
  setRole(name: string, role: Role, by?: string): User {
    if (name === 'admin' && role !== 'admin') throw new Forbidden('the admin user stays an admin');
    const before = this.get(name);
    if (this.run('UPDATE users SET role = ? WHERE name = ?', role, name).changes === 0) throw new NotFound(`user "${name}"`);
    if (before && before.role !== role) {
      this.audit?.({ level: 'info', msg: `role of "${name}" changed from ${before.role} to ${role}${by ? ` by "${by}"` : ''}`,
        data: { user: name, was: before.role, role, ...(by ? { by } : {}) } });
    }
    return this.get(name)!;
  }

  /** Checks a name and password; the same 401 whether the user exists or not. */
  async authenticate(name: string, password: string): Promise<User> {
    const r = this.store.get('SELECT * FROM users WHERE name = ?', name);
    const ok = r?.password_hash ? await verifyPassword(password, String(r.password_hash)) : (await hashPassword(password), false);
    if (!r || !ok) throw new Unauthorized('wrong user name or password');
    return rowToUser(r);
  }

  /**
   * Logs in: a new session; `sessionId` goes into the cookie and is stored only as a hash. `from` is
   * the source address (absent for in-process callers). Wrong passwords slow down the address and lock
   * the name for the addresses that guessed it (login-throttle.ts): a 429 "try again in N s".
   */
  async login(name: string, password: string, from?: string): Promise<{ sessionId: string; session: Session }> {
    const who = { user: name.slice(0, 64), ...(from !== undefined ? { from: addressKey(from) } : {}) };
    this.throttle.check(name, from);
    let user: User;
    try {
      user = await this.authenticate(name, password);
    } catch (err) {
      this.throttle.failed(name, from);
      this.audit?.({ level: 'warn', msg: `failed sign-in as "${who.user}"${from !== undefined ? ` from ${who.from}` : ''}`, data: who });
      throw err;
    }
    this.throttle.succeeded(name);
    const sessionId = newSecret();
    const csrfToken = newSecret();
    const expiresAt = new Date(this.now() + SESSION_DAYS * 86400_000).toISOString();
    this.run('INSERT INTO sessions (id_hash, user_name, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)',
      tokenHash(sessionId), user.name, csrfToken, new Date().toISOString(), expiresAt);
    this.audit?.({ level: 'info', msg: `"${user.name}" signed in${from !== undefined ? ` from ${who.from}` : ''}`, data: who });
    return { sessionId, session: { user, csrfToken, expiresAt } };
  }

  /** The live session for a cookie value, or undefined. */
  session(sessionId: string): Session | undefined {
    const session = this.sessionUsers.get(this.version(), tokenHash(sessionId), () => {
      const r = this.store.get('SELECT s.csrf, s.expires_at, u.* FROM sessions s JOIN users u ON u.name = s.user_name WHERE s.id_hash = ?', tokenHash(sessionId));
      return r ? shared({ user: rowToUser(r), csrfToken: String(r.csrf), expiresAt: String(r.expires_at) }) : undefined;
    });
    if (session && session.expiresAt < new Date(this.now()).toISOString()) {
      this.logout(sessionId); // a write: the kept answer is gone with it
      return undefined;
    }
    return session;
  }

  /** Deletes expired sessions (run by the periodic job). */
  pruneSessions(now = new Date()): number {
    return this.run('DELETE FROM sessions WHERE expires_at < ?', now.toISOString()).changes;
  }

  logout(sessionId: string): void {
    this.run('DELETE FROM sessions WHERE id_hash = ?', tokenHash(sessionId));
  }

  /** Sets a new password; ends the user's other sessions. `current` is checked unless an admin (`by`) resets it. */
  async changePassword(name: string, newPassword: string, opts: { current?: string; keepSession?: string; by?: string } = {}): Promise<User> {
    if (opts.current !== undefined) await this.authenticate(name, opts.current);
    const hash = await hashPassword(Password.parse(newPassword));
    this.store.tx(() => {
      if (this.run('UPDATE users SET password_hash = ?, must_change_password = 0 WHERE name = ?', hash, name).changes === 0) {
        throw new NotFound(`user "${name}"`);
      }
      this.run('DELETE FROM sessions WHERE user_name = ? AND id_hash != ?', name, opts.keepSession ? tokenHash(opts.keepSession) : '');
    });
    const by = opts.by && opts.by !== name ? ` by "${opts.by}"` : '';
    this.audit?.({ level: 'info', msg: `password of "${name}" changed${by}`, data: { user: name, ...(opts.by ? { by: opts.by } : {}) } });
    return this.get(name)!;
  }

  /** Makes an API token for `name`; the token itself is returned once and stored only as a hash. */
  createToken(name: string, label: string, token = newSecret()): { token: string; info: ApiToken } {
    const id = randomBytes(6).toString('hex');
    const createdAt = new Date().toISOString();
    this.run('INSERT INTO api_tokens (id, user_name, token_hash, label, created_at) VALUES (?, ?, ?, ?, ?)',
      id, name, tokenHash(token), label, createdAt);
    return { token, info: { id, label, createdAt } };
  }

  /** Makes sure `token` is an API token of `name` (the admin token from DATA/secrets). */
  ensureToken(name: string, label: string, token: string): void {
    if (!this.store.get('SELECT 1 FROM api_tokens WHERE token_hash = ?', tokenHash(token))) this.createToken(name, label, token);
  }

  tokens(name: string): ApiToken[] {
    return this.store.all('SELECT * FROM api_tokens WHERE user_name = ? ORDER BY created_at', name).map((r) => ({
      id: String(r.id), label: String(r.label), createdAt: String(r.created_at),
    }));
  }

  revokeToken(name: string, id: string): void {
    if (this.run('DELETE FROM api_tokens WHERE id = ? AND user_name = ?', id, name).changes === 0) throw new NotFound(`token "${id}"`);
  }

  /** The user an API token belongs to, or undefined. */
  byToken(token: string): User | undefined {
    const hash = tokenHash(token);
    return this.tokenUsers.get(this.version(), hash, () => {
      const r = this.store.get('SELECT u.* FROM api_tokens t JOIN users u ON u.name = t.user_name WHERE t.token_hash = ?', hash);
      return r ? shared(rowToUser(r)) : undefined;
    });
  }

  /** What the kept credentials were read at: this class's writes so far and the current CREDENTIALS_KEPT_MS slice of time. */
  private version(): string {
    return `${this.writes}:${Math.floor(this.now() / CREDENTIALS_KEPT_MS)}`;
  }

  /**
   * Every write of this class to users, sessions and API tokens goes through here: it forgets the
   * credentials read so far, so a revoked token, an ended session, a removed user or a changed role
   * counts from the next request on.
   */
  private run(sql: string, ...params: Param[]): { changes: number; lastInsertRowid: number } {
    this.writes++;
    return this.store.run(sql, ...params);
  }

  /** Whether anyone may create an account on the login page (off by default). */
  selfRegistration(): boolean {
    return this.store.get('SELECT value FROM settings WHERE key = ?', 'selfRegistration')?.value === 'true';
  }

  setSelfRegistration(on: boolean): void {
    this.run('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', 'selfRegistration', String(on));
  }

  /** Self-registration: a plain user, only while the setting is on. */
  async register(name: string, password: string): Promise<User> {
    if (!this.selfRegistration()) throw new Forbidden('self-registration is off: ask an admin for an account');
    return this.create({ name, password, role: 'student' });
  }
}
