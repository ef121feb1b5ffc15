import { type ErrorCode, StowageError, isStowageError } from '../../errors.js';
import { ociArchitecture } from '../catalog/arch.js';
import { createPreload } from '../catalog/preload.js';
import { RegistryStore } from '../catalog/registries.js';
import { createRescan } from '../catalog/rescan.js';
import { formatKey } from '../catalog/store.js';
import { createUnload } from '../catalog/unload.js';
import { taskIdFor } from '../tasks/ids.js';
import { imageScope, mayRescan, requireRole, rescannableRegistries } from '../tenancy/policy.js';
import type { GqlContext } from './context.js';
import { type ImageView, imageIdOf, imageNotFound, toView } from './resolvers.js';

/**
 * Mutations. The role check comes first and a refusal is a GraphQL error (FORBIDDEN) with nothing
 * changed; a request the caller may make but that cannot be done (unknown image, bad selector) answers
 * {ok: false, msg} as Backend.AI does. Task-starting mutations return the task's UUID as task_id (the
 * operation keeps its op- ID; both name the task on the event stream).
 */

interface Result {
  ok: boolean;
  msg: string;
  task_id?: string | null;
}

const REFUSALS: readonly ErrorCode[] = ['FORBIDDEN', 'UNAUTHORIZED', 'INTERNAL'];

/** Input problems become {ok: false}; refusals (and `alsoErrors`) and internal errors stay errors. */
async function attempt(fn: () => Promise<Result>, alsoErrors: readonly ErrorCode[] = []): Promise<Result> {
  try {
    return await fn();
  } catch (err) {
    if (isStowageError(err) && !REFUSALS.includes(err.code) && !alsoErrors.includes(err.code)) {
      return { ok: false, msg: `${err.code}: ${err.message}`, task_id: null };
    }
    throw err;
  }
}

/** rescan_images(registry, project): one registry, or (none named) every registry the caller may rescan. */
export async function rescanImages(_root: unknown, args: { registry?: string | null; project?: string | null }, g: GqlContext): Promise<Result> {
  let registries: string[];
  if (args.registry !== undefined && args.registry !== null) {
    await mayRescan(g.tenancy, g.principal, args.registry);
    registries = [args.registry];
  } else {
    registries = await rescannableRegistries(g.tenancy, g.principal, (await new RegistryStore(g.ctx.db).list()).map((r) => r.name));
  }
  return attempt(async () => {
    const op = await createRescan(g.ctx, registries, g.principal.name, args.project);
    const taskId = await taskIdFor(g.ctx.db, op.id);
    g.ctx.runner.start(op.id);
    const what = registries.length === 1 ? registries[0] : `${registries.length} registries`;
    return { ok: true, msg: `rescanning ${what}${args.project ? ` (project ${args.project})` : ''}`, task_id: taskId };
  });
}

interface CatalogOpArgs {
  reference?: string | null;
  /** Backend.AI's manager shape: a list of references (one per task here). */
  references?: ReadonlyArray<string | null> | null;
  /** A selector string, or the manager's list of them (joined: the union of their selections). */
  target_agents: ReadonlyArray<string | null>;
}

/** The one reference and the selector of preload/unload, from either argument shape. */
function catalogOpInput(args: CatalogOpArgs): { reference: string; selector: string } {
  const refs = [...(args.reference ? [args.reference] : []), ...(args.references ?? []).filter((r): r is string => typeof r === 'string' && r !== '')];
  if (refs.length === 0) throw new StowageError('BAD_REQUEST', 'name the image: reference or references');
  if (refs.length > 1) throw new StowageError('BAD_REQUEST', `one image per task; got ${refs.length} references`);
  const selector = args.target_agents.filter((t): t is string => typeof t === 'string').join(',');
  return { reference: refs[0] as string, selector };
}

