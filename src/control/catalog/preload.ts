import { StowageError } from '../../errors.js';
import { parsePlatform, platformMatches } from '../../oci/platform.js';
import type { ControlContext } from '../context.js';
import type { MachineRecord } from '../machines.js';
import { onlineMachineFor, toFailure } from '../operations/runner.js';
import { peerTransferRequest, renewEveryMs } from '../operations/transfer-plan.js';
import type { Operation, TransferRequest } from '../wire.js';
import { type RegistryRecord, RegistryStore } from './registries.js';
import { type CatalogImage, CatalogStore, type ImageKey, formatKey } from './store.js';
import { selectTargets } from './target-selector.js';

/**
 * preload_image: an operation (kind "preload") with one target per selected agent. Each target gets the
 * catalog row of its own platform, pulled from a peer agent that is online and holds that digest when
 * there is one (falling back to the registry when the peer transfer fails), else from the registry with
 * the registry's credentials. The agent records the image under "registry/name:tag".
 */

export interface CatalogOpParams extends ImageKey {
  [key: string]: unknown;
}

export function createPreload(ctx: ControlContext, reference: string, selector: string, actor: string): Promise<Operation> {
  return createCatalogOp(ctx, 'preload', reference, selector, actor);
}

/** Shared by preload and unload: resolve the image and the targets, then record the operation. */
export async function createCatalogOp(
  ctx: ControlContext,
  kind: 'preload' | 'unload',
  reference: string,
  selector: string,
  actor: string,
): Promise<Operation> {
  const catalog = new CatalogStore(ctx.db);
  const key = await catalog.requireKey(reference);
  const rows = await catalog.rowsOf(key);
  await new RegistryStore(ctx.db).require(key.registry);
  const targets = selectTargets(await ctx.machines.list(), selector);
  const params: CatalogOpParams = { registry: key.registry, name: key.name, tag: key.tag };
  const single = rows.length === 1 ? rows[0] : undefined;
  return ctx.operations.create({
    kind,
    actor,
    artifact: {
      digest: single?.digest ?? rows[0]?.index_digest ?? null,
      reference: formatKey(key),
      platform: single?.platform ?? null,
      size_bytes: single?.size_bytes ?? null,
    },
    targets,
    params,
  });
}

/** The catalog row for a machine's platform; PLATFORM_NOT_FOUND when the tag has none. */
export function rowFor(rows: readonly CatalogImage[], key: ImageKey, target: MachineRecord): CatalogImage {
  if (rows.length === 0) throw new StowageError('IMAGE_NOT_FOUND', `${formatKey(key)} is no longer in the catalog`);
  const want = parsePlatform(target.platform);
  const row = rows.find((r) => platformMatches(want, parsePlatform(r.platform)));
  if (!row) {
    throw new StowageError('PLATFORM_NOT_FOUND', `${formatKey(key)} has ${rows.map((r) => r.platform).join(', ')}, not ${target.platform} (machine ${target.id})`, {
      details: { machine_id: target.id, platform: target.platform },
    });
  }
  return row;
}

export async function runPreload(ctx: ControlContext, opId: string): Promise<void> {
  // Cancelled: no new target and no new transfer starts; cancel() has recorded how targets ended.
  const signal = ctx.runner.signalFor(opId);
  if (signal.aborted) return;
  await ctx.operations.setStage(opId, 'transferring');
  const key = await ctx.operations.params<CatalogOpParams>(opId);
  const rows = await new CatalogStore(ctx.db).rowsOf(key);
  const registry = await new RegistryStore(ctx.db).get(key.registry);
  await ctx.runner.forEachOpenTarget(opId, async (machineId, wasRunning) => {
    let platform = 'unknown';
    try {
      if (signal.aborted) return;
      const target = await onlineMachineFor(ctx, opId, machineId);
      const row = rowFor(rows, key, target);
      platform = row.platform;
      const references = [formatKey(key)];
      const peer = await peerRequest(ctx, opId, row, target, references);
      if (peer) {
        // Renewed before the peer token expires (the same request, minted again).
        const again = async (): Promise<TransferRequest> => (await peerRequest(ctx, opId, row, target, references)) ?? peer;
        const r = await ctx.runner.runTransfer(opId, target, again, { platform, resumed: wasRunning, renewEveryMs: renewEveryMs(ctx.config.peerTokenTtlSeconds) });
        if (r.status !== 'failed' || !registry || signal.aborted) return;
        ctx.runner.logFor(opId).warn({ machine: machineId }, 'preload from a peer failed; trying the registry');
      }
      if (!registry) throw new StowageError('REGISTRY_NOT_FOUND', `registry "${key.registry}" is no longer configured`);
      if (signal.aborted) return;
      await ctx.runner.runTransfer(opId, target, registryRequest(opId, registry, row, references), { platform, resumed: wasRunning });
    } catch (err) {
      if (signal.aborted) return;
      await ctx.runner.failTarget(opId, machineId, undefined, platform, toFailure(err, 'plan'));
    }
  });
  if (signal.aborted) return;
  await ctx.operations.finish(opId);
}

/** A transfer from an online peer holding the digest, if there is one. */
async function peerRequest(
  ctx: ControlContext,
  opId: string,
  row: CatalogImage,
  target: MachineRecord,
  references: string[],
): Promise<TransferRequest | undefined> {
  const record = (await ctx.availability.query({ digest: row.digest, presentOnly: true })).find(
    (a) => a.digest === row.digest && a.machine_id !== target.id && a.machine_status === 'online',
  );
  const source = record ? await ctx.machines.get(record.machine_id) : undefined;
  if (!record || !source) return undefined;
  const req = peerTransferRequest({ operationId: opId, source, digest: row.digest, record, ttlSeconds: ctx.config.peerTokenTtlSeconds });
  return { ...req, references };
}

function registryRequest(opId: string, registry: RegistryRecord, row: CatalogImage, references: string[]): TransferRequest {
  return {
    operation_id: opId,
    source: {
      registry_url: registry.url,
      repository: row.name,
      ...(registry.username ? { username: registry.username, password: registry.password ?? '' } : {}),
      ...(registry.insecure ? { insecure: true } : {}),
    },
    ref: row.digest,
    references,
  };
}
