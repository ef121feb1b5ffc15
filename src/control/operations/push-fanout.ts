import { StowageError } from '../../errors.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { forEachLimited } from '../../registry/pool.js';
import type { ControlContext } from '../context.js';
import { nowIso } from '../db/database.js';
import type { MachineRecord } from '../machines.js';
import type { Availability } from '../wire.js';
import { FanoutChain } from './fanout.js';
import type { PushParams } from './push.js';
import { onlinePeers } from './distribute.js';
import { onlineMachineFor, toFailure } from './runner.js';
import { isTargetDone } from './store.js';
import { peerTransferRequest, renewEveryMs } from './transfer-plan.js';

/**
 * The fan-out of a push while stowctl still uploads: the upload target is told what is coming (its manifest
 * is kept and its blobs announced, see agent/incoming.ts), so the other targets pull from it at once, along
 * a chain as in a distribute, reading each blob as it arrives there. Every byte is still verified by each
 * target. Nothing depends on it: a target that did not get the image this way gets it again once the
 * upload is whole.
 */

export interface EarlyFanout {
  /** Ends the announcement on the upload target: blobs that did not arrive fail whoever waits for them. */
  withdraw(): Promise<void>;
  /** Settles when every target of the early fan-out has ended (present or failed). */
  done: Promise<void>;
}

const CONCURRENT_TARGETS = 64;

/** Starts the early fan-out, or answers undefined when there is nothing to start (or the agent cannot take it). */
export async function fanOutWhileUploading(ctx: ControlContext, opId: string, params: PushParams): Promise<EarlyFanout | undefined> {
  if (params.manifest === undefined) return undefined;
  const others = (await ctx.operations.require(opId)).targets
    .filter((t) => t.machine_id !== params.upload_machine && !isTargetDone(t.status))
    .map((t) => ({ id: t.machine_id, wasRunning: t.status === 'running' }));
  const source = await ctx.machines.get(params.upload_machine);
  if (others.length === 0 || source?.status !== 'online') return undefined;
  const log = ctx.runner.logFor(opId);
  if (!(await announce(ctx, opId, source, params.manifest, params.upload_deadline))) {
    log.info({ machine: source.id }, 'the upload target takes no push announcement: the other targets wait for the whole upload');
    return undefined;
  }
  let withdrawn: Promise<void> | undefined;
  const withdraw = (): Promise<void> => (withdrawn ??= withdrawAnnouncement(ctx, source, opId));
  return { withdraw, done: chainFrom(ctx, opId, source, others, params) };
}

/**
 * Tells `machine` the image `manifest` is on its way to it (agent/incoming.ts): its /v2/ then serves the
 * manifest and makes a peer that asks for a blob wait for its bytes. False when the agent refused or did
 * not answer (it is withdrawn then, in case it took it after all).
 */
async function announce(ctx: ControlContext, opId: string, machine: MachineRecord, manifest: string, deadline: number): Promise<boolean> {
  try {
    const ttl = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
    await ctx.runner.agents.announceIncoming(machine, { operation_id: opId, manifest, ttl_seconds: ttl });
    return true;
  } catch (err) {
    // An agent whose store cannot serve arriving blobs (containerd's) refuses as a matter of course.
    const refused = err instanceof StowageError && err.details?.['agent_code'] === 'UNSUPPORTED';
    if (!refused) {
      ctx.runner.logFor(opId).warn({ err, machine: machine.id }, 'announcing the push failed');
      // The agent may still have taken it (the answer was lost or late): its blobs would stay expected until the TTL.
      void withdrawAnnouncement(ctx, machine, opId);
    }
    return false;
  }
}

async function withdrawAnnouncement(ctx: ControlContext, machine: MachineRecord, opId: string): Promise<void> {
  await ctx.runner.agents.withdrawIncoming(machine, opId).then(
    () => undefined,
    () => undefined,
  );
}

/** Each target pulls the pushed image from `source` and the targets before it (fanout.ts). */
async function chainFrom(
  ctx: ControlContext,
  opId: string,
  source: MachineRecord,
  targets: ReadonlyArray<{ id: string; wasRunning: boolean }>,
  params: PushParams,
): Promise<void> {
  const chain = new FanoutChain(targets.map((t) => t.id));
  const ttl = ctx.config.peerTokenTtlSeconds;
  const references = params.reference === undefined ? [] : [formatReference(parseReference(params.reference))];
  await forEachLimited(targets, CONCURRENT_TARGETS, async ({ id, wasRunning }) => {
    let holder = false;
    let announced: MachineRecord | undefined;
    try {
      const target = await onlineMachineFor(ctx, opId, id);
      // Every target is told at once what its transfer will bring: the next one may start right away and
      // wait there for the bytes, instead of waiting for this one's transfer to start and plan (under load
      // that was up to a second per hop, and a chain never makes up a late start).
      if (params.manifest !== undefined && (await announce(ctx, opId, target, params.manifest, params.upload_deadline))) {
        announced = target;
        chain.started(id);
      }
      await chain.upstreamReady(id);
      const platform = params.platform ?? target.platform;
      // What the upload target will hold once the upload is whole.
      const record: Availability = {
        machine_id: source.id,
        digest: params.digest,
        index_digest: null,
        config_digest: null,
        platform,
        references,
        size_bytes: 0,
        presence: { state: 'present' },
        machine_status: 'online',
        updated_at: nowIso(),
      };
      const request = async () =>
        peerTransferRequest({ operationId: opId, source, digest: params.digest, record, ttlSeconds: ttl, peers: await onlinePeers(ctx, chain.peersOf(id)) });
      const result = await ctx.runner.runTransfer(opId, target, request, {
        platform,
        resumed: wasRunning,
        onStarted: () => chain.started(id),
        renewEveryMs: renewEveryMs(ttl),
      });
      holder = result.status === 'present' || result.status === 'skipped_present';
    } catch (err) {
      await ctx.runner.failTarget(opId, id, undefined, params.platform ?? 'unknown', toFailure(err, 'plan'));
    } finally {
      chain.ended(id, holder);
      // What did not arrive fails its waiting readers (they pass over to the next peer); what did is stored.
      if (announced) await withdrawAnnouncement(ctx, announced, opId);
    }
  });
}