export async function preloadImage(_root: unknown, args: CatalogOpArgs, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'preload_image');
  return attempt(async () => {
    const { reference, selector } = catalogOpInput(args);
    const op = await createPreload(g.ctx, reference, selector, g.principal.name);
    const taskId = await taskIdFor(g.ctx.db, op.id);
    g.ctx.runner.start(op.id);
    return { ok: true, msg: `preloading ${op.artifact.reference ?? reference} to ${op.targets.length} agent(s)`, task_id: taskId };
  });
}

export async function unloadImage(_root: unknown, args: CatalogOpArgs, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'unload_image');
  return attempt(async () => {
    const { reference, selector } = catalogOpInput(args);
    const op = await createUnload(g.ctx, reference, selector, g.principal.name);
    const taskId = await taskIdFor(g.ctx.db, op.id);
    g.ctx.runner.start(op.id);
    return { ok: true, msg: `unloading ${op.artifact.reference ?? reference} from ${op.targets.length} agent(s)`, task_id: taskId };
  });
}

/** forget_image(reference, architecture): that architecture's row, or with none given, every architecture of the tag. */
export async function forgetImage(_root: unknown, args: { reference: string; architecture?: string | null }, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'forget_image');
  return attempt(async () => {
    const arch = args.architecture ? ociArchitecture(args.architecture) : undefined;
    const key = await g.catalog.forget(args.reference, arch);
    return { ok: true, msg: `forgot ${formatKey(key)}${args.architecture ? ` (${args.architecture})` : ''}` };
  });
}

/** The row an image_id names, refused as unknown when the caller may not see it. */
async function visibleRow(g: GqlContext, imageId: string) {
  const row = await g.catalog.byId(imageIdOf(imageId));
  const scope = await imageScope(g.tenancy, g.principal, {});
  if (!row || (scope.registries !== undefined && !scope.registries.includes(row.registry))) throw imageNotFound(`id ${imageId}`);
  return row;
}

export async function forgetImageById(_root: unknown, args: { image_id: string }, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'forget_image_by_id');
  return attempt(async () => {
    const row = await g.catalog.forgetRow((await visibleRow(g, args.image_id)).id);
    return { ok: true, msg: `forgot ${formatKey(row)} (${row.architecture})` };
  });
}

/** purge_image_by_id: the row goes from the catalog; removing it from the registry too is not supported. */
export async function purgeImageById(
  _root: unknown,
  args: { image_id: string; options?: { remove_from_registry?: boolean | null } | null },
  g: GqlContext,
): Promise<{ image: ImageView }> {
  requireRole(g.principal, ['superadmin'], 'purge_image_by_id');
  const row = await visibleRow(g, args.image_id);
  if (args.options?.remove_from_registry) {
    throw new StowageError('UNSUPPORTED', 'removing images from a registry is not supported; purge without remove_from_registry forgets the catalog row');
  }
  const view = toView(row, await g.catalog.aliasMap());
  await g.catalog.forgetRow(row.id);
  return { image: view };
}

export async function untagImageFromRegistry(_root: unknown, args: { image_id: string }, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'untag_image_from_registry');
  return attempt(async () => {
    const row = await visibleRow(g, args.image_id);
    throw new StowageError('UNSUPPORTED', `untagging ${formatKey(row)} in its registry is not supported`);
  });
}

/** An alias spelled like a catalog image is refused as an error (CONFLICT), not {ok: false}: nothing changes. */
export async function aliasImage(_root: unknown, args: { alias: string; target: string }, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'alias_image');
  return attempt(async () => {
    const key = await g.catalog.addAlias(args.alias, args.target);
    return { ok: true, msg: `${args.alias} → ${formatKey(key)}` };
  }, ['CONFLICT']);
}

export async function dealiasImage(_root: unknown, args: { alias: string }, g: GqlContext): Promise<Result> {
  requireRole(g.principal, ['superadmin'], 'dealias_image');
  return attempt(async () => {
    await g.catalog.removeAlias(args.alias);
    return { ok: true, msg: `removed alias ${args.alias}` };
  });
}
