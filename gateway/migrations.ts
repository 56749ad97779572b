import type Database from 'better-sqlite3'
import { migrateBrokerPersistence } from './broker-persistence.ts'

/**
 * The store's schema, one function per version (`PRAGMA user_version` counts the applied ones).
 * Append only: a released migration never changes, so every data dir upgrades the same way.
 */
export const MIGRATIONS: ReadonlyArray<(db: Database.Database) => void> = [
  // 1: control plane and broker persistence.
  (db) => {
    db.exec(`
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
      CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        quota_overrides TEXT NOT NULL DEFAULT '{}'
      ) STRICT;
      CREATE TABLE devices (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        rotated_at INTEGER,
        last_seen_at INTEGER,
        PRIMARY KEY (tenant_id, device_id)
      ) STRICT;
      CREATE TABLE acl_rules (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('publish', 'subscribe', 'all')),
        filter TEXT NOT NULL,
        permission TEXT NOT NULL CHECK (permission IN ('allow', 'deny')),
        PRIMARY KEY (tenant_id, device_id, position)
      ) STRICT;
      CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
    `)
    migrateBrokerPersistence(db)
  },
  // 2: which device opened which persistent session, so removing a device removes its sessions.
  (db) => {
    db.exec(`
      CREATE TABLE device_sessions (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, client_id)
      ) STRICT;
      CREATE INDEX device_sessions_by_device ON device_sessions (tenant_id, device_id);
    `)
  },
  // 3: tenant functions: a row per function, immutable versions, dead letters and the outbox.
  (db) => {
    db.exec(`
      CREATE TABLE functions (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        current_version INTEGER NOT NULL,
        latest_version INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, name)
      ) STRICT;
      CREATE TABLE function_versions (
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        source TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, name, version),
        FOREIGN KEY (tenant_id, name) REFERENCES functions (tenant_id, name) ON DELETE CASCADE
      ) STRICT;
      CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        function TEXT NOT NULL,
        version INTEGER NOT NULL,
        message TEXT NOT NULL,
        reason TEXT NOT NULL,
        error TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX dead_letters_by_function ON dead_letters (tenant_id, function, id);
      CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        function TEXT NOT NULL,
        stream TEXT NOT NULL,
        record TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX outbox_by_tenant ON outbox (tenant_id, seq);
    `)
  },
  // 4: the journal (messages that trigger functions, written before the broker acknowledges them,
  // and the work still owed on each) and function state.
  (db) => {
    db.exec(`
      CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        device_id TEXT,
        received_at INTEGER NOT NULL,
        hops INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX inbox_by_tenant ON inbox (tenant_id);
      CREATE TABLE inbox_work (
        seq INTEGER NOT NULL REFERENCES inbox (seq) ON DELETE CASCADE,
        tenant_id TEXT NOT NULL,
        function TEXT NOT NULL,
        PRIMARY KEY (tenant_id, function, seq)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX inbox_work_by_seq ON inbox_work (seq);
      CREATE TABLE publish_ids (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        digest BLOB NOT NULL,
        connection INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, client_id, packet_id)
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE state (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        expires_at INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, namespace, key)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX state_by_expiry ON state (expires_at) WHERE expires_at IS NOT NULL;
      CREATE TABLE state_leases (
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        namespace TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, namespace)
      ) STRICT, WITHOUT ROWID;
    `)
  },
  // 5: the outbox sealed at rest (nonce || XChaCha20-Poly1305 ciphertext), with priority, byte
  // count and expiry per record; running usage totals and drop counts per tenant (updated in the
  // transaction that changes the records); the audit of dropped records, kept bounded per tenant.
  (db) => {
    db.exec(`
      DROP TABLE outbox;
      CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        function TEXT NOT NULL,
        stream TEXT NOT NULL,
        priority INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX outbox_by_tenant ON outbox (tenant_id, seq);
      CREATE INDEX outbox_by_priority ON outbox (tenant_id, priority, seq);
      CREATE INDEX outbox_by_expiry ON outbox (expires_at);
      CREATE TABLE outbox_usage (
        tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
        bytes INTEGER NOT NULL,
        records INTEGER NOT NULL,
        dropped_quota_oldest INTEGER NOT NULL,
        dropped_quota_priority INTEGER NOT NULL,
        dropped_ttl INTEGER NOT NULL
      ) STRICT, WITHOUT ROWID;
      CREATE TABLE outbox_drops (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        function TEXT NOT NULL,
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('quota_oldest', 'quota_priority', 'ttl')),
        at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX outbox_drops_by_tenant ON outbox_drops (tenant_id, id);
    `)
  },
  // 6: people who sign in to the UI (Argon2id password hashes), scoped to a tenant or none
  // (administrators), and browser sessions, each made from a user or an API token and gone with it.
  (db) => {
    db.exec(`
      CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        password_changed_at INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE ui_sessions (
        id_hash TEXT PRIMARY KEY,
        csrf_token TEXT NOT NULL,
        user_name TEXT REFERENCES users (name) ON DELETE CASCADE,
        token_id INTEGER REFERENCES api_tokens (id) ON DELETE CASCADE,
        tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        CHECK ((user_name IS NULL) <> (token_id IS NULL))
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX ui_sessions_by_user ON ui_sessions (user_name);
      CREATE INDEX ui_sessions_by_token ON ui_sessions (token_id);
      CREATE INDEX ui_sessions_by_expiry ON ui_sessions (expires_at);
    `)
  },
]
