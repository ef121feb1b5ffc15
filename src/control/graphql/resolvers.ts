import type { CatalogImage } from '../catalog/store.js';
import { formatKey, preferredRow } from '../catalog/store.js';
import { imageScope } from '../tenancy/policy.js';
import { type GqlContext, presentAgents } from './context.js';

export { aliasImage, dealiasImage, forgetImage, preloadImage, rescanImages, unloadImage } from './mutations.js';

/**
 * Query resolvers. An Image is one catalog row (one platform of a tag); `installed` and
 * `installed_agents` read the live inventory of online agents by the row's platform manifest digest.
 */

export interface ImageView {
  name: string;
  humanized_name: string;
  tag: string;
  registry: string;
  digest: string;
  labels: Array<{ key: string; value: string }>;
  aliases: string[];
  size_bytes: number;
  resource_limits: CatalogImage['resource_limits'];
  supported_accelerators: string[];
}

interface ImagesArgs {
  is_installed?: boolean | null;
  is_operation?: boolean | null;
  domain?: string | null;
  group?: string | null;
  scaling_group?: string | null;
}

export function image(_root: unknown, args: { reference: string }, g: GqlContext): ImageView | null {
  const scope = imageScope(g.tenancy, g.principal, {});
  const rows = g.catalog.resolve(args.reference).filter((r) => scope.registries === undefined || scope.registries.includes(r.registry));
  const row = preferredRow(rows);
  return row ? toView(row, g.catalog.aliasMap()) : null;
}

export function images(_root: unknown, args: ImagesArgs, g: GqlContext): ImageView[] {
  const scope = imageScope(g.tenancy, g.principal, args);
  let rows = g.catalog.list({ registries: scope.registries });
  if (args.is_operation !== undefined && args.is_operation !== null) rows = rows.filter((r) => r.is_operation === args.is_operation);
  const present = presentAgents(g);
  const groups = scope.scalingGroups;
  if (groups !== undefined) rows = rows.filter((r) => (present.get(r.digest) ?? []).some((a) => a.scaling_group !== null && groups.includes(a.scaling_group)));
  if (args.is_installed !== undefined && args.is_installed !== null) {
    const want = args.is_installed;
    rows = rows.filter((r) => (present.get(r.digest)?.length ?? 0) > 0 === want);
  }
  const aliases = g.catalog.aliasMap();
  return rows.map((r) => toView(r, aliases));
}

export function installed(view: ImageView, _args: unknown, g: GqlContext): boolean {
  return (presentAgents(g).get(view.digest)?.length ?? 0) > 0;
}

/** Which agents hold it: superadmins only (null for everyone else). */
export function installedAgents(view: ImageView, _args: unknown, g: GqlContext): string[] | null {
  if (g.principal.role !== 'superadmin') return null;
  return (presentAgents(g).get(view.digest) ?? []).map((a) => a.machine_id).sort();
}

function toView(r: CatalogImage, aliases: Map<string, string[]>): ImageView {
  return {
    name: r.name,
    humanized_name: humanizedName(r),
    tag: r.tag,
    registry: r.registry,
    digest: r.digest,
    labels: Object.entries(r.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([key, value]) => ({ key, value })),
    aliases: aliases.get(formatKey(r)) ?? [],
    size_bytes: r.size_bytes,
    resource_limits: r.resource_limits,
    supported_accelerators: r.accelerators,
  };
}

/** The image's title label when it has one, else its repository's last path component. */
function humanizedName(r: CatalogImage): string {
  return r.labels['org.opencontainers.image.title'] ?? r.name.split('/').pop() ?? r.name;
}
