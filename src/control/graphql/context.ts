import type { Principal } from '../auth/api-keys.js';
import { CatalogStore } from '../catalog/store.js';
import type { ControlContext } from '../context.js';
import { TenancyStore } from '../tenancy/store.js';

/** What every resolver of one request sees: the caller, the stores, and the request's inventory snapshot. */
export interface GqlContext {
  ctx: ControlContext;
  principal: Principal;
  catalog: CatalogStore;
  tenancy: TenancyStore;
  /** Online agents holding each (reference, platform manifest digest), read once per request (see presentAgents). */
  present?: Promise<Map<string, PresentAgent[]>>;
}

export interface PresentAgent {
  machine_id: string;
  scaling_group: string | null;
}

export function gqlContext(ctx: ControlContext, principal: Principal): GqlContext {
  return { ctx, principal, catalog: new CatalogStore(ctx.db), tenancy: new TenancyStore(ctx.db) };
}

/**
 * The key of an installation: a tag reference ("registry/name:tag") and the platform manifest digest it
 * names. An image is installed on an agent that holds that digest under that reference, as Backend.AI
 * counts installations by image name: a sibling tag of the same digest is a different image.
 */
export function installKey(reference: string, digest: string): string {
  return `${reference}\n${digest}`;
}

/** installKey → online agents reporting it present, from the live inventory (one read per request). */
export function presentAgents(g: GqlContext): Promise<Map<string, PresentAgent[]>> {
  // Resolvers of one request run at once: the first starts the read, the others await the same one.
  g.present ??= readPresentAgents(g);
  return g.present;
}

async function readPresentAgents(g: GqlContext): Promise<Map<string, PresentAgent[]>> {
  const groups = new Map((await g.ctx.machines.list()).map((m) => [m.id, m.scaling_group] as const));
  const map = new Map<string, PresentAgent[]>();
  for (const a of await g.ctx.availability.query({ presentOnly: true })) {
    if (a.machine_status !== 'online') continue;
    for (const ref of a.references) {
      const key = installKey(ref, a.digest);
      const list = map.get(key) ?? [];
      if (!list.some((x) => x.machine_id === a.machine_id)) list.push({ machine_id: a.machine_id, scaling_group: groups.get(a.machine_id) ?? null });
      map.set(key, list);
    }
  }
  return map;
}
