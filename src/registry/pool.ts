/**
 * Runs `fn` over `items` with at most `concurrency` at once, in order of the list. After the first
 * failure no new item is started; the ones running are awaited, then that first failure is thrown.
 */
export async function forEachLimited<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, concurrency), items.length) }, worker));
  if (failed !== undefined) throw failed.err;
}

/**
 * Runs `fn` over `items` in order, at most `sending` of them between their start and the moment they call
 * `sent` (or end). After the first failure no new item starts; the started ones are awaited, then that
 * failure is thrown.
 */
export async function forEachSending<T>(items: readonly T[], sending: number, fn: (item: T, sent: () => void) => Promise<void>): Promise<void> {
  let free = Math.max(1, sending);
  let wake: (() => void) | undefined;
  let failed: { err: unknown } | undefined;
  const running: Array<Promise<void>> = [];
  for (const item of items) {
    while (free === 0) await new Promise<void>((resolve) => (wake = resolve));
    if (failed) break;
    free--;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      free++;
      const w = wake;
      wake = undefined;
      w?.();
    };
    running.push(
      fn(item, release)
        .catch((err: unknown) => {
          failed ??= { err };
        })
        .finally(release),
    );
  }
  await Promise.all(running);
  if (failed) throw failed.err;
}
