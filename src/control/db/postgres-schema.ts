/**
 * The control plane's schema for PostgreSQL. The SQLite migrations (core-schema.ts, catalog/schema.ts,
 * tenancy/schema.ts, tenancy/keypairs.ts, tasks/ids.ts, machines.ts, auth/revocations.ts) are consolidated
 * here into one baseline: a new PostgreSQL database starts at the schema SQLite reaches after all of them.
 *
 * RULE: every migration added from now on carries both texts, SQLite's and PostgreSQL's, under the same id
 * (appended to `postgresMigrations` below, or carried beside the SQLite text); a migration written for one
 * dialect only fails test/control/postgres-schema.test.ts, which compares both catalogs table by table and
 * column by column.
 *
 * Translation: the same tables, columns, keys, CHECKs, foreign keys (with their ON DELETE), defaults and
 * indexes under the same names; TEXT stays TEXT (ISO timestamps sort as text in both; JSON stays text, so
 * one query path reads both); INTEGER flags (0/1) stay INTEGER; integers that hold byte counts, ms epochs or
 * ever-growing sequence numbers are BIGINT (node-postgres returns int8 as a string unless told otherwise:
 * the PostgreSQL dialect parses it to a number). No migration inserts seed rows and none uses
 * AUTOINCREMENT (every key is a text ID or a composite); 0101's UPDATE of existing rows has nothing to do
 * on a new database.
 */

export interface PostgresMigration {
  /** Sorts in application order; an applied id is never applied again. */
  id: string;
  sql: string;
}

/** The SQLite migration ids the baseline stands for (a database at the baseline has all of them). */
export const POSTGRES_BASELINE_COVERS = [
  '0001-core',
  '0050-machine-disk-use',
  '0060-availability-layers',
  '0065-status-indexes',
  '0066-availability-inventory-index',
  '0100-catalog',
  '0101-catalog-image-ids',
  '0200-tenancy',
  '0210-keypairs',
  '0300-task-ids',
  '0900-revoked-machines',
  '0910-revoked-tokens',
] as const;

const baseline = `
  -- 0001-core: users and keys, machines, availability and operations.
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
    secret TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    platform TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    scaling_group TEXT,
    version TEXT,
    inventory_seq BIGINT NOT NULL DEFAULT 0,
    joined_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    -- 0050-machine-disk-use
    disk_used_bytes BIGINT
  );
  CREATE TABLE availability (
    machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    platform TEXT NOT NULL,
    index_digest TEXT,
    config_digest TEXT,
    refs TEXT NOT NULL DEFAULT '[]',
    size_bytes BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('present', 'transferring', 'failed')),
    operation_id TEXT,
    failure TEXT,
    updated_at TEXT NOT NULL,
    -- 0060-availability-layers
    layers TEXT,
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
    bytes_transferred BIGINT NOT NULL DEFAULT 0,
    bytes_total BIGINT,
    failure TEXT,
    started_at TEXT,
    finished_at TEXT,
    PRIMARY KEY (operation_id, machine_id)
  );
  -- 0065-status-indexes
  CREATE INDEX operations_status ON operations(status, id);
  CREATE INDEX operations_kind_status ON operations(kind, status, id);
  CREATE INDEX operation_targets_position ON operation_targets(operation_id, position);
  -- 0066-availability-inventory-index
  CREATE INDEX availability_inventory ON availability(machine_id, state, size_bytes);

  -- 0100-catalog, 0101-catalog-image-ids: registries, what a rescan found, aliases.
  CREATE TABLE registries (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    username TEXT,
    password TEXT,
    insecure INTEGER NOT NULL DEFAULT 0,
    project TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE catalog_images (
    registry TEXT NOT NULL REFERENCES registries(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    platform TEXT NOT NULL,
    digest TEXT NOT NULL,
    index_digest TEXT,
    config_digest TEXT NOT NULL,
    architecture TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    size_bytes BIGINT NOT NULL,
    resource_limits TEXT NOT NULL DEFAULT '[]',
    accelerators TEXT NOT NULL DEFAULT '[]',
    is_operation INTEGER NOT NULL DEFAULT 0,
    scanned_at TEXT NOT NULL,
    id TEXT,
    PRIMARY KEY (registry, name, tag, platform)
  );
  CREATE INDEX catalog_images_digest ON catalog_images(digest);
  CREATE UNIQUE INDEX catalog_images_id ON catalog_images(id);
  CREATE TABLE catalog_aliases (
    alias TEXT PRIMARY KEY,
    registry TEXT NOT NULL,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    created_at TEXT NOT NULL
  );
  CREATE INDEX catalog_aliases_target ON catalog_aliases(registry, name, tag);

  -- 0200-tenancy: domains, their groups, membership.
  CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    allowed_registries TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL
  );
  CREATE TABLE groups (
    domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    allowed_scaling_groups TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    PRIMARY KEY (domain, name)
  );
  CREATE TABLE group_members (
    domain TEXT NOT NULL,
    group_name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (domain, group_name, user_id),
    FOREIGN KEY (domain, group_name) REFERENCES groups(domain, name) ON DELETE CASCADE
  );

  -- 0210-keypairs: Backend.AI keypairs, the secret sealed with the secrets key.
  CREATE TABLE keypairs (
    access_key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret_sealed TEXT NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    rotated_at TEXT,
    last_used_at TEXT
  );
  CREATE INDEX keypairs_user ON keypairs(user_id);

  -- 0300-task-ids: Backend.AI background-task UUIDs of operations.
  CREATE TABLE task_ids (
    task_id TEXT PRIMARY KEY,
    operation_id TEXT NOT NULL UNIQUE REFERENCES operations(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
  );

  -- 0900-revoked-machines, 0910-revoked-tokens
  CREATE TABLE revoked_machines (id TEXT PRIMARY KEY, revoked_at TEXT NOT NULL);
  CREATE TABLE revoked_tokens (kind TEXT NOT NULL, id TEXT NOT NULL, until_ms BIGINT NOT NULL, PRIMARY KEY (kind, id));
`;

/**
 * PostgreSQL's migrations in application order: the baseline, then (from now on) one entry per new
 * migration, under the same id as its SQLite text. Each runs in one transaction (PostgreSQL's DDL is
 * transactional).
 */
export const postgresMigrations: PostgresMigration[] = [{ id: '0000-postgres-baseline', sql: baseline }];
