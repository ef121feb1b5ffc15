/**
 * Runs `fn` over `items` with at most `concurrency` at once, in order of the list. After the first
 * failure no new item is started; the ones running are awaited, then that first failure is thrown.
 */
export async function forEachLimited<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  // An item holds its slot until it ends: forEachSending without the early release.
  await forEachSending(items, concurrency, (item) => fn(item));
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
    let started: Promise<void>;
    try {
      started = fn(item, release);
    } catch (err) {
      started = Promise.reject(err); // a function that throws before its first await fails like one that rejects
    }
    running.push(
      started
        .catch((err: unknown) => {
          failed ??= { err };
        })
        .finally(release),
    );
  }
  await Promise.all(running);
  if (failed) throw failed.err;
}
