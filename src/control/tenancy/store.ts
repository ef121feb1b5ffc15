import { sql } from 'kysely';
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

  async putDomain(name: string, allowedRegistries: readonly string[]): Promise<Domain> {
    checkName('domain', name);
    const list = checkList('allowed_registries', allowedRegistries);
    await this.db.run(
      sql`INSERT INTO domains (name, allowed_registries, created_at) VALUES (${name}, ${JSON.stringify(list)}, ${nowIso()})
          ON CONFLICT(name) DO UPDATE SET allowed_registries = excluded.allowed_registries`,
    );
    return { name, allowed_registries: list };
  }

  async getDomain(name: string): Promise<Domain | undefined> {
    const row = await this.db.get<DomainRow>(sql`SELECT name, allowed_registries FROM domains WHERE name = ${name}`);
    return row ? toDomain(row) : undefined;
  }

  async requireDomain(name: string): Promise<Domain> {
    const d = await this.getDomain(name);
    if (!d) throw new StowageError('DOMAIN_NOT_FOUND', `no domain "${name}"`, { details: { domain: name } });
    return d;
  }

  async listDomains(): Promise<Domain[]> {
    return (await this.db.all<DomainRow>(sql`SELECT name, allowed_registries FROM domains ORDER BY name`)).map(toDomain);
  }

  async putGroup(domain: string, name: string, allowedScalingGroups: readonly string[]): Promise<Group> {
    checkName('group', name);
    await this.requireDomain(domain);
    const list = checkList('allowed_scaling_groups', allowedScalingGroups);
    await this.db.run(
      sql`INSERT INTO groups (domain, name, allowed_scaling_groups, created_at) VALUES (${domain}, ${name}, ${JSON.stringify(list)}, ${nowIso()})
          ON CONFLICT(domain, name) DO UPDATE SET allowed_scaling_groups = excluded.allowed_scaling_groups`,
    );
    return { domain, name, allowed_scaling_groups: list };
  }

  async getGroup(domain: string, name: string): Promise<Group | undefined> {
    const row = await this.db.get<GroupRow>(sql`SELECT * FROM groups WHERE domain = ${domain} AND name = ${name}`);
    return row ? toGroup(row) : undefined;
  }

  async requireGroup(domain: string, name: string): Promise<Group> {
    const g = await this.getGroup(domain, name);
    if (!g) throw new StowageError('GROUP_NOT_FOUND', `no group "${name}" in domain "${domain}"`, { details: { domain, group: name } });
    return g;
  }

  /** Groups of that name in any domain (a superadmin may name a group without its domain when it is unique). */
  async groupsNamed(name: string): Promise<Group[]> {
    return (await this.db.all<GroupRow>(sql`SELECT * FROM groups WHERE name = ${name} ORDER BY domain`)).map(toGroup);
  }

  async groupsIn(domain: string): Promise<Group[]> {
    return (await this.db.all<GroupRow>(sql`SELECT * FROM groups WHERE domain = ${domain} ORDER BY name`)).map(toGroup);
  }

  async addMember(domain: string, group: string, userId: string): Promise<void> {
    await this.requireGroup(domain, group);
    const user = await this.db.get<{ domain: string | null }>(sql`SELECT domain FROM users WHERE id = ${userId}`);
    if (!user) throw new StowageError('BAD_REQUEST', `no user ${userId}`);
    if (user.domain !== domain) throw new StowageError('BAD_REQUEST', `user ${userId} is not in domain "${domain}"`);
    await this.db.run(sql`INSERT INTO group_members (domain, group_name, user_id) VALUES (${domain}, ${group}, ${userId}) ON CONFLICT DO NOTHING`);
  }

  async isMember(domain: string, group: string, userId: string): Promise<boolean> {
    return (await this.db.get(sql`SELECT 1 FROM group_members WHERE domain = ${domain} AND group_name = ${group} AND user_id = ${userId}`)) !== undefined;
  }

  async groupsOf(userId: string): Promise<Group[]> {
    return (
      await this.db.all<GroupRow>(
        sql`SELECT g.* FROM groups g JOIN group_members m ON m.domain = g.domain AND m.group_name = g.name WHERE m.user_id = ${userId} ORDER BY g.name`,
      )
    ).map(toGroup);
  }
}

interface DomainRow {
  name: string;
  allowed_registries: string;
}

function toDomain(r: DomainRow): Domain {
  return { name: r.name, allowed_registries: JSON.parse(r.allowed_registries) as string[] };
}

interface GroupRow {
  domain: string;
  name: string;
  allowed_scaling_groups: string;
}

function toGroup(r: GroupRow): Group {
  return { domain: r.domain, name: r.name, allowed_scaling_groups: JSON.parse(r.allowed_scaling_groups) as string[] };
}
