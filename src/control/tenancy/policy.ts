import { StowageError } from '../../errors.js';
import type { Principal, Role } from '../auth/api-keys.js';
import { type Group, TenancyStore } from './store.js';

/**
 * Who may see and do what with the catalog.
 *
 * images(domain, group, scaling_group):
 *   - superadmin sees every registry; `domain` narrows to that domain's allowed registries, and so does
 *     `group` alone (to its domain's).
 *   - admin and user see only their own domain's allowed registries (no domain: nothing); naming another
 *     domain is refused.
 *   - `group` keeps images installed on at least one agent of a scaling group the group allows. A user
 *     must be a member of the group; an admin may name any group of the domain.
 *   - `scaling_group` keeps images installed on at least one agent of that scaling group. A non-superadmin
 *     may name only a scaling group allowed by a group they may use (user: their groups; admin: the
 *     domain's groups; with `group` given: that group).
 * Mutations: superadmin only, except rescan_images which admins may run on their domain's registries.
 */

export interface ImageScope {
  /** Registries whose images are visible; undefined = all. */
  registries: string[] | undefined;
  /** Keep only images present on an agent of one of these scaling groups; undefined = no such condition. */
  scalingGroups: string[] | undefined;
}

export interface ScopeArgs {
  domain?: string | null | undefined;
  group?: string | null | undefined;
  scaling_group?: string | null | undefined;
}

export function requireRole(principal: Principal, roles: readonly Role[], action: string): void {
  if (!roles.includes(principal.role)) {
    throw new StowageError('FORBIDDEN', `${action} needs the ${roles.join(' or ')} role; ${principal.name} is ${principal.role}`, {
      details: { role: principal.role },
    });
  }
}

export async function imageScope(tenancy: TenancyStore, principal: Principal, args: ScopeArgs): Promise<ImageScope> {
  const superadmin = principal.role === 'superadmin';
  let domainName: string | null;
  if (superadmin) {
    domainName = args.domain ?? null;
  } else {
    if (args.domain && args.domain !== principal.domain) {
      throw new StowageError('FORBIDDEN', `${principal.name} may not list the images of domain "${args.domain}"`);
    }
    domainName = principal.domain;
  }

  let registries: string[] | undefined;
  if (domainName !== null) {
    const domain = superadmin ? await tenancy.requireDomain(domainName) : await tenancy.getDomain(domainName);
    registries = domain?.allowed_registries ?? [];
  } else if (!superadmin) {
    registries = [];
  }

  let scalingGroups: string[] | undefined;
  let group: Group | undefined;
  if (args.group) {
    group = await findGroup(tenancy, principal, domainName, args.group);
    scalingGroups = group.allowed_scaling_groups;
    // A superadmin naming a group without its domain still sees only what that domain allows.
    if (registries === undefined) registries = (await tenancy.requireDomain(group.domain)).allowed_registries;
  }
  if (args.scaling_group) {
    const sg = args.scaling_group;
    if (!superadmin) {
      const usable = group ? [group] : principal.role === 'admin' && principal.domain ? await tenancy.groupsIn(principal.domain) : await tenancy.groupsOf(principal.userId);
      if (!usable.some((g) => g.allowed_scaling_groups.includes(sg))) {
        throw new StowageError('FORBIDDEN', `${principal.name} may not use scaling group "${sg}"`);
      }
    }
    scalingGroups = scalingGroups === undefined ? [sg] : scalingGroups.filter((s) => s === sg);
  }
  return { registries, scalingGroups };
}

async function findGroup(tenancy: TenancyStore, principal: Principal, domainName: string | null, name: string): Promise<Group> {
  if (principal.role === 'superadmin') {
    if (domainName !== null) return tenancy.requireGroup(domainName, name);
    const found = await tenancy.groupsNamed(name);
    if (found.length === 1) return found[0] as Group;
    if (found.length === 0) throw new StowageError('GROUP_NOT_FOUND', `no group "${name}"`);
    throw new StowageError('BAD_REQUEST', `group "${name}" exists in several domains (${found.map((g) => g.domain).join(', ')}): name the domain too`);
  }
  const group = domainName !== null ? await tenancy.getGroup(domainName, name) : undefined;
  // A user learns nothing about groups they are not in: unknown and forbidden read the same.
  if (!group || (principal.role === 'user' && !(await tenancy.isMember(group.domain, group.name, principal.userId)))) {
    throw new StowageError('FORBIDDEN', `${principal.name} may not use group "${name}"`);
  }
  return group;
}

/** May this principal rescan that registry? Superadmins any; admins those their domain allows. */
export async function mayRescan(tenancy: TenancyStore, principal: Principal, registry: string): Promise<void> {
  requireRole(principal, ['superadmin', 'admin'], 'rescan_images');
  if (principal.role === 'superadmin') return;
  const allowed = principal.domain ? ((await tenancy.getDomain(principal.domain))?.allowed_registries ?? []) : [];
  if (!allowed.includes(registry)) {
    throw new StowageError('FORBIDDEN', `registry "${registry}" is not allowed in domain "${principal.domain ?? '(none)'}"`);
  }
}

/**
 * The registries a rescan without a registry covers (Backend.AI: "all"): every configured one for a
 * superadmin, the configured ones the domain allows for an admin; users are refused.
 */
export async function rescannableRegistries(tenancy: TenancyStore, principal: Principal, configured: readonly string[]): Promise<string[]> {
  requireRole(principal, ['superadmin', 'admin'], 'rescan_images');
  if (principal.role === 'superadmin') return [...configured];
  const allowed = principal.domain ? ((await tenancy.getDomain(principal.domain))?.allowed_registries ?? []) : [];
  return configured.filter((r) => allowed.includes(r));
}
