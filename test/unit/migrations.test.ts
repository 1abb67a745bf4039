// Schema migrations on a database written by an older SkyHost: nothing a user had is lost.
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { MIGRATIONS } from '../../server/db/migrations.ts';
import { SCHEMA_VERSION, Store } from '../../server/db/store.ts';

describe('schema migrations', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(path.join(tmpdir(), 'sky-migrate-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A database as version 2 left it: an admin, a 'user' with a session and a token, a host. */
  function version2(file: string): void {
    const db = new DatabaseSync(file);
    db.exec('PRAGMA foreign_keys = ON');
    db.exec(MIGRATIONS[0]!);
    db.exec(MIGRATIONS[1]!);
    db.exec('PRAGMA user_version = 2');
    const now = new Date().toISOString();
    db.prepare("INSERT INTO users (name, role, password_hash, created_at) VALUES ('admin', 'admin', 'h', ?), ('alice', 'user', 'h', ?)").run(now, now);
    db.prepare("INSERT INTO sessions (id_hash, user_name, csrf, created_at, expires_at) VALUES ('s1', 'alice', 'c', ?, ?)").run(now, now);
    db.prepare("INSERT INTO api_tokens (id, user_name, token_hash, label, created_at) VALUES ('t1', 'alice', 'th', 'ci', ?)").run(now);
    db.prepare(`INSERT INTO hosts (id, hostname, agent_url, agent_key, state, mac, enrolled_at, agent_fingerprint)
      VALUES ('h1', 'lab-01', 'https://10.0.0.5:8081', 'k', 'ready', '52:54:00:aa:bb:cc', ?, 'fp')`).run(now);
    db.close();
  }

  it('given a version 2 database, should make its users students and keep their sessions, tokens and hosts', () => {
    const file = path.join(dir, 'skyhost.db');
    version2(file);
    const store = new Store(file);
    try {
      expect(store.version()).to.equal(SCHEMA_VERSION);
      expect(store.all('SELECT name, role FROM users ORDER BY name')).to.deep.equal([{ name: 'admin', role: 'admin' }, { name: 'alice', role: 'student' }]);
      expect(store.get('SELECT user_name FROM sessions WHERE id_hash = ?', 's1')).to.deep.equal({ user_name: 'alice' });
      expect(store.get('SELECT label FROM api_tokens WHERE id = ?', 't1')).to.deep.equal({ label: 'ci' });
      expect(store.get('SELECT hostname, mac, agent_fingerprint, asleep FROM hosts')).to.deep.equal({ hostname: 'lab-01', mac: '52:54:00:aa:bb:cc', agent_fingerprint: 'fp', asleep: 0 });
      // Foreign keys are back on after the migration: deleting a user still takes its session along.
      store.run("DELETE FROM users WHERE name = 'alice'");
      expect(store.all('SELECT * FROM sessions')).to.deep.equal([]);
    } finally {
      store.close();
    }
  });

  it('given a role that no longer exists, should refuse it', () => {
    const store = new Store(':memory:');
    try {
      expect(() => store.run("INSERT INTO users (name, role, created_at) VALUES ('x', 'user', 'now')")).to.throw(/CHECK/);
      store.run("INSERT INTO users (name, role, created_at) VALUES ('t', 'teacher', 'now')");
    } finally {
      store.close();
    }
  });
});
