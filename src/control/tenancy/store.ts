import { z } from 'zod';
import { StowageError } from '../../errors.js';
import { type Db, nowIso } from '../db/database.js';
import './schema.js';

/**
 * Domains, groups and group membership. A domain lists the registries its users may see; a group belongs
 * to one domain and lists the scaling groups its members may use; users join groups.
 */

export const tenancyName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'names are letters, digits and . _ -, up to 64');

export interface Domain {
  name: string;
  allowed_registries: string[];
}

export interface Group {
  domain: string;
  name: string;
  allowed_scaling_groups: string[];
}

function checkName(what: string, name: string): void {
  if (!tenancyName.safeParse(name).success) throw new StowageError('BAD_REQUEST', `invalid ${what} name "${name.slice(0, 100)}": letters, digits and . _ -, up to 64`);
}

function checkList(what: string, items: readonly string[]): string[] {
  if (!Array.isArray(items) || items.length > 1000 || items.some((i) => typeof i !== 'string' || i === '' || i.length > 255)) {
    throw new StowageError('BAD_REQUEST', `invalid ${what}: a list of up to 1000 non-empty names`);
  }
  return [...new Set(items)];
}

export class TenancyStore {
  constructor(private readonly db: Db) {}

  putDomain(name: string, allowedRegistries: readonly string[]): Domain {
    checkName('domain', name);
    const list = checkList('allowed_registries', allowedRegistries);
    this.db
      .prepare(`INSERT INTO domains (name, allowed_registries, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET allowed_registries = excluded.allowed_registries`)
      .run(name, JSON.stringify(list), nowIso());
    return { name, allowed_registries: list };
  }

  getDomain(name: string): Domain | undefined {
    const row = this.db.prepare('SELECT name, allowed_registries FROM domains WHERE name = ?').get(name) as { name: string; allowed_registries: string } | undefined;
    return row ? { name: row.name, allowed_registries: JSON.parse(row.allowed_registries) as string[] } : undefined;
  }

  requireDomain(name: string): Domain {
    const d = this.getDomain(name);
    if (!d) throw new StowageError('DOMAIN_NOT_FOUND', `no domain "${name}"`, { details: { domain: name } });
    return d;
  }

  listDomains(): Domain[] {
    return (this.db.prepare('SELECT name FROM domains ORDER BY name').pluck().all() as string[]).map((n) => this.requireDomain(n));
  }

  putGroup(domain: string, name: string, allowedScalingGroups: readonly string[]): Group {
    checkName('group', name);
    this.requireDomain(domain);
    const list = checkList('allowed_scaling_groups', allowedScalingGroups);
    this.db
      .prepare(
        `INSERT INTO groups (domain, name, allowed_scaling_groups, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT(domain, name) DO UPDATE SET allowed_scaling_groups = excluded.allowed_scaling_groups`,
      )
      .run(domain, name, JSON.stringify(list), nowIso());
    return { domain, name, allowed_scaling_groups: list };
  }

  getGroup(domain: string, name: string): Group | undefined {
    const row = this.db.prepare('SELECT * FROM groups WHERE domain = ? AND name = ?').get(domain, name) as GroupRow | undefined;
    return row ? toGroup(row) : undefined;
  }

  requireGroup(domain: string, name: string): Group {
    const g = this.getGroup(domain, name);
    if (!g) throw new StowageError('GROUP_NOT_FOUND', `no group "${name}" in domain "${domain}"`, { details: { domain, group: name } });
    return g;
  }

  /** Groups of that name in any domain (a superadmin may name a group without its domain when it is unique). */
  groupsNamed(name: string): Group[] {
    return (this.db.prepare('SELECT * FROM groups WHERE name = ? ORDER BY domain').all(name) as GroupRow[]).map(toGroup);
  }

  groupsIn(domain: string): Group[] {
    return (this.db.prepare('SELECT * FROM groups WHERE domain = ? ORDER BY name').all(domain) as GroupRow[]).map(toGroup);
  }

  addMember(domain: string, group: string, userId: string): void {
    this.requireGroup(domain, group);
    const user = this.db.prepare('SELECT domain FROM users WHERE id = ?').get(userId) as { domain: string | null } | undefined;
    if (!user) throw new StowageError('BAD_REQUEST', `no user ${userId}`);
    if (user.domain !== domain) throw new StowageError('BAD_REQUEST', `user ${userId} is not in domain "${domain}"`);
    this.db.prepare('INSERT OR IGNORE INTO group_members (domain, group_name, user_id) VALUES (?, ?, ?)').run(domain, group, userId);
  }

  isMember(domain: string, group: string, userId: string): boolean {
    return this.db.prepare('SELECT 1 FROM group_members WHERE domain = ? AND group_name = ? AND user_id = ?').get(domain, group, userId) !== undefined;
  }

  groupsOf(userId: string): Group[] {
    return (
      this.db
        .prepare('SELECT g.* FROM groups g JOIN group_members m ON m.domain = g.domain AND m.group_name = g.name WHERE m.user_id = ? ORDER BY g.name')
        .all(userId) as GroupRow[]
    ).map(toGroup);
  }
}

interface GroupRow {
  domain: string;
  name: string;
  allowed_scaling_groups: string;
}

function toGroup(r: GroupRow): Group {
  return { domain: r.domain, name: r.name, allowed_scaling_groups: JSON.parse(r.allowed_scaling_groups) as string[] };
}
