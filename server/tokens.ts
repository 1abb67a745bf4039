// Join tokens (docs/design.md#enrollment-and-join-tokens): the cluster token in DATA/secrets/join-token (rotatable), and
// counted tokens with an expiry that the "Add a host" page makes, revocable with a reason: each one
// lets `uses` different hosts join (1 by default; a USB stick for a room needs one use per PC).
// Only hashes of single-use tokens and of retired cluster tokens are kept, in
// DATA/secrets/join-tokens.json (mode 0600), so that a refusal can say *why* a token is refused.
//
// Token shapes: cluster `shj_<secret>`; single-use `shs_<id>_<secret>` (the id finds the record).
// What is handed out is the join string (wire/join.ts): the token with this controller's HTTPS
// addresses and certificate fingerprint, so that the new host trusts nothing else.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { InvalidField, NotFound } from '../base/errors.ts';
import { encodeJoinString } from '../wire/join.ts';
import { sameSecret } from '../base/secrets.ts';
import { writeSecretFile as writeSecret } from './secrets.ts';

const SingleUse = z.object({
  id: z.string(),
  hash: z.string(),
  label: z.string(),
  createdAt: z.string(),
  expiresAt: z.string(),
  /** How many different hosts may join with it; files from before counted tokens have none: 1. */
  uses: z.number().int().min(1).optional(),
  /** The hosts that joined with it, in order. */
  joined: z.array(z.object({ hostId: z.string(), at: z.string() })).optional(),
  /** The one host of a token file from before counted tokens (read, then moved into `joined`). */
  usedBy: z.string().optional(),
  usedAt: z.string().optional(),
  revokedAt: z.string().optional(),
  revokedReason: z.string().optional(),
});
const Retired = z.object({ hash: z.string(), retiredAt: z.string() });
const TokenFile = z.object({ singleUse: z.array(SingleUse), retiredCluster: z.array(Retired) });
type TokenFile = z.infer<typeof TokenFile>;
type Stored = z.infer<typeof SingleUse>;

/** The hosts that joined with `t`, old records (one `usedBy`) included. */
const joinedHosts = (t: Stored) => t.joined ?? (t.usedBy ? [{ hostId: t.usedBy, at: t.usedAt ?? t.createdAt }] : []);

/** A single-use token as the API and the hosts page show it (never the secret). */
export interface TokenInfo {
  id: string;
  label: string;
  createdAt: string;
  expiresAt: string;
  /** `used` only once all its uses are taken. */
  state: 'unused' | 'used' | 'expired' | 'revoked';
  uses: number;
  usesLeft: number;
  /** Every host that joined with it, in order. */
  joined: { hostId: string; at: string }[];
  /** The first host that joined with it, and when. */
  usedBy?: string;
  usedAt?: string;
  revokedReason?: string;
}

export type Verdict =
  | { ok: true; kind: 'cluster' | 'single-use'; id?: string }
  | { ok: false; code: 'unknown' | 'expired' | 'revoked' | 'used' | 'rotated'; message: string };

