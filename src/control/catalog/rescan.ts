import type { ControlContext } from '../context.js';
import type { Operation } from '../wire.js';
import { RegistryStore, registryClient } from './registries.js';
import { scanRegistry } from './scanner.js';
import { CatalogStore } from './store.js';

/**
 * rescan_images as an operation (kind "rescan", no targets): progress {current, total, message} counts
 * tags; the final message says what changed and names every tag that was skipped. Running it again (a
 * restart) simply scans again: the catalog update is one transaction at the end. Cancelling (the
 * runner's signal) stops the walk and writes no catalog row: the catalog keeps what it had.
 */

export interface RescanParams {
  registry: string;
}

const PROGRESS_WRITE_MS = 200;
const PROGRESS_STEPS = 20;
const MAX_PROBLEMS_SHOWN = 20;

export function createRescan(ctx: ControlContext, registry: string, actor: string): Operation {
  new RegistryStore(ctx.db).require(registry);
  const params: RescanParams = { registry };
  return ctx.operations.create({
    kind: 'rescan',
    actor,
    artifact: { digest: null, reference: registry, platform: null, size_bytes: null },
    targets: [],
    params: { ...params },
  });
}

export async function runRescan(ctx: ControlContext, opId: string): Promise<void> {
  const signal = ctx.runner.signalFor(opId);
  if (signal.aborted) return;
  const { registry } = ctx.operations.params<RescanParams>(opId);
  const reg = new RegistryStore(ctx.db).require(registry);
  ctx.operations.setStage(opId, 'scanning');
  let lastWrite = 0;
  let lastStep = -1;
  // scanRegistry rejects once the signal aborts: a cancelled scan records nothing (its walk is partial).
  const result = await scanRegistry(registryClient(reg), {
    registry: reg.name,
    project: reg.project,
    signal,
    onProgress: (p) => {
      if (signal.aborted) return;
      // At most every PROGRESS_WRITE_MS, and at each twentieth of the tags: small scans show every step.
      const now = Date.now();
      const step = p.total > 0 ? Math.floor((p.current * PROGRESS_STEPS) / p.total) : -1;
      if (now - lastWrite < PROGRESS_WRITE_MS && step === lastStep && p.current !== p.total) return;
      lastWrite = now;
      lastStep = step;
      ctx.operations.setProgress(opId, p.current, p.total, p.message);
    },
  });
  if (signal.aborted) return;
  const { added, removed } = new CatalogStore(ctx.db).applyScan(reg.name, result.rows, result.unreadable);
  let message = `scanned ${result.tags} tags of ${reg.name}: ${added} images recorded, ${removed} removed`;
  if (result.vanished.length > 0) message += `; ${result.vanished.length} deleted during the scan`;
  if (result.problems.length > 0) {
    const shown = result.problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
    const more = result.problems.length > MAX_PROBLEMS_SHOWN ? `; and ${result.problems.length - MAX_PROBLEMS_SHOWN} more` : '';
    message += `; skipped ${result.problems.length}: ${shown}${more}`;
  }
  ctx.operations.setProgress(opId, result.tags, result.tags, message);
  ctx.operations.finish(opId, { status: 'succeeded' });
}
