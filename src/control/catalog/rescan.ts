import type { ControlContext } from '../context.js';
import type { Operation } from '../wire.js';
import { RegistryStore, registryClient } from './registries.js';
import { scanRegistry } from './scanner.js';
import { CatalogStore } from './store.js';

/**
 * rescan_images as an operation (kind "rescan", no targets): progress {current, total, message} counts
 * tags; the final message says what changed and names every tag that was skipped. Running it again (a
 * restart) simply scans again: the catalog update is one transaction at the end.
 */

export interface RescanParams {
  registry: string;
}

const PROGRESS_WRITE_MS = 200;
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
  const { registry } = ctx.operations.params<RescanParams>(opId);
  const reg = new RegistryStore(ctx.db).require(registry);
  ctx.operations.setStage(opId, 'scanning');
  let lastWrite = 0;
  const result = await scanRegistry(registryClient(reg), {
    registry: reg.name,
    project: reg.project,
    onProgress: (p) => {
      const now = Date.now();
      if (now - lastWrite < PROGRESS_WRITE_MS && p.current !== p.total) return;
      lastWrite = now;
      ctx.operations.setProgress(opId, p.current, p.total, p.message);
    },
  });
  const { added, removed } = new CatalogStore(ctx.db).applyScan(reg.name, result.rows, result.unreadable);
  let message = `scanned ${result.tags} tags of ${reg.name}: ${added} images recorded, ${removed} removed`;
  if (result.problems.length > 0) {
    const shown = result.problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
    const more = result.problems.length > MAX_PROBLEMS_SHOWN ? `; and ${result.problems.length - MAX_PROBLEMS_SHOWN} more` : '';
    message += `; skipped ${result.problems.length}: ${shown}${more}`;
  }
  ctx.operations.setProgress(opId, result.tags, result.tags, message);
  ctx.operations.finish(opId, { status: 'succeeded' });
}
