import { type Migration, registerMigrations } from '../db/database.js';

/**
 * Tenancy: domains (which registries their users may see), groups inside a domain (which scaling groups
 * their members may use) and group membership. Users themselves (role, domain) are core tables; agents
 * belong to a scaling group through machines.scaling_group.
 */
export const tenancyMigrations: Migration[] = [
  {
    id: '0200-tenancy',
    sql: `
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
    `,
  },
];

registerMigrations(tenancyMigrations);
