// The controller's durable state: one SQLite file (node:sqlite, no native addon) in WAL mode with
// numbered migrations. Every write that an API answer depends on is committed before the answer is
// sent, so a crash or `kill -9` never loses an answered request.
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { MIGRATIONS } from './migrations.ts';

export type Row = Record<string, unknown>;
export type Param = null | number | bigint | string | Uint8Array;

/** A thin wrapper over DatabaseSync: cached prepared statements, transactions, migrations. */
export class Store {
  readonly db: DatabaseSync;
  readonly file: string;
  private readonly statements = new Map<string, StatementSync>();
  private depth = 0;

  /** Opens (creating if needed) `file`, or an in-memory database for `:memory:`. */
  constructor(file: string) {
    this.file = file;
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    this.db = new DatabaseSync(file);
    // It holds agent keys and session hashes: readable by the controller only.
    if (file !== ':memory:') chmodSync(file, 0o600);
    this.db.exec('PRAGMA journal_mode = WAL');
    // FULL: a committed transaction is on disk before the answer leaves, even across a power cut.
    this.db.exec('PRAGMA synchronous = FULL');
    this.db.exec('PRAGMA foreign_keys = ON');
    this.db.exec('PRAGMA busy_timeout = 5000');
    this.migrate();
  }

  /** The schema version (the number of migrations applied). */
  version(): number {
    return Number((this.db.prepare('PRAGMA user_version').get() as Row).user_version);
  }

  /**
   * Applies the migrations this file lacks, each in its own transaction. Foreign keys are off meanwhile
   * (SQLite's way to rebuild a table others refer to: a DROP would otherwise cascade to them) and
   * checked before each commit, so a migration that broke a reference rolls back.
   */
  private migrate(): void {
    const from = this.version();
    if (from >= MIGRATIONS.length) return;
    this.db.exec('PRAGMA foreign_keys = OFF');
    try {
      for (let v = from; v < MIGRATIONS.length; v++) {
        this.tx(() => {
          this.db.exec(MIGRATIONS[v]!);
          const broken = this.db.prepare('PRAGMA foreign_key_check').all();
          if (broken.length > 0) throw new Error(`migration ${v + 1} broke ${broken.length} references, e.g. ${JSON.stringify(broken[0])}`);
          this.db.exec(`PRAGMA user_version = ${v + 1}`);
        });
      }
    } finally {
      this.db.exec('PRAGMA foreign_keys = ON');
    }
  }

  private stmt(sql: string): StatementSync {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  all<T = Row>(sql: string, ...params: Param[]): T[] {
    return this.stmt(sql).all(...params) as T[];
  }

  get<T = Row>(sql: string, ...params: Param[]): T | undefined {
    return this.stmt(sql).get(...params) as T | undefined;
  }

  run(sql: string, ...params: Param[]): { changes: number; lastInsertRowid: number } {
    const r = this.stmt(sql).run(...params);
    return { changes: Number(r.changes), lastInsertRowid: Number(r.lastInsertRowid) };
  }

  /**
   * Runs `fn` in one transaction (nested calls join the outer one); rolls back if it (or the commit)
   * throws. SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR): then there is nothing to
   * roll back, and the caller gets the first error, not "cannot rollback - no transaction is active".
   */
  tx<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    if (this.db.isTransaction) this.db.exec('ROLLBACK'); // left open by a rollback that failed (below)
    this.db.exec('BEGIN IMMEDIATE');
    this.depth++;
    try {
      const out = fn();
      this.db.exec('COMMIT');
      return out;
    } catch (err) {
      if (this.db.isOpen && this.db.isTransaction) {
        try {
          this.db.exec('ROLLBACK');
        } catch (rollbackErr) {
          // The first error is what went wrong and is thrown; the next tx() rolls back what is left open.
          (err as { rollbackError?: unknown }).rollbackError = rollbackErr;
        }
      }
      throw err;
    } finally {
      this.depth--;
    }
  }

  close(): void {
    if (this.db.isOpen) this.db.close();
  }
}

/** The schema version this code writes: a database with a higher one was made by a newer SkyHost. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/**
 * Whether some connection (a running controller, in this process or another) has `file` open: an
 * open WAL database keeps a shared lock on its file for as long as it is open, so an exclusive lock
 * is refused. When nobody has it, closing our connection folds any left-over WAL into the file.
 */
export function databaseInUse(file: string): boolean {
  const db = new DatabaseSync(file, { timeout: 0 });
  try {
    db.exec('PRAGMA locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('ROLLBACK');
    return false;
  } catch (err) {
    const code = (err as { errcode?: number }).errcode;
    if (code === 5 || code === 6) return true; // SQLITE_BUSY, SQLITE_LOCKED
    throw err;
  } finally {
    db.close();
  }
}

/** What a database file is, without migrating it: its schema version, its tables and `PRAGMA integrity_check`. */
export function inspectDatabase(file: string): { schemaVersion: number; tables: string[]; integrity: string[] } {
  const db = new DatabaseSync(file, { timeout: 5000 });
  try {
    const schemaVersion = Number((db.prepare('PRAGMA user_version').get() as Row).user_version);
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Row[]).map((r) => String(r.name));
    const integrity = (db.prepare('PRAGMA integrity_check').all() as Row[]).map((r) => String(r.integrity_check));
    return { schemaVersion, tables, integrity };
  } finally {
    db.close();
  }
}
