import { StowageError, isStowageError } from '../../errors.js';
import type { ControlContext } from '../context.js';
import type { Operation } from '../wire.js';
import { type RegistryRecord, RegistryStore, registryClient } from './registries.js';
import { type ScanResult, scanRegistry } from './scanner.js';
import { CatalogStore } from './store.js';

/**
 * rescan_images as an operation (kind "rescan", no targets) over one registry or several (Backend.AI's
 * rescan without a registry covers every registry the caller may rescan), optionally one project of
 * them: progress {current, total, message} counts tags; the final message says what changed per
 * registry and names every tag that was skipped. Running it again (a restart) simply scans again: each
 * registry's catalog update is one transaction once its walk is whole. Cancelling (the runner's signal)
 * stops the walk and writes no catalog row for the registry being walked.
 *
 * A registry that cannot be scanned fails a one-registry task; with several, the others still count and
 * the task ends partially_failed (Backend.AI's bgtask_done with errors).
 */

export interface RescanParams {
  registries: string[];
  /** Only repositories under "<project>/" (and only their rows are replaced). */
  project?: string | null;
}

/** Parameters of operations recorded before rescans took several registries. */
interface LegacyRescanParams {
  registry?: string;
}

const PROGRESS_WRITE_MS = 200;
const PROGRESS_STEPS = 20;
const MAX_PROBLEMS_SHOWN = 20;
const PROJECT_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/;

export async function createRescan(ctx: ControlContext, registries: readonly string[], actor: string, project?: string | null): Promise<Operation> {
  const store = new RegistryStore(ctx.db);
  for (const r of registries) await store.require(r);
  if (registries.length === 0) throw new StowageError('REGISTRY_NOT_FOUND', 'no registry to rescan: none is configured that this caller may rescan');
  if (project !== undefined && project !== null && !PROJECT_RE.test(project)) {
    throw new StowageError('BAD_REQUEST', `invalid project "${project.slice(0, 100)}": a repository path prefix such as "stable" or "team/ml"`);
  }
  const params: RescanParams = { registries: [...registries], ...(project ? { project } : {}) };
  return ctx.operations.create({
    kind: 'rescan',
    actor,
    artifact: { digest: null, reference: registries.length === 1 ? (registries[0] as string) : registries.join(','), platform: null, size_bytes: null },
    targets: [],
    params: { ...params },
  });
}

export async function runRescan(ctx: ControlContext, opId: string): Promise<void> {
  const signal = ctx.runner.signalFor(opId);
  if (signal.aborted) return;
  const raw = await ctx.operations.params<RescanParams & LegacyRescanParams>(opId);
  const names = raw.registries ?? (raw.registry ? [raw.registry] : []);
  const store = new RegistryStore(ctx.db);
  await ctx.operations.setStage(opId, 'scanning');
  const summaries: string[] = [];
  const failures: Array<{ registry: string; error: unknown }> = [];
  for (const name of names) {
    if (signal.aborted) return;
    try {
      const reg = await store.require(name);
      summaries.push(await rescanOne(ctx, opId, reg, raw.project ?? null, signal));
    } catch (err) {
      if (signal.aborted) return;
      if (names.length === 1) throw err;
      failures.push({ registry: name, error: err });
      summaries.push(`${name}: ${isStowageError(err) ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err)}`);
    }
  }
  if (signal.aborted) return;
  if (failures.length > 0 && failures.length === names.length) throw failures[0]?.error;
  const op = await ctx.operations.require(opId);
  await ctx.operations.setProgress(opId, op.progress.total, op.progress.total, summaries.join('; '));
  await ctx.operations.finish(opId, { status: failures.length > 0 ? 'partially_failed' : 'succeeded' });
}

async function rescanOne(ctx: ControlContext, opId: string, reg: RegistryRecord, project: string | null, signal: AbortSignal): Promise<string> {
  let lastWrite = 0;
  let lastStep = -1;
  // Progress is written one change after the other, and the result only after the last of them.
  let progressWritten: Promise<unknown> = Promise.resolve();
  // scanRegistry rejects once the signal aborts: a cancelled scan records nothing (its walk is partial).
  const result: ScanResult = await scanRegistry(registryClient(reg), {
    registry: reg.name,
    project: project ?? reg.project,
    signal,
    onProgress: (p) => {
      if (signal.aborted) return;
      // At most every PROGRESS_WRITE_MS, and at each twentieth of the tags: small scans show every step.
      const now = Date.now();
      const step = p.total > 0 ? Math.floor((p.current * PROGRESS_STEPS) / p.total) : -1;
      if (now - lastWrite < PROGRESS_WRITE_MS && step === lastStep && p.current !== p.total) return;
      lastWrite = now;
      lastStep = step;
      progressWritten = progressWritten
        .then(() => ctx.operations.setProgress(opId, p.current, p.total, p.message))
        .catch((err: unknown) => ctx.runner.logFor(opId).warn({ err }, 'writing scan progress failed'));
    },
  });
  await progressWritten;
  if (signal.aborted) return '';
  const scope = project ? { project } : undefined;
  const { added, removed } = await new CatalogStore(ctx.db).applyScan(reg.name, result.rows, result.unreadable, scope);
  let message = `scanned ${result.tags} tags of ${reg.name}${project ? ` (project ${project})` : ''}: ${added} images recorded, ${removed} removed`;
  if (result.vanished.length > 0) message += `; ${result.vanished.length} deleted during the scan`;
  if (result.skipped.length > 0) message += `; ${result.skipped.length} without an ai.backend.kernelspec label not recorded`;
  if (result.problems.length > 0) {
    const shown = result.problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
    const more = result.problems.length > MAX_PROBLEMS_SHOWN ? `; and ${result.problems.length - MAX_PROBLEMS_SHOWN} more` : '';
    message += `; skipped ${result.problems.length}: ${shown}${more}`;
  }
  await ctx.operations.setProgress(opId, result.tags, result.tags, message);
  return message;
}
