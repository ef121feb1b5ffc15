import { type Migration, registerMigrations } from '../db/database.js';

/**
 * The catalog's tables: configured registries, one row per (registry, repository, tag, platform) found by
 * a rescan, and aliases naming a (registry, repository, tag). Registered at module load, so importing
 * this module before openDatabase() is all the wiring it needs.
 */
export const catalogMigrations: Migration[] = [
  {
    id: '0100-catalog',
    sql: `
      CREATE TABLE registries (
        -- host[:port] exactly as it appears in image references ("registry.example.com", "127.0.0.1:5000").
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        username TEXT,
        -- Kept whole: the control plane and the agents need it to talk to the registry. Never returned by any API.
        password TEXT,
        insecure INTEGER NOT NULL DEFAULT 0,
        -- Only repositories under "<project>/" are scanned (Harbor-style projects).
        project TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE TABLE catalog_images (
        registry TEXT NOT NULL REFERENCES registries(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        platform TEXT NOT NULL,
        -- The platform manifest digest (what agents report in their inventory).
        digest TEXT NOT NULL,
        -- The index (manifest list) the tag points at, when it points at one.
        index_digest TEXT,
        config_digest TEXT NOT NULL,
        architecture TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        size_bytes INTEGER NOT NULL,
        resource_limits TEXT NOT NULL DEFAULT '[]',
        accelerators TEXT NOT NULL DEFAULT '[]',
        is_operation INTEGER NOT NULL DEFAULT 0,
        scanned_at TEXT NOT NULL,
        PRIMARY KEY (registry, name, tag, platform)
      );
      CREATE INDEX catalog_images_digest ON catalog_images(digest);
      CREATE TABLE catalog_aliases (
        alias TEXT PRIMARY KEY,
        registry TEXT NOT NULL,
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE INDEX catalog_aliases_target ON catalog_aliases(registry, name, tag);
    `,
  },
];

registerMigrations(catalogMigrations);

/**
 * Backend.AI clients name a catalog row by a UUID (Image.id, image(id:), forget_image_by_id): each row gets
 * one when first recorded, kept across rescans. Existing rows get random v4 UUIDs here.
 */
registerMigrations([
  {
    id: '0101-catalog-image-ids',
    sql: `
      ALTER TABLE catalog_images ADD COLUMN id TEXT;
      UPDATE catalog_images SET id = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)));
      CREATE UNIQUE INDEX catalog_images_id ON catalog_images(id);
    `,
  },
]);
