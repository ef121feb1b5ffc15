import type { Readable } from 'node:stream';
import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';

export interface StallGuard {
  /** For the request: aborted when the guard cuts. */
  signal: AbortSignal;
  /** Names the body the request answered, cut too. */
  watch(body: Readable): void;
  /** Bytes arrived: the wait starts again. */
  fed(): void;
  stop(): void;
}

/**
 * Cuts a blob request when nothing arrives for `ms` (as TRUNCATED, so the download resumes elsewhere), from
 * the moment it is sent (a source that never answers) and between chunks, or when `parent` aborts (with its
 * reason). `signal` goes to the request; `watch` names the body it answered, cut too (it may be a stream of
 * the client's own).
 */
export function stallGuard(
  ms: number | undefined,
  host: string,
  digest: Digest,
  parent: AbortSignal | undefined,
): StallGuard {
  const controller = new AbortController();
  let body: Readable | undefined;
  let timer: NodeJS.Timeout | undefined;
  const cut = (reason: unknown): void => {
    const err = reason instanceof Error ? reason : new Error('aborted');
    controller.abort(err);
    body?.destroy(err);
  };
  const onAbort = (): void => cut(parent?.reason);
  parent?.addEventListener('abort', onAbort, { once: true });
  const arm = (): void => {
    if (ms === undefined || ms <= 0) return;
    clearTimeout(timer);
    timer = setTimeout(() => cut(new StowageError('TRUNCATED', `${host} sent nothing of ${digest} for ${ms} ms`)), ms);
    timer.unref();
  };
  arm();
  if (parent?.aborted) onAbort();
  return {
    signal: controller.signal,
    watch: (b) => {
      body = b;
      if (controller.signal.aborted) b.destroy(controller.signal.reason as Error);
    },
    fed: arm,
    stop: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}
