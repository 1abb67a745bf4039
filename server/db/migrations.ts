// Numbered schema migrations: index i brings the schema from version i to i + 1 (PRAGMA user_version).
// Append only: never edit a migration that has shipped.
export const MIGRATIONS: readonly string[] = [
  // 1: the first schema
  `
  CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

  CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
  );

  CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
  );

  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT
  );

  CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    agent_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'down', 'draining')),
    version TEXT NOT NULL DEFAULT '',
    mac TEXT,
    drained INTEGER NOT NULL DEFAULT 0,
    enrolled_at TEXT NOT NULL,
    last_seen TEXT,
    status_json TEXT
  );

  CREATE TABLE vms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    template TEXT NOT NULL,
    host_id TEXT,
    state TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_gib INTEGER,
    ip TEXT,
    ssh_json TEXT,
    console TEXT NOT NULL DEFAULT 'serial',
    error TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    updated_at TEXT NOT NULL
  );
  CREATE INDEX vms_owner ON vms(owner);
  CREATE INDEX vms_host ON vms(host_id);

  CREATE TABLE idempotency (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    vm_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (owner, key)
  );

  CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    level TEXT NOT NULL,
    source TEXT NOT NULL,
    host_id TEXT,
    vm_id TEXT,
    msg TEXT NOT NULL,
    data_json TEXT
  );
  CREATE INDEX events_host ON events(host_id, id);
  CREATE INDEX events_source ON events(source, id);
  `,
  // 2: the agent's certificate, pinned at enrollment
  `
  ALTER TABLE hosts ADD COLUMN agent_fingerprint TEXT;
  `,
];
