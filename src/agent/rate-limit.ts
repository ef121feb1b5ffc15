/**
 * A byte-rate cap shared by every transfer of one agent: each take(n) waits until the bytes taken before it
 * have had their time at `bytesPerSecond`, so the downloads together never run faster than the cap.
 */
export class RateLimiter {
  private nextFreeAt = 0;

  constructor(private readonly bytesPerSecond: number) {
    if (!(bytesPerSecond > 0)) throw new RangeError('bytesPerSecond must be positive');
  }

  async take(bytes: number): Promise<void> {
    const now = Date.now();
    const startAt = Math.max(now, this.nextFreeAt);
    this.nextFreeAt = startAt + (bytes * 1000) / this.bytesPerSecond;
    // These bytes go once the earlier ones have used their share of time.
    const wait = startAt - now;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
