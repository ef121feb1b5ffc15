import type { ControlContext } from '../context.js';
import { runPreload } from './preload.js';
import { runRescan } from './rescan.js';
import { runUnload } from './unload.js';

/** Registers the catalog's operation kinds with the runner (before runner.resumeAll() at startup). */
export function registerCatalogOperations(ctx: ControlContext): void {
  ctx.runner.register('rescan', (id) => runRescan(ctx, id));
  ctx.runner.register('preload', (id) => runPreload(ctx, id));
  ctx.runner.register('unload', (id) => runUnload(ctx, id));
}
