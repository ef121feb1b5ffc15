import { type ErrorCode, isStowageError } from '../../errors.js';
import { createPreload } from '../catalog/preload.js';
import { createRescan } from '../catalog/rescan.js';
import { createUnload } from '../catalog/unload.js';
import { formatKey } from '../catalog/store.js';
import { mayRescan, requireRole } from '../tenancy/policy.js';
import type { GqlContext } from './context.js';

/**
 * Mutations. The role check comes first and a refusal is a GraphQL error (FORBIDDEN) with nothing
 * changed; a request the caller may make but that cannot be done (unknown image, bad selector) answers
 * {ok: false, msg} as Backend.AI does. Task-starting mutations return the operation ID as task_id.
 */

interface Result {
  ok: boolean;
  msg: string;
  task_id?: string | null;
}

const REFUSALS: readonly ErrorCode[] = ['FORBIDDEN', 'UNAUTHORIZED', 'INTERNAL'];

/** Input problems become {ok: false}; refusals (and `alsoErrors`) and internal errors stay errors. */
function attempt(fn: () => Result, alsoErrors: readonly ErrorCode[] = []): Result {
  try {
    return fn();
  } catch (err) {
    if (isStowageError(err) && !REFUSALS.includes(err.code) && !alsoErrors.includes(err.code)) {
      return { ok: false, msg: `${err.code}: ${err.message}`, task_id: null };
    }
    throw err;
  }
}

export function rescanImages(_root: unknown, args: { registry: string }, g: GqlContext): Result {
  mayRescan(g.tenancy, g.principal, args.registry);
  return attempt(() => {
    const op = createRescan(g.ctx, args.registry, g.principal.name);
    g.ctx.runner.start(op.id);
    return { ok: true, msg: `rescanning ${args.registry}`, task_id: op.id };
  });
}

export function preloadImage(_root: unknown, args: { reference: string; target_agents: string }, g: GqlContext): Result {
  requireRole(g.principal, ['superadmin'], 'preload_image');
  return attempt(() => {
    const op = createPreload(g.ctx, args.reference, args.target_agents, g.principal.name);
    g.ctx.runner.start(op.id);
    return { ok: true, msg: `preloading ${op.artifact.reference ?? args.reference} to ${op.targets.length} agent(s)`, task_id: op.id };
  });
}

export function unloadImage(_root: unknown, args: { reference: string; target_agents: string }, g: GqlContext): Result {
  requireRole(g.principal, ['superadmin'], 'unload_image');
  return attempt(() => {
    const op = createUnload(g.ctx, args.reference, args.target_agents, g.principal.name);
    g.ctx.runner.start(op.id);
    return { ok: true, msg: `unloading ${op.artifact.reference ?? args.reference} from ${op.targets.length} agent(s)`, task_id: op.id };
  });
}

export function forgetImage(_root: unknown, args: { reference: string }, g: GqlContext): Result {
  requireRole(g.principal, ['superadmin'], 'forget_image');
  return attempt(() => {
    const key = g.catalog.forget(args.reference);
    return { ok: true, msg: `forgot ${formatKey(key)}` };
  });
}

/** An alias spelled like a catalog image is refused as an error (CONFLICT), not {ok: false}: nothing changes. */
export function aliasImage(_root: unknown, args: { alias: string; target: string }, g: GqlContext): Result {
  requireRole(g.principal, ['superadmin'], 'alias_image');
  return attempt(() => {
    const key = g.catalog.addAlias(args.alias, args.target);
    return { ok: true, msg: `${args.alias} → ${formatKey(key)}` };
  }, ['CONFLICT']);
}

export function dealiasImage(_root: unknown, args: { alias: string }, g: GqlContext): Result {
  requireRole(g.principal, ['superadmin'], 'dealias_image');
  return attempt(() => {
    g.catalog.removeAlias(args.alias);
    return { ok: true, msg: `removed alias ${args.alias}` };
  });
}
