import type { ContentStoreApi } from '../store/types.js';

/**
 * Collects what killed writers leave in the store's ingest directory: at start every ingest only a dead
 * process could have carried on (put temps, import staging, upload sessions) and resumable (digest-keyed)
 * ingests untouched for `staleAfterMs`; then the stale ones
 * every `everyMs`. Ingests being written are skipped by the store, and a resumable ingest survives its
 * grace period, so a transfer resumed after a restart keeps its bytes.
 */
export interface IngestSweeperOptions {
  staleAfterMs: number;
  everyMs: number;
  log: (message: string) => void;
}

export async function startIngestSweeper(store: ContentStoreApi, opts: IngestSweeperOptions): Promise<{ stop(): void }> {
  const sweep = store.removeStaleIngests?.bind(store);
  if (!sweep) return { stop() {} };
  const run = async (orphansOfAnyAge: boolean): Promise<void> => {
    try {
      const removed = await sweep(opts.staleAfterMs, { orphansOfAnyAge });
      if (removed.length > 0) opts.log(`removed ${removed.length} abandoned ingest(s)`);
    } catch (err) {
      opts.log(`could not collect abandoned ingests: ${(err as Error).message}`);
    }
  };
  await run(true);
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    running ??= run(false).finally(() => (running = undefined));
  }, opts.everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
    },
  };
}
