/**
 * A byte-rate cap shared by every transfer of one agent: each take(n) waits until the bytes taken before it,
 * and these n, have had their time at `bytesPerSecond`, so the downloads together never run faster than the cap.
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
    // The caller holds these bytes already: it goes on once they (and all before them) have had their time,
    // so the cap holds however large the chunks the network hands over.
    const wait = this.nextFreeAt - now;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
