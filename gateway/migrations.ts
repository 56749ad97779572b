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
]
