import { StowageError } from '../../errors.js';
import type { ControlContext } from '../context.js';
import type { DistributeRequest, Operation } from '../wire.js';
import { onlineMachineFor, toFailure } from './runner.js';
import type { MachineRecord } from '../machines.js';
import { FanoutChain } from './fanout.js';
import { isTargetDone } from './store.js';
import { chooseRecord, peerTransferRequest, renewEveryMs, sourceRecords } from './transfer-plan.js';

/**
 * distribute: every target pulls the image (manifest and only the blobs it lacks) from the source agent's
 * /v2/ and from the targets before it, pipelined (fanout.ts); the control plane only tells them to and
 * records what they report. No image byte passes through the control plane.
 */

export interface DistributeParams {
  digest: string;
  from: string;
  platform?: string | undefined;
}

/** Checks the request against what the cluster knows, then records the operation (nothing runs yet). */
export async function createDistribute(ctx: ControlContext, req: DistributeRequest, actor: string): Promise<Operation> {
  const source = await ctx.machines.requireOnline(req.from);
  const targets = await uniqueTargets(ctx, req.to);
  const records = await sourceRecords(ctx.availability, source.id, req.digest);
  const record = chooseRecord(records, req.digest, req.platform, undefined);
  const params: DistributeParams = { digest: req.digest, from: source.id, platform: req.platform };
  return ctx.operations.create({
    kind: 'distribute',
    actor,
    artifact: {
      digest: req.digest,
      reference: record.references[0] ?? null,
      platform: req.platform ?? (record.digest === req.digest ? record.platform : null),
      size_bytes: record.size_bytes,
    },
    sourceMachine: source.id,
    targets,
    params: { ...params },
  });
}

/** Validates target machine ids: all must exist, duplicates collapse. */
export async function uniqueTargets(ctx: ControlContext, ids: readonly string[]): Promise<string[]> {
  const unique = [...new Set(ids)];
  // One read of every machine's status (IDs only) instead of one lookup per target.
  const known = await ctx.machines.statusesOf(unique);
  const unknown = unique.filter((id) => !known.has(id));
  if (unknown.length > 0) {
    throw new StowageError('MACHINE_NOT_FOUND', `no machine ${unknown.map((id) => `"${id}"`).join(', ')}`, { details: { machine_ids: unknown } });
  }
  return unique;
}

export async function runDistribute(ctx: ControlContext, opId: string): Promise<void> {
  const op = await ctx.operations.setStage(opId, 'transferring');
  const params = await ctx.operations.params<DistributeParams>(opId);
  await transferFromSource(ctx, op.id, params);
  await ctx.operations.finish(opId);
}

/**
 * Every open target of the operation gets `params.digest` from `params.from`, pipelined along a chain
 * (fanout.ts): each takes its blobs from the targets before it, nearest first, and the source.
 */
export async function transferFromSource(ctx: ControlContext, opId: string, params: DistributeParams): Promise<void> {
  const open = (await ctx.operations.require(opId)).targets.filter((t) => !isTargetDone(t.status)).map((t) => t.machine_id);
  const chain = new FanoutChain(open);
  const ttl = ctx.config.peerTokenTtlSeconds;
  await ctx.runner.forEachOpenTarget(opId, async (machineId, wasRunning) => {
    const platformGuess = params.platform ?? 'unknown';
    let holder = false;
    try {
      await chain.upstreamReady(machineId);
      const target = await onlineMachineFor(ctx, opId, machineId);
      const source = await onlineMachineFor(ctx, opId, params.from);
      const record = chooseRecord(await sourceRecords(ctx.availability, source.id, params.digest), params.digest, params.platform, target);
      const request = async () =>
        peerTransferRequest({ operationId: opId, source, digest: params.digest, record, ttlSeconds: ttl, peers: await onlinePeers(ctx, chain.peersOf(machineId)) });
      const result = await ctx.runner.runTransfer(opId, target, request, {
        platform: record.platform,
        resumed: wasRunning,
        onStarted: () => chain.started(machineId),
        renewEveryMs: renewEveryMs(ttl),
      });
      holder = result.status === 'present' || result.status === 'skipped_present';
    } catch (err) {
      // Nothing was asked of the target: no availability record, just the target's failure.
      await ctx.runner.failTarget(opId, machineId, undefined, platformGuess, toFailure(err, 'plan'));
    } finally {
      chain.ended(machineId, holder);
    }
  });
}

/** The machines of `ids` that are online, in that order (a target's peers, nearest first). */
export async function onlinePeers(ctx: ControlContext, ids: readonly string[]): Promise<MachineRecord[]> {
  return (await ctx.machines.getMany(ids)).filter((m) => m.status === 'online');
}
