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
  // 3: roles admin/teacher/student (a 'user' becomes a student), classes and their members, quotas,
  // class sessions, leases and housekeeping on VMs, per-template policy, hosts that sleep on purpose.
  // users and hosts are rebuilt for their new CHECKs (Store.migrate turns foreign keys off around this).
  `
  CREATE TABLE users_new (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'teacher', 'student')),
    password_hash TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    display_name TEXT,
    quota_json TEXT
  );
  INSERT INTO users_new (name, role, password_hash, must_change_password, created_at)
    SELECT name, CASE role WHEN 'user' THEN 'student' ELSE role END, password_hash, must_change_password, created_at FROM users;
  DROP TABLE users;
  ALTER TABLE users_new RENAME TO users;

  CREATE TABLE hosts_new (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    agent_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'down', 'draining', 'asleep')),
    version TEXT NOT NULL DEFAULT '',
    mac TEXT,
    drained INTEGER NOT NULL DEFAULT 0,
    enrolled_at TEXT NOT NULL,
    last_seen TEXT,
    status_json TEXT,
    agent_fingerprint TEXT,
    display_name TEXT,
    asleep INTEGER NOT NULL DEFAULT 0,
    shutdown_vms_at TEXT
  );
  INSERT INTO hosts_new (id, hostname, agent_url, agent_key, state, version, mac, drained, enrolled_at, last_seen, status_json, agent_fingerprint)
    SELECT id, hostname, agent_url, agent_key, state, version, mac, drained, enrolled_at, last_seen, status_json, agent_fingerprint FROM hosts;
  DROP TABLE hosts;
  ALTER TABLE hosts_new RENAME TO hosts;

  CREATE TABLE classes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    quota_json TEXT,
    lease_default_minutes INTEGER,
    created_at TEXT NOT NULL
  );
  CREATE TABLE class_members (
    class_id TEXT NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('teacher', 'student')),
    PRIMARY KEY (class_id, user_name)
  );
  CREATE INDEX class_members_user ON class_members(user_name);

  CREATE TABLE class_sessions (
    id TEXT PRIMARY KEY,
    class_id TEXT NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
    teacher TEXT NOT NULL,
    template TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    disk_gib INTEGER,
    ends_at TEXT NOT NULL,
    keep_disks INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('running', 'ending', 'ended')),
    created_at TEXT NOT NULL,
    ended_at TEXT
  );
  CREATE INDEX class_sessions_class ON class_sessions(class_id, state);

  ALTER TABLE vms ADD COLUMN class_id TEXT;
  ALTER TABLE vms ADD COLUMN session_id TEXT;
  ALTER TABLE vms ADD COLUMN start_on_boot INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE vms ADD COLUMN lease_warned_at TEXT;
  ALTER TABLE vms ADD COLUMN lease_ended_at TEXT;
  ALTER TABLE vms ADD COLUMN stopped_since TEXT;
  CREATE INDEX vms_session ON vms(session_id);

  CREATE TABLE template_policies (
    template TEXT PRIMARY KEY,
    lease_default_minutes INTEGER,
    start_on_boot INTEGER
  );
  `,
];
