import { StowageError } from '../../errors.js';
import { backendAiArchitecture, defaultBackendAiArchitecture, ociArchitecture } from '../catalog/arch.js';
import type { CatalogImage } from '../catalog/store.js';
import { formatKey } from '../catalog/store.js';
import { imageScope } from '../tenancy/policy.js';
import { type GqlContext, installKey, presentAgents } from './context.js';

export {
  aliasImage,
  dealiasImage,
  forgetImage,
  forgetImageById,
  preloadImage,
  purgeImageById,
  rescanImages,
  unloadImage,
  untagImageFromRegistry,
} from './mutations.js';

/**
 * Query resolvers, with Backend.AI's semantics: an Image is one architecture of a tag (x86_64, aarch64);
 * `digest` (and the legacy `hash`) is the config digest, the image ID `docker images` shows; `installed`
 * and `installed_agents` read the live inventory of online agents holding the row's platform manifest
 * under the tag's own reference. An unknown reference is an error (ImageNotFound), not null.
 */

export interface ImageView {
  id: string;
  name: string;
  humanized_name: string;
  tag: string;
  registry: string;
  architecture: string;
  is_local: boolean;
  digest: string;
  hash: string;
  labels: Array<{ key: string; value: string }>;
  aliases: string[];
  size_bytes: number;
  resource_limits: CatalogImage['resource_limits'];
  supported_accelerators: string[];
  /** "registry/name:tag": what agents record the image under. */
  reference: string;
  /** The platform manifest digest agents report. */
  manifest_digest: string;
}

interface ImagesArgs {
  is_installed?: boolean | null;
  is_operation?: boolean | null;
  domain?: string | null;
  group?: string | null;
  scaling_group?: string | null;
}

/** Backend.AI's "environment image" not found, as its manager words it. */
export function imageNotFound(what: string): StowageError {
  return new StowageError('IMAGE_NOT_FOUND', `No such environment image. (${what})`, { details: { image: what } });
}

export async function image(
  _root: unknown,
  args: { id?: string | null; reference?: string | null; architecture?: string | null },
  g: GqlContext,
): Promise<ImageView> {
  const scope = await imageScope(g.tenancy, g.principal, {});
  const visible = (r: CatalogImage) => scope.registries === undefined || scope.registries.includes(r.registry);
  if (args.id !== undefined && args.id !== null) {
    const row = await g.catalog.byId(imageIdOf(args.id));
    // Another domain's image is as unknown as a missing one.
    if (!row || !visible(row)) throw imageNotFound(`id ${args.id}`);
    return toView(row, await g.catalog.aliasMap());
  }
  if (args.reference === undefined || args.reference === null) throw new StowageError('BAD_REQUEST', 'image needs a reference or an id');
  const arch = ociArchitecture(args.architecture ?? defaultBackendAiArchitecture());
  const rows = (await g.catalog.resolve(args.reference)).filter((r) => visible(r) && r.architecture === arch);
  const row = perArchitecture(rows)[0];
  if (!row) throw imageNotFound(`${args.reference} for ${backendAiArchitecture(arch)}`);
  return toView(row, await g.catalog.aliasMap());
}

export async function images(_root: unknown, args: ImagesArgs, g: GqlContext): Promise<ImageView[]> {
  const scope = await imageScope(g.tenancy, g.principal, args);
  let rows = perArchitecture(await g.catalog.list({ registries: scope.registries }));
  if (args.is_operation !== undefined && args.is_operation !== null) rows = rows.filter((r) => r.is_operation === args.is_operation);
  const present = await presentAgents(g);
  const holders = (r: CatalogImage) => present.get(installKey(formatKey(r), r.digest)) ?? [];
  const groups = scope.scalingGroups;
  if (groups !== undefined) rows = rows.filter((r) => holders(r).some((a) => a.scaling_group !== null && groups.includes(a.scaling_group)));
  if (args.is_installed !== undefined && args.is_installed !== null) {
    const want = args.is_installed;
    rows = rows.filter((r) => holders(r).length > 0 === want);
  }
  const aliases = await g.catalog.aliasMap();
  return rows.map((r) => toView(r, aliases));
}

/**
 * Images customized from a session by the caller (Backend.AI labels them
 * `ai.backend.customized-image.owner = user:<user id>`), within what the caller may see.
 */
export async function customizedImages(_root: unknown, _args: unknown, g: GqlContext): Promise<ImageView[]> {
  const scope = await imageScope(g.tenancy, g.principal, {});
  const owner = `user:${g.principal.userId}`;
  const rows = perArchitecture(await g.catalog.list({ registries: scope.registries })).filter((r) => r.labels['ai.backend.customized-image.owner'] === owner);
  const aliases = await g.catalog.aliasMap();
  return rows.map((r) => toView(r, aliases));
}

export async function installed(view: ImageView, _args: unknown, g: GqlContext): Promise<boolean> {
  return ((await presentAgents(g)).get(installKey(view.reference, view.manifest_digest))?.length ?? 0) > 0;
}

/** Which agents hold it: superadmins and domain admins (null for users). */
export async function installedAgents(view: ImageView, _args: unknown, g: GqlContext): Promise<string[] | null> {
  if (g.principal.role === 'user') return null;
  return ((await presentAgents(g)).get(installKey(view.reference, view.manifest_digest)) ?? []).map((a) => a.machine_id).sort();
}

/**
 * One row per (registry, repository, tag, architecture): Backend.AI has no OS or variant, so of several
 * platforms of one architecture (linux/arm/v6 and v7, windows and linux amd64) the first Linux one stands.
 */
export function perArchitecture(rows: readonly CatalogImage[]): CatalogImage[] {
  const chosen = new Map<string, CatalogImage>();
  for (const r of rows) {
    const key = `${formatKey(r)}\n${r.architecture}`;
    const prev = chosen.get(key);
    if (!prev || (!prev.platform.startsWith('linux/') && r.platform.startsWith('linux/'))) chosen.set(key, r);
  }
  return rows.filter((r) => chosen.get(`${formatKey(r)}\n${r.architecture}`) === r);
}

/** A plain UUID, or a Relay global ID ("ImageNode:<uuid>" in base64) as newer clients may send. */
export function imageIdOf(raw: string): string {
  const id = raw.trim();
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return id.toLowerCase();
  const decoded = /^[A-Za-z0-9+/=]{8,128}$/.test(id) ? Buffer.from(id, 'base64').toString('utf8') : '';
  const m = /^Image(?:Node)?:([0-9a-f-]{36})$/i.exec(decoded);
  if (m) return (m[1] as string).toLowerCase();
  throw new StowageError('BAD_REQUEST', `invalid image id "${id.slice(0, 100)}": a UUID`);
}

export function toView(r: CatalogImage, aliases: Map<string, string[]>): ImageView {
  return {
    id: r.id,
    name: r.name,
    humanized_name: humanizedName(r),
    tag: r.tag,
    registry: r.registry,
    architecture: backendAiArchitecture(r.architecture),
    is_local: false,
    digest: r.config_digest,
    hash: r.config_digest,
    labels: Object.entries(r.labels)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([key, value]) => ({ key, value })),
    aliases: aliases.get(formatKey(r)) ?? [],
    size_bytes: r.size_bytes,
    resource_limits: r.resource_limits,
    supported_accelerators: r.accelerators,
    reference: formatKey(r),
    manifest_digest: r.digest,
  };
}

/** Backend.AI 23.09 shows the image's repository path as its humanized name. */
function humanizedName(r: CatalogImage): string {
  return r.name;
}
