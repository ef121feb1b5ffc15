import type { BlobInfo } from '../store/types.js';

/**
 * The bytes a machine's content store holds, for its heartbeats (the dashboard's "disk use"). Walking
 * the blob directory costs a stat per blob, so a result is reused for `maxAgeMs`, and one walk at a
 * time runs however many ask.
 */
export function cachedStoreUsage(store: { list(): AsyncIterable<BlobInfo> }, maxAgeMs = 10_000): () => Promise<number> {
  let value: number | undefined;
  let measuredAt = 0;
  let walking: Promise<number> | undefined;
  const walk = async () => {
    let total = 0;
    for await (const blob of store.list()) total += blob.size;
    value = total;
    measuredAt = Date.now();
    return total;
  };
  return () => {
    if (value !== undefined && Date.now() - measuredAt < maxAgeMs) return Promise.resolve(value);
    walking ??= walk().finally(() => (walking = undefined));
    return walking;
  };
}
