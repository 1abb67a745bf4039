// Idempotency keys of VM requests (the `idempotency` table): a retried request with the same key and
// body gets the first answer, per user. Keys are forgotten after a day.
import { createHash } from 'node:crypto';
import type { Store } from '../db/store.ts';

/** What the first request with a key made. */
export interface KeyUse {
  /** sha256 of the parsed request body: the same key with another body is refused. */
  requestHash: string;
  vmId: string;
  /** The first answer's status: 201, 202 (the outcome was not known yet) or the error's. */
  status: number;
}

export const KEY_LIFETIME_MS = 86_400_000;

/** The hash a request is remembered by (of the parsed body, so defaults and key order do not matter). */
export function requestHash(request: unknown): string {
  return createHash('sha256').update(JSON.stringify(request)).digest('hex');
}

export class IdempotencyKeys {
  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  find(owner: string, key: string): KeyUse | undefined {
    const row = this.store.get('SELECT request_hash, vm_id, status FROM idempotency WHERE owner = ? AND key = ?', owner, key);
    return row ? { requestHash: String(row.request_hash), vmId: String(row.vm_id), status: Number(row.status) } : undefined;
  }

  /** Remembers a key as answered 202 (call inside the transaction that inserts the VM). */
  remember(owner: string, key: string, hash: string, vmId: string, at: string): void {
    this.store.run('INSERT INTO idempotency (owner, key, request_hash, vm_id, status, created_at) VALUES (?, ?, ?, ?, 202, ?)',
      owner, key, hash, vmId, at);
  }

  /** Records the status the first request was answered with. */
  answered(owner: string, key: string, status: number): void {
    this.store.run('UPDATE idempotency SET status = ? WHERE owner = ? AND key = ?', status, owner, key);
  }

  /** Forgets one key (its VM never came to be: the retry makes it anew). */
  forget(owner: string, key: string): void {
    this.store.run('DELETE FROM idempotency WHERE owner = ? AND key = ?', owner, key);
  }

  /** Forgets keys older than a day; returns how many. */
  prune(now = new Date()): number {
    return this.store.run('DELETE FROM idempotency WHERE created_at < ?', new Date(now.getTime() - KEY_LIFETIME_MS).toISOString()).changes;
  }
}