/** Longest a single-use token may live: 30 days. */
export const MAX_TTL_MINUTES = 30 * 24 * 60;
/** Most hosts one token may let join: a large room. */
export const MAX_USES = 200;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export class JoinTokens {
  private readonly file: string;
  private readonly clusterFile: string;
  private readonly now: () => Date;
  /** The controller's certificate fingerprint, which join strings carry. */
  readonly fingerprint: string | undefined;
  /** The controller's HTTPS URLs for agents (server/controller.ts sets them once it listens); none: no join strings. */
  addresses: string[] = [];

  /** `dataDir`'s secrets/join-token must exist (server/secrets.ts ensureSecrets makes it). */
  constructor(opts: { dataDir: string; now?: () => Date; fingerprint?: string }) {
    this.fingerprint = opts.fingerprint;
    const dir = path.join(opts.dataDir, 'secrets');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'join-tokens.json');
    this.clusterFile = path.join(dir, 'join-token');
    this.now = opts.now ?? (() => new Date());
  }

  /** The current cluster token. */
  clusterToken(): string {
    return readFileSync(this.clusterFile, 'utf8').trim();
  }

  /**
   * The join string for `token` (`shk1.…`: addresses, fingerprint, token), or undefined while the
   * controller serves no HTTPS (then the bare token is all there is to hand out).
   */
  joinString(token: string): string | undefined {
    if (!this.fingerprint || this.addresses.length === 0) return undefined;
    return encodeJoinString({ addresses: this.addresses, fingerprint: this.fingerprint, token });
  }

  /** Replaces the cluster token; the old one is refused from now on ("rotated"). Returns the new one. */
  rotateClusterToken(): string {
    const data = this.load();
    const old = existsSync(this.clusterFile) ? this.clusterToken() : '';
    const next = 'shj_' + randomBytes(24).toString('base64url');
    if (old) data.retiredCluster.push({ hash: sha256(old), retiredAt: this.now().toISOString() });
    // The old one is listed as retired first: if the second write fails (a full disk), it still works.
    this.save(data);
    writeSecret(this.clusterFile, next + '\n');
    return next;
  }

  /**
   * Makes a token valid for `ttlMinutes` (default one day) that lets `uses` different hosts join (default 1).
   * @example tokens.issue({ ttlMinutes: 60, label: 'room 12', uses: 20 }) // { id, token: 'shs_<id>_<secret>', expiresAt, uses }
   */
  issue(opts: { ttlMinutes?: number; label?: string; uses?: number } = {}): { id: string; token: string; expiresAt: string; uses: number; joinString?: string } {
    const ttl = opts.ttlMinutes ?? 24 * 60;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_MINUTES) {
      throw new InvalidField('ttlMinutes', `must be a whole number of minutes from 1 to ${MAX_TTL_MINUTES}`);
    }
    const uses = opts.uses ?? 1;
    if (!Number.isInteger(uses) || uses < 1 || uses > MAX_USES) {
      throw new InvalidField('uses', `must be a whole number of PCs from 1 to ${MAX_USES}`);
    }
    const label = (opts.label ?? '').trim();
    if (label.length > 100 || /[\u0000-\u001f]/.test(label)) throw new InvalidField('label', 'must be at most 100 printable characters');
    const id = randomBytes(6).toString('hex');
    const secret = randomBytes(24).toString('base64url');
    const now = this.now();
    const expiresAt = new Date(now.getTime() + ttl * 60_000).toISOString();
    const data = this.load();
    data.singleUse.push({ id, hash: sha256(secret), label, createdAt: now.toISOString(), expiresAt, uses, joined: [] });
    this.save(data);
    const token = `shs_${id}_${secret}`;
    const joinString = this.joinString(token);
    return { id, token, expiresAt, uses, ...(joinString ? { joinString } : {}) };
  }

  /** Every single-use token, newest first. */
  list(): TokenInfo[] {
    return this.load().singleUse.map((t) => this.info(t)).reverse();
  }

  /** Revokes a single-use token; enrolling with it is then refused with `reason`. */
  revoke(id: string, reason: string): TokenInfo {
    const why = reason.trim();
    if (!why || why.length > 200) throw new InvalidField('reason', 'must be 1-200 characters');
    const data = this.load();
    const t = data.singleUse.find((x) => x.id === id);
    if (!t) throw new NotFound(`join token ${id}`);
    if (!t.revokedAt) {
      t.revokedAt = this.now().toISOString();
      t.revokedReason = why;
      this.save(data);
    }
    return this.info(t);
  }

  /**
   * Checks a token for host `hostId` and, for a counted token, takes one of its uses for that host.
   * A host that already joined with it may present it again (a reinstall from the same USB stick)
   * without taking another use, even after its expiry.
   */
  redeem(token: string, hostId: string): Verdict {
    if (token.startsWith('shs_')) {
      const m = /^shs_([0-9a-f]{12})_([A-Za-z0-9_-]+)$/.exec(token);
      const data = this.load();
      const t = m ? data.singleUse.find((x) => x.id === m[1]) : undefined;
      if (!m || !t || !sameSecret(t.hash, sha256(m[2]!))) return { ok: false, code: 'unknown', message: 'join token is not known to this controller' };
      if (t.revokedAt) return { ok: false, code: 'revoked', message: `join token ${t.id} was revoked at ${t.revokedAt}: ${t.revokedReason}` };
      const joined = joinedHosts(t);
      if (joined.some((j) => j.hostId === hostId)) return { ok: true, kind: 'single-use', id: t.id };
      const uses = t.uses ?? 1;
      if (joined.length >= uses) {
        const last = joined[joined.length - 1]!;
        const who = uses === 1 ? `host ${last.hostId}` : `all its ${uses} hosts (${joined.map((j) => j.hostId).join(', ')}), the last`;
        return { ok: false, code: 'used', message: `join token ${t.id} was already used by ${who} at ${last.at}` };
      }
      if (Date.parse(t.expiresAt) <= this.now().getTime()) return { ok: false, code: 'expired', message: `join token ${t.id} expired at ${t.expiresAt}` };
      t.joined = [...joined, { hostId, at: this.now().toISOString() }];
      delete t.usedBy;
      delete t.usedAt;
      this.save(data);
      return { ok: true, kind: 'single-use', id: t.id };
    }
    if (existsSync(this.clusterFile) && sameSecret(token, this.clusterToken())) return { ok: true, kind: 'cluster' };
    const retired = this.load().retiredCluster.find((r) => sameSecret(r.hash, sha256(token)));
    if (retired) return { ok: false, code: 'rotated', message: `this cluster join token was replaced at ${retired.retiredAt}; use the current one from the hosts page` };
    return { ok: false, code: 'unknown', message: 'join token is not known to this controller' };
  }

  private info(t: Stored): TokenInfo {
    const joined = joinedHosts(t);
    const uses = t.uses ?? 1;
    const usesLeft = Math.max(0, uses - joined.length);
    const state = t.revokedAt ? 'revoked' : usesLeft === 0 ? 'used' : Date.parse(t.expiresAt) <= this.now().getTime() ? 'expired' : 'unused';
    return {
      id: t.id, label: t.label, createdAt: t.createdAt, expiresAt: t.expiresAt, state, uses, usesLeft, joined,
      ...(joined[0] ? { usedBy: joined[0].hostId, usedAt: joined[0].at } : {}),
      ...(t.revokedReason ? { revokedReason: t.revokedReason } : {}),
    };
  }

  private load(): TokenFile {
    if (!existsSync(this.file)) return { singleUse: [], retiredCluster: [] };
    return TokenFile.parse(JSON.parse(readFileSync(this.file, 'utf8')));
  }

  private save(data: TokenFile): void {
    writeSecret(this.file, JSON.stringify(data, null, 2) + '\n');
  }
}
