import type { Migration } from './database.js';

/** Users and keys, machines, availability and operations: what the cluster issue needs. */
export const coreMigrations: Migration[] = [
  {
    id: '0001-core',
    sql: `
      CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('superadmin', 'admin', 'user')),
        domain TEXT,
        created_at TEXT NOT NULL
      );
      -- API keys are stored as SHA-256 hashes: the database never holds a usable credential.
      CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
      );
      CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        -- Kept whole: the control plane mints the machine's peer tokens with it.
        secret TEXT NOT NULL,
        agent_url TEXT NOT NULL,
        platform TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        scaling_group TEXT,
        version TEXT,
        inventory_seq INTEGER NOT NULL DEFAULT 0,
        joined_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL
      );
      CREATE TABLE availability (
        machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        platform TEXT NOT NULL,
        index_digest TEXT,
        config_digest TEXT,
        refs TEXT NOT NULL DEFAULT '[]',
        size_bytes INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL CHECK (state IN ('present', 'transferring', 'failed')),
        operation_id TEXT,
        failure TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (machine_id, digest, platform)
      );
      CREATE INDEX availability_digest ON availability(digest);
      CREATE INDEX availability_index_digest ON availability(index_digest);
      CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        stage TEXT NOT NULL,
        actor TEXT NOT NULL,
        artifact TEXT NOT NULL,
        source_machine TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        progress TEXT NOT NULL DEFAULT '{"current":0,"total":0,"message":""}',
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT
      );
      CREATE INDEX operations_created ON operations(created_at);
      CREATE TABLE operation_targets (
        operation_id TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
        machine_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        status TEXT NOT NULL,
        bytes_transferred INTEGER NOT NULL DEFAULT 0,
        bytes_total INTEGER,
        failure TEXT,
        started_at TEXT,
        finished_at TEXT,
        PRIMARY KEY (operation_id, machine_id)
      );
    `,
  },
  // What a machine's store holds on disk, from its heartbeats (shown by the dashboard).
  { id: '0050-machine-disk-use', sql: 'ALTER TABLE machines ADD COLUMN disk_used_bytes INTEGER' },
  // The layer digests of a present image (JSON array), from agent inventories: where a blob can be read.
  { id: '0060-availability-layers', sql: 'ALTER TABLE availability ADD COLUMN layers TEXT' },
  // The status queries at fleet scale: unfinished operations at start, listings by kind and status (and
  // the metrics' counts of them), an operation's targets in order without a sort.
  {
    id: '0065-status-indexes',
    sql: `
      CREATE INDEX operations_status ON operations(status, id);
      CREATE INDEX operations_kind_status ON operations(kind, status, id);
      CREATE INDEX operation_targets_position ON operation_targets(operation_id, position);
    `,
  },
  // What each machine holds, counted and summed for the metrics' inventory gauges from the index alone.
  { id: '0066-availability-inventory-index', sql: 'CREATE INDEX availability_inventory ON availability(machine_id, state, size_bytes)' },
  // Which control-plane replica runs an unfinished operation, and until when without a renewal (replicas/leases.ts).
  {
    id: '0400-operation-leases',
    sql: 'ALTER TABLE operations ADD COLUMN owner TEXT; ALTER TABLE operations ADD COLUMN lease_until TEXT;',
    postgres: 'ALTER TABLE operations ADD COLUMN owner TEXT; ALTER TABLE operations ADD COLUMN lease_until TEXT;',
  },
];
