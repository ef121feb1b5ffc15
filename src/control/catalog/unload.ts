import type { ControlContext } from '../context.js';
import { onlineMachineFor, toFailure } from '../operations/runner.js';
import type { Operation } from '../wire.js';
import { type CatalogOpParams, createCatalogOp } from './preload.js';
import { CatalogStore, formatKey } from './store.js';

/**
 * unload_image: an operation (kind "unload") with one target per selected agent. Each agent takes off
 * the platform manifests it holds under the tag's reference (as Backend.AI counts installations by name):
 * one the agent also holds under another tag is only untagged, so the sibling tag stays installed; one
 * held under this tag alone is removed by digest. A target then reads `absent`; one that does not hold
 * the tag is `absent` at once without a call.
 */

export function createUnload(ctx: ControlContext, reference: string, selector: string, actor: string): Promise<Operation> {
  return createCatalogOp(ctx, 'unload', reference, selector, actor);
}

export async function runUnload(ctx: ControlContext, opId: string): Promise<void> {
  // Cancelled: no new target and no new agent call starts, and no target is written after it (cancel()
  // has recorded how they ended); what an agent did remove is still marked absent, as it is.
  const signal = ctx.runner.signalFor(opId);
  if (signal.aborted) return;
  await ctx.operations.setStage(opId, 'unloading');
  const key = await ctx.operations.params<CatalogOpParams>(opId);
  const digests = new Set((await new CatalogStore(ctx.db).rowsOf(key)).map((r) => r.digest));
  const reference = formatKey(key);
  await ctx.runner.forEachOpenTarget(opId, async (machineId) => {
    try {
      if (signal.aborted) return;
      const held = (await ctx.availability.query({ machine: machineId, presentOnly: true })).filter(
        (a) => digests.has(a.digest) && a.references.includes(reference),
      );
      if (held.length === 0) {
        await ctx.operations.updateTarget(opId, machineId, { status: 'absent' });
        return;
      }
      const target = await onlineMachineFor(ctx, opId, machineId);
      await ctx.operations.updateTarget(opId, machineId, { status: 'running', failure: null });
      for (const record of held) {
        if (signal.aborted) return;
        // undefined: the agent no longer has it, which is what we want.
        if (record.references.length > 1) {
          await ctx.runner.agents.unload(target, { ref: reference });
          await ctx.availability.dropReference(machineId, record.digest, record.platform, reference);
        } else {
          await ctx.runner.agents.unload(target, { ref: record.digest });
          await ctx.availability.markAbsent(machineId, record.digest, record.platform);
        }
      }
      if (signal.aborted) return;
      await ctx.operations.updateTarget(opId, machineId, { status: 'absent' });
    } catch (err) {
      if (signal.aborted) return;
      await ctx.operations.updateTarget(opId, machineId, { status: 'failed', failure: toFailure(err, 'unload') });
    }
  });
  if (signal.aborted) return;
  await ctx.operations.finish(opId);
}
