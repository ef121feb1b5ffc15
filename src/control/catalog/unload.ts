import type { ControlContext } from '../context.js';
import { toFailure } from '../operations/runner.js';
import type { Operation } from '../wire.js';
import { type CatalogOpParams, createCatalogOp } from './preload.js';
import { CatalogStore } from './store.js';

/**
 * unload_image: an operation (kind "unload") with one target per selected agent. Each agent removes the
 * platform manifests of the tag it holds (by digest, so however it arrived); a target then reads
 * `absent`. One that does not hold it is `absent` at once without a call.
 */

export function createUnload(ctx: ControlContext, reference: string, selector: string, actor: string): Operation {
  return createCatalogOp(ctx, 'unload', reference, selector, actor);
}

export async function runUnload(ctx: ControlContext, opId: string): Promise<void> {
  ctx.operations.setStage(opId, 'unloading');
  const key = ctx.operations.params<CatalogOpParams>(opId);
  const digests = new Set(new CatalogStore(ctx.db).rowsOf(key).map((r) => r.digest));
  await ctx.runner.forEachOpenTarget(opId, async (machineId) => {
    try {
      const held = ctx.availability.query({ machine: machineId, presentOnly: true }).filter((a) => digests.has(a.digest));
      if (held.length === 0) {
        ctx.operations.updateTarget(opId, machineId, { status: 'absent' });
        return;
      }
      const target = ctx.machines.requireOnline(machineId);
      ctx.operations.updateTarget(opId, machineId, { status: 'running', failure: null });
      for (const record of held) {
        // undefined: the agent no longer has it, which is what we want.
        await ctx.runner.agents.unload(target, { ref: record.digest });
        ctx.availability.markAbsent(machineId, record.digest, record.platform);
      }
      ctx.operations.updateTarget(opId, machineId, { status: 'absent' });
    } catch (err) {
      ctx.operations.updateTarget(opId, machineId, { status: 'failed', failure: toFailure(err, 'unload') });
    }
  });
  ctx.operations.finish(opId);
}
